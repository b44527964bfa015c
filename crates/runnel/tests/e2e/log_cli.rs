//! The log from the command line: `runnel topics|produce|consume` on a data dir and
//! against `runnel serve`, and the SIGKILL crash test of the ingest API.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::TestDir;

/// A port that was free a moment ago (the CLI cannot bind port 0 and report it back).
pub(crate) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    l.local_addr().expect("local addr").port()
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("Host: 127.0.0.1\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok());
    let (Some(status), Some((_, body))) = (status, text.split_once("\r\n\r\n")) else {
        return Err(std::io::Error::other(format!(
            "not an HTTP answer: {text:?}"
        )));
    };
    Ok((status, body.to_owned()))
}

/// `runnel serve` running in the background; killed (SIGKILL) when dropped.
pub(crate) struct Server {
    child: Child,
}

impl Server {
    /// `runnel serve --listen 127.0.0.1:PORT --data-dir data EXTRA…` in `cwd`.
    pub(crate) fn start(cwd: &Path, port: u16, extra: &[&str]) -> Server {
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["serve", "--listen", &listen, "--data-dir", "data"];
        args.extend_from_slice(extra);
        Server::spawn(cwd, port, &args)
    }

    /// `runnel ARGS` (which must serve HTTP on `port`), once /healthz answers.
    pub(crate) fn spawn(cwd: &Path, port: u16, args: &[&str]) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(args)
            .current_dir(cwd)
            .env("RUNNEL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting runnel");
        let mut server = Server { child };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if matches!(http(port, "GET", "/healthz", &[], b""), Ok((200, _))) {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("runnel {} exited early: {status}", args[0]);
            }
            assert!(
                Instant::now() < deadline,
                "runnel {} did not answer /healthz within 20 s",
                args[0]
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("consume prints JSON lines"))
        .collect()
}

