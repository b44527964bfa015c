//! `runnel bench log`: append throughput with fsync group commit for each record size ×
//! producer count, ack latency percentiles, and sequential read throughput; and
//! `runnel bench ingest`: HTTP acknowledgement latency at a fixed offered rate.

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use anyhow::Context;
use axum::http::Method;
use clap::Args;
use runnel_log::{BenchLimit, BenchReport, Log, LogOptions, run_append_bench, run_read_bench};
use runnel_server::ServerState;
use runnel_server::client::HttpClient;
use runnel_server::loadgen::{IngestBench, run_ingest_bench};

/// `runnel bench log`.
#[derive(Debug, Args)]
pub struct BenchLogArgs {
    /// Record sizes in bytes, comma separated
    #[arg(long, value_delimiter = ',', default_value = "100,1024,102400")]
    pub record_sizes: Vec<usize>,
    /// Concurrent producer counts, comma separated
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub producers: Vec<usize>,
    /// Seconds per append run
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Bytes of records preloaded and read back per record size in the read run
    #[arg(long, default_value_t = 256 << 20)]
    pub read_bytes: u64,
    /// Directory for the benchmark's logs (default: a fresh directory under the system temp dir); removed afterwards
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Runs `runnel bench log`; the last line is `records_per_s=` of the run that appended the most records.
pub async fn bench_log(args: BenchLogArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || run(&args))
        .await
        .context("the benchmark task failed")?
}

fn run(args: &BenchLogArgs) -> anyhow::Result<()> {
    let root = args.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("runnel-bench-log-{}", std::process::id()))
    });
    let limit = BenchLimit::Duration(Duration::from_secs_f64(args.seconds.max(0.01)));
    let mut best: Option<BenchReport> = None;
    for &size in &args.record_sizes {
        for &producers in &args.producers {
            let dir = root.join(format!("append-{size}-{producers}"));
            let report = run_append_bench(&dir, size, producers, limit)
                .with_context(|| format!("append benchmark in {}", dir.display()));
            remove(&dir);
            let report = report?;
            println!(
                "append record_size={size} producers={producers} records={} records_per_s={:.0} mb_per_s={:.1} p50_us={} p99_us={} fsyncs={}",
                report.records,
                report.records_per_s,
                report.mb_per_s,
                report.p50_us,
                report.p99_us,
                report.fsyncs
            );
            if best.as_ref().is_none_or(|b| report.records > b.records) {
                best = Some(report);
            }
        }
    }
    for &size in &args.record_sizes {
        let records = (args.read_bytes / size.max(1) as u64).clamp(1_000, 2_000_000);
        let dir = root.join(format!("read-{size}"));
        let report = run_read_bench(&dir, size, records, 1000)
            .with_context(|| format!("read benchmark in {}", dir.display()));
        remove(&dir);
        let report = report?;
        println!(
            "read record_size={size} records={} records_per_s={:.0} mb_per_s={:.1} p50_us={} p99_us={} (per read of 1000)",
            report.records, report.records_per_s, report.mb_per_s, report.p50_us, report.p99_us
        );
    }
    if args.data_dir.is_none() {
        remove(&root);
    }
    println!("records_per_s={:.0}", best.map_or(0.0, |b| b.records_per_s));
    Ok(())
}

/// `runnel bench ingest`.
#[derive(Debug, Args)]
pub struct BenchIngestArgs {
    /// Server to load (default: an in-process server over a temporary log)
    #[arg(long)]
    pub url: Option<String>,
    /// Topic to POST to (created if missing)
    #[arg(long, default_value = "bench-ingest")]
    pub topic: String,
    /// Partitions of the topic when it is created
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Records per second to offer
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Records per request (NDJSON lines)
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Bytes per record
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Seconds of load
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Concurrent connections (most requests in flight)
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
}

/// Runs `runnel bench ingest`: HTTP ack latency at a fixed offered rate; prints p99_us= last.
pub async fn bench_ingest(args: BenchIngestArgs) -> anyhow::Result<()> {
    let mut local = None;
    let client = match &args.url {
        Some(url) => HttpClient::new(url)?,
        None => {
            let dir =
                std::env::temp_dir().join(format!("runnel-bench-ingest-{}", std::process::id()));
            let log_dir = dir.clone();
            let log =
                tokio::task::spawn_blocking(move || Log::open(&log_dir, LogOptions::default()))
                    .await
                    .context("opening the benchmark log failed")??;
            let log = Arc::new(log);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding a local port")?;
            let addr = listener.local_addr()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(runnel_server::serve(
                listener,
                runnel_server::router(ServerState::new(log.clone())),
                async move {
                    let _ = stopped.await;
                },
            ));
            local = Some((dir, log, stop, server));
            HttpClient::new(&format!("http://{addr}"))?
        }
    };
    let create = serde_json::json!({ "name": args.topic, "partitions": args.partitions });
    let r = client
        .request(
            Method::POST,
            "/v1/topics",
            &[("content-type", "application/json")],
            create.to_string(),
        )
        .await?;
    if !r.is_success() && r.status != 409 {
        anyhow::bail!("creating topic {}: {}", args.topic, r.error_message());
    }
    let bench = IngestBench {
        topic: args.topic.clone(),
        rate: args.rate,
        batch: args.batch,
        record_size: args.record_size,
        duration: Duration::from_secs_f64(args.seconds.max(0.01)),
        connections: args.connections,
    };
    let report = run_ingest_bench(&client, &bench).await;
    if let Some((dir, log, stop, server)) = local {
        let _ = stop.send(());
        let _ = server.await;
        drop(log);
        remove(&dir);
    }
    let report = report?;
    println!(
        "ingest rate={} batch={} record_size={} connections={} seconds={} {report}",
        args.rate, args.batch, args.record_size, args.connections, args.seconds
    );
    println!("p99_us={}", report.p99_us);
    Ok(())
}

fn remove(dir: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove benchmark data");
    }
}
