//! The `file` sink of a checkpointed pipeline: exactly-once part files, on the
//! transactional-sink mechanism ([`crate::txn`]).
//!
//! `path` is a directory. Rows are staged in `.part-<subtask>.inprogress`, sealed at
//! checkpoint `n`'s barrier as `.part-<subtask>-<n>.sealed`, and applied, once `n` is
//! complete, by renaming the sealed file to `part-<subtask>-<n>.<ext>`. Readers only see
//! `part-*` files, so they see exactly the rows of complete checkpoints. A restart removes
//! parts of checkpoints after the one it resumes from (from scratch: all of them), since
//! those rows are produced again. A distributed run's task tags its files with its name
//! (`part-task-1-3-<subtask>-<n>.<ext>`) and touches no other task's.
//!
//! With a rolling policy (`'sink.rolling-policy.file-size'` and/or
//! `'sink.rolling-policy.rollover-interval'`) a subtask's committed batches are appended
//! to one hidden file, `.part-<subtask>.open`, instead of becoming a part each; its side
//! file `.part-<subtask>.open.json` records, per applied checkpoint, the file's length
//! after it, so an apply repeated after a crash truncates a half-done append and never
//! appends twice. The file is renamed into view, as `part-<subtask>-<first>-<last>.<ext>`,
//! once it reaches the size or the interval has passed since it was started (checked when
//! a checkpoint commits rows), and when the input ends. Its rows become visible then, as
//! with Flink's file sink. A restart truncates it to the restored checkpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use runnel_common::fault::crash_point;
use runnel_common::metrics::ConnectorMetrics;

use crate::format::csv::CsvEncoder;
use crate::format::json::JsonEncoder;
use crate::sink::file::FileSinkFormat;
use crate::txn::{self, Apply, Staging, Txn};
use crate::{ConnectorError, Sink};

/// Staged and sealed files start with this (and the task's tag), so readers skip them.
const PREFIX: &str = ".part-";

/// The tag of a distributed task's files: `task-1-3-`, or nothing.
fn tag(task: Option<crate::TaskScope>) -> String {
    task.map_or_else(String::new, |t| format!("{t}-"))
}

/// Applies sealed parts by renaming them into view.
struct PartFiles {
    dir: PathBuf,
    ext: &'static str,
    /// See [`tag`].
    tag: String,
    /// Accumulate committed batches into bigger parts.
    rolling: Option<Rolling>,
    /// Bytes every staged batch starts with (a CSV header), dropped when appended.
    header_len: u64,
}

/// When an accumulating part is rolled into view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolling {
    /// At this many bytes.
    pub max_bytes: u64,
    /// This long after its first batch (ms).
    pub max_age_ms: i64,
}

/// What the side file of an open part records.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct OpenPart {
    /// When its first batch was appended (ms since the epoch).
    opened_ms: i64,
    /// (checkpoint, length of the file after it), in order.
    marks: Vec<(u64, u64)>,
}

impl PartFiles {
    fn open_path(&self, subtask: usize) -> PathBuf {
        self.dir.join(format!("{PREFIX}{}{subtask}.open", self.tag))
    }

    fn open_meta(&self, subtask: usize) -> PathBuf {
        self.dir
            .join(format!("{PREFIX}{}{subtask}.open.json", self.tag))
    }

    fn rolled(&self, subtask: usize, first: u64, last: u64) -> PathBuf {
        self.dir.join(format!(
            "part-{}{subtask}-{first:010}-{last:010}.{}",
            self.tag, self.ext
        ))
    }

