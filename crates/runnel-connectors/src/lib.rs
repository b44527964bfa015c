//! Sources and sinks: where rows enter and leave a pipeline.
//!
//! The planner describes each table as a [`TableSpec`]; [`registry`] turns it
//! into one [`Source`] or [`Sink`] per parallel subtask, keyed by the table's
//! `connector = '…'` option. Formats ([`format`]) convert bytes to Arrow
//! `RecordBatch`es and back; records that cannot be converted become dead
//! letters, they never stop the pipeline.
#![warn(missing_docs)]

pub mod dead_letters;
pub mod descriptor;
pub mod error;
pub mod format;
pub mod group;
pub mod infer;
pub mod io_runtime;
pub mod lookup;
pub mod registry;
pub mod results;
pub mod sink;
pub mod source;
pub mod txn;

use std::path::PathBuf;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
pub use error::ConnectorError;
use runnel_common::metrics::ConnectorMetrics;

/// What one call to [`Source::poll`] produced.
#[derive(Debug)]
pub enum SourcePoll {
    /// Rows in the table's declared schema; never empty.
    Batch(RecordBatch),
    /// Nothing available right now; the engine calls again soon (after
    /// injecting barriers or idle watermarks as needed).
    Pending,
    /// A bounded source has no more data.
    End,
}

/// Where a source subtask is and what it shares with its siblings.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// Index of this subtask, `0..parallelism`.
    pub subtask: usize,
    /// Number of subtasks of this source.
    pub parallelism: usize,
    /// Rows read and dead-lettered, shared by all subtasks of the table.
    pub metrics: ConnectorMetrics,
    /// The pipeline's data directory (log, checkpoints, default dead letters).
    pub data_dir: PathBuf,
    /// Preferred number of rows per batch.
    pub batch_size: usize,
    /// The embedded durable log, when the pipeline runs with one (`log` connector).
    pub log: Option<std::sync::Arc<runnel_log::Log>>,
    /// The pipeline checkpoints: positions come from checkpoints, so a source must not
    /// commit its own (e.g. consumer-group offsets).
    pub checkpointing: bool,
    /// Where records that cannot be read go.
    pub dead_letters: std::sync::Arc<dead_letters::DeadLetters>,
    /// In a distributed run, the task this source belongs to: it reads only that
    /// partition of its topics.
    pub task: Option<TaskScope>,
}

/// One task of a distributed run (the Kafka Streams unit): a sub-plan of the pipeline
/// over one partition of its input topics, with its own state and checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskScope {
    /// Which sub-plan of the pipeline (0 until plans are split at repartitions).
    pub subplan: u32,
    /// The input partition the task owns.
    pub partition: i32,
}

impl std::fmt::Display for TaskScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task-{}-{}", self.subplan, self.partition)
    }
}

/// A source subtask. The engine calls it from one task, never concurrently.
///
/// Sources never see watermarks or barriers: the engine computes watermarks
/// from the event-time column and injects barriers between polls.
#[async_trait]
pub trait Source: Send {
    /// The next rows. Must return within about 100 ms (with `Pending` if
    /// nothing arrived) so the engine can emit idle watermarks and barriers.
    ///
    /// # Errors
    /// Only when the source cannot continue (I/O error, lost broker); a bad
    /// record is a dead letter, not an error.
    async fn poll(&mut self) -> Result<SourcePoll, ConnectorError>;

    /// The position to resume from after a restore (offsets, file positions);
    /// recorded in checkpoints. Default: not resumable.
    fn position(&self) -> Option<serde_json::Value> {
        None
    }

    /// Checkpoint `checkpoint`'s barrier is injected now: the rows returned so far (since
    /// the previous barrier) belong to it. Called just before [`Source::position`].
    fn checkpoint_barrier(&mut self, _checkpoint: u64) {}

