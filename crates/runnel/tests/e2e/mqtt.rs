//! Issue 19: the `mqtt` connector against a real Mosquitto broker, started here from
//! the installed binary on a free loopback port with its own config and persistence
//! directory.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::TestDir;

fn mosquitto_bin() -> PathBuf {
    let find = || {
        ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
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
            "[ \"$(id -u)\" = 0 ] && (apt-get install -y mosquitto || \
             (apt-get update && apt-get install -y mosquitto)) >/dev/null 2>&1",
        )
        .status();
    find().expect("the MQTT tests need Mosquitto: apt-get install mosquitto")
}

/// A Mosquitto broker of its own (persistent sessions kept in its directory).
struct Mosquitto {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// Extra listener settings (TLS).
    extra: String,
}

impl Mosquitto {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::log_cli::free_port();
        let mut m = Mosquitto {
            child: None,
            port,
            dir,
            extra: String::new(),
        };
        m.launch();
        m
    }

    /// A broker that speaks only TLS, with a certificate for 127.0.0.1 signed by a CA
    /// of the test's own (`ca.pem` in its directory) and, with `clients`, requiring a
    /// client certificate signed by that CA (`client.pem`, `client.key`).
    fn start_tls(clients: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = TestCerts::write(dir.path());
        let extra = format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {clients}\n",
            certs.ca.display(),
            certs.server.display(),
            certs.server_key.display()
        );
        let mut m = Mosquitto {
            child: None,
            port: crate::log_cli::free_port(),
            dir,
            extra,
        };
        m.launch();
        m
    }

    fn launch(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let data = self.dir.path().join("data");
        let _ = std::fs::create_dir_all(&data);
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("a+rwx")
            .arg(self.dir.path())
            .status();
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nmax_inflight_messages 0\nmax_queued_messages 0\n{}",
                self.port,
                data.display(),
                self.extra
            ),
        )
        .expect("writing mosquitto.conf");
        let log = self.dir.path().join("broker.log");
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("broker log"))
            .spawn()
            .expect("starting mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto not listening in 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it the way a service manager would (it saves its sessions), then starts it
    /// again on the same port.
    fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
        std::thread::sleep(Duration::from_secs(1));
        self.launch();
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate it signed, as PEM
/// files readable by the broker (which drops root for its own user).
struct TestCerts {
    ca: PathBuf,
    server: PathBuf,
    server_key: PathBuf,
}

impl TestCerts {
    fn write(dir: &std::path::Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "runnel test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&ca_key).expect("CA");
        let leaf = |names: Vec<String>, name: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.signed_by(&key, &ca, &ca_key).expect("signed");
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], "broker");
        let (client, client_key) = leaf(Vec::new(), "runnel-client");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("writing a certificate");
            path
        };
        let certs = TestCerts {
            ca: write("ca.pem", &ca.pem()),
            server: write("server.pem", &server),
            server_key: write("server.key", &server_key),
        };
        write("client.pem", &client);
        write("client.key", &client_key);
        let _ = Command::new("chmod")
            .arg("a+r")
            .args([&certs.ca, &certs.server, &certs.server_key])
            .status();
        certs
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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

