//! `runnel run PIPELINE.sql`: plan the script, run it, print the summary.
//!
//! The pieces here (open the log, serve the HTTP API, run a graph with its admin handle)
//! are shared with `runnel demo`, which runs the same things in one process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use runnel_engine::RunConfig;
use runnel_log::{Log, LogOptions};
use runnel_server::{AdminState, ServerState};
use runnel_sql::{NodeSpec, PipelineGraph};

use crate::cli::RunArgs;
use crate::functions::{self, Rejects};
use crate::status::{self, RunState};
use crate::summary;

/// Plans and runs a pipeline file.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let sql = std::fs::read_to_string(&args.pipeline)
        .with_context(|| format!("cannot read pipeline file {}", args.pipeline.display()))?;
    let file = args.pipeline.display().to_string();
    let planned = functions::plan(&sql, &args.data_dir).with_context(|| file.clone())?;
    let graph = planned.graph;
    if args.explain {
        print!("{}", graph.explain());
        return Ok(());
    }
    let name = status::pipeline_name(&graph, &args.pipeline);
    let mut config = run_config(&graph, args.parallelism, args.data_dir.clone())?;
    config.checkpoint = checkpoint_config(&graph, &name, &config, args.from_scratch).await?;
    let admin = AdminState::new(config.dashboards.clone());
    let uses = |connector: &str| {
        graph.nodes.iter().any(|n| match &n.spec {
            NodeSpec::Source(t) | NodeSpec::Sink(t) => t.connector() == connector,
            _ => false,
        })
    };
    if uses("dashboard") && args.listen.is_none() {
        eprintln!(
            "runnel: note: dashboard tables are shown on the web page only with --listen \
             127.0.0.1:8080"
        );
    }
    if !uses("log") && args.listen.is_none() {
        let stop = crate::cmd::serve::shutdown_signal();
        return run_graph(&file, &name, &graph, &config, None, planned.rejects, stop).await;
    }
    let log = open_log(&args.data_dir).await?;
    config.log = Some(log.clone());
    let server = match &args.listen {
        None => None,
        Some(addr) => {
            let server =
                Server::start(addr, args.auth_token.clone(), log.clone(), admin.clone()).await?;
            eprintln!(
                "runnel: dashboard and API on http://{} (log in {})",
                server.addr,
                args.data_dir.display()
            );
            Some(server)
        }
    };
    let stop = crate::cmd::serve::shutdown_signal();
    let result = run_graph(
        &file,
        &name,
        &graph,
        &config,
        Some(&admin),
        planned.rejects,
        stop,
    )
    .await;
    if let Some(server) = server {
        server.stop().await;
    }
    drop(config);
    close_log(log).await;
    result
}

/// Opens (or creates) the embedded log in `dir`.
pub async fn open_log(dir: &std::path::Path) -> anyhow::Result<Arc<Log>> {
    let owned = dir.to_path_buf();
    let log = tokio::task::spawn_blocking(move || Log::open(&owned, LogOptions::default()))
        .await
        .context("opening the log failed")?
        .with_context(|| format!("opening the log in {}", dir.display()))?;
    Ok(Arc::new(log))
}

/// Closes the log once nothing else holds it (dropping the last handle closes it too).
pub async fn close_log(log: Arc<Log>) {
    let _ = tokio::task::spawn_blocking(move || match Arc::try_unwrap(log) {
        Ok(log) => log
            .close()
            .map_err(|e| tracing::warn!("closing the log: {e}"))
            .ok(),
        Err(_) => None,
    })
    .await;
}

/// The HTTP server of a run: ingest, admin API, dashboard, metrics.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), runnel_server::ServerError>>,
}

impl Server {
    /// Binds `listen` (refusing a non-loopback address without a token) and serves.
    pub async fn start(
        listen: &str,
        token: Option<String>,
        log: Arc<Log>,
        admin: AdminState,
    ) -> anyhow::Result<Server> {
        let listener = runnel_server::auth::bind(listen, token.as_deref())
            .await
            .map_err(anyhow::Error::msg)?;
        let addr = listener
            .local_addr()
            .context("reading the listening address")?;
        let state = ServerState::new(log).with_auto_create(Some(1));
        let app = runnel_server::app(state, admin, token);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            runnel_server::serve(listener, app, async {
                let _ = stop_rx.await;
            })
            .await
        });
        Ok(Server { addr, stop, task })
    }

    /// Stops accepting, lets in-flight requests finish (event streams are cut).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        // Event streams never end by themselves; do not wait on them for long.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.task).await;
    }
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

