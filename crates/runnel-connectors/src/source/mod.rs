//! Sources, one per file.

pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod log;
pub mod nexmark;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod records;
