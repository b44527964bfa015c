//! One module per subcommand.

pub mod bench;
pub mod run;

use crate::cli::{BenchCommand, Command};

/// Runs the chosen subcommand.
pub async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run::run(args).await,
        Command::Bench(BenchCommand::Nexmark(args)) => bench::nexmark(args).await,
    }
}
