//! `log` sink: appends rows to a topic of runnel's embedded durable log.
//!
//! `format = 'json'` (default): one record per row whose value is the row as a JSON object
//! (header `content-type: application/json`). A column named `key` becomes the record key
//! (the record goes to the key's partition, as Kafka would place it); without one, rows are
//! spread round robin. A column named `event_time` (TIMESTAMP(3) or BIGINT ms) becomes the
//! record's event time.
//!
//! `format = 'raw'`: the table declares `value` (BYTES or STRING, required) and optionally
//! `key`, `headers` (STRING holding a JSON object) and `event_time`; the record is built
//! from them as they are.
//!
//! The topic is created with `partitions` partitions (default 1) if it does not exist.
//! Each `write` makes one durable (fsynced) append per partition, on blocking threads, so
//! `finish` has nothing left to do. In a checkpointed pipeline rows are appended only when
//! the checkpoint covering them completes, exactly once (see `log_txn`). The options are those of the `log` source
//! ([`crate::source::log::OPTIONS`]); the reading ones are ignored here.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use runnel_common::TableSpec;
use runnel_common::metrics::ConnectorMetrics;
use runnel_common::types::sql_name;
use runnel_log::{Record, Topic};

use crate::format::json::JsonEncoder;
use crate::sink::log_txn::{self, LogApply};
use crate::source::log::{
    LogConfig, LogFormat, blocking, embedded_log, log_error, open_or_create_topic,
};
use crate::txn::{self, Staging};
use crate::{ConnectorError, Sink, SinkContext};

/// Validates options and columns, opens (or creates) the topic and returns one subtask per context.
///
/// # Errors
/// Unknown or invalid options, raw columns of the wrong name or type, no embedded log,
/// or a log error while creating the topic.
pub fn build(
    spec: &TableSpec,
    contexts: Vec<SinkContext>,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
    let config = LogConfig::try_new(spec)?;
    let Some(first) = contexts.first() else {
        return Ok(Vec::new());
    };
    let log = embedded_log(&spec.name, first.log.as_ref())?;
    let find = |name: &str| {
        spec.schema
            .fields()
            .iter()
            .position(|f| f.name().eq_ignore_ascii_case(name))
    };
    let is_time = |i: usize| {
        matches!(
            spec.schema.field(i).data_type(),
            DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Int64
        )
    };
    let bad = |i: usize, reason: &str| ConnectorError::Type {
        table: spec.name.clone(),
        column: spec.schema.field(i).name().clone(),
        data_type: sql_name(spec.schema.field(i).data_type()),
        reason: reason.to_string(),
    };
    let mut columns = Columns {
        key: find("key"),
        event_time: find("event_time"),
        value: None,
        headers: None,
    };
    match config.format {
        LogFormat::Json => {
            if let Some(i) = columns.event_time.filter(|&i| !is_time(i)) {
                tracing::warn!(table = %spec.name, "column event_time has type {}, not TIMESTAMP(3) or BIGINT; records get no event time",
                    sql_name(spec.schema.field(i).data_type()));
                columns.event_time = None;
            }
        }
        LogFormat::Raw => {
            for (i, f) in spec.schema.fields().iter().enumerate() {
                let dt = f.data_type();
                match f.name().to_ascii_lowercase().as_str() {
                    "key" | "value" if matches!(dt, DataType::Utf8 | DataType::Binary) => {}
                    "headers" if matches!(dt, DataType::Utf8) => {}
                    "event_time" if is_time(i) => {}
                    "key" | "value" | "headers" | "event_time" => {
                        return Err(bad(
                            i,
                            "cannot be written by a format = 'raw' log sink; use key STRING|BYTES, \
                             value BYTES|STRING, headers STRING, event_time TIMESTAMP(3)|BIGINT",
                        ));
                    }
                    _ => {
                        return Err(bad(
                            i,
                            "is not a column of a format = 'raw' log sink; its columns can be: \
                             key, value, headers, event_time",
                        ));
                    }
                }
            }
            columns.value = find("value");
            columns.headers = find("headers");
            if columns.value.is_none() {
                return Err(ConnectorError::Other(format!(
                    "table '{}': a format = 'raw' log sink needs a column `value` (BYTES or STRING)",
                    spec.name
                )));
            }
        }
    }
    let topic = open_or_create_topic(&log, &spec.name, &config.topic, config.partitions)?;
    let (stage_dir, safe) = log_txn::staging_dir(&first.data_dir, &spec.name);
    let apply = Arc::new(LogApply::new(log.clone(), topic.clone(), &safe));
    if let Some(mode) = first.checkpoint {
        let mirror = first.sealed.as_deref();
        txn::recover_with(&stage_dir, "", apply.as_ref(), mode, mirror)?;
    }
    let mut sinks: Vec<Box<dyn Sink>> = Vec::with_capacity(contexts.len());
    for ctx in contexts {
        let staging = ctx.checkpoint.map(|_| {
            Staging::new(
                stage_dir.clone(),
                "",
                ctx.subtask,
                log_txn::header(),
                apply.clone(),
            )
            .with_mirror(ctx.sealed.clone())
            .with_attempt(ctx.checkpoint.and_then(|m| m.attempt))
        });
        sinks.push(Box::new(LogSink {
            table: spec.name.clone(),
            topic: topic.clone(),
            format: config.format,
            columns: columns.clone(),
            metrics: ctx.metrics,
            buf: Vec::new(),
            staging,
            staged: Vec::new(),
        }));
    }
    Ok(sinks)
}

