//! `kafka` sink: rows to records of one topic, with Flink's options (see
//! [`crate::source::kafka`]).
//!
//! The value is the row's value columns (every column but `METADATA` ones, and but the
//! `key.fields` with `value.fields-include = 'EXCEPT_KEY'`) in `format`; the key is the
//! `key.fields` in `key.format`. A `METADATA FROM 'timestamp'` column sets the record
//! timestamp, `METADATA FROM 'headers'` (a JSON object) its headers; `VIRTUAL` ones are
//! not written. `sink.partitioner`: `default` lets the client place records (by key hash,
//! spread when there is no key), `fixed` sends subtask `i`'s records to partition
//! `i % partitions`, `round-robin` cycles through the partitions.
//!
//! `sink.delivery-guarantee`:
//! - `none`: records are handed to the client and not waited for;
//! - `at-least-once` (default): every record is acknowledged by the brokers before a
//!   checkpoint completes (and at the end), so a restart may write some again;
//! - `exactly-once`: on the transactional-sink mechanism ([`crate::txn`]). A checkpoint's
//!   rows are staged on disk, then written in one Kafka transaction when the checkpoint
//!   completes (per subtask, transactional id `<sink.transactional-id-prefix>-<subtask>`).
//!   The same transaction commits the checkpoint id as the offset of a marker consumer
//!   group (`<prefix>-<subtask>-<run nonce>`), so applying a batch again after a crash
//!   sees it is done; starting the producer aborts a transaction a crash left open.
//!   Readers with `isolation.level = read_committed` see every row once. Without
//!   checkpoints the rows are written when the input ends.
//!
//!   Each record of such a transaction carries a header `runnel-txn` =
//!   `<transactional id>/<checkpoint>/<n>`, and before its first attempt the apply notes
//!   where the topic's partitions ended (in the batch's progress file, copied with the
//!   sealed batch when checkpoints are in an object store). Applying a batch again after
//!   a crash or on another member first waits until the brokers have settled every
//!   earlier attempt (a broker may answer a commit before it settles it: tansu 0.6 does
//!   while another transaction overlaps it), then reads from there as a `read_committed`
//!   reader: a broker that honours aborts shows none of an aborted attempt's records and
//!   all are written again; a Kafka-protocol broker that shows records of aborted
//!   transactions anyway (tansu 0.6 does) shows some, and those are not written twice.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use runnel_common::TableSpec;
use runnel_common::fault::crash_point;
use runnel_common::metrics::ConnectorMetrics;
use runnel_log::Record;

use crate::format::csv::CsvEncoder;
use crate::format::json::JsonEncoder;
use crate::sink::log::{blocking_with, parse_headers, time_at};
use crate::sink::log_txn;
use crate::source::kafka::{KafkaConfig, KafkaFormat, Quiet};
use crate::source::log::blocking;
use crate::txn::{self, Apply, Staging, Txn};
use crate::{ConnectorError, Sink, SinkContext};

/// How long a broker request of the sink may take before it fails.
const TIMEOUT: Duration = Duration::from_secs(30);

/// How long applying a batch again waits for the brokers to settle an earlier attempt
/// at it (see [`KafkaApply::already_visible`]) before it fails (and is tried again).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Delivery guarantee of the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    None,
    AtLeastOnce,
    ExactlyOnce,
}

/// Where records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Partitioner {
    Default,
    Fixed,
    RoundRobin,
    /// A stable hash of the record key's bytes: equal keys land in the same partition
    /// whichever process writes them (a distributed pipeline's repartition topics).
    KeyHash,
}

/// Builds one sink subtask per context.
///
/// # Errors
/// Bad options or columns; a failed recovery of staged exactly-once batches.
pub fn build(
    spec: &TableSpec,
    contexts: Vec<SinkContext>,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
    build_with(spec, contexts, KafkaConfig::try_new(spec)?)
}

