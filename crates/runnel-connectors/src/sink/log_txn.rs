//! Exactly-once for the `log` sink of a checkpointed pipeline.
//!
//! Rows are not appended as they arrive. At checkpoint `n`'s barrier the subtask writes
//! them durably to a staging file (`<data-dir>/sink-staging/<table>/<subtask>/<n>.staged`:
//! write, fsync, rename); once `n` is complete they are appended to the topic, so readers
//! only ever see rows of complete checkpoints. Applying is idempotent per partition:
//! before appending, the partition's end offset is recorded in the consumer group
//! `__runnel-sink.<table>.<subtask>.from`; every record carries the header
//! `x-runnel-txn: <table>/<subtask>/<n>`; afterwards `n` is recorded in
//! `….applied`. A crash between the two is resolved at restart by looking for the header
//! after the recorded offset.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use runnel_log::{Log, Record, Topic};

use crate::ConnectorError;
use crate::source::log::log_error;

/// Header naming the checkpoint a record was committed with.
pub const TXN_HEADER: &str = "x-runnel-txn";

/// One sink subtask's staging area and commit markers.
pub struct Txn {
    log: Arc<Log>,
    topic: Arc<Topic>,
    dir: PathBuf,
    id: String,
}

fn io(ctx: String) -> impl FnOnce(std::io::Error) -> ConnectorError {
    move |e| ConnectorError::io(ctx, e)
}

impl Txn {
    /// The staging area of `table`'s subtask `subtask` under `data_dir`.
    pub fn new(
        log: Arc<Log>,
        topic: Arc<Topic>,
        data_dir: &Path,
        table: &str,
        subtask: usize,
    ) -> Self {
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
        Txn {
            log,
            topic,
            dir: data_dir
                .join("sink-staging")
                .join(&safe)
                .join(subtask.to_string()),
            id: format!("{safe}.{subtask}"),
        }
    }

    fn group(&self, what: &str) -> String {
        format!("__runnel-sink.{}.{what}", self.id)
    }

    fn staged_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.staged"))
    }

    /// Checkpoint ids with a staged file, ascending.
    fn staged_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .strip_suffix(".staged")?
                            .parse()
                            .ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// Restart after checkpoint `restored`: applies staged rows of complete checkpoints,
    /// drops the rest (they are produced again).
    pub fn recover(&self, restored: Option<u64>) -> Result<(), ConnectorError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(io(format!("creating '{}'", self.dir.display())))?;
        for id in self.staged_ids() {
            match restored {
                Some(r) if id <= r => self.commit(id)?,
                _ => {
                    let p = self.staged_path(id);
                    std::fs::remove_file(&p).map_err(io(format!("removing '{}'", p.display())))?;
                }
            }
        }
        Ok(())
    }

    /// Pre-commit: makes `per_partition` durable as checkpoint `id`'s rows.
    pub fn stage(&self, id: u64, per_partition: &[Vec<Record>]) -> Result<(), ConnectorError> {
        if per_partition.iter().all(Vec::is_empty) {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(io(format!("creating '{}'", self.dir.display())))?;
        let fin = self.staged_path(id);
        let tmp = self.dir.join(format!(".{id}.tmp"));
        let bytes = encode(per_partition);
        let mut f = File::create(&tmp).map_err(io(format!("creating '{}'", tmp.display())))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(io(format!("writing '{}'", tmp.display())))?;
        std::fs::rename(&tmp, &fin).map_err(io(format!("renaming '{}'", tmp.display())))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("fsync '{}'", self.dir.display())))
    }

    /// Commit: appends every staged checkpoint up to `upto`, each exactly once.
    pub fn commit(&self, upto: u64) -> Result<(), ConnectorError> {
        for id in self.staged_ids().into_iter().filter(|id| *id <= upto) {
            let p = self.staged_path(id);
            let bytes = std::fs::read(&p).map_err(io(format!("reading '{}'", p.display())))?;
            let per_partition = decode(&bytes)
                .ok_or_else(|| ConnectorError::Other(format!("'{}' is damaged", p.display())))?;
            self.apply(id, per_partition)?;
            std::fs::remove_file(&p).map_err(io(format!("removing '{}'", p.display())))?;
        }
        Ok(())
    }

    /// Appends checkpoint `id`'s rows to each partition unless that was done already.
    pub fn apply(&self, id: u64, per_partition: Vec<Vec<Record>>) -> Result<(), ConnectorError> {
        let topic = self.topic.name().to_string();
        let txn = format!("{}/{id}", self.id).into_bytes();
        let (applied_g, from_g) = (self.group("applied"), self.group("from"));
        let err = |what: String| move |e| log_error(what, e);
        for (p, mut records) in per_partition.into_iter().enumerate() {
            if records.is_empty() {
                continue;
            }
            let p32 = p as u32;
            let part = self.topic.partition(p32).ok_or_else(|| {
                ConnectorError::Other(format!("topic '{topic}' has no partition {p}"))
            })?;
            if self
                .log
                .committed_offset(&applied_g, &topic, p32)
                .is_some_and(|a| a >= id)
            {
                continue;
            }
            let already = match self.log.committed_offset(&from_g, &topic, p32) {
                Some(from) => contains_txn(part, from, &txn)?,
                None => false,
            };
            if !already {
                self.log
                    .commit_offset(&from_g, &topic, p32, part.end_offset())
                    .map_err(err(format!("recording a commit of {topic}/{p}")))?;
                for r in &mut records {
                    r.headers.push((TXN_HEADER.to_string(), txn.clone()));
                }
                part.append(records)
                    .map_err(err(format!("appending to {topic}/{p}")))?;
            }
            self.log
                .commit_offset(&applied_g, &topic, p32, id)
                .map_err(err(format!("recording a commit of {topic}/{p}")))?;
        }
        Ok(())
    }
}

