//! Sources, one per file.

#[cfg(feature = "camera")]
pub mod camera;
pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod log;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
pub mod nexmark;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod records;
