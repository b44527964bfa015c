//! The HTTP ingest and topic API, whole: a request with any method, path, headers and
//! body, through the same router `runnel serve` runs (guard, auth, ingest, topics, groups,
//! admin), against a fresh log. Never a panic, never a 500.
//!
//! Input: one byte picks the method, one byte the path (or, with the high bit set, the
//! first line is the path), then `name: value` header lines, an empty line and the body.
//!
//! Shared by the fuzz target `ingest_request` and the workspace test that replays its
//! corpus (`crates/runnel/tests/e2e/fuzz.rs`), so it uses no crate but those two have.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use runnel_log::{Log, LogOptions, TopicConfig};
use runnel_server::{AdminState, HttpConfig, ServerState};
use tower::ServiceExt;

const METHODS: [Method; 5] = [
    Method::POST,
    Method::GET,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
];

const PATHS: [&str; 12] = [
    "/v1/topics/t/records",
    "/v1/topics/t/records?partition=0&offset=0",
    "/v1/topics/t/records?partition=1&offset=0&max_records=5&wait_ms=0",
    "/v1/topics/missing/records",
    "/v1/topics",
    "/v1/topics/t",
    "/v1/groups/g/offsets",
    "/v1/groups/g/offsets?topic=t",
    "/api/pipelines",
    "/api/openapi.json",
    "/healthz",
    "/metrics",
];

const TOKEN: &str = "fuzz-token-0123456789";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// Serves one input; panics on what must not happen.
pub fn run(data: &[u8]) {
    let [m, p, rest @ ..] = data else {
        return;
    };
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (rest, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let path = if p & 0x80 != 0 {
        match lines.next().map(std::str::from_utf8) {
            Some(Ok(path)) if path.starts_with('/') => path.to_string(),
            _ => return,
        }
    } else {
        PATHS[usize::from(*p) % PATHS.len()].to_string()
    };
    let mut request = Request::builder()
        .method(METHODS[usize::from(*m) % METHODS.len()].clone())
        .uri(path.as_str());
    let mut has_host = false;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        has_host |= name == axum::http::header::HOST;
        request = request.header(name, value);
    }
    if !has_host {
        request = request.header("host", "127.0.0.1:8080");
    }
    if m & 0x80 != 0 {
        request = request.header("authorization", format!("Bearer {TOKEN}"));
    }
    let Ok(request) = request.body(Body::from(body.to_vec())) else {
        return;
    };

    let dir = tempfile::tempdir().expect("temp dir");
    let log = Arc::new(Log::open(dir.path(), LogOptions::default()).expect("log"));
    log.create_topic("t", TopicConfig::with_partitions(2))
        .expect("topic");
    let config = HttpConfig {
        token: (m & 0x40 != 0).then(|| TOKEN.to_string()),
        ..HttpConfig::default()
    };
    let bound: SocketAddr = "127.0.0.1:8080".parse().expect("address");
    let app = runnel_server::app(
        ServerState::new(log.clone()),
        AdminState::default(),
        &config,
        bound,
    )
    .expect("app");
    let status = runtime().block_on(async move {
        let response = app.oneshot(request).await.expect("infallible");
        let status = response.status();
        let _ = axum::body::to_bytes(response.into_body(), 64 << 20).await;
        status
    });
    assert_ne!(status.as_u16(), 500, "500 for this request");
    if let Ok(log) = Arc::try_unwrap(log) {
        let _ = log.close();
    }
}
