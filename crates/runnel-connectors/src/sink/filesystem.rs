//! `filesystem` connector (Flink's name and options): a directory of CSV, JSON or Parquet
//! files.
//!
//! Read: a file, or every file of a directory, to the end; CSV has no header row (as
//! Flink's `csv` format), its fields are the declared columns in order.
//!
//! Written: `PARTITIONED BY (dt, hm)` puts each row in a Hive-style directory
//! `dt=2026-12-05/hm=10%3A00/` (values escaped as Hive and Flink do; the partition
//! columns live in the path, not in the files). Exactly once on the transactional-sink
//! mechanism ([`crate::txn`]): a subtask stages its rows, tagged with their partition,
//! in one hidden file; at a checkpoint's barrier it is sealed; once the checkpoint is
//! complete its rows are written out as `part-<run>-<subtask>-<checkpoint>-<n>.<ext>` in
//! each partition (through a hidden temporary file and a rename), so readers see only
//! rows of complete checkpoints, and a file reaches at most `sink.rolling-policy.file-size`.
//! `<run>` (see [`run_id`]) keeps the files of concurrent pipelines and of fresh runs
//! apart: no run overwrites or removes another's. An `s3://` path is written the same
//! way in a local working directory, each finished file uploaded with one PUT.
//! Without checkpoints, files are made visible when the staged rows reach that size,
//! when `sink.rolling-policy.rollover-interval` has passed, and at the end.
//!
//! Partition commit (`sink.partition-commit.policy.kind = 'success-file'`): once a
//! partition is complete its directory gets an empty `_SUCCESS` file, so batch jobs know
//! they may read it. With `sink.partition-commit.trigger = 'partition-time'` a partition
//! is complete when the watermark passes its time (from its values, by
//! `partition.time-extractor.timestamp-pattern`) plus `sink.partition-commit.delay`; with
//! `process-time` (the default) when that delay has passed since the subtask first
//! wrote to it. Every partition is complete when the input ends. Each subtask marks the
//! partitions it wrote, after committing its own files of that checkpoint.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use runnel_common::TableSpec;
use runnel_common::fault::crash_point;
use runnel_common::metrics::ConnectorMetrics;
use runnel_common::time::parse_duration_ms;

use crate::descriptor::{
    self, CheckContext, CheckFuture, Connector, Guarantee, OptionDef, OptionType, Role,
};
use crate::format::csv::CsvEncoder;
use crate::format::json::JsonEncoder;
use crate::source::file::{FileFormat, FileSourceConfig};
use crate::txn::{self, Apply, FINAL, Staging, Txn};
use crate::{ConnectorError, Sink, SinkContext, Source, SourceContext};

/// `connector = 'filesystem'`: Flink's filesystem tables.
pub const CONNECTOR: Connector = Connector {
    name: "filesystem",
    doc: "Flink's filesystem table: CSV (no header), JSON or Parquet files; read to the end, or written \
          exactly once into Hive-style partitions (PARTITIONED BY) with rolling files and \
          _SUCCESS partition commits",
    options: crate::descriptor::with_s3_options![
        OptionDef::new(
            "path",
            OptionType::Path,
            "file or directory to read; directory to write (a local path, file:// URI, or \
             s3://bucket/prefix to write)",
        )
        .required(),
        OptionDef::new(
            "format",
            OptionType::Choice(&["csv", "json", "parquet"]),
            "record encoding (parquet: the DDL's types, zstd, statistics)",
        )
        .required(),
        OptionDef::new(
            "sink.rolling-policy.file-size",
            OptionType::Text,
            "a part file is closed when it reaches this size (e.g. 128MB)",
        )
        .default("128MB")
        .sink_only(),
        OptionDef::new(
            "sink.rolling-policy.rollover-interval",
            OptionType::Text,
            "without checkpoints, staged rows become visible at least this often (with \
             checkpoints, at every checkpoint)",
        )
        .default("30 min")
        .sink_only(),
        OptionDef::new(
            "sink.rolling-policy.check-interval",
            OptionType::Text,
            "accepted for Flink scripts; the rollover interval is checked as rows and \
             watermarks arrive",
        )
        .default("1 min")
        .sink_only(),
        OptionDef::new(
            "sink.partition-commit.trigger",
            OptionType::Choice(&["process-time", "partition-time"]),
            "when a partition is complete: its time (from its values) plus the delay is \
             before the watermark, or the delay has passed since it was first written",
        )
        .default("process-time")
        .sink_only(),
        OptionDef::new(
            "sink.partition-commit.delay",
            OptionType::Text,
            "how long after its time a partition is complete (e.g. 1 h for hourly partitions)",
        )
        .default("0 s")
        .sink_only(),
        OptionDef::new(
            "sink.partition-commit.policy.kind",
            OptionType::Text,
            "what completing a partition does: success-file (an empty _SUCCESS file in it)",
        )
        .sink_only(),
        OptionDef::new(
            "sink.partition-commit.success-file.name",
            OptionType::Text,
            "name of the success file",
        )
        .default("_SUCCESS")
        .sink_only(),
        OptionDef::new(
            "partition.time-extractor.timestamp-pattern",
            OptionType::Text,
            "a partition's time from its values, e.g. '$dt $hm:00' (then read as yyyy-MM-dd \
             HH:mm:ss); default: the first partition value",
        )
        .sink_only(),
        OptionDef::new(
            "partition.default-name",
            OptionType::Text,
            "the directory of rows whose partition value is NULL or empty",
        )
        .default("__DEFAULT_PARTITION__"),
    ],
    source: Some(build_source),
    sink: Some(build),
    unbounded: descriptor::never_unbounded,
    guarantee: Guarantee::ExactlyOnce,
    updates: descriptor::append_only,
    needs: &[],
    validate,
    check,
    metadata: &[],
    upserts: false,
    lookup: None,
};

const NAME: &str = "filesystem";

/// Hidden staging files of the transactional-sink mechanism, in the table's directory.
const STAGING_PREFIX: &str = ".fs-part-";

/// `path` without a `file://` scheme.
fn local_path(spec: &TableSpec) -> Result<PathBuf, ConnectorError> {
    local_path_of(spec, NAME)
}

/// The `path` option of a `connector` table that only takes local paths (or `file://`).
pub(crate) fn local_path_of(spec: &TableSpec, connector: &str) -> Result<PathBuf, ConnectorError> {
    let text =
        spec.options
            .required(connector, "path")
            .map_err(|source| ConnectorError::Option {
                table: spec.name.clone(),
                source,
            })?;
    if let Some(rest) = text.strip_prefix("file://") {
        return Ok(PathBuf::from(rest));
    }
    if let Some((scheme, _)) = text.split_once("://") {
        return Err(ConnectorError::Unsupported {
            table: spec.name.clone(),
            connector: connector.into(),
            reason: format!("path '{text}': {scheme}:// is not supported yet; use a local path"),
        });
    }
    Ok(PathBuf::from(text))
}

fn format_of(spec: &TableSpec) -> FileFormat {
    match spec.options.get("format") {
        Some("json") => FileFormat::Json,
        Some("parquet") => FileFormat::Parquet,
        _ => FileFormat::Csv,
    }
}

/// Parses a size: `128MB`, `64 kb`, `1gb`, `1000` (bytes).
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor).filter(|&s| s > 0)
}

/// When a partition is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    ProcessTime,
    PartitionTime,
}

/// The sink's options, read once.
#[derive(Debug, Clone)]
struct SinkConfig {
    /// The table's directory; for an `s3://` path, the local working directory files are
    /// written in before they are uploaded.
    path: PathBuf,
    /// `s3://bucket/prefix`: where the files go.
    remote_url: Option<String>,
    /// The client for `remote_url`, once built.
    remote: Option<Arc<Remote>>,
    format: FileFormat,
    file_size: u64,
    rollover: Duration,
    trigger: Trigger,
    delay_ms: i64,
    success_file: Option<String>,
    time_pattern: Option<String>,
    default_name: String,
}