    /// The open part's record; a part renamed into view before its side file was removed
    /// (a crash) counts as none.
    fn load_open(&self, subtask: usize) -> Result<OpenPart, ConnectorError> {
        let meta = self.open_meta(subtask);
        let text = match std::fs::read(&meta) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OpenPart::default()),
            Err(e) => {
                return Err(ConnectorError::io(
                    format!("reading '{}'", meta.display()),
                    e,
                ));
            }
        };
        if !self.open_path(subtask).exists() {
            txn::remove_if_exists(&meta)?;
            return Ok(OpenPart::default());
        }
        serde_json::from_slice(&text)
            .map_err(|e| ConnectorError::Other(format!("'{}' is damaged: {e}", meta.display())))
    }

    fn save_open(&self, subtask: usize, open: &OpenPart) -> Result<(), ConnectorError> {
        let meta = self.open_meta(subtask);
        let json = serde_json::to_vec(open)
            .map_err(|e| ConnectorError::Other(format!("encoding '{}': {e}", meta.display())))?;
        let tmp = meta.with_extension("json.tmp");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::File::open(&tmp).and_then(|f| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &meta))
            .map_err(|e| ConnectorError::io(format!("writing '{}'", meta.display()), e))?;
        self.sync()
    }

    fn sync(&self) -> Result<(), ConnectorError> {
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ConnectorError::io(format!("fsync '{}'", self.dir.display()), e))
    }

    /// Runs `f` holding the output directory's lock: in a distributed run the
    /// member that lost a task may still be applying one of its published checkpoints
    /// while the new owner recovers, and appends to an open part must not interleave. Not
    /// reentrant (`flock` locks of two descriptors conflict even within one process): only
    /// the entry points take it.
    fn locked<T>(
        &self,
        f: impl FnOnce() -> Result<T, ConnectorError>,
    ) -> Result<T, ConnectorError> {
        // The directory itself is the lock (`flock` on its descriptor): no file is left
        // among the parts.
        let file = std::fs::File::open(&self.dir)
            .and_then(|f| f.lock().map(|()| f))
            .map_err(|e| ConnectorError::io(format!("locking '{}'", self.dir.display()), e))?;
        let result = f();
        drop(file);
        result
    }

    /// Open parts: back to the restored checkpoint (from scratch: gone).
    fn discard_open_after(&self, restored: Option<u64>) -> Result<(), ConnectorError> {
        for subtask in self.open_subtasks()? {
            let mut open = self.load_open(subtask)?;
            open.marks
                .retain(|(c, _)| restored.is_some_and(|r| *c <= r));
            match open.marks.last() {
                None => {
                    txn::remove_if_exists(&self.open_path(subtask))?;
                    txn::remove_if_exists(&self.open_meta(subtask))?;
                }
                Some((_, len)) => {
                    self.truncate_open(subtask, *len)?;
                    self.save_open(subtask, &open)?;
                }
            }
        }
        Ok(())
    }

    /// [`PartFiles::roll`] under the lock.
    fn roll_locked(&self, subtask: usize) -> Result<(), ConnectorError> {
        self.locked(|| self.roll(subtask))
    }

    /// Appends a committed batch to the subtask's open part, at most once.
    fn append(&self, txn: &Txn, sealed: &Path, rolling: Rolling) -> Result<(), ConnectorError> {
        use std::io::{Seek as _, SeekFrom};
        let mut open = self.load_open(txn.subtask)?;
        if open.marks.last().is_some_and(|(c, _)| *c >= txn.checkpoint) || self.applied(txn)? {
            return Ok(());
        }
        let base = open.marks.last().map_or(0, |(_, len)| *len);
        if open.marks.is_empty() {
            open.opened_ms = runnel_common::time::now_ms();
        }
        let path = self.open_path(txn.subtask);
        let ctx = |what: &str| format!("{what} '{}'", path.display());
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| ConnectorError::io(ctx("opening"), e))?;
        // Whatever a crashed append left past the last recorded length goes.
        out.set_len(base)
            .and_then(|()| out.seek(SeekFrom::Start(base)).map(|_| ()))
            .map_err(|e| ConnectorError::io(ctx("truncating"), e))?;
        let mut input = std::fs::File::open(sealed)
            .map_err(|e| ConnectorError::io(format!("reading '{}'", sealed.display()), e))?;
        if base > 0 && self.header_len > 0 {
            input
                .seek(SeekFrom::Start(self.header_len))
                .map_err(|e| ConnectorError::io(format!("reading '{}'", sealed.display()), e))?;
        }
        std::io::copy(&mut input, &mut out)
            .map_err(|e| ConnectorError::io(ctx("appending to"), e))?;
        out.sync_all()
            .map_err(|e| ConnectorError::io(ctx("fsync"), e))?;
        let len = out
            .metadata()
            .map_err(|e| ConnectorError::io(ctx("reading"), e))?
            .len();
        drop(out);
        crash_point("mid-apply", txn.checkpoint);
        open.marks.push((txn.checkpoint, len));
        self.save_open(txn.subtask, &open)?;
        let age = runnel_common::time::now_ms() - open.opened_ms;
        if len >= rolling.max_bytes || age >= rolling.max_age_ms {
            self.roll(txn.subtask)?;
        }
        Ok(())
    }

    /// Renames the subtask's open part into view (nothing when none is open).
    fn roll(&self, subtask: usize) -> Result<(), ConnectorError> {
        let open = self.load_open(subtask)?;
        let (Some((first, _)), Some((last, len))) = (open.marks.first(), open.marks.last()) else {
            return Ok(());
        };
        let to = self.rolled(subtask, *first, *last);
        // Only what the side file records was committed.
        let path = self.truncate_open(subtask, *len)?;
        std::fs::rename(&path, &to)
            .map_err(|e| ConnectorError::io(format!("committing '{}'", to.display()), e))?;
        self.sync()?;
        txn::remove_if_exists(&self.open_meta(subtask))?;
        self.sync()
    }

    /// Cuts the subtask's open part back to `len` bytes, durably; returns its path.
    fn truncate_open(&self, subtask: usize, len: u64) -> Result<PathBuf, ConnectorError> {
        let path = self.open_path(subtask);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(len).and_then(|()| f.sync_all()))
            .map_err(|e| ConnectorError::io(format!("truncating '{}'", path.display()), e))?;
        Ok(path)
    }

    /// The subtasks with an open part.
    fn open_subtasks(&self) -> Result<Vec<usize>, ConnectorError> {
        let head = format!("{PREFIX}{}", self.tag);
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| ConnectorError::io(format!("reading '{}'", self.dir.display()), e))?;
        Ok(entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix(&head)?
                    .strip_suffix(".open.json")?
                    .parse()
                    .ok()
            })
            .collect())
    }

    fn visible(&self, txn: &Txn) -> PathBuf {
        self.dir.join(format!(
            "part-{}{}-{:010}.{}",
            self.tag, txn.subtask, txn.checkpoint, self.ext
        ))
    }
}