/// Indices of the columns the record is built from.
#[derive(Debug, Clone)]
struct Columns {
    key: Option<usize>,
    event_time: Option<usize>,
    value: Option<usize>,
    headers: Option<usize>,
}

/// A sink subtask appending to the topic.
pub struct LogSink {
    table: String,
    topic: Arc<Topic>,
    format: LogFormat,
    columns: Columns,
    metrics: ConnectorMetrics,
    buf: Vec<u8>,
    /// Exactly-once staging, when the pipeline checkpoints.
    staging: Option<Staging>,
    /// Reused buffer of staged record bytes.
    staged: Vec<u8>,
}

/// Bytes of row `i` of a key or value column (`None` for null).
fn bytes_at(col: &dyn Array, fmt: Option<&ArrayFormatter<'_>>, i: usize) -> Option<Vec<u8>> {
    if col.is_null(i) {
        return None;
    }
    match col.data_type() {
        DataType::Utf8 => Some(col.as_string::<i32>().value(i).as_bytes().to_vec()),
        DataType::Binary => Some(col.as_binary::<i32>().value(i).to_vec()),
        _ => fmt.map(|f| f.value(i).to_string().into_bytes()),
    }
}

/// Milliseconds of row `i` of a TIMESTAMP(3) or BIGINT column.
pub(crate) fn time_at(col: &dyn Array, i: usize) -> Option<i64> {
    if col.is_null(i) {
        return None;
    }
    match col.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Some(col.as_primitive::<TimestampMillisecondType>().value(i))
        }
        DataType::Int64 => Some(col.as_primitive::<Int64Type>().value(i)),
        _ => None,
    }
}