impl SinkConfig {
    fn try_new(spec: &TableSpec) -> Result<Self, ConnectorError> {
        let opt = |source| ConnectorError::Option {
            table: spec.name.clone(),
            source,
        };
        let o = &spec.options;
        let duration = |key: &str, default: i64| {
            o.parsed(
                NAME,
                key,
                "expected a duration such as 30 s, 1 min or 1 h",
                |v| parse_duration_ms(v).filter(|ms| *ms >= 0),
            )
            .map(|d| d.unwrap_or(default))
            .map_err(opt)
        };
        let file_size = o
            .parsed(
                NAME,
                "sink.rolling-policy.file-size",
                "expected a size such as 128MB",
                parse_size,
            )
            .map_err(opt)?
            .unwrap_or(128 << 20);
        let rollover = duration("sink.rolling-policy.rollover-interval", 30 * 60_000)?;
        let _check = duration("sink.rolling-policy.check-interval", 60_000)?;
        let delay_ms = duration("sink.partition-commit.delay", 0)?;
        let trigger = match o
            .choice(
                NAME,
                "sink.partition-commit.trigger",
                &["process-time", "partition-time"],
            )
            .map_err(opt)?
        {
            Some("partition-time") => Trigger::PartitionTime,
            _ => Trigger::ProcessTime,
        };
        let mut success = false;
        if let Some(kinds) = o.get("sink.partition-commit.policy.kind") {
            for kind in kinds.split(',').map(str::trim) {
                match kind {
                    "success-file" => success = true,
                    other => {
                        return Err(ConnectorError::Unsupported {
                            table: spec.name.clone(),
                            connector: NAME.into(),
                            reason: format!(
                                "sink.partition-commit.policy.kind '{other}': only success-file \
                                 is supported (metastore needs a Hive catalog)"
                            ),
                        });
                    }
                }
            }
        }
        if spec.partition_keys.len() >= spec.schema.fields().len() {
            return Err(ConnectorError::Other(format!(
                "table '{}': PARTITIONED BY names every column; at least one column must be \
                 left for the files",
                spec.name
            )));
        }
        let (path, remote_url) = match o.get("path") {
            Some(url) if url.starts_with("s3://") => {
                runnel_common::s3::split_url(url).map_err(|e| {
                    ConnectorError::Other(format!("table '{}': option 'path': {e}", spec.name))
                })?;
                (PathBuf::new(), Some(url.trim_end_matches('/').to_string()))
            }
            _ => (local_path(spec)?, None),
        };
        Ok(SinkConfig {
            path,
            remote_url,
            remote: None,
            format: format_of(spec),
            file_size,
            rollover: Duration::from_millis(rollover as u64),
            trigger,
            delay_ms,
            success_file: success.then(|| {
                o.get("sink.partition-commit.success-file.name")
                    .unwrap_or("_SUCCESS")
                    .to_string()
            }),
            time_pattern: o
                .get("partition.time-extractor.timestamp-pattern")
                .map(str::to_string),
            default_name: o
                .get("partition.default-name")
                .unwrap_or("__DEFAULT_PARTITION__")
                .to_string(),
        })
    }

    fn ext(&self) -> &'static str {
        match self.format {
            FileFormat::Json => "jsonl",
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
        }
    }
}

fn validate(spec: &TableSpec) -> Result<(), ConnectorError> {
    SinkConfig::try_new(spec).map(|_| ())
}

/// The `s3://…` path of the table, if it has one.
fn s3_path(spec: &TableSpec) -> Option<&str> {
    spec.options.get("path").filter(|p| p.starts_with("s3://"))
}

/// Where a source reading `s3://` keeps its local copy: `<data-dir>/s3-in/<table>`,
/// emptied first.
pub(crate) fn s3_copy_dir(data_dir: &Path, spec: &TableSpec) -> PathBuf {
    let safe: String = spec
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dest = data_dir.join("s3-in").join(safe);
    let _ = std::fs::remove_dir_all(&dest);
    dest
}

/// A source's input must exist; a sink's directory must be creatable.
fn check(spec: TableSpec, role: Role, _: CheckContext) -> CheckFuture {
    Box::pin(async move {
        if s3_path(&spec).is_some() {
            let remote = Remote::new(&spec)?;
            return remote.probe().await;
        }
        let path = local_path(&spec)?;
        match role {
            Role::Source | Role::Both => {
                if format_of(&spec) != FileFormat::Parquet {
                    crate::format::check_schema(&spec.name, &spec.schema)?;
                }
                crate::source::file::list_files(&spec.name, &path, Path::new("")).map(|_| ())
            }
            Role::Sink => crate::source::file::writable_under(&spec.name, &path, Some(&path)),
        }
    })
}

/// Reads the table like the `file` connector, with Flink's CSV (no header row).
fn build_source(
    spec: &TableSpec,
    contexts: Vec<SourceContext>,
) -> Result<Vec<Box<dyn Source>>, ConnectorError> {
    CONNECTOR.check_options(spec)?;
    let path = match s3_path(spec) {
        Some(_) => {
            // Read from a local copy: the objects under the prefix (not hidden ones).
            let remote = Remote::new(spec)?;
            let data_dir = contexts
                .first()
                .map(|c| c.data_dir.clone())
                .unwrap_or_default();
            let dest = s3_copy_dir(&data_dir, spec);
            let rels: Vec<String> = remote
                .list()?
                .into_iter()
                .filter(|r| !r.split('/').any(|p| p.starts_with(['.', '_'])))
                .collect();
            remote.download(&rels, &dest)?;
            dest
        }
        None => local_path(spec)?,
    };
    let config = FileSourceConfig {
        dead_letter_path: PathBuf::from(format!(
            "{}.dead-letter.jsonl",
            path.display().to_string().trim_end_matches(['/', '\\'])
        )),
        path,
        format: format_of(spec),
        csv_header: false,
        partitioned: (!spec.partition_keys.is_empty()).then(|| crate::source::file::Partitioned {
            columns: spec.partition_keys.clone(),
            default_name: spec
                .options
                .get("partition.default-name")
                .unwrap_or("__DEFAULT_PARTITION__")
                .to_string(),
            unescape: unescape_path_value,
        }),
        files: None,
    };
    crate::source::file::build_with(spec, contexts, config)
}

