//! One segment: a `.log` file of frames named by its base offset, plus a sparse `.index`
//! (relative offset → byte position every ~4 KiB) so a read starts near its offset.
//!
//! Index entries are 16 bytes: relative offset u32, position u32, and the maximum
//! timestamp of all frames before that position (i64), which lets a reopen find a sealed
//! segment's newest timestamp for retention without scanning the whole file. The index is
//! never fsynced on the append path: it is rebuilt from the log whenever it looks wrong.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use crate::error::{LogError, Result};
use crate::frame::{self, Frame, FrameError, FrameHeader, HEADER_LEN};
use crate::record::StoredRecord;

/// Bytes per index entry on disk.
pub(crate) const INDEX_ENTRY_LEN: usize = 16;
/// Read-ahead when scanning frames.
const READ_CHUNK: usize = 64 << 10;

/// File name of the segment starting at `base` (`00000000000000000000.log`).
pub(crate) fn log_file_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// File name of the index of the segment starting at `base`.
pub(crate) fn index_file_name(base: u64) -> String {
    format!("{base:020}.index")
}

/// Parses a segment file name back into its base offset.
pub(crate) fn parse_log_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// One sparse index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Offset minus the segment's base offset.
    pub rel: u32,
    /// Byte position of the frame holding that offset (its first offset).
    pub pos: u32,
    /// Max timestamp of all frames before `pos` (`i64::MIN` if none).
    pub max_ts_before: i64,
}

impl IndexEntry {
    fn encode(&self) -> [u8; INDEX_ENTRY_LEN] {
        let mut b = [0u8; INDEX_ENTRY_LEN];
        b[0..4].copy_from_slice(&self.rel.to_le_bytes());
        b[4..8].copy_from_slice(&self.pos.to_le_bytes());
        b[8..16].copy_from_slice(&self.max_ts_before.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> IndexEntry {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[8..16]);
        IndexEntry {
            rel: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            pos: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            max_ts_before: i64::from_le_bytes(ts),
        }
    }
}

/// A damaged stretch of a segment found at open; reads of later offsets jump over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CorruptRange {
    /// Byte position of the first bad frame.
    pub position: u64,
    /// Byte position of the next valid frame (or the end of the segment).
    pub skip_to: u64,
    /// First offset that could not be read.
    pub first_offset: u64,
    /// First offset readable again after the damage.
    pub resume_offset: u64,
    /// What check failed.
    pub reason: String,
}

/// A segment file and its index.
#[derive(Debug)]
pub(crate) struct Segment {
    /// First offset in this segment.
    pub base_offset: u64,
    log_path: PathBuf,
    index_path: PathBuf,
    file: File,
    index_file: Mutex<File>,
    index: RwLock<Vec<IndexEntry>>,
    /// Bytes of valid frames (written; not necessarily synced).
    size: AtomicU64,
    /// One past the last offset written.
    end_offset: AtomicU64,
    /// Max timestamp of any frame (`i64::MIN` when empty).
    max_ts: AtomicI64,
    /// Bytes written since the last index entry (only touched under the partition's write lock).
    since_index: AtomicU64,
    corrupt: RwLock<Vec<CorruptRange>>,
}

/// Error from reading a frame at a position.
#[derive(Debug)]
pub(crate) enum FrameReadError {
    Io(io::Error),
    Frame(FrameError),
}

