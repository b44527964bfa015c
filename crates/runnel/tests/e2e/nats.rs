//! Issue 19: the `nats` (JetStream) connector against a real nats-server, started here
//! from the installed binary with JetStream on a free loopback port and a temporary
//! store directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::TestDir;

fn nats_bin() -> PathBuf {
    let find = || {
        [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    };
    if let Some(p) = find() {
        return p;
    }
    let _ = Command::new("sh")
        .arg("-c")
        .arg(
            "[ \"$(id -u)\" = 0 ] && (apt-get install -y nats-server || \
             (apt-get update && apt-get install -y nats-server)) >/dev/null 2>&1",
        )
        .status();
    find().expect("the NATS tests need nats-server: apt-get install nats-server")
}

/// A nats-server with JetStream of its own.
struct NatsServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::log_cli::free_port();
        let child = Command::new(nats_bin())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server not listening in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        NatsServer {
            child,
            port,
            _dir: dir,
        }
    }

    /// A JetStream API request over the plain NATS protocol; the JSON answer.
    fn request(&self, subject: &str, body: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut line = String::new();
        r.read_line(&mut line).expect("INFO");
        write!(
            s,
            "CONNECT {{\"verbose\":false}}\r\nSUB _INBOX.test 1\r\nPUB {subject} _INBOX.test {}\r\n{body}\r\n",
            body.len()
        )
        .expect("request");
        loop {
            line.clear();
            r.read_line(&mut line).expect("answer");
            if line.starts_with("MSG") {
                line.clear();
                r.read_line(&mut line).expect("payload");
                return line.trim().to_string();
            }
            if line.starts_with("PING") {
                let _ = s.write_all(b"PONG\r\n");
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rows_in(dir: &std::path::Path) -> Vec<String> {
    let mut rows = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("part-") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                rows.extend(text.lines().map(str::to_string));
            }
        }
    }
    rows
}

/// Bids written exactly once into a JetStream stream by a pipeline that crashes in the
/// middle of publishing a checkpoint's messages and is started again (the replayed
/// messages carry the same ids and are dropped as duplicates), then read back through a
/// durable consumer by a reader SIGKILLed and restarted (unacknowledged messages are
/// redelivered): every bid arrives, and the stream holds each exactly once.
#[test]
fn nats_sink_is_exactly_once_and_the_source_redelivers_after_a_crash() {
    let _heavy = crate::harness::heavy();
    let server = NatsServer::start();
    let created = server.request(
        "$JS.API.STREAM.CREATE.BIDS",
        r#"{"name":"BIDS","subjects":["bids.>"],"storage":"file"}"#,
    );
    assert!(created.contains("\"config\""), "{created}");
    let t = TestDir::new();
    let url = format!("nats://127.0.0.1:{}", server.port);
    t.write(
        "pub.sql",
        &format!(
            "SET 'execution.checkpointing.interval' = '100 ms';
             CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING,
               url STRING, date_time TIMESTAMP(3), extra STRING)
               WITH ('connector' = 'nexmark', 'stream' = 'bid', 'events' = '6000', 'rate' = '3000');
             CREATE TABLE out (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3))
               WITH ('connector' = 'nats', 'url' = '{url}', 'subject' = 'bids.all', 'stream' = 'BIDS');
             INSERT INTO out SELECT auction, bidder, price, date_time FROM bid;"
        ),
    );
    let crashed = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["run", "pub.sql", "--data-dir", "pub"])
        .current_dir(t.path())
        .env("RUNNEL_LOG", "warn")
        .env("RUNNEL_FAIL_AT", "mid-apply")
        .env("RUNNEL_FAIL_AT_CHECKPOINT", "3")
        .output()
        .expect("running the publisher");
    let err = String::from_utf8_lossy(&crashed.stderr);
    assert!(err.contains("injected crash mid-apply"), "{err}");
    t.runnel(&["run", "pub.sql", "--data-dir", "pub"])
        .assert_ok();
    let bids = 6000 * 46 / 50;
    let info = server.request("$JS.API.STREAM.INFO.BIDS", "");
    assert!(
        info.contains(&format!("\"messages\":{bids},")),
        "the stream should hold {bids} messages: {info}"
    );

    t.write(
        "sub.sql",
        &format!(
            "SET 'execution.checkpointing.interval' = '200 ms';
             CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3),
               seq BIGINT METADATA FROM 'sequence', subj STRING METADATA FROM 'subject')
               WITH ('connector' = 'nats', 'url' = '{url}', 'subject' = 'bids.>', 'stream' = 'BIDS',
                     'consumer' = 'reader', 'ack-wait' = '2 s');
             CREATE TABLE got (seq BIGINT, subj STRING) WITH ('connector' = 'file', 'path' = 'got');
             INSERT INTO got SELECT seq, subj FROM bids;"
        ),
    );
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(["run", "sub.sql", "--data-dir", "sub"])
            .current_dir(t.path())
            .env("RUNNEL_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the reader")
    };
    let mut reader = start();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = reader.kill();
    let _ = reader.wait();
    reader = start();
    let out = t.path().join("got");
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
        for l in rows_in(&out) {
            let v: serde_json::Value = serde_json::from_str(&l).expect("a JSON row");
            assert_eq!(v["subj"], "bids.all");
            *seen.entry(v["seq"].as_i64().expect("seq")).or_default() += 1;
        }
        if seen.len() >= bids || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = reader.kill();
    let _ = reader.wait();
    assert_eq!(seen.len(), bids, "every stream message read");
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=bids as i64).collect::<Vec<_>>()
    );
}