/// Checkpointing from `SET 'execution.checkpointing.interval'` (default: every 10 s for
/// pipelines with an unbounded source, off for bounded ones; `'off'` turns it off), with
/// the checkpoint to resume from unless `from_scratch`.
pub async fn checkpoint_config(
    graph: &PipelineGraph,
    name: &str,
    config: &RunConfig,
    from_scratch: bool,
) -> anyhow::Result<Option<runnel_engine::checkpoint::CheckpointConfig>> {
    let set = |k: &str| graph.settings.get(k).map(String::as_str);
    let ms = match set("execution.checkpointing.interval") {
        // A bounded pipeline that crashes is simply run again (its outputs start over);
        // one that never ends checkpoints every 10 s unless told otherwise.
        None if has_unbounded_source(graph) => 10_000,
        None => return Ok(None),
        Some("0" | "off" | "none") => return Ok(None),
        Some(v) => runnel_common::time::parse_duration_ms(v)
            .filter(|ms| *ms > 0)
            .with_context(|| {
                format!(
                    "SET 'execution.checkpointing.interval' = '{v}': expected a duration such \
                     as '10 s' (or 'off')"
                )
            })?,
    };
    let retain = match set("execution.checkpointing.retained") {
        None => 3,
        Some(v) => v.parse().ok().filter(|n: &usize| *n > 0).with_context(|| {
            format!("SET 'execution.checkpointing.retained' = '{v}': expected a number >= 1")
        })?,
    };
    use runnel_engine::checkpoint::{CheckpointDir, S3Options};
    let base = match set("state.checkpoints.dir") {
        None => CheckpointDir::local(&config.data_dir.join("checkpoints")),
        Some(d) if d.starts_with("s3://") => {
            let allow_http = match set("s3.allow-http") {
                None | Some("false") => false,
                Some("true") => true,
                Some(v) => bail!("SET 's3.allow-http' = '{v}': expected 'true' or 'false'"),
            };
            let options = S3Options {
                endpoint: set("s3.endpoint").map(str::to_string),
                region: set("s3.region").map(str::to_string),
                access_key: set("s3.access-key").map(str::to_string),
                secret_key: set("s3.secret-key").map(str::to_string),
                allow_http,
            };
            CheckpointDir::s3(d, &options)
        }
        Some(d) if d.contains("://") && !d.starts_with("file://") => bail!(
            "SET 'state.checkpoints.dir' = '{d}': expected a local directory, file://… or \
             s3://bucket/prefix"
        ),
        Some(d) => CheckpointDir::local(std::path::Path::new(d.trim_start_matches("file://"))),
    }
    .map_err(|e| anyhow::anyhow!("SET 'state.checkpoints.dir': {e}"))?;
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = base
        .join(&safe)
        .map_err(|e| anyhow::anyhow!("SET 'state.checkpoints.dir': {e}"))?;
    let fingerprint = fingerprint(graph, config.parallelism);
    let restore = if from_scratch {
        None
    } else {
        runnel_engine::checkpoint::load_latest(&dir, &fingerprint, name)
            .await?
            .map(Arc::new)
    };
    if let Some(r) = &restore {
        eprintln!(
            "runnel: resuming {name} from checkpoint {} ({dir})",
            r.manifest.id
        );
    }
    Ok(Some(runnel_engine::checkpoint::CheckpointConfig {
        interval: std::time::Duration::from_millis(ms as u64),
        dir,
        retain,
        pipeline: name.to_string(),
        fingerprint,
        restore,
    }))
}

/// Whether some source never ends.
fn has_unbounded_source(graph: &PipelineGraph) -> bool {
    graph.nodes.iter().any(|n| match &n.spec {
        NodeSpec::Source(t) => runnel_connectors::registry::source_never_ends(t),
        _ => false,
    })
}

/// FNV-1a over the planned dataflow and the parallelism: stable across runs and builds.
fn fingerprint(graph: &PipelineGraph, parallelism: usize) -> String {
    let text = format!("{}\nparallelism={parallelism}", graph.explain());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Runs a planned graph until it ends (or `stop`, e.g. Ctrl-C / SIGTERM) and prints the summary on
/// stderr. With `admin`, the pipeline is shown by the admin API and the page.
pub async fn run_graph(
    file: &str,
    name: &str,
    graph: &PipelineGraph,
    config: &RunConfig,
    admin: Option<&AdminState>,
    rejects: Option<Rejects>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut pipeline =
        runnel_engine::start(graph, config).with_context(|| format!("starting {file}"))?;
    let metrics = pipeline.metrics();
    let checkpoints = pipeline.checkpoints();
    let state = RunState::default();
    state.set("running");
    if let Some(admin) = admin {
        admin.add_pipeline(status::handle(
            name,
            graph,
            metrics.clone(),
            config.parallelism,
            state.clone(),
            rejects.as_ref().map(|r| r.count.clone()),
            config.checkpoint.as_ref().map(|_| checkpoints.clone()),
        ));
        admin.set_ready(true);
    }
    let mut interrupted = false;
    let result = tokio::select! {
        r = pipeline.join() => r,
        () = stop => {
            pipeline.abort();
            interrupted = true;
            Ok(())
        }
    };
    state.set(if result.is_ok() { "finished" } else { "failed" });
    let mut report = summary::render(file, graph, &metrics, started.elapsed(), result.is_ok());
    if interrupted {
        report = report.replacen(" finished in ", " stopped (interrupted) after ", 1);
    }
    if config.checkpoint.is_some()
        && let Ok(c) = checkpoints.lock()
    {
        match &c.last {
            Some(l) => report.push_str(&format!(
                "  checkpoint {} complete at {} ({} ms, {} bytes of state){}\n",
                l.id,
                runnel_common::time::format_timestamp(l.time_ms),
                l.duration_ms,
                summary::group(l.size_bytes),
                c.restored_from
                    .map(|r| format!("; resumed from checkpoint {r}"))
                    .unwrap_or_default()
            )),
            None => report.push_str("  no checkpoint completed\n"),
        }
        for f in &c.failed {
            report.push_str(&format!("  checkpoint failed: {f}\n"));
        }
    }
    if let Some(r) = &rejects {
        let n = r.count.get();
        if n > 0 {
            report.push_str(&format!(
                "  classify: {} images rejected -> {}\n",
                summary::group(n),
                r.path.display()
            ));
        }
    }
    eprint!("{report}");
    result.with_context(|| format!("running {file}"))
}
