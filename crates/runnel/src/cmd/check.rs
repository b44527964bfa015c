//! `runnel check PIPELINE.sql`: plan the script and run every health check, without
//! running the pipeline. Exit 0 when everything passes, 1 otherwise.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use runnel_connectors::descriptor::Resource;
use runnel_runtime::{PrepareOptions, Resources, prepare};

/// `runnel check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The SQL script
    pub pipeline: PathBuf,
    /// Directory for runnel's files (log, checkpoints), as `runnel run` would use it
    #[arg(long, default_value = "runnel-data")]
    pub data_dir: PathBuf,
    /// Subtasks per operator, as `runnel run` would use it (it decides whether a
    /// checkpoint can be resumed)
    #[arg(short, long)]
    pub parallelism: Option<usize>,
}

/// Prints one line per check; fails when any did.
pub async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let sql = std::fs::read_to_string(&args.pipeline)
        .with_context(|| format!("cannot read pipeline file {}", args.pipeline.display()))?;
    let file = args.pipeline.display().to_string();
    let mut options = PrepareOptions::new(file.clone(), args.data_dir.clone());
    options.parallelism = args.parallelism;
    let prepared = prepare(&sql, &options).with_context(|| file.clone())?;
    println!("{file}: planned ({} nodes)", prepared.graph.nodes.len());
    let mut resources = Resources::new(&args.data_dir);
    // Only open the log when a table needs it, and only if it is already there: a check
    // must not create a data directory.
    if prepared.needs(Resource::Log) && args.data_dir.exists() {
        resources.open_log().await?;
    }
    let mut failed = 0;
    for c in prepared.check(&resources).await {
        match c.result {
            Ok(detail) => println!("  ok    {}: {detail}", c.what),
            Err(e) => {
                failed += 1;
                println!("  FAIL  {}: {e}", c.what);
            }
        }
    }
    resources.close().await;
    if failed > 0 {
        bail!("{file}: {failed} check(s) failed");
    }
    println!("{file}: all checks passed");
    Ok(())
}
