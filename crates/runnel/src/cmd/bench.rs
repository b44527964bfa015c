//! `runnel bench nexmark`: Nexmark queries on the built-in generator.

use std::time::Instant;

use anyhow::Context;
use runnel_runtime::{PrepareOptions, Resources, prepare};

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
    let mut sql = nexmark_sql(args.query, args.events);
    if let Some(v) = &args.checkpoint_interval {
        sql = format!("SET 'execution.checkpointing.interval' = '{v}';\n{sql}");
    }
    let data_dir = std::env::temp_dir().join(format!("runnel-bench-{}", std::process::id()));
    let mut options = PrepareOptions::new("nexmark", &data_dir);
    options.parallelism = Some(args.parallelism);
    options.from_scratch = true;
    let prepared = prepare(&sql, &options).context("planning the Nexmark query")?;
    let started = Instant::now();
    let mut running = prepared.start(Resources::new(&data_dir)).await?;
    let metrics = running.metrics();
    let result = running.join().await;
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&data_dir);
    result?;
    if let Some(c) = running.checkpoint_stats() {
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
