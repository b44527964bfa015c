//! `runnel bench kafka`: records through a Kafka broker with runnel's own pipelines —
//! Nexmark bids produced into a topic, then copied topic → topic at each delivery
//! guarantee — against a broker the user runs (`--bootstrap`).

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use runnel_runtime::{PrepareOptions, Resources, prepare};

/// `runnel bench kafka`.
#[derive(Debug, clap::Args)]
pub struct BenchKafkaArgs {
    /// The brokers, host:port
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Bids to produce and copy
    #[arg(long, default_value_t = 500_000)]
    pub records: u64,
    /// Partitions of the benchmark topics
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Subtasks per operator
    #[arg(short, long, default_value_t = 2)]
    pub parallelism: usize,
    /// Delivery guarantees of the copy to measure
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "none,at-least-once,exactly-once"
    )]
    pub guarantees: Vec<String>,
}

const BID: &str = "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, \
                   date_time TIMESTAMP(3), extra STRING";

/// Runs the benchmark and prints one `key=value` line per phase.
pub async fn bench_kafka(args: BenchKafkaArgs) -> anyhow::Result<()> {
    for g in &args.guarantees {
        anyhow::ensure!(
            matches!(g.as_str(), "none" | "at-least-once" | "exactly-once"),
            "--guarantees: '{g}' is not none, at-least-once or exactly-once"
        );
    }
    let run = format!("runnel-bench-{}", std::process::id());
    let input = format!("{run}-in");
    let mut topics = vec![input.clone()];
    topics.extend(args.guarantees.iter().map(|g| format!("{run}-{g}")));
    create_topics(&args.bootstrap, &topics, args.partitions).await?;
    let bootstrap = &args.bootstrap;
    // Nexmark: 46 of every 50 events are bids.
    let events = args.records * 50 / 46 + 50;
    let produce = format!(
        "CREATE TABLE bid ({BID}) WITH ('connector' = 'nexmark', 'stream' = 'bid', 'events' = '{events}');
         CREATE TABLE k ({BID}) WITH ('connector' = 'kafka', 'topic' = '{input}',
           'properties.bootstrap.servers' = '{bootstrap}', 'sink.delivery-guarantee' = 'at-least-once');
         INSERT INTO k SELECT * FROM bid;"
    );
    let (rows, secs) = run_sql(&produce, "produce", args.parallelism).await?;
    println!(
        "phase=produce guarantee=at-least-once records={rows} seconds={secs:.3} records_per_s={:.0}",
        rows as f64 / secs
    );
    for g in &args.guarantees {
        let checkpoints = if g == "exactly-once" {
            "SET 'execution.checkpointing.interval' = '1 s';\n"
        } else {
            ""
        };
        let copy = format!(
            "{checkpoints}CREATE TABLE src ({BID}) WITH ('connector' = 'kafka', 'topic' = '{input}',
               'properties.bootstrap.servers' = '{bootstrap}', 'properties.group.id' = '{run}-{g}',
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset');
             CREATE TABLE dst ({BID}) WITH ('connector' = 'kafka', 'topic' = '{run}-{g}',
               'properties.bootstrap.servers' = '{bootstrap}', 'sink.delivery-guarantee' = '{g}',
               'sink.transactional-id-prefix' = '{run}-{g}');
             INSERT INTO dst SELECT * FROM src;"
        );
        let (rows, secs) = run_sql(&copy, g, args.parallelism).await?;
        println!(
            "phase=copy guarantee={g} records={rows} seconds={secs:.3} records_per_s={:.0}",
            rows as f64 / secs
        );
    }
    Ok(())
}

/// Runs a script to its end; returns the rows its sink took and the seconds it ran.
async fn run_sql(sql: &str, name: &str, parallelism: usize) -> anyhow::Result<(u64, f64)> {
    let data_dir =
        std::env::temp_dir().join(format!("runnel-bench-kafka-{}-{name}", std::process::id()));
    let mut options = PrepareOptions::new(name, &data_dir);
    options.parallelism = Some(parallelism);
    options.from_scratch = true;
    let prepared = prepare(sql, &options).with_context(|| format!("planning {name}"))?;
    let started = Instant::now();
    let mut running = prepared.start(Resources::new(&data_dir)).await?;
    let metrics = running.metrics();
    let result = running.join().await;
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&data_dir);
    result?;
    let rows = metrics.nodes.last().map(|m| m.rows_in.get()).unwrap_or(0);
    Ok((rows, secs))
}

async fn create_topics(bootstrap: &str, names: &[String], partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("Kafka admin client")?;
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .with_context(|| format!("creating the benchmark topics on {bootstrap}"))?;
    for r in results {
        if let Err((topic, e)) = r {
            anyhow::bail!("creating topic {topic} on {bootstrap}: {e}");
        }
    }
    Ok(())
}
