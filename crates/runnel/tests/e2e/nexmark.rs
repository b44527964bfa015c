//! The Nexmark queries of `runnel bench nexmark` (`src/cmd/nexmark/*.sql`), run on a
//! bounded generator, each checked against a reference: the same events, dumped to
//! files, queried by SQLite (`nexmark/<query>.sql`, through Python's standard library,
//! an engine independent of runnel's). For updating queries the final state after all
//! retractions is compared.

use std::path::Path;
use std::process::Command;

use crate::harness::TestDir;

/// Generator events: about 50 s of event time at 1000 events/s.
const EVENTS: &str = "50000";
const RATE: &str = "1000";

const QUERIES: &[&str] = &[
    "q0", "q1", "q2", "q3", "q4", "q5", "q7", "q7-max", "q8", "q9", "q10", "q11", "q12", "q13",
    "q14", "q15", "q16", "q17", "q18", "q19", "q20", "q21", "q22", "tumble",
];

/// Python 3 with its sqlite3 module; on a fresh Debian without it, installed with
/// apt-get when running as root.
fn python() -> &'static str {
    let have = || {
        Command::new("python3")
            .args(["-c", "import sqlite3"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have() {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(
                "[ \"$(id -u)\" = 0 ] && (apt-get install -y python3 || \
                 (apt-get update && apt-get install -y python3)) >/dev/null 2>&1",
            )
            .status();
    }
    assert!(
        have(),
        "the Nexmark reference runs on Python's sqlite3: apt-get install python3"
    );
    "python3"
}

#[test]
fn nexmark_queries_match_a_sqlite_reference() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/nexmark");
    let python = python();
    let dir = TestDir::new();
    // The generator's events, as files: what both runnel and the reference see.
    let sql = dir
        .runnel(&[
            "bench",
            "nexmark",
            "--query",
            "q0",
            "--events",
            EVENTS,
            "--rate",
            RATE,
            "--print-sql",
        ])
        .assert_ok()
        .stdout
        .clone();
    let tables: String = sql
        .split(';')
        .filter(|s| s.trim_start().starts_with("CREATE TABLE") && s.contains("'nexmark'"))
        .map(|s| format!("{};\n", s.trim()))
        .collect();
    let mut dump = tables.clone();
    for (t, cols) in [
        (
            "bid",
            "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, date_time TIMESTAMP(3), extra STRING",
        ),
        (
            "auction",
            "id BIGINT, item_name STRING, description STRING, initial_bid BIGINT, reserve BIGINT, date_time TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra STRING",
        ),
        (
            "person",
            "id BIGINT, name STRING, email_address STRING, credit_card STRING, city STRING, state STRING, date_time TIMESTAMP(3), extra STRING",
        ),
    ] {
        dump.push_str(&format!(
            "CREATE TABLE {t}_out ({cols}) WITH (connector = 'file', path = 'events/{t}.jsonl');\n\
             INSERT INTO {t}_out SELECT * FROM {t};\n"
        ));
    }
    dir.write("dump.sql", &dump);
    dir.runnel(&["run", "dump.sql"]).assert_ok();

    let mut failures = Vec::new();
    for q in QUERIES {
        let out = format!("{q}.jsonl");
        let run = dir.runnel(&[
            "bench", "nexmark", "--query", q, "--events", EVENTS, "--rate", RATE, "-p", "2",
            "--output", &out,
        ]);
        if !run.success {
            failures.push(format!("{q}: runnel failed:\n{}", run.stderr));
            continue;
        }
        // q10 writes day/minute partitions: its rows, with the partition values from
        // the directory names, and every partition complete at the end.
        let out = if *q == "q10" {
            match partition_rows(&dir.path().join(&out)) {
                Ok(rows) => {
                    dir.write("q10-rows.jsonl", &rows);
                    "q10-rows.jsonl".to_string()
                }
                Err(e) => {
                    failures.push(format!("q10: {e}"));
                    continue;
                }
            }
        } else {
            out
        };
        let reference = here.join(format!("{}.sql", q.replace('-', "_")));
        let check = Command::new(python)
            .arg(here.join("reference.py"))
            .arg(dir.path().join("events"))
            .arg(dir.path().join(&out))
            .arg(&reference)
            .output()
            .expect("running python3 (the reference's SQLite)");
        if !check.status.success() {
            failures.push(format!(
                "{q}: differs from the reference:\n{}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries failing:\n{}",
        failures.len(),
        QUERIES.len(),
        failures.join("\n\n")
    );
}

/// The rows of q10's partition directories `dt=…/hm=…/` as JSON lines, each with its
/// `dt` and `hm` (unescaped from the path) appended; every partition must have its
/// `_SUCCESS` file.
fn partition_rows(root: &Path) -> Result<String, String> {
    let read = |p: &Path| std::fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()));
    let unescape = |v: &str| v.replace("%3A", ":");
    let mut out = String::new();
    let mut partitions = 0;
    for day in read(root)?.flatten() {
        let day_name = day.file_name().to_string_lossy().into_owned();
        let Some(dt) = day_name.strip_prefix("dt=") else {
            continue;
        };
        for minute in read(&day.path())?.flatten() {
            let name = minute.file_name().to_string_lossy().into_owned();
            let hm = unescape(
                name.strip_prefix("hm=")
                    .ok_or(format!("unexpected {name}"))?,
            );
            partitions += 1;
            let mut success = false;
            for file in read(&minute.path())?.flatten() {
                let fname = file.file_name().to_string_lossy().into_owned();
                if fname == "_SUCCESS" {
                    success = true;
                    continue;
                }
                if fname.starts_with('.') {
                    return Err(format!("hidden file left behind: {dt}/{name}/{fname}"));
                }
                let text = std::fs::read_to_string(file.path()).map_err(|e| e.to_string())?;
                for line in text.lines() {
                    let body = line
                        .trim_end()
                        .strip_suffix('}')
                        .ok_or("not a JSON object")?;
                    out.push_str(&format!("{body},\"dt\":\"{dt}\",\"hm\":\"{hm}\"}}\n"));
                }
            }
            if !success {
                return Err(format!("partition dt={dt}/{name} has no _SUCCESS file"));
            }
        }
    }
    if partitions == 0 {
        return Err(format!("no partitions under {}", root.display()));
    }
    Ok(out)
}

/// Flink's Nexmark table shape (one `nexmark` table of `event_type` and person /
/// auction / bid ROWs, read through views with Flink's column names, as Flink's
/// `ddl_gen.sql` and `ddl_views.sql` declare it) yields the same events as the three
/// per-stream tables, at any parallelism.
#[test]
fn flink_shaped_nexmark_table_yields_the_same_events() {
    let dir = TestDir::new();
    let streams = [
        (
            "bid",
            "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, date_time TIMESTAMP(3), extra STRING",
        ),
        (
            "auction",
            "id BIGINT, item_name STRING, description STRING, initial_bid BIGINT, reserve BIGINT, date_time TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra STRING",
        ),
        (
            "person",
            "id BIGINT, name STRING, email_address STRING, credit_card STRING, city STRING, state STRING, date_time TIMESTAMP(3), extra STRING",
        ),
    ];
    let mut per_stream = String::new();
    for (t, cols) in streams {
        per_stream.push_str(&format!(
            "CREATE TABLE {t} ({cols}) WITH (connector = 'nexmark', stream = '{t}', events = '{EVENTS}', rate = '{RATE}', throttle = 'false');\n\
             CREATE TABLE {t}_out ({cols}) WITH (connector = 'file', path = 'streams/{t}.jsonl');\n\
             INSERT INTO {t}_out SELECT * FROM {t};\n"
        ));
    }
    let mut flink = format!(
        "CREATE TABLE datagen (
            event_type int,
            person ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR, state VARCHAR, `dateTime` TIMESTAMP(3), extra VARCHAR>,
            auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT, `dateTime` TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR>,
            bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, `dateTime` TIMESTAMP(3), extra VARCHAR>,
            `dateTime` AS CASE WHEN event_type = 0 THEN person.`dateTime` WHEN event_type = 1 THEN auction.`dateTime` ELSE bid.`dateTime` END,
            WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND
        ) WITH (
            'connector' = 'nexmark', 'first-event.rate' = '{RATE}', 'next-event.rate' = '{RATE}',
            'events.num' = '{EVENTS}', 'person.proportion' = '1', 'auction.proportion' = '3',
            'bid.proportion' = '46', 'keep-alive' = 'false', 'stop-at' = '-1', 'max-emit-speed' = 'true'
        );
        CREATE VIEW person AS SELECT person.id, person.name, person.emailAddress, person.creditCard,
            person.city, person.state, `dateTime`, person.extra FROM datagen WHERE event_type = 0;
        CREATE VIEW auction AS SELECT auction.id, auction.itemName, auction.description, auction.initialBid,
            auction.reserve, `dateTime`, auction.expires, auction.seller, auction.category, auction.extra
            FROM datagen WHERE event_type = 1;
        CREATE VIEW bid AS SELECT bid.auction, bid.bidder, bid.price, bid.channel, bid.url, `dateTime`,
            bid.extra FROM datagen WHERE event_type = 2;\n"
    );
    for (t, cols) in streams {
        flink.push_str(&format!(
            "CREATE TABLE {t}_out ({cols}) WITH (connector = 'file', path = 'flink/{t}.jsonl');\n\
             INSERT INTO {t}_out SELECT * FROM {t};\n"
        ));
    }
    dir.write("streams.sql", &per_stream);
    dir.write("flink.sql", &flink);
    dir.runnel(&["run", "streams.sql", "-p", "1"]).assert_ok();
    dir.runnel(&["run", "flink.sql", "-p", "3"]).assert_ok();
    for (t, _) in streams {
        let sorted = |path: &str| {
            let text = std::fs::read_to_string(dir.path().join(path)).expect("output file");
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            lines.sort();
            lines
        };
        let (a, b) = (
            sorted(&format!("streams/{t}.jsonl")),
            sorted(&format!("flink/{t}.jsonl")),
        );
        assert!(!a.is_empty(), "no {t} events");
        assert_eq!(a.len(), b.len(), "{t}: event counts differ");
        assert!(a == b, "{t}: events differ, e.g. {:?} vs {:?}", a[0], b[0]);
    }
}
