//! `runnel query "SELECT …"` (or `-f script.sql`): an ad-hoc, bounded query over what
//! runnel stored — log topics, Parquet directories, Delta tables, or any bounded table
//! the script declares — run by the same engine as a pipeline, its final rows printed as
//! an aligned table, JSON lines or CSV, then a row count and the time taken.
//!
//! A table the script does not declare is looked up by name: first a topic of the log in
//! `--data-dir` (columns inferred from its first JSON records), then a Delta table or
//! Parquet file or directory at that path (quote a path with backticks: `` FROM
//! `out/frames` ``).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use arrow::array::Array;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use clap::{Args, ValueEnum};
use runnel_connectors::descriptor::Resource;
use runnel_runtime::host::cut;
use runnel_runtime::{PrepareOptions, Resources, prepare_query};

/// `runnel query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The query: optional SET / CREATE TABLE / CREATE VIEW statements, then one SELECT
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub sql: Option<String>,
    /// Read the query script from this file instead
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// How the rows are printed
    #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
    pub format: QueryFormat,
    /// Directory of the log whose topics can be queried by name
    #[arg(long, default_value = "runnel-data")]
    pub data_dir: PathBuf,
    /// Subtasks per operator (default: the number of cores)
    #[arg(short, long)]
    pub parallelism: Option<usize>,
    /// Longest cell shown in a table before it is cut with '…'
    #[arg(long, default_value_t = 60)]
    pub max_width: usize,
}

/// Output formats of `runnel query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryFormat {
    /// An aligned table
    Table,
    /// One JSON object per row
    Json,
    /// CSV with a header line
    Csv,
}

/// Runs `runnel query`.
pub async fn query(args: QueryArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (sql, origin) = match (&args.sql, &args.file) {
        (_, Some(file)) => (
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read query file {}", file.display()))?,
            file.display().to_string(),
        ),
        (Some(sql), None) => (sql.clone(), "query".to_string()),
        (None, None) => bail!("give a query, or a file of one with -f"),
    };
    // The log is opened only when the data directory holds one: a query never creates it.
    let mut resources = Resources::new(&args.data_dir);
    let mut log_unavailable = None;
    if args.data_dir.join("topics").is_dir() {
        match resources.open_log().await {
            Ok(_) => {}
            Err(e) => log_unavailable = Some(e),
        }
    }
    let mut options = PrepareOptions::new(origin.clone(), args.data_dir.clone());
    options.parallelism = args.parallelism;
    options.from_scratch = true;
    let prepared = match prepare_query(&sql, &options, resources.log.clone()) {
        Ok(p) => p,
        Err(e) => {
            let mut err = anyhow::Error::new(e).context(origin.clone());
            if let Some(log) = log_unavailable {
                err = err.context(format!(
                    "note: log topics could not be looked up: {log} (a running pipeline or \
                     server holds the log; stop it, or query a copy of {})",
                    args.data_dir.display()
                ));
            }
            resources.close().await;
            return Err(err);
        }
    };
    if prepared.unbounded() {
        resources.close().await;
        bail!(
            "{origin}: runnel query reads bounded tables, and {} never ends; set 'bounded' = \
             'true' on it (or run the script as a pipeline with `runnel run`)",
            prepared
                .tables()
                .filter(
                    |(t, role)| *role == runnel_connectors::descriptor::Role::Source
                        && runnel_connectors::registry::source_never_ends(t)
                )
                .map(|(t, _)| format!("table '{}'", t.name))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if prepared.needs(Resource::Log) && resources.log.is_none() {
        let log = resources.open_log().await?;
        drop(log);
    }
    let result = run(prepared, resources.clone()).await;
    resources.close().await;
    let batch = result.with_context(|| format!("running {origin}"))?;
    let mut out = std::io::stdout().lock();
    match args.format {
        QueryFormat::Table => write_table(&mut out, &batch, args.max_width)?,
        QueryFormat::Json => {
            let mut buf = Vec::new();
            runnel_connectors::format::json::JsonEncoder.encode(&batch, &mut buf)?;
            out.write_all(&buf)?;
        }
        QueryFormat::Csv => {
            let mut buf = Vec::new();
            let encoder = runnel_connectors::format::csv::CsvEncoder;
            encoder.header(&batch.schema(), &mut buf)?;
            encoder.encode(&batch, &mut buf)?;
            out.write_all(&buf)?;
        }
    }
    out.flush()?;
    let rows = batch.num_rows();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "({rows} row{} in {})",
        if rows == 1 { "" } else { "s" },
        if secs < 1.0 {
            format!("{:.0} ms", secs * 1000.0)
        } else {
            format!("{secs:.2} s")
        }
    );
    Ok(())
}

/// Runs the query to its end (or Ctrl-C) and returns its final rows.
async fn run(
    prepared: runnel_runtime::Prepared,
    resources: Resources,
) -> anyhow::Result<RecordBatch> {
    let mut running = prepared.start(resources).await?;
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = interrupted.clone();
    let result = running
        .run_until(async move {
            crate::cmd::run::shutdown_signal().await;
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        })
        .await;
    if let Err(e) = result {
        // The engine's own summary names the failing operator.
        eprint!("{}", running.summary(false));
        return Err(e.into());
    }
    if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("runnel: interrupted; the rows so far:");
    }
    match running.query_result() {
        Some(r) => Ok(r?),
        None => bail!("the script has no SELECT"),
    }
}

