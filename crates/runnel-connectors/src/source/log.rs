//! `log` source: reads a topic of runnel's embedded durable log (`runnel run --data-dir …`).
//!
//! Partition `p` of the topic is read by subtask `p % parallelism`. Each poll reads up to
//! `batch_size` acknowledged records from the subtask's partitions; when none are new it
//! waits at most ~100 ms (on a blocking thread) and returns `Pending`. Unbounded by
//! default: the source tails the topic for ever, so records that clients POST while the
//! pipeline runs flow through it. With `bounded = 'true'` it stops at the end offsets seen
//! when the pipeline was built.
//!
//! `format = 'json'`: each record value is one JSON object decoded against the table's
//! columns; columns named `event_time`, `key`, `partition` or `offset` that the JSON does
//! not set are filled from the record's metadata. A value that is not a JSON object or does
//! not convert is a dead letter: counted, and appended to the topic
//! `dead-letter.topic` (default `<topic>.dead-letter`, created on first use) as
//! `{"topic","partition","offset","reason","raw"}`; the pipeline continues.
//!
//! `format = 'raw'`: the table may only declare metadata columns (see [`RAW_COLUMNS`]).
//!
//! Delivery is **at-least-once**: the offsets of rows already handed to the engine are
//! committed durably to the consumer group (`Log::commit_offset`) at most once a second,
//! whenever the source goes idle, and when a bounded source ends. After a crash the group
//! resumes from its last commit, so up to about a second of records is read again. Rows that
//! were handed over but were still inside the pipeline when it crashed are not re-read;
//! exactly-once (offsets stored in checkpoints, `seek` on restore) comes with checkpointing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, BinaryArray, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use runnel_common::TableSpec;
use runnel_common::metrics::ConnectorMetrics;
use runnel_common::types::sql_name;
use runnel_log::{Log, LogError, Record, StoredRecord, Topic, TopicConfig};
use serde_json::json;

use crate::format::json::JsonDecoder;
use crate::format::{Reject, check_schema};
use crate::{ConnectorError, Source, SourceContext, SourcePoll};

/// Option keys of `connector = 'log'` (source and sink accept the same keys, so one
/// table can be read and written; the sink ignores the reading options).
pub const OPTIONS: &[&str] = &[
    "topic",
    "format",
    "scan.startup.mode",
    "group",
    "partitions",
    "bounded",
    "dead-letter.topic",
];

/// Columns a `format = 'raw'` table may declare, with their SQL types.
pub const RAW_COLUMNS: &str = "key STRING|BYTES, value BYTES|STRING, headers STRING (a JSON object), \
     event_time TIMESTAMP(3)|BIGINT, partition INT|BIGINT, offset BIGINT, ingest_time TIMESTAMP(3)|BIGINT";

/// Longest wait for new records in one poll.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Offsets are committed at most this often while records keep flowing.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Stop reading a partition in one poll after about this many bytes.
const MAX_POLL_BYTES: usize = 16 << 20;

/// How record values are turned into rows (and rows into values by the sink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per record (the default).
    Json,
    /// The record itself: key, value bytes, headers and metadata columns.
    Raw,
}

/// Where a source starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupMode {
    /// From the consumer group's committed offsets, else the earliest (the default).
    GroupOffsets,
    /// From the first retained record.
    Earliest,
    /// From the end: only records appended after the pipeline starts.
    Latest,
}

/// Options of `CREATE TABLE … WITH (connector = 'log', …)`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The topic; created with `partitions` partitions if it does not exist.
    pub topic: String,
    /// `json` (default) or `raw`.
    pub format: LogFormat,
    /// `scan.startup.mode`: `group-offsets` (default), `earliest` or `latest`.
    pub startup: StartupMode,
    /// Consumer group whose offsets are read and committed; default `runnel-<table>`.
    pub group: String,
    /// Partitions of the topic when it has to be created; default 1.
    pub partitions: u32,
    /// `bounded = 'true'`: stop at the end offsets seen at start (default: tail for ever).
    pub bounded: bool,
    /// Topic of rejected records; default `<topic>.dead-letter`.
    pub dead_letter_topic: String,
}

