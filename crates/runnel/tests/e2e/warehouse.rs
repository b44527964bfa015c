//! Issue 20: the warehouse feed. Parquet written by the `filesystem` sink is read back by
//! an independent reader (pyarrow, installed by the test into a cached virtualenv) and by
//! runnel's own `filesystem` source, and must equal the input exactly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::harness::TestDir;

/// A Python with pyarrow and deltalake: `$HOME/.cache/runnel/pyvenv`, made (and both
/// installed from PyPI) on first use.
pub fn pyarrow_python() -> PathBuf {
    static MAKING: Mutex<()> = Mutex::new(());
    let _one = MAKING.lock().unwrap_or_else(|p| p.into_inner());
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    let venv = home.join(".cache/runnel/pyvenv");
    let python = venv.join("bin/python");
    let has = |p: &Path| {
        Command::new(p)
            .args(["-c", "import pyarrow, deltalake"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has(&python) {
        return python;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        // Debian's python3 without ensurepip: install it when root.
        let _ = Command::new("sh")
            .args([
                "-c",
                "[ \"$(id -u)\" = 0 ] && (apt-get install -y python3-venv || \
                 (apt-get update && apt-get install -y python3-venv)) >/dev/null 2>&1",
            ])
            .status();
        let _ = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status();
    }
    let out = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "pyarrow", "deltalake"])
        .output()
        .expect("the warehouse tests need python3 with venv and pip");
    assert!(
        has(&python),
        "installing pyarrow and deltalake failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    python
}

/// Every row of a Hive-partitioned Parquet directory as read by pyarrow, one JSON
/// object per row with keys sorted and times as epoch milliseconds, sorted; and the
/// Arrow types pyarrow sees, the compression and whether statistics are there.
const READ: &str = r#"
import json, sys
import pyarrow.dataset as ds
import pyarrow.parquet as pq
d = ds.dataset(sys.argv[1], format="parquet", partitioning="hive",
               ignore_prefixes=[".", "_"])
rows = []
for batch in d.to_batches():
    for r in batch.to_pylist():
        out = {}
        for k, v in r.items():
            if hasattr(v, "timestamp"):
                v = round(v.timestamp() * 1000)
            elif v is not None and type(v).__name__ == "Decimal":
                v = str(v)
            out[k] = v
        rows.append(json.dumps(out, sort_keys=True, separators=(",", ":")))
rows.sort()
meta = {}
for f in d.files:
    md = pq.ParquetFile(f).metadata
    for g in range(md.num_row_groups):
        for c in range(md.num_columns):
            col = md.row_group(g).column(c)
            meta["compression"] = col.compression
            meta.setdefault("statistics", True)
            meta["statistics"] = meta["statistics"] and col.is_stats_set
print(json.dumps({"types": {f.name: str(f.type) for f in d.schema}, "meta": meta}))
for r in rows:
    print(r)
"#;

/// (types and file facts, sorted rows) of a Parquet directory, by pyarrow.
pub fn read_with_pyarrow(dir: &Path) -> (serde_json::Value, Vec<String>) {
    let out = Command::new(pyarrow_python())
        .args(["-c", READ])
        .arg(dir)
        .output()
        .expect("running pyarrow");
    assert!(
        out.status.success(),
        "pyarrow could not read {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let head: serde_json::Value =
        serde_json::from_str(lines.next().unwrap_or("{}")).expect("pyarrow's summary");
    (head, lines.map(str::to_string).collect())
}

/// Sorted JSON text of rows, keys sorted (as the pyarrow reader prints them).
fn canonical(rows: impl Iterator<Item = serde_json::Value>) -> Vec<String> {
    let mut out: Vec<String> = rows
        .map(|v| {
            let sorted: std::collections::BTreeMap<String, serde_json::Value> =
                serde_json::from_value(v).expect("object");
            serde_json::to_string(&sorted).expect("json")
        })
        .collect();
    out.sort();
    out
}

/// A typed, partitioned table written as Parquet with checkpoints at parallelism 2:
/// pyarrow reads exactly the input back, with TIMESTAMP as timestamp[ms, UTC], DECIMAL as
/// decimal, zstd and statistics; every partition has its `_SUCCESS`; runnel's own
/// `filesystem` source reads the directory (partition columns from the paths) to the same
/// rows.
#[test]
fn parquet_partitions_read_back_by_pyarrow_equal_the_input() {
    let t = TestDir::new();
    let base: i64 = 1_764_979_200_000; // 2025-12-06 00:00 UTC
    let mut input = String::new();
    let mut want = Vec::new();
    for i in 0..3000i64 {
        let ts = base + i * 37_000;
        let dt = if ts < base + 86_400_000 / 2 {
            "2025-12-06"
        } else {
            "2025-12-07"
        };
        let hr = (i % 3) as i32;
        let name = if i % 11 == 0 {
            serde_json::Value::Null
        } else {
            serde_json::Value::String(format!("n{i}"))
        };
        let price = format!("{}.{:02}", i / 7, i % 100);
        input.push_str(&format!(
            "{}\n",
            serde_json::json!({"id": i, "name": name, "price": price.parse::<f64>().unwrap_or(0.0),
                               "ok": i % 2 == 0, "ts": ts, "dt": dt, "hr": hr})
        ));
        want.push(
            serde_json::json!({"id": i, "name": name, "price": price, "ok": i % 2 == 0,
                                     "ts": ts, "dt": dt, "hr": hr}),
        );
    }
    t.write("in.jsonl", &input);
    t.write(
        "p.sql",
        "SET 'execution.checkpointing.interval' = '100 ms';
         SET 'execution.batch-size' = '200';
         CREATE TABLE src (id BIGINT, name STRING, price DECIMAL(10, 2), ok BOOLEAN,
                           ts TIMESTAMP(3), dt STRING, hr INT)
           WITH ('connector' = 'file', 'path' = 'in.jsonl');
         CREATE TABLE wh (id BIGINT, name STRING, price DECIMAL(10, 2), ok BOOLEAN,
                          ts TIMESTAMP(3), dt STRING, hr INT) PARTITIONED BY (dt, hr)
           WITH ('connector' = 'filesystem', 'path' = 'out/wh', 'format' = 'parquet',
                 'sink.rolling-policy.file-size' = '8kb',
                 'sink.partition-commit.policy.kind' = 'success-file');
         INSERT INTO wh SELECT * FROM src;",
    );
    let r = t.runnel(&["run", "p.sql", "--data-dir", "d", "-p", "2"]);
    assert!(r.success, "{}", r.stderr);
    let (head, rows) = read_with_pyarrow(&t.path().join("out/wh"));
    let types = &head["types"];
    assert_eq!(types["ts"], "timestamp[ms, tz=UTC]", "{head}");
    assert_eq!(types["price"], "decimal128(10, 2)", "{head}");
    assert_eq!(types["id"], "int64", "{head}");
    assert_eq!(head["meta"]["compression"], "ZSTD", "{head}");
    assert_eq!(head["meta"]["statistics"], true, "{head}");
    assert_eq!(rows.len(), 3000, "pyarrow read {} rows", rows.len());
    // pyarrow types partition values from the path: hr as int32, dt as a string.
    let want_rows = canonical(want.clone().into_iter());
    let diff: Vec<_> = rows
        .iter()
        .zip(&want_rows)
        .filter(|(a, b)| a != b)
        .take(3)
        .collect();
    assert!(
        diff.is_empty(),
        "pyarrow's rows differ from the input: {diff:?}"
    );
    for dt in ["2025-12-06", "2025-12-07"] {
        for hr in 0..3 {
            let dir = t.path().join(format!("out/wh/dt={dt}/hr={hr}"));
            assert!(
                dir.join("_SUCCESS").exists(),
                "no _SUCCESS in {}",
                dir.display()
            );
            let parts = std::fs::read_dir(&dir).expect("partition").count();
            assert!(parts > 2, "8kb files did not roll in {}", dir.display());
        }
    }
    // runnel reads its own output back, partition columns from the paths.
    t.write(
        "back.sql",
        "CREATE TABLE wh (id BIGINT, name STRING, price DECIMAL(10, 2), ok BOOLEAN,
                          ts TIMESTAMP(3), dt STRING, hr INT) PARTITIONED BY (dt, hr)
           WITH ('connector' = 'filesystem', 'path' = 'out/wh', 'format' = 'parquet');
         CREATE TABLE back (id BIGINT, name STRING, price STRING, ok BOOLEAN, ts BIGINT,
                            dt STRING, hr INT)
           WITH ('connector' = 'file', 'path' = 'back.jsonl');
         INSERT INTO back SELECT id, name, CAST(price AS STRING), ok,
                                 CAST(ts AS BIGINT), dt, hr FROM wh;",
    );
    let r = t.runnel(&["run", "back.sql", "--data-dir", "d2", "-p", "2"]);
    assert!(r.success, "{}", r.stderr);
    let text = std::fs::read_to_string(t.path().join("back.jsonl")).expect("read back");
    let got = canonical(
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")),
    );
    assert_eq!(got.len(), 3000);
    assert!(
        got == canonical(want.into_iter()),
        "runnel's read-back differs from the input"
    );
}

/// What the `deltalake` Python package sees in a Delta table: rows, distinct ids, the sum
/// of `v`, the Arrow types, and whether each app id's `txn` versions only grow in the log.
const READ_DELTA: &str = r#"
import glob, json, os, sys
from deltalake import DeltaTable
path = sys.argv[1]
t = DeltaTable(path).to_pyarrow_table()
ids = t.column("id").to_pylist()
seq, increasing, commits = {}, True, 0
for f in sorted(glob.glob(os.path.join(path, "_delta_log", "*.json"))):
    commits += 1
    for line in open(f):
        a = json.loads(line)
        if "txn" in a:
            app, v = a["txn"]["appId"], a["txn"]["version"]
            if app in seq and v <= seq[app] and v != 0:
                increasing = False
            seq[app] = v
print(json.dumps({"rows": len(ids), "distinct": len(set(ids)),
                  "sum": sum(t.column("v").to_pylist()), "increasing": increasing,
                  "apps": sorted(seq), "commits": commits,
                  "types": {f.name: str(f.type) for f in t.schema}}))
"#;

fn read_delta(dir: &Path) -> serde_json::Value {
    let out = Command::new(pyarrow_python())
        .args(["-c", READ_DELTA])
        .arg(dir)
        .output()
        .expect("running deltalake");
    assert!(
        out.status.success(),
        "deltalake could not read {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("deltalake's summary")
}

/// A partitioned Delta table written with checkpoints at parallelism 2, the writer
/// SIGKILLed at random moments and restarted: the `deltalake` package reads every input
/// row exactly once, each subtask's transaction versions only grow in the log, and runnel's
/// `delta` source reads the same rows back. A DDL that does not match the table fails at
/// start, naming the column.
#[test]
fn delta_table_exactly_once_across_sigkills() {
    let _heavy = crate::harness::heavy();
    let t = TestDir::new();
    const ROWS: i64 = 200_000;
    let base: i64 = 1_764_979_200_000;
    let input: String = (0..ROWS)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"k\":\"k{}\",\"v\":{},\"ts\":{}}}\n",
                i % 4,
                i * 2,
                base + i * 10
            )
        })
        .collect();
    t.write("in.jsonl", &input);
    t.write(
        "p.sql",
        "SET 'execution.checkpointing.interval' = '50 ms';
         SET 'execution.batch-size' = '20';
         CREATE TABLE src (id BIGINT, k STRING, v BIGINT, ts TIMESTAMP(3))
           WITH ('connector' = 'file', 'path' = 'in.jsonl');
         CREATE TABLE dl (id BIGINT, k STRING, v BIGINT, ts TIMESTAMP(3)) PARTITIONED BY (k)
           WITH ('connector' = 'delta', 'path' = 'out/dl');
         INSERT INTO dl SELECT * FROM src;",
    );
    let resumed = crate::harness::kill_at_random_moments(
        t.path(),
        &["run", "p.sql", "--data-dir", "d", "-p", "2"],
        10,
        std::time::Duration::from_millis(30),
        700,
        "resuming p from checkpoint",
    );
    assert!(resumed > 0, "no run resumed from a checkpoint");
    let r = t.runnel(&["run", "p.sql", "--data-dir", "d", "-p", "2"]);
    assert!(r.success, "{}", r.stderr);
    let seen = read_delta(&t.path().join("out/dl"));
    assert_eq!(seen["rows"], ROWS, "{seen} (resumed {resumed} times)");
    assert_eq!(seen["distinct"], ROWS, "{seen}");
    assert_eq!(seen["sum"], (0..ROWS).map(|i| i * 2).sum::<i64>(), "{seen}");
    assert_eq!(seen["increasing"], true, "{seen}");
    assert_eq!(seen["types"]["ts"], "timestamp[us, tz=UTC]", "{seen}");
    // runnel's own delta source reads the table back.
    t.write(
        "back.sql",
        "CREATE TABLE dl (id BIGINT, k STRING, v BIGINT, ts TIMESTAMP(3)) PARTITIONED BY (k)
           WITH ('connector' = 'delta', 'path' = 'out/dl');
         CREATE TABLE back (id BIGINT, k STRING, v BIGINT, ts BIGINT)
           WITH ('connector' = 'file', 'path' = 'back.jsonl');
         INSERT INTO back SELECT id, k, v, CAST(ts AS BIGINT) FROM dl;",
    );
    let r = t.runnel(&["run", "back.sql", "--data-dir", "d2"]);
    assert!(r.success, "{}", r.stderr);
    let text = std::fs::read_to_string(t.path().join("back.jsonl")).expect("read back");
    let mut ids: Vec<i64> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let id = v["id"].as_i64().unwrap_or(-1);
            assert_eq!(v["k"], format!("k{}", id % 4), "partition value of {l}");
            assert_eq!(v["ts"], base + id * 10, "time of {l}");
            id
        })
        .collect();
    ids.sort_unstable();
    assert!(
        ids == (0..ROWS).collect::<Vec<_>>(),
        "runnel's read-back differs"
    );
    // The same table under a DDL with another type for `v`: refused, naming the column.
    t.write(
        "bad.sql",
        "CREATE TABLE src (id BIGINT, k STRING, v STRING, ts TIMESTAMP(3))
           WITH ('connector' = 'file', 'path' = 'in.jsonl');
         CREATE TABLE dl (id BIGINT, k STRING, v STRING, ts TIMESTAMP(3)) PARTITIONED BY (k)
           WITH ('connector' = 'delta', 'path' = 'out/dl');
         INSERT INTO dl SELECT * FROM src;",
    );
    let r = t.runnel(&["run", "bad.sql", "--data-dir", "d3"]);
    assert!(!r.success, "a mismatching DDL was accepted");
    assert!(
        r.stderr.contains("'v'") && r.stderr.contains("Delta"),
        "{}",
        r.stderr
    );
}

