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
    /// What is wrong with the connector's external system right now (a broker that
    /// cannot be reached) while it retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// A quality node's rules with their violation counts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleStatus>,
}

/// A validation rule and how often rows violated it.
#[derive(Debug, Clone, Serialize)]
pub struct RuleStatus {
    /// The table it belongs to.
    pub table: String,
    /// The rule's name.
    pub rule: String,
    /// `CHECK (…)` or `column NOT NULL`.
    pub text: String,
    /// `dead-letter`, `drop`, `fail` or `warn`.
    pub action: String,
    /// Rows that violated it.
    pub violations: u64,
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
    /// Why a `failed` pipeline stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    /// A distributed pipeline's member: the group's members, this member's tasks with
    /// their lag and checkpoint age.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distributed: Option<Value>,
    /// Data quality per table: rule violations, dead letters, late rows and (with
    /// `SET 'quality.profile' = 'on'`) each source's profile. `None` without rules or
    /// profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<Value>,
    /// The latest dead letters, newest first: time, table, location, reason, the raw
    /// record (cut short) and where it was written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dead_letters: Vec<Value>,
}

impl PipelineStatus {
    /// A pipeline without a graph to show (stopped, failed before it ran, or a distributed
    /// member whose tasks report elsewhere): its name and state, nothing else.
    pub fn bare(name: &str, state: &str, error: Option<String>) -> Self {
        PipelineStatus {
            name: name.to_string(),
            state: state.to_string(),
            health: if state == "failed" { "failed" } else { "ok" }.into(),
            error,
            started_ms: 0,
            uptime_s: 0.0,
            parallelism: 0,
            nodes: Vec::new(),
            edges: Vec::new(),
            checkpoint: None,
            distributed: None,
            quality: None,
            dead_letters: Vec::new(),
        }
    }
}

/// A table whose quality the status reports.
struct QualityTable {
    table: String,
    /// `source` or `sink`.
    role: &'static str,
    /// The source node (sources).
    source: Option<usize>,
    /// Its quality node, if it has rules.
    rules: Option<usize>,
    /// Nodes downstream of the source (their late rows are its late rows).
    downstream: Vec<usize>,
}