/// Validates options, recovers the directory and returns one subtask per context.
fn build(
    spec: &TableSpec,
    contexts: Vec<SinkContext>,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
    CONNECTOR.check_options(spec)?;
    let mut config = SinkConfig::try_new(spec)?;
    if config.remote_url.is_some() {
        let remote = Remote::new(spec)?;
        // Files are written here, then uploaded; one directory per URL and pipeline.
        let data_dir = contexts
            .first()
            .map(|c| c.data_dir.clone())
            .unwrap_or_default();
        let pipeline = contexts
            .first()
            .and_then(|c| c.pipeline.clone())
            .unwrap_or_else(|| "pipeline".into());
        let safe = |t: &str| {
            t.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        };
        config.path = data_dir
            .join("s3-out")
            .join(safe(&pipeline))
            .join(safe(&remote.url));
        config.remote = Some(Arc::new(remote));
    }
    let config = Arc::new(config);
    let ctx = |what: &str| format!("table '{}': {what} '{}'", spec.name, config.path.display());
    std::fs::create_dir_all(&config.path)
        .map_err(|e| ConnectorError::io(ctx("creating the output directory"), e))?;
    let restored = contexts
        .first()
        .and_then(|c| c.checkpoint)
        .map(|m| m.restored);
    let task = contexts.first().and_then(|c| c.task);
    let task_tag = task.map_or_else(String::new, |t| format!("{t}-"));
    let pipeline = contexts
        .first()
        .and_then(|c| c.pipeline.clone())
        .unwrap_or_else(|| "pipeline".into());
    let run = run_id(
        &config,
        &pipeline,
        &task_tag,
        restored.flatten().is_some(),
        contexts.first().and_then(|c| c.sealed.as_deref()),
    )?;
    let tag = format!("{task_tag}{run}-");
    let staging_prefix = format!("{STAGING_PREFIX}{tag}");
    let apply = Arc::new(PartitionFiles {
        config: config.clone(),
        tag,
    });
    // A checkpointed run resumes after `restored`, dropping what its own run wrote for
    // later checkpoints; a fresh run has a new run id, so nothing earlier runs wrote is
    // touched.
    txn::recover_with(
        &config.path,
        &staging_prefix,
        apply.as_ref(),
        contexts
            .first()
            .and_then(|c| c.checkpoint)
            .unwrap_or_default(),
        contexts.first().and_then(|c| c.sealed.as_deref()),
    )?;
    let partition_cols = spec.partition_keys.clone();
    let data_cols: Vec<usize> = (0..spec.schema.fields().len())
        .filter(|i| !partition_cols.contains(i))
        .collect();
    let data_schema = Arc::new(spec.schema.project(&data_cols)?);
    let partition_names: Vec<String> = partition_cols
        .iter()
        .map(|&i| spec.schema.field(i).name().clone())
        .collect();
    // Partitions written before a crash whose success file was not written yet (their
    // marks live in memory): subtask 0 marks them as if it had written them, so none is
    // left without one when its rows do not come again.
    let mut unmarked = HashMap::new();
    if let Some(name) = config.success_file.as_deref()
        && !partition_cols.is_empty()
        && task.is_none()
    {
        let mut found = Vec::new();
        match &config.remote {
            Some(remote) => found = remote.unmarked(name, partition_cols.len())?,
            None => unmarked_partitions(&config.path, name, partition_cols.len(), "", &mut found),
        }
        for partition in found {
            let values: Vec<String> = partition
                .split('/')
                .map(|kv| unescape_path_value(kv.split_once('=').map_or(kv, |(_, v)| v)))
                .collect();
            let time_ms = partition_time_of(&config, &partition_names, &values).ok();
            unmarked.insert(
                partition,
                Pending {
                    time_ms,
                    first_written: Instant::now(),
                },
            );
        }
    }
    Ok(contexts
        .into_iter()
        .map(|c| {
            let pending = if c.subtask == 0 {
                std::mem::take(&mut unmarked)
            } else {
                HashMap::new()
            };
            Box::new(FilesystemSink {
                config: config.clone(),
                checkpointing: c.checkpoint.is_some(),
                staging: Staging::new(
                    config.path.clone(),
                    &staging_prefix,
                    c.subtask,
                    Vec::new(),
                    apply.clone(),
                )
                .with_mirror(c.sealed.clone())
                .with_attempt(c.checkpoint.and_then(|m| m.attempt)),
                partition_cols: partition_cols.clone(),
                partition_names: partition_names.clone(),
                data_cols: data_cols.clone(),
                data_schema: data_schema.clone(),
                metrics: c.metrics,
                staged: 0,
                opened: None,
                local_id: 0,
                watermark: i64::MIN,
                pending,
                marks: Vec::new(),
                frame: Vec::new(),
            }) as Box<dyn Sink>
        })
        .collect())
}

/// A partition written since it was last marked complete.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Its time from its values (partition-time trigger).
    time_ms: Option<i64>,
    first_written: Instant,
}

/// One sink subtask.
pub struct FilesystemSink {
    config: Arc<SinkConfig>,
    checkpointing: bool,
    staging: Staging,
    partition_cols: Vec<usize>,
    partition_names: Vec<String>,
    data_cols: Vec<usize>,
    data_schema: SchemaRef,
    metrics: ConnectorMetrics,
    /// Bytes staged since the last seal.
    staged: u64,
    /// When the first row since the last seal was staged.
    opened: Option<Instant>,
    /// Seal ids of a run without checkpoints.
    local_id: u64,
    watermark: i64,
    pending: HashMap<String, Pending>,
    /// Partitions to mark complete once the seal with this id is committed.
    marks: Vec<(u64, Vec<String>)>,
    frame: Vec<u8>,
}

