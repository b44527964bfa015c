//! Why a pipeline cannot be prepared, checked, started or run.

use runnel_common::Position;

/// A runtime error; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The script does not plan (syntax, unknown table or column, bad connector option).
    #[error(transparent)]
    Sql(#[from] runnel_sql::SqlError),
    /// A `SET` with an unknown key or a bad value.
    #[error("{at}: {message}")]
    Setting {
        /// Where the key or value was written.
        at: Position,
        /// What is wrong.
        message: String,
    },
    /// A table failed its health check or could not be built.
    #[error("{error}")]
    Connector {
        /// The table.
        table: String,
        /// Its connector.
        connector: String,
        /// The problem.
        error: Box<runnel_connectors::ConnectorError>,
    },
    /// The checkpoint location cannot be used.
    #[error("checkpoints in {location}: {message}")]
    Checkpoint {
        /// The location (a directory or s3:// URL).
        location: String,
        /// The problem.
        message: String,
    },
    /// No checkpoint can be resumed from: the location cannot be read, or its newest
    /// checkpoint belongs to another version of the pipeline.
    #[error(transparent)]
    Restore(#[from] runnel_engine::checkpoint::RestoreError),
    /// The engine stopped with an error.
    #[error(transparent)]
    Engine(#[from] runnel_engine::EngineError),
    /// The embedded log cannot be opened or closed.
    #[error("the log in {dir}: {error}")]
    Log {
        /// The log directory.
        dir: String,
        /// The problem.
        error: runnel_log::LogError,
    },
    /// The pipeline cannot run distributed as written, or its member cannot join.
    #[error("distributed mode: {0}")]
    Distributed(String),
    /// A broken invariant inside runnel.
    #[error("internal runtime error (a runnel bug, please report it): {0}")]
    Internal(String),
}
