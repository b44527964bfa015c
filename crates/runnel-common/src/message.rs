//! What travels on every edge of the dataflow, in order.

use arrow::record_batch::RecordBatch;

use crate::time::Timestamp;

/// One item on a dataflow edge. Edges are FIFO: a watermark or barrier is
/// ordered with respect to the data around it.
#[derive(Debug, Clone)]
pub enum Message {
    /// Rows; never empty.
    Data(RecordBatch),
    /// Event-time progress of the sending subtask.
    Watermark(Watermark),
    /// Checkpoint barrier: everything before it belongs to checkpoint `n`.
    Barrier(Barrier),
    /// The bounded input finished: acts as `Watermark::At(MAX)`, then the edge closes.
    End,
}

/// Event-time progress announced by a subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watermark {
    /// No later row on this edge has event time older than this.
    At(Timestamp),
    /// The sender has no data for now: do not wait for it when taking the minimum.
    Idle,
}

/// A checkpoint barrier (Chandy–Lamport, aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    /// Checkpoint number, increasing from 1.
    pub checkpoint: u64,
}