/// Hive's escaping of a partition value in a path (as Flink's `PartitionPathUtils`).
fn escape_path_value(value: &str, out: &mut String) {
    for c in value.chars() {
        let escape = matches!(
            c,
            '\u{1}'
                ..='\u{1f}'
                    | '"'
                    | '#'
                    | '%'
                    | '\''
                    | '*'
                    | '/'
                    | ':'
                    | '='
                    | '?'
                    | '\\'
                    | '\u{7f}'
                    | '{'
                    | '['
                    | ']'
                    | '^'
        );
        if escape {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
}

fn unescape_path_value(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (
                (bytes[i + 1] as char).to_digit(16),
                (bytes[i + 2] as char).to_digit(16),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads `yyyy-MM-dd HH:mm:ss[.SSS]`, `yyyy-MM-dd HH:mm` or `yyyy-MM-dd` as UTC ms.
fn parse_partition_time(text: &str) -> Option<i64> {
    use chrono::{NaiveDate, NaiveDateTime};
    let t = text.trim();
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, f) {
            return Some(dt.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc().timestamp_millis())
}

/// The time of the partition with these (unescaped) values.
fn partition_time_of(
    config: &SinkConfig,
    partition_names: &[String],
    values: &[String],
) -> Result<i64, ConnectorError> {
    let text = match &config.time_pattern {
        None => values.first().cloned().unwrap_or_default(),
        Some(pattern) => {
            // Longest names first, so `$dt` does not eat the start of `$dthour`.
            let mut names: Vec<(usize, &String)> = partition_names.iter().enumerate().collect();
            names.sort_by_key(|(_, n)| std::cmp::Reverse(n.len()));
            let mut t = pattern.clone();
            for (i, n) in names {
                t = t.replace(&format!("${n}"), values.get(i).map_or("", String::as_str));
            }
            t
        }
    };
    parse_partition_time(&text).ok_or_else(|| {
        ConnectorError::Other(format!(
            "filesystem sink '{}': partition time '{text}' (from {}) is not a time of the \
             form yyyy-MM-dd HH:mm:ss; set 'partition.time-extractor.timestamp-pattern'",
            config.path.display(),
            config
                .time_pattern
                .as_deref()
                .unwrap_or("the first partition value")
        ))
    })
}

/// Partition directories (`depth` levels of `k=v` under `dir`) holding part files but no
/// success file `name`, as `k=v/…` paths.
fn unmarked_partitions(dir: &Path, name: &str, depth: usize, at: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut has_parts = false;
    let mut marked = false;
    for e in entries.flatten() {
        let entry = e.file_name().to_string_lossy().into_owned();
        if depth > 0 {
            if entry.contains('=') && e.file_type().is_ok_and(|t| t.is_dir()) {
                let next = if at.is_empty() {
                    entry.clone()
                } else {
                    format!("{at}/{entry}")
                };
                unmarked_partitions(&e.path(), name, depth - 1, &next, out);
            }
        } else if entry == name {
            marked = true;
        } else if entry.starts_with("part-") {
            has_parts = true;
        }
    }
    if depth == 0 && has_parts && !marked {
        out.push(at.to_string());
    }
}

impl FilesystemSink {
    /// The time of the partition with these (unescaped) values.
    fn partition_time(&self, values: &[String]) -> Result<i64, ConnectorError> {
        partition_time_of(&self.config, &self.partition_names, values)
    }

    /// Partitions complete now (trigger), removed from `pending`.
    fn take_ready(&mut self, all: bool) -> Vec<String> {
        if self.config.success_file.is_none() {
            self.pending.clear();
            return Vec::new();
        }
        let delay = self.config.delay_ms;
        let (trigger, wm) = (self.config.trigger, self.watermark);
        let ready: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                all || match trigger {
                    Trigger::PartitionTime => {
                        p.time_ms.is_some_and(|t| wm > t.saturating_add(delay))
                    }
                    Trigger::ProcessTime => {
                        p.first_written.elapsed() >= Duration::from_millis(delay as u64)
                    }
                }
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &ready {
            self.pending.remove(k);
        }
        ready
    }

    /// Writes the success files of marks committed up to `upto`.
    fn mark_committed(&mut self, upto: u64) -> Result<(), ConnectorError> {
        let Some(name) = self.config.success_file.clone() else {
            return Ok(());
        };
        let (done, keep): (Vec<_>, Vec<_>) = self.marks.drain(..).partition(|(id, _)| *id <= upto);
        self.marks = keep;
        for partition in done.into_iter().flat_map(|(_, p)| p) {
            let dir = self.config.path.join(&partition);
            std::fs::create_dir_all(&dir)
                .and_then(|()| File::create(dir.join(&name)).and_then(|f| f.sync_all()))
                .map_err(|e| {
                    ConnectorError::io(format!("writing '{}'", dir.join(&name).display()), e)
                })?;
            if let Some(remote) = &self.config.remote {
                remote.upload(&self.config.path, &dir.join(&name))?;
            }
        }
        Ok(())
    }

    /// Without checkpoints: makes staged rows visible when they reached the file size or
    /// the rollover interval passed.
    fn maybe_roll(&mut self) -> Result<(), ConnectorError> {
        if self.checkpointing {
            return Ok(());
        }
        let due = self.staged >= self.config.file_size
            || self
                .opened
                .is_some_and(|t| t.elapsed() >= self.config.rollover);
        if due {
            self.roll(false)?;
        }
        Ok(())
    }

    /// Seals and commits at once (no checkpoints), then marks complete partitions.
    fn roll(&mut self, all: bool) -> Result<(), ConnectorError> {
        self.local_id += 1;
        let id = self.local_id;
        self.staging.seal(id)?;
        self.staging.commit(id)?;
        self.staged = 0;
        self.opened = None;
        let ready = self.take_ready(all);
        self.marks.push((id, ready));
        self.mark_committed(id)
    }
}

#[async_trait]
impl Sink for FilesystemSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        let rows = batch.num_rows();
        // Each row's partition directory, grouped in order of first appearance.
        let values: Vec<ArrayRef> = self
            .partition_cols
            .iter()
            .map(|&c| cast(batch.column(c), &DataType::Utf8))
            .collect::<Result<_, _>>()?;
        let values: Vec<&arrow::array::StringArray> =
            values.iter().map(|v| v.as_string::<i32>()).collect();
        let mut groups: Vec<(String, Vec<u32>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut key = String::new();
        for row in 0..rows {
            key.clear();
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    key.push('/');
                }
                key.push_str(&self.partition_names[i]);
                key.push('=');
                if v.is_null(row) || v.value(row).is_empty() {
                    escape_path_value(&self.config.default_name, &mut key);
                } else {
                    escape_path_value(v.value(row), &mut key);
                }
            }
            match index.get(key.as_str()) {
                Some(&g) => groups[g].1.push(row as u32),
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push((key.clone(), vec![row as u32]));
                }
            }
        }
        let data = batch.project(&self.data_cols)?;
        let data = RecordBatch::try_new(self.data_schema.clone(), data.columns().to_vec())?;
        let mut bytes = 0u64;
        for (partition, rows_of) in &groups {
            let part = if groups.len() == 1 {
                data.clone()
            } else {
                take_record_batch(&data, &UInt32Array::from(rows_of.clone()))?
            };
            let mut encoded = Vec::new();
            match self.config.format {
                FileFormat::Json => JsonEncoder.encode(&part, &mut encoded)?,
                FileFormat::Csv => CsvEncoder.encode(&part, &mut encoded)?,
                // Staged as Arrow IPC; the Parquet files are written at commit.
                FileFormat::Parquet => {
                    let mut w =
                        arrow::ipc::writer::StreamWriter::try_new(&mut encoded, &part.schema())?;
                    w.write(&part)?;
                    w.finish()?;
                }
            }
            self.frame.clear();
            self.frame
                .extend_from_slice(&(partition.len() as u32).to_le_bytes());
            self.frame.extend_from_slice(partition.as_bytes());
            self.frame
                .extend_from_slice(&(encoded.len() as u64).to_le_bytes());
            self.staging.write(&self.frame)?;
            self.staging.write(&encoded)?;
            bytes += encoded.len() as u64;
            if !self.pending.contains_key(partition) {
                let time_ms = if self.config.trigger == Trigger::PartitionTime
                    && self.config.success_file.is_some()
                {
                    let values: Vec<String> = partition
                        .split('/')
                        .map(|kv| unescape_path_value(kv.split_once('=').map_or(kv, |(_, v)| v)))
                        .collect();
                    // A partition whose values hold no time (NULL, a typo) does not stop
                    // the pipeline: it is written, and marked complete at the end.
                    match self.partition_time(&values) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            tracing::warn!(partition = %partition, "{e}; it is marked complete when the input ends");
                            None
                        }
                    }
                } else {
                    None
                };
                self.pending.insert(
                    partition.clone(),
                    Pending {
                        time_ms,
                        first_written: Instant::now(),
                    },
                );
            }
        }
        self.staged += bytes;
        self.opened.get_or_insert_with(Instant::now);
        self.metrics.rows.add(rows as u64);
        self.metrics.bytes.add(bytes);
        self.maybe_roll()
    }

    async fn watermark(&mut self, watermark: i64) -> Result<(), ConnectorError> {
        self.watermark = self.watermark.max(watermark);
        self.maybe_roll()
    }

    async fn pre_commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        self.staging.seal(checkpoint)?;
        self.staged = 0;
        self.opened = None;
        let ready = self.take_ready(false);
        self.marks.push((checkpoint, ready));
        Ok(())
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        self.staging.commit(checkpoint)?;
        self.mark_committed(checkpoint)
    }

    async fn finish(&mut self) -> Result<(), ConnectorError> {
        // The input ended: everything staged is final and every partition complete.
        self.watermark = i64::MAX;
        if self.checkpointing {
            self.staging.finish()?;
            let ready = self.take_ready(true);
            self.marks.push((FINAL, ready));
            self.mark_committed(FINAL)
        } else {
            self.roll(true)
        }
    }
}

/// Applies a sealed batch by writing its rows into part files of their partitions.
struct PartitionFiles {
    config: Arc<SinkConfig>,
    /// A distributed task's files are tagged with its name (`task-1-3-`), and it touches
    /// no other task's.
    tag: String,
}

/// A part file being written by an apply.
struct OpenPart {
    tmp: PathBuf,
    target: PathBuf,
    /// `None`: the file exists from an earlier attempt; its bytes are skipped.
    writer: Option<BufWriter<File>>,
    bytes: u64,
}

impl PartitionFiles {
    fn part_name(&self, txn: &Txn, n: u32) -> String {
        format!(
            "part-{}{}-{:010}-{n}.{}",
            self.tag,
            txn.subtask,
            txn.checkpoint,
            self.config.ext()
        )
    }

    fn open(&self, txn: &Txn, partition: &str, n: u32) -> Result<OpenPart, ConnectorError> {
        let dir = self.config.path.join(partition);
        let name = self.part_name(txn, n);
        let target = dir.join(&name);
        let tmp = dir.join(format!(".{name}.tmp"));
        if target.exists() {
            return Ok(OpenPart {
                tmp,
                target,
                writer: None,
                bytes: 0,
            });
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| ConnectorError::io(format!("creating '{}'", dir.display()), e))?;
        let f = File::create(&tmp)
            .map_err(|e| ConnectorError::io(format!("creating '{}'", tmp.display()), e))?;
        Ok(OpenPart {
            tmp,
            target,
            writer: Some(BufWriter::with_capacity(1 << 20, f)),
            bytes: 0,
        })
    }

