//! Types shared by every runnel crate, and nothing else.
//!
//! What may live here: the [`Message`] that travels on every dataflow edge,
//! event-time helpers ([`time`]), the `WITH (…)` option map ([`options`]), the
//! connector description the planner hands to the connector registry
//! ([`TableSpec`]), SQL type mapping ([`types`]), run counters ([`metrics`]) and the PEM/trust helpers of
//! every TLS client and server ([`tls`]).
//! Anything owned by one layer belongs in that layer's crate.
#![warn(missing_docs)]

pub mod changelog;
pub mod fault;
pub mod message;
pub mod metrics;
pub mod options;
pub mod s3;
pub mod table;
pub mod time;
pub mod tls;
pub mod types;

pub use changelog::RowKind;
pub use message::{Barrier, Message, Watermark};
pub use options::{OptionError, Options, Position};
pub use table::{MetadataColumn, TableSpec, WatermarkSpec};
pub use time::Timestamp;