/// Builds the sink subtasks with `config` (`kafka`, or `upsert-kafka` with its key set to
/// the primary key).
pub(crate) fn build_with(
    spec: &TableSpec,
    contexts: Vec<SinkContext>,
    config: KafkaConfig,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
    let Some(first) = contexts.first() else {
        return Ok(Vec::new());
    };
    let topic = match (config.topics.as_slice(), &config.pattern) {
        ([t], None) => t.clone(),
        _ => {
            return Err(ConnectorError::Other(format!(
                "table '{}': a kafka sink writes one topic: give 'topic' = '<name>'",
                spec.name
            )));
        }
    };
    let o = &spec.options;
    let delivery = match o.get("sink.delivery-guarantee") {
        Some("none") => Delivery::None,
        Some("exactly-once") => Delivery::ExactlyOnce,
        _ => Delivery::AtLeastOnce,
    };
    let partitioner = match o.get("sink.partitioner") {
        _ if o.get(PARTITION_BY_KEY) == Some("true") => Partitioner::KeyHash,
        Some("fixed") => Partitioner::Fixed,
        Some("round-robin") => Partitioner::RoundRobin,
        _ => Partitioner::Default,
    };
    // A repartition topic carries its writer's watermarks to the tasks that read it.
    let watermark_writer = (o.get(WATERMARK_WRITER) == Some("true")).then(|| {
        first
            .task
            .map_or_else(|| "single".to_string(), |t| t.to_string())
    });
    let encode = Encode::try_new(spec, &config)?;
    let (stage_dir, safe) = log_txn::staging_dir(&first.data_dir, &spec.name);
    // A distributed task's producers are its own and named the same on every member
    // (after the pipeline, not this member's data directory): the member that takes the
    // task over starts the same ids, which fences the one that lost it, and finds the
    // commit markers of what the other one applied.
    let prefix = match (o.get("sink.transactional-id-prefix"), first.task) {
        (Some(p), None) => p.to_string(),
        (Some(p), Some(task)) => format!("{p}-{task}"),
        (None, None) => format!("runnel-{safe}-{:08x}", path_hash(&first.data_dir)),
        (None, Some(task)) => {
            let pipeline = first.pipeline.as_deref().unwrap_or_default();
            format!("runnel-{pipeline}-{safe}-{task}")
        }
    };
    let apply = (delivery == Delivery::ExactlyOnce).then(|| {
        Arc::new(KafkaApply {
            table: spec.name.clone(),
            config: config.clone(),
            topic: topic.clone(),
            prefix: prefix.clone(),
            producers: Mutex::new(HashMap::new()),
            mirror: first.sealed.clone(),
        })
    });
    if let Some(apply) = &apply {
        if first.checkpoint.is_none() {
            tracing::warn!(table = %spec.name,
                "sink.delivery-guarantee = 'exactly-once' without checkpoints: rows are \
                 written when the input ends (SET 'execution.checkpointing.interval' to write \
                 them as the pipeline runs)");
        }
        // Every subtask's transactional id starts now: a transaction an earlier run left
        // open is aborted at once, not when (or if) the broker times it out, so
        // read_committed readers are not held behind it. Before any batch is applied
        // again: on a broker that settles a commit only once the transactions overlapping
        // it have ended, one subtask's open transaction would hold up another's batch.
        // (A transaction is only ever begun after a checkpoint completed, so a run that
        // restores none has nothing to abort.)
        if first.checkpoint.and_then(|m| m.restored).is_some() {
            for ctx in &contexts {
                apply.producer(ctx.subtask)?;
            }
        }
        txn::recover_with(
            &stage_dir,
            "",
            apply.as_ref(),
            first.checkpoint.unwrap_or_default(),
            first.sealed.as_deref(),
        )?;
    }
    let mut sinks: Vec<Box<dyn Sink>> = Vec::with_capacity(contexts.len());
    for ctx in contexts {
        let staging = apply.as_ref().map(|a| {
            Staging::new(
                stage_dir.clone(),
                "",
                ctx.subtask,
                log_txn::header(),
                a.clone(),
            )
            .with_mirror(ctx.sealed.clone())
            .with_attempt(ctx.checkpoint.and_then(|m| m.attempt))
        });
        sinks.push(Box::new(KafkaSink {
            table: spec.name.clone(),
            config: config.clone(),
            topic: topic.clone(),
            delivery,
            partitioner,
            subtask: ctx.subtask,
            encode: encode.clone(),
            metrics: ctx.metrics,
            producer: None,
            partitions: 0,
            next_partition: ctx.subtask,
            pending: Vec::new(),
            staging,
            staged: Vec::new(),
            watermark_writer: watermark_writer.clone(),
            watermark_sent: i64::MIN,
            // A writer (re)starting says it is active with its first rows, in case its
            // readers last saw it idle.
            idle_sent: watermark_writer.is_some(),
            marked_at: std::time::Instant::now(),
            last_mark: None,
        }));
    }
    Ok(sinks)
}

/// A stable hash of a path (FNV-1a), to tell pipelines' transactional ids apart.
fn path_hash(path: &Path) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in path.to_string_lossy().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Rows → (key, value, timestamp, headers).
#[derive(Debug, Clone)]
struct Encode {
    table: String,
    format: KafkaFormat,
    value: Vec<usize>,
    key: Option<(KafkaFormat, Vec<usize>)>,
    timestamp: Option<usize>,
    headers: Option<usize>,
    /// Upsert mode: a retraction is a tombstone (a record with the key and no value).
    upsert: bool,
    /// A repartition topic carrying a changelog: each row's kind goes in a
    /// [`CHANGELOG_HEADER`] (inserts carry none).
    changelog: bool,
}

