//! Checkpoints and exactly-once recovery: SIGKILL the real binary at random moments and
//! check that the committed output equals an uninterrupted run's.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::TestDir;

const KEYS: usize = 8;
const RECORDS: usize = 400_000;

const PIPELINE: &str = "
SET 'execution.checkpointing.interval' = '100 ms';
SET 'execution.batch-size' = '500';
CREATE TABLE events (k STRING, seq BIGINT, ts TIMESTAMP(3),
                     WATERMARK FOR ts AS ts - INTERVAL '1' HOUR)
  WITH (connector = 'log', topic = 'events', format = 'json',
        'scan.startup.mode' = 'earliest', bounded = 'true');
CREATE TABLE copy (k STRING, seq BIGINT) WITH (connector = 'file', path = 'out/copy');
CREATE TABLE rolled (k STRING, seq BIGINT) WITH (connector = 'file', path = 'out/rolled',
  'sink.rolling-policy.file-size' = '64kb');
CREATE TABLE counts (k STRING, window_end TIMESTAMP(3), n BIGINT, mx BIGINT)
  WITH (connector = 'file', path = 'out/counts');
CREATE TABLE copy_log (k STRING, seq BIGINT)
  WITH (connector = 'log', topic = 'copy_out', format = 'json', partitions = '2');
CREATE TABLE parts (seq BIGINT, k STRING) PARTITIONED BY (k)
  WITH ('connector' = 'filesystem', 'path' = 'out/parts', 'format' = 'json',
        'sink.partition-commit.policy.kind' = 'success-file');
CREATE TABLE pq (seq BIGINT, k STRING) PARTITIONED BY (k)
  WITH ('connector' = 'filesystem', 'path' = 'out/pq', 'format' = 'parquet',
        'sink.rolling-policy.file-size' = '256kb');
INSERT INTO copy SELECT k, seq FROM events WHERE MOD(seq, 3) <> 1;
INSERT INTO rolled SELECT k, seq FROM events WHERE MOD(seq, 3) <> 1;
INSERT INTO pq SELECT seq, k FROM events WHERE MOD(seq, 3) <> 1;
INSERT INTO parts SELECT seq, k FROM events WHERE MOD(seq, 3) <> 1;
INSERT INTO copy_log SELECT k, seq FROM events WHERE MOD(seq, 3) <> 1;
INSERT INTO counts
SELECT k, window_end, COUNT(*), MAX(seq)
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY k, window_start, window_end;
";

/// A data dir whose topic `events` holds per-key sequence numbers.
fn prepare(t: &TestDir) {
    t.write("p.sql", PIPELINE);
    let r = t.runnel(&[
        "topics",
        "create",
        "events",
        "--partitions",
        "4",
        "--data-dir",
        "d",
    ]);
    assert!(r.success, "{}", r.stderr);
    let base: u64 = 1_764_000_000_000;
    for k in 0..KEYS {
        let mut lines = String::new();
        for i in (k..RECORDS).step_by(KEYS) {
            lines.push_str(&format!(
                "{{\"k\":\"k{k}\",\"seq\":{},\"ts\":{}}}\n",
                i / KEYS,
                base + i as u64
            ));
        }
        let file = format!("k{k}.jsonl");
        t.write(&file, &lines);
        let key = format!("k{k}");
        let r = t.runnel(&[
            "produce",
            "events",
            "--key",
            &key,
            "--file",
            &file,
            "--data-dir",
            "d",
        ]);
        assert!(r.success, "{}", r.stderr);
    }
}

/// The committed rows of a part-file sink, sorted; fails on a hidden file left over.
fn committed(dir: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for e in std::fs::read_dir(dir).expect("output dir") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("part-") {
            let text = std::fs::read_to_string(e.path()).expect("part file");
            rows.extend(text.lines().map(str::to_owned));
        }
    }
    rows.sort();
    rows
}

