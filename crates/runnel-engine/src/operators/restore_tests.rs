//! For every changelog operator: a run that snapshots, restores into a fresh operator
//! and continues gives the same output as an uninterrupted run.

use std::sync::Arc;

use arrow::array::Int8Array;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use runnel_common::Timestamp;
use runnel_common::changelog::{self, RowKind};
use runnel_connectors::format::json::decode_all;
use runnel_sql::{Node, Planner};

use super::build;
use crate::metrics::NodeMetrics;
use crate::operator::{Operator, Output, StateReader, StateWriter};

const TABLES: &str = "
CREATE TABLE auction (id BIGINT, cat BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH (connector = 'blackhole');
CREATE TABLE bid (auction BIGINT, price BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH (connector = 'blackhole');
";

/// The last operator node of `kind` in the plan of `sql`, and its input schemas.
fn plan(sql: &str, kind: &str) -> (Node, Vec<SchemaRef>) {
    let graph = Planner::new()
        .plan(&format!("{TABLES}{sql}"))
        .expect("plans");
    let node = graph
        .nodes
        .iter()
        .rev()
        .find(|n| n.spec.kind() == kind)
        .unwrap_or_else(|| panic!("no {kind} in\n{}", graph.explain()))
        .clone();
    let inputs = node
        .inputs
        .iter()
        .map(|i| graph.nodes[i.node].schema.clone())
        .collect();
    (node, inputs)
}

/// Input `(input index, JSON lines)` or a watermark.
enum Step {
    Rows(usize, &'static str),
    /// Changelog rows: JSON lines and their kinds.
    Changes(usize, &'static str, &'static [RowKind]),
    Watermark(Timestamp),
}

fn run(op: &mut dyn Operator, inputs: &[SchemaRef], steps: &[Step]) -> Vec<RecordBatch> {
    let mut out = Output::default();
    for s in steps {
        match s {
            Step::Rows(i, json) => {
                let batch = decode_all(inputs[*i].clone(), json.as_bytes())
                    .expect("decodes")
                    .batch
                    .expect("rows");
                op.process_batch(*i, batch, &mut out).expect("processes");
            }
            Step::Changes(i, json, kinds) => {
                let batch = decode_all(inputs[*i].clone(), json.as_bytes())
                    .expect("decodes")
                    .batch
                    .expect("rows");
                let ops = Arc::new(Int8Array::from_iter_values(kinds.iter().map(|k| *k as i8)));
                let batch = changelog::attach(&batch, ops).expect("attaches");
                op.process_batch(*i, batch, &mut out).expect("processes");
            }
            Step::Watermark(w) => op.process_watermark(*w, &mut out).expect("fires"),
        }
    }
    out.drain().collect()
}

/// Runs `steps` straight through, and again with a snapshot/restore after `cut`.
fn same_after_restore(sql: &str, kind: &str, steps: &[Step], cut: usize) {
    let sql = sql.to_string();
    let (node, inputs) = plan(&sql, kind);
    let metrics = NodeMetrics::default();
    let mut straight = build(
        &node,
        &inputs,
        &metrics,
        &crate::eval::RowErrors::strict("test"),
    )
    .expect("builds");
    let expected = run(straight.as_mut(), &inputs, steps);
    assert!(!expected.is_empty(), "{kind}: no output at all");

    let mut first = build(
        &node,
        &inputs,
        &metrics,
        &crate::eval::RowErrors::strict("test"),
    )
    .expect("builds");
    let mut got = run(first.as_mut(), &inputs, &steps[..cut]);
    let mut state = StateWriter::default();
    first.snapshot(&mut state).expect("snapshots");
    let mut second = build(
        &node,
        &inputs,
        &metrics,
        &crate::eval::RowErrors::strict("test"),
    )
    .expect("builds");
    second
        .restore(&StateReader {
            entries: state.entries,
        })
        .expect("restores");
    got.extend(run(second.as_mut(), &inputs, &steps[cut..]));
    let show = |b: &[RecordBatch]| {
        arrow::util::pretty::pretty_format_batches(b)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    assert_eq!(show(&got), show(&expected), "{kind} after restore");
}

const B1: &str = r#"{"auction":1,"price":10,"ts":"2026-01-01T00:00:01Z"}
{"auction":2,"price":30,"ts":"2026-01-01T00:00:02Z"}"#;
const B2: &str = r#"{"auction":1,"price":50,"ts":"2026-01-01T00:00:03Z"}
{"auction":2,"price":5,"ts":"2026-01-01T00:00:04Z"}"#;
const B3: &str = r#"{"auction":1,"price":20,"ts":"2026-01-01T00:00:05Z"}
{"auction":3,"price":7,"ts":"2026-01-01T00:00:12Z"}"#;
const M1: &str = r#"{"m":10,"c":1,"auction":1}
{"m":30,"c":0,"auction":2}
{"m":7,"c":1,"auction":3}"#;
const M2: &str = r#"{"m":7,"c":1,"auction":3}
{"m":70,"c":1,"auction":3}"#;
const M3: &str = r#"{"m":10,"c":1,"auction":1}
{"m":9,"c":0,"auction":4}"#;
const W1: &str = r#"{"auction":1,"price":10,"ts":"2026-01-01T00:00:01Z","window_start":"2026-01-01T00:00:00Z","window_end":"2026-01-01T00:00:10Z","window_time":"2026-01-01T00:00:09.999Z"}
{"auction":2,"price":30,"ts":"2026-01-01T00:00:02Z","window_start":"2026-01-01T00:00:00Z","window_end":"2026-01-01T00:00:10Z","window_time":"2026-01-01T00:00:09.999Z"}"#;
const W2: &str = r#"{"auction":3,"price":50,"ts":"2026-01-01T00:00:03Z","window_start":"2026-01-01T00:00:00Z","window_end":"2026-01-01T00:00:10Z","window_time":"2026-01-01T00:00:09.999Z"}
{"auction":2,"price":5,"ts":"2026-01-01T00:00:14Z","window_start":"2026-01-01T00:00:10Z","window_end":"2026-01-01T00:00:20Z","window_time":"2026-01-01T00:00:19.999Z"}"#;
const W3: &str = r#"{"auction":1,"price":20,"ts":"2026-01-01T00:00:15Z","window_start":"2026-01-01T00:00:10Z","window_end":"2026-01-01T00:00:20Z","window_time":"2026-01-01T00:00:19.999Z"}"#;
const A1: &str = r#"{"id":1,"cat":10,"ts":"2026-01-01T00:00:00Z"}
{"id":2,"cat":20,"ts":"2026-01-01T00:00:00Z"}"#;

#[test]
fn group_aggregate_restores() {
    same_after_restore(
        "CREATE TABLE o (a BIGINT, n BIGINT, mx BIGINT, d BIGINT) WITH (connector = 'blackhole');
         INSERT INTO o SELECT auction, COUNT(*), MAX(price), COUNT(DISTINCT price) FROM bid GROUP BY auction;",
        "aggregate",
        &[Step::Rows(0, B1), Step::Rows(0, B2), Step::Rows(0, B3)],
        2,
    );
}

#[test]
fn retracting_aggregate_restores() {
    // The outer aggregate over the inner one's changelog: MIN/MAX/AVG retract.
    same_after_restore(
        "CREATE TABLE o (c BIGINT, a DOUBLE, mn BIGINT) WITH (connector = 'blackhole');
         INSERT INTO o SELECT c, AVG(m), MIN(m) FROM (SELECT MAX(price) AS m, auction % 2 AS c, auction FROM bid GROUP BY auction) GROUP BY c;",
        "aggregate",
        &[
            Step::Changes(0, M1, &[RowKind::Insert, RowKind::Insert, RowKind::Insert]),
            Step::Changes(0, M2, &[RowKind::UpdateBefore, RowKind::UpdateAfter]),
            Step::Changes(0, M3, &[RowKind::Delete, RowKind::Insert]),
        ],
        2,
    );
}

#[test]
fn outer_join_restores() {
    same_after_restore(
        "CREATE TABLE o (id BIGINT, cat BIGINT, price BIGINT) WITH (connector = 'blackhole');
         INSERT INTO o SELECT A.id, A.cat, B.price FROM auction A FULL JOIN bid B ON A.id = B.auction AND B.price > 6;",
        "join",
        &[
            Step::Rows(1, B1),
            Step::Rows(0, A1),
            Step::Rows(1, B2),
            Step::Rows(1, B3),
        ],
        2,
    );
}

#[test]
fn top_n_restores() {
    same_after_restore(
        "CREATE TABLE o (a BIGINT, p BIGINT, rn BIGINT) WITH (connector = 'blackhole');
         INSERT INTO o SELECT auction, price, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rn FROM bid) WHERE rn <= 2;",
        "rank",
        &[Step::Rows(0, B1), Step::Rows(0, B2), Step::Rows(0, B3)],
        1,
    );
}

#[test]
fn rank_and_dense_rank_top_n_restore() {
    for f in ["RANK", "DENSE_RANK"] {
        same_after_restore(
            &format!(
                "CREATE TABLE o (a BIGINT, p BIGINT, rn BIGINT) WITH (connector = 'blackhole');
                 INSERT INTO o SELECT auction, price, rn FROM (SELECT *, {f}() OVER (PARTITION BY auction ORDER BY price DESC) AS rn FROM bid) WHERE rn <= 2;"
            ),
            "rank",
            &[Step::Rows(0, B1), Step::Rows(0, B2), Step::Rows(0, B3)],
            1,
        );
    }
}

#[test]
fn window_top_n_restores() {
    same_after_restore(
        "CREATE TABLE o (a BIGINT, p BIGINT) WITH (connector = 'blackhole');
         INSERT INTO o SELECT auction, price FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY price DESC) AS rn
           FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND))) WHERE rn <= 2;",
        "rank",
        &[
            Step::Rows(0, W1),
            Step::Rows(0, W2),
            Step::Watermark(1_767_225_600_000 + 10_000),
            Step::Rows(0, W3),
            Step::Watermark(i64::MAX),
        ],
        2,
    );
}