#[test]
fn log_cli_topics_produce_consume_on_data_dir() {
    let dir = TestDir::new();
    dir.runnel(&["topics", "create", "orders", "--partitions", "2"])
        .assert_ok();
    dir.runnel(&["topics", "create", "orders", "--partitions", "2"])
        .assert_err("already exists");
    dir.runnel(&["topics", "create", "bad/name"])
        .assert_err("invalid topic name");
    let input: String = (0..50)
        .map(|i| format!("{{\"id\":{i},\"item\":\"thing {i}\"}}\n"))
        .collect();
    dir.write("orders.jsonl", &input);
    let run = dir.runnel(&[
        "produce",
        "orders",
        "--file",
        "orders.jsonl",
        "--key",
        "cust-1",
        "--batch",
        "7",
    ]);
    assert!(
        run.assert_ok().stdout.contains("produced 50 record(s)"),
        "{}",
        run.stdout
    );

    let list = dir.runnel(&["topics", "list"]);
    let row = list
        .assert_ok()
        .stdout
        .lines()
        .find(|l| l.starts_with("orders"))
        .map(str::to_owned);
    let cols: Vec<String> = row
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        cols.get(1..3),
        Some(&["2".to_owned(), "50".to_owned()][..]),
        "{}",
        list.stdout
    );
    let describe = dir.runnel(&["topics", "describe", "orders"]);
    assert!(
        describe.assert_ok().stdout.contains("partitions=2"),
        "{}",
        describe.stdout
    );
    dir.runnel(&["topics", "describe", "nope"])
        .assert_err("unknown topic 'nope'");

    // Everything comes back, in order (one key: one partition).
    let all = json_lines(
        &dir.runnel(&["consume", "orders", "--from-beginning"])
            .assert_ok()
            .stdout,
    );
    let ids: Vec<i64> = all
        .iter()
        .map(|r| r["value"]["id"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(ids, (0..50).collect::<Vec<_>>());
    assert_eq!(all[0]["key"], "cust-1");
    assert_eq!(all[0]["offset"], 0);
    assert_eq!(all[49]["offset"], 49);
    // Without --from-beginning and without a group there is nothing new.
    assert_eq!(dir.runnel(&["consume", "orders"]).assert_ok().stdout, "");
    let first = json_lines(
        &dir.runnel(&["consume", "orders", "--from-beginning", "--max", "5"])
            .assert_ok()
            .stdout,
    );
    assert_eq!(first.len(), 5);

    // A group resumes where it stopped and never repeats.
    let g1 = json_lines(
        &dir.runnel(&[
            "consume",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
            "--max",
            "30",
        ])
        .assert_ok()
        .stdout,
    );
    let g2 = json_lines(
        &dir.runnel(&[
            "consume",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
        ])
        .assert_ok()
        .stdout,
    );
    let g3 = json_lines(
        &dir.runnel(&[
            "consume",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
        ])
        .assert_ok()
        .stdout,
    );
    assert_eq!((g1.len(), g2.len(), g3.len()), (30, 20, 0));
    assert_eq!(g2[0]["value"]["id"], 30);
    dir.write("more.jsonl", "{\"id\":50}\n\n{\"id\":51}\n");
    dir.runnel(&[
        "produce",
        "orders",
        "--file",
        "more.jsonl",
        "--key",
        "cust-1",
    ])
    .assert_ok();
    let g4 = json_lines(
        &dir.runnel(&["consume", "orders", "--group", "billing"])
            .assert_ok()
            .stdout,
    );
    assert_eq!(
        g4.iter()
            .map(|r| r["value"]["id"].clone())
            .collect::<Vec<_>>(),
        vec![Value::from(50), Value::from(51)]
    );

    // A malformed line is named; lines before it were produced, none after it.
    dir.write("bad.jsonl", "{\"id\":52}\n{\"id\":\n{\"id\":54}\n");
    dir.runnel(&["produce", "orders", "--file", "bad.jsonl", "--batch", "1"])
        .assert_err("line 2 is not JSON");
    dir.runnel(&["produce", "nope", "--file", "more.jsonl"])
        .assert_err("unknown topic 'nope'");
}

#[test]
fn log_cli_serve_ingest_and_cli_over_url() {
    let dir = TestDir::new();
    let port = free_port();
    let server = Server::start(
        dir.path(),
        port,
        &["--auto-create", "--auto-create-partitions", "3"],
    );
    let url = format!("http://127.0.0.1:{port}");

    let (status, body) = http(
        port,
        "POST",
        "/v1/topics/sensors/records",
        &[("Content-Type", "application/x-ndjson"), ("X-Key", "s1")],
        b"{\"t\":1}\n{\"t\":2}\n",
    )
    .expect("POST");
    assert_eq!(status, 200, "{body}");
    let ack: Value = serde_json::from_str(&body).expect("JSON answer");
    assert_eq!(ack["offsets"], serde_json::json!([0, 1]));
    let (status, body) = http(
        port,
        "POST",
        "/v1/topics/sensors/records",
        &[("Content-Type", "application/json")],
        b"{\"t\":",
    )
    .expect("POST");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("malformed_json"), "{body}");

    // The CLI goes through the server (the data dir is locked by it).
    dir.runnel(&["topics", "list", "--data-dir", "data"])
        .assert_err("--url");
    dir.runnel(&[
        "topics",
        "create",
        "orders",
        "--partitions",
        "2",
        "--url",
        &url,
    ])
    .assert_ok();
    dir.runnel(&["topics", "create", "orders", "--url", &url])
        .assert_err("409");
    let list = dir.runnel(&["topics", "list", "--url", &url]);
    assert!(
        list.assert_ok()
            .stdout
            .lines()
            .any(|l| l.starts_with("sensors") && l.contains(" 3 ")),
        "{}",
        list.stdout
    );
    dir.write("in.jsonl", "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
    dir.runnel(&[
        "produce",
        "orders",
        "--file",
        "in.jsonl",
        "--key",
        "k",
        "--header",
        "source=cli",
        "--url",
        &url,
    ])
    .assert_ok();
    let describe = dir.runnel(&["topics", "describe", "orders", "--url", &url]);
    assert!(
        describe.assert_ok().stdout.contains("partitions=2"),
        "{}",
        describe.stdout
    );
    let got = json_lines(
        &dir.runnel(&[
            "consume",
            "orders",
            "--from-beginning",
            "--group",
            "g",
            "--url",
            &url,
        ])
        .assert_ok()
        .stdout,
    );
    assert_eq!(
        got.iter()
            .map(|r| r["value"]["n"].clone())
            .collect::<Vec<_>>(),
        vec![Value::from(1), Value::from(2), Value::from(3)]
    );
    assert_eq!(got[0]["headers"]["source"], "cli");
    assert_eq!(
        dir.runnel(&["consume", "orders", "--group", "g", "--url", &url])
            .assert_ok()
            .stdout,
        ""
    );
    let sensors = json_lines(
        &dir.runnel(&["consume", "sensors", "--from-beginning", "--url", &url])
            .assert_ok()
            .stdout,
    );
    assert_eq!(sensors.len(), 2);
    drop(server);

    // After the server is gone the data dir is usable directly.
    let again = json_lines(
        &dir.runnel(&[
            "consume",
            "orders",
            "--from-beginning",
            "--data-dir",
            "data",
        ])
        .assert_ok()
        .stdout,
    );
    assert_eq!(again.len(), 3);
}

/// What a producer thread saw acknowledged: (producer, seq) → (partition, offset).
type Acked = HashMap<(u64, u64), (u64, u64)>;

#[test]
fn log_cli_crash_sigkill_loses_no_acknowledged_record() {
    let _heavy = crate::harness::heavy();
    const PRODUCERS: u64 = 4;
    const KILLS: usize = 20;
    let dir = TestDir::new();
    dir.runnel(&[
        "topics",
        "create",
        "crash",
        "--partitions",
        "4",
        "--data-dir",
        "data",
    ])
    .assert_ok();
    let port = free_port();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let mut server = Server::start(dir.path(), port, &[]);
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|producer| {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut seq = 0u64;
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (producer + 1);
                let key = format!("producer-{producer}");
                while !stop.load(Ordering::Relaxed) {
                    let n = 1 + next_random(&mut rng) % 5;
                    let body: String = (seq..seq + n)
                        .map(|s| format!("{{\"producer\":{producer},\"seq\":{s}}}\n"))
                        .collect();
                    // Fresh sequence numbers for every request: an unacknowledged request may or
                    // may not be stored, and is never retried under the same numbers.
                    let first = seq;
                    seq += n;
                    match http(
                        port,
                        "POST",
                        "/v1/topics/crash/records",
                        &[("Content-Type", "application/x-ndjson"), ("X-Key", &key)],
                        body.as_bytes(),
                    ) {
                        Ok((200, answer)) => {
                            let v: Value = serde_json::from_str(&answer).expect("200 carries JSON");
                            let partition = v["partition"].as_u64().expect("partition");
                            let offsets: Vec<u64> = v["offsets"]
                                .as_array()
                                .expect("offsets")
                                .iter()
                                .filter_map(Value::as_u64)
                                .collect();
                            assert_eq!(offsets.len() as u64, n, "{answer}");
                            let mut a = acked.lock().expect("acked lock");
                            for (i, off) in offsets.into_iter().enumerate() {
                                a.insert((producer, first + i as u64), (partition, off));
                            }
                        }
                        Ok((status, answer)) => {
                            assert!(status == 503, "unexpected {status}: {answer}")
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        })
        .collect();
    let mut rng = 0x2545_f491_4f6c_dd1du64 ^ u64::from(port);
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(50 + next_random(&mut rng) % 250));
        server.kill();
        server = Server::start(dir.path(), port, &[]);
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.join().expect("producer thread");
    }
    server.kill();
    drop(server);

    let acked = acked.lock().expect("acked lock").clone();
    assert!(
        acked.len() > 100,
        "too few acknowledged records to mean anything: {}",
        acked.len()
    );
    let mut seen: HashMap<(u64, u64), Vec<(u64, u64)>> = HashMap::new();
    for partition in 0..4u64 {
        let run = dir.runnel(&[
            "consume",
            "crash",
            "--from-beginning",
            "--partition",
            &partition.to_string(),
            "--data-dir",
            "data",
        ]);
        let mut last_seq: HashMap<u64, u64> = HashMap::new();
        for (i, r) in json_lines(&run.assert_ok().stdout).iter().enumerate() {
            assert_eq!(r["offset"].as_u64(), Some(i as u64), "offsets are dense");
            let (producer, seq) = (
                r["value"]["producer"].as_u64().expect("producer"),
                r["value"]["seq"].as_u64().expect("seq"),
            );
            if let Some(prev) = last_seq.insert(producer, seq) {
                assert!(
                    seq > prev,
                    "partition {partition}: producer {producer} seq {seq} after {prev}"
                );
            }
            seen.entry((producer, seq))
                .or_default()
                .push((partition, i as u64));
        }
    }
    for (record, at) in &acked {
        assert_eq!(
            seen.get(record),
            Some(&vec![*at]),
            "acknowledged record {record:?} must be stored exactly once at {at:?}"
        );
    }
    eprintln!(
        "crash test: {KILLS} kills, {} acknowledged records, {} stored",
        acked.len(),
        seen.len()
    );
}

fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// `runnel run p.sql --listen …` in `dir`, once /healthz answers; killed with the returned guard.
fn run_listening(dir: &Path, port: u16) -> Server {
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "run",
        "p.sql",
        "--listen",
        &listen,
        "--data-dir",
        "data",
        "-p",
        "2",
    ];
    Server::spawn(dir, port, &args)
}