/// The committed rows of the partitioned `filesystem` sink as `k=…/<row>`, sorted;
/// fails on a hidden file left over or a partition without its success file.
fn committed_partitions(dir: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for p in std::fs::read_dir(dir).expect("output dir") {
        let p = p.expect("entry");
        let partition = p.file_name().to_string_lossy().into_owned();
        if !partition.starts_with("k=") {
            continue;
        }
        let mut success = false;
        for e in std::fs::read_dir(p.path()).expect("partition dir") {
            let e = e.expect("entry");
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "left over: {partition}/{name}");
            if name == "_SUCCESS" {
                success = true;
                continue;
            }
            let text = std::fs::read_to_string(e.path()).expect("part file");
            rows.extend(text.lines().map(|l| format!("{partition}/{l}")));
        }
        assert!(success, "{partition} has no _SUCCESS");
    }
    rows.sort();
    rows
}

/// The values in the `log` sink's topic, as sorted JSON text.
fn log_rows(t: &TestDir) -> Vec<String> {
    let r = t.runnel(&[
        "consume",
        "copy_out",
        "--from-beginning",
        "--data-dir",
        "d",
        "--max",
        "10000000",
    ]);
    assert!(r.success, "{}", r.stderr);
    let mut rows: Vec<String> = r
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("consume prints JSON");
            // serde_json sorts object keys: the same text for the same row.
            v["value"].to_string()
        })
        .collect();
    rows.sort();
    rows
}

/// File rows re-encoded like `log_rows`, to compare the two sinks.
fn as_json_text(rows: &[String]) -> Vec<String> {
    let mut out: Vec<String> = rows
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .expect("file sink writes JSON")
                .to_string()
        })
        .collect();
    out.sort();
    out
}

fn run_to_end(t: &TestDir, extra: &[&str]) -> crate::harness::Run {
    let mut args = vec!["run", "p.sql", "--data-dir", "d", "-p", "2"];
    args.extend_from_slice(extra);
    t.runnel(&args)
}

#[test]
fn sigkill_at_random_moments_gives_the_uninterrupted_output() {
    let _heavy = crate::harness::heavy();
    let reference = TestDir::new();
    prepare(&reference);
    let r = run_to_end(&reference, &[]);
    assert!(r.success, "{}", r.stderr);
    let want_copy = committed(&reference.path().join("out/copy"));
    let want_counts = committed(&reference.path().join("out/counts"));
    let per_key = (0..RECORDS / KEYS).filter(|s| s % 3 != 1).count();
    assert_eq!(want_copy.len(), per_key * KEYS);
    assert!(!want_counts.is_empty());

    let t = TestDir::new();
    prepare(&t);
    let resumed = crate::harness::kill_at_random_moments(
        t.path(),
        &["run", "p.sql", "--data-dir", "d", "-p", "2"],
        20,
        Duration::from_millis(40),
        400,
        "resuming p from checkpoint",
    );
    assert!(resumed > 0, "no run resumed from a checkpoint");
    let r = run_to_end(&t, &[]);
    assert!(r.success, "{}", r.stderr);
    let got_copy = committed(&t.path().join("out/copy"));
    let got_counts = committed(&t.path().join("out/counts"));
    assert_eq!(
        got_copy.len(),
        want_copy.len(),
        "stateless output: gap or duplicate"
    );
    assert!(
        got_copy == want_copy,
        "stateless output differs from the uninterrupted run"
    );
    // The same rows through parts that accumulate over checkpoints and roll at 64 kB.
    let got_rolled = committed(&t.path().join("out/rolled"));
    assert_eq!(
        got_rolled.len(),
        want_copy.len(),
        "rolled parts: gap or duplicate"
    );
    assert!(got_rolled == want_copy, "rolled parts differ");
    // Parts roll once they reach 64 kB (the last of each run may be smaller), and
    // nothing stays hidden once the input ended.
    let mut sizes: Vec<u64> = Vec::new();
    for e in std::fs::read_dir(t.path().join("out/rolled")).expect("rolled dir") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(name.starts_with("part-"), "left over in out/rolled: {name}");
        sizes.push(e.metadata().expect("size").len());
    }
    sizes.sort_unstable();
    assert!(
        sizes[sizes.len() / 2] >= 64 << 10,
        "most rolled parts should reach 64 kB: {sizes:?}"
    );
    assert_eq!(got_counts, want_counts, "windowed output differs");
    let got_parts = committed_partitions(&t.path().join("out/parts"));
    assert_eq!(
        got_parts.len(),
        want_copy.len(),
        "partitioned sink: gap or duplicate"
    );
    assert!(
        got_parts == committed_partitions(&reference.path().join("out/parts")),
        "partitioned filesystem output differs"
    );
    let (_, got_pq) = crate::warehouse::read_with_pyarrow(&t.path().join("out/pq"));
    assert_eq!(
        got_pq.len(),
        want_copy.len(),
        "parquet sink: gap or duplicate"
    );
    assert!(
        got_pq == crate::warehouse::read_with_pyarrow(&reference.path().join("out/pq")).1,
        "parquet output differs from the uninterrupted run"
    );
    let got_log = log_rows(&t);
    assert_eq!(got_log.len(), want_copy.len(), "log sink: gap or duplicate");
    assert!(
        got_log == as_json_text(&want_copy),
        "log sink output differs"
    );
    for dir in ["out/copy", "out/counts"] {
        let hidden: Vec<_> = std::fs::read_dir(t.path().join(dir))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(hidden.is_empty(), "orphaned files in {dir}: {hidden:?}");
    }
}

