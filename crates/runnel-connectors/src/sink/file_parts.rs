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
}

impl PartFiles {
    fn visible(&self, txn: &Txn) -> PathBuf {
        self.dir.join(format!(
            "part-{}{}-{:010}.{}",
            self.tag, txn.subtask, txn.checkpoint, self.ext
        ))
    }
}

impl Apply for PartFiles {
    fn apply(&self, txn: &Txn, sealed: &Path) -> Result<(), ConnectorError> {
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
        Ok(self.visible(txn).exists())
    }

    fn discard_after(&self, restored: Option<u64>) -> Result<(), ConnectorError> {
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
    restored: Option<u64>,
    task: Option<crate::TaskScope>,
    mirror: Option<&dyn txn::SealedStore>,
) -> Result<(), ConnectorError> {
    let parts = PartFiles {
        dir: dir.to_path_buf(),
        ext: ext(format),
        tag: tag(task),
    };
    txn::recover_with(
        dir,
        &format!("{PREFIX}{}", tag(task)),
        &parts,
        restored,
        mirror,
    )
}

/// One subtask's part files.
pub struct PartFileSink {
    format: FileSinkFormat,
    metrics: ConnectorMetrics,
    staging: Staging,
    buf: Vec<u8>,
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
    ) -> Result<Self, ConnectorError> {
        let mut header = Vec::new();
        if format == FileSinkFormat::Csv {
            CsvEncoder.header(schema, &mut header)?;
        }
        let apply = Arc::new(PartFiles {
            dir: dir.clone(),
            ext: ext(format),
            tag: tag(task),
        });
        let prefix = format!("{PREFIX}{}", tag(task));
        Ok(PartFileSink {
            format,
            metrics,
            staging: Staging::new(dir, &prefix, subtask, header, apply),
            buf: Vec::new(),
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
        // The input ended: everything written is final.
        self.staging.finish()
    }
}
