//! `runnel bench vision`: throughput and latency of [`Classifier::classify_batch`] and
//! [`Detector::detect_batch`] (decode + resize + normalize + inference, and for
//! detection NMS) over a set of encoded images.

use std::time::Instant;

use crate::{Classifier, Detector};

/// What one vision benchmark run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionBenchReport {
    /// Images per model batch (one `classify_batch` call).
    pub batch: usize,
    /// Images classified in the timed iterations.
    pub images: usize,
    /// Images classified per second of wall time.
    pub images_per_s: f64,
    /// Median time an image waits for its result: the duration of its batch call.
    pub p50_ms: f64,
    /// 99th percentile of that latency.
    pub p99_ms: f64,
    /// Mean compute cost per image: batch duration divided by batch size.
    pub per_image_ms: f64,
    /// Images that came back rejected (should be 0 for a valid image set).
    pub rejected: usize,
}

/// Classifies `iterations` batches of `batch` images (cycling through `images`) after one
/// untimed warm-up batch, and reports throughput and latency including decode and resize.
pub fn run_bench(
    classifier: &Classifier,
    images: Vec<Vec<u8>>,
    batch: usize,
    iterations: usize,
) -> VisionBenchReport {
    run_bench_with(images, batch, iterations, |inputs| {
        classifier
            .classify_batch(inputs, 1)
            .iter()
            .filter(|r| r.is_err())
            .count()
    })
}

/// [`run_bench`] for `detect`: the objects of each image, at the model's threshold.
pub fn run_detect_bench(
    detector: &Detector,
    images: Vec<Vec<u8>>,
    batch: usize,
    iterations: usize,
) -> VisionBenchReport {
    run_bench_with(images, batch, iterations, |inputs| {
        detector
            .detect_batch(inputs, None)
            .iter()
            .filter(|r| r.is_err())
            .count()
    })
}

/// Times `call` (one batch in, the number of rejected images out) over `iterations`
/// batches after one untimed warm-up batch.
fn run_bench_with(
    images: Vec<Vec<u8>>,
    batch: usize,
    iterations: usize,
    call: impl Fn(&[Option<&[u8]>]) -> usize,
) -> VisionBenchReport {
    let batch = batch.max(1);
    let mut next = images.iter().cycle();
    let mut take =
        || -> Vec<Option<&[u8]>> { (0..batch).map(|_| next.next().map(Vec::as_slice)).collect() };
    let warm = take();
    let _ = call(&warm);

    let mut latencies_ms = Vec::with_capacity(iterations);
    let mut rejected = 0;
    let started = Instant::now();
    for _ in 0..iterations {
        let inputs = take();
        let t = Instant::now();
        rejected += call(&inputs);
        latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total_s = started.elapsed().as_secs_f64();
    let images_done = iterations * batch;
    latencies_ms.sort_by(f64::total_cmp);
    let mean_batch_ms = latencies_ms.iter().sum::<f64>() / latencies_ms.len().max(1) as f64;
    VisionBenchReport {
        batch,
        images: images_done,
        images_per_s: if total_s > 0.0 {
            images_done as f64 / total_s
        } else {
            0.0
        },
        p50_ms: percentile(&latencies_ms, 0.50),
        p99_ms: percentile(&latencies_ms, 0.99),
        per_image_ms: mean_batch_ms / batch as f64,
        rejected,
    }
}

/// Nearest-rank percentile of sorted values; 0 when there are none.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
