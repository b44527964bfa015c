//! Issue 21: the data-cleaning layer — validation rules with their actions, keep-first
//! deduplication, outlier / smoothing / scaling functions against an independent
//! reference, normalisation helpers, and the shipped example on faulty sensor data.

use std::path::Path;

use serde_json::Value;

use crate::harness::TestDir;

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

const RULES_INPUT: &str = r#"{"id":"a","x":1,"y":1}
{"id":"b","x":-5,"y":1}
{"id":"c","x":500,"y":1}
{"id":"d","x":2,"y":null}
{"id":null,"x":3,"y":1}
{"id":"f","x":null,"y":1}
"#;

fn rules_script(action_options: &str, sink_rule: &str) -> String {
    format!(
        "CREATE TABLE r (
           id STRING NOT NULL,
           x DOUBLE,
           y DOUBLE,
           CONSTRAINT positive CHECK (x > 0),
           CONSTRAINT small CHECK (x < 100),
           CONSTRAINT y_set CHECK (y IS NOT NULL)
         ) WITH ('connector' = 'file', 'path' = 'in.jsonl', 'format' = 'json',
                 'dead-letter.path' = 'bad.jsonl'{action_options});
         CREATE TABLE out (id STRING, x DOUBLE, y DOUBLE{sink_rule})
           WITH ('connector' = 'file', 'path' = 'out.jsonl');
         INSERT INTO out SELECT * FROM r;"
    )
}

