//! Formats: bytes ↔ Arrow RecordBatch. Rejected records become dead letters.

pub mod csv;
pub mod json;