#[test]
fn over_aggregate_restores() {
    for frame in [
        "ROWS BETWEEN 1 PRECEDING AND CURRENT ROW",
        "RANGE BETWEEN INTERVAL '3' SECOND PRECEDING AND CURRENT ROW",
        "RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
    ] {
        same_after_restore(
            &format!(
                "CREATE TABLE o (a BIGINT, p BIGINT, s BIGINT, mx BIGINT, prev BIGINT) WITH (connector = 'blackhole');
                 INSERT INTO o SELECT auction, price, SUM(price) OVER w, MAX(price) OVER w, LAG(price) OVER w FROM bid
                 WINDOW w AS (PARTITION BY auction ORDER BY ts {frame});"
            ),
            "over",
            &[
                Step::Rows(0, B1),
                Step::Rows(0, B2),
                Step::Watermark(1_767_225_600_000 + 3_000),
                Step::Rows(0, B3),
                Step::Watermark(i64::MAX),
            ],
            3,
        );
    }
}

#[test]
fn dedup_keep_first_and_keep_last_restore() {
    for order in ["ts ASC", "ts DESC"] {
        same_after_restore(
            &format!(
                "CREATE TABLE o (a BIGINT, p BIGINT) WITH (connector = 'blackhole');
                 INSERT INTO o SELECT auction, price FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY {order}) AS rn FROM bid) WHERE rn = 1;"
            ),
            "rank",
            &[Step::Rows(0, B1), Step::Rows(0, B2), Step::Rows(0, B3)],
            1,
        );
    }
}

