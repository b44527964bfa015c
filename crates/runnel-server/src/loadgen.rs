//! The ingest load generator behind `runnel bench ingest`: POSTs records at a fixed rate
//! (open loop, so a slow server cannot slow the clock) over kept-alive connections and
//! measures the acknowledgement latency from each request's scheduled send time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use tokio::sync::Mutex;

use crate::client::{Connection, HttpClient};
use crate::error::ServerError;

/// What `run_ingest_bench` does.
#[derive(Debug, Clone)]
pub struct IngestBench {
    /// Topic to POST to (must exist, or the server must auto-create it).
    pub topic: String,
    /// Records per second to offer.
    pub rate: u64,
    /// Records per request (NDJSON lines).
    pub batch: usize,
    /// Bytes of each record's JSON value (at least about 20).
    pub record_size: usize,
    /// How long to offer load.
    pub duration: Duration,
    /// Concurrent connections (the most requests in flight).
    pub connections: usize,
}

/// Results of one `run_ingest_bench`.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestReport {
    /// Records acknowledged with 200.
    pub acked: u64,
    /// Requests answered with anything else, or that failed.
    pub failed_requests: u64,
    /// Requests that could not be sent on time because every connection was busy.
    pub late_requests: u64,
    /// Acknowledged records per second of wall time.
    pub records_per_s: f64,
    /// Median latency from scheduled send to acknowledgement, µs.
    pub p50_us: u64,
    /// 99th-percentile latency from scheduled send to acknowledgement, µs.
    pub p99_us: u64,
    /// Largest latency, µs.
    pub max_us: u64,
}

impl std::fmt::Display for IngestReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "acked={} records_per_s={:.0} p50_us={} p99_us={} max_us={} failed_requests={} late_requests={}",
            self.acked,
            self.records_per_s,
            self.p50_us,
            self.p99_us,
            self.max_us,
            self.failed_requests,
            self.late_requests
        )
    }
}

/// Offers `bench.rate` records/s to the server behind `client` for `bench.duration`.
///
/// # Errors
/// `Connect` if the connections cannot be opened.
pub async fn run_ingest_bench(
    client: &HttpClient,
    bench: &IngestBench,
) -> Result<IngestReport, ServerError> {
    let batch = bench.batch.max(1);
    let pad = "x".repeat(bench.record_size.saturating_sub(20));
    let body: String = (0..batch)
        .map(|i| format!("{{\"i\":{i},\"p\":\"{pad}\"}}\n"))
        .collect();
    let body = bytes::Bytes::from(body);
    let path = format!("/v1/topics/{}/records", bench.topic);
    let mut pool = Vec::new();
    for _ in 0..bench.connections.max(1) {
        pool.push(Arc::new(Mutex::new(client.connect().await?)));
    }
    let requests_per_s = (bench.rate as f64 / batch as f64).max(0.001);
    let interval = Duration::from_secs_f64(1.0 / requests_per_s);
    let total = (bench.duration.as_secs_f64() * requests_per_s).ceil() as u64;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut late = 0u64;
    for n in 0..total {
        let scheduled = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        // Take a free connection; if none is free the request waits (and counts as late).
        let conn = match pool.iter().find_map(|c| c.clone().try_lock_owned().ok()) {
            Some(c) => c,
            None => {
                late += 1;
                pool[(n as usize) % pool.len()].clone().lock_owned().await
            }
        };
        let (path, body) = (path.clone(), body.clone());
        tasks.spawn(async move { send(conn, &path, body, scheduled).await });
    }
    let mut latencies = Vec::with_capacity(total as usize);
    let mut failed = 0u64;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Some(us)) => latencies.push(us),
            _ => failed += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    latencies.sort_unstable();
    let pct = |q: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        latencies[((latencies.len() - 1) as f64 * q).round() as usize]
    };
    let acked = latencies.len() as u64 * batch as u64;
    Ok(IngestReport {
        acked,
        failed_requests: failed,
        late_requests: late,
        records_per_s: acked as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: latencies.last().copied().unwrap_or(0),
    })
}

/// One POST; the latency in µs from `scheduled` if it was acknowledged.
async fn send(
    conn: tokio::sync::OwnedMutexGuard<Connection>,
    path: &str,
    body: bytes::Bytes,
    scheduled: Instant,
) -> Option<u64> {
    let mut conn = conn;
    let r = conn
        .request(
            Method::POST,
            path,
            &[("content-type", crate::wire::NDJSON)],
            body,
        )
        .await
        .ok()?;
    let us = u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX);
    (r.status == 200).then_some(us)
}
