//! Bearer-token authentication and the safe-bind rule.
//!
//! runnel listens on loopback unless told otherwise. Listening anywhere else needs a
//! token, and then every API, ingest and stream request must carry it, as
//! `Authorization: Bearer <token>` or, for what a browser cannot add headers to
//! (EventSource, `<img>`), an `access_token` query parameter. Only the static page
//! itself is served without it, so that it can ask for the token. The token is never
//! logged.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Resolves `addr`, refuses a non-loopback address without a token, and binds.
///
/// # Errors
/// A message naming the address when it cannot be resolved or bound, or when it is not
/// loopback and `token` is `None`.
pub async fn bind(addr: &str, token: Option<&str>) -> Result<tokio::net::TcpListener, String> {
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
fn is_public(path: &str) -> bool {
    path == "/" || path == "/index.html" || path.starts_with("/assets/")
}

/// Axum middleware: answers 401 unless the request carries `token`.
pub async fn require_token(
    State(token): State<Arc<String>>,
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
         (or ?access_token=<token> for event streams and images)",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn presented(request: &Request, token: &str) -> bool {
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), token.as_bytes()));
    from_header
        || request.uri().query().is_some_and(|q| {
            q.split('&')
                .filter_map(|kv| kv.strip_prefix("access_token="))
                .any(|t| constant_time_eq(percent_decode(t).as_bytes(), token.as_bytes()))
        })
}

/// Compares without an early exit, so timing does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
        assert!(bind("0.0.0.0:0", Some("t")).await.is_ok());
    }
}