#[test]
fn outlier_functions_in_over_restore() {
    for frame in [
        "ROWS BETWEEN 2 PRECEDING AND CURRENT ROW",
        "RANGE BETWEEN INTERVAL '3' SECOND PRECEDING AND CURRENT ROW",
    ] {
        same_after_restore(
            &format!(
                "CREATE TABLE o (a BIGINT, p BIGINT, z DOUBLE, rz DOUBLE, m DOUBLE, e DOUBLE, o BOOLEAN, med DOUBLE,
                   p50 BIGINT, d BIGINT, sd DOUBLE) WITH (connector = 'blackhole');
                 INSERT INTO o SELECT auction, price, zscore(price) OVER w, robust_zscore(price) OVER w,
                   moving_median(price) OVER w, ewma(price, 0.5) OVER w, is_outlier(price, 'iqr') OVER w,
                   MEDIAN(price) OVER w, APPROX_PERCENTILE_CONT(price, 0.5) OVER w,
                   APPROX_DISTINCT(price) OVER w, STDDEV(price) OVER w FROM bid
                 WINDOW w AS (PARTITION BY auction ORDER BY ts {frame});"
            ),
            "over",
            &[
                Step::Rows(0, B1),
                Step::Rows(0, B2),
                Step::Watermark(1_767_225_600_000 + 3_000),
                Step::Rows(0, B3),
                Step::Watermark(i64::MAX),
            ],
            3,
        );
    }
    // EWMA over an unbounded frame keeps a running value in its state.
    same_after_restore(
        "CREATE TABLE o (a BIGINT, p BIGINT, e DOUBLE, z DOUBLE) WITH (connector = 'blackhole');
         INSERT INTO o SELECT auction, price, ewma(price, 0.5) OVER w, zscore(price) OVER w FROM bid
         WINDOW w AS (PARTITION BY auction ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW);",
        "over",
        &[
            Step::Rows(0, B1),
            Step::Rows(0, B2),
            Step::Watermark(1_767_225_600_000 + 3_000),
            Step::Rows(0, B3),
            Step::Watermark(i64::MAX),
        ],
        3,
    );
}

