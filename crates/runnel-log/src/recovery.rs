//! Open-time scan: validate CRCs, cut a torn tail, report damage with file and byte offset.
//!
//! Each partition keeps `recovery-point.json`: a position known durable and clean (written
//! on close and periodically, atomically). Segments before the recovery point's segment
//! are trusted: only their index is checked and the few KiB after their last index entry
//! read. From the recovery point on, every frame is CRC-checked.
//!
//! - A bad frame in the **last** segment with no valid frame after it is a torn write:
//!   the file is truncated there and a warning names the file, position and bytes dropped.
//! - A bad frame followed by valid frames (or any damage in a sealed segment) is
//!   corruption: it is reported (warning + `Partition::corruption()`), the bytes stay on
//!   disk, and reads of offsets after it skip over it.
//! - A missing or inconsistent index is rebuilt from the segment.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};
use crate::fsutil;
use crate::partition::CorruptionReport;
use crate::segment::{self, CorruptRange, FrameReadError, IndexEntry, Segment, fits};

/// File name of a partition's recovery point.
pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point.json";

/// A position known durable and valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecoveryPoint {
    /// Base offset of the segment holding the position.
    pub segment: u64,
    /// Byte position in that segment.
    pub position: u64,
    /// Next offset at that position.
    pub end_offset: u64,
}

/// What recovery hands to `Partition::open`.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Segments, oldest first; never empty.
    pub segments: Vec<Arc<Segment>>,
    /// Damage found.
    pub corruption: Vec<CorruptionReport>,
    /// True if the stored recovery point already equals the recovered end.
    pub recovery_point_current: bool,
}

/// Writes `rp` atomically (temp, fsync, rename, fsync dir).
pub(crate) fn write_recovery_point(dir: &Path, rp: &RecoveryPoint) -> Result<()> {
    let bytes = serde_json::to_vec(rp)
        .map_err(|e| LogError::Internal(format!("serializing recovery point: {e}")))?;
    fsutil::write_atomic(&dir.join(RECOVERY_POINT_FILE), &bytes)
}

fn read_recovery_point(dir: &Path) -> Option<RecoveryPoint> {
    let path = dir.join(RECOVERY_POINT_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read recovery point; scanning every segment");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(rp) => Some(rp),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "invalid recovery point; scanning every segment");
            None
        }
    }
}

/// Where a scan starts.
struct ScanStart {
    pos: u64,
    offset: u64,
    max_ts: i64,
    entries: Vec<IndexEntry>,
}

/// What a scan found.
struct ScanResult {
    size: u64,
    end_offset: u64,
    max_ts: i64,
    entries: Vec<IndexEntry>,
    corrupt: Vec<CorruptRange>,
    /// (position, bytes dropped, reason) of a torn tail.
    torn: Option<(u64, u64, String)>,
}

