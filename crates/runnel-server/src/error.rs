//! `ServerError` (what the library's functions return) and `ApiError` (what an HTTP
//! handler answers: a status code and a JSON body `{"error": code, "detail": text}`).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use runnel_log::LogError;

/// Errors of the HTTP server and of its client.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address cannot be used.
    #[error("{0}")]
    Bind(String),
    /// Serving connections failed (the listener broke).
    #[error("serving HTTP failed: {0}")]
    Serve(#[source] std::io::Error),
    /// A URL given to the client is not `http://host:port[/path]`.
    #[error("invalid server URL '{url}': {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The client could not connect or the connection broke.
    #[error("cannot reach {url}: {reason}")]
    Connect {
        /// The server's URL.
        url: String,
        /// The underlying failure.
        reason: String,
    },
    /// The client could not build a request (a header value is not valid HTTP).
    #[error("invalid request: {0}")]
    Request(String),
}

/// An error answer of the HTTP API: status, machine-readable code and human detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Short machine-readable code, e.g. `malformed_json`.
    pub code: &'static str,
    /// What went wrong, for a human.
    pub detail: String,
    /// For a read that starts at damaged records: where reading can go on.
    pub next_offset: Option<u64>,
    /// For a script that does not plan: the 1-based line, and column when known.
    pub at: Option<(u64, Option<u64>)>,
}

impl ApiError {
    /// An error with this status, code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            next_offset: None,
            at: None,
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 413: the body is larger than `limit` bytes.
    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 500 for a broken invariant.
    pub fn internal(detail: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{} (a runnel bug, please report it)", detail.into()),
        )
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        let detail = e.to_string();
        let (status, code) = match &e {
            // The log cannot take writes now; clients retry (Retry-After is added below).
            LogError::Unavailable { .. } | LogError::Io { .. } | LogError::Closed => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            LogError::UnknownTopic(_) => (StatusCode::NOT_FOUND, "unknown_topic"),
            LogError::UnknownPartition { .. } => (StatusCode::BAD_REQUEST, "unknown_partition"),
            LogError::OffsetOutOfRange { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "offset_out_of_range")
            }
            LogError::InvalidName { .. } => (StatusCode::BAD_REQUEST, "invalid_name"),
            LogError::InvalidConfig { .. } => (StatusCode::BAD_REQUEST, "invalid_config"),
            LogError::TopicExists(_) => (StatusCode::CONFLICT, "topic_exists"),
            LogError::InvalidAppend(_) => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_append"),
            LogError::Corrupt { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "corrupt"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.code, "detail": self.detail });
        if let (Some(next), Some(map)) = (self.next_offset, body.as_object_mut()) {
            map.insert("next_offset".into(), next.into());
        }
        if let (Some((line, column)), Some(map)) = (self.at, body.as_object_mut()) {
            map.insert("line".into(), line.into());
            if let Some(column) = column {
                map.insert("column".into(), column.into());
            }
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(next) = self.next_offset {
            response
                .headers_mut()
                .insert("x-next-offset", HeaderValue::from(next));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