/// DataFusion's statistics aggregates in OVER and in window aggregates, on DOUBLE
/// arguments too (APPROX_DISTINCT has no HyperLogLog of its own for them).
#[test]
fn statistics_aggregates_on_doubles() {
    same_after_restore(
        "CREATE TABLE o (a BIGINT, d BIGINT, sd DOUBLE, v DOUBLE, c DOUBLE, p DOUBLE) WITH (connector = 'blackhole');
         INSERT INTO o SELECT auction, APPROX_DISTINCT(CAST(price AS DOUBLE)) OVER w, STDDEV(CAST(price AS DOUBLE)) OVER w,
           VAR_POP(CAST(price AS DOUBLE)) OVER w, CORR(CAST(price AS DOUBLE), CAST(auction AS DOUBLE)) OVER w,
           APPROX_PERCENTILE_CONT(CAST(price AS DOUBLE), 0.5) OVER w FROM bid
         WINDOW w AS (PARTITION BY auction ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW);",
        "over",
        &[
            Step::Rows(0, B1),
            Step::Rows(0, B2),
            Step::Watermark(1_767_225_600_000 + 3_000),
            Step::Rows(0, B3),
            Step::Watermark(i64::MAX),
        ],
        3,
    );
    same_after_restore(
        "CREATE TABLE o (ws TIMESTAMP(3), d BIGINT, sd DOUBLE, c DOUBLE, p DOUBLE) WITH (connector = 'blackhole');
         INSERT INTO o SELECT window_start, APPROX_DISTINCT(CAST(price AS DOUBLE)), STDDEV(CAST(price AS DOUBLE)),
           CORR(CAST(price AS DOUBLE), CAST(auction AS DOUBLE)), APPROX_PERCENTILE_CONT(CAST(price AS DOUBLE), 0.5)
         FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY window_start, window_end;",
        "window-aggregate",
        &[
            Step::Rows(0, W1),
            Step::Rows(0, W2),
            Step::Watermark(1_767_225_600_000 + 10_000),
            Step::Rows(0, W3),
            Step::Watermark(i64::MAX),
        ],
        2,
    );
}

/// `table.exec.state.ttl` bounds an OVER operator's partitions: a key without rows for
/// the TTL is forgotten once the watermark moves on.
#[test]
fn over_partitions_expire_with_the_state_ttl() {
    let (node, inputs) = plan(
        "SET 'table.exec.state.ttl' = '20 ms';
         CREATE TABLE o (a BIGINT, p BIGINT, z DOUBLE) WITH (connector = 'blackhole');
         INSERT INTO o SELECT auction, price, zscore(price) OVER w FROM bid
         WINDOW w AS (PARTITION BY auction ORDER BY ts ROWS BETWEEN 5 PRECEDING AND CURRENT ROW);",
        "over",
    );
    let runnel_sql::NodeSpec::Over(spec) = &node.spec else {
        panic!("not an OVER node")
    };
    let mut op = super::over::Over::try_new(
        spec,
        &inputs[0],
        &node.schema,
        Default::default(),
        crate::eval::RowErrors::strict("over"),
    )
    .expect("builds");
    let mut out = Output::default();
    let batch = decode_all(inputs[0].clone(), B1.as_bytes())
        .expect("decodes")
        .batch
        .expect("rows");
    op.process_batch(0, batch, &mut out).expect("processes");
    op.process_watermark(i64::MAX - 1, &mut out).expect("fires");
    assert!(op.partitions() > 0);
    std::thread::sleep(std::time::Duration::from_millis(60));
    op.process_watermark(i64::MAX, &mut out).expect("fires");
    assert_eq!(op.partitions(), 0);
}

