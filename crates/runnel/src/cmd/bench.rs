//! `runnel bench nexmark`: Nexmark queries on the built-in generator.

use std::time::Instant;

use anyhow::Context;
use runnel_engine::RunConfig;

use crate::cli::{NexmarkArgs, NexmarkQuery};

const BID_TABLE: &str = "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
  date_time TIMESTAMP(3), extra STRING, WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)";

/// The SQL of a Nexmark query over the generator, into a blackhole sink.
pub fn nexmark_sql(query: NexmarkQuery, events: u64) -> String {
    let (sink, select) = match query {
        NexmarkQuery::Q0 => (
            "auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3), extra STRING",
            "SELECT auction, bidder, price, date_time, extra FROM bid",
        ),
        NexmarkQuery::Q1 => (
            "auction BIGINT, bidder BIGINT, price DOUBLE, date_time TIMESTAMP(3), extra STRING",
            "SELECT auction, bidder, CAST(0.908 * price AS DOUBLE), date_time, extra FROM bid",
        ),
        NexmarkQuery::Q2 => (
            "auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3), extra STRING",
            "SELECT auction, bidder, price, date_time, extra FROM bid WHERE MOD(auction, 123) = 0",
        ),
        NexmarkQuery::Q5 => (
            "auction BIGINT, window_start TIMESTAMP(3), num BIGINT",
            "SELECT h.auction, h.window_start, h.num FROM (
               SELECT auction, window_start, window_end, COUNT(*) AS num
               FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
               GROUP BY auction, window_start, window_end) h
             JOIN (
               SELECT window_start, window_end, MAX(num) AS maxn FROM (
                 SELECT auction, window_start, window_end, COUNT(*) AS num
                 FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
                 GROUP BY auction, window_start, window_end)
               GROUP BY window_start, window_end) m
             ON h.window_start = m.window_start AND h.window_end = m.window_end AND h.num >= m.maxn",
        ),
        NexmarkQuery::Q7 => (
            "window_start TIMESTAMP(3), window_end TIMESTAMP(3), top BIGINT",
            "SELECT window_start, window_end, MAX(price)
             FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
             GROUP BY window_start, window_end",
        ),
        NexmarkQuery::Tumble => (
            "auction BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3), num BIGINT, total BIGINT, top BIGINT",
            "SELECT auction, window_start, window_end, COUNT(*), SUM(price), MAX(price)
             FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
             GROUP BY auction, window_start, window_end",
        ),
    };
    format!(
        "{BID_TABLE} WITH (connector = 'nexmark', stream = 'bid', events = '{events}');\n\
         CREATE TABLE sink_out ({sink}) WITH (connector = 'blackhole');\n\
         INSERT INTO sink_out {select};\n"
    )
}

/// Runs one Nexmark query and prints its throughput.
pub async fn nexmark(args: NexmarkArgs) -> anyhow::Result<()> {
    let sql = nexmark_sql(args.query, args.events);
    let graph = crate::functions::plan(&sql, std::path::Path::new("runnel-data"))
        .context("planning the Nexmark query")?
        .graph;
    let data_dir = std::env::temp_dir().join(format!("runnel-bench-{}", std::process::id()));
    let checkpoint = match &args.checkpoint_interval {
        None => None,
        Some(v) => {
            let ms = runnel_common::time::parse_duration_ms(v)
                .filter(|ms| *ms > 0)
                .with_context(|| format!("--checkpoint-interval '{v}': expected e.g. '10 s'"))?;
            Some(runnel_engine::checkpoint::CheckpointConfig {
                interval: std::time::Duration::from_millis(ms as u64),
                dir: runnel_engine::checkpoint::CheckpointDir::local(&data_dir.join("checkpoints"))
                    .map_err(anyhow::Error::msg)?,
                retain: 3,
                pipeline: "bench".into(),
                fingerprint: "bench".into(),
                restore: None,
            })
        }
    };
    let config = RunConfig {
        parallelism: args.parallelism,
        data_dir: data_dir.clone(),
        checkpoint,
        ..RunConfig::default()
    };
    let started = Instant::now();
    let pipeline = runnel_engine::start(&graph, &config)?;
    let metrics = pipeline.metrics();
    let checkpoints = pipeline.checkpoints();
    pipeline.wait().await?;
    let secs = started.elapsed().as_secs_f64();
    if config.checkpoint.is_some()
        && let Ok(c) = checkpoints.lock()
    {
        match &c.last {
            Some(l) => println!(
                "checkpoints={} last_checkpoint_ms={} last_checkpoint_bytes={} failed={}",
                l.id,
                l.duration_ms,
                l.size_bytes,
                c.failed.len()
            ),
            None => println!("checkpoints=0 failed={}", c.failed.len()),
        }
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    let bids = metrics.nodes.first().map(|m| m.rows_out.get()).unwrap_or(0);
    let written = metrics.nodes.last().map(|m| m.rows_in.get()).unwrap_or(0);
    println!(
        "query={:?} parallelism={} events={} bids={bids} rows_out={written}",
        args.query, args.parallelism, args.events
    );
    println!("seconds={secs:.3}");
    println!("bids_per_s={:.0}", bids as f64 / secs);
    println!("events_per_s={:.0}", args.events as f64 / secs);
    Ok(())
}