/// The tables of `graph` with rules, and with `profiling` every source.
fn quality_tables(graph: &PipelineGraph, profiling: bool) -> Vec<QualityTable> {
    let mut out: Vec<QualityTable> = Vec::new();
    for n in &graph.nodes {
        match &n.spec {
            NodeSpec::Source(t, _) => {
                let mut downstream = Vec::new();
                let mut todo = vec![n.id];
                while let Some(id) = todo.pop() {
                    for (c, _) in graph.consumers(id) {
                        if !downstream.contains(&c) {
                            downstream.push(c);
                            todo.push(c);
                        }
                    }
                }
                let rules = downstream.iter().copied().find(|&d| {
                    matches!(&graph.nodes[d].spec, NodeSpec::Quality(q) if !q.sink && q.table.name == t.name)
                });
                if profiling || rules.is_some() {
                    out.push(QualityTable {
                        table: t.name.clone(),
                        role: "source",
                        source: Some(n.id),
                        rules,
                        downstream,
                    });
                }
            }
            NodeSpec::Quality(q)
                if q.sink
                    && !out
                        .iter()
                        .any(|t| t.role == "sink" && t.table == q.table.name) =>
            {
                out.push(QualityTable {
                    table: q.table.name.clone(),
                    role: "sink",
                    source: None,
                    rules: Some(n.id),
                    downstream: Vec::new(),
                });
            }
            _ => {}
        }
    }
    out
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
pub struct RunState(Arc<Mutex<(&'static str, Option<String>)>>);

impl RunState {
    /// Sets `starting`, `running`, `finished` or `failed`.
    pub fn set(&self, state: &'static str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).0 = state;
    }

    /// Sets `failed` with the error that stopped the pipeline.
    pub fn fail(&self, error: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = ("failed", Some(error));
    }

    pub(crate) fn get(&self) -> (&'static str, Option<String>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Counts at the last rate sample, and the rates computed then.
struct Sample {
    at: Instant,
    counts: Vec<(u64, u64)>,
    rates: Vec<(f64, f64)>,
}

/// One node as the status shows it.
struct NodeInfo {
    id: usize,
    kind: String,
    label: String,
    /// A projection calling a blocking function (`classify`): its dead letters are the
    /// function's rejects.
    blocking: bool,
    is_source: bool,
    /// A quality node's rules: (table, rule, text, action).
    rules: Vec<(String, String, String, String)>,
}

/// Everything the status closure reads.
struct Tracker {
    name: String,
    nodes: Vec<NodeInfo>,
    edges: Vec<EdgeStatus>,
    metrics: PipelineMetrics,
    parallelism: usize,
    state: RunState,
    classify_rejects: Option<Counter>,
    checkpoints: Option<runnel_engine::checkpoint::SharedStats>,
    started: Instant,
    started_ms: i64,
    sample: Mutex<Sample>,
    quality: Vec<QualityTable>,
    dead_letters: Option<std::sync::Arc<runnel_connectors::dead_letters::DeadLetters>>,
}

/// What a running pipeline's status reads, besides its graph.
pub struct Readings {
    /// The engine's counters.
    pub metrics: PipelineMetrics,
    /// Where the pipeline is in its life.
    pub state: RunState,
    /// The image functions' rejects, counted as dead letters of the projection that
    /// calls them.
    pub classify_rejects: Option<Counter>,
    /// The checkpoints, when it checkpoints.
    pub checkpoints: Option<runnel_engine::checkpoint::SharedStats>,
    /// The dead-letter service (its latest letters).
    pub dead_letters: Option<std::sync::Arc<runnel_connectors::dead_letters::DeadLetters>>,
}

/// The admin handle of a pipeline.
pub fn handle(
    name: &str,
    graph: &PipelineGraph,
    parallelism: usize,
    readings: Readings,
) -> PipelineHandle {
    let Readings {
        metrics,
        state,
        classify_rejects,
        checkpoints,
        dead_letters,
    } = readings;
    let nodes: Vec<NodeInfo> = graph
        .nodes
        .iter()
        .map(|n| NodeInfo {
            id: n.id,
            kind: n.spec.kind().to_string(),
            label: describe(n),
            blocking: matches!(&n.spec, NodeSpec::Project(p) if p.blocking),
            is_source: matches!(n.spec, NodeSpec::Source(..)),
            rules: match &n.spec {
                NodeSpec::Quality(q) => q
                    .rules
                    .iter()
                    .map(|r| {
                        (
                            q.table.name.clone(),
                            r.name.clone(),
                            r.text.clone(),
                            r.action.as_str().to_string(),
                        )
                    })
                    .collect(),
                _ => Vec::new(),
            },
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
    let started = Instant::now();
    let tracker = Tracker {
        name: name.to_string(),
        sample: Mutex::new(Sample {
            at: started,
            counts: vec![(0, 0); nodes.len()],
            rates: vec![(0.0, 0.0); nodes.len()],
        }),
        nodes,
        edges,
        metrics,
        parallelism,
        state,
        classify_rejects,
        checkpoints,
        started,
        started_ms: runnel_common::time::now_ms(),
        quality: quality_tables(graph, runnel_engine::profiling(graph)),
        dead_letters,
    };
    PipelineHandle {
        name: name.to_string(),
        status: Arc::new(move || tracker.status()),
    }
}

impl Tracker {
    fn status(&self) -> PipelineStatus {
        let counts: Vec<(u64, u64)> = self
            .nodes
            .iter()
            .map(|n| {
                self.metrics.nodes.get(n.id).map_or((0, 0), |m| {
                    let out = m.rows_out.get().max(m.connector.rows.get());
                    (m.rows_in.get(), out)
                })
            })
            .collect();
        let rates = self.rates(&counts);
        let wall = runnel_common::time::now_ms();
        let nodes = self
            .nodes
            .iter()
            .zip(counts.iter().zip(&rates))
            .map(|(n, (c, r))| self.node(n, *c, *r, wall))
            .collect();
        let (run_state, error) = self.state.get();
        PipelineStatus {
            name: self.name.clone(),
            state: run_state.to_string(),
            health: if run_state == "failed" {
                "failed".into()
            } else {
                "ok".into()
            },
            error,
            started_ms: self.started_ms,
            uptime_s: self.started.elapsed().as_secs_f64(),
            parallelism: self.parallelism,
            nodes,
            edges: self.edges.clone(),
            checkpoint: self
                .checkpoints
                .as_ref()
                .and_then(|c| c.lock().ok().map(|c| checkpoint_json(&c))),
            distributed: None,
            quality: self.quality_json(),
            dead_letters: self
                .dead_letters
                .as_ref()
                .map(|d| d.recent())
                .unwrap_or_default(),
        }
    }

    /// The quality section of the status (see [`PipelineStatus::quality`]).
    fn quality_json(&self) -> Option<Value> {
        if self.quality.is_empty() {
            return None;
        }
        let node = |id: usize| self.metrics.nodes.get(id).cloned().unwrap_or_default();
        let tables: Vec<Value> = self
            .quality
            .iter()
            .map(|t| {
                let rules: Vec<RuleStatus> = t
                    .rules
                    .and_then(|id| self.nodes.get(id))
                    .map(|n| rule_statuses(n, &node(n.id)))
                    .unwrap_or_default();
                let mut v = serde_json::json!({
                    "table": t.table,
                    "role": t.role,
                    "rules": rules,
                    "violations": rules.iter().map(|r| r.violations).sum::<u64>(),
                });
                if let (Some(src), Value::Object(map)) = (t.source, &mut v) {
                    let m = node(src);
                    map.insert(
                        "rows".into(),
                        m.rows_out.get().max(m.connector.rows.get()).into(),
                    );
                    map.insert("dead_letters".into(), m.connector.dead_letters.get().into());
                    map.insert(
                        "late_rows".into(),
                        t.downstream
                            .iter()
                            .map(|&d| node(d).late_rows.get())
                            .sum::<u64>()
                            .into(),
                    );
                    if let Some(p) = m.profile.json() {
                        map.insert("profile".into(), p);
                    }
                }
                v
            })
            .collect();
        Some(serde_json::json!({ "tables": tables }))
    }

    /// Rows per second in and out since the last sample at least half a second ago.
    fn rates(&self, counts: &[(u64, u64)]) -> Vec<(f64, f64)> {
        let now = Instant::now();
        let mut s = self.sample.lock().unwrap_or_else(|p| p.into_inner());
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
            s.counts = counts.to_vec();
            s.at = now;
        }
        s.rates.clone()
    }

    fn node(&self, n: &NodeInfo, c: (u64, u64), r: (f64, f64), wall: i64) -> NodeStatus {
        let m = self.metrics.nodes.get(n.id).cloned().unwrap_or_default();
        let wm = m.watermark.get();
        let watermark_ms =
            (wm > runnel_common::time::TS_MIN && wm < runnel_common::time::TS_MAX).then_some(wm);
        let mut dead = m.connector.dead_letters.get();
        if n.blocking
            && let Some(r) = &self.classify_rejects
        {
            dead += r.get();
        }
        NodeStatus {
            id: n.id,
            kind: n.kind.clone(),
            label: n.label.clone(),
            parallelism: self.parallelism,
            // A source's input is what its connector read.
            rows_in: if n.is_source { c.1 } else { c.0 },
            rows_out: c.1,
            rows_in_per_s: if n.is_source { r.1 } else { r.0 },
            rows_out_per_s: r.1,
            watermark_ms,
            watermark_lag_ms: watermark_ms.map(|w| wall - w),
            blocked_ms: m.blocked_ns.get() / 1_000_000,
            late_rows: m.late_rows.get(),
            dead_letters: dead,
            problem: m.connector.problem(),
            rules: rule_statuses(n, &m),
        }
    }
}

/// A quality node's rules with their counts so far.
fn rule_statuses(n: &NodeInfo, m: &runnel_engine::metrics::NodeMetrics) -> Vec<RuleStatus> {
    let counts = m.rules.values();
    n.rules
        .iter()
        .map(|(table, rule, text, action)| RuleStatus {
            table: table.clone(),
            rule: rule.clone(),
            text: text.clone(),
            action: action.clone(),
            violations: counts
                .iter()
                .find(|(r, _)| r == rule)
                .map_or(0, |(_, c)| *c),
        })
        .collect()
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
        map.insert("history".into(), serde_json::json!(c.history));
    }
    v
}

/// A node's name as the page shows it: what it does, in the script's terms
/// (`filter temp > 20`, `project sensor, temp`), where the planner's label is generic.
fn describe(node: &runnel_sql::Node) -> String {
    let NodeSpec::Project(p) = &node.spec else {
        return node.label.clone();
    };
    let columns: Vec<&str> = node
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let shown = if columns.len() > 4 {
        format!("{}, …", columns[..3].join(", "))
    } else {
        columns.join(", ")
    };
    let text = match &p.filter {
        Some(f) => format!("filter {}", runnel_engine::eval::readable(&f.to_string())),
        None if p.blocking => format!("{} → {shown}", node.label),
        None => format!("project {shown}"),
    };
    cut_label(&text, 60)
}

fn cut_label(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}
