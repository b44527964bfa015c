//! Bearer-token authentication and the safe-bind rule.
//!
//! runnel listens on loopback unless told otherwise. Listening anywhere else needs a
//! token, and then every API, ingest and stream request must carry it, as
//! `Authorization: Bearer <token>` or, for what a browser cannot add headers to
//! (EventSource, `<img>`), an `access_token` query parameter. Only the static page
//! itself is served without it, so that it can ask for the token. The token is never
//! logged.

use std::hash::BuildHasher as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Shortest accepted bearer token, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Refuses a token that is empty, blank or shorter than [`MIN_TOKEN_BYTES`]: an empty
/// `RUNNEL_AUTH_TOKEN=` must never turn authentication into "any token".
///
/// # Errors
/// A message saying what is wrong with the token (never the token itself).
pub fn check_token(token: Option<&str>) -> Result<(), String> {
    match token {
        None => Ok(()),
        Some(t) if t.trim().is_empty() => Err(
            "the auth token is empty (is RUNNEL_AUTH_TOKEN set to nothing?): pass a token of \
             at least 16 characters, e.g. from `openssl rand -hex 16`"
                .into(),
        ),
        Some(t) if t.trim() != t => {
            Err("the auth token starts or ends with white space; remove it".into())
        }
        Some(t) if t.len() < MIN_TOKEN_BYTES => Err(format!(
            "the auth token is {} bytes; use at least {MIN_TOKEN_BYTES} (e.g. `openssl rand -hex 16`)",
            t.len()
        )),
        Some(_) => Ok(()),
    }
}

/// Resolves `addr`, refuses a bad token or a non-loopback address without a token, and
/// binds.
///
/// # Errors
/// A message naming the address when it cannot be resolved or bound, or when it is not
/// loopback and `token` is `None`; or what is wrong with the token.
pub async fn bind(addr: &str, token: Option<&str>) -> Result<tokio::net::TcpListener, String> {
    check_token(token)?;
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("cannot resolve listen address '{addr}': {e}"))?
        .collect();
    let Some(first) = resolved.first() else {
        return Err(format!("listen address '{addr}' resolves to nothing"));
    };
    if token.is_none()
        && let Some(open) = resolved.iter().find(|a| !a.ip().is_loopback())
    {
        return Err(format!(
            "refusing to listen on {open} (not a loopback address) without authentication: \
             pass --auth-token TOKEN or set RUNNEL_AUTH_TOKEN, or listen on 127.0.0.1"
        ));
    }
    tokio::net::TcpListener::bind(first)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// Whether `path` is part of the static page, served without a token.
pub(crate) fn is_public(path: &str) -> bool {
    path == "/" || path == "/index.html" || path.starts_with("/assets/")
}

/// Whether a request may carry its token in the query string: only reads of what a
/// browser cannot add headers to (EventSource streams, `<img>` sources).
fn query_token_allowed(request: &Request) -> bool {
    let path = request.uri().path();
    matches!(*request.method(), Method::GET | Method::HEAD)
        && (path.starts_with("/api/streams/")
            || (path.starts_with("/api/pipelines/") && path.ends_with("/events")))
}

/// The token as it is compared: a digest under a per-process random key, so neither the
/// length nor a matching prefix of a presented token shows in the comparison's timing.
#[derive(Debug)]
pub struct Token {
    keys: (std::hash::RandomState, std::hash::RandomState),
    digest: (u64, u64),
    raw: Vec<u8>,
}

impl Token {
    /// The expected token.
    pub fn new(token: &str) -> Self {
        let keys = (std::hash::RandomState::new(), std::hash::RandomState::new());
        let digest = (
            keys.0.hash_one(token.as_bytes()),
            keys.1.hash_one(token.as_bytes()),
        );
        Token {
            keys,
            digest,
            raw: token.as_bytes().to_vec(),
        }
    }

    /// Whether `presented` is the token.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let d = (
            self.keys.0.hash_one(presented),
            self.keys.1.hash_one(presented),
        );
        // Digests are equal-length: comparing them leaks nothing about the token. The
        // final byte comparison only runs for a (near-certain) match.
        ((d.0 ^ self.digest.0) | (d.1 ^ self.digest.1)) == 0 && presented == self.raw.as_slice()
    }
}

/// Axum middleware: answers 401 unless the request carries `token`.
pub async fn require_token(
    State(token): State<Arc<Token>>,
    request: Request,
    next: Next,
) -> Response {
    if is_public(request.uri().path()) || presented(&request, &token) {
        return next.run(request).await;
    }
    let mut resp = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong token: send 'Authorization: Bearer <token>' \
         (event streams and images may pass ?access_token=<token>)",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn presented(request: &Request, token: &Token) -> bool {
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| token.matches(t.trim().as_bytes()));
    from_header
        || (query_token_allowed(request)
            && request.uri().query().is_some_and(|q| {
                q.split('&')
                    .filter_map(|kv| kv.strip_prefix("access_token="))
                    .any(|t| token.matches(percent_decode(t).as_bytes()))
            }))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_tokens() {
        assert_eq!(percent_decode("a%2Fb%3D"), "a/b=");
        assert_eq!(percent_decode("abc%"), "abc%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[tokio::test]
    async fn non_loopback_needs_a_token() {
        let e = bind("0.0.0.0:0", None).await.unwrap_err();
        assert!(e.contains("--auth-token"), "{e}");
        assert!(bind("127.0.0.1:0", None).await.is_ok());
        assert!(bind("0.0.0.0:0", Some("a-long-enough-token")).await.is_ok());
    }

    #[test]
    fn empty_and_short_tokens_are_refused() {
        assert!(check_token(Some("")).is_err());
        assert!(check_token(Some(" ")).is_err());
        assert!(check_token(Some("short")).is_err());
        assert!(check_token(Some("0123456789abcdef")).is_ok());
        assert!(check_token(None).is_ok());
    }

    #[test]
    fn tokens_match_only_exactly() {
        let t = Token::new("0123456789abcdef");
        assert!(t.matches(b"0123456789abcdef"));
        assert!(!t.matches(b""));
        assert!(!t.matches(b"0123456789abcde"));
        assert!(!t.matches(b"0123456789abcdeg"));
    }
}
