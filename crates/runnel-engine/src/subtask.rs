//! The per-subtask loops. `run_operator` is the only place that matches on
//! [`Message`]: it keeps the minimum watermark across inputs, forwards
//! barriers once every input delivered one, and turns `End` from every input
//! into a final `process_watermark(MAX)`. Sources and sinks get their own
//! loops because they talk to connectors, not to operators.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, TimestampMillisecondArray};
use arrow::compute::max;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use runnel_common::time::{TS_MAX, TS_MIN};
use runnel_common::{Message, Timestamp, Watermark, WatermarkSpec};
use runnel_connectors::{Sink, Source, SourcePoll};

use crate::channel::{Outputs, Rx};
use crate::error::EngineError;
use crate::metrics::NodeMetrics;
use crate::operator::{Operator, Output};
use crate::watermark::WatermarkTracker;

/// How a source subtask derives watermarks.
#[derive(Debug, Clone)]
pub struct SourceTiming {
    /// Event-time column and delay from `WATERMARK FOR`.
    pub watermark: Option<WatermarkSpec>,
    /// After this long without data the subtask declares itself idle.
    pub idle_timeout: Duration,
}

/// Runs one source subtask until its source ends.
pub async fn run_source(
    table: String,
    mut source: Box<dyn Source>,
    timing: SourceTiming,
    outputs: Outputs,
    metrics: NodeMetrics,
) -> Result<(), EngineError> {
    let mut max_seen = TS_MIN;
    let mut emitted = TS_MIN;
    let mut last_data = Instant::now();
    let mut idle = false;
    loop {
        let poll = source.poll().await.map_err(|e| EngineError::Connector {
            table: table.clone(),
            error: Box::new(e),
        })?;
        match poll {
            SourcePoll::Batch(batch) => {
                last_data = Instant::now();
                idle = false;
                metrics.rows_out.add(batch.num_rows() as u64);
                let wm = match &timing.watermark {
                    Some(spec) => {
                        if let Some(m) = max_event_time(&batch, spec.column) {
                            max_seen = max_seen.max(m);
                        }
                        (max_seen > TS_MIN).then(|| max_seen.saturating_sub(spec.delay_ms))
                    }
                    None => None,
                };
                outputs.send_batch(batch).await?;
                if let Some(wm) = wm
                    && wm > emitted
                {
                    emitted = wm;
                    metrics.watermark.set(wm);
                    outputs
                        .broadcast(Message::Watermark(Watermark::At(wm)))
                        .await?;
                }
            }
            SourcePoll::Pending => {
                if !idle && last_data.elapsed() >= timing.idle_timeout {
                    idle = true;
                    outputs
                        .broadcast(Message::Watermark(Watermark::Idle))
                        .await?;
                }
                tokio::task::yield_now().await;
            }
            SourcePoll::End => {
                metrics.watermark.set(TS_MAX);
                outputs.broadcast(Message::End).await?;
                return Ok(());
            }
        }
    }
}

fn max_event_time(batch: &RecordBatch, column: usize) -> Option<Timestamp> {
    let col = batch.column(column);
    if let Some(a) = col.as_any().downcast_ref::<TimestampMillisecondArray>() {
        return max(a);
    }
    // Other timestamp units: normalise through a cast.
    let cast = arrow::compute::cast(
        col,
        &arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
    )
    .ok()?;
    cast.as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .and_then(max)
}

/// What the loop needs to know about a subtask's input channels.
pub struct Inputs {
    /// The queue.
    pub rx: Rx,
    /// For each channel number: which of the node's inputs it belongs to.
    pub channel_input: Vec<usize>,
}