impl Encode {
    fn try_new(spec: &TableSpec, config: &KafkaConfig) -> Result<Self, ConnectorError> {
        let value = config.value_columns(spec);
        let written = |key: &str| {
            spec.metadata
                .iter()
                .find(|m| m.key == key && !m.is_virtual)
                .map(|m| m.column)
        };
        let raw_ok = |cols: &[usize], what: &str| {
            if cols.len() == 1
                && matches!(
                    spec.schema.field(cols[0]).data_type(),
                    DataType::Binary | DataType::Utf8
                )
            {
                Ok(())
            } else {
                Err(ConnectorError::Other(format!(
                    "table '{}': a raw {what} is one BYTES or STRING column, not {}",
                    spec.name,
                    cols.len()
                )))
            }
        };
        if config.format == KafkaFormat::Raw {
            raw_ok(&value, "value")?;
        }
        if let Some((KafkaFormat::Raw, cols)) = &config.key {
            raw_ok(cols, "key")?;
        }
        if let Some(c) = written("headers") {
            let dt = spec.schema.field(c).data_type();
            let ok = matches!(dt, DataType::Utf8)
                || matches!(
                    runnel_common::types::map_types(dt),
                    Some((DataType::Utf8, DataType::Binary | DataType::Utf8))
                );
            if !ok {
                return Err(ConnectorError::Other(format!(
                    "table '{}': column {} (METADATA FROM 'headers') must be MAP<STRING, BYTES>, \
                     MAP<STRING, STRING> or STRING (a JSON object), not {}",
                    spec.name,
                    spec.schema.field(c).name(),
                    runnel_common::types::sql_name(dt)
                )));
            }
        }
        Ok(Encode {
            table: spec.name.clone(),
            format: config.format,
            value,
            key: config.key.clone(),
            timestamp: written("timestamp"),
            headers: written("headers"),
            upsert: config.upsert,
            changelog: spec.options.get(CHANGELOG) == Some("true"),
        })
    }

    /// One record per row: (key, value, timestamp, headers).
    fn records(&self, batch: &RecordBatch) -> Result<Vec<Record>, ConnectorError> {
        let rows = batch.num_rows();
        let ops = runnel_common::changelog::ops(batch).cloned();
        let values = encode_columns(batch, &self.value, self.format, rows)?;
        let keys = match &self.key {
            Some((format, cols)) => Some(encode_columns(batch, cols, *format, rows)?),
            None => None,
        };
        let mut out = Vec::with_capacity(rows);
        for (i, value) in values.into_iter().enumerate() {
            let headers = match self.headers.map(|c| batch.column(c)) {
                Some(col) if !col.is_null(i) => match col.as_string_opt::<i32>() {
                    Some(a) => parse_headers(&self.table, a.value(i).as_bytes())?,
                    None => map_headers(col.as_ref(), i),
                },
                _ => Vec::new(),
            };
            // As Flink's upsert sink: a retraction (`-D`, and `-U`, which may have no `+U`
            // after it when a filter drops the new value) is a tombstone for its key.
            let kind = runnel_common::changelog::kind_at(ops.as_ref(), i);
            let mut headers = headers;
            let value = if self.upsert && kind.is_retract() {
                headers.push((TOMBSTONE.into(), Vec::new()));
                Vec::new()
            } else {
                value.unwrap_or_default()
            };
            if self.changelog && kind != runnel_common::changelog::RowKind::Insert {
                headers.push((CHANGELOG_HEADER.into(), kind.short().as_bytes().to_vec()));
            }
            out.push(Record {
                key: keys.as_ref().and_then(|k| k[i].clone()),
                value,
                headers,
                event_time: self
                    .timestamp
                    .and_then(|c| time_at(batch.column(c).as_ref(), i)),
            });
        }
        Ok(out)
    }
}

/// The `cols` of every row in `format` (a null raw column is a null value).
fn encode_columns(
    batch: &RecordBatch,
    cols: &[usize],
    format: KafkaFormat,
    rows: usize,
) -> Result<Vec<Option<Vec<u8>>>, ConnectorError> {
    if format == KafkaFormat::Raw {
        let col = batch.column(cols[0]);
        return Ok((0..rows)
            .map(|i| {
                if col.is_null(i) {
                    return None;
                }
                match col.data_type() {
                    DataType::Utf8 => Some(col.as_string::<i32>().value(i).as_bytes().to_vec()),
                    _ => Some(col.as_binary::<i32>().value(i).to_vec()),
                }
            })
            .collect());
    }
    let projected = batch.project(cols)?;
    let mut buf = Vec::new();
    match format {
        KafkaFormat::Csv => CsvEncoder.encode(&projected, &mut buf)?,
        _ => JsonEncoder.encode(&projected, &mut buf)?,
    }
    // Both encoders write one line per row and escape line ends inside values.
    let lines: Vec<Option<Vec<u8>>> = buf
        .split(|b| *b == b'\n')
        .take(rows)
        .map(|l| Some(l.strip_suffix(b"\r").unwrap_or(l).to_vec()))
        .collect();
    if lines.len() != rows {
        return Err(ConnectorError::Other(format!(
            "runnel bug (please report): {} encoded lines for {rows} rows",
            lines.len()
        )));
    }
    Ok(lines)
}

/// Kafka headers from (name, value) pairs.
/// Row `i` of a `MAP<STRING, BYTES|STRING>` headers column (NULL values as empty).
fn map_headers(col: &dyn Array, i: usize) -> HeaderList {
    let Some(map) = col.as_map_opt() else {
        return Vec::new();
    };
    let entries = map.value(i);
    let (Some(keys), values) = (entries.column(0).as_string_opt::<i32>(), entries.column(1)) else {
        return Vec::new();
    };
    (0..entries.len())
        .map(|j| {
            let value = if values.is_null(j) {
                Vec::new()
            } else if let Some(b) = values.as_binary_opt::<i32>() {
                b.value(j).to_vec()
            } else if let Some(s) = values.as_string_opt::<i32>() {
                s.value(j).as_bytes().to_vec()
            } else {
                Vec::new()
            };
            (keys.value(j).to_string(), value)
        })
        .collect()
}