impl Apply for PartFiles {
    fn apply(&self, txn: &Txn, sealed: &Path) -> Result<(), ConnectorError> {
        if let Some(rolling) = self.rolling {
            if txn.checkpoint != txn::FINAL {
                return self.locked(|| self.append(txn, sealed, rolling));
            }
            // Rows after the last checkpoint get a part of their own, as without rolling:
            // a restart from that checkpoint (a crash before the process exits) must be
            // able to drop them, which it cannot inside a part that also holds older rows.
            self.roll_locked(txn.subtask)?;
        }
        let to = self.visible(txn);
        match std::fs::rename(sealed, &to) {
            Ok(()) => {}
            // Renamed before a crash: already applied.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => {}
            Err(e) => {
                return Err(ConnectorError::io(
                    format!("committing '{}'", to.display()),
                    e,
                ));
            }
        }
        crash_point("mid-apply", txn.checkpoint);
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ConnectorError::io(format!("fsync '{}'", self.dir.display()), e))
    }

    fn applied(&self, txn: &Txn) -> Result<bool, ConnectorError> {
        if self.visible(txn).exists() {
            return Ok(true);
        }
        if self.rolling.is_none() {
            return Ok(false);
        }
        if self
            .load_open(txn.subtask)?
            .marks
            .iter()
            .any(|(c, _)| *c == txn.checkpoint)
        {
            return Ok(true);
        }
        // In a part already rolled into view: `part-<subtask>-<first>-<last>`.
        let head = format!("part-{}{}-", self.tag, txn.subtask);
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| ConnectorError::io(format!("reading '{}'", self.dir.display()), e))?;
        Ok(entries.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(range) = name.strip_prefix(&head).and_then(|r| r.split('.').next()) else {
                return false;
            };
            match range
                .split_once('-')
                .map(|(a, b)| (a.parse::<u64>(), b.parse::<u64>()))
            {
                Some((Ok(first), Ok(last))) => (first..=last).contains(&txn.checkpoint),
                _ => false,
            }
        }))
    }

    fn discard_after(&self, restored: Option<u64>) -> Result<(), ConnectorError> {
        self.locked(|| self.discard_open_after(restored))?;
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| ConnectorError::io(format!("reading '{}'", self.dir.display()), e))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name
                .strip_prefix("part-")
                .and_then(|r| r.strip_prefix(self.tag.as_str()))
            else {
                continue;
            };
            // Another task's files (or, for a task, those of a run in one process).
            if self.tag.is_empty() && rest.starts_with("task-") {
                continue;
            }
            let id = rest
                .split('-')
                .nth(1)
                .and_then(|r| r.split('.').next())
                .and_then(|id| id.parse::<u64>().ok());
            let stale = match (restored, id) {
                (None, _) => true,
                (Some(r), Some(id)) => id > r,
                (Some(_), None) => false,
            };
            if stale {
                std::fs::remove_file(e.path()).map_err(|err| {
                    ConnectorError::io(format!("removing '{}'", e.path().display()), err)
                })?;
            }
        }
        Ok(())
    }
}