impl LogConfig {
    /// Reads and validates the table's options.
    pub fn try_new(spec: &TableSpec) -> Result<Self, ConnectorError> {
        let opt = |source| ConnectorError::Option {
            table: spec.name.clone(),
            source,
        };
        let o = &spec.options;
        o.check_known("log", OPTIONS).map_err(opt)?;
        let topic = o.required("log", "topic").map_err(opt)?.to_string();
        let format = match o.choice("log", "format", &["json", "raw"]).map_err(opt)? {
            Some("raw") => LogFormat::Raw,
            _ => LogFormat::Json,
        };
        let startup = match o
            .choice(
                "log",
                "scan.startup.mode",
                &["group-offsets", "earliest", "latest"],
            )
            .map_err(opt)?
        {
            Some("earliest") => StartupMode::Earliest,
            Some("latest") => StartupMode::Latest,
            _ => StartupMode::GroupOffsets,
        };
        let partitions = o
            .parsed(
                "log",
                "partitions",
                &format!(
                    "expected a whole number from 1 to {}",
                    runnel_log::MAX_PARTITIONS
                ),
                |v| {
                    v.trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=runnel_log::MAX_PARTITIONS).contains(n))
                },
            )
            .map_err(opt)?
            .unwrap_or(1);
        let bounded = o
            .choice("log", "bounded", &["true", "false"])
            .map_err(opt)?
            == Some("true");
        let group = o
            .get("group")
            .map_or_else(|| format!("runnel-{}", spec.name), str::to_string);
        let dead_letter_topic = o
            .get("dead-letter.topic")
            .map_or_else(|| format!("{topic}.dead-letter"), str::to_string);
        Ok(Self {
            topic,
            format,
            startup,
            group,
            partitions,
            bounded,
            dead_letter_topic,
        })
    }
}

/// The embedded log of the pipeline, or the error telling the user how to get one.
pub(crate) fn embedded_log(
    table: &str,
    log: Option<&Arc<Log>>,
) -> Result<Arc<Log>, ConnectorError> {
    log.cloned().ok_or_else(|| ConnectorError::Unsupported {
        table: table.to_string(),
        connector: "log".into(),
        reason: "needs the embedded log, which this pipeline runs without; \
                 run it with `runnel run --data-dir <dir> …`"
            .into(),
    })
}

/// A log error as a connector error, with what was being done.
pub(crate) fn log_error(context: impl std::fmt::Display, e: LogError) -> ConnectorError {
    ConnectorError::Other(format!("{context}: {e}"))
}

/// The topic `name`, created with `partitions` partitions if it does not exist yet.
pub(crate) fn open_or_create_topic(
    log: &Log,
    table: &str,
    name: &str,
    partitions: u32,
) -> Result<Arc<Topic>, ConnectorError> {
    if let Some(t) = log.topic(name) {
        return Ok(t);
    }
    match log.create_topic(name, TopicConfig::with_partitions(partitions)) {
        Ok(t) => Ok(t),
        // Another subtask or table created it meanwhile.
        Err(LogError::TopicExists(_)) => log.topic(name).ok_or_else(|| {
            ConnectorError::Other(format!(
                "table '{table}': topic '{name}' exists on disk but could not be opened"
            ))
        }),
        Err(e) => Err(log_error(
            format!("table '{table}': creating topic '{name}'"),
            e,
        )),
    }
}

/// Runs blocking log work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, ConnectorError> + Send + 'static,
) -> Result<T, ConnectorError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ConnectorError::Other(format!(
            "{what}: the blocking task failed ({e}); this is a runnel bug, please report it"
        ))
    })?
}

/// A record metadata column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meta {
    Key,
    Value,
    Headers,
    EventTime,
    Partition,
    Offset,
    IngestTime,
}

impl Meta {
    fn of(name: &str) -> Option<Meta> {
        Some(match name.to_ascii_lowercase().as_str() {
            "key" => Meta::Key,
            "value" => Meta::Value,
            "headers" => Meta::Headers,
            "event_time" => Meta::EventTime,
            "partition" => Meta::Partition,
            "offset" => Meta::Offset,
            "ingest_time" => Meta::IngestTime,
            _ => return None,
        })
    }

    /// Whether this column can be built with type `dt`.
    fn accepts(self, dt: &DataType) -> bool {
        match self {
            Meta::Key | Meta::Value => matches!(dt, DataType::Utf8 | DataType::Binary),
            Meta::Headers => matches!(dt, DataType::Utf8),
            Meta::EventTime | Meta::IngestTime => matches!(
                dt,
                DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Int64
            ),
            Meta::Partition => matches!(dt, DataType::Int32 | DataType::Int64),
            Meta::Offset => matches!(dt, DataType::Int64),
        }
    }
}

