//! Errors of sources, sinks and formats.

use runnel_common::OptionError;

/// Why a connector cannot be built or cannot continue.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// `connector = '…'` names no known connector.
    #[error("table '{table}': unknown connector '{name}'; known connectors: {known}")]
    UnknownConnector {
        /// The table.
        table: String,
        /// The name given.
        name: String,
        /// Valid names.
        known: String,
    },
    /// The connector exists but cannot be used this way (e.g. a sink-only
    /// connector as a source).
    #[error("table '{table}': connector '{connector}' {reason}")]
    Unsupported {
        /// The table.
        table: String,
        /// The connector.
        connector: String,
        /// What is not supported.
        reason: String,
    },
    /// A bad `WITH (…)` option.
    #[error("table '{table}': {source}")]
    Option {
        /// The table.
        table: String,
        /// The option problem.
        source: OptionError,
    },
    /// An I/O error, with the path or address involved.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A column type the connector or format cannot handle.
    #[error("table '{table}': column '{column}' has type {data_type}, which {reason}")]
    Type {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The SQL type.
        data_type: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Arrow failed while building or encoding batches.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet failed while encoding or decoding a file.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Anything else that stops the connector, already explained.
    #[error("{0}")]
    Other(String),
}

impl ConnectorError {
    /// The `WITH (…)` option the error is about, if one.
    pub fn option_key(&self) -> Option<&str> {
        match self {
            ConnectorError::Option { source, .. } => Some(source.key()),
            ConnectorError::UnknownConnector { .. } => Some("connector"),
            _ => None,
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
