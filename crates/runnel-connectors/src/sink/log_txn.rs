//! The apply step of the `log` sink in a checkpointed pipeline, on the
//! transactional-sink mechanism ([`crate::txn`]).
//!
//! Rows are staged under `<data-dir>/sink-staging/<table>/` (a nonce, then one frame per
//! record with its partition). Applying a sealed batch appends its records to their
//! partitions, idempotently per partition: first the partition's end offset is recorded
//! in the consumer group `__runnel-sink.<table>.<subtask>.from`, and every record carries
//! the header `x-runnel-txn: <table>.<subtask>/<checkpoint>/<nonce>`. Applying again
//! (after a crash part-way) first looks for that header after the recorded offset and
//! skips partitions that have it. The nonce is new for every run, so a run started from
//! scratch never mistakes its checkpoint 1 for an earlier run's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use runnel_common::fault::crash_point;
use runnel_log::{Log, Record, Topic};

use crate::ConnectorError;
use crate::source::log::log_error;
use crate::txn::{Apply, Txn};

/// Header naming the batch a record was committed with.
pub const TXN_HEADER: &str = "x-runnel-txn";

/// Appends sealed batches to the topic.
pub struct LogApply {
    log: Arc<Log>,
    topic: Arc<Topic>,
    id: String,
}

/// The staging directory of `table` under `data_dir`, and the table's name made safe for
/// file and group names.
pub fn staging_dir(data_dir: &Path, table: &str) -> (PathBuf, String) {
    let safe: String = table
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    (data_dir.join("sink-staging").join(&safe), safe)
}

impl LogApply {
    /// The apply step of `table` (its safe name, from [`staging_dir`]) writing to `topic`.
    pub fn new(log: Arc<Log>, topic: Arc<Topic>, safe_table: &str) -> Self {
        LogApply {
            log,
            topic,
            id: safe_table.to_string(),
        }
    }

    fn offsets_group(&self, subtask: usize) -> String {
        format!("__runnel-sink.{}.{subtask}.from", self.id)
    }
}

impl Apply for LogApply {
    fn apply(&self, txn: &Txn, sealed: &Path) -> Result<(), ConnectorError> {
        let bytes = std::fs::read(sealed)
            .map_err(|e| ConnectorError::io(format!("reading '{}'", sealed.display()), e))?;
        let partitions = self.topic.partition_count().max(1) as usize;
        let (nonce, per_partition) = decode(&bytes, partitions).ok_or_else(|| {
            ConnectorError::Other(format!("staged batch '{}' is damaged", sealed.display()))
        })?;
        let topic = self.topic.name().to_string();
        let header = format!(
            "{}.{}/{}/{nonce:016x}",
            self.id, txn.subtask, txn.checkpoint
        )
        .into_bytes();
        let from_g = self.offsets_group(txn.subtask);
        let err = |what: String| move |e| log_error(what, e);
        for (p, mut records) in per_partition.into_iter().enumerate() {
            if records.is_empty() {
                continue;
            }
            let p32 = p as u32;
            let part = self.topic.partition(p32).ok_or_else(|| {
                ConnectorError::Other(format!("topic '{topic}' has no partition {p}"))
            })?;
            if let Some(from) = self.log.committed_offset(&from_g, &topic, p32)
                && contains(part, from, &header)?
            {
                continue;
            }
            self.log
                .commit_offset(&from_g, &topic, p32, part.end_offset())
                .map_err(err(format!("recording a commit of {topic}/{p}")))?;
            for r in &mut records {
                r.headers.push((TXN_HEADER.to_string(), header.clone()));
            }
            append_chunked(part, records).map_err(err(format!("appending to {topic}/{p}")))?;
            crash_point("mid-apply", txn.checkpoint);
        }
        Ok(())
    }
}

/// Appends of one partition are split beyond about this many bytes (frames are capped).
const MAX_APPEND_BYTES: usize = 64 << 20;

/// Appends `records` to `part` durably, split into appends of about
/// [`MAX_APPEND_BYTES`] (frames are capped).
pub(crate) fn append_chunked(
    part: &runnel_log::Partition,
    records: Vec<Record>,
) -> Result<(), runnel_log::LogError> {
    let mut chunk = Vec::new();
    let mut size = 0;
    for r in records {
        size += r.data_len();
        chunk.push(r);
        if size >= MAX_APPEND_BYTES {
            part.append(std::mem::take(&mut chunk))?;
            size = 0;
        }
    }
    if !chunk.is_empty() {
        part.append(chunk)?;
    }
    Ok(())
}

