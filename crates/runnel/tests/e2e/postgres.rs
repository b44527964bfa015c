//! Issue 19: the `postgres` sink against a real PostgreSQL server, started here from the
//! machine's installed binaries (`initdb`, `postgres`) on a free loopback port in a
//! temporary directory, and read back with `psql`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::TestDir;

/// The directory holding `initdb` and `postgres` (Debian keeps them out of PATH).
fn pg_bin() -> PathBuf {
    let find = || -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists() && p.join("postgres").exists())
            .collect();
        dirs.sort();
        dirs.pop()
    };
    if let Some(d) = find() {
        return d;
    }
    // A fresh Debian: install the server when running as root.
    let _ = Command::new("sh")
        .arg("-c")
        .arg(
            "[ \"$(id -u)\" = 0 ] && (apt-get install -y postgresql || \
             (apt-get update && apt-get install -y postgresql)) >/dev/null 2>&1",
        )
        .status();
    find().expect("the Postgres tests need PostgreSQL's server: apt-get install postgresql")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program args…`, as the `postgres` user when running as root (the server refuses
/// to run as root).
fn as_server_user(program: PathBuf) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A PostgreSQL server of its own, stopped (SIGKILL) when dropped.
pub struct PgServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl PgServer {
    pub fn start() -> Self {
        let bin = pg_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        if is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status();
        }
        let data = dir.path().join("data");
        let out = as_server_user(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "runnel", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = crate::log_cli::free_port();
        let log = dir.path().join("server.log");
        let child = as_server_user(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("server log"))
            .spawn()
            .expect("starting postgres");
        let mut server = PgServer { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if server.try_psql("SELECT 1").is_ok() {
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "postgres exited: {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "postgres not ready in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// `postgres://runnel@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://runnel@127.0.0.1:{}/postgres", self.port)
    }

    fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "runnel",
                "-d",
                "postgres",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs `sql`; its rows as `a|b|c` lines, sorted.
    pub fn query(&self, sql: &str) -> Vec<String> {
        let text = self
            .try_psql(sql)
            .unwrap_or_else(|e| panic!("psql {sql}: {e}"));
        let mut rows: Vec<String> = text.lines().map(str::to_string).collect();
        rows.sort();
        rows
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

const KEYS: usize = 8;
const RECORDS: usize = 200_000;

fn pipeline(url: &str) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '100 ms';
         SET 'execution.batch-size' = '500';
         CREATE TABLE events (k STRING, seq BIGINT, ts TIMESTAMP(3))
           WITH (connector = 'log', topic = 'events', format = 'json',
                 'scan.startup.mode' = 'earliest', bounded = 'true');
         CREATE TABLE raw (k STRING, seq BIGINT, ts TIMESTAMP(3), amount DECIMAL(12, 2))
           WITH ('connector' = 'postgres', 'url' = '{url}', 'table-name' = 'raw',
                 'sink.create-table' = 'true');
         CREATE TABLE totals (k STRING, n BIGINT, mx BIGINT, PRIMARY KEY (k) NOT ENFORCED)
           WITH ('connector' = 'postgres', 'url' = '{url}', 'table-name' = 'totals',
                 'sink.create-table' = 'true');
         INSERT INTO raw SELECT k, seq, ts, CAST(seq AS DECIMAL(12, 2)) / 4 FROM events
           WHERE MOD(seq, 3) <> 1;
         INSERT INTO totals SELECT k, COUNT(*), MAX(seq) FROM events
           WHERE MOD(seq, 3) <> 1 GROUP BY k;"
    )
}

/// A data dir whose log topic `events` holds per-key sequence numbers.
fn prepare(t: &TestDir, url: &str) {
    t.write("p.sql", &pipeline(url));
    t.runnel(&[
        "topics",
        "create",
        "events",
        "--partitions",
        "4",
        "--data-dir",
        "d",
    ])
    .assert_ok();
    let base: u64 = 1_764_000_000_000;
    let mut lines = String::new();
    for i in 0..RECORDS {
        lines.push_str(&format!(
            "{{\"k\":\"k{}\",\"seq\":{},\"ts\":{}}}\n",
            i % KEYS,
            i / KEYS,
            base + i as u64
        ));
    }
    t.write("events.jsonl", &lines);
    t.runnel(&[
        "produce",
        "events",
        "--file",
        "events.jsonl",
        "--data-dir",
        "d",
    ])
    .assert_ok();
}

