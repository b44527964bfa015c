//! The CSV decoder of `file` sources (header line first): any bytes either decode or
//! are rejected row by row; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = runnel_connectors::format::csv::decode_all(runnel_fuzz::every_type(), data);
});
