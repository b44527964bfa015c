//! Per-node counters: rows in/out, late rows, watermark, time blocked on output.

use std::sync::Arc;

use runnel_common::metrics::{ConnectorMetrics, Counter, Gauge};

/// Counters of one node, shared by its subtasks.
#[derive(Debug, Clone, Default)]
pub struct NodeMetrics {
    /// Rows received.
    pub rows_in: Counter,
    /// Rows emitted.
    pub rows_out: Counter,
    /// Rows dropped because they arrived behind the watermark.
    pub late_rows: Counter,
    /// Current watermark (ms since epoch; i64::MIN before the first).
    pub watermark: Gauge,
    /// Nanoseconds spent waiting for downstream channels (backpressure).
    pub blocked_ns: Counter,
    /// For sources and sinks: the connector's own counters.
    pub connector: ConnectorMetrics,
}

/// Metrics of a whole running pipeline, indexed like the graph's nodes.
#[derive(Debug, Clone, Default)]
pub struct PipelineMetrics {
    /// One entry per node.
    pub nodes: Arc<Vec<NodeMetrics>>,
}