impl Segment {
    /// Creates a new empty segment and fsyncs both files (the caller fsyncs the directory).
    pub fn create(dir: &Path, base_offset: u64) -> Result<Segment> {
        let log_path = dir.join(log_file_name(base_offset));
        let index_path = dir.join(index_file_name(base_offset));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            // A file of this name can only be the leftover of a failed roll: reuse it.
            .create(true)
            .truncate(true)
            .open(&log_path)
            .map_err(|e| LogError::io(format!("creating {}", log_path.display()), e))?;
        let index_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&index_path)
            .map_err(|e| LogError::io(format!("creating {}", index_path.display()), e))?;
        file.sync_all()
            .map_err(|e| LogError::io(format!("fsync {}", log_path.display()), e))?;
        index_file
            .sync_all()
            .map_err(|e| LogError::io(format!("fsync {}", index_path.display()), e))?;
        Ok(Segment::from_files(
            base_offset,
            log_path,
            index_path,
            file,
            index_file,
        ))
    }

    /// Opens an existing segment; sizes and index are filled in by recovery.
    pub fn open(dir: &Path, base_offset: u64) -> Result<Segment> {
        let log_path = dir.join(log_file_name(base_offset));
        let index_path = dir.join(index_file_name(base_offset));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(|e| LogError::io(format!("opening {}", log_path.display()), e))?;
        let index_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&index_path)
            .map_err(|e| LogError::io(format!("opening {}", index_path.display()), e))?;
        Ok(Segment::from_files(
            base_offset,
            log_path,
            index_path,
            file,
            index_file,
        ))
    }

    fn from_files(
        base_offset: u64,
        log_path: PathBuf,
        index_path: PathBuf,
        file: File,
        index_file: File,
    ) -> Segment {
        Segment {
            base_offset,
            log_path,
            index_path,
            file,
            index_file: Mutex::new(index_file),
            index: RwLock::new(Vec::new()),
            size: AtomicU64::new(0),
            end_offset: AtomicU64::new(base_offset),
            max_ts: AtomicI64::new(i64::MIN),
            since_index: AtomicU64::new(0),
            corrupt: RwLock::new(Vec::new()),
        }
    }

    /// Path of the `.log` file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Path of the `.index` file.
    pub fn index_path(&self) -> &Path {
        &self.index_path
    }

    /// Bytes of valid frames written.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// One past the last offset written.
    pub fn end_offset(&self) -> u64 {
        self.end_offset.load(Ordering::Acquire)
    }

    /// Newest timestamp in the segment, `None` when empty.
    pub fn max_timestamp(&self) -> Option<i64> {
        let ts = self.max_ts.load(Ordering::Acquire);
        (ts != i64::MIN).then_some(ts)
    }

    /// Current length of the file on disk.
    pub fn file_len(&self) -> io::Result<u64> {
        self.file.metadata().map(|m| m.len())
    }

    /// Sets the in-memory state after recovery validated the file up to `size`.
    pub fn set_recovered(&self, size: u64, end_offset: u64, max_ts: i64) {
        self.size.store(size, Ordering::Release);
        self.end_offset.store(end_offset, Ordering::Release);
        self.max_ts.store(max_ts, Ordering::Release);
        let last_pos = self
            .index
            .read()
            .map(|ix| ix.last().map_or(0, |e| u64::from(e.pos)))
            .unwrap_or(0);
        self.since_index
            .store(size.saturating_sub(last_pos), Ordering::Relaxed);
    }

    /// Writes `bytes` at `pos` (no index or size update; used for injected partial writes too).
    pub fn write_at(&self, pos: u64, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, pos)
    }

    /// Records a frame that was fully written at `pos`: size, end offset, timestamps, index.
    pub fn note_appended(&self, pos: u64, header: &FrameHeader, index_interval: u64) {
        let since = self.since_index.load(Ordering::Relaxed);
        if pos > 0 && since >= index_interval {
            let entry = IndexEntry {
                rel: (header.base_offset - self.base_offset) as u32,
                pos: pos as u32,
                max_ts_before: self.max_ts.load(Ordering::Acquire),
            };
            self.push_index(entry);
            self.since_index.store(0, Ordering::Relaxed);
        }
        self.since_index
            .fetch_add(header.frame_len as u64, Ordering::Relaxed);
        self.max_ts.fetch_max(header.max_ts, Ordering::AcqRel);
        self.end_offset
            .store(header.end_offset(), Ordering::Release);
        self.size
            .store(pos + header.frame_len as u64, Ordering::Release);
    }

    fn push_index(&self, entry: IndexEntry) {
        let n = match self.index.write() {
            Ok(mut ix) => {
                ix.push(entry);
                ix.len()
            }
            Err(_) => return,
        };
        // Best effort: a missing entry on disk only means a rebuild at the next open.
        if let Ok(f) = self.index_file.lock() {
            let at = ((n - 1) * INDEX_ENTRY_LEN) as u64;
            if let Err(e) = f.write_all_at(&entry.encode(), at) {
                tracing::warn!(file = %self.index_path.display(), error = %e, "could not write index entry; it will be rebuilt at the next open");
            }
        }
    }

    /// Cuts the segment back to `size` bytes (dropping index entries past it).
    pub fn truncate(&self, size: u64, end_offset: u64) -> io::Result<()> {
        let keep = match self.index.write() {
            Ok(mut ix) => {
                ix.retain(|e| u64::from(e.pos) < size);
                ix.len()
            }
            Err(_) => 0,
        };
        self.size.store(size, Ordering::Release);
        self.end_offset.store(end_offset, Ordering::Release);
        let last_pos = self
            .index
            .read()
            .map(|ix| ix.last().map_or(0, |e| u64::from(e.pos)))
            .unwrap_or(0);
        self.since_index
            .store(size.saturating_sub(last_pos), Ordering::Relaxed);
        if let Ok(f) = self.index_file.lock() {
            let _ = f.set_len((keep * INDEX_ENTRY_LEN) as u64);
        }
        self.file.set_len(size)
    }

    /// fdatasync of the log file: the ack is our durability promise.
    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// fsync of the index file (on seal and close; the index is rebuildable).
    pub fn sync_index(&self) -> io::Result<()> {
        match self.index_file.lock() {
            Ok(f) => f.sync_data(),
            Err(_) => Ok(()),
        }
    }

    /// Uses `entries` as the index; rewrites the index file too if `write_file`.
    pub fn install_index(&self, entries: Vec<IndexEntry>, write_file: bool) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(entries.len() * INDEX_ENTRY_LEN);
        for e in &entries {
            bytes.extend_from_slice(&e.encode());
        }
        if let Ok(mut ix) = self.index.write() {
            *ix = entries;
        }
        if !write_file {
            return Ok(());
        }
        match self.index_file.lock() {
            Ok(f) => {
                f.set_len(0)?;
                f.write_all_at(&bytes, 0)?;
                f.set_len(bytes.len() as u64)
            }
            Err(_) => Ok(()),
        }
    }

    /// Loads the on-disk index, returning `None` if it is missing, torn or inconsistent
    /// with the log file (then the caller rebuilds it).
    pub fn load_index(&self, log_len: u64) -> Option<Vec<IndexEntry>> {
        let f = self.index_file.lock().ok()?;
        let len = f.metadata().ok()?.len();
        if len % INDEX_ENTRY_LEN as u64 != 0 || len > (64 << 20) {
            return None;
        }
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, 0).ok()?;
        drop(f);
        let entries: Vec<IndexEntry> = buf
            .chunks_exact(INDEX_ENTRY_LEN)
            .map(IndexEntry::decode)
            .collect();
        let mut prev: Option<IndexEntry> = None;
        let mut header = [0u8; HEADER_LEN];
        for e in &entries {
            if let Some(p) = prev
                && (e.rel <= p.rel || e.pos <= p.pos || e.max_ts_before < p.max_ts_before)
            {
                return None;
            }
            if e.pos == 0 || u64::from(e.pos) + HEADER_LEN as u64 > log_len {
                return None;
            }
            // The entry must point at a frame header carrying the offset it claims.
            self.file
                .read_exact_at(&mut header, u64::from(e.pos))
                .ok()?;
            frame::frame_len(&header).ok()?;
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[12..20]);
            if u64::from_le_bytes(b) != self.base_offset + u64::from(e.rel) {
                return None;
            }
            prev = Some(*e);
        }
        Some(entries)
    }

    /// Byte position to start scanning for `offset`.
    pub fn lookup(&self, offset: u64) -> u64 {
        let Some(rel) = offset.checked_sub(self.base_offset) else {
            return 0;
        };
        let Ok(ix) = self.index.read() else {
            return 0;
        };
        let i = ix.partition_point(|e| u64::from(e.rel) <= rel);
        if i == 0 { 0 } else { u64::from(ix[i - 1].pos) }
    }

    /// Records a damaged range found by recovery or a read.
    pub fn add_corruption(&self, range: CorruptRange) -> bool {
        match self.corrupt.write() {
            Ok(mut c) => {
                // A valid batch after missing offsets can be both the place of that
                // gap and, when its records do not decode, a damaged batch itself.
                if c.iter()
                    .any(|r| r.position == range.position && r.first_offset == range.first_offset)
                {
                    return false;
                }
                c.push(range);
                true
            }
            Err(_) => false,
        }
    }

    /// The damage known at `position` (a frame that does not pass its checks there).
    fn known_corruption(&self, position: u64) -> Option<CorruptRange> {
        self.corrupt
            .read()
            .ok()?
            .iter()
            .filter(|r| r.position == position)
            .max_by_key(|r| r.resume_offset)
            .cloned()
    }

    /// A buffered frame reader over `[0, limit)` of this segment.
    pub fn reader(&self, limit: u64) -> SegmentReader<'_> {
        SegmentReader {
            file: &self.file,
            buf: Vec::new(),
            buf_start: 0,
            limit,
        }
    }

    /// Appends records with offset >= `from` found in `[.., limit)` to `out`; returns the
    /// remaining byte budget. A damaged frame is a `Corrupt` error unless it ends before
    /// `from`, in which case the read skips to the next valid frame. Damage not known yet
    /// is measured (resync to the next valid frame), remembered and passed to `on_corrupt`.
    pub fn read(
        &self,
        from: u64,
        limit: u64,
        max_records: usize,
        mut budget: usize,
        out: &mut Vec<StoredRecord>,
        on_corrupt: &dyn Fn(&CorruptRange),
    ) -> Result<usize> {
        let mut pos = self.lookup(from);
        let mut expected = self.offset_at_index_pos(pos);
        let mut reader = self.reader(limit);
        while pos < limit && out.len() < max_records && budget > 0 {
            let err = match reader.frame_at(pos) {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    let len = frame.header.frame_len as u64;
                    let end = frame.header.end_offset();
                    if end > from {
                        let before = out.len();
                        match frame::decode_records(&frame, from, max_records, budget, out) {
                            Ok(b) => budget = b,
                            // The checksum holds but the records do not decode (written
                            // so, or a collision): the batch is damage like any other,
                            // and its header, which the checksum covers, says which
                            // offsets it held and where the next batch starts.
                            Err(e) => {
                                out.truncate(before);
                                let base = frame.header.base_offset;
                                let r = CorruptRange {
                                    position: pos,
                                    skip_to: pos + len,
                                    first_offset: base,
                                    resume_offset: end,
                                    reason: format!("batch records do not decode: {e}"),
                                };
                                if self.add_corruption(r.clone()) {
                                    on_corrupt(&r);
                                }
                                if from >= end {
                                    expected = end;
                                    pos += len;
                                    continue;
                                }
                                return Err(self.corrupt_error(
                                    pos,
                                    format!(
                                        "{}; offsets {base}..{end} are unreadable, the next \
                                         readable offset is {end}",
                                        r.reason
                                    ),
                                ));
                            }
                        }
                    }
                    expected = end;
                    pos += len;
                    continue;
                }
                Err(FrameReadError::Io(e)) => {
                    return Err(LogError::io(
                        format!("reading {} at byte {pos}", self.log_path.display()),
                        e,
                    ));
                }
                Err(FrameReadError::Frame(e)) => e,
            };
            let range = match self.known_corruption(pos) {
                Some(r) => r,
                None => {
                    let next = reader
                        .find_next_frame(pos + 1, expected, self.base_offset)
                        .map_err(|e| {
                            LogError::io(
                                format!("reading {} at byte {pos}", self.log_path.display()),
                                e,
                            )
                        })?;
                    let (skip_to, resume_offset) = match next {
                        Some((p, h)) => (p, h.base_offset),
                        None => (limit, self.end_offset().max(expected)),
                    };
                    let r = CorruptRange {
                        position: pos,
                        skip_to,
                        first_offset: expected,
                        resume_offset,
                        reason: err.to_string(),
                    };
                    if self.add_corruption(r.clone()) {
                        on_corrupt(&r);
                    }
                    r
                }
            };
            if from >= range.resume_offset && range.skip_to > pos {
                pos = range.skip_to;
                expected = range.resume_offset;
                continue;
            }
            return Err(self.corrupt_error(
                pos,
                format!(
                    "{}; offsets {}..{} are unreadable, the next readable offset is {}",
                    range.reason, range.first_offset, range.resume_offset, range.resume_offset
                ),
            ));
        }
        Ok(budget)
    }

    /// The first offset of the frame at an index position (`pos` came from `lookup`).
    fn offset_at_index_pos(&self, pos: u64) -> u64 {
        let Ok(ix) = self.index.read() else {
            return self.base_offset;
        };
        ix.iter()
            .find(|e| u64::from(e.pos) == pos)
            .map_or(self.base_offset, |e| self.base_offset + u64::from(e.rel))
    }

    fn corrupt_error(&self, position: u64, reason: String) -> LogError {
        LogError::Corrupt {
            file: self.log_path.clone(),
            position,
            reason,
        }
    }
}

