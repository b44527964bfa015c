//! Sinks, one per file.

pub mod blackhole;
pub mod file;
pub mod log;
pub mod print;
