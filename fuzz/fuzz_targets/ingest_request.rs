//! See `harness/ingest_request.rs`.
#![no_main]

#[path = "../harness/ingest_request.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