impl LogSink {
    /// One record per row of `batch`.
    fn records(&mut self, batch: &RecordBatch) -> Result<Vec<Record>, ConnectorError> {
        let rows = batch.num_rows();
        let key_col = self.columns.key.map(|i| batch.column(i).as_ref());
        let key_fmt = key_col
            .map(|c| ArrayFormatter::try_new(c, &FormatOptions::default()))
            .transpose()?;
        let time_col = self.columns.event_time.map(|i| batch.column(i).as_ref());
        let mut out = Vec::with_capacity(rows);
        match self.format {
            LogFormat::Json => {
                self.buf.clear();
                JsonEncoder.encode(batch, &mut self.buf)?;
                // The encoder escapes newlines inside strings: each line is one row.
                let lines = self.buf.split(|b| *b == b'\n').filter(|l| !l.is_empty());
                for (i, line) in lines.enumerate() {
                    out.push(Record {
                        key: key_col.and_then(|c| bytes_at(c, key_fmt.as_ref(), i)),
                        value: line.to_vec(),
                        headers: vec![("content-type".into(), b"application/json".to_vec())],
                        event_time: time_col.and_then(|c| time_at(c, i)),
                    });
                }
                if out.len() != rows {
                    return Err(ConnectorError::Other(format!(
                        "runnel bug (please report): the JSON encoder wrote {} lines for {rows} rows",
                        out.len()
                    )));
                }
            }
            LogFormat::Raw => {
                let value_col = self.columns.value.map(|i| batch.column(i).as_ref());
                let headers_col = self.columns.headers.map(|i| batch.column(i).as_ref());
                for i in 0..rows {
                    let headers = match headers_col.and_then(|c| bytes_at(c, None, i)) {
                        Some(text) => parse_headers(&self.table, &text)?,
                        None => Vec::new(),
                    };
                    out.push(Record {
                        key: key_col.and_then(|c| bytes_at(c, key_fmt.as_ref(), i)),
                        value: value_col
                            .and_then(|c| bytes_at(c, None, i))
                            .unwrap_or_default(),
                        headers,
                        event_time: time_col.and_then(|c| time_at(c, i)),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Headers from a JSON object's text: string values as they are, others as JSON text.
pub(crate) fn parse_headers(
    table: &str,
    text: &[u8],
) -> Result<Vec<(String, Vec<u8>)>, ConnectorError> {
    match serde_json::from_slice::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map
            .into_iter()
            .map(|(k, v)| {
                let bytes = match v {
                    serde_json::Value::String(s) => s.into_bytes(),
                    other => other.to_string().into_bytes(),
                };
                (k, bytes)
            })
            .collect()),
        _ => Err(ConnectorError::Other(format!(
            "table '{table}': column headers must hold a JSON object, got {}",
            String::from_utf8_lossy(text)
        ))),
    }
}

/// Appends each partition's records (split when very large); blocking and durable.
fn append_all(topic: &Topic, per_partition: Vec<Vec<Record>>) -> Result<(), ConnectorError> {
    let append = |p: usize, records: Vec<Record>| -> Result<(), ConnectorError> {
        let part = topic.partition(p as u32).ok_or_else(|| {
            ConnectorError::Other(format!(
                "runnel bug (please report): partition {p} of topic '{}' is missing",
                topic.name()
            ))
        })?;
        log_txn::append_chunked(part, records)
            .map_err(|e| log_error(format!("appending to {}/{p}", topic.name()), e))
    };
    let mut jobs: Vec<(usize, Vec<Record>)> = per_partition
        .into_iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .collect();
    if jobs.len() <= 1 {
        return match jobs.pop() {
            Some((p, records)) => append(p, records),
            None => Ok(()),
        };
    }
    // Partitions fsync separate files: append to them in parallel.
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(p, records)| s.spawn(move || append(p, records)))
            .collect();
        let mut result = Ok(());
        for h in handles {
            let r = h.join().unwrap_or_else(|_| {
                Err(ConnectorError::Other(
                    "runnel bug (please report): a log append thread panicked".into(),
                ))
            });
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

#[async_trait]
impl Sink for LogSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let records = self.records(&batch)?;
        let bytes: u64 = records.iter().map(|r| r.data_len() as u64).sum();
        let n = self.topic.partition_count().max(1) as usize;
        let mut per_partition: Vec<Vec<Record>> = (0..n).map(|_| Vec::new()).collect();
        for r in records {
            let p = self.topic.partition_for(r.key.as_deref()) as usize;
            if let Some(v) = per_partition.get_mut(p) {
                v.push(r);
            }
        }
        self.metrics.rows.add(rows as u64);
        self.metrics.bytes.add(bytes);
        if let Some(staging) = self.staging.as_mut() {
            // Exactly once: staged until the checkpoint covering them completes.
            self.staged.clear();
            for (p, records) in per_partition.iter().enumerate() {
                for r in records {
                    log_txn::encode(p as u32, r, &mut self.staged);
                }
            }
            return staging.write(&self.staged);
        }
        let topic = self.topic.clone();
        let table = self.table.clone();
        blocking("appending to the log", move || {
            append_all(&topic, per_partition)
                .map_err(|e| ConnectorError::Other(format!("table '{table}': {e}")))
        })
        .await
    }

    async fn pre_commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        match self.staging.as_mut() {
            Some(s) => s.seal(checkpoint),
            None => Ok(()),
        }
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        let Some(staging) = self.staging.take() else {
            return Ok(());
        };
        // Appending fsyncs: off the async threads.
        let (staging, result) = blocking_with(staging, move |s| s.commit(checkpoint)).await?;
        self.staging = Some(staging);
        result
    }

    async fn finish(&mut self) -> Result<(), ConnectorError> {
        // Without checkpoints every write was appended already. With them, the input's end
        // is covered by a final checkpoint; anything staged since is appended now.
        let Some(staging) = self.staging.take() else {
            return Ok(());
        };
        blocking_with(staging, Staging::finish).await?.1
    }
}

/// Runs `f` on `staging` on a blocking thread and hands the staging back.
pub(crate) async fn blocking_with(
    mut staging: Staging,
    f: impl FnOnce(&mut Staging) -> Result<(), ConnectorError> + Send + 'static,
) -> Result<(Staging, Result<(), ConnectorError>), ConnectorError> {
    tokio::task::spawn_blocking(move || {
        let r = f(&mut staging);
        (staging, r)
    })
    .await
    .map_err(|e| {
        ConnectorError::Other(format!(
            "runnel bug (please report): a log commit task failed: {e}"
        ))
    })
}
