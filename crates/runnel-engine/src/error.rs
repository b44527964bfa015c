//! Errors that stop a running pipeline.

use runnel_connectors::ConnectorError;

/// Why a pipeline cannot continue.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A source or sink failed; the connector's message names the table.
    #[error("{error}")]
    Connector {
        /// The table whose connector failed.
        table: String,
        /// What failed.
        error: Box<ConnectorError>,
    },
    /// Evaluating an expression failed (e.g. a division by zero with safe casts off).
    #[error("{operator}: {message}")]
    Eval {
        /// The operator's label.
        operator: String,
        /// DataFusion's or Arrow's message.
        message: String,
    },
    /// A distributed task was taken over by another member (see
    /// [`crate::checkpoint::CheckpointConfig::owner`]).
    #[error("fenced: {0}")]
    Fenced(String),
    /// The graph cannot be run as given.
    #[error("invalid pipeline: {0}")]
    Invalid(String),
    /// A broken invariant inside runnel.
    #[error("internal engine error (a runnel bug, please report it): {0}")]
    Internal(String),
}
