//! `PipelineGraph`: the dataflow the engine runs, produced by the planner.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion_physical_expr::PhysicalExpr;
use runnel_common::TableSpec;

/// A streaming dataflow: nodes in topological order (inputs before users).
#[derive(Debug, Clone, Default)]
pub struct PipelineGraph {
    /// Nodes; a node's inputs always have smaller indices.
    pub nodes: Vec<Node>,
    /// `SET 'key' = 'value'` options of the script, in order of appearance.
    pub settings: BTreeMap<String, String>,
}

/// One operator of the dataflow; it runs as `parallelism` subtasks.
#[derive(Debug, Clone)]
pub struct Node {
    /// Index in [`PipelineGraph::nodes`].
    pub id: usize,
    /// Human-readable name for logs, the summary and the dashboard.
    pub label: String,
    /// What the node does.
    pub spec: NodeSpec,
    /// Schema of the batches the node emits (for sinks: the sink's columns).
    pub schema: SchemaRef,
    /// Where its rows come from.
    pub inputs: Vec<Input>,
    /// Index of the event-time column in `schema`, if the rows carry one.
    pub event_time: Option<usize>,
}

/// An edge into a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// The upstream node.
    pub node: usize,
    /// How upstream subtasks' rows reach this node's subtasks.
    pub partitioning: Partitioning,
}

/// How rows travel along an edge ("split layer").
#[derive(Debug, Clone, PartialEq)]
pub enum Partitioning {
    /// Subtask i sends to subtask i (same parallelism): no reshuffle.
    Forward,
    /// Rows go to the subtask chosen by hashing these upstream columns.
    Hash(Vec<usize>),
}

/// The kinds of node.
#[derive(Clone)]
pub enum NodeSpec {
    /// Reads a declared table through its connector.
    Source(TableSpec),
    /// Filter and projection with vectorized DataFusion expressions.
    Project(ProjectSpec),
    /// Writes to a declared table through its connector.
    Sink(TableSpec),
}

/// `WHERE filter` then `SELECT exprs` over each input batch.
#[derive(Clone)]
pub struct ProjectSpec {
    /// Rows where this is not true are dropped.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// One expression per output column.
    pub exprs: Vec<Arc<dyn PhysicalExpr>>,
}

impl fmt::Debug for NodeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeSpec::Source(t) => write!(f, "Source({} via {})", t.name, t.connector()),
            NodeSpec::Project(p) => write!(
                f,
                "Project(filter: {}, exprs: [{}])",
                p.filter
                    .as_ref()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "-".into()),
                p.exprs
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            NodeSpec::Sink(t) => write!(f, "Sink({} via {})", t.name, t.connector()),
        }
    }
}

impl NodeSpec {
    /// Short kind name: `source`, `project`, `sink`, …
    pub fn kind(&self) -> &'static str {
        match self {
            NodeSpec::Source(_) => "source",
            NodeSpec::Project(_) => "project",
            NodeSpec::Sink(_) => "sink",
        }
    }
}

impl PipelineGraph {
    /// The nodes that read `id`'s output.
    pub fn consumers(&self, id: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for n in &self.nodes {
            for (i, input) in n.inputs.iter().enumerate() {
                if input.node == id {
                    out.push((n.id, i));
                }
            }
        }
        out
    }

    /// A one-line-per-node description (for `--explain` and tests).
    pub fn explain(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            let inputs: Vec<String> = n
                .inputs
                .iter()
                .map(|i| match &i.partitioning {
                    Partitioning::Forward => format!("{}", i.node),
                    Partitioning::Hash(k) => format!("{} hash{k:?}", i.node),
                })
                .collect();
            s.push_str(&format!(
                "{}: {} <- [{}] {:?}\n",
                n.id,
                n.label,
                inputs.join(", "),
                n.spec
            ));
        }
        s
    }
}