/// One record with the partition it came from.
type Read<'a> = (u32, &'a StoredRecord);

/// Builds column `meta` of type `dt` (accepted by [`Meta::accepts`]) from `records`.
fn meta_array(meta: Meta, dt: &DataType, records: &[Read<'_>]) -> ArrayRef {
    let times = |f: &dyn Fn(&StoredRecord) -> i64| -> ArrayRef {
        let values: Vec<i64> = records.iter().map(|(_, r)| f(r)).collect();
        match dt {
            DataType::Timestamp(_, tz) => {
                Arc::new(TimestampMillisecondArray::from(values).with_timezone_opt(tz.clone()))
            }
            _ => Arc::new(Int64Array::from(values)),
        }
    };
    match meta {
        Meta::Key | Meta::Value => {
            let get = |r: &StoredRecord| -> Option<Vec<u8>> {
                if meta == Meta::Key {
                    r.key.clone()
                } else {
                    Some(r.value.clone())
                }
            };
            if matches!(dt, DataType::Binary) {
                Arc::new(BinaryArray::from_iter(records.iter().map(|(_, r)| get(r))))
            } else {
                Arc::new(StringArray::from_iter(records.iter().map(|(_, r)| {
                    get(r).map(|b| String::from_utf8_lossy(&b).into_owned())
                })))
            }
        }
        Meta::Headers => Arc::new(StringArray::from_iter_values(records.iter().map(
            |(_, r)| {
                let map: serde_json::Map<String, serde_json::Value> = r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned().into()))
                    .collect();
                serde_json::Value::Object(map).to_string()
            },
        ))),
        Meta::EventTime => times(&|r| r.event_time.unwrap_or(r.timestamp)),
        Meta::IngestTime => times(&|r| r.timestamp),
        Meta::Partition => match dt {
            DataType::Int32 => Arc::new(Int32Array::from_iter_values(
                records.iter().map(|(p, _)| *p as i32),
            )),
            _ => Arc::new(Int64Array::from_iter_values(
                records.iter().map(|(p, _)| i64::from(*p)),
            )),
        },
        Meta::Offset => Arc::new(Int64Array::from_iter_values(
            records.iter().map(|(_, r)| r.offset as i64),
        )),
    }
}

/// Rejected records of one table, appended to the dead-letter topic (created on first use).
struct DeadLetters {
    log: Arc<Log>,
    table: String,
    source_topic: String,
    topic_name: String,
    topic: Mutex<Option<Arc<Topic>>>,
    metrics: ConnectorMetrics,
}

impl DeadLetters {
    /// Appends one JSON record per reject (blocking, durable) and counts them.
    fn write(&self, rejects: Vec<(u32, u64, i64, String, Vec<u8>)>) -> Result<(), ConnectorError> {
        if rejects.is_empty() {
            return Ok(());
        }
        let n = rejects.len() as u64;
        let records: Vec<Record> = rejects
            .into_iter()
            .map(|(partition, offset, time, reason, raw)| {
                let value = json!({
                    "topic": self.source_topic,
                    "partition": partition,
                    "offset": offset,
                    "reason": reason,
                    "raw": String::from_utf8_lossy(&raw),
                });
                Record {
                    key: None,
                    value: value.to_string().into_bytes(),
                    headers: vec![("content-type".into(), b"application/json".to_vec())],
                    event_time: Some(time),
                }
            })
            .collect();
        let topic = {
            let mut guard = self.topic.lock().map_err(|_| {
                ConnectorError::Other(format!(
                    "table '{}': another subtask failed while writing dead letters",
                    self.table
                ))
            })?;
            match guard.as_ref() {
                Some(t) => t.clone(),
                None => {
                    let t = open_or_create_topic(&self.log, &self.table, &self.topic_name, 1)?;
                    if let Ok(mut p) = self.metrics.dead_letter_path.lock() {
                        *p = Some(format!("log topic '{}'", self.topic_name));
                    }
                    *guard = Some(t.clone());
                    t
                }
            }
        };
        let p = topic.partition_for(None);
        let partition = topic.partition(p).ok_or_else(|| {
            ConnectorError::Other(format!(
                "runnel bug (please report): partition {p} of topic '{}' is missing",
                self.topic_name
            ))
        })?;
        partition.append(records).map_err(|e| {
            log_error(
                format!(
                    "table '{}': writing dead letters to topic '{}'",
                    self.table, self.topic_name
                ),
                e,
            )
        })?;
        self.metrics.dead_letters.add(n);
        Ok(())
    }
}

