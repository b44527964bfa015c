//! `runnel bench kafka`: records through a Kafka broker with runnel's own pipelines —
//! Nexmark bids produced into a topic, then copied topic → topic at each delivery
//! guarantee (records/s and MB/s of record values) — against a broker the user runs
//! (`--bootstrap`). Then, per guarantee, end-to-end latency: the benchmark produces
//! records at a fixed rate stamped with the time they were sent, a running copy pipeline
//! keeps the stamp (`METADATA FROM 'timestamp'`), and a `read_committed` consumer of the
//! output notes how long after its stamp each record became visible (p50/p99).

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use runnel_runtime::{Resources, prepare};

use crate::cmd::bench::{bench_options, run_sql};

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
    /// Records per second offered in the latency phase (0: skip it)
    #[arg(long, default_value_t = 5_000)]
    pub latency_rate: u64,
    /// Seconds of the latency phase, per guarantee
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Checkpoint interval of the exactly-once runs (their output is visible per checkpoint)
    #[arg(long, default_value = "1 s")]
    pub checkpoint_interval: String,
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
    let run_stats = run_sql(&produce, "produce", args.parallelism).await?;
    println!(
        "phase=produce guarantee=at-least-once records={} seconds={:.3} records_per_s={:.0} mb_per_s={:.1}",
        run_stats.rows,
        run_stats.secs,
        run_stats.rows as f64 / run_stats.secs,
        run_stats.bytes_out as f64 / run_stats.secs / 1e6
    );
    let interval = &args.checkpoint_interval;
    for g in &args.guarantees {
        let checkpoints = if g == "exactly-once" {
            format!("SET 'execution.checkpointing.interval' = '{interval}';\n")
        } else {
            String::new()
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
        let r = run_sql(&copy, g, args.parallelism).await?;
        println!(
            "phase=copy guarantee={g} records={} seconds={:.3} records_per_s={:.0} mb_per_s={:.1}",
            r.rows,
            r.secs,
            r.rows as f64 / r.secs,
            r.bytes_in as f64 / r.secs / 1e6
        );
    }
    if args.latency_rate > 0 {
        for g in &args.guarantees {
            latency(&args, &run, g).await?;
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The latency phase of guarantee `g`: records sent at `--latency-rate` into a topic a
/// running copy pipeline reads; each output record's visibility delay after its stamp.
async fn latency(args: &BenchKafkaArgs, run: &str, g: &str) -> anyhow::Result<()> {
    let bootstrap = &args.bootstrap;
    let (input, output) = (format!("{run}-lat-{g}-in"), format!("{run}-lat-{g}-out"));
    create_topics(bootstrap, &[input.clone(), output.clone()], args.partitions).await?;
    let checkpoints = if g == "exactly-once" {
        format!(
            "SET 'execution.checkpointing.interval' = '{}';\n",
            args.checkpoint_interval
        )
    } else {
        String::new()
    };
    let copy = format!(
        "{checkpoints}SET 'execution.batch-size' = '256';
         CREATE TABLE src (v STRING, ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp') WITH (
           'connector' = 'kafka', 'topic' = '{input}', 'properties.bootstrap.servers' = '{bootstrap}',
           'properties.group.id' = '{input}', 'scan.startup.mode' = 'earliest-offset', 'format' = 'raw');
         CREATE TABLE dst (v STRING, ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp') WITH (
           'connector' = 'kafka', 'topic' = '{output}', 'properties.bootstrap.servers' = '{bootstrap}',
           'format' = 'raw', 'sink.delivery-guarantee' = '{g}', 'sink.transactional-id-prefix' = '{output}',
           'properties.linger.ms' = '1');
         INSERT INTO dst SELECT v, ts FROM src;"
    );
    let (options, data_dir) = bench_options(&format!("lat-{g}"), args.parallelism);
    let prepared = prepare(&copy, &options).context("planning the latency pipeline")?;
    let mut running = prepared.start(Resources::new(&data_dir)).await?;

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{output}-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()
        .context("latency reader")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..args.partitions {
        tpl.add_partition_offset(&output, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "1")
        .create()
        .context("latency producer")?;

    let total = args.latency_rate * args.latency_seconds;
    let payload = "x".repeat(100);
    let send = {
        let (producer, input, rate) = (producer.clone(), input.clone(), args.latency_rate);
        tokio::spawn(async move {
            let started = Instant::now();
            let mut pending = Vec::new();
            for i in 0..total {
                let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                let record = FutureRecord::<(), str>::to(&input)
                    .payload(&payload)
                    .timestamp(now_ms());
                match producer.send_result(record) {
                    Ok(f) => pending.push(f),
                    Err((e, _)) => return Err(anyhow::anyhow!("producing: {e}")),
                }
            }
            for f in pending {
                let _ = f.await;
            }
            Ok::<(), anyhow::Error>(())
        })
    };
    let mut delays: Vec<i64> = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + Duration::from_secs(args.latency_seconds + 60);
    while (delays.len() as u64) < total && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Ok(Ok(m)) => {
                if let Some(t) = m.timestamp().to_millis() {
                    delays.push(now_ms() - t);
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "latency reader"),
            Err(_) => {}
        }
    }
    send.await??;
    running.stop();
    let _ = running.join().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    anyhow::ensure!(
        !delays.is_empty(),
        "latency phase ({g}): no record reached the output topic"
    );
    delays.sort_unstable();
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize];
    println!(
        "phase=latency guarantee={g} offered_per_s={} records={} of {total} p50_ms={} p99_ms={} max_ms={}",
        args.latency_rate,
        delays.len(),
        at(0.5),
        at(0.99),
        delays[delays.len() - 1]
    );
    Ok(())
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
