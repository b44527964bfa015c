//! `blackhole` sink: discards every row and counts it; for benchmarks.

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use runnel_common::TableSpec;
use runnel_common::metrics::ConnectorMetrics;

use crate::descriptor::{self, Connector, Guarantee};
use crate::{ConnectorError, Sink, SinkContext};

/// `connector = 'blackhole'`: no options.
pub const CONNECTOR: Connector = Connector {
    name: "blackhole",
    doc: "discards rows after counting them (benchmarks)",
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

/// A sink subtask that drops rows after counting them.
pub struct BlackholeSink {
    metrics: ConnectorMetrics,
}

/// One blackhole per subtask.
pub fn build(
    _: &TableSpec,
    contexts: Vec<SinkContext>,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
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