/// Whether the table reads forever (it is not `bounded = 'true'`).
pub fn never_ends(spec: &TableSpec) -> bool {
    spec.options.get("bounded") != Some("true")
}

/// Validates options and schema, opens (or creates) the topic and returns one subtask per context.
///
/// # Errors
/// Unknown or invalid options, columns the format cannot produce, no embedded log, or a
/// log error while creating the topic or reading committed offsets.
pub fn build(
    spec: &TableSpec,
    contexts: Vec<SourceContext>,
) -> Result<Vec<Box<dyn Source>>, ConnectorError> {
    let config = LogConfig::try_new(spec)?;
    let Some(first) = contexts.first() else {
        return Ok(Vec::new());
    };
    let log = embedded_log(&spec.name, first.log.as_ref())?;
    let columns = check_columns(spec, config.format)?;
    let topic = open_or_create_topic(&log, &spec.name, &config.topic, config.partitions)?;
    if spec.options.get("partitions").is_some() && topic.partition_count() != config.partitions {
        tracing::warn!(table = %spec.name, topic = %config.topic,
            "topic exists with {} partition(s); option partitions = {} is ignored",
            topic.partition_count(), config.partitions);
    }
    let dead = Arc::new(DeadLetters {
        log: log.clone(),
        table: spec.name.clone(),
        source_topic: config.topic.clone(),
        topic_name: config.dead_letter_topic.clone(),
        topic: Mutex::new(None),
        metrics: first.metrics.clone(),
    });
    let mut sources: Vec<Box<dyn Source>> = Vec::with_capacity(contexts.len());
    for ctx in contexts {
        let parallelism = ctx.parallelism.max(1);
        let mut owned = Vec::new();
        for part in topic.partitions() {
            let id = part.id();
            if id as usize % parallelism != ctx.subtask {
                continue;
            }
            let start = part.start_offset();
            let end = part.end_offset();
            let next = match config.startup {
                StartupMode::Earliest => start,
                StartupMode::Latest => end,
                StartupMode::GroupOffsets => {
                    match log.committed_offset(&config.group, &config.topic, id) {
                        Some(c) if c < start => {
                            tracing::warn!(table = %spec.name, topic = %config.topic, partition = id,
                                "committed offset {c} of group '{}' was deleted by retention; reading from {start}",
                                config.group);
                            start
                        }
                        Some(c) if c > end => {
                            tracing::warn!(table = %spec.name, topic = %config.topic, partition = id,
                                "committed offset {c} of group '{}' is past the end {end}; reading from {end}",
                                config.group);
                            end
                        }
                        Some(c) => c,
                        None => start,
                    }
                }
            };
            owned.push(Owned {
                id,
                next,
                committed: next,
                end: config.bounded.then_some(end),
            });
        }
        let decoder = match config.format {
            LogFormat::Json => Some(JsonDecoder::try_new(spec.schema.clone())?),
            LogFormat::Raw => None,
        };
        sources.push(Box::new(LogSource {
            table: spec.name.clone(),
            schema: spec.schema.clone(),
            log: log.clone(),
            topic: topic.clone(),
            group: config.group.clone(),
            bounded: config.bounded,
            columns: columns.clone(),
            decoder,
            owned,
            cursor: 0,
            batch_size: if ctx.batch_size == 0 {
                1024
            } else {
                ctx.batch_size
            },
            metrics: ctx.metrics,
            dead: dead.clone(),
            last_commit: Instant::now(),
            warned_reject: false,
            checkpointing: ctx.checkpointing,
        }));
    }
    Ok(sources)
}

