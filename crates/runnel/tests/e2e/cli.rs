//! The command line itself: help text, exit codes, the run summary, the
//! directory source and the examples shipped in `examples/`.

use std::path::Path;

use crate::harness::{TestDir, sorted_lines};

#[test]
fn help_lists_subcommands_one_line_each() {
    let dir = TestDir::new();
    let run = dir.runnel(&["--help"]);
    run.assert_ok();
    for cmd in ["run ", "bench "] {
        assert!(
            run.stdout.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} missing:\n{}",
            run.stdout
        );
    }
}

#[test]
fn missing_pipeline_file_is_a_clear_error() {
    let dir = TestDir::new();
    dir.runnel(&["run", "nope.sql"])
        .assert_err("cannot read pipeline file nope.sql");
}

#[test]
fn summary_counts_rows_and_directory_source_reads_in_name_order() {
    let dir = TestDir::new();
    dir.write("in/b.jsonl", "{\"n\": 3}\n{\"n\": 4}\n");
    dir.write("in/a.jsonl", "{\"n\": 1}\n{\"n\": 2}\n");
    dir.write("in/.hidden", "garbage\n");
    dir.write(
        "p.sql",
        "CREATE TABLE src (n BIGINT) WITH (connector = 'file', path = 'in');
         CREATE TABLE out (n BIGINT) WITH (connector = 'file', path = 'out.jsonl');
         INSERT INTO out SELECT n * 10 FROM src;",
    );
    let run = dir.runnel(&["run", "p.sql", "-p", "1"]);
    run.assert_ok();
    assert_eq!(
        dir.read("out.jsonl"),
        "{\"n\":10}\n{\"n\":20}\n{\"n\":30}\n{\"n\":40}\n"
    );
    assert!(run.stderr.contains("source src"), "{}", run.stderr);
    assert!(run.stderr.contains("4 rows read"), "{}", run.stderr);
    assert!(run.stderr.contains("4 rows written"), "{}", run.stderr);
}

#[test]
fn several_inserts_run_as_one_pipeline() {
    let dir = TestDir::new();
    dir.write(
        "in.jsonl",
        "{\"k\": \"a\", \"v\": 1}\n{\"k\": \"b\", \"v\": 2}\n",
    );
    dir.write(
        "p.sql",
        "CREATE TABLE src (k STRING, v INT) WITH (connector = 'file', path = 'in.jsonl');
         CREATE TABLE o1 (k STRING) WITH (connector = 'file', path = 'o1.jsonl');
         CREATE TABLE o2 (v INT) WITH (connector = 'file', path = 'o2.jsonl');
         CREATE TABLE o3 (v BIGINT) WITH (connector = 'blackhole');
         INSERT INTO o1 SELECT k FROM src;
         INSERT INTO o2 SELECT v FROM src WHERE v > 1;
         INSERT INTO o3 SELECT v FROM src;",
    );
    dir.runnel(&["run", "p.sql"]).assert_ok();
    assert_eq!(
        sorted_lines(&dir.read("o1.jsonl")),
        sorted_lines("{\"k\":\"a\"}\n{\"k\":\"b\"}\n")
    );
    assert_eq!(dir.read("o2.jsonl"), "{\"v\":2}\n");
}

#[test]
fn print_sink_writes_json_lines_to_stdout() {
    let dir = TestDir::new();
    dir.write("in.jsonl", "{\"k\": \"a\"}\n");
    dir.write(
        "p.sql",
        "CREATE TABLE src (k STRING) WITH (connector = 'file', path = 'in.jsonl');
         CREATE TABLE out (k STRING, n INT) WITH (connector = 'print');
         INSERT INTO out SELECT k, 1 FROM src;",
    );
    let run = dir.runnel(&["run", "p.sql"]);
    run.assert_ok();
    assert_eq!(run.stdout.trim(), "{\"k\":\"a\",\"n\":1}");
}

#[test]
fn nexmark_source_is_deterministic_across_parallelism() {
    let dir = TestDir::new();
    dir.write(
        "p.sql",
        "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3))
           WITH (connector = 'nexmark', stream = 'bid', events = '5000', seed = '3');
         CREATE TABLE out (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3))
           WITH (connector = 'file', path = 'out.jsonl');
         INSERT INTO out SELECT * FROM bid WHERE MOD(auction, 3) = 0;",
    );
    dir.runnel(&["run", "p.sql", "-p", "1"]).assert_ok();
    let one = sorted_lines(&dir.read("out.jsonl"));
    dir.runnel(&["run", "p.sql", "-p", "3"]).assert_ok();
    let three = sorted_lines(&dir.read("out.jsonl"));
    assert!(!one.is_empty());
    assert_eq!(one, three);
}

