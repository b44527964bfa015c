//! The web surface of a running pipeline: admin API, event streams, `/metrics`, the
//! embedded page, authentication, and the page itself in headless Chromium.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::log_cli::{Server, free_port, http};

const PIPELINE: &str = "
SET 'pipeline.name' = 'web-test';
SET 'quality.profile' = 'on';
CREATE TABLE readings (
  sensor STRING, temp DOUBLE,
  CONSTRAINT plausible CHECK (temp BETWEEN -50 AND 60)
) WITH (connector = 'log', topic = 'readings', format = 'json');
CREATE TABLE frames (key STRING, `value` BYTES)
  WITH (connector = 'log', topic = 'frames', format = 'raw');
CREATE TABLE live (sensor STRING, temp DOUBLE)
  WITH (connector = 'dashboard', title = 'Latest readings', view = 'table', key = 'sensor');
CREATE TABLE gallery (camera STRING, image BYTES, note STRING,
  objects ARRAY<ROW<label STRING, score DOUBLE, x1 DOUBLE, y1 DOUBLE, x2 DOUBLE, y2 DOUBLE>>)
  WITH (connector = 'dashboard', title = 'Latest frames', view = 'gallery', key = 'camera');
CREATE TABLE seen (camera STRING, object STRING, score DOUBLE)
  WITH (connector = 'dashboard', title = 'Objects seen', view = 'table');
CREATE VIEW detected AS SELECT key, `value`, detect(`value`) AS objects FROM frames;
INSERT INTO live SELECT sensor, temp FROM readings;
INSERT INTO gallery SELECT key, `value`, CONCAT(key, ' frame'), objects FROM detected;
INSERT INTO seen SELECT key, d.object, d.score
  FROM detected CROSS JOIN UNNEST(objects) AS d (object, score, x1, y1, x2, y2);
";

fn start_pipeline(dir: &Path, port: u16) -> Server {
    std::fs::write(dir.join("p.sql"), PIPELINE).expect("writing pipeline");
    let listen = format!("127.0.0.1:{port}");
    Server::spawn(
        dir,
        port,
        &[
            "run",
            "p.sql",
            "--listen",
            &listen,
            "--data-dir",
            "data",
            "-p",
            "2",
        ],
    )
}

fn get_json(port: u16, path: &str) -> (u16, Value) {
    let (status, body) = http(port, "GET", path, &[], b"").expect("GET");
    let v =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
    (status, v)
}

fn post(port: u16, topic: &str, headers: &[(&str, &str)], body: &[u8]) {
    let (status, answer) = http(
        port,
        "POST",
        &format!("/v1/topics/{topic}/records"),
        headers,
        body,
    )
    .expect("POST");
    assert_eq!(status, 200, "{answer}");
}