/// For each column, the metadata it is built (raw) or filled (json) from, if any.
fn check_columns(spec: &TableSpec, format: LogFormat) -> Result<Vec<Option<Meta>>, ConnectorError> {
    match format {
        LogFormat::Json => {
            check_schema(&spec.name, &spec.schema)?;
            Ok(spec
                .schema
                .fields()
                .iter()
                .map(|f| {
                    Meta::of(f.name())
                        .filter(|m| {
                            matches!(
                                m,
                                Meta::Key | Meta::EventTime | Meta::Partition | Meta::Offset
                            )
                        })
                        .filter(|m| m.accepts(f.data_type()))
                })
                .collect())
        }
        LogFormat::Raw => spec
            .schema
            .fields()
            .iter()
            .map(|f| {
                let bad = |reason: String| ConnectorError::Type {
                    table: spec.name.clone(),
                    column: f.name().clone(),
                    data_type: sql_name(f.data_type()),
                    reason,
                };
                match Meta::of(f.name()) {
                    None => Err(bad(format!(
                        "is not a column of a format = 'raw' log table; its columns can be: {RAW_COLUMNS}"
                    ))),
                    Some(m) if !m.accepts(f.data_type()) => Err(bad(format!(
                        "the log connector cannot produce for this column; raw columns: {RAW_COLUMNS}"
                    ))),
                    Some(m) => Ok(Some(m)),
                }
            })
            .collect(),
    }
}

/// A partition read by this subtask.
#[derive(Debug, Clone)]
struct Owned {
    id: u32,
    /// Next offset to read.
    next: u64,
    /// Last offset committed to the group.
    committed: u64,
    /// With `bounded`: the end offset captured at build time.
    end: Option<u64>,
}

impl Owned {
    fn done(&self) -> bool {
        self.end.is_some_and(|e| self.next >= e)
    }
}

/// One subtask of the log source.
pub struct LogSource {
    table: String,
    schema: SchemaRef,
    log: Arc<Log>,
    topic: Arc<Topic>,
    group: String,
    bounded: bool,
    columns: Vec<Option<Meta>>,
    decoder: Option<JsonDecoder>,
    owned: Vec<Owned>,
    /// Index into `owned` of the partition read first next time (fairness).
    cursor: usize,
    batch_size: usize,
    metrics: ConnectorMetrics,
    dead: Arc<DeadLetters>,
    last_commit: Instant,
    warned_reject: bool,
    /// Positions live in checkpoints; committing group offsets ahead of them could skip
    /// records after a crash.
    checkpointing: bool,
}

/// What one blocking fetch asks for: (index into owned, partition, next, max records).
type Want = (usize, u32, u64, usize);

/// Records read per partition (index into owned), and partitions whose offset fell
/// below the first retained one (with that offset).
type Fetched = (Vec<(usize, Vec<StoredRecord>)>, Vec<(usize, u64)>);

/// Reads up to `budget` records over `wants`, waiting up to `wait` when there are none.
/// Returns (index into owned, records) and partitions whose offset fell below the start.
fn fetch(
    topic: &Topic,
    wants: &[Want],
    budget: usize,
    wait: Duration,
) -> Result<Fetched, ConnectorError> {
    let mut out = Vec::new();
    let mut resets = Vec::new();
    let read = |want: &Want,
                max: usize,
                out: &mut Vec<(usize, Vec<StoredRecord>)>,
                resets: &mut Vec<(usize, u64)>|
     -> Result<usize, ConnectorError> {
        let &(idx, id, next, limit) = want;
        let Some(part) = topic.partition(id) else {
            return Ok(0);
        };
        match part.read(next, max.min(limit), MAX_POLL_BYTES) {
            Ok(records) => {
                let n = records.len();
                if n > 0 {
                    out.push((idx, records));
                }
                Ok(n)
            }
            Err(LogError::OffsetOutOfRange { start, .. }) if next < start => {
                resets.push((idx, start));
                Ok(0)
            }
            Err(e) => Err(log_error(
                format!("reading {}/{id} at offset {next}", topic.name()),
                e,
            )),
        }
    };
    let mut left = budget;
    for w in wants {
        if left == 0 {
            break;
        }
        left -= read(w, left, &mut out, &mut resets)?;
    }
    if !out.is_empty() || !resets.is_empty() || wait.is_zero() || wants.is_empty() {
        return Ok((out, resets));
    }
    // Nothing new: wait for any owned partition, in short slices when there are several.
    let deadline = Instant::now() + wait;
    let slice = (Duration::from_millis(20) / wants.len() as u32).max(Duration::from_millis(1));
    while Instant::now() < deadline {
        for w in wants {
            let Some(part) = topic.partition(w.1) else {
                continue;
            };
            let timeout = if wants.len() == 1 {
                deadline.saturating_duration_since(Instant::now())
            } else {
                slice
            };
            if part.wait_for(w.2, timeout) {
                read(w, budget, &mut out, &mut resets)?;
                return Ok((out, resets));
            }
        }
    }
    Ok((out, resets))
}

