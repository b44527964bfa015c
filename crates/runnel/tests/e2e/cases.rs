//! Data-driven pipeline cases: `cases/<name>/pipeline.sql` plus inputs, and
//! either `expected.jsonl` (the rows the sink `output.jsonl` must hold, in any
//! order), `expected_final.jsonl` (for an updating query: the rows left after applying
//! the changelog the sink wrote, `op` by `op`, as the sink's final state) or
//! `expected_error.txt` (a line that stderr must contain); optionally
//! `expected_stderr.txt` (lines stderr of a successful run must contain) and
//! `expected_rejects.txt` (texts the dead letters in `rejects.jsonl` must contain). Each case
//! runs at parallelism 1 and 4 and must give the same rows. Adding a case
//! needs no Rust.

use std::path::Path;

use crate::harness::{TestDir, sorted_lines};

#[test]
fn pipeline_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/cases");
    let mut names: Vec<_> = std::fs::read_dir(&root)
        .expect("cases dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(!names.is_empty());
    let mut failures = Vec::new();
    for name in &names {
        let case = root.join(name);
        // Late-data cases pin parallelism: which rows are late depends on when each
        // input's watermark arrives, which only one subtask makes deterministic.
        let pinned = std::fs::read_to_string(case.join("parallelism")).ok();
        let levels: Vec<&str> = match &pinned {
            Some(p) => p.split_whitespace().collect(),
            None => vec!["1", "4"],
        };
        for parallelism in levels {
            if let Err(msg) = run_case(&case, parallelism) {
                failures.push(format!("case {name} at parallelism {parallelism}: {msg}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn run_case(case: &Path, parallelism: &str) -> Result<(), String> {
    let dir = TestDir::new();
    dir.copy_from(case);
    let run = dir.runnel(&["run", "pipeline.sql", "--parallelism", parallelism]);
    if let Ok(expected_err) = std::fs::read_to_string(case.join("expected_error.txt")) {
        for needle in expected_err.lines().filter(|l| !l.trim().is_empty()) {
            if run.success || !run.stderr.contains(needle) {
                return Err(format!(
                    "expected failure containing {needle:?}; success={} stderr:\n{}",
                    run.success, run.stderr
                ));
            }
        }
        return Ok(());
    }
    if !run.success {
        return Err(format!("runnel failed:\n{}", run.stderr));
    }
    let got = dir.read("output.jsonl");
    if let Ok(expected) = std::fs::read_to_string(case.join("expected_final.jsonl")) {
        let state = final_state(&got)?;
        if state != sorted_lines(&expected) {
            return Err(format!(
                "final state differs\n--- expected\n{expected}\n--- got\n{}\n--- changelog\n{got}",
                state.join("\n")
            ));
        }
        return Ok(());
    }
    let expected = std::fs::read_to_string(case.join("expected.jsonl"))
        .map_err(|e| format!("expected.jsonl: {e}"))?;
    if sorted_lines(&got) != sorted_lines(&expected) {
        return Err(format!(
            "output differs\n--- expected\n{expected}\n--- got\n{got}\n--- stderr\n{}",
            run.stderr
        ));
    }
    if let Ok(expected_dl) = std::fs::read_to_string(case.join("expected_stderr.txt")) {
        for needle in expected_dl.lines().filter(|l| !l.trim().is_empty()) {
            if !run.stderr.contains(needle) {
                return Err(format!("stderr lacks {needle:?}:\n{}", run.stderr));
            }
        }
    }
    if let Ok(expected) = std::fs::read_to_string(case.join("expected_rejects.txt")) {
        let rejects = dir.read("rejects.jsonl");
        for needle in expected.lines().filter(|l| !l.trim().is_empty()) {
            if !rejects.contains(needle) {
                return Err(format!("rejects.jsonl lacks {needle:?}:\n{rejects}"));
            }
        }
    }
    Ok(())
}

/// Applies a changelog (JSON lines with an `op` field) and returns the remaining rows,
/// without `op`, sorted.
fn final_state(changelog: &str) -> Result<Vec<String>, String> {
    let mut rows: Vec<String> = Vec::new();
    for line in changelog.lines().filter(|l| !l.trim().is_empty()) {
        let mut v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{line}: {e}"))?;
        // Rows of an append-only INSERT into the same table carry no op: inserts.
        let op = v
            .as_object_mut()
            .and_then(|o| o.remove("op"))
            .and_then(|o| o.as_str().map(str::to_string))
            .unwrap_or_else(|| "+I".to_string());
        let row = v.to_string();
        match op.as_str() {
            "+I" | "+U" => rows.push(row),
            "-U" | "-D" => {
                let at = rows
                    .iter()
                    .position(|r| *r == row)
                    .ok_or_else(|| format!("{op} of a row not in the result: {row}"))?;
                rows.remove(at);
            }
            other => return Err(format!("unknown op {other}")),
        }
    }
    rows.sort();
    Ok(rows)
}
