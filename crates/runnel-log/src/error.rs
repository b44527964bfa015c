//! `LogError`: everything that can go wrong in the embedded log, with what a caller needs to act.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout `runnel-log`.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// Errors of the embedded durable log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A filesystem operation failed outside the append path (open, create, rename, …).
    #[error("{context}: {source}")]
    Io {
        /// What runnel was doing, including the path.
        context: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// The partition cannot accept writes right now (disk full, I/O error, fsync failure);
    /// nothing unacknowledged was kept, acknowledged data is intact. Retry later (HTTP 503).
    #[error("{topic}/{partition} is unavailable for writes: {reason}; retry later")]
    Unavailable {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: u32,
        /// The failure, e.g. "No space left on device (os error 28)".
        reason: String,
    },
    /// A batch on disk failed its CRC/format check; the bytes are kept for inspection.
    #[error("corrupt batch in {} at byte {position}: {reason}", file.display())]
    Corrupt {
        /// The segment file holding the batch.
        file: PathBuf,
        /// Byte offset of the batch inside the file.
        position: u64,
        /// What check failed.
        reason: String,
    },
    /// A topic or consumer-group name is not `[A-Za-z0-9._-]{1,200}`.
    #[error(
        "invalid {kind} name '{name}': use 1 to 200 characters from A-Z a-z 0-9 . _ - (and not '.' or '..')"
    )]
    InvalidName {
        /// "topic" or "group".
        kind: &'static str,
        /// The rejected name.
        name: String,
    },
    /// A topic configuration value is out of range or unparsable.
    #[error("invalid topic config '{field}': {message}")]
    InvalidConfig {
        /// The offending field, e.g. "partitions" or "fsync".
        field: &'static str,
        /// Why it is invalid and what is allowed.
        message: String,
    },
    /// `create_topic` was called for a name that already exists.
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    /// No topic of that name.
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    /// The topic has no such partition.
    #[error("topic '{topic}' has no partition {partition} (it has {partitions})")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Requested partition.
        partition: u32,
        /// Number of partitions the topic has.
        partitions: u32,
    },
    /// A read asked for an offset outside `[start_offset, end_offset]`.
    #[error(
        "offset {offset} is out of range for {topic}/{partition}: available offsets are {start}..{end}"
    )]
    OffsetOutOfRange {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: u32,
        /// Requested offset.
        offset: u64,
        /// First readable offset (after retention).
        start: u64,
        /// Next offset to be written (high watermark).
        end: u64,
    },
    /// An append was empty or too large to fit in one batch frame.
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// Another process (or another `Log` in this process) has the directory open.
    #[error("log directory {} is locked by another runnel process", dir.display())]
    Locked {
        /// The log directory.
        dir: PathBuf,
    },
    /// The log was closed; no more appends.
    #[error("the log is closed")]
    Closed,
    /// A broken invariant: this is a runnel bug, please report it.
    #[error("internal error (a runnel bug, please report it): {0}")]
    Internal(String),
}

impl LogError {
    /// Builds an `Io` error with a context string.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        LogError::Io {
            context: context.into(),
            source,
        }
    }

    /// True for failures a client should retry later (map to HTTP 503).
    pub fn is_retryable(&self) -> bool {
        matches!(self, LogError::Unavailable { .. })
    }
}