fn ext(format: FileSinkFormat) -> &'static str {
    match format {
        FileSinkFormat::Json => "jsonl",
        FileSinkFormat::Csv => "csv",
    }
}

/// Prepares `dir` for a run resuming after checkpoint `restored` (`None`: from scratch).
///
/// # Errors
/// The directory cannot be created, read or changed.
pub fn recover(
    dir: &Path,
    format: FileSinkFormat,
    schema: &arrow::datatypes::SchemaRef,
    restored: txn::Resume,
    task: Option<crate::TaskScope>,
    mirror: Option<&dyn txn::SealedStore>,
    rolling: Option<Rolling>,
) -> Result<(), ConnectorError> {
    let parts = PartFiles {
        dir: dir.to_path_buf(),
        ext: ext(format),
        tag: tag(task),
        rolling,
        header_len: header(format, schema)?.len() as u64,
    };
    txn::recover_with(
        dir,
        &format!("{PREFIX}{}", tag(task)),
        &parts,
        restored,
        mirror,
    )
}

/// Shows every open part in `dir` now (their rows are committed): for a run that will
/// not be resumed (the demo's temporary data directory), so nothing stays hidden.
///
/// # Errors
/// The directory cannot be read or changed.
pub fn roll_open_parts(dir: &Path, format: FileSinkFormat) -> Result<usize, ConnectorError> {
    let mut rolled = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // `.part-<tag><subtask>.open.json`
        let Some(stem) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_suffix(".open.json"))
        else {
            continue;
        };
        let (tag, subtask) = match stem.rsplit_once('-') {
            Some((t, s)) => (format!("{t}-"), s),
            None => (String::new(), stem),
        };
        let Ok(subtask) = subtask.parse::<usize>() else {
            continue;
        };
        let parts = PartFiles {
            dir: dir.to_path_buf(),
            ext: ext(format),
            tag,
            rolling: None,
            header_len: 0,
        };
        parts.roll_locked(subtask)?;
        rolled += 1;
    }
    Ok(rolled)
}

