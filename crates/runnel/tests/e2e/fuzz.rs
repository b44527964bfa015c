//! The fuzz targets' regression run: each target (see `fuzz/`) is built with libFuzzer's
//! coverage instrumentation and runs for a short, fixed time over its checked-in corpus,
//! so an input that once crashed it (kept in the corpus) is tried again on every run.
//! Longer runs: `fuzz/run.sh TARGET 600`.

use std::path::Path;
use std::process::Command;

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