fn kafka_headers(headers: &[(String, Vec<u8>)], tag: Option<&str>) -> Option<OwnedHeaders> {
    if headers.is_empty() && tag.is_none() {
        return None;
    }
    let mut h = OwnedHeaders::new_with_capacity(headers.len() + 1);
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    if let Some(tag) = tag {
        h = h.insert(Header {
            key: TXN_HEADER,
            value: Some(tag),
        });
    }
    Some(h)
}

/// The header that names an exactly-once record's transaction and place in it.
const TXN_HEADER: &str = "runnel-txn";

/// Marks a record (in staging and on its way to the client) as a tombstone: sent with
/// no value, never as a header.
const TOMBSTONE: &str = "\0runnel-tombstone";

/// Record headers: (name, value) pairs.
type HeaderList = Vec<(String, Vec<u8>)>;

/// The record's value, `None` for a tombstone, and its headers without the mark.
fn payload(r: &Record) -> (Option<&[u8]>, HeaderList) {
    if r.headers.iter().any(|(k, _)| k == TOMBSTONE) {
        let headers = r
            .headers
            .iter()
            .filter(|(k, _)| k != TOMBSTONE)
            .cloned()
            .collect();
        (None, headers)
    } else {
        (Some(&r.value[..]), r.headers.clone())
    }
}

/// Partition any: let the client place the record.
const ANY_PARTITION: u32 = u32::MAX;

/// Internal option (set by runnel on a repartition topic's writer): partition by
/// [`key_partition`].
pub const PARTITION_BY_KEY: &str = "runnel.internal.partition-by-key";
/// Internal option: write the input's watermark as control records (see
/// [`WATERMARK_HEADER`]).
pub const WATERMARK_WRITER: &str = "runnel.internal.watermark-writer";
/// Internal option (set by runnel on a repartition topic's writer and reader): the topic
/// carries an updating stream, each record's row kind in a [`CHANGELOG_HEADER`].
pub const CHANGELOG: &str = "runnel.internal.changelog";
/// The header with a repartitioned row's kind (`-U`, `+U`, `-D`; none for `+I`).
pub const CHANGELOG_HEADER: &str = "runnel-op";
/// The header of a watermark control record: `<writer>=<watermark ms>`, no value.
pub const WATERMARK_HEADER: &str = "runnel-watermark";

/// The partition of a record key: FNV-1a of its bytes, the same in every process.
pub fn key_partition(key: Option<&[u8]>, partitions: i32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.unwrap_or_default() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1) as u32)) as u32
}

/// One sink subtask.
pub struct KafkaSink {
    table: String,
    config: KafkaConfig,
    topic: String,
    delivery: Delivery,
    partitioner: Partitioner,
    subtask: usize,
    encode: Encode,
    metrics: ConnectorMetrics,
    producer: Option<FutureProducer<Quiet>>,
    /// Partitions of the topic (looked up on first use; 0 before).
    partitions: i32,
    next_partition: usize,
    pending: Vec<rdkafka::producer::DeliveryFuture>,
    staging: Option<Staging>,
    staged: Vec<u8>,
    /// Writes watermark control records, as this writer.
    watermark_writer: Option<String>,
    /// The last watermark written.
    watermark_sent: i64,
    /// The last mark written said the input is idle.
    idle_sent: bool,
    /// When this writer last staged rows or a mark (see [`MARK_REFRESH`]).
    marked_at: std::time::Instant,
    /// The last mark it staged (`<ms>` or `idle`).
    last_mark: Option<String>,
}

/// A repartition writer that staged nothing for this long writes its watermark again
/// with its next checkpoint. Readers take the largest mark per writer, so the repeat
/// changes nothing for them; it keeps transactions flowing on the topic, which some
/// Kafka-protocol brokers need to settle the last transactions written (tansu 0.6 can
/// leave a commit that overlapped another open transaction pending until a later commit
/// settles it, and readers at read_committed wait behind it).
const MARK_REFRESH: Duration = Duration::from_secs(1);

impl KafkaSink {
    /// The producer and the partition count, made on first use.
    async fn connect(&mut self) -> Result<(), ConnectorError> {
        if self.producer.is_some() {
            return Ok(());
        }
        let config = self.config.clone();
        let table = self.table.clone();
        let topic = self.topic.clone();
        let acks = self.delivery != Delivery::None;
        let metrics = self.metrics.clone();
        let (producer, partitions) = blocking("connecting to Kafka", move || {
            let mut client = config.client();
            if acks && !config.properties.iter().any(|(k, _)| k == "acks") {
                client.set("acks", "all");
            }
            let producer: FutureProducer<Quiet> = client
                .create_with_context(Quiet::new(&config, &table).reporting(&metrics))
                .map_err(|e| {
                    ConnectorError::Other(format!("table '{table}': Kafka client settings: {e}"))
                })?;
            let partitions = topic_partitions(producer.client(), &topic, &config, &table)?;
            Ok((producer, partitions))
        })
        .await?;
        self.producer = Some(producer);
        self.partitions = partitions;
        Ok(())
    }

