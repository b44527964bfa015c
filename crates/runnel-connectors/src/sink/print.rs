//! `print` sink: one JSON object per row on stdout, for demos and debugging.
//!
//! At-least-once: rows are printed as they arrive, so after a restart from a checkpoint
//! the rows since that checkpoint are printed again.

use std::io::Write as _;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use runnel_common::TableSpec;
use runnel_common::metrics::ConnectorMetrics;

use crate::descriptor::{self, Connector, Guarantee};
use crate::format::json::JsonEncoder;
use crate::{ConnectorError, Sink, SinkContext};

/// `connector = 'print'`: no options.
pub const CONNECTOR: Connector = Connector {
    name: "print",
    doc: "one JSON object per row on stdout",
    options: &[],
    source: None,
    sink: Some(build),
    unbounded: descriptor::never_unbounded,
    guarantee: Guarantee::AtLeastOnce,
    updates: descriptor::takes_updates,
    needs: &[],
    validate: descriptor::no_validation,
    check: descriptor::no_check,
    metadata: &[],
    upserts: false,
    lookup: None,
};

/// A sink subtask writing JSON lines to stdout.
pub struct PrintSink {
    metrics: ConnectorMetrics,
    buf: Vec<u8>,
}

/// One printer per subtask.
pub fn build(
    _: &TableSpec,
    contexts: Vec<SinkContext>,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
    Ok(contexts
        .into_iter()
        .map(|ctx| {
            Box::new(PrintSink {
                metrics: ctx.metrics,
                buf: Vec::new(),
            }) as Box<dyn Sink>
        })
        .collect())
}

#[async_trait]
impl Sink for PrintSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        self.buf.clear();
        JsonEncoder.encode(&batch, &mut self.buf)?;
        // One lock per batch: lines of concurrent subtasks never interleave mid-line.
        let mut out = std::io::stdout().lock();
        out.write_all(&self.buf)
            .map_err(|e| ConnectorError::io("writing to stdout", e))?;
        self.metrics.rows.add(batch.num_rows() as u64);
        self.metrics.bytes.add(self.buf.len() as u64);
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), ConnectorError> {
        std::io::stdout()
            .lock()
            .flush()
            .map_err(|e| ConnectorError::io("flushing stdout", e))
    }
}
