//! Retention: drop whole sealed segments past the topic's age or size limit.
//!
//! Only a prefix of sealed segments is ever deleted (never the active one), so the
//! partition stays one contiguous range of offsets; `start_offset` moves forward.
//!
//! - `retention_ms`: a sealed segment goes once its newest record is older than this.
//! - `retention_bytes`: the oldest sealed segments go while the partition would still
//!   hold at least this many bytes without them (as Kafka does: the newest
//!   `retention_bytes` are always kept).

use std::fs;
use std::sync::Arc;

use crate::error::{LogError, Result};
use crate::fsutil;
use crate::partition::Partition;
use crate::segment::Segment;

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segment files deleted.
    pub segments_deleted: usize,
    /// Bytes freed.
    pub bytes_deleted: u64,
}

impl RetentionReport {
    /// Adds another pass's counts to this one.
    pub fn merge(&mut self, other: RetentionReport) {
        self.segments_deleted += other.segments_deleted;
        self.bytes_deleted += other.bytes_deleted;
    }
}

/// How many of the oldest `sealed` segments are past the limits at `now_ms`.
fn expired_prefix(
    sealed: &[Arc<Segment>],
    total_bytes: u64,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    now_ms: i64,
) -> usize {
    let mut remaining = total_bytes;
    let mut n = 0;
    for seg in sealed {
        let too_old = retention_ms.is_some_and(|r| {
            let cutoff = now_ms.saturating_sub(i64::try_from(r).unwrap_or(i64::MAX));
            seg.max_timestamp().is_none_or(|ts| ts < cutoff)
        });
        let too_big = retention_bytes.is_some_and(|r| remaining - seg.size() >= r);
        if !(too_old || too_big) {
            break;
        }
        remaining -= seg.size();
        n += 1;
    }
    n
}

/// Deletes the segments of `partition` that are past its topic's retention limits.
pub(crate) fn enforce(partition: &Partition, now_ms: i64) -> Result<RetentionReport> {
    let config = partition.config();
    if config.retention_ms.is_none() && config.retention_bytes.is_none() {
        return Ok(RetentionReport::default());
    }
    let (retention_ms, retention_bytes) = (config.retention_ms, config.retention_bytes);
    let removed = partition.detach_oldest(&|sealed, total| {
        expired_prefix(sealed, total, retention_ms, retention_bytes, now_ms)
    });
    let mut report = RetentionReport::default();
    if removed.is_empty() {
        return Ok(report);
    }
    for seg in &removed {
        report.segments_deleted += 1;
        report.bytes_deleted += seg.size();
        fs::remove_file(seg.log_path())
            .map_err(|e| LogError::io(format!("deleting {}", seg.log_path().display()), e))?;
        if let Err(e) = fs::remove_file(seg.index_path()) {
            tracing::warn!(file = %seg.index_path().display(), error = %e, "could not delete index file");
        }
        tracing::info!(
            topic = partition.topic(),
            partition = partition.id(),
            file = %seg.log_path().display(),
            "retention deleted segment"
        );
    }
    fsutil::fsync_dir(partition.dir())?;
    Ok(report)
}
