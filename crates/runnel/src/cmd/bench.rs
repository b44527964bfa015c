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

/// The query's own statements (its sink, then its INSERT), in Flink's dialect.
fn query_text(query: NexmarkQuery) -> &'static str {
    use NexmarkQuery::*;
    match query {
        Q0 => include_str!("nexmark/q0.sql"),
        Q1 => include_str!("nexmark/q1.sql"),
        Q2 => include_str!("nexmark/q2.sql"),
        Q3 => include_str!("nexmark/q3.sql"),
        Q4 => include_str!("nexmark/q4.sql"),
        Q5 => include_str!("nexmark/q5.sql"),
        Q7 => include_str!("nexmark/q7.sql"),
        Q7Max => include_str!("nexmark/q7_max.sql"),
        Q8 => include_str!("nexmark/q8.sql"),
        Q9 => include_str!("nexmark/q9.sql"),
        Q10 => include_str!("nexmark/q10.sql"),
        Q11 => include_str!("nexmark/q11.sql"),
        Q12 => include_str!("nexmark/q12.sql"),
        Q13 => include_str!("nexmark/q13.sql"),
        Q14 => include_str!("nexmark/q14.sql"),
        Q15 => include_str!("nexmark/q15.sql"),
        Q16 => include_str!("nexmark/q16.sql"),
        Q17 => include_str!("nexmark/q17.sql"),
        Q18 => include_str!("nexmark/q18.sql"),
        Q19 => include_str!("nexmark/q19.sql"),
        Q20 => include_str!("nexmark/q20.sql"),
        Q21 => include_str!("nexmark/q21.sql"),
        Q22 => include_str!("nexmark/q22.sql"),
        Tumble => include_str!("nexmark/tumble.sql"),
        Q0Check => include_str!("nexmark/q0_check.sql"),
        DedupFirst => include_str!("nexmark/dedup_first.sql"),
        OverOutlier => include_str!("nexmark/over_outlier.sql"),
    }
}

/// Rows of Nexmark's side input (q13): `i,i` for `i` in `0..10000`, as nexmark-flink's
/// `SideInputGenerator` writes them.
const SIDE_INPUT_ROWS: u64 = 10_000;

/// Writes q13's side input file at `path`.
fn write_side_input(path: &std::path::Path) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut text = String::new();
    for i in 0..SIDE_INPUT_ROWS {
        let _ = writeln!(text, "{i},{i}");
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// What one benchmark run did.
pub struct RunStats {
    /// Rows the last sink took.
    pub rows: u64,
    /// Value bytes the first source read.
    pub bytes_in: u64,
    /// Value bytes the last sink wrote.
    pub bytes_out: u64,
    /// Wall time from start to end.
    pub secs: f64,
}

/// Options for a benchmark run named `name`, with its scratch data directory.
pub fn bench_options(name: &str, parallelism: usize) -> (PrepareOptions, std::path::PathBuf) {
    let data_dir = std::env::temp_dir().join(format!("runnel-bench-{}-{name}", std::process::id()));
    let mut options = PrepareOptions::new(name, &data_dir);
    options.parallelism = Some(parallelism);
    options.from_scratch = true;
    (options, data_dir)
}

/// Runs a script to its end in a scratch data directory (removed afterwards).
pub async fn run_sql(sql: &str, name: &str, parallelism: usize) -> anyhow::Result<RunStats> {
    let (options, data_dir) = bench_options(name, parallelism);
    let prepared = prepare(sql, &options).with_context(|| format!("planning {name}"))?;
    let started = Instant::now();
    let mut running = prepared.start(Resources::new(&data_dir)).await?;
    let metrics = running.metrics();
    let result = running.join().await;
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&data_dir);
    result?;
    let last = metrics.nodes.last();
    Ok(RunStats {
        rows: last.map_or(0, |m| m.rows_in.get()),
        bytes_in: metrics.nodes.first().map_or(0, |m| m.connector.bytes.get()),
        bytes_out: last.map_or(0, |m| m.connector.bytes.get()),
        secs,
    })
}

/// The bench's scratch directory: the pipeline's data, q13's side input, q10's files.
fn scratch_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("runnel-bench-{}", std::process::id()))
}

