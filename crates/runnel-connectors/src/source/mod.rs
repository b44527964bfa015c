//! Sources, one per file.

pub mod file;
pub mod log;
pub mod nexmark;