/// Whether a record with header `txn` follows `from` in the partition.
fn contains_txn(
    part: &runnel_log::Partition,
    from: u64,
    txn: &[u8],
) -> Result<bool, ConnectorError> {
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

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// `u32 partitions`, then per partition `u32 records`, each record: `u8 has key`,
/// key, value, `u32 headers` (name, value), `u8 has time`, `i64 time`.
fn encode(per_partition: &[Vec<Record>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(per_partition.len() as u32).to_le_bytes());
    for records in per_partition {
        out.extend_from_slice(&(records.len() as u32).to_le_bytes());
        for r in records {
            out.push(u8::from(r.key.is_some()));
            put(&mut out, r.key.as_deref().unwrap_or_default());
            put(&mut out, &r.value);
            out.extend_from_slice(&(r.headers.len() as u32).to_le_bytes());
            for (k, v) in &r.headers {
                put(&mut out, k.as_bytes());
                put(&mut out, v);
            }
            out.push(u8::from(r.event_time.is_some()));
            out.extend_from_slice(&r.event_time.unwrap_or(0).to_le_bytes());
        }
    }
    out
}

fn decode(bytes: &[u8]) -> Option<Vec<Vec<Record>>> {
    let mut i = 0usize;
    let take = |i: &mut usize, n: usize| -> Option<&[u8]> {
        let s = bytes.get(*i..*i + n)?;
        *i += n;
        Some(s)
    };
    let u32_at =
        |i: &mut usize| -> Option<u32> { Some(u32::from_le_bytes(take(i, 4)?.try_into().ok()?)) };
    let blob = |i: &mut usize| -> Option<Vec<u8>> {
        let n = u32_at(i)? as usize;
        Some(take(i, n)?.to_vec())
    };
    let parts = u32_at(&mut i)?;
    let mut out = Vec::with_capacity(parts as usize);
    for _ in 0..parts {
        let n = u32_at(&mut i)?;
        let mut records = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let has_key = take(&mut i, 1)?[0] == 1;
            let key = blob(&mut i)?;
            let value = blob(&mut i)?;
            let h = u32_at(&mut i)?;
            let mut headers = Vec::with_capacity(h as usize);
            for _ in 0..h {
                let k = String::from_utf8(blob(&mut i)?).ok()?;
                headers.push((k, blob(&mut i)?));
            }
            let has_time = take(&mut i, 1)?[0] == 1;
            let t = i64::from_le_bytes(take(&mut i, 8)?.try_into().ok()?);
            records.push(Record {
                key: has_key.then_some(key),
                value,
                headers,
                event_time: has_time.then_some(t),
            });
        }
        out.push(records);
    }
    (i == bytes.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_records_round_trip() {
        let recs = vec![
            vec![Record {
                key: Some(b"k".to_vec()),
                value: b"{\"a\":1}".to_vec(),
                headers: vec![("h".into(), b"v".to_vec())],
                event_time: Some(42),
            }],
            vec![],
            vec![Record::from_value("x")],
        ];
        let bytes = encode(&recs);
        assert_eq!(decode(&bytes), Some(recs));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn a_commit_is_applied_once_even_when_retried() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), runnel_log::LogOptions::default()).unwrap());
        let topic = log
            .create_topic("out", runnel_log::TopicConfig::with_partitions(2))
            .unwrap();
        let txn = Txn::new(log.clone(), topic.clone(), dir.path(), "t", 0);
        let rows = vec![vec![Record::from_value("a")], vec![Record::from_value("b")]];
        txn.stage(1, &rows).unwrap();
        txn.commit(1).unwrap();
        // A crash after the append but before `applied` was recorded: same rows again.
        log.commit_offset("__runnel-sink.t.0.applied", "out", 0, 0)
            .unwrap();
        txn.stage(1, &rows).unwrap();
        txn.recover(Some(1)).unwrap();
        assert_eq!(topic.partition(0).unwrap().end_offset(), 1);
        assert_eq!(topic.partition(1).unwrap().end_offset(), 1);
        // Staged rows of a checkpoint that did not complete are dropped.
        txn.stage(2, &rows).unwrap();
        txn.recover(Some(1)).unwrap();
        txn.commit(5).unwrap();
        assert_eq!(topic.partition(0).unwrap().end_offset(), 1);
    }
}