/// The `SET`s that point a pipeline's S3 client at the moto server on `port`.
fn s3_settings(port: u16) -> String {
    format!(
        "SET 's3.endpoint' = 'http://127.0.0.1:{port}';
         SET 's3.region' = 'us-east-1';
         SET 's3.access-key' = 'test';
         SET 's3.secret-key' = 'test';"
    )
}

/// Every row of the Parquet files under `s3://bucket/prefix` of a moto server, as
/// pyarrow's own S3 client reads them (Hive partitions, hidden files skipped); and the
/// object names.
const READ_S3: &str = r#"
import json, sys
import pyarrow.dataset as ds
from pyarrow import fs
s3 = fs.S3FileSystem(endpoint_override="127.0.0.1:" + sys.argv[1], scheme="http",
                     access_key="test", secret_key="test", region="us-east-1")
d = ds.dataset(sys.argv[2], filesystem=s3, format="parquet", partitioning="hive",
               ignore_prefixes=[".", "_"])
t = d.to_table()
ids = t.column("id").to_pylist()
names = sorted(i.path for i in s3.get_file_info(fs.FileSelector(sys.argv[2], recursive=True)))
print(json.dumps({"rows": len(ids), "distinct": len(set(ids)), "sum": sum(t.column("v").to_pylist()),
                  "files": names}))