/// A soak in miniature: a stream whose keys never come back runs for a second or more
/// of wall time through OVER (three frames) and both dedups with a 30 ms state TTL.
/// The checkpointed state holds the keys of the last few rounds, not the stream's.
#[test]
fn over_and_dedup_state_stays_bounded_by_the_ttl() {
    const ROUNDS: i64 = 50;
    const KEYS: i64 = 200;
    let dedup = |order: &str| {
        format!(
            "CREATE TABLE o (a BIGINT, p BIGINT) WITH (connector = 'blackhole');
             INSERT INTO o SELECT auction, price FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY {order}) AS rn FROM bid) WHERE rn = 1;"
        )
    };
    let over = |frame: &str| {
        format!(
            "CREATE TABLE o (a BIGINT, p BIGINT, z DOUBLE, s BIGINT) WITH (connector = 'blackhole');
             INSERT INTO o SELECT auction, price, zscore(price) OVER w, SUM(price) OVER w FROM bid
             WINDOW w AS (PARTITION BY auction ORDER BY ts {frame});"
        )
    };
    for (kind, sql) in [
        ("over", over("ROWS BETWEEN 5 PRECEDING AND CURRENT ROW")),
        (
            "over",
            over("RANGE BETWEEN INTERVAL '3' SECOND PRECEDING AND CURRENT ROW"),
        ),
        (
            "over",
            over("ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"),
        ),
        ("rank", dedup("ts ASC")),
        ("rank", dedup("ts DESC")),
    ] {
        let (node, inputs) = plan(&format!("SET 'table.exec.state.ttl' = '30 ms';{sql}"), kind);
        let mut op = build(
            &node,
            &inputs,
            &NodeMetrics::default(),
            &crate::eval::RowErrors::strict("test"),
        )
        .expect("builds");
        let base = 1_767_225_600_000_i64;
        let mut out = Output::default();
        let (mut emitted, mut held) = (0, 0);
        for round in 0..ROUNDS {
            let mut json = String::new();
            for k in 0..KEYS {
                for r in 0..3 {
                    json.push_str(&format!(
                        "{{\"auction\":{},\"price\":{},\"ts\":\"2026-01-01T00:00:{round:02}.{:03}Z\"}}\n",
                        round * KEYS + k,
                        k + r,
                        r * 100
                    ));
                }
            }
            let batch = decode_all(inputs[0].clone(), json.as_bytes())
                .expect("decodes")
                .batch
                .expect("rows");
            op.process_batch(0, batch, &mut out).expect("processes");
            op.process_watermark(base + round * 1_000 + 500, &mut out)
                .expect("fires");
            emitted += out.drain().map(|b| b.num_rows()).sum::<usize>();
            let mut state = StateWriter::default();
            op.snapshot(&mut state).expect("snapshots");
            held = state
                .entries
                .iter()
                .map(|(_, b)| b.num_rows())
                .sum::<usize>();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(emitted > 0, "{sql}: no output");
        // Every key ever seen would be KEYS × ROUNDS = 10,000 entries (and three times
        // as many frame rows); the TTL keeps a handful of rounds.
        let all = (KEYS * ROUNDS) as usize;
        assert!(
            held < all / 4,
            "{sql}: {held} state rows after {all} keys with a 30 ms TTL"
        );
    }
}

