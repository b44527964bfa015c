//! The coordinator task: triggers checkpoints at the interval, collects every subtask's
//! report, writes state files and the manifest, tells sinks to commit, and keeps the
//! newest `retain` checkpoints.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use tokio::sync::{broadcast, mpsc};

use super::manifest::{FORMAT_VERSION, Manifest, NamedBatches, SubtaskEntry, encode_state};
use super::{
    CheckpointConfig, CheckpointError, CheckpointInfo, CheckpointRequest, HISTORY, Participant,
    Report, SharedStats,
};
use crate::error::EngineError;

/// The coordinator task: triggers checkpoints, collects reports, writes them.
pub struct Coordinator {
    config: CheckpointConfig,
    expected: Vec<(usize, usize)>,
    sources: Vec<(usize, usize)>,
    reports: mpsc::UnboundedReceiver<Report>,
    triggers: broadcast::Sender<u64>,
    commits: broadcast::Sender<u64>,
    stats: SharedStats,
    /// Checkpoints asked for now (savepoints).
    requests: Option<mpsc::UnboundedReceiver<CheckpointRequest>>,
}

struct InFlight {
    started: Instant,
    started_ms: i64,
    done: BTreeMap<(usize, usize), SubtaskEntry>,
    states: Vec<((usize, usize), NamedBatches)>,
}