/// An append pipeline and an updating GROUP BY into tables with a primary key, SIGKILLed
/// at random moments and resumed: the appended rows are there exactly once (the count of
/// an uninterrupted run, no duplicates), and the upserted aggregate equals the one
/// Postgres computes over the appended input.
#[test]
fn postgres_append_and_upsert_are_exactly_once_across_sigkills() {
    let _heavy = crate::harness::heavy();
    let pg = PgServer::start();
    let t = TestDir::new();
    prepare(&t, &pg.url());
    let resumed = crate::harness::kill_at_random_moments(
        t.path(),
        &["run", "p.sql", "--data-dir", "d", "-p", "2"],
        12,
        Duration::from_millis(300),
        600,
        "resuming p from checkpoint",
    );
    let r = t.runnel(&["run", "p.sql", "--data-dir", "d", "-p", "2"]);
    assert!(r.success, "{}", r.stderr);
    assert!(resumed > 0, "no run resumed from a checkpoint");
    let per_key = (0..RECORDS / KEYS).filter(|s| s % 3 != 1).count();
    let counts = pg.query("SELECT count(*), count(DISTINCT (k, seq)) FROM raw");
    assert_eq!(
        counts,
        [format!("{}|{}", per_key * KEYS, per_key * KEYS)],
        "appended rows: gaps or duplicates"
    );
    let totals = pg.query("SELECT k, n, mx FROM totals");
    let by_postgres = pg.query("SELECT k, count(*), max(seq) FROM raw GROUP BY k");
    assert_eq!(totals.len(), KEYS);
    assert_eq!(totals, by_postgres, "the upserted aggregate differs");
    // Types: the DDL's, created by the sink.
    let types = pg.query(
        "SELECT column_name || ' ' || data_type FROM information_schema.columns \
         WHERE table_name = 'raw'",
    );
    assert_eq!(
        types,
        [
            "amount numeric",
            "k text",
            "seq bigint",
            "ts timestamp without time zone"
        ]
    );
    let sample = pg.query("SELECT ts, amount FROM raw WHERE k = 'k3' AND seq = 9");
    assert_eq!(sample, ["2025-11-24 16:00:00.075|2.25"]);
}

/// Flink's JDBC table (`connector = 'jdbc'`, a `jdbc:postgresql://` URL, `username`)
/// without checkpoints: at-least-once batches; deletes and updates of an updating query
/// with a retraction (a key whose count falls out of a HAVING).
#[test]
fn flink_jdbc_tables_write_upserts_and_deletes() {
    let pg = PgServer::start();
    pg.query(
        "CREATE TABLE counts (name varchar(20) PRIMARY KEY, n bigint, total double precision)",
    );
    let t = TestDir::new();
    let mut lines = String::new();
    for (name, v) in [("a", 1.5), ("b", 2.0), ("a", 2.5), ("c", 1.0), ("b", -2.0)] {
        lines.push_str(&format!("{{\"name\":\"{name}\",\"v\":{v}}}\n"));
    }
    t.write("in.jsonl", &lines);
    t.write(
        "p.sql",
        &format!(
            "CREATE TABLE src (name STRING, v DOUBLE) WITH ('connector' = 'file', 'path' = 'in.jsonl');
             CREATE TABLE counts (name STRING, n BIGINT, total DOUBLE, PRIMARY KEY (name) NOT ENFORCED)
               WITH ('connector' = 'jdbc', 'url' = 'jdbc:postgresql://127.0.0.1:{}/postgres',
                     'table-name' = 'counts', 'username' = 'runnel');
             INSERT INTO counts SELECT name, COUNT(*), SUM(v) FROM src GROUP BY name HAVING SUM(v) > 0;",
            pg.port
        ),
    );
    t.runnel(&["run", "p.sql", "-p", "1"]).assert_ok();
    assert_eq!(
        pg.query("SELECT name, n, total FROM counts"),
        ["a|2|4", "c|1|1"]
    );
}

/// Mistakes are named before any row flows: a missing table, a column whose type
/// differs, an unknown column, a server that does not answer; the password never shows.
#[test]
fn postgres_sink_health_check_names_what_is_wrong() {
    let pg = PgServer::start();
    pg.query("CREATE TABLE narrow (id integer, name text)");
    let t = TestDir::new();
    t.write("in.jsonl", "{\"id\":1,\"name\":\"x\"}\n");
    let script = |url: &str, table: &str, columns: &str| {
        format!(
            "CREATE TABLE src (id INT, name STRING) WITH ('connector' = 'file', 'path' = 'in.jsonl');
             CREATE TABLE out ({columns}) WITH ('connector' = 'postgres', 'url' = '{url}', 'table-name' = '{table}');
             INSERT INTO out SELECT * FROM src;"
        )
    };
    let url = pg.url();
    t.write(
        "missing.sql",
        &script(&url, "nope", "id BIGINT, name STRING"),
    );
    t.runnel(&["run", "missing.sql"])
        .assert_err("the PostgreSQL table nope does not exist")
        .assert_err("'sink.create-table' = 'true'");
    t.write(
        "narrow.sql",
        &script(&url, "narrow", "id BIGINT, name STRING"),
    );
    t.runnel(&["run", "narrow.sql"])
        .assert_err("column 'id' is BIGINT in the DDL but integer in the PostgreSQL table");
    t.write("unknown.sql", &script(&url, "narrow", "id INT, nom STRING"));
    let r = t.runnel(&["run", "unknown.sql"]);
    assert!(!r.success);
    assert!(
        r.stderr
            .contains("column 'nom' is not in the PostgreSQL table narrow"),
        "{}",
        r.stderr
    );
    let dead = format!(
        "postgres://runnel:s3cret-pw@127.0.0.1:{}/postgres",
        crate::log_cli::free_port()
    );
    t.write("dead.sql", &script(&dead, "narrow", "id INT, name STRING"));
    let r = t.runnel(&["run", "dead.sql"]);
    assert!(!r.success);
    assert!(
        r.stderr.contains("PostgreSQL at postgresql://127.0.0.1:"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("s3cret-pw"), "{}", r.stderr);
    // And the right declaration works (INT into integer).
    t.write("ok.sql", &script(&url, "narrow", "id INT, name STRING"));
    t.runnel(&["run", "ok.sql"]).assert_ok();
    assert_eq!(pg.query("SELECT id, name FROM narrow"), ["1|x"]);
}
