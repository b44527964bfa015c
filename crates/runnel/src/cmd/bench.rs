//! `runnel bench nexmark`: Nexmark queries on the built-in generator.

use std::time::Instant;

use anyhow::Context;
use runnel_runtime::{PrepareOptions, Resources, prepare};

use crate::cli::{NexmarkArgs, NexmarkQuery};

const BID_TABLE: &str = "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
  date_time TIMESTAMP(3), extra STRING, WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)";
const AUCTION_TABLE: &str = "CREATE TABLE auction (id BIGINT, item_name STRING, description STRING,
  initial_bid BIGINT, reserve BIGINT, date_time TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT,
  category BIGINT, extra STRING, WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)";
const PERSON_TABLE: &str = "CREATE TABLE person (id BIGINT, name STRING, email_address STRING,
  credit_card STRING, city STRING, state STRING, date_time TIMESTAMP(3), extra STRING,
  WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)";

/// The SQL of a Nexmark query over the generator, into a blackhole sink.
pub fn nexmark_sql(query: NexmarkQuery, events: u64) -> String {
    let (sink, select) = match query {
        NexmarkQuery::Q0 => (
            "auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3), extra STRING",
            "SELECT auction, bidder, price, date_time, extra FROM bid",
        ),
        NexmarkQuery::Q1 => (
            "auction BIGINT, bidder BIGINT, price DECIMAL(23, 3), date_time TIMESTAMP(3), extra STRING",
            "SELECT auction, bidder, 0.908 * price, date_time, extra FROM bid",
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
        NexmarkQuery::Q3 => (
            "name STRING, city STRING, state STRING, id BIGINT",
            "SELECT P.name, P.city, P.state, A.id FROM auction AS A INNER JOIN person AS P ON A.seller = P.id
             WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')",
        ),
        NexmarkQuery::Q4 => (
            "id BIGINT, final BIGINT",
            "SELECT Q.category, AVG(Q.final) FROM (
               SELECT MAX(B.price) AS final, A.category FROM auction A, bid B
               WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
               GROUP BY A.id, A.category) Q
             GROUP BY Q.category",
        ),
        NexmarkQuery::Q7 => (
            "auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3), extra STRING",
            "SELECT B.auction, B.bidder, B.price, B.date_time, B.extra FROM bid B
             JOIN (SELECT MAX(price) AS maxprice, window_end AS date_time
                   FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
                   GROUP BY window_start, window_end) B1
             ON B.price = B1.maxprice
             WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time",
        ),
        NexmarkQuery::Q7Max => (
            "window_start TIMESTAMP(3), window_end TIMESTAMP(3), top BIGINT",
            "SELECT window_start, window_end, MAX(price)
             FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
             GROUP BY window_start, window_end",
        ),
        NexmarkQuery::Q9 => (
            "id BIGINT, seller BIGINT, category BIGINT, auction BIGINT, bidder BIGINT, price BIGINT",
            "SELECT id, seller, category, auction, bidder, price FROM (
               SELECT A.*, B.auction, B.bidder, B.price, B.date_time AS bid_time,
                 ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.date_time ASC) AS rownum
               FROM auction A, bid B
               WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires)
             WHERE rownum <= 1",
        ),
        NexmarkQuery::Q18 => (
            "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, date_time TIMESTAMP(3), extra STRING",
            "SELECT auction, bidder, price, channel, url, date_time, extra FROM (
               SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC) AS rank_number
               FROM bid)
             WHERE rank_number <= 1",
        ),
        NexmarkQuery::Q19 => (
            "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, date_time TIMESTAMP(3), extra STRING, rank_number BIGINT",
            "SELECT * FROM (
               SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number FROM bid)
             WHERE rank_number <= 10",
        ),
        NexmarkQuery::Q20 => (
            "auction BIGINT, bidder BIGINT, price BIGINT, bid_date_time TIMESTAMP(3), item_name STRING, category BIGINT",
            "SELECT auction, bidder, price, B.date_time, item_name, category
             FROM bid AS B INNER JOIN auction AS A ON B.auction = A.id WHERE A.category = 10",
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
         {AUCTION_TABLE} WITH (connector = 'nexmark', stream = 'auction', events = '{events}');\n\
         {PERSON_TABLE} WITH (connector = 'nexmark', stream = 'person', events = '{events}');\n\
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
    let bid_node = prepared
        .graph
        .nodes
        .iter()
        .position(|n| n.label == "source bid");
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
    let bids = bid_node
        .and_then(|i| metrics.nodes.get(i))
        .map(|m| m.rows_out.get())
        .unwrap_or(0);
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