/// Whether a record with header `txn` follows `from` in the partition.
fn contains(part: &runnel_log::Partition, from: u64, txn: &[u8]) -> Result<bool, ConnectorError> {
    let mut next = from.max(part.start_offset());
    while next < part.end_offset() {
        let recs = part
            .read(next, 10_000, 64 << 20)
            .map_err(|e| log_error("checking an earlier commit", e))?;
        let Some(last) = recs.last() else { break };
        next = last.offset + 1;
        if recs.iter().any(|r| {
            r.headers
                .iter()
                .any(|(k, v)| k == TXN_HEADER && v.as_slice() == txn)
        }) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A new staging file's first bytes: a nonce unique to this run and subtask.
pub fn header() -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let nonce = nanos ^ (u64::from(std::process::id()) << 32);
    nonce.to_le_bytes().to_vec()
}

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// One staged record: `u32 partition`, `u8 has key`, key, value, `u32 headers` (name,
/// value), `u8 has time`, `i64 time`; byte strings are `u32 length` + bytes.
pub fn encode(partition: u32, r: &Record, out: &mut Vec<u8>) {
    out.extend_from_slice(&partition.to_le_bytes());
    out.push(u8::from(r.key.is_some()));
    put(out, r.key.as_deref().unwrap_or_default());
    put(out, &r.value);
    out.extend_from_slice(&(r.headers.len() as u32).to_le_bytes());
    for (k, v) in &r.headers {
        put(out, k.as_bytes());
        put(out, v);
    }
    out.push(u8::from(r.event_time.is_some()));
    out.extend_from_slice(&r.event_time.unwrap_or(0).to_le_bytes());
}

/// The nonce and records of a staged batch, grouped by partition; `None` if damaged.
fn decode(bytes: &[u8], partitions: usize) -> Option<(u64, Vec<Vec<Record>>)> {
    let (nonce, records) = decode_flat(bytes)?;
    let mut out: Vec<Vec<Record>> = (0..partitions).map(|_| Vec::new()).collect();
    for (p, r) in records {
        out.get_mut(p as usize)?.push(r);
    }
    Some((nonce, out))
}

/// The nonce and the (partition, record) pairs of a staged batch, in order; `None` if
/// damaged.
pub fn decode_flat(bytes: &[u8]) -> Option<(u64, Vec<(u32, Record)>)> {
    let mut i = 0usize;
    let take = |i: &mut usize, n: usize| -> Option<&[u8]> {
        let s = bytes.get(*i..i.checked_add(n)?)?;
        *i += n;
        Some(s)
    };
    let u32_at =
        |i: &mut usize| -> Option<u32> { Some(u32::from_le_bytes(take(i, 4)?.try_into().ok()?)) };
    let blob = |i: &mut usize| -> Option<Vec<u8>> {
        let n = u32_at(i)? as usize;
        Some(take(i, n)?.to_vec())
    };
    let nonce = u64::from_le_bytes(take(&mut i, 8)?.try_into().ok()?);
    let mut out = Vec::new();
    while i < bytes.len() {
        let p = u32_at(&mut i)?;
        let has_key = take(&mut i, 1)?[0] == 1;
        let key = blob(&mut i)?;
        let value = blob(&mut i)?;
        let h = u32_at(&mut i)?;
        let mut headers = Vec::new();
        for _ in 0..h {
            let k = String::from_utf8(blob(&mut i)?).ok()?;
            headers.push((k, blob(&mut i)?));
        }
        let has_time = take(&mut i, 1)?[0] == 1;
        let t = i64::from_le_bytes(take(&mut i, 8)?.try_into().ok()?);
        out.push((
            p,
            Record {
                key: has_key.then_some(key),
                value,
                headers,
                event_time: has_time.then_some(t),
            },
        ));
    }
    Some((nonce, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{Staging, recover};

    #[test]
    fn staged_records_round_trip() {
        let r = Record {
            key: Some(b"k".to_vec()),
            value: b"{\"a\":1}".to_vec(),
            headers: vec![("h".into(), b"v".to_vec())],
            event_time: Some(42),
        };
        let mut bytes = 7u64.to_le_bytes().to_vec();
        encode(1, &r, &mut bytes);
        encode(0, &Record::from_value("x"), &mut bytes);
        let (nonce, parts) = decode(&bytes, 2).unwrap();
        assert_eq!(nonce, 7);
        assert_eq!(parts, vec![vec![Record::from_value("x")], vec![r]]);
        assert_eq!(decode(&bytes[..bytes.len() - 1], 2), None);
        assert_eq!(decode(&bytes, 1), None, "partition out of range");
    }

    #[test]
    fn an_apply_repeated_after_a_crash_appends_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), runnel_log::LogOptions::default()).unwrap());
        let topic = log
            .create_topic("out", runnel_log::TopicConfig::with_partitions(2))
            .unwrap();
        let (stage_dir, safe) = staging_dir(dir.path(), "t");
        let apply = Arc::new(LogApply::new(log.clone(), topic.clone(), &safe));
        recover(&stage_dir, "", apply.as_ref(), None).unwrap();
        let mut s = Staging::new(stage_dir.clone(), "", 0, header(), apply.clone());
        let mut bytes = Vec::new();
        encode(0, &Record::from_value("a"), &mut bytes);
        encode(1, &Record::from_value("b"), &mut bytes);
        s.write(&bytes).unwrap();
        s.seal(1).unwrap();
        // Apply, then crash before the sealed file is deleted: recovery applies again.
        let sealed = std::fs::read_dir(&stage_dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        apply
            .apply(
                &Txn {
                    subtask: 0,
                    checkpoint: 1,
                },
                &sealed,
            )
            .unwrap();
        drop(s);
        recover(&stage_dir, "", apply.as_ref(), Some(1)).unwrap();
        assert_eq!(topic.partition(0).unwrap().end_offset(), 1);
        assert_eq!(topic.partition(1).unwrap().end_offset(), 1);
        // A new run from scratch reuses checkpoint id 1: it is appended, not skipped.
        let mut s = Staging::new(stage_dir.clone(), "", 0, header(), apply.clone());
        s.write(&bytes).unwrap();
        s.seal(1).unwrap();
        s.commit(1).unwrap();
        assert_eq!(topic.partition(0).unwrap().end_offset(), 2);
        // Sealed rows of a checkpoint that did not complete are dropped at restart.
        s.write(&bytes).unwrap();
        s.seal(2).unwrap();
        drop(s);
        recover(&stage_dir, "", apply.as_ref(), Some(1)).unwrap();
        assert_eq!(topic.partition(0).unwrap().end_offset(), 2);
    }
}
