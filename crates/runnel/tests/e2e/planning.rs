//! Mistakes caught before anything runs (issue 14): unknown and misspelled settings and
//! connector options with line and column, `runnel check`, and the connector and
//! settings tables the README shows.

use crate::harness::TestDir;

const SINK: &str = "CREATE TABLE out (n BIGINT) WITH (connector = 'blackhole');\n";

#[test]
fn issue_14_misspelled_setting_names_line_column_and_the_right_key() {
    let dir = TestDir::new();
    dir.write("in.jsonl", "{\"n\": 1}\n");
    dir.write(
        "p.sql",
        &format!(
            "CREATE TABLE src (n BIGINT) WITH (connector = 'file', path = 'in.jsonl');\n{SINK}\
             SET 'execution.checkpointing.intervall' = '1 s';\nINSERT INTO out SELECT n FROM src;\n"
        ),
    );
    dir.runnel(&["run", "p.sql"]).assert_err(
        "p.sql: line 3, column 5: unknown setting 'execution.checkpointing.intervall'; did you \
         mean 'execution.checkpointing.interval'?",
    );
    dir.write(
        "p.sql",
        &format!(
            "SET 'parallelism.default' = 'two';\n\
             CREATE TABLE src (n BIGINT) WITH (connector = 'file', path = 'in.jsonl');\n{SINK}\
             INSERT INTO out SELECT n FROM src;\n"
        ),
    );
    dir.runnel(&["run", "p.sql"]).assert_err(
        "line 1, column 29: SET 'parallelism.default' = 'two': expected a whole number >= 1",
    );
}

#[test]
fn issue_14_misspelled_connector_option_is_a_planning_error_at_its_key() {
    let dir = TestDir::new();
    dir.write(
        "p.sql",
        &format!(
            "CREATE TABLE src (n BIGINT)\nWITH (connector = 'file',\n      pth = 'in.jsonl');\n{SINK}\
             INSERT INTO out SELECT n FROM src;\n"
        ),
    );
    // Planning fails before the (missing) input is even looked at.
    dir.runnel(&["run", "p.sql"]).assert_err(
        "line 3, column 7: CREATE TABLE src: unknown option 'pth' for connector 'file'; did you \
         mean 'path'?",
    );
    // A bad value names the choices; an unknown connector names the known ones.
    dir.write(
        "p.sql",
        &format!(
            "CREATE TABLE src (n BIGINT) WITH (connector = 'file', path = 'x', format = 'jsn');\n{SINK}\
             INSERT INTO out SELECT n FROM src;\n"
        ),
    );
    dir.runnel(&["run", "p.sql"])
        .assert_err("line 1, column 67: CREATE TABLE src: option 'format' = 'jsn' of connector 'file': expected one of json, csv; did you mean 'json'?");
    dir.write(
        "p.sql",
        &format!(
            "CREATE TABLE src (n BIGINT) WITH (connector = 'fil', path = 'x');\n{SINK}\
             INSERT INTO out SELECT n FROM src;\n"
        ),
    );
    dir.runnel(&["run", "p.sql"])
        .assert_err("line 1, column 35: CREATE TABLE src: unknown connector 'fil'");
    // Even a table the script never uses is checked.
    dir.write(
        "p.sql",
        &format!(
            "CREATE TABLE src (auction BIGINT) WITH (connector = 'nexmark', stream = 'bid', events = '10');\n\
             CREATE TABLE unused (n BIGINT) WITH (connector = 'print', colour = 'red');\n{SINK}\
             INSERT INTO out SELECT auction FROM src;\n"
        ),
    );
    let run = dir.runnel(&["run", "p.sql"]);
    run.assert_err(
        "line 2, column 59: CREATE TABLE unused: unknown option 'colour' for connector 'print'",
    );
}