impl Coordinator {
    /// A coordinator expecting a report from every `(node, subtask)` in `expected`, of which
    /// `sources` inject barriers.
    pub fn new(
        config: CheckpointConfig,
        expected: Vec<(usize, usize)>,
        sources: Vec<(usize, usize)>,
        stats: SharedStats,
    ) -> (Coordinator, Participant, Participant) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (triggers, _) = broadcast::channel(16);
        let (commits, _) = broadcast::channel(16);
        let source_part = Participant {
            reports: tx.clone(),
            signals: triggers.clone(),
            completed: commits.clone(),
        };
        let sink_part = Participant {
            reports: tx,
            signals: commits.clone(),
            completed: commits.clone(),
        };
        (
            Coordinator {
                config,
                expected,
                sources,
                reports: rx,
                triggers,
                commits,
                stats,
                requests: None,
            },
            source_part,
            sink_part,
        )
    }

    /// Where to ask for a checkpoint now: each request is answered once the next
    /// checkpoint (started at once, or after the one in flight) completes or fails.
    pub fn requests(&mut self) -> mpsc::UnboundedSender<CheckpointRequest> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.requests = Some(rx);
        tx
    }

    /// Runs until every subtask ended (or the pipeline is dropped).
    pub async fn run(mut self) -> Result<(), EngineError> {
        // After the restored checkpoint, and after any newer one in the directory (a
        // pipeline resumed from an older savepoint must not overwrite them).
        let newest = self
            .config
            .dir
            .complete_ids()
            .await
            .ok()
            .and_then(|ids| ids.last().copied())
            .unwrap_or(0);
        let mut next_id = self
            .config
            .restore
            .as_ref()
            .map_or(0, |r| r.manifest.id)
            .max(newest)
            + 1;
        let mut requests = self.requests.take();
        // Requests waiting for the next checkpoint, and those waiting for one in flight.
        let mut queued: Vec<CheckpointRequest> = Vec::new();
        let mut waiting: HashMap<u64, Vec<CheckpointRequest>> = HashMap::new();
        let mut ended: HashMap<(usize, usize), Option<serde_json::Value>> = HashMap::new();
        let mut finishing: std::collections::HashSet<(usize, usize)> = Default::default();
        let mut inflight: BTreeMap<u64, InFlight> = BTreeMap::new();
        let mut tick = tokio::time::interval(self.config.interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if ended.len() == self.expected.len() {
                        return Ok(());
                    }
                    // One checkpoint at a time: a slow one delays the next, never overlaps it.
                    // Barriers start at live sources; with none left there is nothing to do.
                    if !inflight.is_empty() || self.sources.iter().all(|k| ended.contains_key(k)) {
                        continue;
                    }
                    self.trigger(&mut next_id, &mut inflight);
                }
                request = async {
                    match requests.as_mut() {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let Some(request) = request else {
                        requests = None;
                        continue;
                    };
                    if self.sources.iter().all(|k| ended.contains_key(k)) {
                        let _ = request.send(Err(
                            "every source has ended: there is nothing left to checkpoint".into(),
                        ));
                    } else if inflight.is_empty() {
                        let id = self.trigger(&mut next_id, &mut inflight);
                        waiting.entry(id).or_default().push(request);
                    } else {
                        queued.push(request);
                    }
                }
                report = self.reports.recv() => {
                    let Some(report) = report else { return Ok(()) };
                    match report {
                        Report::Finishing { node, subtask } => {
                            finishing.insert((node, subtask));
                        }
                        Report::Ended { node, subtask, position } => {
                            ended.insert((node, subtask), position);
                        }
                        Report::Done { id, node, subtask, position, watermark, idle, state } => {
                            if let Some(f) = inflight.get_mut(&id) {
                                let file = (!state.is_empty()).then(|| format!("{id}/op-{node}-{subtask}.arrows"));
                                f.done.insert((node, subtask), SubtaskEntry {
                                    node, subtask, position, watermark, idle, file, ended: false,
                                });
                                if !state.is_empty() {
                                    f.states.push(((node, subtask), state));
                                }
                            }
                        }
                    }
                    // Complete what every live subtask has reported.
                    let ready: Vec<u64> = inflight
                        .iter()
                        .filter(|(_, f)| self.expected.iter().all(|k| f.done.contains_key(k) || ended.contains_key(k)))
                        .map(|(id, _)| *id)
                        .collect();
                    for id in ready {
                        let Some(f) = inflight.remove(&id) else { continue };
                        let result = self.complete(id, f, &ended).await;
                        for w in waiting.remove(&id).unwrap_or_default() {
                            let _ = w.send(match &result {
                                Ok(info) => Ok(info.clone()),
                                Err(e) => Err(e.to_string()),
                            });
                        }
                        match result {
                            Ok(info) => {
                                if let Ok(mut s) = self.stats.lock() {
                                    s.history.push(info.clone());
                                    let n = s.history.len();
                                    if n > HISTORY {
                                        s.history.drain(..n - HISTORY);
                                    }
                                    s.last = Some(info);
                                }
                                let _ = self.commits.send(id);
                                self.retain().await;
                            }
                            Err(CheckpointError::Fenced(why)) => {
                                // Another member owns the task now: stop, publishing nothing.
                                return Err(EngineError::Fenced(why));
                            }
                            Err(e) => {
                                tracing::warn!("checkpoint {id} failed: {e}");
                                if let Ok(mut s) = self.stats.lock() {
                                    s.failed.push(format!("{id}: {e}"));
                                    let n = s.failed.len();
                                    if n > 10 {
                                        s.failed.drain(..n - 10);
                                    }
                                }
                            }
                        }
                    }
                    // Requests that came while another checkpoint was in flight.
                    if inflight.is_empty() && !queued.is_empty() {
                        if self.sources.iter().all(|k| ended.contains_key(k)) {
                            for q in queued.drain(..) {
                                let _ = q.send(Err("every source has ended: there is nothing left to checkpoint".into()));
                            }
                        } else {
                            let id = self.trigger(&mut next_id, &mut inflight);
                            waiting.entry(id).or_default().append(&mut queued);
                        }
                    }
                    // Every live source reached its end: cover the last rows now rather
                    // than at the next tick.
                    let live: Vec<_> = self.sources.iter().filter(|k| !ended.contains_key(k)).collect();
                    if inflight.is_empty() && !live.is_empty() && live.iter().all(|k| finishing.contains(k)) {
                        finishing.clear();
                        self.trigger(&mut next_id, &mut inflight);
                    }
                }
            }
        }
    }

    fn trigger(&self, next_id: &mut u64, inflight: &mut BTreeMap<u64, InFlight>) -> u64 {
        let id = *next_id;
        *next_id += 1;
        inflight.insert(
            id,
            InFlight {
                started: Instant::now(),
                started_ms: runnel_common::time::now_ms(),
                done: BTreeMap::new(),
                states: Vec::new(),
            },
        );
        let _ = self.triggers.send(id);
        id
    }

    async fn complete(
        &self,
        id: u64,
        f: InFlight,
        ended: &HashMap<(usize, usize), Option<serde_json::Value>>,
    ) -> Result<CheckpointInfo, CheckpointError> {
        let mut size = 0u64;
        let InFlight {
            started,
            started_ms,
            done,
            states,
        } = f;
        for ((node, subtask), state) in states {
            // Encoding a large state takes seconds of CPU: keep it off the async threads.
            let bytes = tokio::task::spawn_blocking(move || encode_state(&state))
                .await
                .map_err(|e| CheckpointError::Internal(format!("encoding state: {e}")))??;
            size += bytes.len() as u64;
            self.config
                .dir
                .put(&format!("{id}/op-{node}-{subtask}.arrows"), bytes)
                .await?;
        }
        let mut subtasks: Vec<SubtaskEntry> = done.into_values().collect();
        for ((node, subtask), position) in ended {
            if !subtasks
                .iter()
                .any(|e| e.node == *node && e.subtask == *subtask)
            {
                subtasks.push(SubtaskEntry {
                    node: *node,
                    subtask: *subtask,
                    position: position.clone(),
                    watermark: runnel_common::time::TS_MAX,
                    idle: false,
                    file: None,
                    ended: true,
                });
            }
        }
        subtasks.sort_by_key(|e| (e.node, e.subtask));
        let manifest = Manifest {
            version: FORMAT_VERSION,
            pipeline: self.config.pipeline.clone(),
            fingerprint: self.config.fingerprint.clone(),
            id,
            started_ms,
            duration_ms: started.elapsed().as_millis() as u64,
            size_bytes: size,
            subtasks,
            owner: self.config.owner.clone(),
        };
        // In a distributed run, only while this member still owns the task (checked and
        // published under the directory's owner lock, so a claim cannot come between).
        self.config.dir.publish(&manifest).await?;
        Ok(CheckpointInfo {
            id,
            time_ms: runnel_common::time::now_ms(),
            duration_ms: manifest.duration_ms,
            size_bytes: size,
        })
    }

    /// Deletes checkpoints older than the newest `retain` complete ones.
    async fn retain(&self) {
        let dir = &self.config.dir;
        let keep = self.config.retain.max(1);
        let ids = match dir.complete_ids().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!("not deleting old checkpoints: {e}");
                return;
            }
        };
        if ids.len() > keep {
            for id in &ids[..ids.len() - keep] {
                dir.delete(*id).await;
            }
        }
    }
}