/// The values of partition 0 of `topic`, once at least `n` are there (or after 30 s), sorted.
fn wait_for_values(port: u16, topic: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let path = format!("/v1/topics/{topic}/records?partition=0&offset=0&max=100");
    let mut values = Vec::new();
    while Instant::now() < deadline {
        if let Ok((200, text)) = http(port, "GET", &path, &[], b"") {
            values = json_lines(&text)
                .iter()
                .map(|r| r["value"].to_string())
                .collect();
            if values.len() >= n {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    values.sort();
    values
}

/// `runnel run … --listen`: clients POST into a `log` topic while the pipeline
/// runs; its results land in another `log` topic, bad records in the dead-letter topic.
#[test]
fn run_with_listen_consumes_posted_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE TABLE readings (sensor STRING, temp DOUBLE) WITH (connector = 'log', topic = 'readings', format = 'json');
         CREATE TABLE alerts (sensor STRING, fahrenheit DOUBLE) WITH (connector = 'log', topic = 'alerts');
         INSERT INTO alerts SELECT UPPER(sensor), temp * 9 / 5 + 32 FROM readings WHERE temp > 30;",
    )
    .expect("writing pipeline");
    let port = free_port();
    let _server = run_listening(dir.path(), port);
    let body = b"{\"sensor\": \"s1\", \"temp\": 35}\n{\"sensor\": \"s2\", \"temp\": 20}\n{\"sensor\": \"s3\", \"temp\": 40}\n";
    let (status, answer) = http(
        port,
        "POST",
        "/v1/topics/readings/records",
        &[("Content-Type", "application/x-ndjson")],
        body,
    )
    .expect("posting");
    assert_eq!(status, 200, "{answer}");
    let (status, _) = http(
        port,
        "POST",
        "/v1/topics/readings/records",
        &[("Content-Type", "application/octet-stream")],
        b"not json",
    )
    .expect("posting raw");
    assert_eq!(status, 200);
    let values = wait_for_values(port, "alerts", 2);
    assert_eq!(
        values,
        [
            "{\"fahrenheit\":104.0,\"sensor\":\"S3\"}",
            "{\"fahrenheit\":95.0,\"sensor\":\"S1\"}"
        ]
    );
    // The malformed record may be decoded a little after the good ones.
    let dead = wait_for_values(port, "readings.dead-letter", 1);
    assert!(dead.iter().any(|d| d.contains("not json")), "{dead:?}");
}

/// An idle source subtask must not hold the watermark back forever: with two
/// partitions and data only in one, windows still fire after the idle timeout.
#[test]
fn idle_partition_does_not_stall_windows() {
    let _heavy = crate::harness::heavy();
    let dir = tempfile::tempdir().expect("temp dir");
    let created = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args([
            "topics",
            "create",
            "ev",
            "--partitions",
            "2",
            "--data-dir",
            "data",
        ])
        .current_dir(dir.path())
        .output()
        .expect("creating topic");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    std::fs::write(
        dir.path().join("p.sql"),
        "SET 'source.idle-timeout' = '500 ms';
         CREATE TABLE ev (k STRING, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
           WITH (connector = 'log', topic = 'ev');
         CREATE TABLE out (k STRING, window_start TIMESTAMP(3), n BIGINT) WITH (connector = 'log', topic = 'out');
         INSERT INTO out SELECT k, window_start, COUNT(*)
         FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end;",
    )
    .expect("writing pipeline");
    let port = free_port();
    let _server = run_listening(dir.path(), port);
    // One key: every record lands in the same partition; the other stays empty.
    let body = b"{\"k\":\"a\",\"ts\":\"2026-01-01T00:00:01Z\"}\n{\"k\":\"a\",\"ts\":\"2026-01-01T00:00:05Z\"}\n{\"k\":\"a\",\"ts\":\"2026-01-01T00:00:12Z\"}\n{\"k\":\"a\",\"ts\":\"2026-01-01T00:00:25Z\"}\n";
    let (status, answer) = http(
        port,
        "POST",
        "/v1/topics/ev/records",
        &[("Content-Type", "application/x-ndjson"), ("X-Key", "a")],
        body,
    )
    .expect("posting");
    assert_eq!(status, 200, "{answer}");
    let values = wait_for_values(port, "out", 2);
    let status = http(port, "GET", "/api/pipelines/p", &[], b"").map(|r| r.1);
    assert_eq!(
        values,
        [
            "{\"k\":\"a\",\"n\":1,\"window_start\":\"2026-01-01T00:00:10.000Z\"}",
            "{\"k\":\"a\",\"n\":2,\"window_start\":\"2026-01-01T00:00:00.000Z\"}",
        ],
        "pipeline status: {status:?}"
    );
}

/// Issue 16: a row whose expression fails is dead-lettered and the pipeline goes on;
/// with `'pipeline.on-error' = 'fail'` the pipeline fails, but the server of
/// `runnel run --listen` stays up and reports the failure.
#[test]
fn expression_errors_do_not_stop_the_pipeline_or_the_server() {
    let body = b"{\"x\": 1, \"y\": 0}\n{\"x\": 8, \"y\": 2}\n";
    let post = |port: u16| {
        http(
            port,
            "POST",
            "/v1/topics/s/records",
            &[("Content-Type", "application/x-ndjson")],
            body,
        )
        .expect("posting")
    };
    let pipeline = "CREATE TABLE s (x BIGINT, y BIGINT) WITH (connector = 'log', topic = 's');
         CREATE TABLE o (q BIGINT) WITH (connector = 'log', topic = 'o');
         INSERT INTO o SELECT x / y FROM s;";

    // Non-strict (the default): the good row arrives, the bad one is a dead letter.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("p.sql"), pipeline).expect("writing pipeline");
    let port = free_port();
    let server = run_listening(dir.path(), port);
    assert_eq!(post(port).0, 200);
    assert_eq!(wait_for_values(port, "o", 1), ["{\"q\":4}"]);
    let letters = dir.path().join("data/dead-letters/expressions.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while Instant::now() < deadline && !text.contains("Divide by zero") {
        text = std::fs::read_to_string(&letters).unwrap_or_default();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(text.contains("evaluating x / y"), "{text}");
    assert!(text.contains(r#"\"y\":0"#), "{text}");
    drop(server);

    // Strict: the pipeline fails; the API reports it and ingest still answers.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("p.sql"),
        format!("SET 'pipeline.on-error' = 'fail';\n{pipeline}"),
    )
    .expect("writing pipeline");
    let port = free_port();
    let _server = run_listening(dir.path(), port);
    assert_eq!(post(port).0, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = serde_json::Value::Null;
    while Instant::now() < deadline {
        if let Ok((200, text)) = http(port, "GET", "/api/pipelines/p", &[], b"") {
            status = serde_json::from_str(&text).unwrap_or_default();
            if status["state"] == "failed" {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(error.contains("Divide by zero"), "{status}");
    assert_eq!(
        post(port).0,
        200,
        "ingest answers after the pipeline failed"
    );
}

/// Issue 16: under a 1024-file limit, a 1000-partition topic is refused before it
/// touches the disk, and the log opens again afterwards.
#[test]
fn a_topic_the_file_limit_cannot_hold_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = env!("CARGO_BIN_EXE_runnel");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 1024 && '{bin}' topics create wide --partitions 1000 --data-dir data"
        ))
        .current_dir(dir.path())
        .output()
        .expect("running runnel");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("RLIMIT_NOFILE"), "{err}");
    assert!(!dir.path().join("data/topics/wide").exists());
    let out = Command::new(bin)
        .args(["topics", "create", "narrow", "--data-dir", "data"])
        .current_dir(dir.path())
        .output()
        .expect("running runnel");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