impl LogSource {
    /// Commits every partition whose position moved since the last commit (blocking, durable).
    async fn commit(&mut self) -> Result<(), ConnectorError> {
        if self.checkpointing {
            return Ok(());
        }
        let dirty: Vec<(usize, u32, u64)> = self
            .owned
            .iter()
            .enumerate()
            .filter(|(_, o)| o.next != o.committed)
            .map(|(i, o)| (i, o.id, o.next))
            .collect();
        self.last_commit = Instant::now();
        if dirty.is_empty() {
            return Ok(());
        }
        let log = self.log.clone();
        let group = self.group.clone();
        let topic = self.topic.name().to_string();
        let table = self.table.clone();
        let todo = dirty.clone();
        blocking("committing consumer offsets", move || {
            for (_, p, next) in todo {
                log.commit_offset(&group, &topic, p, next).map_err(|e| {
                    log_error(
                        format!(
                            "table '{table}': committing offset {next} of {topic}/{p} for group '{group}'"
                        ),
                        e,
                    )
                })?;
            }
            Ok(())
        })
        .await?;
        for (i, _, next) in dirty {
            self.owned[i].committed = next;
        }
        Ok(())
    }

    /// Turns fetched records into one batch; rejects go to the dead letters.
    async fn decode(
        &mut self,
        records: &[Read<'_>],
    ) -> Result<Option<RecordBatch>, ConnectorError> {
        if records.is_empty() {
            return Ok(None);
        }
        let Some(decoder) = self.decoder.as_mut() else {
            let arrays: Vec<ArrayRef> = self
                .schema
                .fields()
                .iter()
                .zip(&self.columns)
                .map(|(f, m)| {
                    // check_columns gave every raw column a Meta.
                    let m = m.unwrap_or(Meta::Value);
                    meta_array(m, f.data_type(), records)
                })
                .collect();
            return Ok(Some(RecordBatch::try_new(self.schema.clone(), arrays)?));
        };
        // Blank values are rejected here so that decoded rows match the non-rejected records.
        let mut rejects: Vec<Reject> = records
            .iter()
            .enumerate()
            .filter(|(_, (_, r))| r.value.iter().all(u8::is_ascii_whitespace))
            .map(|(i, (_, r))| Reject {
                line: i + 1,
                reason: "empty record value; expected a JSON object".into(),
                raw: r.value.clone(),
            })
            .collect();
        let decoded = decoder.decode_lines(
            records
                .iter()
                .enumerate()
                .map(|(i, (_, r))| (i + 1, r.value.as_slice())),
        )?;
        rejects.extend(decoded.rejects);
        let mut kept = vec![true; records.len()];
        let mut dead = Vec::with_capacity(rejects.len());
        for r in rejects {
            let Some((p, rec)) = records.get(r.line.wrapping_sub(1)) else {
                continue;
            };
            kept[r.line - 1] = false;
            // Keep the whole original value, not the decoder's trimmed copy.
            dead.push((
                *p,
                rec.offset,
                rec.event_time.unwrap_or(rec.timestamp),
                r.reason,
                rec.value.clone(),
            ));
        }
        if !dead.is_empty() {
            if !self.warned_reject {
                self.warned_reject = true;
                if let Some((p, off, _, reason, _)) = dead.first() {
                    tracing::warn!(table = %self.table, topic = %self.topic.name(),
                        dead_letters = %self.dead.topic_name,
                        "record {p}/{off} rejected: {reason} (further rejects are counted, not logged)");
                }
            }
            let dl = self.dead.clone();
            blocking("writing dead letters", move || dl.write(dead)).await?;
        }
        let Some(batch) = decoded.batch else {
            return Ok(None);
        };
        if self.columns.iter().all(Option::is_none) {
            return Ok(Some(batch));
        }
        let rows: Vec<Read<'_>> = records
            .iter()
            .zip(&kept)
            .filter(|(_, k)| **k)
            .map(|(r, _)| *r)
            .collect();
        if rows.len() != batch.num_rows() {
            return Err(ConnectorError::Other(format!(
                "runnel bug (please report): {} rows decoded from {} accepted records",
                batch.num_rows(),
                rows.len()
            )));
        }
        let mut arrays = batch.columns().to_vec();
        for (i, (f, m)) in self.schema.fields().iter().zip(&self.columns).enumerate() {
            let Some(m) = m else { continue };
            if arrays[i].null_count() == 0 {
                continue;
            }
            let meta = meta_array(*m, f.data_type(), &rows);
            let present = arrow::compute::is_not_null(arrays[i].as_ref())?;
            arrays[i] = arrow::compute::kernels::zip::zip(&present, &arrays[i], &meta)?;
        }
        Ok(Some(RecordBatch::try_new(self.schema.clone(), arrays)?))
    }
}

#[async_trait]
impl Source for LogSource {
    async fn poll(&mut self) -> Result<SourcePoll, ConnectorError> {
        if self.last_commit.elapsed() >= COMMIT_INTERVAL {
            self.commit().await?;
        }
        let n = self.owned.len();
        let wants: Vec<Want> = (0..n)
            .map(|k| (self.cursor + k) % n)
            .filter(|&i| !self.owned[i].done())
            .map(|i| {
                let o = &self.owned[i];
                let limit = o.end.map_or(usize::MAX, |e| {
                    usize::try_from(e.saturating_sub(o.next)).unwrap_or(usize::MAX)
                });
                (i, o.id, o.next, limit)
            })
            .collect();
        if wants.is_empty() {
            self.commit().await?;
            if self.bounded {
                return Ok(SourcePoll::End);
            }
            // No partition is assigned to this subtask: idle politely.
            tokio::time::sleep(IDLE_WAIT).await;
            return Ok(SourcePoll::Pending);
        }
        if n > 0 {
            self.cursor = (self.cursor + 1) % n;
        }
        let topic = self.topic.clone();
        let budget = self.batch_size;
        let (fetched, resets) = blocking("reading the log", move || {
            fetch(&topic, &wants, budget, IDLE_WAIT)
        })
        .await?;
        for (i, start) in resets {
            let o = &mut self.owned[i];
            tracing::warn!(table = %self.table, topic = %self.topic.name(), partition = o.id,
                "offset {} was deleted by retention; continuing at {start}", o.next);
            o.next = start;
        }
        if fetched.is_empty() {
            // Idle: a good moment to commit what was handed over.
            self.commit().await?;
            return Ok(SourcePoll::Pending);
        }
        let mut bytes = 0u64;
        for (i, recs) in &fetched {
            if let Some(last) = recs.last() {
                self.owned[*i].next = last.offset + 1;
            }
            bytes += recs.iter().map(|r| r.data_len() as u64).sum::<u64>();
        }
        self.metrics.bytes.add(bytes);
        let owned = &self.owned;
        let records: Vec<Read<'_>> = fetched
            .iter()
            .flat_map(|(i, recs)| {
                let id = owned[*i].id;
                recs.iter().map(move |r| (id, r))
            })
            .collect();
        match self.decode(&records).await? {
            Some(batch) => {
                self.metrics.rows.add(batch.num_rows() as u64);
                Ok(SourcePoll::Batch(batch))
            }
            None => Ok(SourcePoll::Pending),
        }
    }

    fn position(&self) -> Option<serde_json::Value> {
        let map: serde_json::Map<String, serde_json::Value> = self
            .owned
            .iter()
            .map(|o| (o.id.to_string(), o.next.into()))
            .collect();
        Some(serde_json::Value::Object(map))
    }

    async fn seek(&mut self, position: &serde_json::Value) -> Result<(), ConnectorError> {
        let Some(map) = position.as_object() else {
            return Err(ConnectorError::Other(format!(
                "table '{}': cannot resume the log source from position {position}; \
                 expected {{\"<partition>\": <offset>, …}}",
                self.table
            )));
        };
        let wanted: BTreeMap<u32, u64> = map
            .iter()
            .filter_map(|(k, v)| Some((k.parse::<u32>().ok()?, v.as_u64()?)))
            .collect();
        for o in &mut self.owned {
            if let Some(&next) = wanted.get(&o.id) {
                let end = self.topic.partition(o.id).map_or(next, |p| p.end_offset());
                if next > end {
                    tracing::warn!(table = %self.table, topic = %self.topic.name(), partition = o.id,
                        "resume offset {next} is past the end {end}; continuing at {end}");
                }
                o.next = next.min(end);
            }
        }
        Ok(())
    }
}