    fn partition_for(&mut self, r: &Record) -> u32 {
        match self.partitioner {
            Partitioner::Default => ANY_PARTITION,
            Partitioner::KeyHash => key_partition(r.key.as_deref(), self.partitions),
            Partitioner::Fixed => (self.subtask % self.partitions.max(1) as usize) as u32,
            Partitioner::RoundRobin => {
                self.next_partition = (self.next_partition + 1) % self.partitions.max(1) as usize;
                self.next_partition as u32
            }
        }
    }

    /// A watermark control record (`<writer>=<mark>`) for every partition, into `out`.
    fn stage_mark(&self, mark: &str, out: &mut Vec<u8>) {
        let Some(writer) = &self.watermark_writer else {
            return;
        };
        let record = Record {
            key: None,
            value: Vec::new(),
            headers: vec![(
                WATERMARK_HEADER.to_string(),
                format!("{writer}={mark}").into_bytes(),
            )],
            event_time: None,
        };
        for p in 0..self.partitions.max(0) as u32 {
            log_txn::encode(p, &record, out);
        }
    }

    /// Stages the writer's last mark again when it staged nothing for [`MARK_REFRESH`].
    fn refresh_mark(&mut self) -> Result<(), ConnectorError> {
        if self.partitions == 0 || self.marked_at.elapsed() < MARK_REFRESH {
            return Ok(());
        }
        match self.last_mark.clone() {
            Some(mark) => self.write_mark(mark),
            None => Ok(()),
        }
    }

    /// Stages `mark` (`<ms>` or `idle`) to every partition, in order with the rows
    /// before it (a reader never sees a watermark before the rows it covers), and
    /// remembers it as the last mark.
    fn write_mark(&mut self, mark: String) -> Result<(), ConnectorError> {
        self.marked_at = std::time::Instant::now();
        let mut staged = std::mem::take(&mut self.staged);
        staged.clear();
        self.stage_mark(&mark, &mut staged);
        self.last_mark = Some(mark);
        let result = match self.staging.as_mut() {
            Some(s) => s.write(&staged),
            None => Ok(()),
        };
        self.staged = staged;
        result
    }

    /// Waits for every record sent so far to be acknowledged.
    async fn drain(&mut self) -> Result<(), ConnectorError> {
        let acknowledged = !self.pending.is_empty();
        for f in self.pending.drain(..) {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(ConnectorError::Other(format!(
                        "table '{}': writing to Kafka topic '{}' at {} failed: {e}",
                        self.table, self.topic, self.config.bootstrap
                    )));
                }
                Err(_) => {
                    return Err(ConnectorError::Other(format!(
                        "table '{}': the Kafka producer went away before acknowledging",
                        self.table
                    )));
                }
            }
        }
        if acknowledged {
            self.metrics.clear_problem();
        }
        Ok(())
    }
}

