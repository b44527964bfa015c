//! Run counters shared between the engine, connectors and the run summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter, cheap to clone and share across subtasks.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that can go up and down (watermarks, queue depths).
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<std::sync::atomic::AtomicI64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of one connector (all subtasks of one source or sink table).
#[derive(Debug, Clone, Default)]
pub struct ConnectorMetrics {
    /// Rows produced (sources) or written (sinks).
    pub rows: Counter,
    /// Bytes read or written, where known.
    pub bytes: Counter,
    /// Input records rejected and sent to the dead-letter output.
    pub dead_letters: Counter,
    /// Where dead letters were written, for the run summary.
    pub dead_letter_path: Arc<std::sync::Mutex<Option<String>>>,
    /// What is wrong with the external system right now (a broker that cannot be
    /// reached), while the connector retries; `None` when all is well.
    pub problem: Arc<std::sync::Mutex<Option<String>>>,
    /// Records between a source's position and the end of its input (Kafka: high
    /// watermark − position, summed over its partitions), when known.
    pub lag: Gauge,
}

impl ConnectorMetrics {
    /// Notes a problem with the external system (shown on the page until cleared).
    pub fn set_problem(&self, what: impl Into<String>) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = Some(what.into());
    }

    /// The external system works again.
    pub fn clear_problem(&self) {
        let mut p = self.problem.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_some() {
            *p = None;
        }
    }

    /// The current problem, if any.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
