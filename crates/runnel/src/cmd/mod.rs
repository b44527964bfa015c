//! One module per subcommand.

pub mod bench;
#[cfg(feature = "kafka")]
pub mod bench_kafka;
pub mod bench_log;
#[cfg(feature = "postgres")]
pub mod bench_postgres;
pub mod bench_vision;
pub mod bench_warehouse;
pub mod camera_sim;
pub mod check;
pub mod connectors;
pub mod consume;
pub mod demo;
pub mod pipeline;
pub mod produce;
pub mod query;
pub mod run;
pub mod serve;
pub mod sql;
pub mod topics;

use crate::cli::{BenchCommand, Command};

/// Runs the chosen subcommand.
pub async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Demo(args) => demo::demo(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Check(args) => check::check(args).await,
        Command::Pipeline(command) => pipeline::pipeline(command).await,
        Command::Connectors(args) => connectors::connectors(args),
        Command::Settings(args) => connectors::settings(args),
        Command::CameraSim(args) => camera_sim::camera_sim(args).await,
        Command::Bench(BenchCommand::Vision(args)) => bench_vision::bench_vision(args).await,
        Command::Bench(BenchCommand::Nexmark(args)) => bench::nexmark(args).await,
        Command::Bench(BenchCommand::Log(args)) => bench_log::bench_log(args).await,
        Command::Bench(BenchCommand::Ingest(args)) => bench_log::bench_ingest(args).await,
        Command::Bench(BenchCommand::Warehouse(args)) => {
            bench_warehouse::bench_warehouse(args).await
        }
        #[cfg(feature = "kafka")]
        Command::Bench(BenchCommand::Kafka(args)) => bench_kafka::bench_kafka(args).await,
        #[cfg(feature = "postgres")]
        Command::Bench(BenchCommand::Postgres(args)) => bench_postgres::bench_postgres(args).await,
        Command::Consume(args) => consume::consume(args).await,
        Command::Produce(args) => produce::produce(args).await,
        Command::Query(args) => query::query(args).await,
        Command::Serve(args) => serve::serve(args).await,
        Command::Sql(args) => sql::sql(args).await,
        Command::Topics(command) => topics::topics(command).await,
    }
}
