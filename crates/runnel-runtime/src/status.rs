//! A running pipeline's status for the admin API, the page and `/metrics`: the graph
//! with each node's counters, rates computed between successive samples. The server
//! depends on these types; they depend on nothing of the server.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use runnel_common::metrics::Counter;
use runnel_engine::PipelineMetrics;
use runnel_sql::{NodeSpec, Partitioning, PipelineGraph};
use serde::Serialize;
use serde_json::Value;

/// One node of a running pipeline, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Index in the graph.
    pub id: usize,
    /// `source`, `project`, `window_aggregate`, …, `sink`.
    pub kind: String,
    /// Human-readable name.
    pub label: String,
    /// Subtasks.
    pub parallelism: usize,
    /// Rows received.
    pub rows_in: u64,
    /// Rows emitted (sources: read; sinks: written).
    pub rows_out: u64,
    /// Rows received per second, over the last interval.
    pub rows_in_per_s: f64,
    /// Rows emitted per second, over the last interval.
    pub rows_out_per_s: f64,
    /// Current event-time watermark (ms since the epoch), if any.
    pub watermark_ms: Option<i64>,
    /// Wall clock minus the watermark, in ms.
    pub watermark_lag_ms: Option<i64>,
    /// Time spent waiting on full output channels (backpressure), in ms.
    pub blocked_ms: u64,
    /// Rows dropped as late.
    pub late_rows: u64,
    /// Records sent to a dead-letter output.
    pub dead_letters: u64,
}

/// An edge of the pipeline graph.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeStatus {
    /// Upstream node id.
    pub from: usize,
    /// Downstream node id.
    pub to: usize,
    /// `forward` or `hash`.
    pub partitioning: String,
}

/// A running pipeline as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineStatus {
    /// `SET 'pipeline.name'` or the file name.
    pub name: String,
    /// `starting`, `running`, `finished` or `failed`.
    pub state: String,
    /// `ok`, or what is wrong.
    pub health: String,
    /// Start time, ms since the epoch.
    pub started_ms: i64,
    /// Seconds since start.
    pub uptime_s: f64,
    /// Subtasks per operator.
    pub parallelism: usize,
    /// Every node with its counters.
    pub nodes: Vec<NodeStatus>,
    /// Every edge.
    pub edges: Vec<EdgeStatus>,
    /// The last completed checkpoint, if checkpointing runs.
    pub checkpoint: Option<Value>,
}

/// Produces a pipeline's current status on demand.
pub type StatusFn = Arc<dyn Fn() -> PipelineStatus + Send + Sync>;

/// A pipeline the server reports on.
#[derive(Clone)]
pub struct PipelineHandle {
    /// Its name in URLs.
    pub name: String,
    /// Its live status.
    pub status: StatusFn,
}