/// The whole pipeline of a Nexmark query over the generator: the three streams, then
/// the query, whose sink discards its rows unless `output` names a JSON file (for q10,
/// the directory of its partitions). `scratch` holds q13's side input.
pub fn nexmark_sql(
    query: NexmarkQuery,
    events: u64,
    rate: u64,
    output: Option<&std::path::Path>,
    scratch: &std::path::Path,
) -> String {
    let gen_opts = |stream: &str| {
        format!(
            "connector = 'nexmark', stream = '{stream}', events = '{events}', rate = '{rate}', throttle = 'false'"
        )
    };
    let quoted = |p: &std::path::Path| p.display().to_string().replace('\'', "''");
    let q10 = output.map_or_else(|| scratch.join("q10"), std::path::Path::to_path_buf);
    let mut text = query_text(query)
        .replace("${SCRATCH_DIR}", &quoted(scratch))
        .replace("${Q10_OUTPUT}", &quoted(&q10));
    if let Some(path) = output {
        let path = path.display().to_string().replace('\'', "''");
        text = text.replace(
            "connector = 'blackhole'",
            &format!("connector = 'file', path = '{path}'"),
        );
    }
    format!(
        "-- the mini-batch settings of Nexmark's Flink configuration\n\
         SET 'table.exec.mini-batch.enabled' = 'true';\n\
         SET 'table.exec.mini-batch.allow-latency' = '2 s';\n\
         SET 'table.exec.mini-batch.size' = '50000';\n\
         {BID_TABLE} WITH ({});\n{AUCTION_TABLE} WITH ({});\n{PERSON_TABLE} WITH ({});\n\
         -- the processing time of each bid, for q12\n\
         CREATE VIEW bid_p AS SELECT *, PROCTIME() AS p_time FROM bid;\n{text}",
        gen_opts("bid"),
        gen_opts("auction"),
        gen_opts("person"),
    )
}

/// Flink's own Nexmark files from `dir` (`ddl_gen.sql`, `ddl_views.sql`, the query's
/// `qN.sql`) with their `${…}` variables filled in the way nexmark-flink's runner
/// does; the generator runs unthrottled, and `output` replaces a blackhole sink.
pub fn flink_nexmark_sql(
    dir: &std::path::Path,
    query: NexmarkQuery,
    events: u64,
    rate: u64,
    output: Option<&std::path::Path>,
    scratch: &std::path::Path,
) -> anyhow::Result<String> {
    let name = match query {
        NexmarkQuery::Q7Max
        | NexmarkQuery::Tumble
        | NexmarkQuery::Q0Check
        | NexmarkQuery::DedupFirst
        | NexmarkQuery::OverOutlier => {
            anyhow::bail!("--flink-queries: {query:?} is runnel's own query, not one of Nexmark's")
        }
        q => format!("{q:?}").to_ascii_lowercase(),
    };
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read_to_string(&path)
            .with_context(|| format!("reading Flink's Nexmark file {}", path.display()))
    };
    let vars = [
        ("TPS", rate.to_string()),
        ("EVENTS_NUM", events.to_string()),
        ("PERSON_PROPORTION", "1".into()),
        ("AUCTION_PROPORTION", "3".into()),
        ("BID_PROPORTION", "46".into()),
        ("NEXMARK_TABLE", "datagen".into()),
        ("KEEP_ALIVE", "false".into()),
        ("STOP_AT", "-1".into()),
        // q13's side input is read from ${FLINK_HOME}/data, q10 writes under ${NEXMARK_DIR}.
        ("FLINK_HOME", scratch.display().to_string()),
        ("NEXMARK_DIR", scratch.display().to_string()),
        ("SUBMIT_TIME", "run".into()),
    ];
    let mut text = [
        read("ddl_gen.sql")?,
        read("ddl_views.sql")?,
        read(&format!("{name}.sql"))?,
    ]
    .join(";\n");
    for (k, v) in vars {
        text = text.replace(&format!("${{{k}}}"), &v);
    }
    text = text.replacen(
        "'connector' = 'nexmark',",
        "'connector' = 'nexmark', 'throttle' = 'false',",
        1,
    );
    if let Some(path) = output {
        let path = path.display().to_string().replace('\'', "''");
        text = text.replace(
            "'connector' = 'blackhole'",
            &format!("'connector' = 'file', 'path' = '{path}'"),
        );
    }
    Ok(text)
}

/// Runs one Nexmark query and prints its throughput.
pub async fn nexmark(args: NexmarkArgs) -> anyhow::Result<()> {
    let data_dir = scratch_dir();
    let mut sql = match &args.flink_queries {
        Some(dir) => flink_nexmark_sql(
            dir,
            args.query,
            args.events,
            args.rate,
            args.output.as_deref(),
            &data_dir,
        )?,
        None => nexmark_sql(
            args.query,
            args.events,
            args.rate,
            args.output.as_deref(),
            &data_dir,
        ),
    };
    if let Some(v) = &args.checkpoint_interval {
        sql = format!("SET 'execution.checkpointing.interval' = '{v}';\n{sql}");
    }
    if args.print_sql {
        print!("{sql}");
        return Ok(());
    }
    if args.query == NexmarkQuery::Q13 {
        let side = match args.flink_queries {
            Some(_) => data_dir.join("data").join("side_input.txt"),
            None => data_dir.join("side_input.txt"),
        };
        write_side_input(&side)?;
    }
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
    let bids = match bid_node.and_then(|i| metrics.nodes.get(i)) {
        Some(m) => m.rows_out.get(),
        // Flink's table holds every event; 46 of each 50 are bids.
        None => args.events / 50 * 46 + (args.events % 50).saturating_sub(4),
    };
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
