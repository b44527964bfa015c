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
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use runnel_common::TableSpec;
use runnel_common::metrics::ConnectorMetrics;
use runnel_common::types::sql_name;
use runnel_log::{Log, LogError, StoredRecord, Topic, TopicConfig};

use crate::format::check_schema;
use crate::format::json::JsonDecoder;
mod reader;

use crate::dead_letters::Target;
use crate::descriptor::{
    CheckContext, CheckFuture, Connector, Guarantee, OptionDef, OptionType, Resource, Role,
};
use crate::source::records::{Meta, Read, RecordDecoder, ValueFormat};
use crate::{ConnectorError, Source, SourceContext, SourcePoll};
use reader::*;

/// `connector = 'log'`: a topic of the embedded durable log (one table can be read and
/// written; the sink ignores the reading options).
pub const CONNECTOR: Connector = Connector {
    name: "log",
    doc: "a topic of runnel's embedded durable log (fsynced before acknowledging)",
    options: &[
        OptionDef::new("topic", OptionType::Text, "the topic; created when missing").required(),
        OptionDef::new(
            "format",
            OptionType::Choice(&["json", "raw"]),
            "record encoding: a JSON object, or the record as key/value/headers columns",
        )
        .default("json"),
        OptionDef::new(
            "scan.startup.mode",
            OptionType::Choice(&["group-offsets", "earliest", "latest"]),
            "where reading starts without a checkpoint",
        )
        .default("group-offsets")
        .source_only(),
        OptionDef::new(
            "group",
            OptionType::Text,
            "consumer group whose offsets are used",
        )
        .default("runnel-<table>")
        .source_only(),
        OptionDef::new(
            "partitions",
            OptionType::Int {
                min: 1,
                max: runnel_log::MAX_PARTITIONS as u64,
            },
            "partitions of the topic when it is created",
        )
        .default("1"),
        OptionDef::new(
            "bounded",
            OptionType::Bool,
            "stop at the end offsets seen at start",
        )
        .default("false")
        .source_only(),
        OptionDef::new(
            "dead-letter.topic",
            OptionType::Text,
            "topic of records that cannot be read",
        )
        .default("<topic>.dead-letter")
        .source_only(),
        OptionDef::new(
            "dead-letter.path",
            OptionType::Path,
            "a JSON-lines file for records that cannot be read, instead of a topic",
        )
        .source_only(),
    ],
    source: Some(build),
    sink: Some(crate::sink::log::build),
    unbounded: never_ends,
    guarantee: Guarantee::ExactlyOnce,
    updates: crate::descriptor::updates_with_json,
    needs: &[Resource::Log],
    validate,
    check,
    metadata: &[],
    upserts: false,
    lookup: None,
};

fn validate(spec: &TableSpec) -> Result<(), ConnectorError> {
    LogConfig::try_new(spec).map(|_| ())
}

/// A bounded read of a topic that does not exist would read nothing: refuse it.
fn check(spec: TableSpec, role: Role, ctx: CheckContext) -> CheckFuture {
    Box::pin(async move {
        let config = LogConfig::try_new(&spec)?;
        // No log yet (a fresh data directory): no topic exists.
        let exists = ctx
            .log
            .as_ref()
            .is_some_and(|l| l.topic(&config.topic).is_some());
        if role != Role::Sink && config.bounded && !exists {
            return Err(ConnectorError::Other(format!(
                "table '{}': topic '{}' does not exist in the log in {} (a bounded read needs it)",
                spec.name,
                config.topic,
                ctx.data_dir.display()
            )));
        }
        Ok(())
    })
}

/// Columns a `format = 'raw'` table may declare, with their SQL types.
pub const RAW_COLUMNS: &str = "key STRING|BYTES, value BYTES|STRING, headers STRING (a JSON object), \
     event_time TIMESTAMP(3)|BIGINT, partition INT|BIGINT, offset BIGINT, ingest_time TIMESTAMP(3)|BIGINT";

/// Longest wait for new records in one poll.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Offsets are committed at most this often while records keep flowing.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Stop reading in one poll (all of the subtask's partitions together) after about this
/// many bytes. The engine's queues hold 16 batches, so this bounds what a slow consumer
/// keeps in memory to about 16 MiB per subtask: the camera demo's 100 kB frames come ~10
/// per batch, while small records still fill the 1,024-record batch.
const MAX_POLL_BYTES: usize = 1 << 20;

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
        CONNECTOR.check_options(spec)?;
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
    let own = crate::dead_letters::own_target(spec);
    let dead = first.dead_letters.writer(
        &spec.name,
        own,
        Target::Topic(config.dead_letter_topic.clone()),
        &first.metrics,
    );
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
        let format = match config.format {
            LogFormat::Json => ValueFormat::Json(JsonDecoder::try_new(spec.schema.clone())?),
            LogFormat::Raw => ValueFormat::Raw,
        };
        sources.push(Box::new(LogSource {
            table: spec.name.clone(),
            log: log.clone(),
            topic: topic.clone(),
            group: config.group.clone(),
            bounded: config.bounded,
            decode: RecordDecoder::new(
                spec.name.clone(),
                spec.schema.clone(),
                columns.clone(),
                false,
                format,
                dead.clone(),
            ),
            owned,
            cursor: 0,
            batch_size: if ctx.batch_size == 0 {
                1024
            } else {
                ctx.batch_size
            },
            metrics: ctx.metrics,
            last_commit: Instant::now(),
            checkpointing: ctx.checkpointing,
        }));
    }
    Ok(sources)
}

/// For each column, the metadata it is built (raw) or filled (json) from, if any.
pub(super) fn check_columns(
    spec: &TableSpec,
    format: LogFormat,
) -> Result<Vec<Option<Meta>>, ConnectorError> {
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