#[test]
fn each_rule_action_does_what_it_says() {
    let t = TestDir::new();
    t.write("in.jsonl", RULES_INPUT);
    t.write(
        "p.sql",
        &rules_script(
            ", 'quality.on-violation.small' = 'drop', 'quality.on-violation.y_set' = 'warn'",
            "",
        ),
    );
    let r = t.runnel(&["run", "p.sql"]);
    r.assert_ok();
    // Kept: the good row, the one that only warns, and a NULL x (a CHECK passes on NULL).
    let ids: Vec<String> = json_lines(&t.read("out.jsonl"))
        .iter()
        .map(|v| v["id"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(sorted(ids), ["a", "d", "f"], "{}", r.stderr);
    // Dead-lettered (the default action): with the rule, its condition and the values.
    let letters = json_lines(&t.read("bad.jsonl"));
    assert_eq!(letters.len(), 2, "{letters:?}");
    let b = letters
        .iter()
        .find(|l| l["rule"] == "positive")
        .expect("a letter for rule positive");
    let reason = b["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("rule 'positive' CHECK (x > 0) is violated: x = -5"),
        "{reason}"
    );
    assert!(
        b["raw"]
            .as_str()
            .unwrap_or_default()
            .contains("\"id\":\"b\""),
        "{b}"
    );
    assert_eq!(b["table"], "r");
    let n = letters
        .iter()
        .find(|l| l["rule"] == "id_not_null")
        .expect("a letter for NOT NULL");
    assert!(
        n["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("id NOT NULL is violated: id = NULL"),
        "{n}"
    );
    // Counted per rule in the summary; the warning names the rule and a value.
    for line in [
        "rows violate positive CHECK (x > 0), dead-lettered -> bad.jsonl",
        "rows violate small CHECK (x < 100), dropped",
        "rows violate y_set CHECK (y IS NOT NULL), kept (warn)",
        "rows violate id_not_null id NOT NULL, dead-lettered",
    ] {
        assert!(
            r.stderr.contains(line),
            "missing '{line}' in:\n{}",
            r.stderr
        );
    }
    assert!(
        r.stderr.contains("rule=y_set") && r.stderr.contains("y = NULL"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_failing_rule_stops_the_run_naming_the_row() {
    let t = TestDir::new();
    t.write("in.jsonl", RULES_INPUT);
    t.write(
        "p.sql",
        &rules_script(", 'quality.on-violation' = 'fail'", ""),
    );
    t.runnel(&["run", "p.sql"])
        .assert_err("rule 'positive' CHECK (x > 0) is violated: x = -5");
}

#[test]
fn a_sink_rule_keeps_rows_out_of_the_target() {
    let t = TestDir::new();
    t.write("in.jsonl", RULES_INPUT);
    t.write(
        "p.sql",
        &rules_script(
            ", 'quality.on-violation' = 'drop', 'quality.on-violation.y_set' = 'warn'",
            ", CONSTRAINT tiny CHECK (x <= 1)",
        ),
    );
    let r = t.runnel(&["run", "p.sql"]);
    r.assert_ok();
    let ids: Vec<String> = json_lines(&t.read("out.jsonl"))
        .iter()
        .map(|v| v["id"].as_str().unwrap_or("?").to_string())
        .collect();
    // d (x = 2) passes the source's rules but not the sink's: dead-lettered there.
    assert_eq!(sorted(ids), ["a", "f"], "{}", r.stderr);
    let letters = json_lines(&t.read("runnel-data/dead-letters/out.jsonl"));
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["rule"], "tiny");
    assert!(r.stderr.contains("sink out"), "{}", r.stderr);
}

#[test]
fn bad_rules_and_options_are_planning_errors_with_their_place() {
    let t = TestDir::new();
    t.write("in.jsonl", RULES_INPUT);
    let cases = [
        (
            rules_script(", 'quality.on-violation.smal' = 'drop'", ""),
            "option 'quality.on-violation.smal' names no rule of the table; its rules: \
             id_not_null, positive, small, y_set; did you mean 'small'?",
        ),
        (
            rules_script(", 'quality.on-violation' = 'explode'", ""),
            "'explode' is not an action for a violated rule",
        ),
        (
            rules_script(", 'quality.strict' = 'yes'", ""),
            "unknown option 'quality.strict'",
        ),
        (
            rules_script("", ", CONSTRAINT sum CHECK (x + 1)"),
            "a rule is a condition (BOOLEAN), this one gives DOUBLE",
        ),
        (
            rules_script("", ", CONSTRAINT typo CHECK (xx > 1)"),
            "rule 'typo' CHECK (xx > 1)",
        ),
        (
            rules_script("", ", CONSTRAINT agg CHECK (COUNT(x) > 1)"),
            "no aggregates",
        ),
    ];
    for (sql, want) in cases {
        t.write("p.sql", &sql);
        let r = t.runnel(&["check", "p.sql"]);
        r.assert_err(want);
        assert!(r.stderr.contains("line "), "{}", r.stderr);
    }
    // The script-wide default is checked too.
    t.write(
        "p.sql",
        &format!(
            "SET 'quality.on-violation' = 'maybe';\n{}",
            rules_script("", "")
        ),
    );
    t.runnel(&["check", "p.sql"])
        .assert_err("quality.on-violation");
}

/// Keep-first deduplication on processing time is append-only: it feeds a sink that
/// takes no changelog, and each key's first row is the one kept.
#[test]
fn keep_first_dedup_is_append_only() {
    let t = TestDir::new();
    let mut input = String::new();
    for i in 0..300 {
        input.push_str(&format!("{{\"id\":\"k{}\",\"v\":{i}}}\n", i % 40));
    }
    t.write("in.jsonl", &input);
    t.write(
        "p.sql",
        "CREATE TABLE s (id STRING, v INT, pt AS PROCTIME())
           WITH ('connector' = 'file', 'path' = 'in.jsonl', 'format' = 'json');
         CREATE TABLE out (id STRING, v INT)
           WITH ('connector' = 'file', 'path' = 'out.csv', 'format' = 'csv');
         INSERT INTO out SELECT id, v FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY pt ASC) AS rn FROM s
         ) WHERE rn = 1;",
    );
    let r = t.runnel(&["run", "p.sql", "-p", "1"]);
    r.assert_ok();
    let got = sorted(
        t.read("out.csv")
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("id,"))
            .map(String::from)
            .collect(),
    );
    let mut want: Vec<String> = (0..40).map(|i| format!("k{i},{i}")).collect();
    want.sort();
    assert_eq!(got, want, "{}", r.stderr);
}

/// A reading series with spikes at known places.
struct Series {
    keys: Vec<&'static str>,
    values: Vec<Vec<f64>>,
    spikes: Vec<Vec<usize>>,
}

fn series() -> Series {
    let keys = vec!["a", "b", "c"];
    let mut seed: u64 = 42;
    let mut noise = move || {
        // A small LCG: deterministic, no dependency.
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.6
    };
    let mut values = Vec::new();
    let mut spikes = Vec::new();
    for (k, _) in keys.iter().enumerate() {
        let mut xs = Vec::new();
        let at: Vec<usize> = (0..12).map(|j| 30 + j * 30 + k * 3).collect();
        for i in 0..400 {
            let mut x = 10.0 + k as f64 + 0.5 * (i as f64 / 60.0).sin() + noise();
            if at.contains(&i) {
                x += if i % 2 == 0 { 6.0 } else { -7.5 };
            }
            xs.push((x * 1000.0).round() / 1000.0);
        }
        values.push(xs);
        spikes.push(at);
    }
    Series {
        keys,
        values,
        spikes,
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The reference: each statistic recomputed from scratch over the last 21 values.
fn reference(w: &[f64]) -> Value {
    let x = *w.last().expect("a value");
    let n = w.len() as f64;
    let mean = w.iter().sum::<f64>() / n;
    let sd = (w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let mut s = w.to_vec();
    s.sort_by(f64::total_cmp);
    let med = quantile(&s, 0.5);
    let mut dev: Vec<f64> = s.iter().map(|v| (v - med).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let mad = quantile(&dev, 0.5);
    let mut ewma = w[0];
    for v in &w[1..] {
        ewma = 0.3 * v + 0.7 * ewma;
    }
    let (lo, hi) = (s[0], s[s.len() - 1]);
    serde_json::json!({
        "z": if w.len() < 2 { Value::Null } else { ((x - mean) / sd).into() },
        "rz": 0.6745 * (x - med) / mad,
        "mad": mad,
        "med": med,
        "e": ewma,
        "mm": (x - lo) / (hi - lo),
    })
}

#[test]
fn outlier_functions_match_a_reference_and_find_the_spikes() {
    let t = TestDir::new();
    let data = series();
    let mut input = String::new();
    for (k, key) in data.keys.iter().enumerate() {
        for (i, x) in data.values[k].iter().enumerate() {
            input.push_str(&format!(
                "{{\"k\":\"{key}\",\"ts\":\"2026-12-06 10:{:02}:{:02}\",\"x\":{x}}}\n",
                i / 60,
                i % 60
            ));
        }
    }
    t.write("s.jsonl", &input);
    let table = "CREATE TABLE s (k STRING, ts TIMESTAMP(3), x DOUBLE, WATERMARK FOR ts AS ts)
                   WITH ('connector' = 'file', 'path' = 's.jsonl', 'format' = 'json');";
    t.write(
        "q.sql",
        &format!(
            "{table}
             SELECT k, ts, x,
               zscore(x) OVER w AS z, robust_zscore(x) OVER w AS rz, mad(x) OVER w AS mad,
               moving_median(x) OVER w AS med, ewma(x, 0.3) OVER w AS e,
               minmax_scale(x) OVER w AS mm, MEDIAN(x) OVER w AS dmed,
               is_outlier(x, 'mad', 5) OVER w AS o_mad,
               is_outlier(x, 'zscore', 3) OVER w AS o_z,
               is_outlier(x, 'iqr', 3) OVER w AS o_iqr
             FROM s
             WINDOW w AS (PARTITION BY k ORDER BY ts ROWS BETWEEN 20 PRECEDING AND CURRENT ROW)
             ORDER BY k, ts"
        ),
    );
    let r = t.runnel(&["query", "-f", "q.sql", "--format", "json"]);
    r.assert_ok();
    let rows = json_lines(&r.stdout);
    assert_eq!(rows.len(), 1200, "{}", r.stderr);
    let close = |a: &Value, b: &Value, what: &str, row: &Value| match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) => assert!(
            (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            "{what}: runnel {a}, reference {b} in {row}"
        ),
        _ => assert_eq!(a.is_null(), b.is_null(), "{what}: {a} vs {b} in {row}"),
    };
    for method in ["o_mad", "o_z", "o_iqr"] {
        let (mut tp, mut fp, mut spikes) = (0, 0, 0);
        for (k, key) in data.keys.iter().enumerate() {
            let mine: Vec<&Value> = rows.iter().filter(|r| r["k"] == *key).collect();
            assert_eq!(mine.len(), 400);
            for (i, row) in mine.iter().enumerate() {
                let w = &data.values[k][i.saturating_sub(20)..=i];
                if method == "o_mad" && i >= 1 {
                    let want = reference(w);
                    for f in ["z", "rz", "mad", "med", "e", "mm"] {
                        close(&row[f], &want[f], f, row);
                    }
                    close(&row["dmed"], &want["med"], "MEDIAN", row);
                }
                let spike = data.spikes[k].contains(&i);
                spikes += usize::from(spike);
                if row[method] == true {
                    if spike {
                        tp += 1;
                    } else {
                        fp += 1;
                    }
                }
            }
        }
        let precision = tp as f64 / (tp + fp).max(1) as f64;
        let recall = tp as f64 / spikes as f64;
        eprintln!(
            "is_outlier {method}: precision {precision:.3}, recall {recall:.3} ({tp} of {spikes} spikes, {fp} false alarms)"
        );
        assert!(
            precision >= 0.9 && recall >= 0.9,
            "{method}: {precision} / {recall}"
        );
    }
    // A function that needs the median refuses an unbounded frame, saying what to do.
    t.write(
        "u.sql",
        &format!(
            "{table} SELECT moving_median(x) OVER (PARTITION BY k ORDER BY ts \
             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) FROM s"
        ),
    );
    t.runnel(&["query", "-f", "u.sql"])
        .assert_err("bound the frame: ROWS BETWEEN n PRECEDING AND CURRENT ROW");
    // Running statistics over an unbounded frame: EWMA and min-max scaling.
    t.write(
        "e.sql",
        &format!(
            "{table} SELECT k, ts, ewma(x, 0.3) OVER u AS e, minmax_scale(x) OVER u AS mm
             FROM s WHERE k = 'a'
             WINDOW u AS (PARTITION BY k ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
             ORDER BY ts"
        ),
    );
    let r = t.runnel(&["query", "-f", "e.sql", "--format", "json"]);
    r.assert_ok();
    let rows = json_lines(&r.stdout);
    let xs = &data.values[0];
    let (mut e, mut lo, mut hi) = (xs[0], xs[0], xs[0]);
    for (i, row) in rows.iter().enumerate() {
        let x = xs[i];
        if i > 0 {
            e = 0.3 * x + 0.7 * e;
        }
        lo = lo.min(x);
        hi = hi.max(x);
        close(&row["e"], &e.into(), "ewma unbounded", row);
        let mm = if hi > lo { (x - lo) / (hi - lo) } else { 0.0 };
        close(&row["mm"], &mm.into(), "minmax unbounded", row);
    }
}

#[test]
fn normalisation_helpers() {
    let t = TestDir::new();
    t.write("one.jsonl", "{\"s\":\"2026-03-01T14:30:00+02:00\"}\n");
    let one = "CREATE TABLE one (s STRING)
                 WITH ('connector' = 'file', 'path' = 'one.jsonl', 'format' = 'json');";
    t.write(
        "q.sql",
        &format!(
            "{one} SELECT parse_timestamp(s) AS a,
                parse_timestamp('1772368200000') AS b,
                parse_timestamp('01/03/2026 12:30:00') AS c,
                parse_timestamp('1.3.2026 12:30', 'd.M.yyyy HH:mm') AS d,
                parse_timestamp('not a time') AS e,
                normalize_text('  Living   ROOM ') AS f,
                convert_unit(212, 'F', 'C') AS g,
                ROUND(convert_unit(1, 'bar', 'psi'), 4) AS h FROM one"
        ),
    );
    let r = t.runnel(&["query", "-f", "q.sql", "--format", "json"]);
    r.assert_ok();
    let row = &json_lines(&r.stdout)[0];
    for k in ["a", "b", "c", "d"] {
        assert_eq!(row[k], "2026-03-01T12:30:00.000Z", "{k}: {row}");
    }
    assert!(row["e"].is_null(), "{row}");
    assert_eq!(row["f"], "living room");
    assert_eq!(row["g"], 100.0);
    assert_eq!(row["h"], 14.5038);
    t.write(
        "bad.sql",
        &format!("{one} SELECT convert_unit(1, 'bar', 'kg') AS x FROM one"),
    );
    let r = t.runnel(&["query", "-f", "bad.sql"]);
    assert!(
        r.stderr.contains("'bar' is a pressure and 'kg' a mass"),
        "{}",
        r.stderr
    );
}

/// The shipped example finds the faults `make_sensor_faults.py` injected.
#[test]
fn sensors_quality_example_cleans_the_shipped_data() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let t = TestDir::new();
    let sql =
        std::fs::read_to_string(root.join("examples/sensors_quality.sql")).expect("the example");
    let sql = sql.replace(
        "examples/data/",
        &format!("{}/examples/data/", root.display()),
    );
    t.write("sensors_quality.sql", &sql);
    let r = t.runnel(&["run", "sensors_quality.sql"]);
    r.assert_ok();
    let quarantine = json_lines(&t.read("examples-out/sensors/quarantine.jsonl"));
    let count = |rule: &str| quarantine.iter().filter(|l| l["rule"] == rule).count();
    assert_eq!(count("temp_range"), 10, "{quarantine:?}");
    assert_eq!(count("sensor_not_null"), 5);
    assert_eq!(count("readable_time"), 4);
    assert_eq!(
        quarantine
            .iter()
            .filter(|l| l["reason"].as_str().unwrap_or("").contains("JSON"))
            .count(),
        3
    );
    assert!(r.stderr.contains("humidity_range"), "{}", r.stderr);
    // No reading twice, every sensor id in one spelling, temperatures in Celsius.
    let clean = json_lines(&t.read("examples-out/sensors/clean.jsonl"));
    let mut seen = std::collections::HashSet::new();
    for row in &clean {
        let key = format!("{}|{}", row["sensor"], row["ts"]);
        assert!(seen.insert(key.clone()), "{key} twice");
        let s = row["sensor"].as_str().unwrap_or_default();
        assert!(s.starts_with("s-") && s.len() == 3, "{row}");
        let c = row["celsius"].as_f64().unwrap_or(f64::NAN);
        assert!((15.0..40.0).contains(&c), "{row}");
    }
    assert!(clean.len() > 2000, "{}", clean.len());
    // Most of s-3's eight spikes are flagged, and few other readings.
    let outliers = json_lines(&t.read("examples-out/sensors/outliers.jsonl"));
    let s3 = outliers.iter().filter(|o| o["sensor"] == "s-3").count();
    assert!(s3 >= 7, "{outliers:?}");
    assert!(outliers.len() <= s3 + 6, "{outliers:?}");
    // The stuck sensor has windows without spread, the drifting one a trend.
    let stats = json_lines(&t.read("examples-out/sensors/stats.jsonl"));
    let stuck: Vec<&Value> = stats.iter().filter(|s| s["stuck"] == true).collect();
    assert!(
        !stuck.is_empty() && stuck.iter().all(|s| s["sensor"] == "s-4"),
        "{stats:?}"
    );
    let drift: Vec<f64> = stats
        .iter()
        .filter(|s| s["sensor"] == "s-5")
        .filter_map(|s| s["trend_per_hour"].as_f64())
        .collect();
    assert!(drift.iter().filter(|d| **d > 4.0).count() >= 3, "{drift:?}");
}
