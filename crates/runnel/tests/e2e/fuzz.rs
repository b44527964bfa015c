//! The fuzz targets' regression run: each target (see `fuzz/`) is built with libFuzzer's
//! coverage instrumentation and runs for a short, fixed time over its checked-in corpus,
//! so an input that once crashed it (kept in the corpus) is tried again on every run.
//! Longer runs: `fuzz/run.sh TARGET 600`.
//!
//! The targets over the SQL front end and the HTTP API link DataFusion and the server, whose
//! instrumented build would double CI's time: here their corpora are replayed through the
//! same harness code, built as part of this test.

use std::path::Path;
use std::process::Command;

#[path = "../../../../fuzz/harness/sql_frontend.rs"]
mod sql_frontend;

#[path = "../../../../fuzz/harness/ingest_request.rs"]
mod ingest_request;

/// Runs `run` on every input in `fuzz/corpus/<target>`; names each input that panics.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| e.expect("corpus entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} is empty", dir.display());
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("corpus input");
            std::panic::catch_unwind(|| run(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: inputs that panic: {failed:?}");
}

#[test]
fn sql_frontend_corpus_plans_or_is_refused() {
    replay("sql_frontend", sql_frontend::run);
}

#[test]
fn ingest_request_corpus_is_answered_without_a_500() {
    replay("ingest_request", ingest_request::run);
}

#[test]
fn fuzz_targets_survive_their_corpus() {
    let _heavy = crate::harness::heavy();
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut failures = Vec::new();
    for target in ["log_recovery", "json_decoder", "csv_decoder"] {
        let out = Command::new(fuzz.join("run.sh"))
            .args([target, "10", "-seed=1"])
            .output()
            .expect("running fuzz/run.sh");
        if !out.status.success() {
            failures.push(format!(
                "{target}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