    /// Checkpoint `checkpoint` is complete (and with it every earlier one): a source whose
    /// upstream wants acknowledgements (MQTT QoS 1, NATS JetStream) gives them now for
    /// what it covers, so a crash before this redelivers them. Default: nothing.
    async fn checkpoint_complete(&mut self, _checkpoint: u64) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Rewinds to a position returned earlier by [`Source::position`].
    async fn seek(&mut self, _position: &serde_json::Value) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// The splits (e.g. Kafka partitions) this subtask reads, when it reads several whose
    /// event times advance separately: the engine then keeps a watermark per split and
    /// emits the smallest over the splits that are not idle, as Flink does per Kafka
    /// partition. Default: none (one watermark for the subtask).
    fn splits(&self) -> Vec<String> {
        Vec::new()
    }

    /// For the batch the last `poll` returned, with [`Source::splits`]: how many of its
    /// rows, in order, came from each split (a split's rows are contiguous).
    fn batch_splits(&mut self) -> Vec<(String, usize)> {
        Vec::new()
    }

    /// How long a split (or the whole subtask) may go without data before it stops holding
    /// event time back; `None`: the pipeline's default.
    fn idle_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// The watermark the source's records carry, when it reads them from upstream
    /// (a distributed run's repartition topic): the engine then emits this one instead of
    /// computing one from the event times. Asked after every poll. Default: none.
    fn watermark(&mut self) -> Option<runnel_common::Watermark> {
        None
    }
}

/// Where a sink subtask is and what it shares with its siblings.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// Index of this subtask, `0..parallelism`.
    pub subtask: usize,
    /// Number of subtasks of this sink.
    pub parallelism: usize,
    /// Rows written, shared by all subtasks of the table.
    pub metrics: ConnectorMetrics,
    /// The pipeline's data directory.
    pub data_dir: PathBuf,
    /// The embedded durable log, when the pipeline runs with one (`log` connector).
    pub log: Option<std::sync::Arc<runnel_log::Log>>,
    /// The pipeline's dashboard panels (`dashboard` connector), served by the web page.
    pub dashboards: std::sync::Arc<sink::dashboard::Dashboards>,
    /// Set when the pipeline checkpoints: sinks that can, commit exactly once.
    pub checkpoint: Option<CheckpointMode>,
    /// In a distributed run, the task this sink belongs to: what it commits is named
    /// after it (transactional ids, part files), so tasks never collide.
    pub task: Option<TaskScope>,
    /// When checkpoints live in an object store: where exactly-once sinks keep copies of
    /// their sealed batches (this table's), so they survive the loss of this machine.
    pub sealed: Option<std::sync::Arc<dyn txn::SealedStore>>,
    /// The pipeline's name (`pipeline.name`), where known: names what a sink commits
    /// where it must be the same on every machine (a distributed task's transactional
    /// ids, bookkeeping rows).
    pub pipeline: Option<String>,
}

/// How a sink takes part in checkpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointMode {
    /// The checkpoint the run resumes from (`None`: a fresh start).
    pub restored: Option<u64>,
    /// In a distributed task: this owner's attempt id ([`txn::attempt_of`] its owner
    /// token), which names its staged and sealed files ([`txn::Staging::with_attempt`]).
    pub attempt: Option<u64>,
    /// The attempt that published the restored checkpoint: recovery applies its batches
    /// only ([`txn::Resume`]).
    pub restored_attempt: Option<u64>,
}

/// A sink subtask. The engine calls it from one task, never concurrently,
/// with batches in the sink's declared schema.
#[async_trait]
pub trait Sink: Send {
    /// Writes rows. May buffer; everything must be durable after `finish`.
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ConnectorError>;

    /// The sink's input watermark advanced (sinks that commit by event time use it).
    async fn watermark(&mut self, _watermark: i64) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Every input went idle (no data for the idle timeout): the watermark stands still
    /// without holding event time back. Default: nothing.
    async fn idle(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Flushes buffered rows before checkpoint `checkpoint` is taken.
    async fn pre_commit(&mut self, _checkpoint: u64) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Makes the rows of checkpoint `checkpoint` visible (two-phase commit).
    async fn commit(&mut self, _checkpoint: u64) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// The input ended: flush and close. Called once.
    async fn finish(&mut self) -> Result<(), ConnectorError>;
}
