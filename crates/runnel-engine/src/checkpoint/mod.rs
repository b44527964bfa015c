//! Checkpoints: aligned barriers (Chandy–Lamport, as Flink does), one coordinator per
//! pipeline, state files written through `object_store`, an atomically written manifest.
//!
//! Every interval the coordinator asks each source subtask for checkpoint `n`; the source
//! records its position and sends barrier `n` downstream. An operator that has barrier `n`
//! from all its inputs snapshots its state and forwards the barrier; a sink pre-commits.
//! Each reports to the coordinator, which, once every subtask reported, writes the state
//! files, then the manifest (write, fsync, rename, fsync the directory): only then is `n`
//! complete, and only then are sinks told to commit `n`. A crash at any point before the
//! rename leaves `n` invisible; restart resumes from the newest complete manifest.
//!
//! [`coordinator`] triggers and completes checkpoints, [`store`] is where they are kept
//! (a directory or an object store), [`manifest`] is what a complete one holds and how
//! state files are encoded. Every failure is a [`CheckpointError`].

use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use runnel_common::Timestamp;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

pub mod coordinator;
pub mod manifest;
pub mod savepoint;
pub mod store;

pub use coordinator::Coordinator;
pub use manifest::{FORMAT_VERSION, Manifest, NamedBatches, Restored, SubtaskEntry};
pub use runnel_common::fault::crash_point;
pub use store::{CheckpointDir, S3Options};

/// Why a checkpoint could not be written, listed or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The object store (or the local directory behind it) failed.
    #[error("{location}: {source}")]
    Store {
        /// The file, directory or URL.
        location: String,
        /// What the store said.
        source: object_store::Error,
    },
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A manifest or state file cannot be read as one.
    #[error("{location}: {reason}")]
    Corrupt {
        /// The file.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A checkpoint location that cannot be used as given (not an s3:// URL, no bucket).
    #[error("{0}")]
    Location(String),
    /// A blocking task died (a runnel bug).
    #[error("internal checkpoint error (a runnel bug, please report it): {0}")]
    Internal(String),
    /// Another member took over this task: its checkpoints are no longer ours to publish.
    #[error("{0}")]
    Fenced(String),
}

impl CheckpointError {
    pub(crate) fn io(path: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_string();
        move |source| CheckpointError::Io { path, source }
    }

    pub(crate) fn store(
        location: impl std::fmt::Display,
    ) -> impl FnOnce(object_store::Error) -> Self {
        let location = location.to_string();
        move |source| CheckpointError::Store { location, source }
    }
}

/// How and where a pipeline checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// Time between checkpoints (`execution.checkpointing.interval`).
    pub interval: Duration,
    /// Where this pipeline's checkpoints go (`<state dir>/<pipeline name>`).
    pub dir: CheckpointDir,
    /// Complete checkpoints kept (`execution.checkpointing.retained`, default 3).
    pub retain: usize,
    /// The pipeline's identity.
    pub pipeline: String,
    /// Identifies the dataflow's shape; a checkpoint of another shape cannot be restored.
    pub fingerprint: String,
    /// The checkpoint to resume from, if any.
    pub restore: Option<Arc<Restored>>,
    /// In a distributed run: the token this task's owner wrote with
    /// [`CheckpointDir::claim`]. A checkpoint is published only while the directory's owner
    /// file still holds it, so a member that lost the task (a zombie) cannot publish one
    /// over its new owner's.
    pub owner: Option<String>,
}

/// What subtasks tell the coordinator.
#[derive(Debug)]
pub enum Report {
    /// A subtask finished its part of checkpoint `id`.
    Done {
        /// Checkpoint.
        id: u64,
        /// Node.
        node: usize,
        /// Subtask.
        subtask: usize,
        /// Source position.
        position: Option<serde_json::Value>,
        /// Watermark at the snapshot.
        watermark: Timestamp,
        /// A source subtask was idle at the snapshot.
        idle: bool,
        /// Operator state.
        state: Vec<(String, RecordBatch)>,
    },
    /// A source reached its end and waits for a final checkpoint to cover its last rows.
    Finishing {
        /// Node.
        node: usize,
        /// Subtask.
        subtask: usize,
    },
    /// A subtask ended; it counts as done for every later checkpoint.
    Ended {
        /// Node.
        node: usize,
        /// Subtask.
        subtask: usize,
        /// Last source position.
        position: Option<serde_json::Value>,
    },
}

