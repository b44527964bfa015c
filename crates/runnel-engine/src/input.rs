//! The input side shared by the operator and sink loops: one queue of envelopes from
//! every input channel becomes a stream of [`InputEvent`]s. Here, and only here, barriers
//! are aligned (Chandy–Lamport), the minimum watermark over the channels is kept (idle
//! channels skipped), and `End` on every channel becomes the end of input.

use std::collections::VecDeque;

use arrow::record_batch::RecordBatch;
use runnel_common::time::{TS_MAX, TS_MIN};
use runnel_common::{Message, Timestamp};

use crate::channel::{Envelope, Rx};
use crate::watermark::WatermarkTracker;

/// What the loop needs to know about a subtask's input channels.
pub struct Inputs {
    /// The queue.
    pub rx: Rx,
    /// For each channel number: which of the node's inputs it belongs to.
    pub channel_input: Vec<usize>,
}

/// What the input side tells a loop, in order.
#[derive(Debug)]
pub enum InputEvent {
    /// Rows from input number `input` of the node.
    Data {
        /// Which of the node's inputs.
        input: usize,
        /// The rows.
        batch: RecordBatch,
    },
    /// The combined watermark rose to this (never lower than before).
    Watermark(Timestamp),
    /// Every live channel is idle; sent once per idle period.
    Idle,
    /// Every live channel delivered checkpoint `id`'s barrier: snapshot now.
    Checkpoint(u64),
    /// Every channel ended.
    End,
}

/// A subtask's input channels, aligned and combined.
pub struct InputSide {
    inputs: Inputs,
    aligner: Aligner,
    tracker: WatermarkTracker,
    ended: Vec<bool>,
    /// The combined watermark handed out so far.
    current: Timestamp,
    idle_sent: bool,
    pending: VecDeque<InputEvent>,
}

impl InputSide {
    /// The input side over `inputs`, starting at watermark `restored` (a restored
    /// subtask's; `TS_MIN` for a fresh one): lower watermarks are not handed out again.
    pub fn new(inputs: Inputs, restored: Timestamp) -> Self {
        let n = inputs.channel_input.len();
        InputSide {
            inputs,
            aligner: Aligner::new(n),
            tracker: WatermarkTracker::new(n),
            ended: vec![false; n],
            current: restored,
            idle_sent: false,
            pending: VecDeque::new(),
        }
    }

    /// Whether there are no input channels at all.
    pub fn is_empty(&self) -> bool {
        self.ended.is_empty()
    }

    /// The next event; `None` when the queue closed without every channel ending (the
    /// pipeline is being torn down). Cancel-safe: the only await is the queue's receive.
    pub async fn next(&mut self) -> Option<InputEvent> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            let env = self.aligner.next(&mut self.inputs.rx).await?;
            let Some(env) = self.aligner.hold(env) else {
                continue;
            };
            self.handle(env);
        }
    }

    fn handle(&mut self, env: Envelope) {
        match env.msg {
            Message::Data(batch) => {
                let input = self.inputs.channel_input[env.channel];
                self.pending.push_back(InputEvent::Data { input, batch });
            }
            Message::Watermark(wm) => {
                if let Some(new) = self.tracker.update(env.channel, wm) {
                    self.idle_sent = false;
                    self.advance(new);
                }
                // After an advance too: the watermark just sent marks this subtask active
                // downstream, and if all its inputs are idle it must not hold others back.
                if self.tracker.all_idle() && !self.idle_sent {
                    self.idle_sent = true;
                    self.pending.push_back(InputEvent::Idle);
                }
            }
            Message::Barrier(b) => {
                if self.aligner.barrier(env.channel, &self.ended) {
                    self.pending.push_back(InputEvent::Checkpoint(b.checkpoint));
                }
            }
            Message::End => {
                self.ended[env.channel] = true;
                if let Some(id) = self.aligner.input_ended(&self.ended) {
                    self.pending.push_back(InputEvent::Checkpoint(id));
                }
                if let Some(new) = self.tracker.end(env.channel)
                    && new < TS_MAX
                {
                    self.advance(new);
                }
                if self.ended.iter().all(|e| *e) {
                    self.pending.push_back(InputEvent::End);
                }
            }
        }
    }

    fn advance(&mut self, new: Timestamp) {
        if new > self.current && new > TS_MIN {
            self.current = new;
            self.pending.push_back(InputEvent::Watermark(new));
        }
    }
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

#[cfg(test)]
mod aligner_tests {
    use std::sync::Arc;

    use runnel_common::Barrier;

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
