//! `runnel serve` hosting submitted pipelines: submit, bad SQL answered with its line
//! and column, list, stop with a savepoint, a killed and restarted server, resume from
//! the savepoint and on its own, delete.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::log_cli::{Server, free_port, http};

const DOUBLER: &str = "
SET 'pipeline.name' = 'doubler';
SET 'execution.checkpointing.interval' = '500 ms';
CREATE TABLE numbers (n BIGINT) WITH (connector = 'log', topic = 'numbers', format = 'json');
CREATE TABLE doubled (n BIGINT, d BIGINT)
  WITH (connector = 'log', topic = 'doubled', format = 'json');
INSERT INTO doubled SELECT n, n * 2 FROM numbers;
";

fn serve(dir: &Path, port: u16) -> Server {
    Server::start(dir, port, &["--auto-create"])
}

fn call(port: u16, method: &str, path: &str, ty: &str, body: &str) -> (u16, Value) {
    let (status, text) = http(port, method, path, &[("Content-Type", ty)], body.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"))
    };
    (status, v)
}

fn produce(port: u16, from: i64, to: i64) {
    let body: String = (from..to).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let (status, v) = call(
        port,
        "POST",
        "/v1/topics/numbers/records",
        "application/x-ndjson",
        &body,
    );
    assert_eq!(status, 200, "{v}");
}

/// Every `n` in topic `doubled` with how often it appears.
fn doubled(port: u16) -> BTreeMap<i64, usize> {
    let mut seen = BTreeMap::new();
    let mut offset = 0u64;
    loop {
        let (status, text) = http(
            port,
            "GET",
            &format!("/v1/topics/doubled/records?partition=0&offset={offset}&max=1000"),
            &[],
            b"",
        )
        .expect("reading doubled");
        if status == 404 {
            return seen;
        }
        assert_eq!(status, 200, "{text}");
        let mut n = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let r: Value = serde_json::from_str(line).expect("a record");
            let value = &r["value"];
            let row: Value = match value {
                Value::String(s) => serde_json::from_str(s).expect("a JSON row"),
                v => v.clone(),
            };
            assert_eq!(row["d"].as_i64(), row["n"].as_i64().map(|n| n * 2), "{row}");
            *seen.entry(row["n"].as_i64().expect("n")).or_default() += 1;
            offset = r["offset"].as_u64().expect("offset") + 1;
            n += 1;
        }
        if n == 0 {
            return seen;
        }
    }
}

