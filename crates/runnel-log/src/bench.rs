//! Benchmarks behind `runnel bench log`: concurrent producers (exercising group commit)
//! and a sequential consumer, reporting throughput and latency percentiles.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{LogError, Result};
use crate::fsutil::now_ms;
use crate::record::Record;
use crate::topic::{FsyncPolicy, TopicConfig};
use crate::{Log, LogOptions};

/// When a benchmark stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchLimit {
    /// Run for this long.
    Duration(Duration),
    /// Append (or read) this many records in total.
    Records(u64),
}

/// Results of one benchmark run.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// Records appended or read.
    pub records: u64,
    /// Bytes of record values appended or read.
    pub bytes: u64,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Records per second.
    pub records_per_s: f64,
    /// MiB of values per second.
    pub mb_per_s: f64,
    /// Median latency of one append (or one read call), µs.
    pub p50_us: u64,
    /// 99th-percentile latency of one append (or one read call), µs.
    pub p99_us: u64,
    /// fsyncs performed (appends / fsyncs = group-commit batching factor).
    pub fsyncs: u64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records in {:.2?}: {:.0} records/s, {:.1} MiB/s, p50 {} µs, p99 {} µs, {} fsyncs",
            self.records,
            self.elapsed,
            self.records_per_s,
            self.mb_per_s,
            self.p50_us,
            self.p99_us,
            self.fsyncs
        )
    }
}

/// Appends `record_size`-byte records from `producers` threads (one record per append,
/// `FsyncPolicy::Always`) to a fresh one-partition topic in the log at `dir`.
pub fn run_append_bench(
    dir: &Path,
    record_size: usize,
    producers: usize,
    limit: BenchLimit,
) -> Result<BenchReport> {
    let log = Log::open(dir, LogOptions::default())?;
    let topic = log.create_topic(
        &format!("bench-append-{}", now_ms()),
        TopicConfig {
            fsync: FsyncPolicy::Always,
            ..TopicConfig::with_partitions(1)
        },
    )?;
    let claimed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let results: Vec<Result<Vec<u32>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..producers.max(1))
            .map(|_| {
                let topic = topic.clone();
                let claimed = claimed.clone();
                s.spawn(move || -> Result<Vec<u32>> {
                    let partition = topic.partition(0).ok_or_else(|| {
                        LogError::Internal("bench topic has no partition 0".into())
                    })?;
                    let value = vec![b'x'; record_size];
                    let mut latencies = Vec::new();
                    loop {
                        match limit {
                            BenchLimit::Duration(d) if start.elapsed() >= d => break,
                            BenchLimit::Records(n)
                                if claimed.fetch_add(1, Ordering::Relaxed) >= n =>
                            {
                                break;
                            }
                            _ => {}
                        }
                        let t = Instant::now();
                        partition.append(vec![Record::from_value(value.clone())])?;
                        latencies.push(micros(t.elapsed()));
                    }
                    Ok(latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(LogError::Internal("bench producer panicked".into())))
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let mut latencies = Vec::new();
    for r in results {
        latencies.extend(r?);
    }
    let fsyncs = topic.partition(0).map_or(0, |p| p.fsync_count());
    drop(topic);
    log.close()?;
    let records = latencies.len() as u64;
    Ok(report(
        records,
        records * record_size as u64,
        elapsed,
        latencies,
        fsyncs,
    ))
}

/// Preloads `records` records of `record_size` bytes, then reads them back sequentially
/// `batch` records per `read` call; latencies are per read call.
pub fn run_read_bench(
    dir: &Path,
    record_size: usize,
    records: u64,
    batch: usize,
) -> Result<BenchReport> {
    let log = Log::open(dir, LogOptions::default())?;
    let topic = log.create_topic(
        &format!("bench-read-{}", now_ms()),
        TopicConfig::with_partitions(1),
    )?;
    let partition = topic
        .partition(0)
        .ok_or_else(|| LogError::Internal("bench topic has no partition 0".into()))?;
    let value = vec![b'x'; record_size];
    let mut loaded = 0;
    while loaded < records {
        let n = (records - loaded).min(1000);
        partition.append((0..n).map(|_| Record::from_value(value.clone())).collect())?;
        loaded += n;
    }
    let start = Instant::now();
    let mut latencies = Vec::new();
    let (mut offset, mut bytes, mut read) = (0u64, 0u64, 0u64);
    while offset < partition.end_offset() {
        let t = Instant::now();
        let got = partition.read(offset, batch.max(1), usize::MAX)?;
        latencies.push(micros(t.elapsed()));
        let Some(last) = got.last() else { break };
        offset = last.offset + 1;
        read += got.len() as u64;
        bytes += got.iter().map(|r| r.value.len() as u64).sum::<u64>();
    }
    let elapsed = start.elapsed();
    let fsyncs = partition.fsync_count();
    drop(topic);
    log.close()?;
    Ok(report(read, bytes, elapsed, latencies, fsyncs))
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn report(
    records: u64,
    bytes: u64,
    elapsed: Duration,
    mut latencies: Vec<u32>,
    fsyncs: u64,
) -> BenchReport {
    latencies.sort_unstable();
    let pct = |q: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        let i = ((latencies.len() - 1) as f64 * q).round() as usize;
        u64::from(latencies[i.min(latencies.len() - 1)])
    };
    let secs = elapsed.as_secs_f64().max(1e-9);
    BenchReport {
        records,
        bytes,
        elapsed,
        records_per_s: records as f64 / secs,
        mb_per_s: bytes as f64 / (1024.0 * 1024.0) / secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        fsyncs,
    }
}
