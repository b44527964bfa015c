//! The `Operator` trait: what every streaming operator implements, and the
//! `Output` collector it emits batches into.

use arrow::record_batch::RecordBatch;
use runnel_common::Timestamp;

use crate::error::EngineError;

/// Batches an operator emitted during one call; the subtask loop sends them on.
#[derive(Debug, Default)]
pub struct Output {
    batches: Vec<RecordBatch>,
}

impl Output {
    /// Emits a batch; empty batches are dropped here so no edge carries one.
    pub fn emit(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.batches.push(batch);
        }
    }

    /// Takes what was emitted.
    pub fn drain(&mut self) -> std::vec::Drain<'_, RecordBatch> {
        self.batches.drain(..)
    }
}

/// Named Arrow batches an operator saves at a checkpoint.
#[derive(Debug, Default)]
pub struct StateWriter {
    /// (name, rows) pairs in the order written.
    pub entries: Vec<(String, RecordBatch)>,
}

impl StateWriter {
    /// Saves `batch` under `name`.
    pub fn put(&mut self, name: impl Into<String>, batch: RecordBatch) {
        self.entries.push((name.into(), batch));
    }
}

/// The state an operator saved, handed back on restore.
#[derive(Debug, Default)]
pub struct StateReader {
    /// (name, rows) pairs as written.
    pub entries: Vec<(String, RecordBatch)>,
}

impl StateReader {
    /// The batches saved under `name`.
    pub fn get<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a RecordBatch> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, b)| b)
    }
}

/// A streaming operator subtask.
///
/// The engine guarantees: calls come from one task, never concurrently; a
/// batch's event times are not older than the last watermark unless they are
/// late (the operator decides what to do with late rows and counts them);
/// `process_watermark` is called with strictly increasing values, and with
/// `Timestamp::MAX` once when every input has ended; `snapshot` is called
/// when checkpoint barriers from all inputs have arrived.
pub trait Operator: Send {
    /// Whether `process_batch` may block for long (model inference): the engine then
    /// runs it where it cannot stall other subtasks.
    fn blocking(&self) -> bool {
        false
    }

    /// Rows arrived on input `input` (index into the node's inputs).
    ///
    /// # Errors
    /// Only when the pipeline cannot continue.
    fn process_batch(
        &mut self,
        input: usize,
        batch: RecordBatch,
        out: &mut Output,
    ) -> Result<(), EngineError>;

    /// Event time advanced to `watermark` on every input: fire what is complete.
    fn process_watermark(
        &mut self,
        _watermark: Timestamp,
        _out: &mut Output,
    ) -> Result<(), EngineError> {
        Ok(())
    }

    /// The wall-clock time (epoch ms) at which the operator next needs to act even if no
    /// input arrives (a processing-time window's end, a mini-batch's latency), if any. The
    /// engine asks after every event and calls [`Operator::on_timer`] once it has passed.
    fn next_timer(&self) -> Option<Timestamp> {
        None
    }

    /// The wall clock reached `now`, at or after the time [`Operator::next_timer`] named.
    fn on_timer(&mut self, _now: Timestamp, _out: &mut Output) -> Result<(), EngineError> {
        Ok(())
    }

    /// Saves the operator's state for a checkpoint. Stateless operators save nothing.
    fn snapshot(&mut self, _state: &mut StateWriter) -> Result<(), EngineError> {
        Ok(())
    }

    /// Restores state saved by [`Operator::snapshot`] before any input arrives.
    fn restore(&mut self, _state: &StateReader) -> Result<(), EngineError> {
        Ok(())
    }
}