/// Waits until `doubled` holds 0..`count`, each once.
fn wait_for_doubled(port: u16, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = doubled(port);
        if seen.len() as i64 >= count {
            let dups: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
            assert!(dups.is_empty(), "rows written twice: {dups:?}");
            assert_eq!(
                seen.keys().copied().collect::<Vec<_>>(),
                (0..count).collect::<Vec<_>>()
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "doubled has {} of {count} rows",
            seen.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn state(port: u16, name: &str) -> String {
    let (status, v) = call(
        port,
        "GET",
        &format!("/api/pipelines/{name}"),
        "text/plain",
        "",
    );
    assert_eq!(status, 200, "{v}");
    v["state"].as_str().unwrap_or_default().to_string()
}

#[test]
fn submitted_pipelines_stop_with_a_savepoint_survive_restarts_and_resume() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut server = serve(dir.path(), port);

    // Bad scripts: 400 with the line and column, nothing registered.
    let (status, v) = call(
        port,
        "POST",
        "/api/pipelines?name=bad",
        "application/sql",
        "CREATE TABLE t (a BIGINT)\n  WITH (connector = 'log', topic = 'numbers', format = 'json');\nSELEC a FROM t;",
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"], "invalid_pipeline", "{v}");
    assert_eq!(v["line"], 3, "{v}");
    assert_eq!(v["column"], 1, "{v}");
    let (status, v) = call(
        port,
        "POST",
        "/api/pipelines",
        "application/json",
        &serde_json::json!({
            "name": "bad",
            "sql": "CREATE TABLE t (a BIGINT)\n  WITH (connector = 'log', topic = 'numbers', formt = 'json');\nCREATE TABLE o (a BIGINT) WITH (connector = 'print');\nINSERT INTO o SELECT a FROM t;",
        })
        .to_string(),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["line"], 2, "{v}");
    assert!(
        v["detail"].as_str().unwrap_or_default().contains("formt"),
        "{v}"
    );
    let (status, v) = call(port, "POST", "/api/pipelines", "application/sql", "");
    assert_eq!(status, 400, "{v}");

    // Submit; it runs and writes every row once.
    produce(port, 0, 100);
    let (status, v) = call(port, "POST", "/api/pipelines", "application/sql", DOUBLER);
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["name"], "doubler", "{v}");
    let (status, v) = call(port, "POST", "/api/pipelines", "application/sql", DOUBLER);
    assert_eq!(status, 409, "a second pipeline of the same name: {v}");
    wait_for_doubled(port, 100);
    let (_, list) = call(port, "GET", "/api/pipelines", "text/plain", "");
    assert_eq!(list["pipelines"][0]["name"], "doubler", "{list}");
    assert_eq!(list["pipelines"][0]["state"], "running", "{list}");
    let (status, v) = call(port, "DELETE", "/api/pipelines/doubler", "text/plain", "");
    assert_eq!(status, 409, "deleting a running pipeline: {v}");

    // Stop with a named savepoint; rows produced meanwhile wait.
    let (status, v) = call(
        port,
        "POST",
        "/api/pipelines/doubler/stop",
        "application/json",
        r#"{"savepoint": "before-upgrade"}"#,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "stopped", "{v}");
    assert_eq!(v["savepoint"], "before-upgrade", "{v}");
    assert!(
        v["savepoints"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == "before-upgrade")),
        "{v}"
    );
    produce(port, 100, 150);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        doubled(port).len(),
        100,
        "a stopped pipeline writes nothing"
    );

    // The server dies; the stopped pipeline is still there, still stopped.
    drop(server);
    server = serve(dir.path(), port);
    assert_eq!(state(port, "doubler"), "stopped");
    let (status, v) = call(
        port,
        "POST",
        "/api/pipelines/doubler/start?savepoint=nope",
        "application/sql",
        "",
    );
    assert_eq!(status, 400, "an unknown savepoint: {v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("before-upgrade"),
        "{v}"
    );
    let (status, v) = call(
        port,
        "POST",
        "/api/pipelines/doubler/start?savepoint=before-upgrade",
        "application/sql",
        "",
    );
    assert_eq!(status, 200, "{v}");
    wait_for_doubled(port, 150);

    // Killed while it runs: it resumes on its own from its newest checkpoint.
    produce(port, 150, 200);
    wait_for_doubled(port, 200);
    drop(server);
    server = serve(dir.path(), port);
    produce(port, 200, 260);
    wait_for_doubled(port, 260);
    assert_eq!(state(port, "doubler"), "running");

    // Stop, then delete: gone from the list, its definition and checkpoints removed.
    let (status, v) = call(
        port,
        "POST",
        "/api/pipelines/doubler/stop",
        "application/sql",
        "",
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = call(port, "DELETE", "/api/pipelines/doubler", "text/plain", "");
    assert_eq!(status, 204, "{v}");
    let (status, _) = call(port, "GET", "/api/pipelines/doubler", "text/plain", "");
    assert_eq!(status, 404);
    assert!(!dir.path().join("data/pipelines/doubler").exists());
    assert!(!dir.path().join("data/checkpoints/doubler").exists());
    drop(server);
}

/// One hosted pipeline fails (strict error handling, a division by zero); the pipeline
/// beside it and the server go on.
#[test]
fn a_failing_pipeline_leaves_the_others_and_the_server_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _server = serve(dir.path(), port);
    produce(port, 0, 100);
    let (status, v) = call(port, "POST", "/api/pipelines", "application/sql", DOUBLER);
    assert_eq!(status, 201, "{v}");
    let failing = "
        SET 'pipeline.on-error' = 'fail';
        CREATE TABLE numbers (n BIGINT) WITH (connector = 'log', topic = 'numbers', format = 'json');
        CREATE TABLE quotients (n BIGINT, q BIGINT)
          WITH (connector = 'log', topic = 'quotients', format = 'json');
        INSERT INTO quotients SELECT n, 100 / (n - 50) FROM numbers;";
    let (status, v) = call(
        port,
        "POST",
        "/api/pipelines?name=divider",
        "application/sql",
        failing,
    );
    assert_eq!(status, 201, "{v}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let divider = loop {
        let (status, v) = call(port, "GET", "/api/pipelines/divider", "text/plain", "");
        assert_eq!(status, 200, "{v}");
        if v["state"] == "failed" || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(divider["state"], "failed", "{divider}");
    assert!(
        divider.to_string().contains("Divide by zero"),
        "the failure names its cause: {divider}"
    );

    // The other pipeline still runs and keeps up with new rows.
    wait_for_doubled(port, 100);
    produce(port, 100, 150);
    wait_for_doubled(port, 150);
    assert_eq!(state(port, "doubler"), "running");
    let (_, list) = call(port, "GET", "/api/pipelines", "text/plain", "");
    let states: BTreeMap<String, String> = list["pipelines"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(states["doubler"], "running", "{list}");
    assert_eq!(states["divider"], "failed", "{list}");
}