#[test]
fn corrupt_newest_manifest_falls_back_and_changed_sql_is_refused() {
    let _heavy = crate::harness::heavy();
    let t = TestDir::new();
    prepare(&t);
    let r = run_to_end(&t, &[]);
    assert!(r.success, "{}", r.stderr);
    let want = committed(&t.path().join("out/counts"));
    let dir = t.path().join("d/checkpoints/p");
    let mut manifests: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 2, "{manifests:?}");
    let newest = manifests.last().unwrap().clone();
    std::fs::write(&newest, b"{ torn").unwrap();
    let r = run_to_end(&t, &[]);
    assert!(r.success, "{}", r.stderr);
    assert!(r.stderr.contains("unreadable"), "{}", r.stderr);
    assert!(newest.exists(), "the corrupt manifest must not be deleted");
    assert_eq!(committed(&t.path().join("out/counts")), want);

    // A different query cannot reuse the state.
    t.write(
        "p.sql",
        &PIPELINE.replace("INTERVAL '10' SECOND", "INTERVAL '20' SECOND"),
    );
    let r = run_to_end(&t, &[]);
    assert!(!r.success);
    assert!(r.stderr.contains("--from-scratch"), "{}", r.stderr);
    let r = run_to_end(&t, &["--from-scratch"]);
    assert!(r.success, "{}", r.stderr);
}

/// A crash at each phase of a checkpoint (state written, manifest written, sink
/// pre-committed, sink committed) and of the transactional sinks' mechanism (staged but
/// not sealed, sealed, part-way through applying, applied but not cleaned up) loses
/// nothing and duplicates nothing.
#[test]
fn a_crash_at_each_checkpoint_phase_recovers_exactly() {
    let _heavy = crate::harness::heavy();
    let reference = TestDir::new();
    prepare(&reference);
    assert!(run_to_end(&reference, &[]).success);
    let want_copy = committed(&reference.path().join("out/copy"));
    let want_counts = committed(&reference.path().join("out/counts"));
    let want_parts = committed_partitions(&reference.path().join("out/parts"));
    assert_eq!(want_parts.len(), want_copy.len());
    for phase in [
        "after-state",
        "after-manifest",
        "after-pre-commit",
        "after-commit",
        "before-seal",
        "after-seal",
        "mid-apply",
        "after-apply",
    ] {
        let t = TestDir::new();
        prepare(&t);
        let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(["run", "p.sql", "--data-dir", "d", "-p", "2"])
            .current_dir(t.path())
            .env("RUNNEL_LOG", "error")
            .env("RUNNEL_FAIL_AT", phase)
            .env("RUNNEL_FAIL_AT_CHECKPOINT", "2")
            .output()
            .expect("running runnel");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{phase}: the injected crash did not happen: {stderr}"
        );
        assert!(stderr.contains("injected crash"), "{phase}: {stderr}");
        let r = run_to_end(&t, &[]);
        assert!(r.success, "{phase}: {}", r.stderr);
        assert!(
            r.stderr.contains("resuming p from checkpoint"),
            "{phase}: {}",
            r.stderr
        );
        assert!(
            committed(&t.path().join("out/copy")) == want_copy,
            "{phase}: stateless output differs"
        );
        assert_eq!(
            committed(&t.path().join("out/counts")),
            want_counts,
            "{phase}"
        );
        assert!(
            log_rows(&t) == as_json_text(&want_copy),
            "{phase}: log sink output differs"
        );
        assert!(
            committed_partitions(&t.path().join("out/parts")) == want_parts,
            "{phase}: partitioned filesystem output differs"
        );
    }
}

