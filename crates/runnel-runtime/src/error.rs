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

impl RuntimeError {
    /// Where in the script the problem is, when known: 1-based line, and column when
    /// known (for an editor to mark it).
    pub fn position(&self) -> Option<(u64, Option<u64>)> {
        match self {
            RuntimeError::Setting { at, .. } => Some((at.line, Some(at.column))),
            RuntimeError::Sql(runnel_sql::SqlError::At { at, .. }) => {
                Some((at.line, Some(at.column)))
            }
            RuntimeError::Sql(runnel_sql::SqlError::Syntax(text)) => {
                // "line L, column C: …"
                let rest = text.strip_prefix("line ")?;
                let (line, rest) = rest.split_once(", column ")?;
                let column = rest.split(':').next()?;
                Some((line.trim().parse().ok()?, column.trim().parse().ok()))
            }
            RuntimeError::Sql(e) => e.line().map(|l| (l, column_in(&e.to_string()))),
            _ => None,
        }
    }
}

/// The `N` of "column N" in a message ("… found SELEC at column 1").
fn column_in(text: &str) -> Option<u64> {
    let (_, rest) = text.split_once("column ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}
