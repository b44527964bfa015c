//! Planning errors: each names the statement's line and what to fix.

/// Why a SQL script cannot become a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The text does not parse; the message carries line and column.
    #[error("syntax error at {0}")]
    Syntax(String),
    /// A statement parses but is not allowed or not supported.
    #[error("line {line}: {message}")]
    Statement {
        /// 1-based line of the statement (or of the offending token).
        line: u64,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Something at a known line and column (an option key, a `SET` key or value).
    #[error("{at}: {message}")]
    At {
        /// Where.
        at: runnel_common::Position,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// DataFusion rejected the query (unknown column, table, function, type error).
    #[error("line {line}: {message}")]
    Plan {
        /// 1-based line where the statement starts.
        line: u64,
        /// DataFusion's explanation, cleaned up.
        message: String,
    },
    /// A broken invariant inside runnel's planner.
    #[error("internal planner error (a runnel bug, please report it): {0}")]
    Internal(String),
}

impl SqlError {
    /// A statement-level error at `line`.
    pub fn at(line: u64, message: impl Into<String>) -> Self {
        Self::Statement {
            line,
            message: message.into(),
        }
    }
}

impl SqlError {
    /// An error at a known line and column.
    pub fn located(at: runnel_common::Position, message: impl Into<String>) -> Self {
        Self::At {
            at,
            message: message.into(),
        }
    }

    /// The 1-based line the error is on, when known.
    pub fn line(&self) -> Option<u64> {
        match self {
            SqlError::Statement { line, .. } | SqlError::Plan { line, .. } => Some(*line),
            SqlError::At { at, .. } => Some(at.line),
            SqlError::Syntax(_) | SqlError::Internal(_) => None,
        }
    }
}

impl From<sqlparser::parser::ParserError> for SqlError {
    fn from(e: sqlparser::parser::ParserError) -> Self {
        let text = match e {
            sqlparser::parser::ParserError::TokenizerError(s)
            | sqlparser::parser::ParserError::ParserError(s) => s,
            sqlparser::parser::ParserError::RecursionLimitExceeded => {
                "statement nested too deeply".to_string()
            }
        };
        // sqlparser ends messages with "at Line: L, Column: C"; lead with it instead.
        match text.rsplit_once(" at Line: ") {
            Some((msg, pos)) => match pos.split_once(", Column: ") {
                Some((line, col)) => {
                    SqlError::Syntax(format!("line {line}, column {}: {msg}", col.trim()))
                }
                None => SqlError::Syntax(text),
            },
            None => SqlError::Syntax(text),
        }
    }
}

/// Makes DataFusion's messages read like runnel's: drops the "Error during
/// planning:" prefixes and backtraces.
pub(crate) fn clean_datafusion_message(e: &datafusion_common::DataFusionError) -> String {
    let mut s = e.strip_backtrace();
    for prefix in [
        "Error during planning: ",
        "Schema error: ",
        "SQL error: ",
        "This feature is not implemented: ",
    ] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest.to_string();
        }
    }
    s
}