/// Recovers the partition in `dir`, creating its first segment if it has none.
pub(crate) fn recover(
    topic: &str,
    partition: u32,
    dir: &Path,
    index_interval: u64,
) -> Result<Recovered> {
    let rp = read_recovery_point(dir);
    let bases = list_segments(dir)?;
    if bases.is_empty() {
        let base = rp.map_or(0, |r| r.end_offset);
        let seg = Segment::create(dir, base)?;
        fsutil::fsync_dir(dir)?;
        return Ok(Recovered {
            segments: vec![Arc::new(seg)],
            corruption: Vec::new(),
            recovery_point_current: false,
        });
    }
    let mut segments = Vec::with_capacity(bases.len());
    let mut corruption = Vec::new();
    let mut expected: Option<u64> = None;
    let mut changed = false;
    for (i, &base) in bases.iter().enumerate() {
        let is_last = i + 1 == bases.len();
        let next_base = bases.get(i + 1).copied();
        let seg = Segment::open(dir, base)?;
        let report = |first_offset: u64, resume_offset: u64, position: u64, reason: String| {
            CorruptionReport {
                topic: topic.to_owned(),
                partition,
                file: seg.log_path().to_owned(),
                position,
                first_offset,
                resume_offset,
                reason,
            }
        };
        if let Some(exp) = expected
            && exp != base
        {
            let reason =
                format!("segment starts at offset {base} but the previous one ends at {exp}");
            tracing::warn!(file = %seg.log_path().display(), "{reason}");
            corruption.push(report(exp.min(base), base, 0, reason));
        }
        let file_len = seg
            .file_len()
            .map_err(|e| LogError::io(format!("stat {}", seg.log_path().display()), e))?;
        let index = seg.load_index(file_len);
        let trusted = !is_last && rp.is_some_and(|r| base < r.segment);
        let rp_here = rp.filter(|r| r.segment == base && r.position <= file_len);
        let start = match (&index, trusted, rp_here) {
            (Some(entries), true, _) => resume_from(base, entries, u64::MAX),
            (Some(entries), false, Some(r)) => resume_from(base, entries, r.position),
            _ => {
                if index.is_none() && file_len > 0 {
                    tracing::info!(file = %seg.index_path().display(), "index missing or invalid; rebuilding it from the segment");
                }
                ScanStart {
                    pos: 0,
                    offset: base,
                    max_ts: i64::MIN,
                    entries: Vec::new(),
                }
            }
        };
        let rebuilt = index.as_ref() != Some(&start.entries);
        let scan = scan(&seg, file_len, start, is_last, next_base, index_interval)?;
        if let Some((pos, dropped, reason)) = &scan.torn {
            tracing::warn!(
                file = %seg.log_path().display(),
                position = pos,
                bytes_dropped = dropped,
                reason = %reason,
                "torn write at the end of the log; truncating to the last valid batch"
            );
        }
        let index_changed = rebuilt || index.as_ref() != Some(&scan.entries);
        seg.install_index(scan.entries.clone(), index_changed)
            .map_err(|e| LogError::io(format!("writing {}", seg.index_path().display()), e))?;
        if scan.torn.is_some() {
            seg.truncate(scan.size, scan.end_offset)
                .map_err(|e| LogError::io(format!("truncating {}", seg.log_path().display()), e))?;
            changed = true;
        }
        if is_last {
            // Recovery read these bytes from the page cache; make them durable before a
            // new recovery point vouches for them.
            seg.sync_data()
                .map_err(|e| LogError::io(format!("fsync {}", seg.log_path().display()), e))?;
        }
        // Offsets the recovery point recorded as durable were handed out (and maybe
        // read): whatever happened to their bytes, they are never handed out again.
        let mut end_offset = scan.end_offset;
        if let Some(r) = rp.filter(|r| is_last && r.segment == base && r.end_offset > end_offset) {
            let reason = format!(
                "offsets {end_offset}..{} were recorded as durable but are not in the log; \
                 they are not handed out again",
                r.end_offset
            );
            tracing::warn!(file = %seg.log_path().display(), "{reason}");
            corruption.push(report(end_offset, r.end_offset, scan.size, reason));
            end_offset = r.end_offset;
            changed = true;
        }
        seg.set_recovered(scan.size, end_offset, scan.max_ts);
        for range in scan.corrupt {
            tracing::warn!(
                file = %seg.log_path().display(),
                position = range.position,
                first_offset = range.first_offset,
                resume_offset = range.resume_offset,
                reason = %range.reason,
                "corrupt batch in the log; keeping the bytes, reads skip to the next valid batch"
            );
            corruption.push(report(
                range.first_offset,
                range.resume_offset,
                range.position,
                range.reason.clone(),
            ));
            seg.add_corruption(range);
        }
        if !is_last && rp.is_some_and(|r| r.segment == base && r.end_offset > scan.end_offset) {
            tracing::warn!(
                file = %seg.log_path().display(),
                "the recovery point recorded offsets up to {} as durable, but only {} were found",
                rp.map_or(0, |r| r.end_offset),
                scan.end_offset
            );
        }
        expected = Some(end_offset);
        segments.push(Arc::new(seg));
    }
    let last = segments
        .last()
        .ok_or_else(|| LogError::Internal("no segments after recovery".into()))?;
    let end = RecoveryPoint {
        segment: last.base_offset,
        position: last.size(),
        end_offset: last.end_offset(),
    };
    Ok(Recovered {
        recovery_point_current: !changed && rp == Some(end),
        segments,
        corruption,
    })
}

