//! The SQL front end: any text given to `runnel run` / `runnel check` is parsed, typed and
//! planned into a dataflow (or refused with an error); never a panic, a stack overflow or a
//! hang. The input is a whole script; `fuzz/sql_frontend.dict` gives the fuzzer keywords.
//!
//! Shared by the fuzz target `sql_frontend` and the workspace test that replays its corpus
//! (`crates/runnel/tests/e2e/fuzz.rs`), so it uses no crate but those two have.

use runnel_runtime::{PrepareOptions, RuntimeError};

/// Plans one input; panics on what must not happen.
pub fn run(data: &[u8]) {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let options = PrepareOptions::new("fuzz.sql", "/nonexistent/runnel-fuzz");
    match runnel_runtime::prepare(sql, &options) {
        Ok(prepared) => {
            let _ = prepared.explain();
        }
        Err(RuntimeError::Internal(m)) => {
            assert!(!m.contains("panicked"), "{m}");
        }
        Err(_) => {}
    }
}
