//! One module per subcommand.

pub mod bench;
pub mod bench_log;
pub mod consume;
pub mod produce;
pub mod run;
pub mod serve;
pub mod topics;

use crate::cli::{BenchCommand, Command};

/// Runs the chosen subcommand.
pub async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run::run(args).await,
        Command::Bench(BenchCommand::Nexmark(args)) => bench::nexmark(args).await,
        Command::Bench(BenchCommand::Log(args)) => bench_log::bench_log(args).await,
        Command::Bench(BenchCommand::Ingest(args)) => bench_log::bench_ingest(args).await,
        Command::Consume(args) => consume::consume(args).await,
        Command::Produce(args) => produce::produce(args).await,
        Command::Serve(args) => serve::serve(args).await,
        Command::Topics(command) => topics::topics(command).await,
    }
}
