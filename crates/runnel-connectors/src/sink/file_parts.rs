//! The `file` sink of a checkpointed pipeline: exactly-once part files.
//!
//! `path` is a directory. Each subtask writes `.part-<subtask>-<n>.inprogress`; at
//! checkpoint `n`'s barrier it fsyncs and renames it to `.part-<subtask>-<n>.pending`
//! (pre-commit); once checkpoint `n` is complete it renames it to
//! `part-<subtask>-<n>.<ext>` and fsyncs the directory (commit). Readers only see
//! `part-*` files, so they see exactly the rows of complete checkpoints. At restart, a
//! pending file of a checkpoint that completed is committed, everything else hidden is
//! deleted, and the rows are produced again from the restored positions.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use runnel_common::metrics::ConnectorMetrics;

use crate::format::csv::CsvEncoder;
use crate::format::json::JsonEncoder;
use crate::sink::file::FileSinkFormat;
use crate::{ConnectorError, Sink};

/// One subtask's part files.
pub struct PartFileSink {
    dir: PathBuf,
    subtask: usize,
    ext: &'static str,
    format: FileSinkFormat,
    schema: arrow::datatypes::SchemaRef,
    metrics: ConnectorMetrics,
    current: Option<BufWriter<File>>,
    seq: u64,
    buf: Vec<u8>,
}

fn io(ctx: impl Into<String>) -> impl FnOnce(std::io::Error) -> ConnectorError {
    let ctx = ctx.into();
    move |e| ConnectorError::io(ctx, e)
}

fn inprogress(dir: &Path, subtask: usize, seq: u64) -> PathBuf {
    dir.join(format!(".part-{subtask}-{seq}.inprogress"))
}

fn pending(dir: &Path, subtask: usize, id: u64) -> PathBuf {
    dir.join(format!(".part-{subtask}-{id:010}.pending"))
}

fn visible(dir: &Path, subtask: usize, id: u64, ext: &str) -> PathBuf {
    dir.join(format!("part-{subtask}-{id:010}.{ext}"))
}

fn sync_dir(dir: &Path) -> Result<(), ConnectorError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("fsync directory '{}'", dir.display())))
}

/// Prepares `dir` for a run resuming after checkpoint `restored` (`None`: from scratch):
/// commits pending parts of complete checkpoints, deletes every other hidden part and
/// every part of a later checkpoint (from scratch: every part).
pub fn recover(dir: &Path, ext: &str, restored: Option<u64>) -> Result<(), ConnectorError> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating '{}'", dir.display())))?;
    let entries = std::fs::read_dir(dir).map_err(io(format!("reading '{}'", dir.display())))?;
    for e in entries {
        let e = e.map_err(io(format!("reading '{}'", dir.display())))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if let Some(rest) = name
            .strip_prefix(".part-")
            .and_then(|r| r.strip_suffix(".pending"))
        {
            let parsed = rest
                .split_once('-')
                .and_then(|(s, id)| Some((s.parse::<usize>().ok()?, id.parse::<u64>().ok()?)));
            match (parsed, restored) {
                (Some((s, id)), Some(r)) if id <= r => {
                    std::fs::rename(&path, visible(dir, s, id, ext))
                        .map_err(io(format!("committing '{}'", path.display())))?;
                }
                _ => std::fs::remove_file(&path)
                    .map_err(io(format!("removing '{}'", path.display())))?,
            }
        } else if name.starts_with(".part-") && name.ends_with(".inprogress") {
            std::fs::remove_file(&path).map_err(io(format!("removing '{}'", path.display())))?;
        } else if let Some(rest) = name.strip_prefix("part-") {
            // Parts of checkpoints after the restored one (or, from scratch, all parts) are
            // produced again from the restored positions; keeping them would duplicate rows.
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
                std::fs::remove_file(&path)
                    .map_err(io(format!("removing '{}'", path.display())))?;
            }
        }
    }
    sync_dir(dir)
}

impl PartFileSink {
    /// A subtask writing part files into `dir` (already recovered).
    pub fn new(
        dir: PathBuf,
        subtask: usize,
        format: FileSinkFormat,
        schema: arrow::datatypes::SchemaRef,
        metrics: ConnectorMetrics,
    ) -> Self {
        let ext = match format {
            FileSinkFormat::Json => "jsonl",
            FileSinkFormat::Csv => "csv",
        };
        PartFileSink {
            dir,
            subtask,
            ext,
            format,
            schema,
            metrics,
            current: None,
            seq: 0,
            buf: Vec::new(),
        }
    }

    fn writer(&mut self) -> Result<&mut BufWriter<File>, ConnectorError> {
        if self.current.is_none() {
            self.seq += 1;
            let p = inprogress(&self.dir, self.subtask, self.seq);
            let f = File::create(&p).map_err(io(format!("creating '{}'", p.display())))?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            if self.format == FileSinkFormat::Csv {
                let mut header = Vec::new();
                CsvEncoder.header(&self.schema, &mut header)?;
                w.write_all(&header)
                    .map_err(io(format!("writing '{}'", p.display())))?;
            }
            self.current = Some(w);
        }
        self.current
            .as_mut()
            .ok_or_else(|| ConnectorError::Other("part file not open".into()))
    }

    /// Flushes, fsyncs and renames the open part to `target`.
    fn seal(&mut self, target: PathBuf) -> Result<(), ConnectorError> {
        let Some(mut w) = self.current.take() else {
            return Ok(());
        };
        let from = inprogress(&self.dir, self.subtask, self.seq);
        w.flush()
            .map_err(io(format!("flushing '{}'", from.display())))?;
        w.get_ref()
            .sync_all()
            .map_err(io(format!("fsync '{}'", from.display())))?;
        std::fs::rename(&from, &target).map_err(io(format!("renaming '{}'", from.display())))
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
        let buf = std::mem::take(&mut self.buf);
        let dir = self.dir.display().to_string();
        self.writer()?
            .write_all(&buf)
            .map_err(io(format!("writing a part file in '{dir}'")))?;
        self.metrics.rows.add(batch.num_rows() as u64);
        self.metrics.bytes.add(buf.len() as u64);
        self.buf = buf;
        Ok(())
    }

    async fn pre_commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        let target = pending(&self.dir, self.subtask, checkpoint);
        self.seal(target)
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        // Every pending part up to this checkpoint (an earlier commit may have been skipped).
        let prefix = format!(".part-{}-", self.subtask);
        let entries = std::fs::read_dir(&self.dir)
            .map_err(io(format!("reading '{}'", self.dir.display())))?;
        let mut any = false;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".pending"))
                .and_then(|id| id.parse::<u64>().ok())
            else {
                continue;
            };
            if id <= checkpoint {
                let to = visible(&self.dir, self.subtask, id, self.ext);
                std::fs::rename(e.path(), &to)
                    .map_err(io(format!("committing '{}'", to.display())))?;
                any = true;
            }
        }
        if any {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), ConnectorError> {
        // The input ended: everything written is final, pending parts included.
        let target = visible(&self.dir, self.subtask, u64::from(u32::MAX), self.ext);
        self.seal(target)?;
        self.commit(u64::MAX).await?;
        sync_dir(&self.dir)
    }
}
