//! Sources, one per file.

pub mod file;
pub mod nexmark;
