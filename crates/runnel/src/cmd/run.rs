//! `runnel run PIPELINE.sql`: plan the script, run it, print the summary.

use std::time::Instant;

use std::sync::Arc;

use anyhow::{Context, bail};
use runnel_engine::RunConfig;
use runnel_log::{Log, LogOptions};
use runnel_server::ServerState;
use runnel_sql::{PipelineGraph, Planner};

use crate::cli::RunArgs;
use crate::summary;

/// Plans and runs a pipeline file.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let sql = std::fs::read_to_string(&args.pipeline)
        .with_context(|| format!("cannot read pipeline file {}", args.pipeline.display()))?;
    let name = args.pipeline.display().to_string();
    let graph = plan(&sql).with_context(|| name.clone())?;
    if args.explain {
        print!("{}", graph.explain());
        return Ok(());
    }
    let mut config = run_config(&graph, args.parallelism, args.data_dir.clone())?;
    let uses_log = graph.nodes.iter().any(|n| match &n.spec {
        runnel_sql::NodeSpec::Source(t) | runnel_sql::NodeSpec::Sink(t) => t.connector() == "log",
        _ => false,
    });
    if !uses_log && args.listen.is_none() {
        return run_graph(&name, &graph, &config).await;
    }
    let dir = args.data_dir.clone();
    let log = tokio::task::spawn_blocking(move || Log::open(&dir, LogOptions::default()))
        .await
        .context("opening the log failed")?
        .with_context(|| format!("opening the log in {}", args.data_dir.display()))?;
    let log = Arc::new(log);
    config.log = Some(log.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = match &args.listen {
        None => None,
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            let local = listener
                .local_addr()
                .context("reading the listening address")?;
            eprintln!(
                "runnel: ingest API on http://{local} (log in {})",
                args.data_dir.display()
            );
            let state = ServerState::new(log.clone()).with_auto_create(Some(1));
            let router = runnel_server::router(state);
            Some(tokio::spawn(async move {
                runnel_server::serve(listener, router, async {
                    let _ = stop_rx.await;
                })
                .await
            }))
        }
    };
    let result = run_graph(&name, &graph, &config).await;
    let _ = stop_tx.send(());
    if let Some(server) = server {
        let _ = server.await;
    }
    drop(config);
    let _ = tokio::task::spawn_blocking(move || match Arc::try_unwrap(log) {
        Ok(log) => log
            .close()
            .map_err(|e| tracing::warn!("closing the log: {e}"))
            .ok(),
        Err(_) => None,
    })
    .await;
    result
}

/// Plans SQL text with every function runnel offers.
pub fn plan(sql: &str) -> Result<PipelineGraph, runnel_sql::SqlError> {
    let mut planner = Planner::new();
    planner.plan(sql)
}

/// Settles the run configuration from flags and `SET` options.
pub fn run_config(
    graph: &PipelineGraph,
    parallelism: Option<usize>,
    data_dir: std::path::PathBuf,
) -> anyhow::Result<RunConfig> {
    let mut config = RunConfig {
        data_dir,
        ..RunConfig::default()
    };
    let set = |k: &str| graph.settings.get(k).map(String::as_str);
    if let Some(p) = parallelism {
        config.parallelism = p;
    } else if let Some(v) = set("parallelism.default").or(set("parallelism")) {
        config.parallelism = v
            .parse()
            .with_context(|| format!("SET 'parallelism.default' = '{v}': not a number"))?;
    }
    if config.parallelism == 0 {
        bail!("parallelism must be at least 1");
    }
    if let Some(v) = set("source.idle-timeout") {
        let ms = runnel_common::time::parse_duration_ms(v).with_context(|| {
            format!("SET 'source.idle-timeout' = '{v}': expected a duration such as '5 s'")
        })?;
        config.idle_timeout = std::time::Duration::from_millis(ms.max(0) as u64);
    }
    if let Some(v) = set("execution.batch-size") {
        config.batch_size = v
            .parse()
            .with_context(|| format!("SET 'execution.batch-size' = '{v}': not a number"))?;
    }
    Ok(config)
}

/// Runs a planned graph to completion and prints the summary on stderr.
pub async fn run_graph(
    name: &str,
    graph: &PipelineGraph,
    config: &RunConfig,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let pipeline =
        runnel_engine::start(graph, config).with_context(|| format!("starting {name}"))?;
    let metrics = pipeline.metrics();
    let result = pipeline.wait().await;
    let report = summary::render(name, graph, &metrics, started.elapsed(), result.is_ok());
    eprint!("{report}");
    result.with_context(|| format!("running {name}"))
}
