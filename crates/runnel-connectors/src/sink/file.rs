//! `file` sink: JSON lines (or CSV) appended to one file shared by all subtasks.
//! In a checkpointed pipeline, exactly-once part files instead (see `file_parts`).
//!
//! The file is created (truncated) when the pipeline is built. Each subtask
//! encodes a batch outside the lock and appends the bytes under it, so rows of
//! one batch stay together; `finish` flushes and fsyncs.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use runnel_common::TableSpec;
use runnel_common::metrics::ConnectorMetrics;

use crate::format::csv::CsvEncoder;
use crate::format::json::JsonEncoder;
use crate::{ConnectorError, Sink, SinkContext};

/// The output encodings of the file sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSinkFormat {
    /// One JSON object per line.
    Json,
    /// A header row, then one CSV row per row.
    Csv,
}

/// The writer shared by every subtask of one sink table.
struct Shared {
    path: PathBuf,
    writer: Mutex<BufWriter<File>>,
}

/// A sink subtask appending to the shared output file.
pub struct FileSink {
    shared: Arc<Shared>,
    format: FileSinkFormat,
    metrics: ConnectorMetrics,
    buf: Vec<u8>,
}

/// The rolling policy of a checkpointed sink's part files, when one is set.
fn rolling(spec: &TableSpec) -> Result<Option<crate::sink::file_parts::Rolling>, ConnectorError> {
    let o = &spec.options;
    let size = o.get("sink.rolling-policy.file-size");
    let interval = o.get("sink.rolling-policy.rollover-interval");
    if size.is_none() && interval.is_none() {
        return Ok(None);
    }
    let bad = |key: &str, why: String| {
        ConnectorError::Other(format!("table '{}': option '{key}': {why}", spec.name))
    };
    let max_bytes = match size {
        None => 128 << 20,
        Some(t) => crate::sink::filesystem::parse_size(t).ok_or_else(|| {
            bad(
                "sink.rolling-policy.file-size",
                format!("'{t}' is not a size (e.g. '128MB')"),
            )
        })?,
    };
    let max_age_ms = match interval {
        None => 30 * 60_000,
        Some(t) => runnel_common::time::parse_duration_ms(t)
            .filter(|ms| *ms > 0)
            .ok_or_else(|| {
                bad(
                    "sink.rolling-policy.rollover-interval",
                    format!("'{t}' is not a positive duration (e.g. '5 min')"),
                )
            })?,
    };
    Ok(Some(crate::sink::file_parts::Rolling {
        max_bytes,
        max_age_ms,
    }))
}

/// Validates options, creates (truncates) the output file and returns one subtask per context.
pub fn build(
    spec: &TableSpec,
    contexts: Vec<SinkContext>,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
    let opt = |source| ConnectorError::Option {
        table: spec.name.clone(),
        source,
    };
    crate::source::file::CONNECTOR.check_options(spec)?;
    let path = PathBuf::from(spec.options.required("file", "path").map_err(opt)?);
    let format = match spec
        .options
        .choice("file", "format", &["json", "csv"])
        .map_err(opt)?
    {
        Some("csv") => FileSinkFormat::Csv,
        _ => FileSinkFormat::Json,
    };
    let rolling = rolling(spec)?;
    if let Some(mode) = contexts.first().and_then(|c| c.checkpoint) {
        // Exactly once: `path` is a directory of part files committed with checkpoints.
        let task = contexts.first().and_then(|c| c.task);
        let mirror = contexts.first().and_then(|c| c.sealed.clone());
        crate::sink::file_parts::recover(
            &path,
            format,
            &spec.schema,
            mode.into(),
            task,
            mirror.as_deref(),
            rolling,
        )
        .map_err(|e| ConnectorError::Other(format!("table '{}': {e}", spec.name)))?;
        return contexts
            .into_iter()
            .map(|ctx| {
                crate::sink::file_parts::PartFileSink::try_new(
                    path.clone(),
                    ctx.subtask,
                    format,
                    &spec.schema,
                    ctx.metrics,
                    ctx.task,
                    rolling,
                )
                .map(|s| {
                    s.with_mirror(ctx.sealed.clone())
                        .with_attempt(ctx.checkpoint.and_then(|m| m.attempt))
                })
                .map(|s| Box::new(s) as Box<dyn Sink>)
            })
            .collect();
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            ConnectorError::io(
                format!(
                    "table '{}': creating the directory of output file '{}'",
                    spec.name,
                    path.display()
                ),
                e,
            )
        })?;
    }
    let file = File::create(&path).map_err(|e| {
        ConnectorError::io(
            format!(
                "table '{}': creating output file '{}'",
                spec.name,
                path.display()
            ),
            e,
        )
    })?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    if format == FileSinkFormat::Csv {
        let schema: SchemaRef = spec.schema.clone();
        let mut header = Vec::new();
        CsvEncoder.header(&schema, &mut header)?;
        writer
            .write_all(&header)
            .map_err(|e| ConnectorError::io(format!("writing '{}'", path.display()), e))?;
    }
    let shared = Arc::new(Shared {
        path,
        writer: Mutex::new(writer),
    });
    Ok(contexts
        .into_iter()
        .map(|ctx| {
            Box::new(FileSink {
                shared: shared.clone(),
                format,
                metrics: ctx.metrics,
                buf: Vec::new(),
            }) as Box<dyn Sink>
        })
        .collect())
}

impl FileSink {
    fn locked(&self) -> Result<std::sync::MutexGuard<'_, BufWriter<File>>, ConnectorError> {
        self.shared.writer.lock().map_err(|_| {
            ConnectorError::Other(format!(
                "output file '{}': another subtask failed while writing",
                self.shared.path.display()
            ))
        })
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        self.buf.clear();
        match self.format {
            FileSinkFormat::Json => JsonEncoder.encode(&batch, &mut self.buf)?,
            FileSinkFormat::Csv => CsvEncoder.encode(&batch, &mut self.buf)?,
        }
        self.locked()?.write_all(&self.buf).map_err(|e| {
            ConnectorError::io(format!("writing '{}'", self.shared.path.display()), e)
        })?;
        self.metrics.rows.add(batch.num_rows() as u64);
        self.metrics.bytes.add(self.buf.len() as u64);
        Ok(())
    }

    async fn pre_commit(&mut self, _checkpoint: u64) -> Result<(), ConnectorError> {
        self.locked()?.flush().map_err(|e| {
            ConnectorError::io(format!("flushing '{}'", self.shared.path.display()), e)
        })
    }

    async fn finish(&mut self) -> Result<(), ConnectorError> {
        // Every subtask flushes and syncs: whichever finishes last leaves the file complete.
        let mut w = self.locked()?;
        let ctx = || format!("flushing '{}'", self.shared.path.display());
        w.flush().map_err(|e| ConnectorError::io(ctx(), e))?;
        w.get_ref()
            .sync_all()
            .map_err(|e| ConnectorError::io(ctx(), e))
    }
}