    fn close(&self, part: OpenPart) -> Result<(), ConnectorError> {
        let Some(mut w) = part.writer else {
            return Ok(());
        };
        w.flush()
            .and_then(|()| w.get_ref().sync_all())
            .map_err(|e| ConnectorError::io(format!("fsync '{}'", part.tmp.display()), e))?;
        std::fs::rename(&part.tmp, &part.target).map_err(|e| {
            ConnectorError::io(format!("committing '{}'", part.target.display()), e)
        })?;
        self.publish(&part.target)
    }

    /// For an `s3://` table: uploads a finished file and removes the local copy.
    fn publish(&self, file: &Path) -> Result<(), ConnectorError> {
        match &self.config.remote {
            Some(remote) => remote.upload(&self.config.path, file),
            None => Ok(()),
        }
    }
}

fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut read = 0;
    while read < buf.len() {
        let n = r.read(&mut buf[read..])?;
        if n == 0 {
            if read == 0 {
                return Ok(false);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        read += n;
    }
    Ok(true)
}

/// Calls `f` with each (partition, encoded rows) frame of a sealed batch, in order.
fn for_each_frame(
    sealed: &Path,
    mut f: impl FnMut(String, &[u8]) -> Result<(), ConnectorError>,
) -> Result<(), ConnectorError> {
    let ctx = || format!("reading sealed rows '{}'", sealed.display());
    let file = File::open(sealed).map_err(|e| ConnectorError::io(ctx(), e))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut len4 = [0u8; 4];
    let mut len8 = [0u8; 8];
    let mut data = Vec::new();
    while read_exact_or_eof(&mut r, &mut len4).map_err(|e| ConnectorError::io(ctx(), e))? {
        let mut name = vec![0u8; u32::from_le_bytes(len4) as usize];
        r.read_exact(&mut name)
            .and_then(|()| r.read_exact(&mut len8))
            .map_err(|e| ConnectorError::io(ctx(), e))?;
        let partition = String::from_utf8(name).map_err(|_| {
            ConnectorError::Other(format!("{}: a partition name is not UTF-8", ctx()))
        })?;
        data.resize(u64::from_le_bytes(len8) as usize, 0);
        r.read_exact(&mut data)
            .map_err(|e| ConnectorError::io(ctx(), e))?;
        f(partition, &data)?;
    }
    Ok(())
}

/// A Parquet part file being written by an apply.
struct OpenParquet {
    tmp: PathBuf,
    target: PathBuf,
    writer: parquet::arrow::ArrowWriter<File>,
    file_schema: SchemaRef,
}

impl PartitionFiles {
    /// Writes a sealed batch's rows as Parquet part files. Unlike text parts, a part that
    /// exists from an earlier attempt is written again and replaces it: the same rows give
    /// the same file, and a Parquet file's size (where it rolls) is only known by writing.
    fn apply_parquet(&self, txn: &Txn, sealed: &Path) -> Result<Vec<String>, ConnectorError> {
        let mut open: HashMap<String, OpenParquet> = HashMap::new();
        let mut next: HashMap<String, u32> = HashMap::new();
        let mut dirs: Vec<String> = Vec::new();
        let close = |part: OpenParquet| -> Result<(), ConnectorError> {
            let OpenParquet {
                tmp,
                target,
                mut writer,
                ..
            } = part;
            writer.finish()?;
            writer
                .inner_mut()
                .sync_all()
                .map_err(|e| ConnectorError::io(format!("fsync '{}'", tmp.display()), e))?;
            std::fs::rename(&tmp, &target)
                .map_err(|e| ConnectorError::io(format!("committing '{}'", target.display()), e))?;
            self.publish(&target)
        };
        for_each_frame(sealed, |partition, data| {
            let reader = arrow::ipc::reader::StreamReader::try_new(data, None)?;
            for batch in reader {
                let batch = batch?;
                if !open.contains_key(&partition) {
                    let n = *next.get(&partition).unwrap_or(&0);
                    let dir = self.config.path.join(&partition);
                    let name = self.part_name(txn, n);
                    let tmp = dir.join(format!(".{name}.tmp"));
                    std::fs::create_dir_all(&dir).map_err(|e| {
                        ConnectorError::io(format!("creating '{}'", dir.display()), e)
                    })?;
                    let file = File::create(&tmp).map_err(|e| {
                        ConnectorError::io(format!("creating '{}'", tmp.display()), e)
                    })?;
                    let writer = crate::format::parquet::writer(file, &batch.schema())?;
                    if !dirs.contains(&partition) {
                        dirs.push(partition.clone());
                    }
                    open.insert(
                        partition.clone(),
                        OpenParquet {
                            tmp,
                            target: dir.join(name),
                            file_schema: crate::format::parquet::file_schema(&batch.schema()),
                            writer,
                        },
                    );
                }
                let Some(part) = open.get_mut(&partition) else {
                    continue;
                };
                let rows = crate::format::parquet::to_file_batch(&batch, &part.file_schema)?;
                part.writer.write(&rows)?;
                let size = part.writer.bytes_written() + part.writer.in_progress_size();
                if size as u64 >= self.config.file_size
                    && let Some(part) = open.remove(&partition)
                {
                    close(part)?;
                    *next.entry(partition.clone()).or_insert(0) += 1;
                }
            }
            Ok(())
        })?;
        for (_, part) in open.drain() {
            close(part)?;
        }
        Ok(dirs)
    }

    /// Writes a sealed batch's rows into text part files; a part that exists from an
    /// earlier attempt is kept, and its rows skipped.
    fn apply_text(&self, txn: &Txn, sealed: &Path) -> Result<Vec<String>, ConnectorError> {
        let mut open: HashMap<String, OpenPart> = HashMap::new();
        let mut next: HashMap<String, u32> = HashMap::new();
        let mut dirs = Vec::new();
        for_each_frame(sealed, |partition, data| {
            if !open.contains_key(&partition) {
                let n = *next.get(&partition).unwrap_or(&0);
                let part = self.open(txn, &partition, n)?;
                if !dirs.contains(&partition) {
                    dirs.push(partition.clone());
                }
                open.insert(partition.clone(), part);
            }
            let Some(part) = open.get_mut(&partition) else {
                return Ok(());
            };
            if let Some(w) = part.writer.as_mut() {
                w.write_all(data).map_err(|e| {
                    ConnectorError::io(format!("writing '{}'", part.tmp.display()), e)
                })?;
            }
            part.bytes += data.len() as u64;
            if part.bytes >= self.config.file_size
                && let Some(part) = open.remove(&partition)
            {
                self.close(part)?;
                *next.entry(partition).or_insert(0) += 1;
            }
            Ok(())
        })?;
        for (_, part) in open.drain() {
            self.close(part)?;
        }
        Ok(dirs)
    }
}

impl Apply for PartitionFiles {
    fn apply(&self, txn: &Txn, sealed: &Path) -> Result<(), ConnectorError> {
        let dirs = match self.config.format {
            FileFormat::Parquet => self.apply_parquet(txn, sealed)?,
            FileFormat::Json | FileFormat::Csv => self.apply_text(txn, sealed)?,
        };
        crash_point("mid-apply", txn.checkpoint);
        for d in dirs {
            let dir = self.config.path.join(d);
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| ConnectorError::io(format!("fsync '{}'", dir.display()), e))?;
        }
        Ok(())
    }

    fn discard_after(&self, restored: Option<u64>) -> Result<(), ConnectorError> {
        // Success files stay: a partition other runs completed stays complete.
        discard(&self.config.path, restored, None, &self.tag)?;
        match &self.config.remote {
            Some(remote) => remote.discard(restored, None, &self.tag),
            None => Ok(()),
        }
    }
}

/// Removes part files of checkpoints after `restored` (all of them, and the success
/// files, when `None`), and temporary files of interrupted applies, under `dir`.
fn discard(
    dir: &Path,
    restored: Option<u64>,
    success: Option<&str>,
    tag: &str,
) -> Result<(), ConnectorError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConnectorError::io(format!("reading '{}'", dir.display()), e))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            if name.contains('=') {
                discard(&path, restored, success, tag)?;
            }
            continue;
        }
        if stale(&name, restored, success, tag) {
            std::fs::remove_file(&path)
                .map_err(|err| ConnectorError::io(format!("removing '{}'", path.display()), err))?;
        }
    }
    Ok(())
}