#[test]
fn bench_nexmark_prints_events_per_s_last() {
    let dir = TestDir::new();
    for q in ["q0", "q1", "q2"] {
        let run = dir.runnel(&[
            "bench", "nexmark", "--query", q, "--events", "20000", "-p", "2",
        ]);
        run.assert_ok();
        let last = run.stdout.lines().last().unwrap_or_default();
        assert!(last.starts_with("events_per_s="), "{q}: {}", run.stdout);
    }
}

/// `--flink-queries DIR` runs files laid out as nexmark-flink's (its `${…}` variables
/// filled in, a blackhole sink swapped for `--output`); the files here are written in
/// that shape for the test, not Flink's own.
#[test]
fn bench_nexmark_runs_flink_shaped_query_files() {
    let dir = TestDir::new();
    dir.write(
        "queries/ddl_gen.sql",
        "CREATE TABLE datagen (event_type int,
           bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, `dateTime` TIMESTAMP(3)>,
           `dateTime` AS bid.`dateTime`,
           WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND
         ) WITH ('connector' = 'nexmark', 'first-event.rate' = '${TPS}', 'next-event.rate' = '${TPS}',
           'events.num' = '${EVENTS_NUM}', 'person.proportion' = '${PERSON_PROPORTION}',
           'auction.proportion' = '${AUCTION_PROPORTION}', 'bid.proportion' = '${BID_PROPORTION}')",
    );
    dir.write(
        "queries/ddl_views.sql",
        "CREATE VIEW bid AS SELECT bid.auction, bid.bidder, bid.price, `dateTime`
         FROM ${NEXMARK_TABLE} WHERE event_type = 2",
    );
    dir.write(
        "queries/q2.sql",
        "CREATE TABLE nexmark_q2 (auction BIGINT, price BIGINT) WITH ('connector' = 'blackhole');
         INSERT INTO nexmark_q2 SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0",
    );
    let run = dir.runnel(&[
        "bench",
        "nexmark",
        "--flink-queries",
        "queries",
        "--query",
        "q2",
        "--events",
        "100000",
        "--output",
        "q2.jsonl",
    ]);
    run.assert_ok();
    let rows = std::fs::read_to_string(dir.path().join("q2.jsonl")).expect("output");
    assert!(rows.lines().count() > 0, "no q2 rows:\n{}", run.stdout);
    assert!(
        rows.lines()
            .all(|l| l.contains("\"auction\":") && l.contains("\"price\":")),
        "{rows}"
    );
    // Runnel's own queries are not Nexmark's files.
    let err = dir.runnel(&[
        "bench",
        "nexmark",
        "--flink-queries",
        "queries",
        "--query",
        "q7-max",
    ]);
    assert!(
        !err.success && err.stderr.contains("runnel's own query"),
        "{}",
        err.stderr
    );
}

#[test]
fn shipped_examples_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = TestDir::new();
    for example in ["examples/sensors.sql", "examples/nexmark_q2.sql"] {
        // Examples use paths relative to the repository root; run them from a copy of it.
        let sql = std::fs::read_to_string(root.join(example)).expect("example exists");
        let sql = sql.replace(
            "examples/data/",
            &format!("{}/examples/data/", root.display()),
        );
        dir.write(example, &sql);
        dir.runnel(&["run", example]).assert_ok();
    }
    assert!(dir.read("examples-out/cleaned.jsonl").lines().count() >= 3);
    assert!(!dir.read("examples-out/q2.jsonl").is_empty());
}

/// A processing-time window closes by the wall clock: its row comes out while the
/// (unbounded) input stays silent, not only when the next row or watermark arrives.
#[test]
fn processing_time_windows_fire_by_the_clock_without_new_rows() {
    let dir = TestDir::new();
    dir.runnel(&["topics", "create", "clicks", "--data-dir", "d"])
        .assert_ok();
    dir.write(
        "clicks.jsonl",
        "{\"k\":\"a\"}\n{\"k\":\"a\"}\n{\"k\":\"a\"}\n",
    );
    dir.runnel(&[
        "produce",
        "clicks",
        "--file",
        "clicks.jsonl",
        "--data-dir",
        "d",
    ])
    .assert_ok();
    dir.write(
        "p.sql",
        "CREATE TABLE clicks (k STRING, p AS PROCTIME())
           WITH (connector = 'log', topic = 'clicks', format = 'json', 'scan.startup.mode' = 'earliest');
         CREATE TABLE counts (k STRING, n BIGINT) WITH (connector = 'print');
         INSERT INTO counts SELECT k, COUNT(*) FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(p), INTERVAL '1' SECOND))
         GROUP BY k, window_start, window_end;",
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["run", "p.sql", "--data-dir", "d", "-p", "1"])
        .current_dir(dir.path())
        .env("RUNNEL_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting runnel");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // The three rows may straddle a second boundary: count them over the windows.
    let (mut seen, mut counted) = (Vec::new(), 0);
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let row: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                counted += row["n"].as_i64().unwrap_or(0);
                seen.push(line);
                if counted == 3 {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        found,
        "no window row within 30 s of three rows on a silent input; got {seen:?}"
    );
}
