//! Bounded channels between subtasks and the forward / hash partitioners.
//!
//! Every subtask owns one bounded queue; upstream subtasks tag what they send
//! with their channel number, so the receiver can keep one watermark and one
//! end-of-stream flag per channel. A full queue blocks the sender: that is
//! the backpressure that keeps memory bounded under a slow sink.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use datafusion_common::hash_utils::{RandomState, create_hashes};
use runnel_common::Message;
use runnel_common::metrics::Counter;
use tokio::sync::mpsc;

use crate::error::EngineError;

/// A message and the channel (at the receiver) it travelled on.
#[derive(Debug)]
pub struct Envelope {
    /// Channel number at the receiving subtask.
    pub channel: usize,
    /// The message.
    pub msg: Message,
}

/// Sending half of a subtask's queue.
pub type Tx = mpsc::Sender<Envelope>;
/// Receiving half of a subtask's queue.
pub type Rx = mpsc::Receiver<Envelope>;

/// One downstream edge as seen by one upstream subtask.
pub struct Route {
    /// `(queue, channel number at that receiver)` per reachable downstream subtask.
    pub targets: Vec<(Tx, usize)>,
    /// Hash key columns; `None` = forward to the single target.
    pub hash_keys: Option<Vec<usize>>,
}

/// Everything an upstream subtask sends to, with its backpressure counter.
pub struct Outputs {
    /// One route per consuming edge.
    pub routes: Vec<Route>,
    /// Nanoseconds spent waiting on full queues.
    pub blocked_ns: Counter,
    random_state: RandomState,
}

/// Fixed hash seed: every subtask must route a key to the same place.
const HASH_SEED: u64 = 0x5eed_7275_6e6e_656c;

impl Outputs {
    /// Outputs over `routes`.
    pub fn new(routes: Vec<Route>, blocked_ns: Counter) -> Self {
        Self {
            routes,
            blocked_ns,
            random_state: RandomState::with_seed(HASH_SEED),
        }
    }

    /// Sends a batch along every route, partitioning where the edge is hashed.
    pub async fn send_batch(&self, batch: RecordBatch) -> Result<(), EngineError> {
        for route in &self.routes {
            match &route.hash_keys {
                None => {
                    for (tx, ch) in &route.targets {
                        send(tx, *ch, Message::Data(batch.clone()), &self.blocked_ns).await?;
                    }
                }
                Some(keys) => {
                    let parts = partition(&batch, keys, route.targets.len(), &self.random_state)?;
                    for (part, (tx, ch)) in parts.into_iter().zip(&route.targets) {
                        if let Some(part) = part {
                            send(tx, *ch, Message::Data(part), &self.blocked_ns).await?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends a control message (watermark, barrier, end) to every target.
    pub async fn broadcast(&self, msg: Message) -> Result<(), EngineError> {
        for route in &self.routes {
            for (tx, ch) in &route.targets {
                send(tx, *ch, msg.clone(), &self.blocked_ns).await?;
            }
        }
        Ok(())
    }
}

async fn send(tx: &Tx, channel: usize, msg: Message, blocked: &Counter) -> Result<(), EngineError> {
    let env = Envelope { channel, msg };
    match tx.try_send(env) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(env)) => {
            let start = Instant::now();
            let r = tx.send(env).await;
            blocked.add(start.elapsed().as_nanos() as u64);
            // A closed receiver means that subtask failed; its error is reported by the run.
            r.map_err(|_| EngineError::Internal("downstream subtask stopped".into()))
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            Err(EngineError::Internal("downstream subtask stopped".into()))
        }
    }
}

/// Splits `batch` into `n` parts by the hash of `keys`; `None` for empty parts.
pub fn partition(
    batch: &RecordBatch,
    keys: &[usize],
    n: usize,
    state: &RandomState,
) -> Result<Vec<Option<RecordBatch>>, EngineError> {
    if n == 1 || keys.is_empty() {
        // No keys: everything meets in subtask 0 (e.g. a global session).
        let mut parts = vec![None; n];
        parts[0] = Some(batch.clone());
        return Ok(parts);
    }
    let arrays: Vec<ArrayRef> = keys.iter().map(|&k| Arc::clone(batch.column(k))).collect();
    let mut hashes = vec![0u64; batch.num_rows()];
    create_hashes(&arrays, state, &mut hashes)
        .map_err(|e| EngineError::Internal(format!("hashing keys: {e}")))?;
    let mut indices: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (row, h) in hashes.iter().enumerate() {
        indices[(*h % n as u64) as usize].push(row as u32);
    }
    indices
        .into_iter()
        .map(|idx| {
            if idx.is_empty() {
                Ok(None)
            } else if idx.len() == batch.num_rows() {
                Ok(Some(batch.clone()))
            } else {
                take_record_batch(batch, &UInt32Array::from(idx))
                    .map(Some)
                    .map_err(|e| EngineError::Internal(format!("partitioning batch: {e}")))
            }
        })
        .collect()
}
