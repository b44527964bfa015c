//! The per-subtask loops. Operators and sinks read their inputs through the one
//! [`InputSide`] (`input.rs`: alignment, the minimum watermark, end of input), so
//! both loops only react to its events; the operator loop turns the end of input into
//! a final `process_watermark(MAX)`. Sources get their own loop: they poll a connector
//! and inject watermarks and barriers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, TimestampMillisecondArray};
use arrow::compute::max;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use runnel_common::time::{TS_MAX, TS_MIN};
use runnel_common::{Barrier, Message, Timestamp, Watermark, WatermarkSpec};
use runnel_connectors::{Sink, Source, SourcePoll};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::channel::Outputs;
use crate::checkpoint::{Participant, Report, Restored};
use crate::error::EngineError;
pub use crate::input::Inputs;
use crate::input::{InputEvent, InputSide};
use crate::metrics::NodeMetrics;
use crate::operator::{Operator, Output, StateWriter};

/// How a source subtask derives watermarks.
#[derive(Debug, Clone)]
pub struct SourceTiming {
    /// Event-time column and delay from `WATERMARK FOR`.
    pub watermark: Option<WatermarkSpec>,
    /// When `WATERMARK FOR` names a computed column: its expression over the source's
    /// rows, which gives the event times instead of `watermark.column`.
    pub event_time: Option<Arc<dyn datafusion_physical_expr::PhysicalExpr>>,
    /// After this long without data the subtask declares itself idle.
    pub idle_timeout: Duration,
}

/// A subtask's part in checkpoints: who it is, whom to tell, what to resume from.
#[derive(Clone)]
pub struct CheckpointHandle {
    /// Graph node.
    pub node: usize,
    /// Subtask index.
    pub subtask: usize,
    /// The coordinator's channels (sources: triggers; sinks: commits).
    pub participant: Participant,
    /// The checkpoint this run resumes from.
    pub restored: Option<Arc<Restored>>,
}

impl CheckpointHandle {
    fn report(&self, report: Report) {
        // The coordinator only goes away when the pipeline is being torn down.
        let _ = self.participant.reports.send(report);
    }

    fn done(
        &self,
        id: u64,
        position: Option<serde_json::Value>,
        watermark: Timestamp,
        state: StateWriter,
    ) {
        self.done_source(id, position, watermark, false, state);
    }

    fn done_source(
        &self,
        id: u64,
        position: Option<serde_json::Value>,
        watermark: Timestamp,
        idle: bool,
        state: StateWriter,
    ) {
        self.report(Report::Done {
            id,
            node: self.node,
            subtask: self.subtask,
            position,
            watermark,
            idle,
            state: state.entries,
        });
    }

    fn ended(&self, position: Option<serde_json::Value>) {
        self.report(Report::Ended {
            node: self.node,
            subtask: self.subtask,
            position,
        });
    }

    fn restored_entry(&self) -> Option<&crate::checkpoint::SubtaskEntry> {
        self.restored.as_ref()?.entry(self.node, self.subtask)
    }
}

/// Emits the watermark a source carries from upstream ([`Source::watermark`]); `true`
/// when it has one (its own idleness included, so the engine's idle timer stays off).
async fn carried_watermark(
    source: &mut dyn Source,
    emitted: &mut Timestamp,
    idle: &mut bool,
    outputs: &Outputs,
    metrics: &NodeMetrics,
) -> Result<bool, EngineError> {
    match source.watermark() {
        None => Ok(false),
        Some(Watermark::At(wm)) => {
            *idle = false;
            emit_watermark(emitted, wm, outputs, metrics).await?;
            Ok(true)
        }
        Some(Watermark::Idle) => {
            if !*idle {
                *idle = true;
                outputs
                    .broadcast(Message::Watermark(Watermark::Idle))
                    .await?;
            }
            Ok(true)
        }
    }
}