/// Publishes `n` readings of sensor `sensor` through a runnel pipeline (file → mqtt) run
/// in `dir`.
fn publish(dir: &std::path::Path, port: u16, sensor: &str, n: usize) {
    let lines: String = (0..n)
        .map(|i| {
            format!(
                "{{\"sensor\":\"{sensor}\",\"seq\":{i},\"temp\":{}.5}}\n",
                i % 40
            )
        })
        .collect();
    let file = format!("in-{sensor}.jsonl");
    std::fs::write(dir.join(&file), lines).expect("input");
    let script = format!("pub-{sensor}.sql");
    std::fs::write(
        dir.join(&script),
        format!(
            "CREATE TABLE src (sensor STRING, seq BIGINT, temp DOUBLE) WITH ('connector' = 'file', 'path' = '{file}');
             CREATE TABLE m (sensor STRING, seq BIGINT, temp DOUBLE)
               WITH ('connector' = 'mqtt', 'url' = 'mqtt://127.0.0.1:{port}', 'topic' = 'sensors/{sensor}/temp');
             INSERT INTO m SELECT * FROM src;"
        ),
    )
    .expect("script");
    let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["run", &script, "--data-dir", &format!("pub-{sensor}")])
        .current_dir(dir)
        .env("RUNNEL_LOG", "warn")
        .output()
        .expect("running the publisher");
    assert!(
        out.status.success(),
        "publisher: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A wildcard subscription in a persistent session reads what two pipelines publish,
/// with the topic as a metadata column; the broker is restarted between the two: the
/// reader reconnects, and every message the broker acknowledged to a publisher arrives.
#[test]
fn mqtt_wildcard_source_survives_a_broker_restart() {
    let mut broker = Mosquitto::start();
    let t = TestDir::new();
    t.write(
        "sub.sql",
        &format!(
            "SET 'execution.checkpointing.interval' = '200 ms';
             CREATE TABLE readings (sensor STRING, seq BIGINT, temp DOUBLE,
               src_topic STRING METADATA FROM 'topic', qos INT METADATA FROM 'qos')
               WITH ('connector' = 'mqtt', 'url' = 'mqtt://127.0.0.1:{}', 'topic' = 'sensors/+/temp',
                     'client-id' = 'runnel-test-reader');
             CREATE TABLE out (sensor STRING, seq BIGINT, src_topic STRING, qos INT)
               WITH ('connector' = 'file', 'path' = 'out');
             INSERT INTO out SELECT sensor, seq, src_topic, qos FROM readings;",
            broker.port
        ),
    );
    let log = t.path().join("sub.log");
    let mut reader = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["run", "sub.sql", "--data-dir", "sub"])
        .current_dir(t.path())
        .env("RUNNEL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("starting the reader");
    // The reader's session subscribes once connected.
    std::thread::sleep(Duration::from_secs(2));
    publish(t.path(), broker.port, "a", 300);
    let out = t.path().join("out");
    let wait = |want: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let distinct: BTreeSet<String> = rows_in(&out).into_iter().collect();
            if distinct.len() >= want {
                return distinct;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {want} rows; reader log:\n{}",
                distinct.len(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait(300, "before the restart");
    broker.restart();
    publish(t.path(), broker.port, "b", 300);
    let got = wait(600, "after the restart");
    let _ = reader.kill();
    let _ = reader.wait();
    let want: BTreeSet<String> = ["a", "b"]
        .iter()
        .flat_map(|s| {
            (0..300).map(move |i| {
                format!(
                    "{{\"sensor\":\"{s}\",\"seq\":{i},\"src_topic\":\"sensors/{s}/temp\",\"qos\":1}}"
                )
            })
        })
        .collect();
    assert_eq!(got, want);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("unreachable"),
        "the outage was not reported: {text}"
    );
}

/// Messages read but not yet covered by a complete checkpoint are not acknowledged: a
/// reader killed (SIGKILL) and started again with the same client id gets them again,
/// so the output holds every message at least once.
#[test]
fn mqtt_unacknowledged_messages_are_redelivered_after_a_crash() {
    let broker = Mosquitto::start();
    let t = TestDir::new();
    t.write(
        "sub.sql",
        &format!(
            "SET 'execution.checkpointing.interval' = '300 ms';
             CREATE TABLE readings (sensor STRING, seq BIGINT, temp DOUBLE)
               WITH ('connector' = 'mqtt', 'url' = 'mqtt://127.0.0.1:{}', 'topic' = 'sensors/#',
                     'client-id' = 'runnel-crash-reader');
             CREATE TABLE out (sensor STRING, seq BIGINT) WITH ('connector' = 'file', 'path' = 'out');
             INSERT INTO out SELECT sensor, seq FROM readings;",
            broker.port
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
    std::thread::sleep(Duration::from_secs(2));
    // Publish while killing the reader repeatedly.
    let publisher = {
        let dir = t.path().to_path_buf();
        let port = broker.port;
        std::thread::spawn(move || {
            publish(&dir, port, "c", 3000);
        })
    };
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(700));
        let _ = reader.kill();
        let _ = reader.wait();
        reader = start();
    }
    publisher.join().expect("publisher");
    let out = t.path().join("out");
    let deadline = Instant::now() + Duration::from_secs(60);
    let want: BTreeSet<i64> = (0..3000).collect();
    loop {
        let got: BTreeSet<i64> = rows_in(&out)
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["seq"].as_i64())
            .collect();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 3000 messages arrived",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = reader.kill();
    let _ = reader.wait();
}

/// The shipped camera example on MQTT input: `runnel camera-sim --mqtt` publishes frames
/// of two cameras, the pipeline classifies them and writes labels per camera.
#[test]
fn camera_example_runs_on_mqtt_input() {
    let _heavy = crate::harness::heavy();
    let broker = Mosquitto::start();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sql = std::fs::read_to_string(root.join("examples/camera_mqtt.sql")).expect("example");
    let sql = sql.replace(
        "mqtt://127.0.0.1:1883",
        &format!("mqtt://127.0.0.1:{}", broker.port),
    );
    let t = TestDir::new();
    t.write("camera_mqtt.sql", &sql);
    let log = t.path().join("run.log");
    let mut pipeline = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["run", "camera_mqtt.sql", "--data-dir", "d"])
        .current_dir(t.path())
        .env("RUNNEL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("starting the pipeline");
    std::thread::sleep(Duration::from_secs(2));
    let sim = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args([
            "camera-sim",
            "--cameras",
            "2",
            "--fps",
            "4",
            "--duration",
            "5",
        ])
        .args(["--mqtt", &format!("mqtt://127.0.0.1:{}", broker.port)])
        .current_dir(t.path())
        .output()
        .expect("running camera-sim");
    let sim_err = String::from_utf8_lossy(&sim.stderr).into_owned();
    assert!(sim.status.success(), "camera-sim: {sim_err}");
    assert!(sim_err.contains("mqtt://127.0.0.1"), "{sim_err}");
    let out = t.path().join("demo-out/mqtt_labels");
    let deadline = Instant::now() + Duration::from_secs(60);
    let cameras = loop {
        let cams: BTreeSet<String> = rows_in(&out)
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["label"].as_str().is_some_and(|l| !l.is_empty()))
            .filter_map(|v| v["camera"].as_str().map(str::to_string))
            .collect();
        if cams.len() == 2 || Instant::now() > deadline {
            break cams;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = pipeline.kill();
    let _ = pipeline.wait();
    assert_eq!(
        cameras,
        BTreeSet::from(["cam-0".to_string(), "cam-1".to_string()]),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// `mqtts://`: a pipeline subscribes and another publishes over TLS to a broker that
/// requires client certificates, both trusting the test's own CA (`tls.ca-file`) and
/// presenting a client certificate; without the client certificate, or trusting only the
/// system's CAs, the pipeline does not start and says why, naming the endpoint.
#[test]
fn mqtt_over_tls_with_client_certificates() {
    let broker = Mosquitto::start_tls(true);
    let certs = broker.dir.path();
    let tls = format!(
        "'tls.ca-file' = '{0}/ca.pem', 'tls.cert-file' = '{0}/client.pem', \
         'tls.key-file' = '{0}/client.key'",
        certs.display()
    );
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let t = TestDir::new();
    t.write(
        "sub.sql",
        &format!(
            "SET 'execution.checkpointing.interval' = '200 ms';
             CREATE TABLE readings (sensor STRING, seq BIGINT, temp DOUBLE)
               WITH ('connector' = 'mqtt', 'url' = '{url}', 'topic' = 'secure/#', {tls});
             CREATE TABLE out (sensor STRING, seq BIGINT) WITH ('connector' = 'file', 'path' = 'out');
             INSERT INTO out SELECT sensor, seq FROM readings;"
        ),
    );
    let log = t.path().join("sub.log");
    let mut reader = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["run", "sub.sql", "--data-dir", "sub"])
        .current_dir(t.path())
        .env("RUNNEL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("starting the reader");
    std::thread::sleep(Duration::from_secs(2));
    let lines: String = (0..200)
        .map(|i| format!("{{\"sensor\":\"s\",\"seq\":{i},\"temp\":1.5}}\n"))
        .collect();
    t.write("in.jsonl", &lines);
    let publisher = |tls: &str| {
        t.write(
            "pub.sql",
            &format!(
                "CREATE TABLE src (sensor STRING, seq BIGINT, temp DOUBLE)
                   WITH ('connector' = 'file', 'path' = 'in.jsonl');
                 CREATE TABLE m (sensor STRING, seq BIGINT, temp DOUBLE)
                   WITH ('connector' = 'mqtt', 'url' = '{url}', 'topic' = 'secure/s' {tls});
                 INSERT INTO m SELECT * FROM src;"
            ),
        );
        Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(["run", "pub.sql", "--data-dir", "pub"])
            .current_dir(t.path())
            .env("RUNNEL_LOG", "warn")
            .output()
            .expect("running the publisher")
    };
    // Only the system's CAs: the broker's certificate is not trusted.
    let out = publisher("");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "published without trusting the CA");
    assert!(err.contains(&url) && err.contains("ertificate"), "{err}");
    // The CA, but no client certificate: the broker refuses the handshake.
    let ca_only = format!(", 'tls.ca-file' = '{}/ca.pem'", certs.display());
    let out = publisher(&ca_only);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "published without a client certificate"
    );
    assert!(err.contains(&url), "{err}");
    let out = publisher(&format!(", {tls}"));
    assert!(
        out.status.success(),
        "publisher: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let want: BTreeSet<i64> = (0..200).collect();
    loop {
        let got: BTreeSet<i64> = rows_in(&t.path().join("out"))
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["seq"].as_i64())
            .collect();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 200 messages arrived over TLS; reader log:\n{}",
            got.len(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = reader.kill();
    let _ = reader.wait();
}