/// Length of a run id (hex digits).
const RUN_ID_LEN: usize = 8;

/// The run id this sink's files are named with (`part-<task>-<run>-<subtask>-…`), so
/// concurrent pipelines and fresh runs writing into one directory never overwrite or
/// remove each other's files. It is kept in a hidden marker file at the table's root
/// (`.runnel-run-<pipeline>[-<task>]`, an object there for `s3://`): a run resuming from a
/// checkpoint reads it back and names its files as the run before it did (were the
/// marker lost, the sealed batches waiting to be applied name it); a fresh run makes a
/// new one, and the staged rows of the run it replaces are dropped (they come again).
fn run_id(
    config: &SinkConfig,
    pipeline: &str,
    task_tag: &str,
    resuming: bool,
    mirror: Option<&dyn txn::SealedStore>,
) -> Result<String, ConnectorError> {
    let safe: String = pipeline
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let marker = if task_tag.is_empty() {
        format!(".runnel-run-{safe}")
    } else {
        format!(".runnel-run-{safe}-{}", task_tag.trim_end_matches('-'))
    };
    let stored = match &config.remote {
        Some(remote) => remote.get(&marker)?,
        None => std::fs::read_to_string(config.path.join(&marker)).ok(),
    }
    .map(|s| s.trim().to_string())
    .filter(|s| is_run_id(s));
    if resuming {
        if let Some(id) = stored {
            return Ok(id);
        }
        let staged_prefix = format!("{STAGING_PREFIX}{task_tag}");
        let mut names: Vec<String> = std::fs::read_dir(&config.path)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(m) = mirror {
            names.extend(m.list()?);
        }
        if let Some(id) = names.iter().find_map(|n| {
            n.strip_prefix(&staged_prefix)
                .and_then(|r| r.get(..RUN_ID_LEN))
                .filter(|r| is_run_id(r))
        }) {
            return Ok(id.to_string());
        }
    }
    let id = new_run_id(pipeline);
    match &config.remote {
        Some(remote) => remote.put(&marker, id.as_bytes())?,
        None => {
            let path = config.path.join(&marker);
            let tmp = config.path.join(format!("{marker}.tmp"));
            std::fs::write(&tmp, &id)
                .and_then(|()| File::open(&tmp).and_then(|f| f.sync_all()))
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| ConnectorError::io(format!("writing '{}'", path.display()), e))?;
        }
    }
    // The replaced run's staged and sealed rows: produced again by this run.
    if let Some(old) = stored {
        let prefix = format!("{STAGING_PREFIX}{task_tag}{old}-");
        if let Ok(entries) = std::fs::read_dir(&config.path) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    Ok(id)
}

fn is_run_id(s: &str) -> bool {
    s.len() == RUN_ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A new run id: the time, the process and the pipeline, hashed.
fn new_run_id(pipeline: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(pipeline.as_bytes());
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:08x}", h.finish() as u32)
}

/// Whether the file `name` is output a restart from `restored` drops: a part file of a
/// later checkpoint (of any, from scratch), a temporary file of an interrupted apply, or
/// (from scratch) a success file.
fn stale(name: &str, restored: Option<u64>, success: Option<&str>, tag: &str) -> bool {
    // After the tag: this sink's files (a run in one process leaves tasks' alone).
    let own = |rest: &str| !tag.is_empty() || !rest.starts_with("task-");
    if let Some(rest) = name.strip_prefix(".part-")
        && name.ends_with(".tmp")
    {
        rest.starts_with(tag) && own(rest)
    } else if let Some(rest) = name
        .strip_prefix("part-")
        .and_then(|r| r.strip_prefix(tag))
        .filter(|r| own(r))
    {
        let id = rest.split('-').nth(1).and_then(|id| id.parse::<u64>().ok());
        match (restored, id) {
            (None, _) => true,
            (Some(r), Some(id)) => id > r,
            (Some(_), None) => false,
        }
    } else {
        restored.is_none() && success == Some(name)
    }
}

/// An `s3://bucket/prefix` table directory: files finished in the local working
/// directory are uploaded under the same relative names (one PUT each, which S3 makes
/// visible atomically), and a restart deletes what [`stale`] names there too.
use object_store::ObjectStoreExt as _;

#[derive(Debug)]
pub(crate) struct Remote {
    store: Arc<dyn object_store::ObjectStore>,
    prefix: String,
    url: String,
}

impl Remote {
    pub(crate) fn new(spec: &TableSpec) -> Result<Remote, ConnectorError> {
        let url = spec
            .options
            .get("path")
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        let options = runnel_common::s3::S3Options::from_keys(|k| spec.options.get(k));
        let (store, prefix) = runnel_common::s3::store(&url, &options)
            .map_err(|e| ConnectorError::Other(format!("table '{}': {e}", spec.name)))?;
        Ok(Remote { store, prefix, url })
    }

    fn key(&self, rel: &str) -> object_store::path::Path {
        let rel = rel.trim_start_matches('/');
        if self.prefix.is_empty() {
            object_store::path::Path::from(rel)
        } else {
            object_store::path::Path::from(format!("{}/{rel}", self.prefix))
        }
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Other(format!("{what} {}: {e}", self.url))
    }

    /// Lists the prefix once: the bucket exists and the credentials are accepted.
    async fn probe(&self) -> Result<(), ConnectorError> {
        let prefix =
            (!self.prefix.is_empty()).then(|| object_store::path::Path::from(self.prefix.as_str()));
        self.store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map(|_| ())
            .map_err(|e| self.error("listing", e))
    }

    /// Uploads `file` (under `root`) and removes the local copy.
    fn upload(&self, root: &Path, file: &Path) -> Result<(), ConnectorError> {
        let rel = file
            .strip_prefix(root)
            .map_err(|_| {
                ConnectorError::Other(format!(
                    "'{}' is outside '{}'",
                    file.display(),
                    root.display()
                ))
            })?
            .to_string_lossy()
            .replace('\\', "/");
        let bytes = std::fs::read(file)
            .map_err(|e| ConnectorError::io(format!("reading '{}'", file.display()), e))?;
        let (store, key) = (self.store.clone(), self.key(&rel));
        let shown = format!("{}/{rel}", self.url);
        crate::io_runtime::wait(async move { store.put(&key, bytes.into()).await.map(|_| ()) })?
            .map_err(|e| ConnectorError::Other(format!("uploading {shown}: {e}")))?;
        std::fs::remove_file(file)
            .map_err(|e| ConnectorError::io(format!("removing '{}'", file.display()), e))
    }

    /// Deletes the stale objects of a restart from `restored` (see [`stale`]).
    fn discard(
        &self,
        restored: Option<u64>,
        success: Option<&str>,
        tag: &str,
    ) -> Result<(), ConnectorError> {
        for rel in self.list()? {
            let name = rel.rsplit('/').next().unwrap_or_default();
            if stale(name, restored, success, tag) {
                let key = self.key(&rel);
                let store = self.store.clone();
                crate::io_runtime::wait(async move { store.delete(&key).await })?
                    .map_err(|e| self.error(&format!("deleting {rel} of"), e))?;
            }
        }
        Ok(())
    }

