//! See `harness/sql_frontend.rs`.
#![no_main]

#[path = "../harness/sql_frontend.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
