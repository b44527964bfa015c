//! `runnel bench postgres`: Nexmark bids written into a PostgreSQL server the user runs
//! (`--url`) by runnel's `postgres` sink — appended at least once, appended exactly once
//! (checkpointed), and upserted by a primary key — beside the ceiling: `psql`'s `\copy`
//! of the same rows from a CSV file (COPY in text form, no runnel in the path).

use std::process::Command;
use std::time::Instant;

use anyhow::Context;

use crate::cmd::bench::run_sql;

/// `runnel bench postgres`.
#[derive(Debug, clap::Args)]
pub struct BenchPostgresArgs {
    /// The server, postgres://user@host:port/database (psql must be installed for the
    /// table set-up and the COPY ceiling)
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub url: String,
    /// Bids to write per phase
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Subtasks per operator
    #[arg(short, long, default_value_t = 2)]
    pub parallelism: usize,
    /// Checkpoint interval of the exactly-once phases
    #[arg(long, default_value = "1 s")]
    pub checkpoint_interval: String,
    /// Phases to run
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "copy,append,append-exactly-once,upsert-exactly-once"
    )]
    pub phases: Vec<String>,
}

const BID: &str = "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, \
                   date_time TIMESTAMP(3), extra STRING";
const BID_PG: &str = "auction bigint, bidder bigint, price bigint, channel text, url text, \
                      date_time timestamp(3), extra text";

fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([url, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .context(
            "running psql (install the PostgreSQL client: apt-get install postgresql-client)",
        )?;
    anyhow::ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs the benchmark and prints one `key=value` line per phase.
pub async fn bench_postgres(args: BenchPostgresArgs) -> anyhow::Result<()> {
    for p in &args.phases {
        anyhow::ensure!(
            matches!(
                p.as_str(),
                "copy" | "append" | "append-exactly-once" | "upsert-exactly-once"
            ),
            "--phases: '{p}' is not copy, append, append-exactly-once or upsert-exactly-once"
        );
    }
    let url = &args.url;
    let run = format!("runnel_bench_{}", std::process::id());
    // Nexmark: 46 of every 50 events are bids.
    let events = args.rows * 50 / 46 + 50;
    let source = format!(
        "CREATE TABLE bid ({BID}) WITH ('connector' = 'nexmark', 'stream' = 'bid', 'events' = '{events}');"
    );
    for phase in &args.phases {
        let table = format!("{run}_{}", phase.replace('-', "_"));
        let key = if phase.starts_with("upsert") {
            ", PRIMARY KEY (auction, bidder)"
        } else {
            ""
        };
        psql(url, &format!("CREATE TABLE {table} ({BID_PG}{key})"))?;
        let result = if phase == "copy" {
            copy_ceiling(&args, &source, &table).await
        } else {
            let checkpoints = if phase.ends_with("exactly-once") {
                format!(
                    "SET 'execution.checkpointing.interval' = '{}';",
                    args.checkpoint_interval
                )
            } else {
                String::new()
            };
            let sink_key = if key.is_empty() {
                ""
            } else {
                ", PRIMARY KEY (auction, bidder) NOT ENFORCED"
            };
            let sql = format!(
                "{checkpoints}{source}
                 CREATE TABLE dst ({BID}{sink_key}) WITH ('connector' = 'postgres', 'url' = '{url}',
                   'table-name' = '{table}');
                 INSERT INTO dst SELECT * FROM bid;"
            );
            run_sql(&sql, phase, args.parallelism)
                .await
                .map(|r| (r.rows, r.secs))
        };
        let in_table = psql(url, &format!("SELECT count(*) FROM {table}"));
        let _ = psql(url, &format!("DROP TABLE {table}"));
        let (rows, secs) = result?;
        println!(
            "phase={phase} rows={rows} rows_in_table={} seconds={secs:.3} rows_per_s={:.0}",
            in_table?.trim(),
            rows as f64 / secs
        );
    }
    Ok(())
}

/// Bids into a CSV file (untimed), then `\copy` into the table (timed).
async fn copy_ceiling(
    args: &BenchPostgresArgs,
    source: &str,
    table: &str,
) -> anyhow::Result<(u64, f64)> {
    let file = std::env::temp_dir().join(format!("{table}.csv"));
    let sql = format!(
        "{source}
         CREATE TABLE f ({BID}) WITH ('connector' = 'file', 'path' = '{}', 'format' = 'csv');
         INSERT INTO f SELECT * FROM bid;",
        file.display()
    );
    let rows = run_sql(&sql, "copy-file", args.parallelism).await?.rows;
    let started = Instant::now();
    let copied = psql(
        &args.url,
        &format!(
            "\\copy {table} FROM '{}' WITH (FORMAT csv, HEADER true)",
            file.display()
        ),
    );
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&file);
    copied?;
    Ok((rows, secs))
}
