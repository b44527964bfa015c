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
    /// A quality node's violations, per rule.
    pub rules: NamedCounters,
    /// A source's live profile (`SET 'quality.profile' = 'on'`).
    pub profile: crate::profile::ProfileSlot,
}

/// Counters by name (a quality node's violations per rule), shared by its subtasks and
/// kept in the order they were first asked for.
#[derive(Debug, Clone, Default)]
pub struct NamedCounters(Arc<std::sync::Mutex<Vec<(String, Counter)>>>);

impl NamedCounters {
    /// The counter called `name`, made on first use.
    pub fn counter(&self, name: &str) -> Counter {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = all.iter().find(|(n, _)| n == name) {
            return c.clone();
        }
        let c = Counter::default();
        all.push((name.to_string(), c.clone()));
        c
    }

    /// Every counter's name and value.
    pub fn values(&self) -> Vec<(String, u64)> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().map(|(n, c)| (n.clone(), c.get())).collect()
    }
}

/// Metrics of a whole running pipeline, indexed like the graph's nodes.
#[derive(Debug, Clone, Default)]
pub struct PipelineMetrics {
    /// One entry per node.
    pub nodes: Arc<Vec<NodeMetrics>>,
}
