//! Issue 20, point 4: `runnel query` — ad-hoc bounded SQL over what runnel stored (log
//! topics by name with inferred columns, Parquet directories, Delta tables, declared
//! bounded tables), printed as a table, JSON or CSV, with exact results.

use crate::harness::TestDir;

/// 40 frames from 3 cameras, one label per frame, appended to topic `frames` of `d`.
fn frames_topic(t: &TestDir) {
    let mut lines = String::new();
    for i in 0..40 {
        let camera = ["cam-1", "cam-2", "cam-3"][i % 3];
        let label = if i % 4 == 0 { "cat" } else { "dog" };
        lines.push_str(&format!(
            "{{\"camera\":\"{camera}\",\"label\":\"{label}\",\"score\":{}.5,\"ts\":\"2026-12-06T10:00:{:02}Z\"}}\n",
            i % 5,
            i
        ));
    }
    t.write("frames.jsonl", &lines);
    t.runnel(&["topics", "create", "frames", "--data-dir", "d"])
        .assert_ok();
    t.runnel(&["produce", "frames", "-f", "frames.jsonl", "--data-dir", "d"])
        .assert_ok();
}

#[test]
fn a_topic_is_queried_by_name_with_inferred_columns() {
    let t = TestDir::new();
    frames_topic(&t);
    let r = t.runnel(&[
        "query",
        "SELECT camera, COUNT(*) AS frames, SUM(CASE WHEN label = 'cat' THEN 1 ELSE 0 END) AS cats \
         FROM frames GROUP BY camera ORDER BY camera",
        "--data-dir",
        "d",
    ]);
    r.assert_ok();
    assert_eq!(
        r.stdout,
        "camera | frames | cats\n\
         -------+--------+-----\n\
         cam-1  |     14 |    4\n\
         cam-2  |     13 |    3\n\
         cam-3  |     13 |    3\n",
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("(3 rows in "), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    // Inferred types: score is DOUBLE, ts a TIMESTAMP (so time functions work on it).
    let r = t.runnel(&[
        "query",
        "SELECT MAX(score) AS top, MIN(ts) AS first FROM frames WHERE camera = 'cam-2'",
        "--data-dir",
        "d",
        "--format",
        "json",
    ]);
    r.assert_ok();
    assert_eq!(
        r.stdout.trim(),
        r#"{"top":4.5,"first":"2026-12-06T10:00:01.000Z"}"#,
        "{}",
        r.stderr
    );
    let r = t.runnel(&[
        "query",
        "SELECT label, COUNT(*) AS n FROM frames GROUP BY label ORDER BY n DESC LIMIT 1",
        "--data-dir",
        "d",
        "--format",
        "csv",
    ]);
    r.assert_ok();
    assert_eq!(r.stdout, "label,n\ndog,30\n", "{}", r.stderr);
}

#[test]
fn parquet_and_delta_tables_are_queried_by_path() {
    let _heavy = crate::harness::heavy();
    let t = TestDir::new();
    let mut input = String::new();
    for i in 0..500 {
        input.push_str(&format!(
            "{{\"id\":{i},\"camera\":\"cam-{}\",\"day\":\"2026-12-0{}\"}}\n",
            i % 4,
            1 + i % 2
        ));
    }
    t.write("in.jsonl", &input);
    t.write(
        "p.sql",
        "SET 'execution.checkpointing.interval' = '200 ms';
         CREATE TABLE src (id BIGINT, camera STRING, day STRING)
           WITH ('connector' = 'file', 'path' = 'in.jsonl');
         CREATE TABLE pq (id BIGINT, camera STRING, day STRING) PARTITIONED BY (day)
           WITH ('connector' = 'filesystem', 'path' = 'out/pq', 'format' = 'parquet');
         CREATE TABLE dl (id BIGINT, camera STRING, day STRING) PARTITIONED BY (day, camera)
           WITH ('connector' = 'delta', 'path' = 'out/dl');
         INSERT INTO pq SELECT * FROM src;
         INSERT INTO dl SELECT * FROM src;",
    );
    t.runnel(&["run", "p.sql", "--data-dir", "d", "-p", "2"])
        .assert_ok();
    let want = "day,n,s\n2026-12-01,250,62250\n2026-12-02,250,62500\n";
    for table in ["`out/pq`", "`out/dl`"] {
        let r = t.runnel(&[
            "query",
            &format!(
                "SELECT day, COUNT(*) AS n, SUM(id) AS s FROM {table} GROUP BY day ORDER BY day"
            ),
            "--format",
            "csv",
        ]);
        r.assert_ok();
        assert_eq!(r.stdout, want, "{table}: {}", r.stderr);
    }
    // A Delta partition column is a column like any other, and joins work across stores.
    let r = t.runnel(&[
        "query",
        "SELECT d.camera, COUNT(*) AS n FROM `out/dl` AS d JOIN `out/pq` AS p ON d.id = p.id \
         WHERE d.day = '2026-12-02' GROUP BY d.camera ORDER BY 1",
        "--format",
        "csv",
    ]);
    r.assert_ok();
    assert_eq!(r.stdout, "camera,n\ncam-1,125\ncam-3,125\n", "{}", r.stderr);
    // Nothing was written next to the tables, and no data directory was made.
    assert!(!t.path().join("runnel-data").exists());
}

#[test]
fn a_query_script_declares_its_tables_and_views() {
    let t = TestDir::new();
    t.write("r.csv", "k,v\na,1\nb,2\na,3\n");
    t.write(
        "q.sql",
        "CREATE TABLE r (k STRING, v INT) WITH ('connector' = 'file', 'path' = 'r.csv', 'format' = 'csv');
         CREATE VIEW totals AS SELECT k, SUM(v) AS total FROM r GROUP BY k;
         -- the final result of an updating query: one row per key
         SELECT * FROM totals ORDER BY total DESC;",
    );
    let r = t.runnel(&["query", "-f", "q.sql"]);
    r.assert_ok();
    assert_eq!(
        r.stdout, "k | total\n--+------\na |     4\nb |     2\n",
        "{}",
        r.stderr
    );
}

#[test]
fn query_mistakes_are_named() {
    let t = TestDir::new();
    frames_topic(&t);
    t.runnel(&["query", "SELECT * FROM nothing_here", "--data-dir", "d"])
        .assert_err("table 'nothing_here': no such table");
    t.runnel(&[
        "query",
        "SELECT camera FROM frames ORDER BY UPPER(camera)",
        "--data-dir",
        "d",
    ])
    .assert_err("orders by its output columns");
    t.write(
        "u.sql",
        "CREATE TABLE f (camera STRING) WITH ('connector' = 'log', 'topic' = 'frames');
         SELECT * FROM f;",
    );
    t.runnel(&["query", "-f", "u.sql", "--data-dir", "d"])
        .assert_err("never ends");
    // A bare SELECT in a pipeline has nowhere to go.
    t.write(
        "p.sql",
        "CREATE TABLE f (camera STRING) WITH ('connector' = 'file', 'path' = 'x.jsonl');
         SELECT * FROM f;",
    );
    t.runnel(&["run", "p.sql", "--data-dir", "d"])
        .assert_err("runnel query");
    t.runnel(&["query", "-f", "p.sql", "--data-dir", "d", "extra"])
        .assert_err("cannot be used with");
    t.runnel(&["query", "CREATE VIEW v AS SELECT 1 AS x"])
        .assert_err("ends with a SELECT");
}