/// Runs one operator subtask until all its inputs have ended.
pub async fn run_operator(
    mut op: Box<dyn Operator>,
    mut inputs: Inputs,
    outputs: Outputs,
    metrics: NodeMetrics,
    batch_latency: ::metrics::Histogram,
) -> Result<(), EngineError> {
    let n = inputs.channel_input.len();
    let blocking = op.blocking();
    let mut tracker = WatermarkTracker::new(n);
    let mut ended = vec![false; n];
    let mut barriers = BarrierAligner::new(n);
    let mut out = Output::default();
    let mut idle_forwarded = false;
    while let Some(env) = inputs.rx.recv().await {
        match env.msg {
            Message::Data(batch) => {
                metrics.rows_in.add(batch.num_rows() as u64);
                let input = inputs.channel_input[env.channel];
                let started = std::time::Instant::now();
                if blocking {
                    // Seconds of inference must not stall the runtime's other tasks.
                    tokio::task::block_in_place(|| op.process_batch(input, batch, &mut out))?;
                } else {
                    op.process_batch(input, batch, &mut out)?;
                }
                batch_latency.record(started.elapsed().as_secs_f64());
                flush(&mut out, &outputs, &metrics).await?;
            }
            Message::Watermark(wm) => {
                if let Some(new) = tracker.update(env.channel, wm) {
                    idle_forwarded = false;
                    advance(op.as_mut(), new, &mut out, &outputs, &metrics).await?;
                } else if tracker.all_idle() && !idle_forwarded {
                    idle_forwarded = true;
                    outputs
                        .broadcast(Message::Watermark(Watermark::Idle))
                        .await?;
                }
            }
            Message::Barrier(b) => {
                if barriers.arrive(env.channel, b.checkpoint) {
                    // TODO(#5): snapshot operator state into the checkpoint.
                    outputs.broadcast(Message::Barrier(b)).await?;
                }
            }
            Message::End => {
                ended[env.channel] = true;
                if let Some(new) = tracker.end(env.channel)
                    && new < TS_MAX
                {
                    advance(op.as_mut(), new, &mut out, &outputs, &metrics).await?;
                }
                if ended.iter().all(|e| *e) {
                    metrics.watermark.set(TS_MAX);
                    op.process_watermark(TS_MAX, &mut out)?;
                    flush(&mut out, &outputs, &metrics).await?;
                    outputs.broadcast(Message::End).await?;
                    return Ok(());
                }
            }
        }
    }
    Err(EngineError::Internal(
        "an input closed without sending End".into(),
    ))
}

async fn advance(
    op: &mut dyn Operator,
    wm: Timestamp,
    out: &mut Output,
    outputs: &Outputs,
    metrics: &NodeMetrics,
) -> Result<(), EngineError> {
    metrics.watermark.set(wm);
    op.process_watermark(wm, out)?;
    flush(out, outputs, metrics).await?;
    outputs
        .broadcast(Message::Watermark(Watermark::At(wm)))
        .await
}

async fn flush(
    out: &mut Output,
    outputs: &Outputs,
    metrics: &NodeMetrics,
) -> Result<(), EngineError> {
    for batch in out.drain() {
        metrics.rows_out.add(batch.num_rows() as u64);
        outputs.send_batch(batch).await?;
    }
    Ok(())
}

/// Counts barriers per checkpoint; reports when all channels delivered one.
struct BarrierAligner {
    n: usize,
    pending: std::collections::BTreeMap<u64, Vec<bool>>,
}

impl BarrierAligner {
    fn new(n: usize) -> Self {
        Self {
            n,
            pending: Default::default(),
        }
    }

    fn arrive(&mut self, channel: usize, checkpoint: u64) -> bool {
        let seen = self
            .pending
            .entry(checkpoint)
            .or_insert_with(|| vec![false; self.n]);
        seen[channel] = true;
        if seen.iter().all(|s| *s) {
            self.pending.remove(&checkpoint);
            true
        } else {
            false
        }
    }
}

/// Runs one sink subtask until all its inputs have ended, then finishes the sink.
pub async fn run_sink(
    table: String,
    mut sink: Box<dyn Sink>,
    schema: SchemaRef,
    mut inputs: Inputs,
    metrics: NodeMetrics,
) -> Result<(), EngineError> {
    let n = inputs.channel_input.len();
    let mut ended = vec![false; n];
    let mut barriers = BarrierAligner::new(n);
    let mut tracker = WatermarkTracker::new(n);
    let conn = |e: runnel_connectors::ConnectorError| EngineError::Connector {
        table: table.clone(),
        error: Box::new(e),
    };
    if n == 0 {
        return sink.finish().await.map_err(conn);
    }
    while let Some(env) = inputs.rx.recv().await {
        match env.msg {
            Message::Data(batch) => {
                metrics.rows_in.add(batch.num_rows() as u64);
                // Columns already have the sink's types (the planner casts); give them the sink's names.
                let batch = RecordBatch::try_new(Arc::clone(&schema), batch.columns().to_vec())
                    .map_err(|e| {
                        EngineError::Internal(format!("batch does not match sink '{table}': {e}"))
                    })?;
                sink.write(batch).await.map_err(conn)?;
            }
            Message::Watermark(wm) => {
                if let Some(new) = tracker.update(env.channel, wm) {
                    metrics.watermark.set(new);
                }
            }
            Message::Barrier(b) => {
                if barriers.arrive(env.channel, b.checkpoint) {
                    sink.pre_commit(b.checkpoint).await.map_err(conn)?;
                }
            }
            Message::End => {
                ended[env.channel] = true;
                if ended.iter().all(|e| *e) {
                    metrics.watermark.set(TS_MAX);
                    return sink.finish().await.map_err(conn);
                }
            }
        }
    }
    Err(EngineError::Internal(
        "a sink input closed without sending End".into(),
    ))
}