"#;

/// Issue 20: the `filesystem` sink writes Parquet to `s3://…` with the pipeline's S3
/// settings, exactly once across SIGKILLs: every row once, success files in every
/// partition, nothing left in the local working directory's view of the bucket.
#[test]
fn parquet_to_s3_exactly_once_across_sigkills() {
    let _heavy = crate::harness::heavy();
    let s3 = crate::checkpoints::moto_server();
    let (status, body) = crate::checkpoints::s3_request(s3.port, "PUT", "/wh-test");
    assert_eq!(status, 200, "{body}");
    let t = TestDir::new();
    const ROWS: i64 = 100_000;
    let input: String = (0..ROWS)
        .map(|i| format!("{{\"id\":{i},\"k\":\"k{}\",\"v\":{}}}\n", i % 4, i * 3))
        .collect();
    t.write("in.jsonl", &input);
    let script = |bucket: &str| {
        format!(
            "SET 'execution.checkpointing.interval' = '50 ms';
             SET 'execution.batch-size' = '50';
             {sets}
             CREATE TABLE src (id BIGINT, k STRING, v BIGINT)
               WITH ('connector' = 'file', 'path' = 'in.jsonl');
             CREATE TABLE wh (id BIGINT, k STRING, v BIGINT) PARTITIONED BY (k)
               WITH ('connector' = 'filesystem', 'path' = 's3://{bucket}/feeds/wh',
                     'format' = 'parquet', 'sink.rolling-policy.file-size' = '64kb',
                     'sink.partition-commit.policy.kind' = 'success-file');
             INSERT INTO wh SELECT * FROM src;",
            sets = s3_settings(s3.port)
        )
    };
    t.write("p.sql", &script("wh-test"));
    let resumed = crate::harness::kill_at_random_moments(
        t.path(),
        &["run", "p.sql", "--data-dir", "d", "-p", "2"],
        8,
        std::time::Duration::from_millis(40),
        600,
        "resuming p from checkpoint",
    );
    assert!(resumed > 0, "no run resumed from a checkpoint");
    t.runnel(&["run", "p.sql", "--data-dir", "d", "-p", "2"])
        .assert_ok();
    let out = Command::new(pyarrow_python())
        .args(["-c", READ_S3, &s3.port.to_string(), "wh-test/feeds/wh"])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(seen["rows"], ROWS, "{seen} (resumed {resumed} times)");
    assert_eq!(seen["distinct"], ROWS, "{seen}");
    assert_eq!(seen["sum"], (0..ROWS).map(|i| i * 3).sum::<i64>(), "{seen}");
    let files: Vec<&str> = seen["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    for k in 0..4 {
        assert!(
            files.contains(&format!("wh-test/feeds/wh/k=k{k}/_SUCCESS").as_str()),
            "{files:?}"
        );
    }
    assert!(
        files
            .iter()
            .all(|f| !f.contains(".tmp") && (!f.contains("/.") || f.ends_with("/.runnel-run-p"))),
        "{files:?}"
    );
    // runnel reads the feed back from the bucket (a bounded filesystem source).
    t.write(
        "back.sql",
        &format!(
            "{}
             CREATE TABLE wh (id BIGINT, k STRING, v BIGINT) PARTITIONED BY (k)
               WITH ('connector' = 'filesystem', 'path' = 's3://wh-test/feeds/wh',
                     'format' = 'parquet');
             SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS ids, SUM(v) AS s,
                    COUNT(DISTINCT k) AS ks FROM wh;",
            s3_settings(s3.port)
        ),
    );
    let r = t.runnel(&[
        "query",
        "-f",
        "back.sql",
        "--data-dir",
        "q",
        "--format",
        "csv",
    ]);
    r.assert_ok();
    assert_eq!(
        r.stdout,
        format!(
            "n,ids,s,ks\n{ROWS},{ROWS},{},4\n",
            (0..ROWS).map(|i| i * 3).sum::<i64>()
        ),
        "{}",
        r.stderr
    );
    // A bucket that does not exist stops the run before any data flows, naming it.
    t.write("bad.sql", &script("no-such-bucket"));
    t.runnel(&["run", "bad.sql", "--data-dir", "d2"])
        .assert_err("s3://no-such-bucket/feeds/wh");
}

