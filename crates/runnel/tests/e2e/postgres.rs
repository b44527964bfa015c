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

/// The rows of a part-file sink directory's committed files, with the files' names.
fn part_rows(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("part-") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                rows.extend(text.lines().map(|l| (name.clone(), l.to_string())));
            }
        }
    }
    rows
}

/// A Nexmark bid stream (50 bids/s) joined with a Postgres table of people by a
/// processing-time lookup join with a 2-second cache: rows of ids not in the table are
/// NULL-padded; after the table changes (names renamed, missing ids added), rows use the
/// old names (and NULLs) at most until the cache entries expire, and only the new ones
/// from then on; most keys are answered from the cache.
#[test]
fn postgres_lookup_join_caches_expires_and_pads_missing_keys() {
    let pg = PgServer::start();
    pg.query("CREATE TABLE people (id bigint PRIMARY KEY, name text)");
    pg.query("INSERT INTO people SELECT i, 'old-' || i FROM generate_series(1000, 1200, 2) AS i");
    let t = TestDir::new();
    t.write(
        "p.sql",
        &format!(
            "SET 'execution.checkpointing.interval' = '200 ms';
             CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING,
               url STRING, date_time TIMESTAMP(3), extra STRING, p AS PROCTIME())
               WITH ('connector' = 'nexmark', 'stream' = 'bid', 'rate' = '50', 'events' = '700');
             CREATE TABLE people (id BIGINT, name STRING, PRIMARY KEY (id) NOT ENFORCED)
               WITH ('connector' = 'jdbc', 'url' = 'jdbc:postgresql://127.0.0.1:{}/postgres',
                     'username' = 'runnel', 'table-name' = 'people',
                     'lookup.cache.max-rows' = '1000', 'lookup.cache.ttl' = '2 s');
             CREATE TABLE out (bidder BIGINT, name STRING) WITH ('connector' = 'file', 'path' = 'out');
             INSERT INTO out SELECT b.bidder, u.name FROM bid AS b
               LEFT JOIN people FOR SYSTEM_TIME AS OF b.p AS u ON b.bidder = u.id;",
            pg.port
        ),
    );
    let log = t.path().join("run.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["run", "p.sql", "--data-dir", "d"])
        .current_dir(t.path())
        .env(
            "RUNNEL_LOG",
            "warn,runnel_connectors::source::postgres=info",
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("starting runnel");
    let out = t.path().join("out");
    let deadline = Instant::now() + Duration::from_secs(60);
    while part_rows(&out).len() < 20 {
        assert!(
            Instant::now() < deadline,
            "no output: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let name = |line: &str| -> (i64, Option<String>) {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON row");
        (
            v["bidder"].as_i64().expect("bidder"),
            v["name"].as_str().map(str::to_string),
        )
    };
    let before = part_rows(&out);
    for (_, line) in &before {
        let (id, n) = name(line);
        let want = (id % 2 == 0 && (1000..=1200).contains(&id)).then(|| format!("old-{id}"));
        assert_eq!(n, want, "before the change: {line}");
    }
    pg.query("UPDATE people SET name = 'new-' || id");
    pg.query("INSERT INTO people SELECT i, 'new-' || i FROM generate_series(1001, 1199, 2) AS i");
    // Past the cache's TTL (and a checkpoint), every row sees the new table.
    std::thread::sleep(Duration::from_millis(3500));
    let seen: std::collections::HashSet<String> =
        part_rows(&out).into_iter().map(|(f, _)| f).collect();
    let status = child.wait().expect("waiting for the run");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{text}");
    let after: Vec<String> = part_rows(&out)
        .into_iter()
        .filter(|(f, _)| !seen.contains(f))
        .map(|(_, l)| l)
        .collect();
    assert!(
        after.len() > 20,
        "too few rows after the change: {}",
        after.len()
    );
    for line in &after {
        let (id, n) = name(line);
        assert_eq!(n, Some(format!("new-{id}")), "after the TTL: {line}");
    }
    assert_eq!(part_rows(&out).len(), 700 * 46 / 50, "every bid once");
    // Most keys came from the cache: far fewer asked than looked up.
    let stats = text
        .lines()
        .find(|l| l.contains("look-ups: keys answered from the cache"))
        .unwrap_or_else(|| panic!("no look-up statistics: {text}"));
    let field = |k: &str| -> u64 {
        stats
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {stats}"))
    };
    assert!(field("cached") > field("asked"), "{stats}");
    assert!(field("queries") < 700 * 46 / 50, "{stats}");
}

/// A look-up the server refuses (here a division by zero in a view, for one key) sends
/// the stream rows that asked to the dead letters; the others are joined.
#[test]
fn postgres_lookup_failure_dead_letters_the_rows() {
    let pg = PgServer::start();
    pg.query("CREATE TABLE dim_base (id bigint PRIMARY KEY, name text)");
    pg.query("INSERT INTO dim_base SELECT i, 'n' || i FROM generate_series(1, 20) AS i");
    pg.query("CREATE VIEW dim AS SELECT id, name, 100 / (id - 13) AS boom FROM dim_base");
    let t = TestDir::new();
    let lines: String = (1..=20).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    t.write("in.jsonl", &lines);
    t.write(
        "p.sql",
        &format!(
            "SET 'execution.batch-size' = '1';
             SET 'dead-letter.path' = 'dead.jsonl';
             CREATE TABLE s (id BIGINT, p AS PROCTIME()) WITH ('connector' = 'file', 'path' = 'in.jsonl');
             CREATE TABLE dim (id BIGINT, name STRING, boom INT)
               WITH ('connector' = 'postgres', 'url' = '{}', 'table-name' = 'dim',
                     'lookup.max-retries' = '1');
             CREATE TABLE out (id BIGINT, name STRING) WITH ('connector' = 'file', 'path' = 'out.jsonl');
             INSERT INTO out SELECT s.id, d.name FROM s JOIN dim FOR SYSTEM_TIME AS OF s.p AS d
               ON s.id = d.id;",
            pg.url()
        ),
    );
    t.runnel(&["run", "p.sql", "-p", "1"]).assert_ok();
    let out = t.read("out.jsonl");
    assert_eq!(out.lines().count(), 19, "{out}");
    assert!(!out.contains("\"id\":13"), "{out}");
    let dead = t.read("dead.jsonl");
    assert_eq!(dead.lines().count(), 1, "{dead}");
    assert!(
        dead.contains("division by zero") && dead.contains("13"),
        "{dead}"
    );
}

/// A bounded `postgres` source: the whole table (ordered by its key), or a query's rows.
#[test]
fn postgres_source_scans_a_table_or_a_query() {
    let pg = PgServer::start();
    pg.query(
        "CREATE TABLE readings (id integer PRIMARY KEY, sensor varchar(10), v numeric(6,2), \
         at timestamptz, day date, ok boolean)",
    );
    pg.query(
        "INSERT INTO readings SELECT i, 's' || (i % 3), i * 1.25, \
         timestamptz '2026-12-05 10:00:00+00' + i * interval '1 second', \
         date '2026-12-05' + (i % 2), i % 2 = 0 FROM generate_series(1, 3000) AS i",
    );
    pg.query("INSERT INTO readings VALUES (0, NULL, NULL, NULL, NULL, NULL)");
    let t = TestDir::new();
    t.write(
        "p.sql",
        &format!(
            "CREATE TABLE readings (id BIGINT, sensor STRING, v DECIMAL(8, 2), at TIMESTAMP_LTZ(3),
               day DATE, ok BOOLEAN, PRIMARY KEY (id) NOT ENFORCED)
               WITH ('connector' = 'postgres', 'url' = '{url}', 'table-name' = 'readings');
             CREATE TABLE per_sensor (sensor STRING, n BIGINT, total DECIMAL(18, 2))
               WITH ('connector' = 'postgres', 'url' = '{url}',
                     'scan.query' = 'SELECT sensor, count(*) AS n, sum(v) AS total FROM readings GROUP BY sensor');
             CREATE TABLE out (id BIGINT, sensor STRING, v DECIMAL(8, 2), at TIMESTAMP_LTZ(3), day DATE, ok BOOLEAN)
               WITH ('connector' = 'file', 'path' = 'out.jsonl');
             CREATE TABLE sums (sensor STRING, n BIGINT, total DECIMAL(18, 2))
               WITH ('connector' = 'file', 'path' = 'sums.jsonl');
             INSERT INTO out SELECT * FROM readings;
             INSERT INTO sums SELECT * FROM per_sensor;",
            url = pg.url()
        ),
    );
    t.runnel(&["run", "p.sql", "-p", "2"]).assert_ok();
    let out = t.read("out.jsonl");
    assert_eq!(out.lines().count(), 3001);
    assert!(
        out.lines().any(|l| l.contains("\"id\":2,")
            && l.contains("\"sensor\":\"s2\"")
            && l.contains("\"v\":2.5")
            && l.contains("2026-12-05")
            && l.contains("\"ok\":true")),
        "{}",
        out.lines().take(3).collect::<Vec<_>>().join("\n")
    );
    assert!(
        out.lines().any(|l| l.starts_with("{\"id\":0,")),
        "the row of NULLs"
    );
    let sums = crate::harness::sorted_lines(&t.read("sums.jsonl"));
    assert_eq!(sums.len(), 4, "{sums:?}");
}