/// Reads an SSE stream until `want` appears in the data (or 20 s pass); returns what came.
fn read_sse(port: u16, path: &str, want: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("write");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if String::from_utf8_lossy(&got).contains(want) {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A real PNG photo (one of the bundled test photos).
fn photo() -> Vec<u8> {
    std::fs::read(repo().join("assets/images/coffee.png")).expect("bundled photo")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn admin_api_streams_metrics_and_page() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _server = start_pipeline(dir.path(), port);

    assert_eq!(http(port, "GET", "/healthz", &[], b"").unwrap().0, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while http(port, "GET", "/readyz", &[], b"").unwrap().0 != 200 {
        assert!(Instant::now() < deadline, "/readyz never became 200");
        std::thread::sleep(Duration::from_millis(50));
    }

    post(
        port,
        "readings",
        &[("Content-Type", "application/x-ndjson")],
        b"{\"sensor\":\"s1\",\"temp\":21.5}\n{\"sensor\":\"s2\",\"temp\":30}\n{\"sensor\":\"s1\",\"temp\":22.5}\n",
    );
    post(
        port,
        "frames",
        &[("Content-Type", "image/png"), ("X-Key", "cam-1")],
        &photo(),
    );

    // The list and one pipeline.
    let (status, list) = get_json(port, "/api/pipelines");
    assert_eq!(status, 200);
    assert_eq!(list["pipelines"][0]["name"], "web-test", "{list}");
    let (status, p) = get_json(port, "/api/pipelines/web-test");
    assert_eq!(status, 200);
    let nodes = p["nodes"].as_array().expect("nodes");
    assert!(nodes.iter().any(|n| n["kind"] == "source"), "{p}");
    assert!(nodes.iter().any(|n| n["kind"] == "sink"), "{p}");
    assert!(!p["edges"].as_array().expect("edges").is_empty());
    let panels: Vec<&str> = p["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .map(|x| x["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(panels, ["live", "gallery", "seen"], "{p}");
    assert_eq!(p["panels"][1]["view"], "gallery");
    assert!(p.get("checkpoint").is_some());

    // Unknown names are JSON 404s.
    let (status, e) = get_json(port, "/api/pipelines/nope");
    assert_eq!(status, 404);
    assert_eq!(e["error"], "unknown_pipeline", "{e}");
    let (status, e) = get_json(port, "/api/streams/nope");
    assert_eq!(status, 404);
    assert!(
        e["detail"].as_str().unwrap().contains("live, gallery"),
        "{e}"
    );

    // Event streams: the table's rows (upserted by key), then the gallery's image.
    let sse = read_sse(port, "/api/streams/live", "22.5");
    assert!(sse.contains("event: rows"), "{sse}");
    assert!(sse.contains("\"reset\":true"), "{sse}");
    assert!(
        sse.contains("22.5") && !sse.contains("21.5"),
        "upserted by sensor: {sse}"
    );
    // Several tables over one stream (the page's: a browser allows six connections).
    let both = read_sse(
        port,
        "/api/streams?panels=live,gallery",
        "\"panel\":\"gallery\"",
    );
    assert!(both.contains("\"panel\":\"live\""), "{both}");
    let (status, _) = http(port, "GET", "/api/streams?panels=nope", &[], b"").unwrap();
    assert_eq!(status, 404);
    let sse = read_sse(port, "/api/streams/gallery", "_image");
    let url = sse
        .split("\"_image\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no image URL in {sse}"))
        .to_string();
    let (status, body) = http(port, "GET", &url, &[], b"").expect("image");
    assert_eq!(status, 200);
    assert!(!body.is_empty());
    let (status, _) = http(port, "GET", "/api/streams/gallery/images/cam-9", &[], b"").unwrap();
    assert_eq!(status, 404);
    let sse = read_sse(port, "/api/pipelines/web-test/events", "\"nodes\"");
    assert!(sse.contains("event: status"), "{sse}");

    // Prometheus.
    let (status, metrics) = http(port, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(status, 200);
    for family in [
        "runnel_operator_records_in_total",
        "runnel_operator_records_out_total",
        "runnel_operator_late_records_total",
        "runnel_operator_dead_letters_total",
        "runnel_operator_batch_duration_seconds_bucket",
        "runnel_log_append_duration_seconds_bucket",
        "runnel_log_fsync_duration_seconds_bucket",
        "runnel_http_requests_total",
        "runnel_http_request_duration_seconds_bucket",
    ] {
        assert!(
            metrics.contains(family),
            "/metrics lacks {family}:\n{metrics}"
        );
    }

    // OpenAPI documents every route the server has.
    let (status, api) = get_json(port, "/api/openapi.json");
    assert_eq!(status, 200);
    for path in [
        "/v1/topics",
        "/v1/topics/{topic}",
        "/v1/topics/{topic}/records",
        "/api/pipelines",
        "/api/pipelines/{name}",
        "/api/pipelines/{name}/events",
        "/api/streams/{sink}",
        "/api/streams/{sink}/images/{key}",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            api["paths"].get(path).is_some(),
            "openapi.json lacks {path}"
        );
    }

    // The page and its assets are embedded.
    let (status, html) = http(port, "GET", "/", &[], b"").unwrap();
    assert_eq!(status, 200);
    assert!(
        html.contains("<html") && html.contains("/assets/app.js"),
        "{html}"
    );
    assert_eq!(
        http(port, "GET", "/assets/app.js", &[], b"").unwrap().0,
        200
    );
    assert_eq!(
        http(port, "GET", "/assets/style.css", &[], b"").unwrap().0,
        200
    );
    assert_eq!(
        http(port, "GET", "/assets/nope.js", &[], b"").unwrap().0,
        404
    );
}

#[test]
fn non_loopback_needs_a_token_and_requests_need_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["serve", "--listen", &listen, "--data-dir", "data"])
        .current_dir(dir.path())
        .env_remove("RUNNEL_AUTH_TOKEN")
        .output()
        .expect("running runnel");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--auth-token"), "{err}");

    // An empty or short token is refused at start, never "any token".
    for bad in ["", " ", "short"] {
        let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(["serve", "--listen", &listen, "--data-dir", "data"])
            .current_dir(dir.path())
            .env("RUNNEL_AUTH_TOKEN", bad)
            .output()
            .expect("running runnel");
        assert!(!out.status.success(), "token {bad:?} accepted");
    }

    let token = "s3cret-token-value";
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args([
            "serve",
            "--listen",
            &listen,
            "--data-dir",
            "data",
            "--auto-create",
        ])
        .current_dir(dir.path())
        .env("RUNNEL_AUTH_TOKEN", token)
        .env("RUNNEL_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting runnel serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((status, _)) = http(port, "GET", "/healthz", &[], b"") {
            assert_eq!(status, 401, "healthz without the token");
            break;
        }
        assert!(Instant::now() < deadline, "serve did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let bearer = format!("Bearer {token}");
    let (status, body) = http(port, "GET", "/api/pipelines", &[], b"").unwrap();
    assert_eq!(status, 401);
    assert!(body.contains("\"error\":\"unauthorized\""), "{body}");
    let (status, _) = http(
        port,
        "GET",
        "/api/pipelines",
        &[("Authorization", "Bearer wrong")],
        b"",
    )
    .unwrap();
    assert_eq!(status, 401);
    let (status, _) = http(
        port,
        "GET",
        "/api/pipelines",
        &[("Authorization", &bearer)],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200);
    let (status, _) = http(
        port,
        "GET",
        &format!("/metrics?access_token={token}"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(
        status, 401,
        "a query-string token only opens event streams and images"
    );
    let (status, _) = http(
        port,
        "GET",
        &format!("/api/pipelines/x/events?access_token={token}"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(status, 404, "…which it does: past auth, no such pipeline");
    // No token, an empty one, or one space: all refused for writes.
    for query in ["", "?access_token=", "?access_token=+"] {
        let (status, _) = http(
            port,
            "POST",
            &format!("/v1/topics/t/records{query}"),
            &[("Content-Type", "application/json")],
            b"{}",
        )
        .unwrap();
        assert_eq!(status, 401, "ingest with {query:?}");
    }
    let (status, _) = http(
        port,
        "POST",
        "/v1/topics/t/records",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    )
    .unwrap();
    assert_eq!(status, 200, "ingest with the token");
    // The page itself loads without a token, so that it can ask for one.
    assert_eq!(http(port, "GET", "/", &[], b"").unwrap().0, 200);

    let _ = child.kill();
    let out = child.wait_with_output().expect("serve output");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(token), "the token was logged:\n{all}");
}

/// Makes Debian's Chromium and playwright-core available, installing them when
/// missing (apt-get as root; npm into the shared cache). Returns (chromium, node_modules dir).
fn browser_tools() -> (PathBuf, PathBuf) {
    // One installation at a time: the browser tests run in parallel.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        assert!(
            is_root,
            "the browser test needs Debian's chromium ({}); install it with apt-get install chromium",
            chromium.display()
        );
        let status = Command::new("sh")
            .args([
                "-c",
                "(apt-get install -y --no-install-recommends chromium || \
                 (apt-get update && apt-get install -y --no-install-recommends chromium)) >/dev/null",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("running apt-get");
        assert!(status.success(), "apt-get install chromium failed");
    }
    let cache = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache/runnel/browser-test");
    let package = repo().join("crates/runnel/tests/browser/package.json");
    std::fs::create_dir_all(&cache).expect("cache dir");
    let wanted = std::fs::read_to_string(&package).expect("package.json");
    let installed = std::fs::read_to_string(cache.join("package.json")).unwrap_or_default();
    if installed != wanted || !cache.join("node_modules/playwright-core").exists() {
        std::fs::write(cache.join("package.json"), &wanted).expect("writing package.json");
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&cache)
            .status()
            .expect("running npm (Node.js is needed for the browser test)");
        assert!(status.success(), "npm install playwright-core failed");
    }
    (chromium, cache.join("node_modules"))
}

/// Runs `tests/browser/dashboard.mjs` in headless Chromium against the server on `port`
/// with `args`; asserts it succeeded and returns its summary line and the screenshot.
fn run_browser(port: u16, screenshot: &str, args: &[&str]) -> (Value, PathBuf) {
    let (chromium, node_modules) = browser_tools();
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let shot = artifacts.join(screenshot);
    // ES modules resolve packages next to the script, not through NODE_PATH.
    let cache = node_modules
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let script = cache.join(format!("dashboard-{port}.mjs"));
    std::fs::copy(
        repo().join("crates/runnel/tests/browser/dashboard.mjs"),
        &script,
    )
    .expect("copying the browser driver");
    let out = Command::new("node")
        .arg(&script)
        .args(["--url", &format!("http://127.0.0.1:{port}/")])
        .args(["--screenshot", &shot.display().to_string()])
        .args(args)
        .args(["--timeout-ms", "30000"])
        .env("CHROMIUM", &chromium)
        .current_dir(&cache)
        .output()
        .expect("running node");
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser test failed (screenshot: {}):\n{stdout}\n{stderr}",
        shot.display()
    );
    let summary: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (summary, shot)
}

#[test]
fn dashboard_page_in_headless_chromium() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _server = start_pipeline(dir.path(), port);
    post(
        port,
        "readings",
        &[("Content-Type", "application/json")],
        b"[{\"sensor\":\"s1\",\"temp\":21.5},{\"sensor\":\"s2\",\"temp\":19},{\"sensor\":\"s3\",\"temp\":999}]",
    );
    for cam in ["cam-0", "cam-1"] {
        post(
            port,
            "frames",
            &[("Content-Type", "image/png"), ("X-Key", cam)],
            &photo(),
        );
    }
    let (summary, shot) = run_browser(
        port,
        "dashboard.png",
        &[
            "--expect-gallery",
            "--expect-boxes",
            "--expect-quality",
            "--expect-ready",
            "--expect-dead-letters",
            "--expect-rows",
            "2",
        ],
    );
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    eprintln!("dashboard screenshot: {}", shot.display());
    assert_eq!(summary["ok"], true, "{summary}");
    // The same numbers from the API: the rule's violation, the source's profile.
    let (status, q) = get_json(port, "/api/pipelines/web-test/quality");
    assert_eq!(status, 200, "{q}");
    let table = &q["tables"][0];
    assert_eq!(table["table"], "readings", "{q}");
    assert_eq!(table["rules"][0]["rule"], "plausible", "{q}");
    assert_eq!(table["rules"][0]["violations"], 1, "{q}");
    assert_eq!(table["profile"]["rows"], 3, "{q}");
    assert_eq!(table["profile"]["columns"][1]["max"], 999.0, "{q}");
    let (_, metrics) = http(port, "GET", "/metrics", &[], b"").expect("GET /metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("runnel_quality_violations_total")
                && l.contains("rule=\"plausible\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
}

/// `runnel serve` in the page: a script that does not plan is marked at its line in the
/// editor, a good one is submitted and shown, and stopped from the list (a savepoint).
#[test]
fn page_submits_and_stops_hosted_pipelines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _server = Server::start(dir.path(), port, &["--auto-create"]);
    post(
        port,
        "readings",
        &[("Content-Type", "application/json")],
        b"[{\"sensor\":\"s1\",\"temp\":21.5},{\"sensor\":\"s2\",\"temp\":19},{\"sensor\":\"s3\",\"temp\":25}]",
    );
    let head = "SET 'pipeline.name' = 'page-made';\nCREATE TABLE readings (sensor STRING, temp DOUBLE) \
         WITH (connector = 'log', topic = 'readings', format = 'json');\n\
         CREATE TABLE hot (sensor STRING, temp DOUBLE) WITH (connector = 'dashboard', \
         title = 'Hot sensors', view = 'table', key = 'sensor');\n";
    let bad = dir.path().join("bad.sql");
    let good = dir.path().join("good.sql");
    std::fs::write(
        &bad,
        format!("{head}INSERT INTO hot SELECT sensor, tmp FROM readings;\n"),
    )
    .expect("bad.sql");
    std::fs::write(
        &good,
        format!("{head}INSERT INTO hot SELECT sensor, temp FROM readings WHERE temp > 20;\n"),
    )
    .expect("good.sql");
    let (bad, good) = (bad.display().to_string(), good.display().to_string());
    let (summary, _) = run_browser(
        port,
        "hosted.png",
        &[
            "--bad-sql",
            &bad,
            "--good-sql",
            &good,
            "--pipeline",
            "page-made",
            "--expect-rows",
            "2",
            "--expect-ready",
        ],
    );
    assert_eq!(summary["sql_error_line"], 4, "{summary}");
    assert!(
        summary["sql_error"]
            .as_str()
            .unwrap_or_default()
            .contains("tmp"),
        "{summary}"
    );
    assert_eq!(summary["stopped_state"], "stopped", "{summary}");
    let (status, p) = get_json(port, "/api/pipelines/page-made");
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["state"], "stopped", "{p}");
    assert!(p["hosted"]["savepoint"].is_string(), "{p}");
}

/// `runnel demo --tls-self-signed`: the page and API over HTTPS, and the simulated cameras
/// post over it (pinning the generated certificate).
#[test]
fn demo_serves_tls_and_its_cameras_post_over_it() {
    let _heavy = crate::harness::heavy();
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = format!("127.0.0.1:{}", free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["demo", "--listen", &listen, "--data-dir", "data"])
        .args(["--cameras", "1", "--fps", "4", "--duration", "8"])
        .arg("--tls-self-signed")
        .current_dir(dir.path())
        .env("RUNNEL_LOG", "warn")
        .output()
        .expect("running runnel demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("dashboard: https://"), "{stdout}");
    assert!(stderr.contains("TLS certificate SHA-256 "), "{stderr}");
    let cameras = stderr
        .lines()
        .find(|l| l.contains("cameras: sent"))
        .unwrap_or_else(|| panic!("no camera summary: {stderr}"));
    let acked: u64 = cameras
        .split_whitespace()
        .skip_while(|w| *w != "acked")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(acked > 0, "{cameras}");
    assert!(cameras.contains("failed 0"), "{cameras}");
    // Shutting down closes the log before its directory goes: no warnings.
    assert!(!stderr.contains("WARN"), "{stderr}");
}

/// `runnel demo`: frames posted over HTTP are classified into the `labels` topic; a
/// corrupt JPEG and an empty body are dead-lettered and the pipeline goes on.
#[test]
fn demo_classifies_posted_frames() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args([
            "demo",
            "--listen",
            &listen,
            "--data-dir",
            "data",
            "--cameras",
            "1",
        ])
        .current_dir(dir.path())
        .env("RUNNEL_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting runnel demo");
    let stdout = child.stdout.take().expect("stdout");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(port, "GET", "/readyz", &[], b"")
        .map(|r| r.0)
        .unwrap_or(0)
        != 200
    {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("runnel demo exited early: {status}");
        }
        assert!(Instant::now() < deadline, "demo not ready within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with(&format!("dashboard: http://127.0.0.1:{port}"))),
        "{:?}",
        lines.lock().unwrap()
    );
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            .to_string()
    };
    let images = repo().join("assets/images");
    let send = |key: &str, ty: &str, body: &[u8]| {
        let t = now();
        post(
            port,
            "frames",
            &[("Content-Type", ty), ("X-Key", key), ("X-Event-Time", &t)],
            body,
        );
    };
    send(
        "test-coffee",
        "image/png",
        &std::fs::read(images.join("coffee.png")).unwrap(),
    );
    send(
        "test-corrupt",
        "image/jpeg",
        b"\xFF\xD8\xFF\xE0 this is not really a jpeg",
    );
    send("test-empty", "image/jpeg", b"");
    send(
        "test-rocket",
        "image/jpeg",
        &std::fs::read(images.join("rocket.jpg")).unwrap(),
    );
    send(
        "test-flower",
        "image/jpeg",
        &std::fs::read(images.join("flower.jpg")).unwrap(),
    );

    let mut found = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while found.len() < 3 && Instant::now() < deadline {
        if let Ok((200, text)) = http(
            port,
            "GET",
            "/v1/topics/labels/records?partition=0&offset=0&max=10000",
            &[],
            b"",
        ) {
            for line in text.lines().filter(|l| !l.is_empty()) {
                let r: Value = serde_json::from_str(line).expect("NDJSON");
                let v = &r["value"];
                if let Some(cam) = v["camera"].as_str().filter(|c| c.starts_with("test-")) {
                    found.insert(cam.to_string(), v.clone());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(found["test-coffee"]["label"], "espresso", "{found:?}");
    assert_eq!(found["test-rocket"]["label"], "missile", "{found:?}");
    assert_eq!(found["test-flower"]["label"], "daisy", "{found:?}");
    for v in found.values() {
        assert!(v["latency_ms"].as_i64().is_some_and(|l| l >= 0), "{v}");
        assert!(
            v["score"].as_f64().is_some_and(|s| s > 0.0 && s <= 1.0),
            "{v}"
        );
    }
    assert!(!found.contains_key("test-corrupt") && !found.contains_key("test-empty"));
    let dead = std::fs::read_to_string(dir.path().join("data/dead-letters/classify.jsonl"))
        .unwrap_or_default();
    // Each bad frame once from classify and once from detect (the demo runs both).
    assert_eq!(dead.lines().count(), 4, "{dead}");
    assert!(dead.contains("empty"), "{dead}");
    assert_eq!(dead.matches("\"detect\"").count(), 2, "{dead}");

    // The simulated camera's frames are counted per 10-second window on stdout.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.starts_with("window to "))
    {
        assert!(
            Instant::now() < deadline,
            "no window line: {:?}",
            lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every frame's result also lands in the Delta table, committed with a checkpoint
    // (every 10 s), readable while the demo runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args([
                "query",
                "SELECT camera, label, `date` FROM `demo-out/warehouse/frames` \
                 WHERE camera LIKE 'test-%' ORDER BY camera",
                "--format",
                "csv",
            ])
            .current_dir(dir.path())
            .output()
            .expect("runnel query");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("test-rocket,missile,") {
            assert!(text.starts_with("camera,label,date\n"), "{text}");
            assert!(text.contains("test-coffee,espresso,20"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no frames in demo-out/warehouse/frames: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(1000));
    }
    assert!(
        dir.path()
            .join("demo-out/warehouse/frames/_delta_log")
            .is_dir()
    );
    let (status, metrics) = http(port, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("runnel_classify_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("runnel_end_to_end_latency_seconds_bucket"),
        "{metrics}"
    );
    // SIGTERM stops it cleanly.
    sigterm(child.0.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            assert!(status.success(), "demo exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "demo did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = reader.join();
}

fn sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// Issue 16: with no token on loopback, another web site can neither write (cross-site
/// requests) nor read through a rebound DNS name.
#[test]
fn other_sites_cannot_write_or_rebind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _server = Server::start(dir.path(), port, &["--auto-create"]);
    let own = format!("http://127.0.0.1:{port}");
    let post = |headers: &[(&str, &str)]| {
        http(port, "POST", "/v1/topics/t/records", headers, b"{\"a\":1}")
            .expect("posting")
            .0
    };
    let json = ("Content-Type", "application/json");
    assert_eq!(post(&[json, ("Origin", "https://evil.example")]), 403);
    assert_eq!(post(&[json, ("Origin", "null")]), 403);
    assert_eq!(post(&[("Content-Type", "text/plain")]), 415);
    assert_eq!(
        post(&[("Content-Type", "application/x-www-form-urlencoded")]),
        415
    );
    assert_eq!(post(&[]), 415);
    let host = format!("127.0.0.1:{port}");
    assert_eq!(
        post(&[json, ("Origin", own.as_str()), ("Host", host.as_str())]),
        200
    );
    assert_eq!(post(&[json]), 200, "a non-browser client");
    assert_eq!(post(&[("Content-Type", "text/plain"), ("X-Key", "k")]), 200);
    assert_eq!(
        post(&[
            ("Content-Type", "text/plain"),
            ("X-Runnel-Client", "runnel/0")
        ]),
        200,
        "runnel's own clients (runnel produce --content-type text/plain)"
    );
    let (status, body) = http(
        port,
        "GET",
        "/api/pipelines",
        &[("Host", &format!("evil.example:{port}"))],
        b"",
    )
    .expect("get");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("bad_host"), "{body}");
    let (status, _) = http(
        port,
        "GET",
        "/api/pipelines",
        &[("Host", &format!("localhost:{port}"))],
        b"",
    )
    .expect("get");
    assert_eq!(status, 200);
    // Security headers: a content security policy and no framing on the page, no caching
    // of API answers.
    let raw = |path: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.to_ascii_lowercase()
    };
    let page = raw("/");
    assert!(
        page.contains("content-security-policy: default-src 'self'"),
        "{page}"
    );
    assert!(page.contains("frame-ancestors 'none'"), "{page}");
    assert!(page.contains("x-frame-options: deny"), "{page}");
    assert!(page.contains("x-content-type-options: nosniff"), "{page}");
    let api = raw("/api/pipelines");
    assert!(api.contains("cache-control: no-store"), "{api}");
}

/// `curl` and `openssl`, installed with apt-get when missing and run as root.
fn tls_tools() {
    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
            || Command::new(tool)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
    };
    if !(have("curl") && have("openssl")) {
        let _ = Command::new("sh")
            .args([
                "-c",
                "[ \"$(id -u)\" = 0 ] && (apt-get install -y curl openssl || \
                 (apt-get update && apt-get install -y curl openssl)) >/dev/null",
            ])
            .status();
    }
    assert!(
        have("curl") && have("openssl"),
        "the TLS test needs curl and openssl (apt-get install curl openssl)"
    );
}

/// Token of the self-signed TLS server below.
const TOKEN: &str = "tls-test-token-0123456789";

/// Issue 16: HTTPS with PEM files, reloaded on SIGHUP, and with a self-signed certificate;
/// runnel's own client trusting a CA file or a pinned fingerprint, with the token.
#[test]
fn tls_with_files_reloaded_on_sighup_and_self_signed() {
    tls_tools();
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    for n in ["1", "2"] {
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                &format!("k{n}.pem"),
                "-out",
                &format!("c{n}.pem"),
            ])
            .current_dir(d)
            .output()
            .expect("openssl");
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
    }
    std::fs::copy(d.join("c1.pem"), d.join("cert.pem")).expect("copy");
    std::fs::copy(d.join("k1.pem"), d.join("key.pem")).expect("copy");
    let curl = |ca: &str, port: u16| {
        Command::new("curl")
            .args(["-s", "--max-time", "5", "--cacert", ca])
            .arg(format!("https://127.0.0.1:{port}/healthz"))
            .current_dir(d)
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout == b"ok")
    };
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args([
            "serve",
            "--listen",
            &listen,
            "--data-dir",
            "data",
            "--tls-cert",
            "cert.pem",
            "--tls-key",
            "key.pem",
        ])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting runnel serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !curl("c1.pem", port) {
        assert!(Instant::now() < deadline, "HTTPS with c1 did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Plain HTTP on the TLS port gets no answer.
    assert!(!matches!(
        http(port, "GET", "/healthz", &[], b""),
        Ok((200, _))
    ));
    std::fs::copy(d.join("c2.pem"), d.join("cert.pem")).expect("copy");
    std::fs::copy(d.join("k2.pem"), d.join("key.pem")).expect("copy");
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !curl("c2.pem", port) {
        assert!(
            Instant::now() < deadline,
            "the reloaded certificate is not served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!curl("c1.pem", port), "the old certificate is still served");
    // runnel's own client over https://: trusts the server's certificate file, refuses
    // another.
    let url = format!("https://127.0.0.1:{port}");
    let ok = runnel_cli(
        d,
        &["topics", "create", "t", "--url", &url, "--tls-ca", "c2.pem"],
        &[],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = runnel_cli(
        d,
        &["topics", "list", "--url", &url, "--tls-ca", "c1.pem"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("TLS"),
        "{stderr}"
    );
    let _ = child.kill();
    let _ = child.wait();

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args([
            "serve",
            "--listen",
            &listen,
            "--data-dir",
            "data2",
            "--tls-self-signed",
            "--auth-token",
            TOKEN,
        ])
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting runnel serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let banner: Vec<String> = lines.by_ref().take(2).map_while(Result::ok).collect();
    assert!(banner[0].contains("https://"), "{banner:?}");
    assert!(
        banner[1].starts_with("TLS certificate SHA-256 "),
        "{banner:?}"
    );
    let insecure = Command::new("curl")
        .args(["-sk", "--max-time", "5", "-H"])
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .arg(format!("https://127.0.0.1:{port}/healthz"))
        .output()
        .expect("curl");
    assert_eq!(insecure.stdout, b"ok");
    // Pinned by the printed fingerprint, with the token from the environment.
    let fingerprint = banner[1]
        .trim_start_matches("TLS certificate SHA-256 ")
        .trim()
        .to_string();
    let url = format!("https://127.0.0.1:{port}");
    let pinned = [
        "topics",
        "list",
        "--url",
        &url,
        "--tls-fingerprint",
        &fingerprint,
    ];
    let ok = runnel_cli(d, &pinned, &[("RUNNEL_AUTH_TOKEN", TOKEN)]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let no_token = runnel_cli(d, &pinned, &[]);
    let stderr = String::from_utf8_lossy(&no_token.stderr);
    assert!(
        !no_token.status.success() && stderr.contains("401"),
        "{stderr}"
    );
    let other = "00:".repeat(31) + "00";
    let wrong = ["topics", "list", "--url", &url, "--tls-fingerprint", &other];
    let refused = runnel_cli(d, &wrong, &[("RUNNEL_AUTH_TOKEN", TOKEN)]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("fingerprint"),
        "{stderr}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs the runnel CLI in `dir` with only the given extra environment (no token).
fn runnel_cli(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(args)
        .env_remove("RUNNEL_AUTH_TOKEN")
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .expect("running runnel")
}