#[test]
fn issue_14_check_runs_health_checks_without_running() {
    let dir = TestDir::new();
    dir.write(
        "p.sql",
        "CREATE TABLE src (n BIGINT) WITH (connector = 'file', path = 'missing.jsonl');
         CREATE TABLE out (n BIGINT) WITH (connector = 'file', path = 'out/o.jsonl');
         INSERT INTO out SELECT n FROM src;",
    );
    let run = dir.runnel(&["check", "p.sql"]);
    assert!(!run.success, "check must fail: {}", run.stdout);
    assert!(
        run.stdout.contains("FAIL  table 'src' (file source)")
            && run.stdout.contains("missing.jsonl"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("ok    table 'out' (file sink)"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("1 check(s) failed"), "{}", run.stderr);
    assert!(
        !dir.path().join("out").exists(),
        "check must not write output"
    );
    assert!(
        !dir.path().join("runnel-data").exists(),
        "check must not create the data dir"
    );

    dir.write("missing.jsonl", "{\"n\": 1}\n");
    let run = dir.runnel(&["check", "p.sql"]);
    run.assert_ok();
    assert!(run.stdout.contains("all checks passed"), "{}", run.stdout);
    assert!(
        run.stdout.contains("ok    checkpoints: off"),
        "{}",
        run.stdout
    );

    // `run` refuses the same way before any data flows.
    std::fs::remove_file(dir.path().join("missing.jsonl")).expect("rm");
    dir.runnel(&["run", "p.sql"]).assert_err("missing.jsonl");

    // A bounded read of a log topic that does not exist.
    dir.write(
        "q.sql",
        "CREATE TABLE src (n BIGINT) WITH (connector = 'log', topic = 'nope', bounded = 'true');
         CREATE TABLE out (n BIGINT) WITH (connector = 'blackhole');
         INSERT INTO out SELECT n FROM src;",
    );
    let run = dir.runnel(&["check", "q.sql", "--data-dir", "d"]);
    assert!(!run.success);
    assert!(
        run.stdout.contains("topic 'nope' does not exist"),
        "{}",
        run.stdout
    );
}

/// The README's tables are what `runnel connectors --markdown` and `runnel settings
/// --markdown` print, so the documentation cannot drift from the descriptors.
#[test]
fn readme_tables_match_the_descriptors() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let dir = TestDir::new();
    for (cmd, marker) in [("connectors", "connectors"), ("settings", "settings")] {
        let run = dir.runnel(&[cmd, "--markdown"]);
        run.assert_ok();
        let begin = format!("<!-- {marker}:begin -->\n");
        let end = format!("<!-- {marker}:end -->");
        let section = readme
            .split_once(&begin)
            .and_then(|(_, rest)| rest.split_once(&end))
            .map(|(s, _)| s)
            .unwrap_or_else(|| panic!("README.md has no {begin}…{end} section"));
        assert_eq!(
            section, run.stdout,
            "README's {marker} table differs from `runnel {cmd} --markdown`; paste its output"
        );
    }
}

/// One dead-letter service: `SET 'dead-letter.path'` gathers every table's rejects in one
/// file, in one shape; a table's own option still wins; the summary counts each table.
#[test]
fn issue_14_dead_letters_have_one_shape_and_one_destination() {
    let dir = TestDir::new();
    dir.write("a.jsonl", "{\"n\": 1}\nnot json\n");
    dir.write("b.jsonl", "{\"n\": \"x\"}\n{\"n\": 2}\n");
    dir.write("c.jsonl", "{oops\n");
    dir.write(
        "p.sql",
        "SET 'dead-letter.path' = 'dl/all.jsonl';
         CREATE TABLE a (n BIGINT) WITH (connector = 'file', path = 'a.jsonl');
         CREATE TABLE b (n BIGINT) WITH (connector = 'file', path = 'b.jsonl');
         CREATE TABLE c (n BIGINT) WITH (connector = 'file', path = 'c.jsonl', 'dead-letter.path' = 'c.bad');
         CREATE TABLE out (n BIGINT) WITH (connector = 'file', path = 'out.jsonl');
         INSERT INTO out SELECT n FROM a UNION ALL SELECT n FROM b UNION ALL SELECT n FROM c;",
    );
    let run = dir.runnel(&["run", "p.sql", "-p", "1"]);
    run.assert_ok();
    let letters: Vec<serde_json::Value> = dir
        .read("dl/all.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let mut tables: Vec<&str> = letters
        .iter()
        .map(|l| l["table"].as_str().unwrap())
        .collect();
    tables.sort_unstable();
    assert_eq!(tables, ["a", "b"], "{letters:?}");
    for l in &letters {
        for field in ["time", "table", "location", "reason", "raw"] {
            assert!(l.get(field).is_some(), "{field} missing in {l}");
        }
    }
    let a = letters.iter().find(|l| l["table"] == "a").unwrap();
    assert_eq!(a["location"], "a.jsonl:2");
    assert_eq!(a["raw"], "not json");
    assert_eq!(dir.read("c.bad").lines().count(), 1);
    assert!(
        run.stderr.contains("1 dead-lettered -> dl/all.jsonl"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("1 dead-lettered -> c.bad"),
        "{}",
        run.stderr
    );
}
