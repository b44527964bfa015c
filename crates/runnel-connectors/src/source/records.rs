//! Records of a log or a broker (key, value, headers, timestamps, partition, offset) into
//! rows: the value decoded by the table's format, metadata columns filled from the record,
//! and what cannot be read sent to the dead letters with topic, partition and offset.
//! Shared by the `log` and `kafka` sources.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use runnel_log::StoredRecord;

use crate::ConnectorError;
use crate::dead_letters::{DeadLetter, DeadLetterWriter, Location};
use crate::format::Reject;
use crate::format::csv::CsvDecoder;
use crate::format::json::JsonDecoder;
use crate::source::log::blocking;

/// A record metadata column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    /// The record's key.
    Key,
    /// The record's value, whole.
    Value,
    /// The headers, as a JSON object of strings.
    Headers,
    /// The event time given with the record, else its timestamp.
    EventTime,
    /// The partition it came from.
    Partition,
    /// Its offset.
    Offset,
    /// Its timestamp (append time in the log; the record timestamp in Kafka).
    IngestTime,
    /// The topic it came from.
    Topic,
}

impl Meta {
    /// The column a `format = 'raw'` log table (or a `json` one) fills by name.
    pub fn of(name: &str) -> Option<Meta> {
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
    pub fn accepts(self, dt: &DataType) -> bool {
        match self {
            Meta::Key | Meta::Value => matches!(dt, DataType::Utf8 | DataType::Binary),
            Meta::Topic => matches!(dt, DataType::Utf8),
            Meta::Headers => {
                matches!(dt, DataType::Utf8)
                    || matches!(
                        runnel_common::types::map_types(dt),
                        Some((DataType::Utf8, DataType::Binary | DataType::Utf8))
                    )
            }
            Meta::EventTime | Meta::IngestTime => matches!(
                dt,
                DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Int64
            ),
            Meta::Partition => matches!(dt, DataType::Int32 | DataType::Int64),
            Meta::Offset => matches!(dt, DataType::Int64),
        }
    }
}

/// The records' headers as a `MAP<STRING, BYTES>` (or `MAP<STRING, STRING>`) column.
fn headers_map(dt: &DataType, records: &[Read<'_>]) -> ArrayRef {
    let DataType::Map(entries, ordered) = dt else {
        return arrow::array::new_null_array(dt, records.len());
    };
    let DataType::Struct(fields) = entries.data_type() else {
        return arrow::array::new_null_array(dt, records.len());
    };
    let all: Vec<&(String, Vec<u8>)> = records.iter().flat_map(|(_, r)| &r.headers).collect();
    let keys: ArrayRef = Arc::new(StringArray::from_iter_values(all.iter().map(|(k, _)| k)));
    let values: ArrayRef = match fields.get(1).map(|f| f.data_type()) {
        Some(DataType::Utf8) => Arc::new(StringArray::from_iter_values(
            all.iter().map(|(_, v)| String::from_utf8_lossy(v)),
        )),
        _ => Arc::new(BinaryArray::from_iter_values(all.iter().map(|(_, v)| v))),
    };
    let mut offsets = Vec::with_capacity(records.len() + 1);
    offsets.push(0i32);
    let mut at = 0i32;
    for (_, r) in records {
        at += r.headers.len() as i32;
        offsets.push(at);
    }
    let built = arrow::array::StructArray::try_new(fields.clone(), vec![keys, values], None)
        .and_then(|entries_array| {
            arrow::array::MapArray::try_new(
                entries.clone(),
                arrow::buffer::OffsetBuffer::new(offsets.into()),
                entries_array,
                None,
                *ordered,
            )
        });
    match built {
        Ok(m) => Arc::new(m),
        Err(_) => arrow::array::new_null_array(dt, records.len()),
    }
}

/// One record with the partition it came from.
pub type Read<'a> = (u32, &'a StoredRecord);

/// Builds column `meta` of type `dt` (accepted by [`Meta::accepts`]) from `records` of
/// `topic`.
pub fn meta_array(meta: Meta, dt: &DataType, records: &[Read<'_>], topic: &str) -> ArrayRef {
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
        Meta::Headers if matches!(dt, DataType::Map(..)) => headers_map(dt, records),
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
        Meta::Topic => Arc::new(StringArray::from_iter_values(
            records.iter().map(|_| topic.to_string()),
        )),
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

/// How a record's value becomes a row.
pub enum ValueFormat {
    /// One JSON object per value.
    Json(JsonDecoder),
    /// One CSV line per value (no header; the columns in declaration order).
    Csv(CsvDecoder),
    /// No decoding: every column is metadata (the value itself among them).
    Raw,
}

/// Decodes records of one table into batches of its schema.
pub struct RecordDecoder {
    /// Table name, for messages.
    pub table: String,
    schema: SchemaRef,
    /// For each column, the metadata it is built or filled from.
    columns: Vec<Option<Meta>>,
    /// Metadata replaces what the value says (`METADATA` columns); else it only fills
    /// the column where the value left it null (the log's by-name columns).
    replace: bool,
    format: ValueFormat,
    dead: Arc<DeadLetterWriter>,
    warned_reject: bool,
}

impl RecordDecoder {
    /// A decoder for `schema`.
    pub fn new(
        table: String,
        schema: SchemaRef,
        columns: Vec<Option<Meta>>,
        replace: bool,
        format: ValueFormat,
        dead: Arc<DeadLetterWriter>,
    ) -> Self {
        RecordDecoder {
            table,
            schema,
            columns,
            replace,
            format,
            dead,
            warned_reject: false,
        }
    }

    /// The table's columns.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Where rejected records go, for messages.
    pub fn dead_letters(&self) -> &Arc<DeadLetterWriter> {
        &self.dead
    }

    /// Turns records of `topic` into one batch; rejects go to the dead letters.
    ///
    /// # Errors
    /// The dead letters cannot be written, or a runnel bug assembling the batch.
    pub async fn decode(
        &mut self,
        topic: &str,
        records: &[Read<'_>],
    ) -> Result<Option<RecordBatch>, ConnectorError> {
        Ok(self.decode_kept(topic, records).await?.0)
    }

    /// As [`RecordDecoder::decode`], also saying which records became rows (in order).
    ///
    /// # Errors
    /// As [`RecordDecoder::decode`].
    pub async fn decode_kept(
        &mut self,
        topic: &str,
        records: &[Read<'_>],
    ) -> Result<(Option<RecordBatch>, Vec<bool>), ConnectorError> {
        if records.is_empty() {
            return Ok((None, Vec::new()));
        }
        // Blank values are rejected here so that decoded rows match the non-rejected records.
        let mut rejects: Vec<Reject> = Vec::new();
        let decoded = match &mut self.format {
            ValueFormat::Raw => {
                let arrays: Vec<ArrayRef> = self
                    .schema
                    .fields()
                    .iter()
                    .zip(&self.columns)
                    .map(|(f, m)| {
                        meta_array(m.unwrap_or(Meta::Value), f.data_type(), records, topic)
                    })
                    .collect();
                let batch = RecordBatch::try_new(self.schema.clone(), arrays)?;
                return Ok((Some(batch), vec![true; records.len()]));
            }
            ValueFormat::Json(decoder) => {
                rejects.extend(
                    records
                        .iter()
                        .enumerate()
                        .filter(|(_, (_, r))| r.value.iter().all(u8::is_ascii_whitespace))
                        .map(|(i, (_, r))| Reject {
                            line: i + 1,
                            reason: "empty record value; expected a JSON object".into(),
                            raw: r.value.clone(),
                        }),
                );
                decoder.decode_lines(
                    records
                        .iter()
                        .enumerate()
                        .map(|(i, (_, r))| (i + 1, r.value.as_slice())),
                )?
            }
            ValueFormat::Csv(decoder) => {
                let mut lines = Vec::with_capacity(records.len());
                for (i, (_, r)) in records.iter().enumerate() {
                    match csv_line(&r.value, i + 1) {
                        Ok(line) => lines.push(line),
                        Err(reason) => rejects.push(Reject {
                            line: i + 1,
                            reason,
                            raw: r.value.clone(),
                        }),
                    }
                }
                decoder.decode_records(lines.iter())?
            }
        };
        rejects.extend(decoded.rejects);
        let mut kept = vec![true; records.len()];
        let mut dead = Vec::with_capacity(rejects.len());
        for r in rejects {
            let Some((p, rec)) = records.get(r.line.wrapping_sub(1)) else {
                continue;
            };
            kept[r.line - 1] = false;
            // Keep the whole original value, not the decoder's trimmed copy.
            let mut letter = DeadLetter::new(
                Location::Topic {
                    topic: topic.to_string(),
                    partition: *p,
                    offset: rec.offset,
                },
                r.reason,
                rec.value.clone(),
            );
            letter.time_ms = rec.event_time.unwrap_or(rec.timestamp);
            dead.push(letter);
        }
        if !dead.is_empty() {
            if !self.warned_reject {
                self.warned_reject = true;
                if let Some(d) = dead.first() {
                    tracing::warn!(table = %self.table, dead_letters = %self.dead.target(),
                        "record {} rejected: {} (further rejects are counted, not logged)",
                        d.location, d.reason);
                }
            }
            let dl = self.dead.clone();
            blocking("writing dead letters", move || dl.write(&dead)).await?;
        }
        let Some(batch) = decoded.batch else {
            return Ok((None, kept));
        };
        if self.columns.iter().all(Option::is_none) {
            return Ok((Some(batch), kept));
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
            if !self.replace && arrays[i].null_count() == 0 {
                continue;
            }
            let meta = meta_array(*m, f.data_type(), &rows, topic);
            arrays[i] = if self.replace {
                meta
            } else {
                let present = arrow::compute::is_not_null(arrays[i].as_ref())?;
                arrow::compute::kernels::zip::zip(&present, &arrays[i], &meta)?
            };
        }
        Ok((
            Some(RecordBatch::try_new(self.schema.clone(), arrays)?),
            kept,
        ))
    }
}

/// One record value as one CSV record, numbered `line` for its reject.
fn csv_line(value: &[u8], line: usize) -> Result<csv::ByteRecord, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(value);
    let mut record = csv::ByteRecord::new();
    match reader.read_byte_record(&mut record) {
        Ok(true) => {
            let mut pos = csv::Position::new();
            pos.set_line(line as u64);
            record.set_position(Some(pos));
            Ok(record)
        }
        Ok(false) => Err("empty record value; expected a CSV line".into()),
        Err(e) => Err(format!("not a CSV line: {e}")),
    }
}

/// The columns of a message table decoded from the payload (all but its METADATA ones).
pub fn value_columns(spec: &runnel_common::TableSpec) -> Vec<usize> {
    (0..spec.schema.fields().len())
        .filter(|i| spec.metadata_of(*i).is_none())
        .collect()
}

/// `base` with only letters, digits, `-` and `_` (client ids and consumer names).
pub fn safe_id(base: &str) -> String {
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The payload decoder of a message table (`mqtt`, `nats`): `format` (`json`, `csv` or
/// `raw`) over its value columns, rejects to the table's dead letters.
///
/// # Errors
/// The value columns cannot be decoded in that format.
pub fn payload_decoder(
    spec: &runnel_common::TableSpec,
    format: &str,
    ctx: &crate::SourceContext,
) -> Result<RecordDecoder, ConnectorError> {
    let values = value_columns(spec);
    let schema: SchemaRef = Arc::new(arrow::datatypes::Schema::new(
        values
            .iter()
            .map(|&i| spec.schema.field(i).clone())
            .collect::<Vec<_>>(),
    ));
    let decode = match format {
        "csv" => ValueFormat::Csv(CsvDecoder::try_new(
            schema.clone(),
            &csv::ByteRecord::from(
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>(),
            ),
        )?),
        "raw" => ValueFormat::Raw,
        _ => ValueFormat::Json(JsonDecoder::try_new(schema.clone())?),
    };
    let columns = schema
        .fields()
        .iter()
        .map(|_| (format == "raw").then_some(Meta::Value))
        .collect();
    let dead = ctx.dead_letters.writer(
        &spec.name,
        crate::dead_letters::own_target(spec),
        crate::dead_letters::Target::File(
            ctx.data_dir
                .join("dead-letters")
                .join(format!("{}.jsonl", spec.name)),
        ),
        &ctx.metrics,
    );
    Ok(RecordDecoder::new(
        spec.name.clone(),
        schema,
        columns,
        true,
        decode,
        dead,
    ))
}

/// For each column of a message table: its index among the value columns, or `None`
/// for a METADATA column.
pub fn value_positions(spec: &runnel_common::TableSpec) -> Vec<Option<usize>> {
    let values = value_columns(spec);
    (0..spec.schema.fields().len())
        .map(|i| values.iter().position(|v| *v == i))
        .collect()
}

/// A batch of `schema` from its columns, each cast to its declared type if it differs
/// (metadata columns are built in one type per key).
///
/// # Errors
/// A column cannot be cast (a runnel bug: validation checked the types).
pub fn assemble(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch, ConnectorError> {
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                arrow::compute::cast(&c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A `format = 'raw'` message table has one value column, `value`.
///
/// # Errors
/// It has other (non-METADATA) columns; `what` names the connector in the message.
pub fn check_raw_layout(spec: &runnel_common::TableSpec, what: &str) -> Result<(), ConnectorError> {
    let values: Vec<&str> = value_columns(spec)
        .iter()
        .map(|&i| spec.schema.field(i).name().as_str())
        .collect();
    if values == ["value"] {
        return Ok(());
    }
    Err(ConnectorError::Other(format!(
        "table '{}': a format = 'raw' {what} table has one column `value` (STRING or BYTES) \
         besides its METADATA columns",
        spec.name
    )))
}

/// Up to `max` items from `rx`, waiting at most `wait` (for a source's `poll`); `None`
/// once the sender is gone.
pub async fn recv_batch<T>(
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    max: usize,
    wait: std::time::Duration,
) -> Option<Vec<T>> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < max {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(item)) => got.push(item),
            Ok(None) => return None,
            Err(_) => break,
        }
    }
    Some(got)
}

/// What a source must acknowledge upstream, by the checkpoint that covers it: items read
/// since the last barrier are held, a barrier assigns them to its checkpoint, and a
/// completed checkpoint releases its items and every earlier one's.
#[derive(Debug)]
pub struct AckBook<T> {
    pending: Vec<T>,
    covered: std::collections::BTreeMap<u64, Vec<T>>,
}

impl<T> Default for AckBook<T> {
    fn default() -> Self {
        AckBook {
            pending: Vec::new(),
            covered: std::collections::BTreeMap::new(),
        }
    }
}

impl<T> AckBook<T> {
    /// Items read since the last barrier.
    pub fn hold(&mut self, items: impl IntoIterator<Item = T>) {
        self.pending.extend(items);
    }

    /// Checkpoint `checkpoint`'s barrier: the held items are its.
    pub fn barrier(&mut self, checkpoint: u64) {
        if !self.pending.is_empty() {
            self.covered
                .insert(checkpoint, std::mem::take(&mut self.pending));
        }
    }

    /// Checkpoint `checkpoint` completed: the items to acknowledge now.
    pub fn complete(&mut self, checkpoint: u64) -> Vec<T> {
        let later = self.covered.split_off(&(checkpoint.saturating_add(1)));
        std::mem::replace(&mut self.covered, later)
            .into_values()
            .flatten()
            .collect()
    }
}