/// The number of partitions of `topic` (which must exist).
fn topic_partitions<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    config: &KafkaConfig,
    table: &str,
) -> Result<i32, ConnectorError> {
    let metadata = client.fetch_metadata(Some(topic), TIMEOUT).map_err(|e| {
        ConnectorError::Other(format!(
            "table '{table}': cannot reach Kafka at {}: {e}",
            config.bootstrap
        ))
    })?;
    let t = metadata.topics().iter().find(|t| t.name() == topic);
    match t {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok(t.partitions().len() as i32)
        }
        _ => Err(ConnectorError::Other(format!(
            "table '{table}': topic '{topic}' does not exist on the Kafka brokers at {}",
            config.bootstrap
        ))),
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        if self.partitions == 0 {
            self.connect().await?;
        }
        let records = self.encode.records(&batch)?;
        let bytes: u64 = records.iter().map(|r| r.data_len() as u64).sum();
        self.metrics.rows.add(rows as u64);
        self.metrics.bytes.add(bytes);
        if self.staging.is_some() {
            self.marked_at = std::time::Instant::now();
            let mut staged = std::mem::take(&mut self.staged);
            staged.clear();
            if self.idle_sent {
                // Data again: the writer holds event time back again, from where it stood.
                self.idle_sent = false;
                let mark = self.watermark_sent.to_string();
                self.stage_mark(&mark, &mut staged);
                self.last_mark = Some(mark);
            }
            for r in &records {
                let p = self.partition_for(r);
                log_txn::encode(p, r, &mut staged);
            }
            let result = match self.staging.as_mut() {
                Some(staging) => staging.write(&staged),
                None => Ok(()),
            };
            self.staged = staged;
            return result;
        }
        for r in records {
            let p = self.partition_for(&r);
            let Some(producer) = &self.producer else {
                break;
            };
            let (value, headers) = payload(&r);
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic);
            if let Some(v) = value {
                record = record.payload(v);
            }
            if let Some(k) = &r.key {
                record = record.key(&k[..]);
            }
            if p != ANY_PARTITION {
                record = record.partition(p as i32);
            }
            if let Some(t) = r.event_time {
                record = record.timestamp(t);
            }
            if let Some(h) = kafka_headers(&headers, None) {
                record = record.headers(h);
            }
            // Waits while the client's queue is full (backpressure), up to the timeout.
            let future = loop {
                match producer.send_result(record) {
                    Ok(f) => break f,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        return Err(ConnectorError::Other(format!(
                            "table '{}': writing to Kafka topic '{}': {e}",
                            self.table, self.topic
                        )));
                    }
                }
            };
            if self.delivery == Delivery::AtLeastOnce {
                self.pending.push(future);
            }
        }
        Ok(())
    }

    async fn watermark(&mut self, watermark: i64) -> Result<(), ConnectorError> {
        if self.watermark_writer.is_none() {
            return Ok(());
        }
        if watermark <= self.watermark_sent || self.staging.is_none() {
            return Ok(());
        }
        if self.partitions == 0 {
            self.connect().await?;
        }
        self.watermark_sent = watermark;
        self.idle_sent = false;
        self.write_mark(watermark.to_string())
    }

    async fn idle(&mut self) -> Result<(), ConnectorError> {
        if self.watermark_writer.is_none() || self.staging.is_none() || self.idle_sent {
            return Ok(());
        }
        if self.partitions == 0 {
            self.connect().await?;
        }
        self.idle_sent = true;
        self.write_mark("idle".to_string())
    }

    async fn pre_commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        self.refresh_mark()?;
        match self.staging.as_mut() {
            Some(s) => s.seal(checkpoint),
            None => self.drain().await,
        }
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        let Some(staging) = self.staging.take() else {
            return Ok(());
        };
        let (staging, result) = blocking_with(staging, move |s| s.commit(checkpoint)).await?;
        self.staging = Some(staging);
        result
    }

    async fn finish(&mut self) -> Result<(), ConnectorError> {
        if let Some(staging) = self.staging.take() {
            return blocking_with(staging, Staging::finish).await?.1;
        }
        self.drain().await?;
        if let Some(p) = self.producer.take() {
            let table = self.table.clone();
            blocking("flushing the Kafka producer", move || {
                p.flush(TIMEOUT).map_err(|e| {
                    ConnectorError::Other(format!("table '{table}': flushing to Kafka: {e}"))
                })
            })
            .await?;
        }
        Ok(())
    }
}

/// Partition ends noted by [`KafkaApply::note_ends`]; `None` when there are none (or a
/// crash cut the note short, which happens before anything is written).
fn read_ends(progress: &Path) -> Option<Vec<(i32, i64)>> {
    let bytes = std::fs::read(progress).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.as_object()?
        .iter()
        .map(|(p, o)| Some((p.parse().ok()?, o.as_i64()?)))
        .collect()
}

/// The exactly-once apply step: one Kafka transaction per sealed batch.
pub struct KafkaApply {
    table: String,
    config: KafkaConfig,
    topic: String,
    prefix: String,
    /// Transactional producers by subtask, ready (transactions initialised).
    producers: Mutex<HashMap<usize, Arc<BaseProducer<Quiet>>>>,
    /// Where sealed batches are kept with the checkpoints (an object store): the ends
    /// noted before a first attempt go there too, for whoever applies the batch again.
    mirror: Option<Arc<dyn txn::SealedStore>>,
}

impl KafkaApply {
    fn fail(&self, what: &str, e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Other(format!(
            "table '{}': {what} (Kafka at {}): {e}",
            self.table, self.config.bootstrap
        ))
    }

    /// The subtask's transactional producer; creating it aborts what an earlier
    /// incarnation left open and fences it off.
    fn producer(&self, subtask: usize) -> Result<Arc<BaseProducer<Quiet>>, ConnectorError> {
        let mut producers = self.producers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = producers.get(&subtask) {
            return Ok(p.clone());
        }
        let producer: BaseProducer<Quiet> = self
            .config
            .client()
            .set("transactional.id", format!("{}-{subtask}", self.prefix))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create_with_context(Quiet::new(&self.config, &self.table))
            .map_err(|e| self.fail("creating the transactional producer", e))?;
        producer
            .init_transactions(TIMEOUT)
            .map_err(|e| self.fail("initialising transactions", e))?;
        let producer = Arc::new(producer);
        producers.insert(subtask, producer.clone());
        Ok(producer)
    }