/// The rows as an aligned table: a header, a rule, one line per row; numbers right-aligned.
fn write_table(
    out: &mut impl std::io::Write,
    batch: &RecordBatch,
    max_width: usize,
) -> anyhow::Result<()> {
    let schema = batch.schema();
    let options = FormatOptions::default().with_null("NULL");
    let mut cells: Vec<Vec<String>> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let column = batch.column(i);
        let mut col = Vec::with_capacity(batch.num_rows() + 1);
        col.push(field.name().clone());
        if matches!(field.data_type(), DataType::Binary | DataType::LargeBinary) {
            let lens = arrow::array::cast::AsArray::as_binary_opt::<i32>(column.as_ref());
            for r in 0..batch.num_rows() {
                col.push(match lens {
                    Some(b) if b.is_valid(r) => format!("<{} bytes>", b.value(r).len()),
                    _ => "NULL".into(),
                });
            }
        } else {
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
            for r in 0..batch.num_rows() {
                col.push(cut(&formatter.value(r).to_string(), max_width.max(4)));
            }
        }
        cells.push(col);
    }
    let columns: Vec<String> = cells.iter().map(|c| c[0].clone()).collect();
    let rows: Vec<Vec<String>> = (1..=batch.num_rows())
        .map(|r| cells.iter().map(|c| c[r].clone()).collect())
        .collect();
    let numeric: Vec<bool> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().is_numeric())
        .collect();
    for line in table_lines(&columns, &numeric, &rows) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// An aligned table as lines: a header, a rule, one line per row; the cells of
/// `numeric` columns right-aligned. `runnel query` and `runnel sql` both print with it.
pub(crate) fn table_lines(
    columns: &[impl AsRef<str>],
    numeric: &[bool],
    rows: &[Vec<String>],
) -> Vec<String> {
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(c, name)| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .chain([name.as_ref().chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &mut dyn Iterator<Item = &str>, header: bool| -> String {
        let mut text = String::new();
        for (c, cell) in cells.enumerate() {
            if c > 0 {
                text.push_str(" | ");
            }
            let pad = widths
                .get(c)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            if numeric.get(c).copied().unwrap_or(false) && !header {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            }
        }
        text.trim_end().to_string()
    };
    let mut lines = Vec::with_capacity(rows.len() + 2);
    lines.push(line(&mut columns.iter().map(AsRef::as_ref), true));
    lines.push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-"),
    );
    for r in rows {
        lines.push(line(&mut r.iter().map(String::as_str), false));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn tables_align_and_right_align_numbers() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("camera", DataType::Utf8, true),
                Field::new("n", DataType::Int64, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec![Some("cam-1"), None])),
                Arc::new(Int64Array::from(vec![3, 120])),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        write_table(&mut out, &batch, 60).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "camera | n\n-------+----\ncam-1  |   3\nNULL   | 120\n"
        );
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}
