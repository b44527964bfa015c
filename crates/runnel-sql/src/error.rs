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
/// planning:" prefixes and backtraces, names constructs runnel does not support yet
/// instead of dumping their syntax tree, and keeps to the first line.
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
    if let Some(known) = not_yet(&s) {
        return known;
    }
    if let Some(rest) = s.strip_prefix("Unsupported ast node ") {
        // `TableFunction { expr: Function(Function { name: … "CUMULATE" …`: name the node
        // and, for a function, the function.
        let node = rest.split([' ', '(', '{']).next().unwrap_or(rest);
        let function = rest
            .split_once("value: \"")
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(name, _)| name.to_string());
        return match (node, function) {
            ("TableFunction", Some(f)) => format!(
                "table function {f}(…) is not supported; window table functions are TUMBLE, \
                 HOP and SESSION"
            ),
            (node, Some(f)) => format!("{node} {f}(…) is not supported"),
            (node, None) => format!("the SQL construct {node} is not supported"),
        };
    }
    let first = s.lines().next().unwrap_or_default().to_string();
    if first.len() > 300 {
        format!("{}…", &first[..first.floor_char_boundary(300)])
    } else {
        first
    }
}

/// Constructs of Flink SQL that runnel does not plan yet, named with what to use instead.
fn not_yet(message: &str) -> Option<String> {
    let invalid = message
        .strip_prefix("Invalid function '")
        .and_then(|r| r.split_once('\''))
        .map(|(f, _)| f.to_ascii_lowercase())?;
    let text = match invalid.as_str() {
        "lead" => "LEAD() OVER (…) needs rows that have not arrived yet, so a stream cannot \
                   compute it; LAG() looks back"
            .to_string(),
        "percent_rank" | "cume_dist" | "ntile" | "first_value" | "nth_value" => format!(
            "{}() OVER (…) is not supported yet; Top-N and deduplication use ROW_NUMBER(), \
             RANK() or DENSE_RANK()",
            invalid.to_ascii_uppercase()
        ),
        "tumble" | "hop" | "session" | "cumulate" => format!(
            "{}(time_col, …) is a group window: use it in GROUP BY (over one table or view), \
             or use the window table function FROM TABLE({}(TABLE t, DESCRIPTOR(time_col), \
             INTERVAL …))",
            invalid.to_ascii_uppercase(),
            invalid.to_ascii_uppercase()
        ),
        "tumble_start" | "tumble_end" | "hop_start" | "hop_end" | "session_start"
        | "session_end" | "tumble_rowtime" | "hop_rowtime" | "session_rowtime" => format!(
            "{}() needs the matching group window in GROUP BY (e.g. GROUP BY TUMBLE(ts, \
             INTERVAL '1' MINUTE) for TUMBLE_START)",
            invalid.to_ascii_uppercase()
        ),
        _ => return None,
    };
    Some(text)
}
