//! Sinks, one per file.

pub mod blackhole;
pub mod collect;
pub mod dashboard;
#[cfg(feature = "delta")]
pub mod delta;
pub mod file;
pub mod file_parts;
pub mod filesystem;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod log;
pub mod log_txn;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod print;
#[cfg(feature = "kafka")]
pub mod upsert_kafka;