    /// Notes in `progress` where each partition of the topic ends now, before the first
    /// attempt at a batch writes anything.
    fn note_ends(
        &self,
        producer: &BaseProducer<Quiet>,
        progress: &Path,
    ) -> Result<(), ConnectorError> {
        let client = producer.client();
        let partitions = topic_partitions(client, &self.topic, &self.config, &self.table)?;
        let mut ends = serde_json::Map::new();
        for p in 0..partitions {
            let (_, high) = client
                .fetch_watermarks(&self.topic, p, TIMEOUT)
                .map_err(|e| self.fail("looking up where the topic ends", e))?;
            ends.insert(p.to_string(), high.into());
        }
        let bytes = serde_json::Value::Object(ends).to_string();
        let ctx = || format!("writing '{}'", progress.display());
        let mut f = std::fs::File::create(progress).map_err(|e| ConnectorError::io(ctx(), e))?;
        std::io::Write::write_all(&mut f, bytes.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| ConnectorError::io(ctx(), e))?;
        if let Some(dir) = progress.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| ConnectorError::io(format!("fsync '{}'", dir.display()), e))?;
        }
        Ok(())
    }

    /// The numbers of the records of transaction `tag` that a `read_committed` reader
    /// sees after `from` once every earlier attempt at it is settled: none on a broker
    /// that hides aborted transactions.
    ///
    /// Earlier attempts are found first at `read_uncommitted` (every record, whatever
    /// its transaction's fate); then the `read_committed` reader must have moved past
    /// the last of them. A broker may answer an attempt's commit before it settles it
    /// (tansu 0.6 leaves a commit that overlaps another open transaction pending, commit
    /// markers included, until a later one settles both): read before, the attempt's
    /// records would be missing from the answer, written again, and shown twice once the
    /// broker settles it.
    fn already_visible(
        &self,
        from: &[(i32, i64)],
        tag: &str,
    ) -> Result<HashSet<u64>, ConnectorError> {
        let (earlier, last) = self.read_tagged(from, tag, "read_uncommitted", None)?;
        if earlier.is_empty() {
            return Ok(earlier);
        }
        Ok(self
            .read_tagged(from, tag, "read_committed", Some(&last))?
            .0)
    }

    /// Reads the topic from `from` at `isolation` and returns the numbers of the records
    /// of transaction `tag`, with the offset of the last such record per partition. It
    /// reads to the end of each partition, or with `past`, until the reader's position
    /// is beyond the given offset of each of those partitions (however long the broker
    /// takes to settle the transactions before it, up to [`SETTLE_TIMEOUT`]).
    fn read_tagged(
        &self,
        from: &[(i32, i64)],
        tag: &str,
        isolation: &str,
        past: Option<&HashMap<i32, i64>>,
    ) -> Result<(HashSet<u64>, HashMap<i32, i64>), ConnectorError> {
        let consumer: BaseConsumer<Quiet> = self
            .config
            .client()
            .set("group.id", format!("{}-read-back", self.prefix))
            .set("enable.auto.commit", "false")
            .set("isolation.level", isolation)
            .set("enable.partition.eof", "true")
            .create_with_context(Quiet::new(&self.config, &self.table))
            .map_err(|e| self.fail("creating a consumer to read back", e))?;
        let mut tpl = TopicPartitionList::new();
        for &(p, o) in from {
            if past.is_none_or(|past| past.contains_key(&p)) {
                tpl.add_partition_offset(&self.topic, p, Offset::Offset(o))
                    .map_err(|e| self.fail("reading back", e))?;
            }
        }
        consumer
            .assign(&tpl)
            .map_err(|e| self.fail("reading back", e))?;
        let mut open: HashSet<i32> = match past {
            Some(past) => past.keys().copied().collect(),
            None => from.iter().map(|&(p, _)| p).collect(),
        };
        let ours = format!("{tag}/");
        let mut seen = HashSet::new();
        let mut last = HashMap::new();
        let deadline = std::time::Instant::now()
            + if past.is_some() {
                SETTLE_TIMEOUT
            } else {
                TIMEOUT
            };
        while !open.is_empty() {
            if std::time::Instant::now() > deadline {
                let what = if past.is_some() {
                    "the Kafka brokers have not settled an earlier attempt at this transaction in 15 s \
                     (another transaction that overlaps it is still open)"
                } else {
                    "timed out"
                };
                return Err(self.fail("reading back what an interrupted transaction left", what));
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) if past.is_none() => {
                    open.remove(&p);
                }
                Some(Err(_)) => {} // the client retries; the deadline bounds it
                Some(Ok(m)) => {
                    let number = m.headers().and_then(|h| {
                        h.iter()
                            .find(|h| h.key == TXN_HEADER)
                            .and_then(|h| std::str::from_utf8(h.value?).ok())
                            .and_then(|v| v.strip_prefix(&ours)?.parse::<u64>().ok())
                    });
                    if let Some(n) = number {
                        seen.insert(n);
                        last.insert(m.partition(), m.offset());
                    }
                }
            }
            if let Some(past) = past {
                // The position moves past data and transaction markers alike (records of
                // aborted transactions the client skips are followed by their marker).
                let at = consumer
                    .position()
                    .map_err(|e| self.fail("reading back", e))?;
                for e in at.elements() {
                    if let (Offset::Offset(o), Some(&end)) = (e.offset(), past.get(&e.partition()))
                        && o > end
                    {
                        open.remove(&e.partition());
                    }
                }
            }
        }
        Ok((seen, last))
    }

    /// The marker group of a subtask's run.
    fn marker_group(&self, subtask: usize, nonce: u64) -> String {
        format!("{}-{subtask}-{nonce:016x}", self.prefix)
    }

    /// Whether the marker group says checkpoint `checkpoint` of this run was committed.
    fn committed(&self, group: &str, checkpoint: u64) -> Result<bool, ConnectorError> {
        let consumer: BaseConsumer<Quiet> = self
            .config
            .client()
            .set("group.id", group)
            .create_with_context(Quiet::new(&self.config, &self.table))
            .map_err(|e| self.fail("creating a consumer for the commit marker", e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, 0);
        let got = consumer
            .committed_offsets(tpl, TIMEOUT)
            .map_err(|e| self.fail("reading the commit marker", e))?;
        Ok(matches!(
            got.find_partition(&self.topic, 0).map(|e| e.offset()),
            Some(Offset::Offset(n)) if n >= checkpoint as i64
        ))
    }
}

