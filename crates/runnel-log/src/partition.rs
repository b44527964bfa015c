//! `Partition`: append → offsets once durable, read from an offset, roll segments.
//!
//! Writers serialize on the write lock only long enough to encode and `pwrite` one frame;
//! the fsync happens outside it in `commit.rs`, so concurrent appenders share fsyncs.
//! Readers never take the write lock: they snapshot the acknowledged position and the
//! segment list and read with `pread`, so a slow consumer never blocks producers.
//!
//! Visibility is "read committed": a read never returns bytes past the acknowledged
//! position. Transactions (a later issue) fit here by tracking a "last stable offset"
//! next to that position and using the reserved frame flags for control batches.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use crate::commit::{CommitError, GroupCommit, Position};
use crate::error::{LogError, Result};
use crate::frame::{self, FrameHeader};
use crate::fsutil::{self, now_ms};
use crate::record::{Record, StoredRecord};
use crate::recovery::{self, RecoveryPoint};
use crate::segment::{CorruptRange, Segment};
use crate::topic::{FsyncPolicy, TopicConfig};

/// Where an append landed: offsets `base_offset .. base_offset + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Offset of the first appended record.
    pub base_offset: u64,
    /// Number of records appended.
    pub count: u32,
}

/// A damaged batch found on disk, for the status API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptionReport {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// Segment file holding the damaged bytes.
    pub file: PathBuf,
    /// Byte offset of the damaged batch in the file.
    pub position: u64,
    /// First offset that cannot be read.
    pub first_offset: u64,
    /// First offset readable again after the damage.
    pub resume_offset: u64,
    /// Which check failed.
    pub reason: String,
}

/// A simulated I/O failure, for tests of the failure paths.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every write fails with ENOSPC before writing anything.
    NoSpace,
    /// Every write stores half of the frame, then fails with ENOSPC.
    NoSpacePartial,
    /// Every fsync fails with EIO.
    FsyncIo,
}

/// Tuning passed from `LogOptions`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PartitionTuning {
    pub index_interval_bytes: u64,
    pub recovery_point_interval: Duration,
}

#[derive(Debug)]
struct WriteState {
    active: Arc<Segment>,
    next_offset: u64,
    position: u64,
    buf: Vec<u8>,
    closed: bool,
}

#[derive(Debug)]
struct RecoveryState {
    written: Option<Position>,
    at: Instant,
}

/// One partition of a topic: an ordered, durable sequence of records.
#[derive(Debug)]
pub struct Partition {
    topic: String,
    id: u32,
    dir: PathBuf,
    config: TopicConfig,
    tuning: PartitionTuning,
    write: Mutex<WriteState>,
    segments: RwLock<Vec<Arc<Segment>>>,
    commit: GroupCommit,
    fault: Mutex<Option<Fault>>,
    corruption: Mutex<Vec<CorruptionReport>>,
    appends: AtomicU64,
    recovery: Mutex<RecoveryState>,
}

impl Partition {
    /// Opens (recovering) the partition stored in `dir`.
    pub(crate) fn open(
        topic: &str,
        id: u32,
        dir: PathBuf,
        config: TopicConfig,
        tuning: PartitionTuning,
    ) -> Result<Partition> {
        let rec = recovery::recover(topic, id, &dir, tuning.index_interval_bytes)?;
        let active =
            rec.segments.last().cloned().ok_or_else(|| {
                LogError::Internal(format!("{topic}/{id}: recovery left no segment"))
            })?;
        let end = Position {
            end_offset: active.end_offset(),
            segment: active.base_offset,
            bytes: active.size(),
        };
        let ack_on_write = matches!(config.fsync, FsyncPolicy::Interval(_));
        let partition = Partition {
            topic: topic.to_owned(),
            id,
            dir,
            config,
            tuning,
            write: Mutex::new(WriteState {
                active,
                next_offset: end.end_offset,
                position: end.bytes,
                buf: Vec::new(),
                closed: false,
            }),
            segments: RwLock::new(rec.segments),
            commit: GroupCommit::new(end, ack_on_write),
            fault: Mutex::new(None),
            corruption: Mutex::new(rec.corruption),
            appends: AtomicU64::new(0),
            recovery: Mutex::new(RecoveryState {
                written: rec.recovery_point_current.then_some(end),
                at: Instant::now(),
            }),
        };
        if !rec.recovery_point_current {
            partition.write_recovery_point()?;
        }
        Ok(partition)
    }