/// Reads frames from a segment file through a read-ahead buffer.
pub(crate) struct SegmentReader<'a> {
    file: &'a File,
    buf: Vec<u8>,
    buf_start: u64,
    limit: u64,
}

impl SegmentReader<'_> {
    /// Ensures `[pos, pos + want)` (clamped to the limit) is buffered; returns bytes available.
    fn fill(&mut self, pos: u64, want: usize) -> io::Result<usize> {
        let avail_to_limit = self.limit.saturating_sub(pos) as usize;
        let want = want.min(avail_to_limit);
        let buf_end = self.buf_start + self.buf.len() as u64;
        if pos >= self.buf_start && pos + want as u64 <= buf_end {
            return Ok((buf_end - pos) as usize);
        }
        let n = want.max(READ_CHUNK).min(avail_to_limit);
        self.buf.resize(n, 0);
        let mut got = 0;
        while got < n {
            match self.file.read_at(&mut self.buf[got..], pos + got as u64) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.truncate(got);
        self.buf_start = pos;
        Ok(got)
    }

    /// For a frame at `pos` that fails its CRC: if it was written whole — its magic,
    /// version and length are sound, all its bytes are in the file and it does not end
    /// in zeros (what a write cut short by a crash leaves) — its length and how many
    /// offsets it held (its unverified count when its base offset is `expected` and the
    /// count is plausible, else 1: a frame holds at least one record). `None` when the
    /// frame looks torn.
    pub fn written_frame(&mut self, pos: u64, expected: u64) -> io::Result<Option<(u64, u64)>> {
        let avail = self.fill(pos, frame::HEADER_LEN)?;
        let start = (pos - self.buf_start) as usize;
        let Ok(len) = frame::frame_len(&self.buf[start..start + avail]) else {
            return Ok(None);
        };
        if pos + len as u64 > self.limit || len < frame::HEADER_LEN {
            return Ok(None);
        }
        let avail = self.fill(pos, len)?;
        if avail < len {
            return Ok(None);
        }
        let start = (pos - self.buf_start) as usize;
        let bytes = &self.buf[start..start + len];
        let tail = &bytes[len.saturating_sub(16).max(frame::HEADER_LEN)..];
        if !tail.is_empty() && tail.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let le_u64 = |at: usize| {
            bytes
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        let count = bytes
            .get(20..24)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .map_or(0, u64::from);
        // A record takes at least 4 payload bytes, which bounds the count from above.
        let most = ((len - frame::HEADER_LEN) as u64 / 4).max(1);
        let n = if le_u64(12) == Some(expected) && (1..=most).contains(&count) {
            count
        } else {
            // The header is damaged too: skip as many offsets as the batch could have
            // held, so that none it did hold is reused.
            most
        };
        Ok(Some((len as u64, n)))
    }

    /// Position of the next frame magic at or after `from`, if any (resync after damage).
    pub fn find_magic(&mut self, mut from: u64) -> io::Result<Option<u64>> {
        let pat = frame::MAGIC_AND_VERSION;
        while from < self.limit {
            let avail = self.fill(from, READ_CHUNK)?;
            if avail < pat.len() {
                return Ok(None);
            }
            let start = (from - self.buf_start) as usize;
            let hay = &self.buf[start..start + avail];
            if let Some(i) = hay.windows(pat.len()).position(|w| w == pat) {
                return Ok(Some(from + i as u64));
            }
            from += (avail - (pat.len() - 1)) as u64;
        }
        Ok(None)
    }

    /// The next position at or after `from` holding a CRC-valid frame with offsets
    /// `>= expected` that can be indexed relative to `base` (resync after damage).
    pub fn find_next_frame(
        &mut self,
        mut from: u64,
        expected: u64,
        base: u64,
    ) -> io::Result<Option<(u64, FrameHeader)>> {
        while from < self.limit {
            let Some(candidate) = self.find_magic(from)? else {
                return Ok(None);
            };
            if let Ok(Some(f)) = self.frame_at(candidate)
                && f.header.base_offset >= expected
                && fits(base, &f.header)
            {
                return Ok(Some((candidate, f.header)));
            }
            from = candidate + 1;
        }
        Ok(None)
    }

    /// The CRC-checked frame at `pos`, `None` at the limit.
    pub fn frame_at(&mut self, pos: u64) -> Result<Option<Frame<'_>>, FrameReadError> {
        if pos >= self.limit {
            return Ok(None);
        }
        let avail = self.fill(pos, HEADER_LEN).map_err(FrameReadError::Io)?;
        let start = (pos - self.buf_start) as usize;
        let len =
            frame::frame_len(&self.buf[start..start + avail]).map_err(FrameReadError::Frame)?;
        let avail = self.fill(pos, len).map_err(FrameReadError::Io)?;
        let start = (pos - self.buf_start) as usize;
        frame::decode_frame(&self.buf[start..start + avail])
            .map(Some)
            .map_err(FrameReadError::Frame)
    }
}

/// True if the frame's offsets can be indexed relative to `base`.
pub(crate) fn fits(base: u64, h: &FrameHeader) -> bool {
    h.base_offset >= base && h.base_offset - base <= u64::from(u32::MAX)
}
