//! `runnel run PIPELINE.sql`: plan the script, run it, print the summary.

use std::time::Instant;

use anyhow::{Context, bail};
use runnel_engine::RunConfig;
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
    let config = run_config(&graph, args.parallelism, args.data_dir)?;
    run_graph(&name, &graph, &config).await
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