    /// Name of the topic this partition belongs to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Partition number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Directory holding this partition's segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `records` as one batch; returns once they are acknowledged (with
    /// `FsyncPolicy::Always`: fdatasync'ed, sharing the fsync with concurrent appenders).
    ///
    /// # Errors
    /// `Unavailable` if a write or fsync failed (nothing of this batch is kept or
    /// visible; acknowledged data is intact; retry later), `InvalidAppend` for an empty or
    /// oversized batch, `Closed` after the log was closed.
    pub fn append(&self, records: Vec<Record>) -> Result<AppendResult> {
        let started = std::time::Instant::now();
        let result = self.append_inner(records);
        metrics::histogram!("runnel_log_append_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        result
    }

    fn append_inner(&self, records: Vec<Record>) -> Result<AppendResult> {
        if records.is_empty() {
            return Err(LogError::InvalidAppend("no records to append".into()));
        }
        if let Some(e) = self.commit.sync_error() {
            return Err(self.unavailable(format!("the last background fsync failed: {e}")));
        }
        let count = records.len() as u32;
        let ticket = {
            let mut w = self.lock_write();
            if w.closed {
                return Err(LogError::Closed);
            }
            let base = w.next_offset;
            let ts = now_ms();
            let mut buf = std::mem::take(&mut w.buf);
            buf.clear();
            frame::encode_frame(base, ts, &records, &mut buf)
                .map_err(|e| LogError::InvalidAppend(format!("batch too large: {e}")))?;
            if w.position > 0
                && w.position + buf.len() as u64 > self.config.segment_bytes
                && let Err(e) = self.roll(&mut w)
            {
                w.buf = buf;
                return Err(e);
            }
            let pos = w.position;
            if let Err(e) = self.write_frame(&w.active, pos, &buf) {
                // Cut the partial frame so the file holds only whole frames.
                if let Err(t) = w.active.truncate(pos, base) {
                    tracing::warn!(file = %w.active.log_path().display(), position = pos, error = %t,
                        "could not truncate a failed write; the next write overwrites it");
                }
                w.buf = buf;
                return Err(self.unavailable(format!("write failed: {e}")));
            }
            let header = FrameHeader {
                flags: 0,
                base_offset: base,
                count,
                min_ts: ts,
                max_ts: ts,
                frame_len: buf.len(),
            };
            w.active
                .note_appended(pos, &header, self.tuning.index_interval_bytes);
            w.next_offset = header.end_offset();
            w.position = pos + buf.len() as u64;
            w.buf = buf;
            self.commit.record_write(Position {
                end_offset: w.next_offset,
                segment: w.active.base_offset,
                bytes: w.position,
            })
        };
        if self.config.fsync == FsyncPolicy::Always {
            self.commit
                .wait_durable(ticket, &|p| self.sync_to(p), &|reason| {
                    self.rollback(reason)
                })
                .map_err(|e| self.commit_error(e))?;
        }
        self.appends.fetch_add(1, Ordering::Relaxed);
        Ok(AppendResult {
            base_offset: ticket.end_offset - u64::from(count),
            count,
        })
    }

    /// Reads acknowledged records from `offset`: at most `max_records`, stopping after
    /// about `max_bytes` of data (at least one record is returned if any is available).
    /// An empty result means `offset == end_offset()`.
    ///
    /// # Errors
    /// `OffsetOutOfRange` outside `start_offset()..=end_offset()`; `Corrupt` when the read
    /// hits a damaged batch (the error names the file and byte position).
    pub fn read(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        let visible = self.commit.acked();
        let segments = self.segments_snapshot();
        let start = segments
            .first()
            .map_or(visible.end_offset, |s| s.base_offset);
        if offset < start || offset > visible.end_offset {
            return Err(LogError::OffsetOutOfRange {
                topic: self.topic.clone(),
                partition: self.id,
                offset,
                start,
                end: visible.end_offset,
            });
        }
        let mut out = Vec::new();
        if offset == visible.end_offset || max_records == 0 {
            return Ok(out);
        }
        let first = segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        let mut budget = max_bytes.max(1);
        for seg in &segments[first..] {
            if seg.base_offset > visible.segment {
                break;
            }
            let limit = if seg.base_offset == visible.segment {
                visible.bytes
            } else {
                seg.size()
            };
            budget = match seg.read(offset, limit, max_records, budget, &mut out, &|r| {
                self.report_corruption(seg, r)
            }) {
                Ok(b) => b,
                // The records before the damage are good: hand them out; the next read,
                // starting at the damage, gets the error.
                Err(LogError::Corrupt { .. }) if !out.is_empty() => return Ok(out),
                Err(e) => return Err(e),
            };
            if out.len() >= max_records || budget == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// Where reading can go on after damage at `offset`: the first offset past the
    /// damaged batch that holds it, if `offset` is in a reported damaged range.
    pub fn resume_after_damage(&self, offset: u64) -> Option<u64> {
        self.corruption()
            .iter()
            .filter(|c| c.first_offset <= offset && offset < c.resume_offset)
            .map(|c| c.resume_offset)
            .max()
    }

    /// Next offset to be acknowledged: the high watermark readers can see up to.
    pub fn end_offset(&self) -> u64 {
        self.commit.acked().end_offset
    }

    /// First readable offset (moves forward when retention deletes segments).
    pub fn start_offset(&self) -> u64 {
        self.segments_snapshot()
            .first()
            .map_or_else(|| self.end_offset(), |s| s.base_offset)
    }

    /// Bytes of all segments on disk.
    pub fn size_bytes(&self) -> u64 {
        self.segments_snapshot().iter().map(|s| s.size()).sum()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments_snapshot().len()
    }

    /// Blocks until a record at `offset` or later is acknowledged, or `timeout` passes;
    /// returns true if records are available. For tailing consumers.
    pub fn wait_for(&self, offset: u64, timeout: Duration) -> bool {
        self.commit.wait_for(offset, timeout)
    }

    /// Damaged batches found at open or by reads.
    pub fn corruption(&self) -> Vec<CorruptionReport> {
        self.corruption
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Why the partition refuses writes right now (a failed background fsync), if it does.
    pub fn unavailable_reason(&self) -> Option<String> {
        self.commit.sync_error()
    }

    /// Number of fsyncs of segment data performed since open (group commit makes this
    /// smaller than the number of appends).
    pub fn fsync_count(&self) -> u64 {
        self.commit.fsyncs()
    }

    /// Number of successful appends (batches) since open.
    pub fn append_count(&self) -> u64 {
        self.appends.load(Ordering::Relaxed)
    }

    /// Makes every following write (or fsync) fail as described, until called with `None`.
    #[doc(hidden)]
    pub fn inject_failure(&self, fault: Option<Fault>) {
        if let Ok(mut f) = self.fault.lock() {
            *f = fault;
        }
    }

    /// fsyncs written-but-unsynced data (Interval policy, close).
    pub(crate) fn flush(&self) -> Result<()> {
        self.commit
            .flush(&|p| self.sync_to(p), &|reason| self.rollback(reason))
            .map_err(|e| self.commit_error(e))
    }

    /// Periodic work from the background thread: interval fsync and recovery points.
    pub(crate) fn tick(&self) {
        if let FsyncPolicy::Interval(d) = self.config.fsync
            && self.commit.flush_due(d)
            && let Err(e) = self.flush()
        {
            tracing::warn!(topic = %self.topic, partition = self.id, error = %e, "background fsync failed");
        }
        let due = self
            .recovery
            .lock()
            .map(|r| r.at.elapsed() >= self.tuning.recovery_point_interval)
            .unwrap_or(false);
        if due && let Err(e) = self.write_recovery_point() {
            tracing::warn!(topic = %self.topic, partition = self.id, error = %e, "could not write recovery point");
        }
    }

    /// Flushes, seals the index and writes the recovery point; further appends fail.
    pub(crate) fn close(&self) -> Result<()> {
        let active = {
            let mut w = self.lock_write();
            w.closed = true;
            w.active.clone()
        };
        let flushed = self.flush();
        if let Err(e) = active.sync_index() {
            tracing::warn!(file = %active.index_path().display(), error = %e, "could not fsync index");
        }
        let rp = self.write_recovery_point();
        self.commit.close();
        flushed.and(rp)
    }

    /// Writes the durable position as the recovery point if it moved.
    pub(crate) fn write_recovery_point(&self) -> Result<()> {
        let synced = self.commit.synced();
        let mut r = self
            .recovery
            .lock()
            .map_err(|_| LogError::Internal("recovery-point lock poisoned".into()))?;
        r.at = Instant::now();
        if r.written == Some(synced) {
            return Ok(());
        }
        recovery::write_recovery_point(
            &self.dir,
            &RecoveryPoint {
                segment: synced.segment,
                position: synced.bytes,
                end_offset: synced.end_offset,
            },
        )?;
        r.written = Some(synced);
        Ok(())
    }

    /// The current segments, oldest first (the last one is active).
    pub(crate) fn segments_snapshot(&self) -> Vec<Arc<Segment>> {
        self.segments.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Removes the oldest sealed segments chosen by `pick(sealed, total_bytes)` from the
    /// list (never the active one) and returns them; the caller deletes the files.
    pub(crate) fn detach_oldest(
        &self,
        pick: &dyn Fn(&[Arc<Segment>], u64) -> usize,
    ) -> Vec<Arc<Segment>> {
        let Ok(mut segs) = self.segments.write() else {
            return Vec::new();
        };
        let total = segs.iter().map(|s| s.size()).sum();
        let sealed = segs.len().saturating_sub(1);
        let n = pick(&segs[..sealed], total).min(sealed);
        segs.drain(..n).collect()
    }

    /// The topic config this partition runs with.
    pub(crate) fn config(&self) -> &TopicConfig {
        &self.config
    }

    fn lock_write(&self) -> MutexGuard<'_, WriteState> {
        // The write state is only changed after successful I/O; a panic elsewhere leaves
        // it consistent, so keep serving rather than poisoning the partition forever.
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fault(&self) -> Option<Fault> {
        self.fault.lock().ok().and_then(|f| *f)
    }

    fn write_frame(&self, seg: &Segment, pos: u64, bytes: &[u8]) -> io::Result<()> {
        match self.fault() {
            Some(Fault::NoSpace) => Err(io::Error::from_raw_os_error(28)),
            Some(Fault::NoSpacePartial) => {
                seg.write_at(pos, &bytes[..bytes.len() / 2])?;
                Err(io::Error::from_raw_os_error(28))
            }
            _ => seg.write_at(pos, bytes),
        }
    }

    /// fdatasync of the segment holding `target` (earlier segments were synced at roll).
    fn sync_to(&self, target: Position) -> io::Result<()> {
        if self.fault() == Some(Fault::FsyncIo) {
            return Err(io::Error::from_raw_os_error(5));
        }
        let seg = self
            .segments_snapshot()
            .into_iter()
            .find(|s| s.base_offset == target.segment);
        match seg {
            Some(s) => s.sync_data(),
            // Deleted by retention: it was sealed, hence synced at roll.
            None => Ok(()),
        }
    }

    /// After a failed fsync: cut everything past the synced position (the kernel may have
    /// dropped those pages) and fail the appenders waiting for it.
    fn rollback(&self, reason: &str) {
        let mut w = self.lock_write();
        let synced = self.commit.synced();
        let (size, end) = if synced.segment == w.active.base_offset {
            (synced.bytes, synced.end_offset)
        } else {
            // Synced up to the end of an older (sealed, fsynced) segment.
            (0, w.active.base_offset)
        };
        tracing::warn!(topic = %self.topic, partition = self.id, reason,
            dropped_records = w.next_offset.saturating_sub(end),
            "fsync failed; rolling back unacknowledged writes");
        if let Err(e) = w.active.truncate(size, end) {
            tracing::warn!(file = %w.active.log_path().display(), error = %e, "could not truncate after a failed fsync");
        }
        w.position = size;
        w.next_offset = end;
        self.commit.rolled_back(reason);
    }

    /// Seals the active segment (fsynced, so the group-commit leader only ever syncs the
    /// active one) and starts a new one at the next offset.
    fn roll(&self, w: &mut WriteState) -> Result<()> {
        let old = w.active.clone();
        if self.fault() == Some(Fault::FsyncIo) {
            return Err(self.unavailable("fsync failed: Input/output error (os error 5)".into()));
        }
        old.sync_data()
            .map_err(|e| self.unavailable(format!("fsync before segment roll failed: {e}")))?;
        if let Err(e) = old.sync_index() {
            tracing::warn!(file = %old.index_path().display(), error = %e, "could not fsync index");
        }
        self.commit.note_external_sync(Position {
            end_offset: w.next_offset,
            segment: old.base_offset,
            bytes: w.position,
        });
        let seg = Segment::create(&self.dir, w.next_offset)
            .map_err(|e| self.unavailable(format!("creating a new segment failed: {e}")))?;
        fsutil::fsync_dir(&self.dir)
            .map_err(|e| self.unavailable(format!("fsync of the new segment failed: {e}")))?;
        let seg = Arc::new(seg);
        if let Ok(mut segs) = self.segments.write() {
            segs.push(seg.clone());
        }
        tracing::debug!(topic = %self.topic, partition = self.id, base_offset = seg.base_offset, "rolled to a new segment");
        w.active = seg;
        w.position = 0;
        Ok(())
    }

    fn unavailable(&self, reason: String) -> LogError {
        LogError::Unavailable {
            topic: self.topic.clone(),
            partition: self.id,
            reason,
        }
    }

    fn commit_error(&self, e: CommitError) -> LogError {
        match e {
            CommitError::SyncFailed(reason) => self.unavailable(format!("fsync failed: {reason}")),
            CommitError::Closed => LogError::Closed,
        }
    }

    fn report_corruption(&self, seg: &Segment, r: &CorruptRange) {
        tracing::warn!(
            file = %seg.log_path().display(),
            position = r.position,
            first_offset = r.first_offset,
            resume_offset = r.resume_offset,
            reason = %r.reason,
            "corrupt batch found by a read; keeping the bytes, reads skip to the next valid batch"
        );
        if let Ok(mut c) = self.corruption.lock() {
            c.push(CorruptionReport {
                topic: self.topic.clone(),
                partition: self.id,
                file: seg.log_path().to_owned(),
                position: r.position,
                first_offset: r.first_offset,
                resume_offset: r.resume_offset,
                reason: r.reason.clone(),
            });
        }
    }
}