/// The handles a subtask uses to take part in checkpoints.
#[derive(Clone)]
pub struct Participant {
    /// Where to report.
    pub reports: mpsc::UnboundedSender<Report>,
    /// Sources: checkpoint ids to inject. Sinks: ids to commit.
    pub signals: broadcast::Sender<u64>,
    /// Ids of checkpoints that completed (sources acknowledge what they cover upstream).
    pub completed: broadcast::Sender<u64>,
}

/// A request for a checkpoint now (a savepoint), answered when it completes or fails.
pub type CheckpointRequest = tokio::sync::oneshot::Sender<Result<CheckpointInfo, String>>;

/// Checkpoints kept in [`CheckpointStats::history`].
pub const HISTORY: usize = 20;

/// Status of the last checkpoints, for the run summary and the admin API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointStats {
    /// The last complete checkpoint.
    pub last: Option<CheckpointInfo>,
    /// The last [`HISTORY`] complete checkpoints, oldest first.
    pub history: Vec<CheckpointInfo>,
    /// Checkpoints that failed, with the reason.
    pub failed: Vec<String>,
    /// The checkpoint restored at start.
    pub restored_from: Option<u64>,
}

/// One complete checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointInfo {
    /// Id.
    pub id: u64,
    /// When it completed (ms since the epoch).
    pub time_ms: i64,
    /// Barrier injection to manifest written.
    pub duration_ms: u64,
    /// Bytes of state.
    pub size_bytes: u64,
}

/// Shared, updated by the coordinator.
pub type SharedStats = Arc<std::sync::Mutex<CheckpointStats>>;

/// Why no checkpoint was restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The newest complete checkpoint belongs to a different dataflow.
    #[error(
        "checkpoint {id} in {dir} was taken by a different version of pipeline '{pipeline}' \
         (the SQL or the parallelism changed, so its state cannot be restored); run with \
         --from-scratch to start over, or restore the previous SQL"
    )]
    Incompatible {
        /// Checkpoint id.
        id: u64,
        /// Directory.
        dir: String,
        /// Pipeline.
        pipeline: String,
    },
    /// The checkpoint location could not be listed (unreachable store, missing bucket,
    /// no permission): starting over instead would repeat output, so this stops the run.
    #[error(
        "cannot read checkpoints of pipeline '{pipeline}' in {dir}: {reason}; fix the \
         location (SET 'state.checkpoints.dir') or run with --from-scratch"
    )]
    Unreachable {
        /// Directory or URL.
        dir: String,
        /// Pipeline.
        pipeline: String,
        /// What failed.
        reason: String,
    },
}

/// The newest complete, readable checkpoint in `dir`; corrupt ones are skipped with a
/// warning (never deleted).
pub async fn load_latest(
    dir: &CheckpointDir,
    fingerprint: &str,
    pipeline: &str,
) -> Result<Option<Restored>, RestoreError> {
    let ids = dir
        .complete_ids()
        .await
        .map_err(|e| RestoreError::Unreachable {
            dir: dir.to_string(),
            pipeline: pipeline.to_string(),
            reason: e.to_string(),
        })?;
    for id in ids.into_iter().rev() {
        match manifest::load(dir, id).await {
            Ok(r) => {
                if r.manifest.fingerprint != fingerprint {
                    return Err(RestoreError::Incompatible {
                        id,
                        dir: dir.to_string(),
                        pipeline: pipeline.to_string(),
                    });
                }
                return Ok(Some(r));
            }
            Err(e) => {
                tracing::warn!(
                    "checkpoint {id} in {dir} is unreadable ({e}); falling back to the previous one"
                );
                eprintln!(
                    "runnel: warning: checkpoint {id} in {dir} is unreadable ({e}); falling back to the previous one"
                );
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::manifest::manifest_name;
    use crate::checkpoint::store::write_manifest;

    #[tokio::test]
    async fn corrupt_manifest_falls_back_to_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointDir::local(dir.path()).unwrap();
        let m = |id| Manifest {
            version: FORMAT_VERSION,
            pipeline: "p".into(),
            fingerprint: "f".into(),
            id,
            started_ms: 0,
            duration_ms: 1,
            size_bytes: 0,
            subtasks: vec![],
            owner: None,
        };
        write_manifest(dir.path(), &m(1)).unwrap();
        write_manifest(dir.path(), &m(2)).unwrap();
        std::fs::write(dir.path().join(manifest_name(2)), b"{ not json").unwrap();
        let r = load_latest(&store, "f", "p").await.unwrap().unwrap();
        assert_eq!(r.manifest.id, 1);
        assert!(
            dir.path().join(manifest_name(2)).exists(),
            "nothing is deleted"
        );
        let e = load_latest(&store, "other", "p").await.unwrap_err();
        assert!(e.to_string().contains("--from-scratch"), "{e}");
    }
}