#[test]
fn normalize_restores_and_retracts_whole_rows() {
    let (node, _) = plan(
        "CREATE TABLE o (a BIGINT, p BIGINT, ts TIMESTAMP(3)) WITH (connector = 'blackhole');
         INSERT INTO o SELECT * FROM bid;",
        "source",
    );
    let schema = node.schema.clone();
    let spec = runnel_sql::NormalizeSpec {
        key: vec![0],
        state_ttl_ms: None,
    };
    let steps = [
        Step::Changes(0, B1, &[RowKind::UpdateAfter, RowKind::UpdateAfter]),
        Step::Changes(0, B2, &[RowKind::UpdateAfter, RowKind::Delete]),
        Step::Changes(0, B3, &[RowKind::UpdateAfter, RowKind::Delete]),
    ];
    let inputs = vec![schema.clone()];
    let new = || super::normalize::Normalize::try_new(&spec, &schema).expect("builds");
    let expected = run(&mut new(), &inputs, &steps);
    let mut first = new();
    let mut got = run(&mut first, &inputs, &steps[..2]);
    let mut state = StateWriter::default();
    first.snapshot(&mut state).expect("snapshots");
    let mut second = new();
    second
        .restore(&StateReader {
            entries: state.entries,
        })
        .expect("restores");
    got.extend(run(&mut second, &inputs, &steps[2..]));
    let show = |b: &[RecordBatch]| {
        arrow::util::pretty::pretty_format_batches(b)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    let text = show(&expected);
    assert_eq!(show(&got), text, "normalize after restore");
    // +I 1, +I 2; -U/+U 1 (10 → 50), -D 2 with its row (30); -U/+U 1 (50 → 20); key 3
    // was never seen, so its deletion emits nothing.
    assert_eq!(text.matches("| 30 ").count(), 2, "{text}");
    assert!(!text.lines().any(|l| l.starts_with("| 3 ")), "{text}");
}

// Session input: window_start is each row's event time.
const S1: &str = r#"{"auction":1,"price":10,"ts":"2026-01-01T00:00:01Z","window_start":"2026-01-01T00:00:01Z","window_end":"2026-01-01T00:00:04Z","window_time":"2026-01-01T00:00:03.999Z"}
{"auction":2,"price":30,"ts":"2026-01-01T00:00:02Z","window_start":"2026-01-01T00:00:02Z","window_end":"2026-01-01T00:00:05Z","window_time":"2026-01-01T00:00:04.999Z"}"#;
const S2: &str = r#"{"auction":1,"price":50,"ts":"2026-01-01T00:00:03Z","window_start":"2026-01-01T00:00:03Z","window_end":"2026-01-01T00:00:06Z","window_time":"2026-01-01T00:00:05.999Z"}
{"auction":2,"price":5,"ts":"2026-01-01T00:00:04Z","window_start":"2026-01-01T00:00:04Z","window_end":"2026-01-01T00:00:07Z","window_time":"2026-01-01T00:00:06.999Z"}"#;
const S3: &str = r#"{"auction":1,"price":20,"ts":"2026-01-01T00:00:05Z","window_start":"2026-01-01T00:00:05Z","window_end":"2026-01-01T00:00:08Z","window_time":"2026-01-01T00:00:07.999Z"}
{"auction":3,"price":7,"ts":"2026-01-01T00:00:12Z","window_start":"2026-01-01T00:00:12Z","window_end":"2026-01-01T00:00:15Z","window_time":"2026-01-01T00:00:14.999Z"}"#;

#[test]
fn session_window_restores() {
    // Cut with rows not yet folded into sessions (after B2), and with open sessions
    // kept as partial state (after the first watermark, which closes nothing).
    const SESSION: &str =
        "CREATE TABLE o (a BIGINT, ws TIMESTAMP(3), we TIMESTAMP(3), n BIGINT, s BIGINT, mx BIGINT) WITH (connector = 'blackhole');
         INSERT INTO o SELECT auction, window_start, window_end, COUNT(*), SUM(price), MAX(price)
         FROM TABLE(SESSION(TABLE bid PARTITION BY auction, DESCRIPTOR(ts), INTERVAL '3' SECOND))
         GROUP BY auction, window_start, window_end;";
    let steps = [
        Step::Rows(0, S1),
        Step::Rows(0, S2),
        Step::Watermark(1_767_225_605_500),
        Step::Rows(0, S3),
        Step::Watermark(1_767_225_609_500),
        Step::Watermark(Timestamp::MAX),
    ];
    same_after_restore(SESSION, "window-aggregate", &steps, 2);
    same_after_restore(SESSION, "window-aggregate", &steps, 3);
    same_after_restore(SESSION, "window-aggregate", &steps, 5);
}

#[test]
fn mini_batch_aggregate_restores() {
    // Changes held back by the mini-batch at the cut are emitted after the restore;
    // with a DISTINCT aggregate the mini-batch's rows themselves wait in the state.
    for aggs in ["COUNT(*), MAX(price)", "COUNT(*), COUNT(DISTINCT price)"] {
        same_after_restore(
            &format!(
                "SET 'table.exec.mini-batch.enabled' = 'true';
                 SET 'table.exec.mini-batch.allow-latency' = '1 h';
                 SET 'table.exec.mini-batch.size' = '3';
                 CREATE TABLE o (a BIGINT, n BIGINT, x BIGINT) WITH (connector = 'blackhole');
                 INSERT INTO o SELECT auction, {aggs} FROM bid GROUP BY auction;"
            ),
            "aggregate",
            &[
                Step::Rows(0, B1),
                Step::Rows(0, B2),
                Step::Rows(0, B3),
                Step::Watermark(Timestamp::MAX),
            ],
            1,
        );
    }
}
