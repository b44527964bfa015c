//! `runnel pipeline reset PIPELINE.sql`: start a distributed pipeline over.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use runnel_runtime::{PrepareOptions, prepare};

/// `runnel pipeline …`.
#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Delete a distributed pipeline's repartition topics and checkpoints (stop every
    /// member first): the next start reads its inputs from the start again
    Reset(ResetArgs),
}

/// `runnel pipeline reset`.
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The pipeline's SQL script (it names the brokers and the checkpoint location)
    pub pipeline: PathBuf,
    /// Directory for runnel's files, as `runnel run` uses it
    #[arg(long, default_value = "runnel-data")]
    pub data_dir: PathBuf,
}

/// Runs a `runnel pipeline` command.
pub async fn pipeline(command: PipelineCommand) -> anyhow::Result<()> {
    match command {
        PipelineCommand::Reset(args) => {
            let sql = std::fs::read_to_string(&args.pipeline).with_context(|| {
                format!("cannot read pipeline file {}", args.pipeline.display())
            })?;
            let file = args.pipeline.display().to_string();
            let options = PrepareOptions::new(file.clone(), args.data_dir.clone());
            let prepared = prepare(&sql, &options).with_context(|| file.clone())?;
            if !prepared.settings.distributed {
                anyhow::bail!(
                    "{file}: not a distributed pipeline (SET 'execution.mode' = \
                     'distributed'); `runnel run --from-scratch` starts a single one over"
                );
            }
            for what in runnel_runtime::distributed::reset(&prepared)
                .await
                .with_context(|| format!("resetting {}", prepared.name))?
            {
                println!("deleted {what}");
            }
            Ok(())
        }
    }
}