/// Runs one source subtask until its source ends.
pub async fn run_source(
    table: String,
    mut source: Box<dyn Source>,
    timing: SourceTiming,
    outputs: Outputs,
    metrics: NodeMetrics,
    ckpt: Option<CheckpointHandle>,
) -> Result<(), EngineError> {
    let mut max_seen = TS_MIN;
    let mut emitted = TS_MIN;
    let mut last_data = Instant::now();
    let mut idle = false;
    let idle_timeout = source.idle_timeout().unwrap_or(timing.idle_timeout);
    // Per split (partition), when the source reads several: the largest event time seen
    // and when data last came.
    let mut splits: std::collections::HashMap<String, (Timestamp, Instant)> = Default::default();
    let mut triggers = ckpt.as_ref().map(|c| c.participant.signals.subscribe());
    let mut completions = ckpt.as_ref().map(|c| c.participant.completed.subscribe());
    let event_expr = timing.event_time.as_ref().map(crate::eval::Compiled::new);
    if let Some(entry) = ckpt.as_ref().and_then(CheckpointHandle::restored_entry) {
        (emitted, idle) =
            restore_source(&table, source.as_mut(), entry, &outputs, &metrics).await?;
    }
    loop {
        if let (Some(rx), Some(c)) = (triggers.as_mut(), ckpt.as_ref()) {
            loop {
                match rx.try_recv() {
                    Ok(id) => {
                        // Position first, then the barrier: everything before it is in `id`.
                        source.checkpoint_barrier(id);
                        c.done_source(id, source.position(), emitted, idle, StateWriter::default());
                        outputs
                            .broadcast(Message::Barrier(Barrier { checkpoint: id }))
                            .await?;
                    }
                    Err(TryRecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
        }
        if let Some(rx) = completions.as_mut() {
            loop {
                match rx.try_recv() {
                    Ok(id) => source.checkpoint_complete(id).await.map_err(|e| {
                        EngineError::Connector {
                            table: table.clone(),
                            error: Box::new(e),
                        }
                    })?,
                    // Completions are cumulative: the next one covers a skipped one.
                    Err(TryRecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
        }
        let poll = source.poll().await.map_err(|e| EngineError::Connector {
            table: table.clone(),
            error: Box::new(e),
        })?;
        match poll {
            SourcePoll::Batch(batch) => {
                last_data = Instant::now();
                idle = false;
                metrics.rows_out.add(batch.num_rows() as u64);
                metrics.profile.observe(&batch);
                let wm = match &timing.watermark {
                    Some(spec) => {
                        let times = event_times(&batch, spec.column, event_expr.as_ref());
                        if let Some(m) = times.as_ref().and_then(max_event_time) {
                            max_seen = max_seen.max(m);
                        }
                        let parts = source.batch_splits();
                        if parts.is_empty() && splits.is_empty() {
                            (max_seen > TS_MIN).then(|| max_seen.saturating_sub(spec.delay_ms))
                        } else {
                            let now = Instant::now();
                            // Every split holds event time back from the start, also
                            // one that has sent nothing yet; they are known once connected.
                            if splits.is_empty() {
                                for s in source.splits() {
                                    splits.insert(s, (TS_MIN, now));
                                }
                            }
                            let mut at = 0;
                            for (split, rows) in parts {
                                let rows = rows.min(batch.num_rows().saturating_sub(at));
                                let m = times
                                    .as_ref()
                                    .and_then(|t| max_event_time(&t.slice(at, rows)));
                                at += rows;
                                let e = splits.entry(split).or_insert((TS_MIN, now));
                                e.1 = now;
                                if let Some(m) = m {
                                    e.0 = e.0.max(m);
                                }
                            }
                            split_watermark(&splits, idle_timeout, spec.delay_ms)
                        }
                    }
                    None => None,
                };
                outputs.send_batch(batch).await?;
                if let Some(wm) = wm {
                    emit_watermark(&mut emitted, wm, &outputs, &metrics).await?;
                }
                carried_watermark(source.as_mut(), &mut emitted, &mut idle, &outputs, &metrics)
                    .await?;
            }
            SourcePoll::Pending => {
                if carried_watermark(source.as_mut(), &mut emitted, &mut idle, &outputs, &metrics)
                    .await?
                {
                    tokio::task::yield_now().await;
                    continue;
                }
                // A split that fell idle no longer holds the others back.
                if let Some(spec) = timing.watermark.as_ref().filter(|_| !idle)
                    && let Some(wm) = split_watermark(&splits, idle_timeout, spec.delay_ms)
                {
                    emit_watermark(&mut emitted, wm, &outputs, &metrics).await?;
                }
                if !idle && last_data.elapsed() >= idle_timeout {
                    idle = true;
                    outputs
                        .broadcast(Message::Watermark(Watermark::Idle))
                        .await?;
                }
                tokio::task::yield_now().await;
            }
            SourcePoll::End => {
                if let (Some(c), Some(rx)) = (&ckpt, triggers.as_mut()) {
                    // Close event time first, so every window fires before the final
                    // barrier and the last checkpoint covers all output.
                    outputs
                        .broadcast(Message::Watermark(Watermark::At(TS_MAX)))
                        .await?;
                    c.report(Report::Finishing {
                        node: c.node,
                        subtask: c.subtask,
                    });
                    loop {
                        match rx.recv().await {
                            Ok(id) => {
                                c.done(id, source.position(), TS_MAX, StateWriter::default());
                                outputs
                                    .broadcast(Message::Barrier(Barrier { checkpoint: id }))
                                    .await?;
                                break;
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                        }
                    }
                    c.ended(source.position());
                }
                metrics.watermark.set(TS_MAX);
                outputs.broadcast(Message::End).await?;
                return Ok(());
            }
        }
    }
}

/// Rewinds a restored source and says its watermark and idleness again at once:
/// downstream subtasks start from nothing, and a source whose input was all read before
/// the crash would otherwise never move event time again. Returns both.
async fn restore_source(
    table: &str,
    source: &mut dyn Source,
    entry: &crate::checkpoint::SubtaskEntry,
    outputs: &Outputs,
    metrics: &NodeMetrics,
) -> Result<(Timestamp, bool), EngineError> {
    if let Some(pos) = &entry.position {
        source.seek(pos).await.map_err(|e| EngineError::Connector {
            table: table.to_string(),
            error: Box::new(e),
        })?;
    }
    let mut emitted = TS_MIN;
    if entry.watermark > TS_MIN && entry.watermark < TS_MAX {
        // Watermarks never go back, not even across a restart.
        emitted = entry.watermark;
        metrics.watermark.set(emitted);
        outputs
            .broadcast(Message::Watermark(Watermark::At(emitted)))
            .await?;
    }
    if entry.idle {
        outputs
            .broadcast(Message::Watermark(Watermark::Idle))
            .await?;
    }
    Ok((emitted, entry.idle))
}

/// Emits watermark `wm` if it is past `emitted`.
async fn emit_watermark(
    emitted: &mut Timestamp,
    wm: Timestamp,
    outputs: &Outputs,
    metrics: &NodeMetrics,
) -> Result<(), EngineError> {
    if wm > *emitted {
        *emitted = wm;
        metrics.watermark.set(wm);
        outputs
            .broadcast(Message::Watermark(Watermark::At(wm)))
            .await?;
    }
    Ok(())
}

/// The watermark over splits: the smallest largest-event-time among splits that had data
/// within `idle_timeout` (a split with none yet holds everything back until then), minus
/// the delay. When every split is idle, the smallest among those that ever had data (the
/// input is quiet: event time moves up to what every partition with data has shown).
/// `None` when no split has seen an event time.
fn split_watermark(
    splits: &std::collections::HashMap<String, (Timestamp, Instant)>,
    idle_timeout: Duration,
    delay_ms: i64,
) -> Option<Timestamp> {
    let active = splits
        .values()
        .filter(|(_, last)| last.elapsed() < idle_timeout)
        .map(|(max, _)| *max)
        .min();
    let at = match active {
        Some(a) => a,
        None => splits
            .values()
            .map(|(max, _)| *max)
            .filter(|m| *m > TS_MIN)
            .min()?,
    };
    (at > TS_MIN).then(|| at.saturating_sub(delay_ms))
}

/// The event times of a source's batch: its event-time column, or the computed
/// column's expression evaluated over it (`None` if that fails: no watermark progress
/// from this batch, and the row's own evaluation reports the error downstream).
fn event_times(
    batch: &RecordBatch,
    column: usize,
    expr: Option<&crate::eval::Compiled>,
) -> Option<arrow::array::ArrayRef> {
    match expr {
        None => batch.columns().get(column).cloned(),
        Some(e) => e
            .evaluate(batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .ok(),
    }
}

fn max_event_time(col: &arrow::array::ArrayRef) -> Option<Timestamp> {
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

/// Runs one operator subtask until all its inputs have ended.
pub async fn run_operator(
    mut op: Box<dyn Operator>,
    inputs: Inputs,
    outputs: Outputs,
    metrics: NodeMetrics,
    batch_latency: ::metrics::Histogram,
    ckpt: Option<CheckpointHandle>,
) -> Result<(), EngineError> {
    let blocking = op.blocking();
    let mut out = Output::default();
    // The operator's watermark: never lower than the restored one.
    let mut current = TS_MIN;
    if let Some(c) = &ckpt
        && let Some(restored) = &c.restored
    {
        op.restore(&restored.state(c.node, c.subtask))?;
        if let Some(entry) = c.restored_entry()
            && entry.watermark > TS_MIN
            && entry.watermark < TS_MAX
        {
            current = entry.watermark;
            // Sets the operator's notion of time (restored windows are all still open) and
            // tells downstream subtasks, which restart from nothing: its inputs only send
            // watermarks above this one.
            advance(op.as_mut(), current, &mut out, &outputs, &metrics).await?;
        }
    }
    let mut input = InputSide::new(inputs, current);
    loop {
        // Wait for the next event, or until the operator's processing-time timer is due
        // (input.next() is cancel-safe: it only awaits a channel receive).
        let event = match op.next_timer() {
            None => input.next().await,
            Some(at) => {
                let wait = at.saturating_sub(runnel_common::time::now_ms()).max(0) as u64;
                tokio::select! {
                    biased;
                    event = input.next() => event,
                    () = tokio::time::sleep(Duration::from_millis(wait)) => {
                        op.on_timer(runnel_common::time::now_ms(), &mut out)?;
                        flush(&mut out, &outputs, &metrics).await?;
                        continue;
                    }
                }
            }
        };
        let Some(event) = event else { break };
        match event {
            InputEvent::Data { input, batch } => {
                metrics.rows_in.add(batch.num_rows() as u64);
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
            InputEvent::Watermark(wm) => {
                current = wm;
                advance(op.as_mut(), wm, &mut out, &outputs, &metrics).await?;
            }
            InputEvent::Idle => {
                outputs
                    .broadcast(Message::Watermark(Watermark::Idle))
                    .await?;
            }
            InputEvent::Checkpoint(id) => {
                snapshot(op.as_mut(), ckpt.as_ref(), id, current)?;
                outputs
                    .broadcast(Message::Barrier(Barrier { checkpoint: id }))
                    .await?;
            }
            InputEvent::End => {
                metrics.watermark.set(TS_MAX);
                op.process_watermark(TS_MAX, &mut out)?;
                flush(&mut out, &outputs, &metrics).await?;
                if let Some(c) = &ckpt {
                    c.ended(None);
                }
                outputs.broadcast(Message::End).await?;
                return Ok(());
            }
        }
    }
    Err(EngineError::Internal(
        "an input closed without sending End".into(),
    ))
}

fn snapshot(
    op: &mut dyn Operator,
    ckpt: Option<&CheckpointHandle>,
    id: u64,
    watermark: Timestamp,
) -> Result<(), EngineError> {
    if let Some(c) = ckpt {
        let mut state = StateWriter::default();
        op.snapshot(&mut state)?;
        c.done(id, None, watermark, state);
    }
    Ok(())
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

/// Runs one sink subtask until all its inputs have ended, then finishes the sink.
pub async fn run_sink(
    table: String,
    mut sink: Box<dyn Sink>,
    schema: SchemaRef,
    inputs: Inputs,
    metrics: NodeMetrics,
    ckpt: Option<CheckpointHandle>,
) -> Result<(), EngineError> {
    let conn = |e: runnel_connectors::ConnectorError| EngineError::Connector {
        table: table.clone(),
        error: Box::new(e),
    };
    let mut commits = ckpt.as_ref().map(|c| c.participant.signals.subscribe());
    let (mut pre_committed, mut committed) = (0u64, 0u64);
    let mut input = InputSide::new(inputs, TS_MIN);
    if input.is_empty() {
        if let Some(c) = &ckpt {
            c.ended(None);
        }
        return sink.finish().await.map_err(conn);
    }
    loop {
        let event = tokio::select! {
            biased;
            id = async {
                match commits.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                match id {
                    Ok(id) => {
                        sink.commit(id).await.map_err(conn)?;
                        committed = committed.max(id);
                        crate::checkpoint::crash_point("after-commit", id);
                    }
                    // Commits are cumulative: the next one covers a skipped one.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => commits = None,
                }
                continue;
            }
            event = input.next() => event,
        };
        let Some(event) = event else { break };
        match event {
            InputEvent::Data { batch, .. } => {
                metrics.rows_in.add(batch.num_rows() as u64);
                // Columns already have the sink's types (the planner casts); give them the
                // sink's names. A changelog keeps its row kinds as the last column.
                let ops = runnel_common::changelog::ops(&batch).cloned();
                let data = runnel_common::changelog::data(&batch);
                let mismatch = |e: arrow::error::ArrowError| {
                    EngineError::Internal(format!("batch does not match sink '{table}': {e}"))
                };
                let mut batch = RecordBatch::try_new(Arc::clone(&schema), data.columns().to_vec())
                    .map_err(mismatch)?;
                if let Some(ops) = ops {
                    batch = runnel_common::changelog::attach(&batch, Arc::new(ops))
                        .map_err(mismatch)?;
                }
                sink.write(batch).await.map_err(conn)?;
            }
            InputEvent::Watermark(wm) => {
                metrics.watermark.set(wm);
                sink.watermark(wm).await.map_err(conn)?;
            }
            InputEvent::Idle => sink.idle().await.map_err(conn)?,
            InputEvent::Checkpoint(id) => {
                sink.pre_commit(id).await.map_err(conn)?;
                pre_committed = pre_committed.max(id);
                crate::checkpoint::crash_point("after-pre-commit", id);
                if let Some(c) = &ckpt {
                    c.done(id, None, TS_MIN, StateWriter::default());
                }
            }
            InputEvent::End => {
                // The final checkpoint covers the last rows: wait for its commit, so they
                // are made visible the exactly-once way (bounded, in case it fails).
                if let Some(rx) = commits.as_mut() {
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                    while committed < pre_committed {
                        match tokio::time::timeout_at(deadline, rx.recv()).await {
                            Ok(Ok(id)) => {
                                sink.commit(id).await.map_err(conn)?;
                                committed = committed.max(id);
                            }
                            Ok(Err(RecvError::Lagged(_))) => {}
                            _ => break,
                        }
                    }
                }
                metrics.watermark.set(TS_MAX);
                sink.finish().await.map_err(conn)?;
                if let Some(c) = &ckpt {
                    c.ended(None);
                }
                return Ok(());
            }
        }
    }
    Err(EngineError::Internal(
        "a sink input closed without sending End".into(),
    ))
}
