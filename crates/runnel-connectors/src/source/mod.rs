//! Sources, one per file.

pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod log;
pub mod nexmark;
pub mod records;
