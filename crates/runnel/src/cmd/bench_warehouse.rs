//! `runnel bench warehouse`: Nexmark bids written by the `filesystem` sink as Parquet and
//! by the `delta` sink, exactly once (checkpointed), timed end to end, with the bytes per
//! row on disk; beside DuckDB's `COPY … TO … (FORMAT parquet)` of the same rows when a
//! Python with `duckdb` is there (`pip install duckdb`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::cmd::bench::run_sql;

/// `runnel bench warehouse`.
#[derive(Debug, clap::Args)]
pub struct BenchWarehouseArgs {
    /// Bids to write per phase
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: u64,
    /// Subtasks per operator
    #[arg(short, long, default_value_t = 2)]
    pub parallelism: usize,
    /// Checkpoint interval (each checkpoint commits files: a Delta commit per subtask)
    #[arg(long, default_value = "10 s")]
    pub checkpoint_interval: String,
    /// Phases to run: parquet, delta, duckdb (DuckDB rewrites the parquet phase's rows)
    #[arg(long, value_delimiter = ',', default_value = "parquet,delta,duckdb")]
    pub phases: Vec<String>,
    /// Python with the duckdb module, for the duckdb phase
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
}

const BID: &str = "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, \
                   date_time TIMESTAMP(3), extra STRING";

/// Runs the benchmark and prints one `key=value` line per phase.
pub async fn bench_warehouse(args: BenchWarehouseArgs) -> anyhow::Result<()> {
    for p in &args.phases {
        anyhow::ensure!(
            matches!(p.as_str(), "parquet" | "delta" | "duckdb"),
            "--phases: '{p}' is not parquet, delta or duckdb"
        );
    }
    let scratch = std::env::temp_dir().join(format!("runnel-bench-wh-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let result = phases(&args, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

async fn phases(args: &BenchWarehouseArgs, scratch: &Path) -> anyhow::Result<()> {
    // Nexmark: 46 of every 50 events are bids.
    let events = args.rows * 50 / 46 + 50;
    let source = format!(
        "SET 'execution.checkpointing.interval' = '{}';
         CREATE TABLE bid ({BID}) WITH ('connector' = 'nexmark', 'stream' = 'bid', 'events' = '{events}');",
        args.checkpoint_interval
    );
    let parquet_dir = scratch.join("parquet");
    // The rows the parquet phase wrote, which DuckDB rewrites.
    let mut parquet_rows = args.rows;
    for phase in &args.phases {
        let (rows, secs, dir) = match phase.as_str() {
            "parquet" | "delta" => {
                let dir = scratch.join(phase);
                let with = if phase == "parquet" {
                    format!(
                        "'connector' = 'filesystem', 'format' = 'parquet', 'path' = '{}'",
                        dir.display()
                    )
                } else {
                    format!("'connector' = 'delta', 'path' = '{}'", dir.display())
                };
                let sql = format!(
                    "{source}
                     CREATE TABLE dst ({BID}) WITH ({with});
                     INSERT INTO dst SELECT * FROM bid;"
                );
                let run = run_sql(&sql, phase, args.parallelism).await?;
                let (rows, secs) = (run.rows, run.secs);
                if phase == "parquet" {
                    parquet_rows = rows;
                }
                (rows, secs, dir)
            }
            _ => {
                if !parquet_dir.is_dir() {
                    anyhow::bail!(
                        "the duckdb phase rewrites the parquet phase's rows: run parquet first"
                    );
                }
                let dir = scratch.join("duckdb");
                std::fs::create_dir_all(&dir)?;
                let script = format!(
                    "import duckdb, time\n\
                     c = duckdb.connect()\n\
                     c.execute('SET threads = {p}')\n\
                     t = time.time()\n\
                     c.execute(\"COPY (SELECT * FROM read_parquet('{src}/*.parquet')) TO '{dst}/bids.parquet' (FORMAT parquet, COMPRESSION zstd)\")\n\
                     print(time.time() - t)\n",
                    p = args.parallelism,
                    src = parquet_dir.display(),
                    dst = dir.display()
                );
                let started = Instant::now();
                let out = Command::new(&args.python).args(["-c", &script]).output();
                let wall = started.elapsed().as_secs_f64();
                let out = match out {
                    Ok(o) if o.status.success() => o,
                    Ok(o) => {
                        println!(
                            "phase=duckdb skipped: {}",
                            String::from_utf8_lossy(&o.stderr)
                                .lines()
                                .last()
                                .unwrap_or("")
                        );
                        continue;
                    }
                    Err(e) => {
                        println!("phase=duckdb skipped: {e}");
                        continue;
                    }
                };
                let secs = String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse::<f64>()
                    .unwrap_or(wall);
                (parquet_rows, secs, dir)
            }
        };
        let bytes = parquet_bytes(&dir);
        println!(
            "phase={phase} rows={rows} seconds={secs:.3} rows_per_s={:.0} parquet_bytes={bytes} bytes_per_row={:.1}",
            rows as f64 / secs,
            bytes as f64 / rows.max(1) as f64
        );
    }
    Ok(())
}

/// Bytes of every `.parquet` file under `dir`.
fn parquet_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                parquet_bytes(&path)
            } else if path.extension().is_some_and(|x| x == "parquet") {
                e.metadata().map_or(0, |m| m.len())
            } else {
                0
            }
        })
        .sum()
}