    /// The object `rel` (under the prefix), if there is one.
    fn get(&self, rel: &str) -> Result<Option<String>, ConnectorError> {
        let (store, key) = (self.store.clone(), self.key(rel));
        match crate::io_runtime::wait(async move {
            match store.get(&key).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })? {
            Ok(bytes) => Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned())),
            Err(e) => Err(self.error(&format!("reading {rel} of"), e)),
        }
    }

    /// Writes the object `rel` (under the prefix).
    fn put(&self, rel: &str, bytes: &[u8]) -> Result<(), ConnectorError> {
        let (store, key, bytes) = (self.store.clone(), self.key(rel), bytes.to_vec());
        crate::io_runtime::wait(async move { store.put(&key, bytes.into()).await.map(|_| ()) })?
            .map_err(|e| self.error(&format!("writing {rel} of"), e))
    }

    /// Copies the objects `rels` (relative to the prefix) into `dest`, under the same
    /// relative paths.
    pub(crate) fn download(&self, rels: &[String], dest: &Path) -> Result<(), ConnectorError> {
        for rel in rels {
            let target = dest.join(rel);
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| ConnectorError::io(format!("creating '{}'", dir.display()), e))?;
            }
            let (store, key) = (self.store.clone(), self.key(rel));
            let bytes =
                crate::io_runtime::wait(async move { store.get(&key).await?.bytes().await })?
                    .map_err(|e| self.error(&format!("reading {rel} of"), e))?;
            std::fs::write(&target, &bytes)
                .map_err(|e| ConnectorError::io(format!("writing '{}'", target.display()), e))?;
        }
        Ok(())
    }

    /// Every key under the prefix, relative to it.
    pub(crate) fn list(&self) -> Result<Vec<String>, ConnectorError> {
        use futures::TryStreamExt as _;
        let store = self.store.clone();
        let prefix =
            (!self.prefix.is_empty()).then(|| object_store::path::Path::from(self.prefix.as_str()));
        let listed: Vec<object_store::path::Path> = crate::io_runtime::wait(async move {
            store
                .list(prefix.as_ref())
                .map_ok(|m| m.location)
                .try_collect::<Vec<_>>()
                .await
        })?
        .map_err(|e| self.error("listing", e))?;
        let skip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        Ok(listed
            .into_iter()
            .map(|k| k.as_ref().get(skip..).unwrap_or_default().to_string())
            .collect())
    }

    /// Partitions (`depth` levels of `k=v`) holding part files but no success file
    /// `name`, as `k=v/…` paths (as [`unmarked_partitions`] finds them on disk).
    fn unmarked(&self, name: &str, depth: usize) -> Result<Vec<String>, ConnectorError> {
        let mut parts = std::collections::BTreeSet::new();
        let mut marked = std::collections::HashSet::new();
        for key in self.list()? {
            let Some((dir, file)) = key.rsplit_once('/') else {
                continue;
            };
            if dir.split('/').count() != depth || !dir.split('/').all(|p| p.contains('=')) {
                continue;
            }
            if file == name {
                marked.insert(dir.to_string());
            } else if file.starts_with("part-") {
                parts.insert(dir.to_string());
            }
        }
        Ok(parts.into_iter().filter(|d| !marked.contains(d)).collect())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use runnel_common::Options;

    use super::*;

    #[test]
    fn partition_values_are_escaped_as_hive_does() {
        let mut s = String::new();
        escape_path_value("10:00", &mut s);
        assert_eq!(s, "10%3A00");
        assert_eq!(unescape_path_value(&s), "10:00");
        s.clear();
        escape_path_value("a/b=c%", &mut s);
        assert_eq!(s, "a%2Fb%3Dc%25");
        assert_eq!(unescape_path_value(&s), "a/b=c%");
    }

    #[test]
    fn sizes_and_partition_times_parse() {
        assert_eq!(parse_size("128MB"), Some(128 << 20));
        assert_eq!(parse_size("1 kb"), Some(1024));
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_partition_time("1970-01-01 00:01:00"), Some(60_000));
        assert_eq!(parse_partition_time("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_partition_time("noon"), None);
    }

    fn spec(dir: &Path, extra: &[(&str, &str)]) -> TableSpec {
        let mut opts = vec![
            ("connector".to_string(), "filesystem".to_string()),
            ("path".into(), format!("file://{}", dir.display())),
            ("format".into(), "csv".into()),
        ];
        opts.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        TableSpec {
            line: 1,
            name: "out".into(),
            schema: Arc::new(Schema::new(vec![
                Field::new("v", DataType::Int64, true),
                Field::new("dt", DataType::Utf8, true),
                Field::new("hm", DataType::Utf8, true),
            ])),
            watermark: None,
            metadata: Vec::new(),
            primary_key: Vec::new(),
            partition_keys: vec![1, 2],
            options: Options::new(opts),
        }
    }

    fn batch(spec: &TableSpec, rows: &[(i64, &str, &str)]) -> RecordBatch {
        RecordBatch::try_new(
            spec.schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .expect("batch")
    }

    /// `name` without the run id after `part-` (see [`run_id`]).
    fn strip_run(name: &str) -> String {
        match name.find("part-") {
            Some(at)
                if name.get(at + 5..at + 5 + RUN_ID_LEN).is_some_and(is_run_id)
                    && name.as_bytes().get(at + 5 + RUN_ID_LEN) == Some(&b'-') =>
            {
                format!("{}{}", &name[..at + 5], &name[at + 6 + RUN_ID_LEN..])
            }
            _ => name.to_string(),
        }
    }

    /// The file under `dir` named `rel` once its run id is taken out.
    fn part(dir: &Path, rel: &str) -> PathBuf {
        let (sub, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        std::fs::read_dir(dir.join(sub))
            .expect("partition")
            .flatten()
            .map(|e| e.path())
            .find(|p| strip_run(&p.file_name().unwrap_or_default().to_string_lossy()) == name)
            .unwrap_or_else(|| panic!("no {rel}"))
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).expect("dir").flatten() {
                let p = e.path();
                if e.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    let rel = p.strip_prefix(root).expect("under root");
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    out.push(format!(
                        "{} [{}]",
                        strip_run(&rel.display().to_string()),
                        text.trim().replace('\n', ",")
                    ));
                }
            }
        }
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    fn sink_context(checkpoint: Option<crate::CheckpointMode>) -> SinkContext {
        SinkContext {
            subtask: 0,
            parallelism: 1,
            metrics: ConnectorMetrics::default(),
            data_dir: PathBuf::new(),
            log: None,
            dashboards: Default::default(),
            checkpoint,
            task: None,
            sealed: None,
            pipeline: None,
        }
    }

    /// Rows land in Hive-style directories, without their partition columns, only when
    /// their checkpoint commits; a partition whose time the watermark passed gets its
    /// success file after that commit; a restore drops files of later checkpoints.
    #[tokio::test]
    async fn partitions_commit_with_checkpoints_and_watermarks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = spec(
            dir.path(),
            &[
                ("sink.partition-commit.trigger", "partition-time"),
                ("sink.partition-commit.delay", "1 min"),
                ("sink.partition-commit.policy.kind", "success-file"),
                ("partition.time-extractor.timestamp-pattern", "$dt $hm:00"),
            ],
        );
        let mode = crate::CheckpointMode::default();
        let mut sink = build(&spec, vec![sink_context(Some(mode))])
            .expect("build")
            .remove(0);
        sink.write(batch(
            &spec,
            &[(1, "1970-01-01", "00:00"), (2, "1970-01-01", "00:01")],
        ))
        .await
        .expect("write");
        assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
        // 00:00 + 1 min delay < 00:01:30; 00:01 + 1 min is not.
        sink.watermark(90_000).await.expect("wm");
        sink.pre_commit(1).await.expect("seal");
        assert!(files(dir.path()).is_empty());
        sink.commit(1).await.expect("commit");
        assert_eq!(
            files(dir.path()),
            vec![
                "dt=1970-01-01/hm=00%3A00/_SUCCESS []",
                "dt=1970-01-01/hm=00%3A00/part-0-0000000001-0.csv [1]",
                "dt=1970-01-01/hm=00%3A01/part-0-0000000001-0.csv [2]",
            ]
        );
        sink.write(batch(&spec, &[(3, "1970-01-01", "00:01")]))
            .await
            .expect("write");
        sink.pre_commit(2).await.expect("seal");
        sink.commit(2).await.expect("commit");
        // Restored from checkpoint 1: checkpoint 2's file goes, the rows come again.
        let restored = crate::CheckpointMode {
            restored: Some(1),
            ..Default::default()
        };
        let mut again = build(&spec, vec![sink_context(Some(restored))])
            .expect("build")
            .remove(0);
        assert!(!files(dir.path()).iter().any(|f| f.contains("0000000002")));
        again
            .write(batch(&spec, &[(3, "1970-01-01", "00:01")]))
            .await
            .expect("write");
        again.finish().await.expect("finish");
        let all = files(dir.path());
        assert!(
            all.contains(&"dt=1970-01-01/hm=00%3A01/_SUCCESS []".to_string()),
            "{all:?}"
        );
        assert_eq!(
            all.iter().filter(|f| f.ends_with("[3]")).count(),
            1,
            "{all:?}"
        );
    }

    /// Without checkpoints, files roll by size and everything is visible at the end.
    #[tokio::test]
    async fn without_checkpoints_files_roll_by_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = spec(dir.path(), &[("sink.rolling-policy.file-size", "4b")]);
        let mut sink = build(&spec, vec![sink_context(None)])
            .expect("build")
            .remove(0);
        sink.write(batch(&spec, &[(10, "d", "h"), (11, "d", "h")]))
            .await
            .expect("write");
        sink.write(batch(&spec, &[(12, "d", "h")]))
            .await
            .expect("write");
        sink.finish().await.expect("finish");
        assert_eq!(
            files(dir.path()),
            vec![
                "dt=d/hm=h/part-0-0000000001-0.csv [10,11]",
                "dt=d/hm=h/part-0-0000000002-0.csv [12]",
            ]
        );
    }

    /// Parquet parts in partition directories, rolled by their size, read back by the
    /// filesystem source with the partition columns from the paths; a re-applied
    /// checkpoint (a crash after the files were written) gives the same files.
    #[tokio::test]
    async fn parquet_round_trips_with_partition_columns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = spec(
            dir.path(),
            &[
                ("format", "parquet"),
                ("sink.rolling-policy.file-size", "1b"),
            ],
        );
        let mode = crate::CheckpointMode::default();
        let mut sink = build(&spec, vec![sink_context(Some(mode))])
            .expect("build")
            .remove(0);
        let rows: Vec<(i64, &str, &str)> = (0..50)
            .map(|i| (i, if i % 2 == 0 { "d1" } else { "d2" }, "10:00"))
            .collect();
        sink.write(batch(&spec, &rows[..30])).await.expect("write");
        sink.write(batch(&spec, &rows[30..])).await.expect("write");
        sink.pre_commit(1).await.expect("seal");
        sink.commit(1).await.expect("commit");
        let names = |root: &Path| {
            let mut out = Vec::new();
            for d in ["dt=d1/hm=10%3A00", "dt=d2/hm=10%3A00"] {
                for e in std::fs::read_dir(root.join(d))
                    .expect("partition")
                    .flatten()
                {
                    out.push(strip_run(&format!(
                        "{d}/{}",
                        e.file_name().to_string_lossy()
                    )));
                }
            }
            out.sort();
            out
        };
        // 1-byte files: a part per write of each partition.
        assert_eq!(
            names(dir.path()),
            vec![
                "dt=d1/hm=10%3A00/part-0-0000000001-0.parquet",
                "dt=d1/hm=10%3A00/part-0-0000000001-1.parquet",
                "dt=d2/hm=10%3A00/part-0-0000000001-0.parquet",
                "dt=d2/hm=10%3A00/part-0-0000000001-1.parquet",
            ]
        );
        let first = std::fs::read(part(
            dir.path(),
            "dt=d1/hm=10%3A00/part-0-0000000001-0.parquet",
        ))
        .expect("part");
        // Read back through the source: every row, partition columns from the paths.
        let source_ctx = SourceContext {
            subtask: 0,
            parallelism: 1,
            metrics: ConnectorMetrics::default(),
            data_dir: PathBuf::from("."),
            batch_size: 7,
            log: None,
            checkpointing: false,
            dead_letters: crate::dead_letters::DeadLetters::new(None, None, true),
            task: None,
        };
        let mut source = build_source(&spec, vec![source_ctx])
            .expect("source")
            .remove(0);
        let mut got = Vec::new();
        loop {
            match source.poll().await.expect("poll") {
                crate::SourcePoll::Batch(b) => {
                    let v = b.column(0).as_primitive::<arrow::datatypes::Int64Type>();
                    let dt = b.column(1).as_string::<i32>();
                    let hm = b.column(2).as_string::<i32>();
                    for r in 0..b.num_rows() {
                        got.push((v.value(r), dt.value(r).to_string(), hm.value(r).to_string()));
                    }
                }
                crate::SourcePoll::End => break,
                _ => {}
            }
        }
        got.sort();
        let want: Vec<(i64, String, String)> = rows
            .iter()
            .map(|(v, d, h)| (*v, d.to_string(), h.to_string()))
            .collect();
        assert_eq!(got, want);
        // Applying the same sealed rows again writes the same bytes.
        let apply = PartitionFiles {
            config: Arc::new(SinkConfig::try_new(&spec).expect("config")),
            tag: String::new(),
        };
        let sealed = dir.path().join("again.sealed");
        let mut frame = Vec::new();
        let part = batch(&spec, &rows[..30])
            .project(&[0])
            .expect("data columns");
        let mut ipc = Vec::new();
        {
            let mut w =
                arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &part.schema()).expect("ipc");
            w.write(
                &take_record_batch(&part, &UInt32Array::from_iter_values((0..30).step_by(2)))
                    .expect("take"),
            )
            .expect("ipc write");
            w.finish().expect("ipc finish");
        }
        let name = "dt=d1/hm=10%3A00";
        frame.extend_from_slice(&(name.len() as u32).to_le_bytes());
        frame.extend_from_slice(name.as_bytes());
        frame.extend_from_slice(&(ipc.len() as u64).to_le_bytes());
        frame.extend_from_slice(&ipc);
        std::fs::write(&sealed, &frame).expect("sealed");
        let txn = Txn {
            subtask: 0,
            checkpoint: 1,
        };
        apply.apply(&txn, &sealed).expect("re-apply");
        let again = std::fs::read(
            dir.path()
                .join("dt=d1/hm=10%3A00/part-0-0000000001-0.parquet"),
        )
        .expect("part");
        assert_eq!(first, again);
    }

    /// A partition committed before a crash but not yet marked gets its success file
    /// from the restarted run, though its rows do not come again.
    #[tokio::test]
    async fn a_restart_marks_partitions_left_unmarked_by_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = spec(
            dir.path(),
            &[("sink.partition-commit.policy.kind", "success-file")],
        );
        for (p, marked) in [("dt=a/hm=1", false), ("dt=b/hm=1", true)] {
            let d = dir.path().join(p);
            std::fs::create_dir_all(&d).expect("dir");
            std::fs::write(d.join("part-0-0000000001-0.csv"), "1\n").expect("part");
            if marked {
                std::fs::write(d.join("_SUCCESS"), "").expect("success");
            }
        }
        let restored = crate::CheckpointMode {
            restored: Some(1),
            ..Default::default()
        };
        let mut sink = build(&spec, vec![sink_context(Some(restored))])
            .expect("build")
            .remove(0);
        sink.finish().await.expect("finish");
        assert!(dir.path().join("dt=a/hm=1/_SUCCESS").exists());
        assert!(
            dir.path()
                .join("dt=a/hm=1/part-0-0000000001-0.csv")
                .exists()
        );
    }

    #[test]
    fn bad_options_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = validate(&spec(
            dir.path(),
            &[(
                "sink.partition-commit.policy.kind",
                "metastore,success-file",
            )],
        ))
        .expect_err("metastore")
        .to_string();
        assert!(err.contains("metastore"), "{err}");
        let err = validate(&spec(
            dir.path(),
            &[("sink.rolling-policy.file-size", "big")],
        ))
        .expect_err("size")
        .to_string();
        assert!(err.contains("sink.rolling-policy.file-size"), "{err}");
    }
}
