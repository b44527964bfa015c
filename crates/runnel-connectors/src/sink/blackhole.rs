//! `blackhole` sink: discards every row and counts it; for benchmarks.

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use runnel_common::TableSpec;
use runnel_common::metrics::ConnectorMetrics;

use crate::{ConnectorError, Sink, SinkContext};

/// Option keys of `connector = 'blackhole'` (none besides `connector`).
pub const OPTIONS: &[&str] = &[];

/// A sink subtask that drops rows after counting them.
pub struct BlackholeSink {
    metrics: ConnectorMetrics,
}

/// Builds one blackhole per subtask; any option other than `connector` is an error.
pub fn build(
    spec: &TableSpec,
    contexts: Vec<SinkContext>,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
    spec.options
        .check_known("blackhole", OPTIONS)
        .map_err(|source| ConnectorError::Option {
            table: spec.name.clone(),
            source,
        })?;
    Ok(contexts
        .into_iter()
        .map(|ctx| {
            Box::new(BlackholeSink {
                metrics: ctx.metrics,
            }) as Box<dyn Sink>
        })
        .collect())
}

#[async_trait]
impl Sink for BlackholeSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        self.metrics.rows.add(batch.num_rows() as u64);
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}