/// The bytes every staged batch starts with: a CSV header row, or nothing.
fn header(
    format: FileSinkFormat,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<Vec<u8>, ConnectorError> {
    let mut header = Vec::new();
    if format == FileSinkFormat::Csv {
        CsvEncoder.header(schema, &mut header)?;
    }
    Ok(header)
}

/// One subtask's part files.
pub struct PartFileSink {
    format: FileSinkFormat,
    metrics: ConnectorMetrics,
    staging: Staging,
    buf: Vec<u8>,
    parts: Arc<PartFiles>,
    subtask: usize,
}

impl PartFileSink {
    /// A subtask writing part files into `dir` (already recovered).
    ///
    /// # Errors
    /// The CSV header cannot be encoded.
    pub fn try_new(
        dir: PathBuf,
        subtask: usize,
        format: FileSinkFormat,
        schema: &arrow::datatypes::SchemaRef,
        metrics: ConnectorMetrics,
        task: Option<crate::TaskScope>,
        rolling: Option<Rolling>,
    ) -> Result<Self, ConnectorError> {
        let header = header(format, schema)?;
        let parts = Arc::new(PartFiles {
            dir: dir.clone(),
            ext: ext(format),
            tag: tag(task),
            rolling,
            header_len: header.len() as u64,
        });
        let prefix = format!("{PREFIX}{}", tag(task));
        Ok(PartFileSink {
            format,
            metrics,
            staging: Staging::new(dir, &prefix, subtask, header, parts.clone()),
            buf: Vec::new(),
            parts,
            subtask,
        })
    }
}

impl PartFileSink {
    /// Keeps copies of sealed batches in `mirror` (see [`txn::SealedStore`]).
    #[must_use]
    pub fn with_mirror(mut self, mirror: Option<Arc<dyn txn::SealedStore>>) -> Self {
        self.staging = self.staging.with_mirror(mirror);
        self
    }

    /// Names this run's staged files after its attempt ([`Staging::with_attempt`]).
    #[must_use]
    pub fn with_attempt(mut self, attempt: Option<u64>) -> Self {
        self.staging = self.staging.with_attempt(attempt);
        self
    }
}

#[async_trait]
impl Sink for PartFileSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        self.buf.clear();
        match self.format {
            FileSinkFormat::Json => JsonEncoder.encode(&batch, &mut self.buf)?,
            FileSinkFormat::Csv => CsvEncoder.encode(&batch, &mut self.buf)?,
        }
        self.staging.write(&self.buf)?;
        self.metrics.rows.add(batch.num_rows() as u64);
        self.metrics.bytes.add(self.buf.len() as u64);
        Ok(())
    }

    async fn pre_commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        self.staging.seal(checkpoint)
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        self.staging.commit(checkpoint)
    }

    async fn finish(&mut self) -> Result<(), ConnectorError> {
        // The input ended: everything written is final, and an open part is rolled.
        self.staging.finish()?;
        if self.parts.rolling.is_some() {
            self.parts.roll_locked(self.subtask)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(dir: &Path, max_bytes: u64) -> PartFiles {
        PartFiles {
            dir: dir.to_path_buf(),
            ext: "csv",
            tag: String::new(),
            rolling: Some(Rolling {
                max_bytes,
                max_age_ms: 3_600_000,
            }),
            header_len: 4,
        }
    }

    /// A sealed batch of `rows` lines after the header `h,x\n`.
    fn sealed(dir: &Path, checkpoint: u64, rows: &[&str]) -> PathBuf {
        let path = dir.join(format!(".part-0-{checkpoint}.sealed"));
        let mut text = String::from("h,x\n");
        for r in rows {
            text.push_str(r);
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    fn visible(dir: &Path) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("part-"))
            .map(|n| {
                let text = std::fs::read_to_string(dir.join(&n)).unwrap();
                (n, text)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn committed_batches_accumulate_once_and_roll_by_size_or_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = parts(dir.path(), 1 << 20);
        let t = |checkpoint| Txn {
            subtask: 0,
            checkpoint,
        };
        p.apply(&t(1), &sealed(dir.path(), 1, &["a,1"])).unwrap();
        // Applied again (a crash before the sealed batch was deleted): nothing twice.
        assert!(p.applied(&t(1)).unwrap());
        p.apply(&t(1), &sealed(dir.path(), 1, &["a,1"])).unwrap();
        p.apply(&t(2), &sealed(dir.path(), 2, &["b,2", "c,3"]))
            .unwrap();
        assert!(visible(dir.path()).is_empty(), "hidden until rolled");
        // A half-done append of checkpoint 3 (a crash) is cut off on the next apply.
        let open = p.open_path(0);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&open)
            .unwrap();
        std::io::Write::write_all(&mut f, b"garbage-from-a-crash").unwrap();
        drop(f);
        p.apply(&t(3), &sealed(dir.path(), 3, &["d,4"])).unwrap();
        // A restart from checkpoint 2 drops checkpoint 3's rows from the open part.
        p.discard_after(Some(2)).unwrap();
        p.roll(0).unwrap();
        assert_eq!(
            visible(dir.path()),
            vec![(
                "part-0-0000000001-0000000002.csv".to_string(),
                "h,x\na,1\nb,2\nc,3\n".to_string()
            )]
        );
        assert!(p.applied(&t(2)).unwrap() && !p.applied(&t(3)).unwrap());
        // Rows after the last checkpoint: a part of their own, dropped by a restart.
        p.apply(&t(3), &sealed(dir.path(), 3, &["d,4"])).unwrap();
        p.apply(&t(txn::FINAL), &sealed(dir.path(), txn::FINAL, &["z,9"]))
            .unwrap();
        assert_eq!(visible(dir.path()).len(), 3, "{:?}", visible(dir.path()));
        p.discard_after(Some(3)).unwrap();
        assert_eq!(visible(dir.path()).len(), 2, "{:?}", visible(dir.path()));
        // A small size rolls at the commit that reaches it.
        let small = parts(dir.path(), 8);
        small
            .apply(&t(4), &sealed(dir.path(), 4, &["e,5", "f,6"]))
            .unwrap();
        assert_eq!(visible(dir.path()).len(), 3);
        // From scratch: every part goes.
        small
            .apply(&t(5), &sealed(dir.path(), 5, &["g,7"]))
            .unwrap();
        small.discard_after(None).unwrap();
        assert!(visible(dir.path()).is_empty());
        assert!(!small.open_path(0).exists() && !small.open_meta(0).exists());
    }
}
