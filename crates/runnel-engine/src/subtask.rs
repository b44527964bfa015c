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
use runnel_common::{Barrier, Message, Timestamp, Watermark, WatermarkSpec};
use runnel_connectors::{Sink, Source, SourcePoll};
use tokio::sync::broadcast::error::TryRecvError;

use crate::channel::{Envelope, Outputs, Rx};
use crate::checkpoint::{Participant, Report, Restored};
use crate::error::EngineError;
use crate::metrics::NodeMetrics;
use crate::operator::{Operator, Output, StateWriter};
use crate::watermark::WatermarkTracker;

/// How a source subtask derives watermarks.
#[derive(Debug, Clone)]
pub struct SourceTiming {
    /// Event-time column and delay from `WATERMARK FOR`.
    pub watermark: Option<WatermarkSpec>,
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
        self.report(Report::Done {
            id,
            node: self.node,
            subtask: self.subtask,
            position,
            watermark,
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
    let mut triggers = ckpt.as_ref().map(|c| c.participant.signals.subscribe());
    if let Some(entry) = ckpt.as_ref().and_then(CheckpointHandle::restored_entry) {
        if let Some(pos) = &entry.position {
            source.seek(pos).await.map_err(|e| EngineError::Connector {
                table: table.clone(),
                error: Box::new(e),
            })?;
        }
        if entry.watermark > TS_MIN && entry.watermark < TS_MAX {
            // Watermarks never go back, not even across a restart.
            emitted = entry.watermark;
            metrics.watermark.set(emitted);
        }
    }
    loop {
        if let (Some(rx), Some(c)) = (triggers.as_mut(), ckpt.as_ref()) {
            loop {
                match rx.try_recv() {
                    Ok(id) => {
                        // Position first, then the barrier: everything before it is in `id`.
                        c.done(id, source.position(), emitted, StateWriter::default());
                        outputs
                            .broadcast(Message::Barrier(Barrier { checkpoint: id }))
                            .await?;
                    }
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
    ckpt: Option<CheckpointHandle>,
) -> Result<(), EngineError> {
    let n = inputs.channel_input.len();
    let blocking = op.blocking();
    let mut tracker = WatermarkTracker::new(n);
    let mut ended = vec![false; n];
    let mut aligner = Aligner::new(n);
    let mut out = Output::default();
    let mut idle_forwarded = false;
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
            metrics.watermark.set(current);
            // Sets the operator's notion of time; restored windows are all still open.
            op.process_watermark(current, &mut out)?;
            flush(&mut out, &outputs, &metrics).await?;
        }
    }
    while let Some(env) = aligner.next(&mut inputs.rx).await {
        let Some(env) = aligner.hold(env) else {
            continue;
        };
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
                    if new > current {
                        current = new;
                        advance(op.as_mut(), new, &mut out, &outputs, &metrics).await?;
                    }
                }
                // After an advance too: the watermark just sent marks this subtask active
                // downstream, and if all its inputs are idle it must not hold others back.
                if tracker.all_idle() && !idle_forwarded {
                    idle_forwarded = true;
                    outputs
                        .broadcast(Message::Watermark(Watermark::Idle))
                        .await?;
                }
            }
            Message::Barrier(b) => {
                if aligner.barrier(env.channel, &ended) {
                    snapshot(op.as_mut(), ckpt.as_ref(), b.checkpoint, current)?;
                    outputs.broadcast(Message::Barrier(b)).await?;
                }
            }
            Message::End => {
                ended[env.channel] = true;
                if let Some(id) = aligner.input_ended(&ended) {
                    snapshot(op.as_mut(), ckpt.as_ref(), id, current)?;
                    outputs
                        .broadcast(Message::Barrier(Barrier { checkpoint: id }))
                        .await?;
                }
                if let Some(new) = tracker.end(env.channel)
                    && new < TS_MAX
                    && new > current
                {
                    current = new;
                    advance(op.as_mut(), new, &mut out, &outputs, &metrics).await?;
                }
                if ended.iter().all(|e| *e) {
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

/// Barrier alignment. Once a channel delivered the barrier of the checkpoint being
/// aligned, its later messages wait here until every other live channel delivered it
/// too, so the snapshot holds exactly what came before the barrier on every input.
/// All channels share one queue, so waiting messages are set aside and replayed.
struct Aligner {
    blocked: Vec<bool>,
    /// The checkpoint being aligned.
    current: Option<u64>,
    /// Messages of blocked channels, in arrival order.
    held: std::collections::VecDeque<Envelope>,
    /// Messages released by the last alignment, taken before the queue.
    replay: std::collections::VecDeque<Envelope>,
}

impl Aligner {
    fn new(n: usize) -> Self {
        Aligner {
            blocked: vec![false; n],
            current: None,
            held: Default::default(),
            replay: Default::default(),
        }
    }

    async fn next(&mut self, rx: &mut Rx) -> Option<Envelope> {
        match self.replay.pop_front() {
            Some(env) => Some(env),
            None => rx.recv().await,
        }
    }

    /// The message if it can be handled now; `None` if its channel is blocked.
    fn hold(&mut self, env: Envelope) -> Option<Envelope> {
        if self.blocked.get(env.channel).copied().unwrap_or(false) {
            self.held.push_back(env);
            return None;
        }
        if let Message::Barrier(b) = &env.msg {
            self.current = Some(b.checkpoint);
        }
        Some(env)
    }

    /// A barrier arrived on `channel`: true once every live channel delivered it.
    fn barrier(&mut self, channel: usize, ended: &[bool]) -> bool {
        if let Some(b) = self.blocked.get_mut(channel) {
            *b = true;
        }
        self.try_release(ended)
    }

    /// An input ended; returns the checkpoint whose alignment that completed.
    fn input_ended(&mut self, ended: &[bool]) -> Option<u64> {
        let id = self.current?;
        if self.blocked.iter().any(|b| *b) && self.try_release(ended) {
            return Some(id);
        }
        None
    }

    fn try_release(&mut self, ended: &[bool]) -> bool {
        let aligned = self
            .blocked
            .iter()
            .zip(ended)
            .all(|(blocked, ended)| *blocked || *ended);
        if aligned {
            self.blocked.iter_mut().for_each(|b| *b = false);
            self.current = None;
            // Held messages came before anything still waiting in `replay` on their channel.
            let mut released = std::mem::take(&mut self.held);
            released.extend(self.replay.drain(..));
            self.replay = released;
        }
        aligned
    }
}

/// Runs one sink subtask until all its inputs have ended, then finishes the sink.
pub async fn run_sink(
    table: String,
    mut sink: Box<dyn Sink>,
    schema: SchemaRef,
    mut inputs: Inputs,
    metrics: NodeMetrics,
    ckpt: Option<CheckpointHandle>,
) -> Result<(), EngineError> {
    let n = inputs.channel_input.len();
    let mut ended = vec![false; n];
    let mut aligner = Aligner::new(n);
    let mut tracker = WatermarkTracker::new(n);
    let conn = |e: runnel_connectors::ConnectorError| EngineError::Connector {
        table: table.clone(),
        error: Box::new(e),
    };
    let mut commits = ckpt.as_ref().map(|c| c.participant.signals.subscribe());
    let (mut pre_committed, mut committed) = (0u64, 0u64);
    if n == 0 {
        if let Some(c) = &ckpt {
            c.ended(None);
        }
        return sink.finish().await.map_err(conn);
    }
    loop {
        let env = tokio::select! {
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
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => commits = None,
                }
                continue;
            }
            env = aligner.next(&mut inputs.rx) => env,
        };
        let Some(env) = env else { break };
        let Some(env) = aligner.hold(env) else {
            continue;
        };
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
                if aligner.barrier(env.channel, &ended) {
                    sink.pre_commit(b.checkpoint).await.map_err(conn)?;
                    pre_committed = pre_committed.max(b.checkpoint);
                    crate::checkpoint::crash_point("after-pre-commit", b.checkpoint);
                    if let Some(c) = &ckpt {
                        c.done(b.checkpoint, None, TS_MIN, StateWriter::default());
                    }
                }
            }
            Message::End => {
                ended[env.channel] = true;
                if let Some(id) = aligner.input_ended(&ended) {
                    sink.pre_commit(id).await.map_err(conn)?;
                    pre_committed = pre_committed.max(id);
                    if let Some(c) = &ckpt {
                        c.done(id, None, TS_MIN, StateWriter::default());
                    }
                }
                if ended.iter().all(|e| *e) {
                    // The final checkpoint covers the last rows: wait for its commit, so
                    // they are made visible the exactly-once way (bounded, in case it fails).
                    if let Some(rx) = commits.as_mut() {
                        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                        while committed < pre_committed {
                            match tokio::time::timeout_at(deadline, rx.recv()).await {
                                Ok(Ok(id)) => {
                                    sink.commit(id).await.map_err(conn)?;
                                    committed = committed.max(id);
                                }
                                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
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
    }
    Err(EngineError::Internal(
        "a sink input closed without sending End".into(),
    ))
}

#[cfg(test)]
mod aligner_tests {
    use super::*;

    fn data(channel: usize, tag: i64) -> Envelope {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("v", arrow::datatypes::DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(arrow::array::Int64Array::from(vec![tag]))],
        )
        .unwrap();
        Envelope {
            channel,
            msg: Message::Data(batch),
        }
    }

    fn barrier(channel: usize, id: u64) -> Envelope {
        Envelope {
            channel,
            msg: Message::Barrier(Barrier { checkpoint: id }),
        }
    }

    fn tag(env: &Envelope) -> String {
        match &env.msg {
            Message::Data(b) => {
                let v = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .unwrap()
                    .value(0);
                format!("{}:{v}", env.channel)
            }
            Message::Barrier(b) => format!("{}:B{}", env.channel, b.checkpoint),
            Message::Watermark(_) => "wm".into(),
            Message::End => format!("{}:end", env.channel),
        }
    }

    /// Feeds `input` through the aligner as the operator loop does; returns what was
    /// handled, in order, with "snap" where a snapshot was taken.
    async fn run(n: usize, input: Vec<Envelope>) -> Vec<String> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        for e in input {
            tx.send(e).await.unwrap();
        }
        drop(tx);
        let mut a = Aligner::new(n);
        let mut ended = vec![false; n];
        let mut seen = Vec::new();
        while let Some(env) = a.next(&mut rx).await {
            let Some(env) = a.hold(env) else { continue };
            seen.push(tag(&env));
            match env.msg {
                Message::Barrier(_) if a.barrier(env.channel, &ended) => {
                    seen.push("snap".into());
                }
                Message::End => {
                    ended[env.channel] = true;
                    if a.input_ended(&ended).is_some() {
                        seen.push("snap".into());
                    }
                }
                _ => {}
            }
        }
        seen
    }

    #[tokio::test]
    async fn data_after_a_barrier_waits_for_the_other_channels() {
        let got = run(
            2,
            vec![
                data(0, 1),
                barrier(0, 1),
                data(0, 2), // after the barrier on channel 0: must wait
                data(1, 1),
                barrier(1, 1),
                data(1, 2),
            ],
        )
        .await;
        assert_eq!(
            got,
            ["0:1", "0:B1", "1:1", "1:B1", "snap", "0:2", "1:2"],
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn an_ended_channel_counts_as_aligned_and_order_holds_across_checkpoints() {
        let got = run(
            2,
            vec![
                barrier(0, 1),
                data(0, 2),
                barrier(0, 2),
                data(0, 3),
                data(1, 1),
                Envelope {
                    channel: 1,
                    msg: Message::End,
                },
            ],
        )
        .await;
        assert_eq!(
            got,
            ["0:B1", "1:1", "1:end", "snap", "0:2", "0:B2", "snap", "0:3"],
            "{got:?}"
        );
    }
}