/// A moto S3 server (PyPI `moto[server]`, installed on first use into
/// `~/.cache/runnel/moto`) on a free loopback port, killed on drop.
pub(crate) struct S3Server {
    child: std::process::Child,
    pub(crate) port: u16,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn moto_server() -> S3Server {
    let home = std::env::var_os("HOME").expect("HOME");
    let venv = Path::new(&home).join(".cache/runnel/moto");
    let server = venv.join("bin/moto_server");
    if !server.exists() {
        let venv_ok = |venv: &Path| {
            Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(venv)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !venv_ok(&venv) {
            // Debian ships venv separately; install it when we may.
            let _ = Command::new("sh")
                .args([
                    "-c",
                    "[ \"$(id -u)\" = 0 ] && (apt-get install -y python3-venv || \
                     (apt-get update && apt-get install -y python3-venv)) >/dev/null",
                ])
                .status();
            assert!(
                venv_ok(&venv),
                "the S3 test needs python3 with venv (apt-get install python3-venv)"
            );
        }
        let status = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "moto[server]>=5,<6"])
            .status()
            .expect("running pip");
        assert!(status.success(), "pip install moto[server] failed");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(&server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting moto_server");
    let s3 = S3Server { child, port };
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s3
}

/// One plain HTTP request to the S3 server; returns (status, body).
pub(crate) fn s3_request(port: u16, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// Checkpoints in an `s3://` URL: a crash after checkpoint 2's manifest, then a restart
/// that resumes from the object store, gives the uninterrupted output; nothing goes to
/// the local checkpoint directory; an unreachable bucket stops the run with a clear error.
#[test]
fn s3_state_dir_recovers_exactly() {
    let _heavy = crate::harness::heavy();
    let s3 = moto_server();
    let (status, body) = s3_request(s3.port, "PUT", "/runnel-test");
    assert_eq!(status, 200, "creating the bucket: {body}");

    let reference = TestDir::new();
    prepare(&reference);
    assert!(run_to_end(&reference, &[]).success);
    let want_copy = committed(&reference.path().join("out/copy"));
    let want_counts = committed(&reference.path().join("out/counts"));

    let s3_settings = |bucket: &str| {
        format!(
            "SET 'state.checkpoints.dir' = 's3://{bucket}/state';\n\
             SET 's3.endpoint' = 'http://127.0.0.1:{}';\n\
             SET 's3.region' = 'us-east-1';\n\
             SET 's3.access-key' = 'test';\n\
             SET 's3.secret-key' = 'test';\n",
            s3.port
        )
    };
    let t = TestDir::new();
    prepare(&t);
    t.write(
        "p.sql",
        &format!("{}{PIPELINE}", s3_settings("runnel-test")),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["run", "p.sql", "--data-dir", "d", "-p", "2"])
        .current_dir(t.path())
        .env("RUNNEL_LOG", "error")
        .env("RUNNEL_FAIL_AT", "after-manifest")
        .env("RUNNEL_FAIL_AT_CHECKPOINT", "2")
        .output()
        .expect("running runnel");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("injected crash"), "{stderr}");
    let (_, listing) = s3_request(s3.port, "GET", "/runnel-test?list-type=2&prefix=state/p/");
    assert!(
        listing.contains("state/p/chk-0000000002.json"),
        "checkpoint 2's manifest is not in the bucket: {listing}"
    );
    assert!(
        !t.path().join("d/checkpoints/p").exists(),
        "checkpoints went to the local directory"
    );
    let r = run_to_end(&t, &[]);
    assert!(r.success, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("resuming p from checkpoint 2 (s3://runnel-test/state/p)"),
        "{}",
        r.stderr
    );
    assert!(
        committed(&t.path().join("out/copy")) == want_copy,
        "stateless output differs"
    );
    assert_eq!(committed(&t.path().join("out/counts")), want_counts);
    assert!(
        log_rows(&t) == as_json_text(&want_copy),
        "log sink output differs"
    );

    // A bucket that does not exist: refused before anything runs, not started over.
    let missing = TestDir::new();
    prepare(&missing);
    missing.write(
        "p.sql",
        &format!("{}{PIPELINE}", s3_settings("no-such-bucket")),
    );
    // `runnel check` finds it without running anything.
    let check = missing.runnel(&["check", "p.sql", "--data-dir", "d"]);
    assert!(!check.success, "check must fail:\n{}", check.stdout);
    assert!(
        check.stdout.contains("FAIL  checkpoints") && check.stdout.contains("no-such-bucket"),
        "{}",
        check.stdout
    );
    let r = run_to_end(&missing, &[]);
    assert!(!r.success, "a run with an unreachable state dir must fail");
    assert!(
        r.stderr.contains("cannot read checkpoints") && r.stderr.contains("no-such-bucket"),
        "{}",
        r.stderr
    );
}

const IDLE_PIPELINE: &str = "
SET 'execution.checkpointing.interval' = '500 ms';
SET 'source.idle-timeout' = '3 s';
CREATE TABLE events (k STRING, seq BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
  WITH (connector = 'log', topic = 'ev', 'scan.startup.mode' = 'earliest');
CREATE TABLE counts (k STRING, window_end TIMESTAMP(3), n BIGINT)
  WITH (connector = 'file', path = 'out/counts');
INSERT INTO counts
SELECT k, window_end, COUNT(*)
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY k, window_start, window_end;
";

/// A topic of two partitions with every record in one, so the second source subtask
/// reads nothing and holds event time back until it goes idle (after 3 s).
fn prepare_idle(t: &TestDir) {
    t.write("p.sql", IDLE_PIPELINE);
    let r = t.runnel(&[
        "topics",
        "create",
        "ev",
        "--partitions",
        "2",
        "--data-dir",
        "d",
    ]);
    assert!(r.success, "{}", r.stderr);
    let lines: String = (0..100)
        .map(|i| {
            format!(
                "{{\"k\":\"a\",\"seq\":{i},\"ts\":{}}}\n",
                1_764_000_000_000u64 + i * 1000
            )
        })
        .collect();
    t.write("in.jsonl", &lines);
    let r = t.runnel(&[
        "produce",
        "ev",
        "--key",
        "a",
        "--file",
        "in.jsonl",
        "--data-dir",
        "d",
    ]);
    assert!(r.success, "{}", r.stderr);
}

/// Runs the never-ending pipeline for `secs`, then stops it as Ctrl-C would.
fn run_for(t: &TestDir, secs: u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["run", "p.sql", "--data-dir", "d", "-p", "2"])
        .current_dir(t.path())
        .env("RUNNEL_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting runnel");
    std::thread::sleep(Duration::from_secs(secs));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Issue 15 (restored event time): a run killed after all input was read, but before an
/// idle source subtask let event time move, resumes with its sources' watermarks and idle
/// state, so it fires the windows an uninterrupted run fires (it used to fire none).
#[test]
fn issue_15_restored_source_watermarks_fire_the_same_windows() {
    let _heavy = crate::harness::heavy();
    let reference = TestDir::new();
    prepare_idle(&reference);
    run_for(&reference, 8);
    let want = committed(&reference.path().join("out/counts"));
    assert_eq!(want.len(), 9, "{want:?}");

    let t = TestDir::new();
    prepare_idle(&t);
    let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["run", "p.sql", "--data-dir", "d", "-p", "2"])
        .current_dir(t.path())
        .env("RUNNEL_LOG", "error")
        .env("RUNNEL_FAIL_AT", "after-manifest")
        .env("RUNNEL_FAIL_AT_CHECKPOINT", "1")
        .output()
        .expect("running runnel");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("injected crash"), "{stderr}");
    run_for(&t, 8);
    assert_eq!(committed(&t.path().join("out/counts")), want);
}
