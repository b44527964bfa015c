//! `Topic`: a named set of partitions plus its durable configuration (`topic.json`).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};
use crate::partition::Partition;

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Smallest allowed segment size (small segments are for tests).
pub const MIN_SEGMENT_BYTES: u64 = 1 << 10;
/// Largest allowed segment size (positions in the index are 32-bit).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// When appends are made durable.
///
/// - `Always` (default): `append` returns only after the batch is fdatasync'ed; concurrent
///   appenders share fsyncs (group commit). Nothing acknowledged is lost on a process
///   crash, an OS crash or a power failure.
/// - `Interval(d)`: `append` returns once the batch is written to the OS page cache and
///   a background thread fsyncs every `d`. Records acknowledged in the last `d` (plus the
///   duration of one fsync) **may be lost on power failure or OS crash**, but **not on a
///   process crash** (the kernel still holds them). If a background fsync fails, appends
///   are refused with `LogError::Unavailable` until a later fsync succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FsyncPolicy {
    /// fsync before every acknowledgement (shared by concurrent appenders).
    #[default]
    Always,
    /// Acknowledge after write; fsync in the background every interval.
    Interval(Duration),
}

impl FromStr for FsyncPolicy {
    type Err = LogError;

    /// Parses `always` or `interval:<n>ms` / `interval:<n>s`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |message: String| LogError::InvalidConfig {
            field: "fsync",
            message,
        };
        let s = s.trim();
        if s.eq_ignore_ascii_case("always") {
            return Ok(FsyncPolicy::Always);
        }
        let Some(spec) = s.strip_prefix("interval:") else {
            return Err(bad(format!(
                "'{s}' is not a fsync policy; use 'always' or 'interval:100ms'"
            )));
        };
        let (num, unit_ms) = if let Some(n) = spec.strip_suffix("ms") {
            (n, 1)
        } else if let Some(n) = spec.strip_suffix('s') {
            (n, 1000)
        } else {
            return Err(bad(format!(
                "interval '{spec}' needs a unit: e.g. 'interval:100ms' or 'interval:1s'"
            )));
        };
        let n: u64 = num
            .trim()
            .parse()
            .map_err(|_| bad(format!("'{num}' is not a whole number in '{s}'")))?;
        let ms = n.saturating_mul(unit_ms);
        if ms == 0 || ms > 3_600_000 {
            return Err(bad(format!(
                "interval {ms} ms is out of range (1 ms to 1 h)"
            )));
        }
        Ok(FsyncPolicy::Interval(Duration::from_millis(ms)))
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => write!(f, "always"),
            FsyncPolicy::Interval(d) => write!(f, "interval:{}ms", d.as_millis()),
        }
    }
}

impl TryFrom<String> for FsyncPolicy {
    type Error = LogError;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<FsyncPolicy> for String {
    fn from(p: FsyncPolicy) -> String {
        p.to_string()
    }
}

/// Durable per-topic settings, stored as `topics/<topic>/topic.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Number of partitions (fixed at creation).
    pub partitions: u32,
    /// Roll to a new segment once the active one would exceed this many bytes.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// Delete sealed segments whose newest record is older than this (ms).
    #[serde(default)]
    pub retention_ms: Option<u64>,
    /// Delete the oldest sealed segments while the partition stays at least this big.
    #[serde(default)]
    pub retention_bytes: Option<u64>,
    /// When appends are fsynced.
    #[serde(default)]
    pub fsync: FsyncPolicy,
}

fn default_segment_bytes() -> u64 {
    DEFAULT_SEGMENT_BYTES
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            retention_ms: None,
            retention_bytes: None,
            fsync: FsyncPolicy::Always,
        }
    }
}

impl TopicConfig {
    /// A default config with `partitions` partitions.
    pub fn with_partitions(partitions: u32) -> Self {
        TopicConfig {
            partitions,
            ..TopicConfig::default()
        }
    }

    /// Checks ranges; a config that validates can be created.
    pub fn validate(&self) -> Result<()> {
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return Err(LogError::InvalidConfig {
                field: "partitions",
                message: format!(
                    "{} is out of range (1 to {MAX_PARTITIONS})",
                    self.partitions
                ),
            });
        }
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(LogError::InvalidConfig {
                field: "segment_bytes",
                message: format!(
                    "{} is out of range ({MIN_SEGMENT_BYTES} to {MAX_SEGMENT_BYTES})",
                    self.segment_bytes
                ),
            });
        }
        if let FsyncPolicy::Interval(d) = self.fsync
            && (d.is_zero() || d > Duration::from_secs(3600))
        {
            return Err(LogError::InvalidConfig {
                field: "fsync",
                message: format!("interval {d:?} is out of range (1 ms to 1 h)"),
            });
        }
        Ok(())
    }
}

/// A topic: its name, config and partitions.
#[derive(Debug)]
pub struct Topic {
    name: String,
    config: TopicConfig,
    partitions: Vec<Partition>,
    round_robin: AtomicU32,
}

impl Topic {
    /// Assembles an opened topic.
    pub(crate) fn new(name: String, config: TopicConfig, partitions: Vec<Partition>) -> Topic {
        Topic {
            name,
            config,
            partitions,
            round_robin: AtomicU32::new(0),
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic's configuration.
    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    /// Partition `p`, if it exists.
    pub fn partition(&self, p: u32) -> Option<&Partition> {
        self.partitions.get(p as usize)
    }

    /// All partitions, indexed by partition number.
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// The partition a record with this key goes to: Kafka's default partitioner
    /// (`murmur2(key) & 0x7fffffff % P`) so keys land alike in Kafka; no key → round robin.
    pub fn partition_for(&self, key: Option<&[u8]>) -> u32 {
        let n = self.partition_count().max(1);
        match key {
            Some(k) => (murmur2(k) & 0x7fff_ffff) % n,
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % n,
        }
    }
}

/// Kafka's murmur2 (seed 0x9747b28c), as in `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_vectors() {
        // From Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (input, want) in cases {
            assert_eq!(murmur2(input) as i32, want, "{input:?}");
        }
    }

    #[test]
    fn fsync_policy_parses_and_prints() {
        assert_eq!(
            "always".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Always
        );
        let p: FsyncPolicy = "interval:100ms".parse().unwrap();
        assert_eq!(p, FsyncPolicy::Interval(Duration::from_millis(100)));
        assert_eq!(p.to_string(), "interval:100ms");
        assert_eq!(
            "interval:2s".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Interval(Duration::from_secs(2))
        );
        for bad in [
            "sometimes",
            "interval:",
            "interval:10",
            "interval:0ms",
            "interval:xms",
        ] {
            assert!(bad.parse::<FsyncPolicy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn config_json_round_trips_with_defaults() {
        let c: TopicConfig =
            serde_json::from_str(r#"{"partitions": 3, "fsync": "interval:50ms"}"#).unwrap();
        assert_eq!(c.segment_bytes, DEFAULT_SEGMENT_BYTES);
        assert_eq!(c.fsync, FsyncPolicy::Interval(Duration::from_millis(50)));
        let back: TopicConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(serde_json::from_str::<TopicConfig>(r#"{"partitions": 1, "bogus": 1}"#).is_err());
        assert!(TopicConfig::with_partitions(0).validate().is_err());
    }
}