/// What the `deltalake` Python package reads from a Delta table in the moto server:
/// rows, distinct ids, the sum of `v`, the partition columns and the number of commits.
const READ_DELTA_S3: &str = r#"
import json, sys
from deltalake import DeltaTable
opts = {"AWS_ENDPOINT_URL": "http://127.0.0.1:" + sys.argv[1], "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
d = DeltaTable(sys.argv[2], storage_options=opts)
t = d.to_pyarrow_table()
ids = t.column("id").to_pylist()
print(json.dumps({"rows": len(ids), "distinct": len(set(ids)), "sum": sum(t.column("v").to_pylist()),
                  "partitions": d.metadata().partition_columns, "version": d.version()}))
# deltalake's S3 client threads abort the interpreter's normal exit; the answer is out.
sys.stdout.flush()
import os; os._exit(0)
"#;

/// Issue 20: the `delta` sink on `s3://…` (moto), SIGKILLed at random moments: the
/// `deltalake` package reads every row exactly once.
#[test]
fn delta_table_on_s3_exactly_once_across_sigkills() {
    let _heavy = crate::harness::heavy();
    let s3 = crate::checkpoints::moto_server();
    let (status, body) = crate::checkpoints::s3_request(s3.port, "PUT", "/lake");
    assert_eq!(status, 200, "{body}");
    let t = TestDir::new();
    const ROWS: i64 = 200_000;
    let input: String = (0..ROWS)
        .map(|i| format!("{{\"id\":{i},\"k\":\"k{}\",\"v\":{}}}\n", i % 3, i * 5))
        .collect();
    t.write("in.jsonl", &input);
    t.write(
        "p.sql",
        &format!(
            "SET 'execution.checkpointing.interval' = '50 ms';
             SET 'execution.batch-size' = '20';
             {sets}
             CREATE TABLE src (id BIGINT, k STRING, v BIGINT)
               WITH ('connector' = 'file', 'path' = 'in.jsonl');
             CREATE TABLE dl (id BIGINT, k STRING, v BIGINT) PARTITIONED BY (k)
               WITH ('connector' = 'delta', 'path' = 's3://lake/tables/dl');
             INSERT INTO dl SELECT * FROM src;",
            sets = s3_settings(s3.port)
        ),
    );
    let resumed = crate::harness::kill_at_random_moments(
        t.path(),
        &["run", "p.sql", "--data-dir", "d", "-p", "2"],
        8,
        std::time::Duration::from_millis(30),
        700,
        "resuming p from checkpoint",
    );
    assert!(resumed > 0, "no run resumed from a checkpoint");
    t.runnel(&["run", "p.sql", "--data-dir", "d", "-p", "2"])
        .assert_ok();
    let out = Command::new(pyarrow_python())
        .args([
            "-c",
            READ_DELTA_S3,
            &s3.port.to_string(),
            "s3://lake/tables/dl",
        ])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(seen["rows"], ROWS, "{seen} (resumed {resumed} times)");
    assert_eq!(seen["distinct"], ROWS, "{seen}");
    assert_eq!(seen["sum"], (0..ROWS).map(|i| i * 5).sum::<i64>(), "{seen}");
    assert_eq!(seen["partitions"], serde_json::json!(["k"]), "{seen}");
    // runnel's delta source reads the table back from the bucket.
    t.write(
        "back.sql",
        &format!(
            "{}
             CREATE TABLE dl (id BIGINT, k STRING, v BIGINT) PARTITIONED BY (k)
               WITH ('connector' = 'delta', 'path' = 's3://lake/tables/dl');
             SELECT k, COUNT(*) AS n FROM dl GROUP BY k ORDER BY k;",
            s3_settings(s3.port)
        ),
    );
    let r = t.runnel(&[
        "query",
        "-f",
        "back.sql",
        "--data-dir",
        "q",
        "--format",
        "csv",
    ]);
    r.assert_ok();
    assert_eq!(
        r.stdout,
        format!(
            "k,n\nk0,{}\nk1,{}\nk2,{}\n",
            (ROWS + 2) / 3,
            (ROWS + 1) / 3,
            ROWS / 3
        ),
        "{}",
        r.stderr
    );
}

/// Issue 20: a fresh run of a pipeline, and another pipeline, writing Parquet into the
/// same directory keep what was committed before: three runs of 100 rows leave 300.
#[test]
fn fresh_runs_and_other_pipelines_never_overwrite_a_feed() {
    let t = TestDir::new();
    let input: String = (0..100)
        .map(|i| format!("{{\"id\":{i},\"k\":\"k{}\"}}\n", i % 2))
        .collect();
    t.write("in.jsonl", &input);
    let script = |name: &str| {
        format!(
            "SET 'pipeline.name' = '{name}';
             SET 'execution.checkpointing.interval' = '50 ms';
             CREATE TABLE src (id BIGINT, k STRING) WITH ('connector' = 'file', 'path' = 'in.jsonl');
             CREATE TABLE wh (id BIGINT, k STRING) PARTITIONED BY (k)
               WITH ('connector' = 'filesystem', 'path' = 'out/wh', 'format' = 'parquet');
             INSERT INTO wh SELECT * FROM src;"
        )
    };
    t.write("a.sql", &script("a"));
    t.write("b.sql", &script("b"));
    t.runnel(&["run", "a.sql", "--data-dir", "d"]).assert_ok();
    t.runnel(&["run", "a.sql", "--data-dir", "d", "--from-scratch"])
        .assert_ok();
    t.runnel(&["run", "b.sql", "--data-dir", "d"]).assert_ok();
    let r = t.runnel(&[
        "query",
        "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS ids FROM `out/wh`",
        "--format",
        "csv",
    ]);
    r.assert_ok();
    assert_eq!(r.stdout, "n,ids\n300,100\n", "{}", r.stderr);
    for marker in [".runnel-run-a", ".runnel-run-b"] {
        assert!(t.path().join("out/wh").join(marker).is_file(), "{marker}");
    }
}