/// Segment base offsets in `dir`, sorted; removes stray temp and orphan index files.
fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let entries =
        fs::read_dir(dir).map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
    let mut bases = Vec::new();
    let mut indexes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = segment::parse_log_file_name(name) {
            bases.push(base);
        } else if let Some(stem) = name.strip_suffix(".index") {
            indexes.push(stem.to_owned());
        } else if name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
        }
    }
    for stem in indexes {
        let has_log = stem.parse::<u64>().is_ok_and(|b| bases.contains(&b));
        if !has_log {
            let _ = fs::remove_file(dir.join(format!("{stem}.index")));
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Starts at the last index entry at or before `max_pos`, keeping the entries before it.
fn resume_from(base: u64, entries: &[IndexEntry], max_pos: u64) -> ScanStart {
    let kept: Vec<IndexEntry> = entries
        .iter()
        .take_while(|e| u64::from(e.pos) <= max_pos)
        .copied()
        .collect();
    match kept.last() {
        Some(e) => ScanStart {
            pos: u64::from(e.pos),
            offset: base + u64::from(e.rel),
            max_ts: e.max_ts_before,
            entries: kept,
        },
        None => ScanStart {
            pos: 0,
            offset: base,
            max_ts: i64::MIN,
            entries: kept,
        },
    }
}

fn scan(
    seg: &Segment,
    file_len: u64,
    start: ScanStart,
    is_last: bool,
    next_base: Option<u64>,
    index_interval: u64,
) -> Result<ScanResult> {
    let base = seg.base_offset;
    let io_err = |pos: u64, e| {
        LogError::io(
            format!("reading {} at byte {pos}", seg.log_path().display()),
            e,
        )
    };
    let mut reader = seg.reader(file_len);
    let ScanStart {
        mut pos,
        offset: mut expected,
        mut max_ts,
        mut entries,
    } = start;
    // An index entry sits at `pos` (or pos is 0), so the writer's spacing restarts here.
    let mut since = 0u64;
    let mut corrupt = Vec::new();
    let mut torn = None;
    while pos < file_len {
        let outcome = match reader.frame_at(pos) {
            Ok(None) => break,
            Ok(Some(f)) if f.header.base_offset == expected => Ok(f.header),
            Ok(Some(f)) if f.header.base_offset > expected && fits(base, &f.header) => {
                // Valid frame, but offsets are missing before it.
                let h = f.header;
                corrupt.push(CorruptRange {
                    position: pos,
                    skip_to: pos,
                    first_offset: expected,
                    resume_offset: h.base_offset,
                    reason: format!("offsets {expected}..{} are missing", h.base_offset),
                });
                expected = h.base_offset;
                Ok(h)
            }
            Ok(Some(f)) => Err(format!(
                "batch has base offset {} where {expected} was expected",
                f.header.base_offset
            )),
            Err(FrameReadError::Io(e)) => return Err(io_err(pos, e)),
            Err(FrameReadError::Frame(e)) => Err(e.to_string()),
        };
        match outcome {
            Ok(h) => {
                if pos > 0
                    && since >= index_interval
                    && entries.last().is_none_or(|e| u64::from(e.pos) < pos)
                {
                    entries.push(IndexEntry {
                        rel: (h.base_offset - base) as u32,
                        pos: pos as u32,
                        max_ts_before: max_ts,
                    });
                    since = 0;
                }
                since += h.frame_len as u64;
                max_ts = max_ts.max(h.max_ts);
                expected = h.end_offset();
                pos += h.frame_len as u64;
            }
            Err(reason) => {
                let next = reader
                    .find_next_frame(pos + 1, expected, base)
                    .map_err(|e| io_err(pos, e))?;
                let written = match next {
                    None if is_last => reader
                        .written_frame(pos, expected)
                        .map_err(|e| io_err(pos, e))?,
                    _ => None,
                };
                match (next, written) {
                    // A frame written whole and then damaged (a bit flip) was
                    // acknowledged: corruption, and its offsets are never handed out again.
                    (None, Some((len, n))) => {
                        corrupt.push(CorruptRange {
                            position: pos,
                            skip_to: pos + len,
                            first_offset: expected,
                            resume_offset: expected + n,
                            reason: format!("{reason} in a batch that was written whole"),
                        });
                        pos += len;
                        expected += n;
                    }
                    (None, None) if is_last => {
                        torn = Some((pos, file_len - pos, reason));
                        break;
                    }
                    (next, _) => {
                        let (skip_to, resume) = match next {
                            Some((p, h)) => (p, h.base_offset),
                            None => (file_len, next_base.unwrap_or(expected).max(expected)),
                        };
                        corrupt.push(CorruptRange {
                            position: pos,
                            skip_to,
                            first_offset: expected,
                            resume_offset: resume,
                            reason,
                        });
                        if let Some((p, h)) = next {
                            // Index the first good frame so reads of later offsets start past the damage.
                            entries.push(IndexEntry {
                                rel: (h.base_offset - base) as u32,
                                pos: p as u32,
                                max_ts_before: max_ts,
                            });
                            since = 0;
                        }
                        pos = skip_to;
                        expected = resume;
                    }
                }
            }
        }
    }
    Ok(ScanResult {
        size: pos,
        end_offset: expected,
        max_ts,
        entries,
        corrupt,
        torn,
    })
}