/// Where a pipeline is in its life, shared with the status closure.
#[derive(Clone, Default)]
pub struct RunState(Arc<Mutex<&'static str>>);

impl RunState {
    /// Sets `starting`, `running`, `finished` or `failed`.
    pub fn set(&self, state: &'static str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    fn get(&self) -> &'static str {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Sample {
    at: Instant,
    counts: Vec<(u64, u64)>,
    rates: Vec<(f64, f64)>,
}

/// The admin handle of a pipeline; `classify_rejects` is counted as dead letters of the
/// projection that calls `classify`.
pub fn handle(
    name: &str,
    graph: &PipelineGraph,
    metrics: PipelineMetrics,
    parallelism: usize,
    state: RunState,
    classify_rejects: Option<Counter>,
    checkpoints: Option<runnel_engine::checkpoint::SharedStats>,
) -> PipelineHandle {
    let started = Instant::now();
    let started_ms = runnel_common::time::now_ms();
    let nodes: Vec<(usize, String, String, bool, bool)> = graph
        .nodes
        .iter()
        .map(|n| {
            let blocking = matches!(&n.spec, NodeSpec::Project(p) if p.blocking);
            let is_source = matches!(n.spec, NodeSpec::Source(_));
            (
                n.id,
                n.spec.kind().to_string(),
                n.label.clone(),
                blocking,
                is_source,
            )
        })
        .collect();
    let edges: Vec<EdgeStatus> = graph
        .nodes
        .iter()
        .flat_map(|n| {
            n.inputs.iter().map(move |i| EdgeStatus {
                from: i.node,
                to: n.id,
                partitioning: match i.partitioning {
                    Partitioning::Forward => "forward".into(),
                    Partitioning::Hash(_) => "hash".into(),
                },
            })
        })
        .collect();
    let sample = Mutex::new(Sample {
        at: started,
        counts: vec![(0, 0); nodes.len()],
        rates: vec![(0.0, 0.0); nodes.len()],
    });
    let name_owned = name.to_string();
    let status = move || {
        let now = Instant::now();
        let wall = runnel_common::time::now_ms();
        let counts: Vec<(u64, u64)> = nodes
            .iter()
            .map(|(id, ..)| {
                metrics.nodes.get(*id).map_or((0, 0), |m| {
                    let out = m.rows_out.get().max(m.connector.rows.get());
                    (m.rows_in.get(), out)
                })
            })
            .collect();
        let rates = {
            let mut s = sample.lock().unwrap_or_else(|p| p.into_inner());
            let dt = now.duration_since(s.at).as_secs_f64();
            if dt >= 0.5 {
                s.rates = counts
                    .iter()
                    .zip(&s.counts)
                    .map(|(c, p)| {
                        (
                            c.0.saturating_sub(p.0) as f64 / dt,
                            c.1.saturating_sub(p.1) as f64 / dt,
                        )
                    })
                    .collect();
                s.counts = counts.clone();
                s.at = now;
            }
            s.rates.clone()
        };
        let node_status = nodes
            .iter()
            .zip(counts.iter().zip(&rates))
            .map(|((id, kind, label, blocking, is_source), (c, r))| {
                let m = metrics.nodes.get(*id).cloned().unwrap_or_default();
                let wm = m.watermark.get();
                let watermark_ms = (wm > runnel_common::time::TS_MIN
                    && wm < runnel_common::time::TS_MAX)
                    .then_some(wm);
                let mut dead = m.connector.dead_letters.get();
                if *blocking && let Some(r) = &classify_rejects {
                    dead += r.get();
                }
                NodeStatus {
                    id: *id,
                    kind: kind.clone(),
                    label: label.clone(),
                    parallelism,
                    // A source's input is what its connector read.
                    rows_in: if *is_source { c.1 } else { c.0 },
                    rows_out: c.1,
                    rows_in_per_s: if *is_source { r.1 } else { r.0 },
                    rows_out_per_s: r.1,
                    watermark_ms,
                    watermark_lag_ms: watermark_ms.map(|w| wall - w),
                    blocked_ms: m.blocked_ns.get() / 1_000_000,
                    late_rows: m.late_rows.get(),
                    dead_letters: dead,
                }
            })
            .collect();
        let run_state = state.get();
        PipelineStatus {
            name: name_owned.clone(),
            state: run_state.to_string(),
            health: if run_state == "failed" {
                "failed".into()
            } else {
                "ok".into()
            },
            started_ms,
            uptime_s: started.elapsed().as_secs_f64(),
            parallelism,
            nodes: node_status,
            edges: edges.clone(),
            checkpoint: checkpoints
                .as_ref()
                .and_then(|c| c.lock().ok().map(|c| checkpoint_json(&c))),
        }
    };
    PipelineHandle {
        name: name.to_string(),
        status: Arc::new(status),
    }
}

/// The last checkpoint's fields at the top level (what the page shows), with the failed
/// ones and the one the run resumed from.
fn checkpoint_json(c: &runnel_engine::checkpoint::CheckpointStats) -> serde_json::Value {
    let mut v = match &c.last {
        Some(last) => serde_json::to_value(last).unwrap_or_default(),
        None => serde_json::json!({ "id": null }),
    };
    if let serde_json::Value::Object(map) = &mut v {
        map.insert("failed".into(), serde_json::json!(c.failed));
        map.insert("restored_from".into(), serde_json::json!(c.restored_from));
    }
    v
}