impl Apply for KafkaApply {
    fn apply(&self, txn: &Txn, sealed: &Path) -> Result<(), ConnectorError> {
        let bytes = std::fs::read(sealed)
            .map_err(|e| ConnectorError::io(format!("reading '{}'", sealed.display()), e))?;
        let (nonce, records) = log_txn::decode_flat(&bytes).ok_or_else(|| {
            ConnectorError::Other(format!("staged batch '{}' is damaged", sealed.display()))
        })?;
        let group = self.marker_group(txn.subtask, nonce);
        // The final batch's id is u64::MAX: as an offset, the largest one Kafka takes.
        let mark = txn.checkpoint.min(i64::MAX as u64);
        // Creating the producer first fences every earlier holder of the transactional id
        // and settles its open transaction (aborted, or committed if its commit had begun),
        // so that the marker read next is final: read before, a commit by a member that
        // just lost the task could land after it, and the batch would be written twice.
        let producer = self.producer(txn.subtask)?;
        if self.committed(&group, mark)? {
            return Ok(());
        }
        let tag = format!("{}-{}/{}", self.prefix, txn.subtask, txn.checkpoint);
        let progress = txn::progress_path(sealed);
        let shown = match read_ends(&progress) {
            Some(from) => {
                let shown = self.already_visible(&from, &tag)?;
                // Settled now: an earlier attempt whose commit was pending may have landed.
                if !shown.is_empty() && self.committed(&group, mark)? {
                    return Ok(());
                }
                shown
            }
            None => {
                self.note_ends(&producer, &progress)?;
                if let (Some(m), Some(name)) = (&self.mirror, sealed.file_name()) {
                    m.put(&txn::progress_copy(&name.to_string_lossy()), &progress)?;
                }
                HashSet::new()
            }
        };
        if !shown.is_empty() {
            tracing::warn!(table = %self.table, bootstrap = %self.config.bootstrap,
                checkpoint = txn.checkpoint, records = shown.len(),
                "the Kafka broker shows read_committed readers records of an aborted \
                 transaction; those records are not written again");
        }
        producer
            .begin_transaction()
            .map_err(|e| self.fail("beginning a transaction", e))?;
        let result = (|| {
            for (n, (p, r)) in records.iter().enumerate() {
                if shown.contains(&(n as u64)) {
                    continue;
                }
                let tag = format!("{tag}/{n}");
                let (value, headers) = payload(r);
                let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic);
                if let Some(v) = value {
                    record = record.payload(v);
                }
                if let Some(k) = &r.key {
                    record = record.key(&k[..]);
                }
                if *p != ANY_PARTITION {
                    record = record.partition(*p as i32);
                }
                if let Some(t) = r.event_time {
                    record = record.timestamp(t);
                }
                if let Some(h) = kafka_headers(&headers, Some(&tag)) {
                    record = record.headers(h);
                }
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            record = back;
                            producer.poll(Duration::from_millis(10));
                        }
                        Err((e, _)) => return Err(self.fail("writing a transaction", e)),
                    }
                }
            }
            // Everything is on the brokers (in the open transaction) before the marker.
            producer
                .flush(TIMEOUT)
                .map_err(|e| self.fail("writing a transaction", e))?;
            let consumer: BaseConsumer<Quiet> = self
                .config
                .client()
                .set("group.id", &group)
                .create_with_context(Quiet::new(&self.config, &self.table))
                .map_err(|e| self.fail("creating a consumer for the commit marker", e))?;
            let metadata = consumer.group_metadata().ok_or_else(|| {
                self.fail("the commit marker", "the client has no group metadata")
            })?;
            let mut marker = TopicPartitionList::new();
            marker
                .add_partition_offset(&self.topic, 0, Offset::Offset(mark as i64))
                .map_err(|e| self.fail("the commit marker", e))?;
            producer
                .send_offsets_to_transaction(&marker, &metadata, TIMEOUT)
                .map_err(|e| self.fail("adding the commit marker to the transaction", e))?;
            crash_point("mid-apply", txn.checkpoint);
            producer
                .commit_transaction(TIMEOUT)
                .map_err(|e| self.fail("committing a transaction", e))
        })();
        if result.is_err() {
            let _ = producer.abort_transaction(TIMEOUT);
            // A failed producer may be fenced or in an error state: start afresh next time.
            self.producers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&txn.subtask);
        }
        result
    }
}
