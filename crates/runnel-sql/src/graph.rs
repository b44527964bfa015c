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
    /// An ad-hoc query's result table and final ordering (a bare `SELECT`).
    pub query: Option<crate::QueryResult>,
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
    /// Where `window_start` / `window_end` are, if the rows carry windows.
    pub window: Option<WindowCols>,
    /// `Some(label)` when the node's output is an updating changelog (batches carry a
    /// row-kind column, see `runnel_common::changelog`): the label of the operator that
    /// made it updating. `None`: append-only.
    pub updating: Option<String>,
}

/// The window columns of a node's rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowCols {
    /// Index of `window_start`.
    pub start: usize,
    /// Index of `window_end`.
    pub end: usize,
    /// Set while rows carry unmerged session windows (`window_end` = row time + gap).
    pub session_gap_ms: Option<i64>,
    /// The windows are over a `PROCTIME()` column: they close by the wall clock.
    pub processing_time: bool,
}

/// A window table-valued function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WindowKind {
    /// `TUMBLE(…, size)`.
    Tumble {
        /// Window length.
        size_ms: i64,
    },
    /// `HOP(…, slide, size)`.
    Hop {
        /// Distance between window starts.
        slide_ms: i64,
        /// Window length (a multiple of the slide).
        size_ms: i64,
    },
    /// `CUMULATE(…, step, size)`: windows growing by `step` from each `size` boundary.
    Cumulate {
        /// How much each window is longer than the one before.
        step_ms: i64,
        /// The largest window (a multiple of the step).
        size_ms: i64,
    },
    /// `SESSION(… PARTITION BY …, gap)`.
    Session {
        /// Inactivity that closes a session.
        gap_ms: i64,
    },
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
    /// Reads a declared table through its connector (its physical columns: computed
    /// columns follow in a projection). The expression is set when `WATERMARK FOR`
    /// names a computed column: the source computes its event times with it (the
    /// spec's `watermark.column` then counts the computed columns too, and is not read).
    Source(TableSpec, Option<Arc<dyn PhysicalExpr>>),
    /// Filter and projection with vectorized DataFusion expressions.
    Project(ProjectSpec),
    /// Writes to a declared table through its connector.
    Sink(TableSpec),
    /// Adds `window_start`, `window_end`, `window_time` (HOP repeats rows).
    WindowAssign(WindowAssignSpec),
    /// GROUP BY window (and keys): fires each window once, when the watermark passes its end.
    WindowAggregate(WindowAggSpec),
    /// Joins two windowed inputs on window and keys once the window is complete.
    WindowJoin(WindowJoinSpec),
    /// GROUP BY keys over an unbounded stream: an updating result per key.
    GroupAggregate(GroupAggSpec),
    /// A regular (or interval) join of two streams on equal keys.
    Join(JoinSpec),
    /// `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …)` kept to the first N rows.
    Rank(RankSpec),
    /// Aggregates `OVER (PARTITION BY … ORDER BY time ROWS|RANGE … PRECEDING)`.
    Over(OverSpec),
    /// An upsert source's rows (a new value per key, or a deletion naming only the key)
    /// turned into a changelog with the retracted rows (Flink's ChangelogNormalize).
    Normalize(NormalizeSpec),
    /// `CROSS JOIN UNNEST(…)`: each row once per element of an array or map column.
    Unnest(UnnestSpec),
    /// `JOIN t FOR SYSTEM_TIME AS OF s.proc_time`: each stream row looks up a table.
    LookupJoin(LookupJoinSpec),
    /// A table's validation rules (`CHECK`, `NOT NULL`) applied to the rows it reads
    /// (a source) or is about to write (a sink).
    Quality(QualitySpec),
}

/// The validation rules of one table, checked on every row.
#[derive(Clone, Debug)]
pub struct QualitySpec {
    /// The table whose rules these are (its name and dead-letter options).
    pub table: TableSpec,
    /// The rows are about to be written to the table (else: read from it).
    pub sink: bool,
    /// The rules, in declaration order.
    pub rules: Vec<RuleSpec>,
}

/// One validation rule.
#[derive(Clone, Debug)]
pub struct RuleSpec {
    /// Its name (`CONSTRAINT name`, or one made up from the column).
    pub name: String,
    /// How it reads in a message: `CHECK (temperature BETWEEN -50 AND 60)`.
    pub text: String,
    /// True (or NULL) for a row that passes.
    pub check: Arc<dyn PhysicalExpr>,
    /// The columns it reads: their values are reported with a violation.
    pub columns: Vec<usize>,
    /// What happens to a row that violates it.
    pub action: OnViolation,
}

/// What happens to a row that violates a rule (`'quality.on-violation'`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum OnViolation {
    /// Passed on, counted and logged.
    Warn,
    /// Dropped and counted.
    Drop,
    /// Sent to the dead-letter service with the rule and the values, and counted.
    #[default]
    DeadLetter,
    /// Stops the pipeline.
    Fail,
}

impl OnViolation {
    /// Reads a `'quality.on-violation'` value.
    ///
    /// # Errors
    /// The value is none of `dead-letter`, `drop`, `fail`, `warn`.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "dead-letter" | "dead_letter" => Ok(OnViolation::DeadLetter),
            "drop" => Ok(OnViolation::Drop),
            "fail" => Ok(OnViolation::Fail),
            "warn" => Ok(OnViolation::Warn),
            other => Err(format!(
                "'{other}' is not an action for a violated rule: use 'dead-letter', 'drop', \
                 'fail' or 'warn'"
            )),
        }
    }

    /// As written in options: `dead-letter`, `drop`, `fail`, `warn`.
    pub fn as_str(self) -> &'static str {
        match self {
            OnViolation::Warn => "warn",
            OnViolation::Drop => "drop",
            OnViolation::DeadLetter => "dead-letter",
            OnViolation::Fail => "fail",
        }
    }
}

/// A lookup join (Flink's processing-time temporal join): each stream row is joined
/// with the rows the looked-up table holds when the row arrives. The table is not an
/// input of the dataflow; its connector answers look-ups. Stateless.
#[derive(Clone, Debug)]
pub struct LookupJoinSpec {
    /// The looked-up table (its physical columns).
    pub table: TableSpec,
    /// `LEFT JOIN`: a stream row without a match is kept, NULL-padded.
    pub left_outer: bool,
    /// Key expressions over the stream row (cast to the key columns' types), pairwise
    /// with `table_keys`.
    pub stream_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Key columns of the table.
    pub table_keys: Vec<usize>,
    /// The table's columns in the joined row (after the stream's), in order.
    pub table_columns: Vec<usize>,
    /// Non-equi condition over the joined row (stream columns then table columns).
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

/// Rows repeated per element of one array (or map) column, the element appended
/// (a ROW element as one column per field, a MAP entry as key and value).
#[derive(Debug, Clone)]
pub struct UnnestSpec {
    /// The ARRAY or MAP column of the input.
    pub column: usize,
}

/// Keyed upserts to a changelog: the last row per key is kept.
#[derive(Debug, Clone)]
pub struct NormalizeSpec {
    /// The key columns (the table's PRIMARY KEY).
    pub key: Vec<usize>,
    /// `table.exec.state.ttl`: keys untouched this long are forgotten.
    pub state_ttl_ms: Option<i64>,
}

/// OVER aggregates in event-time order: each row is emitted, with its aggregates over
/// the frame ending at it, once the watermark passes it.
#[derive(Clone, Debug)]
pub struct OverSpec {
    /// PARTITION BY columns of the input.
    pub partition: Vec<usize>,
    /// The event-time column the rows are ordered by.
    pub time_col: usize,
    /// Which preceding rows each row's aggregates cover.
    pub frame: OverFrame,
    /// The aggregate functions, compiled against the input schema.
    pub aggs: Vec<Arc<datafusion_physical_expr::aggregate::AggregateFunctionExpr>>,
    /// `table.exec.state.ttl`: partitions without a row this long are forgotten.
    pub state_ttl_ms: Option<i64>,
}

/// The frame of an OVER aggregate (it always ends at the current row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverFrame {
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW`.
    Rows(u64),
    /// `RANGE BETWEEN INTERVAL … PRECEDING AND CURRENT ROW` (ms).
    Range(i64),
    /// `… UNBOUNDED PRECEDING AND CURRENT ROW`.
    Unbounded,
}

/// A non-window GROUP BY: one accumulator set per key, results updated as rows arrive.
#[derive(Clone, Debug)]
pub struct GroupAggSpec {
    /// Group columns, as input indices, in GROUP BY order (output columns first).
    pub key_cols: Vec<usize>,
    /// The aggregate functions, compiled against the input schema.
    pub aggs: Vec<Arc<datafusion_physical_expr::aggregate::AggregateFunctionExpr>>,
    /// The input is a changelog: aggregates must retract.
    pub retracting: bool,
    /// `table.exec.state.ttl`: keys not updated for this long (processing time) are
    /// forgotten.
    pub state_ttl_ms: Option<i64>,
    /// `table.exec.mini-batch.*`: changes are held back and emitted once per key
    /// per mini-batch; `None` emits after every input batch.
    pub mini_batch: Option<MiniBatch>,
}

/// Flink's mini-batch: hold updates until this many input rows arrived or this much
/// time passed, so a key updated many times emits one change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MiniBatch {
    /// `table.exec.mini-batch.allow-latency` (ms).
    pub latency_ms: i64,
    /// `table.exec.mini-batch.size` (input rows).
    pub size: usize,
}

/// Which rows a join keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    /// Only matching pairs.
    Inner,
    /// Every left row, NULL-padded without a match.
    Left,
    /// Every right row, NULL-padded without a match.
    Right,
    /// Both.
    Full,
    /// Left rows that have a match (`IN` / `EXISTS`); only left columns.
    Semi,
    /// Left rows that have no match (`NOT IN` / `NOT EXISTS`); only left columns.
    Anti,
}

/// A regular join: equal keys plus an optional residual condition.
#[derive(Clone, Debug)]
pub struct JoinSpec {
    /// Which rows are kept.
    pub kind: JoinKind,
    /// Equi-join columns of the left input.
    pub left_keys: Vec<usize>,
    /// Equi-join columns of the right input, pairwise with `left_keys`.
    pub right_keys: Vec<usize>,
    /// Non-equi condition over the joined row (left columns then right).
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// Inputs `0..left_inputs` are the left side, the rest the right side.
    pub left_inputs: usize,
    /// Columns of the left rows (the joined row's right columns start here).
    pub left_width: usize,
    /// An interval join: rows are forgotten once the watermark passes their time
    /// plus this bound (left time column, right time column, bounds).
    pub interval: Option<IntervalBounds>,
    /// `table.exec.state.ttl` for rows of an unbounded join.
    pub state_ttl_ms: Option<i64>,
    /// Columns of the joined row (left then right) that nothing downstream reads:
    /// they are NULL in the state and the output.
    pub unused: Vec<usize>,
}

/// `l.t BETWEEN r.t - lower AND r.t + upper` (milliseconds), over event-time columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntervalBounds {
    /// The left input's event-time column.
    pub left_time: usize,
    /// The right input's event-time column.
    pub right_time: usize,
    /// A left row matches right rows up to this much later than itself …
    pub left_keep_ms: i64,
    /// … and a right row matches left rows up to this much later than itself.
    pub right_keep_ms: i64,
}

/// Top-N per partition by `ROW_NUMBER()`.
#[derive(Clone, Debug)]
pub struct RankSpec {
    /// PARTITION BY columns of the input.
    pub partition: Vec<usize>,
    /// ORDER BY columns of the input, with `descending` flags.
    pub order: Vec<(usize, bool)>,
    /// How rows are numbered.
    pub function: RankFunction,
    /// Keep rows numbered 1..=limit.
    pub limit: usize,
    /// The output has the row number as its last column.
    pub number: bool,
    /// Window Top-N: the partition includes this `window_end` column; rank once the
    /// window is complete and emit append-only.
    pub window_end: Option<usize>,
    /// The input is a changelog: every row is kept so a retraction lets the next in.
    pub input_updating: bool,
    /// `table.exec.state.ttl`.
    pub state_ttl_ms: Option<i64>,
    /// Deduplication keeping the first row by processing time (`ORDER BY` a
    /// `PROCTIME()` column ascending, `rn = 1`): the first row to arrive per key is
    /// emitted once, and later ones are dropped — an append-only result.
    pub first_arrival: bool,
}

/// The numbering of a Top-N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankFunction {
    /// `ROW_NUMBER()`: 1, 2, 3, … (ties in arrival order).
    RowNumber,
    /// `RANK()`: rows that sort equal share a number; the next number skips (1, 1, 3).
    Rank,
    /// `DENSE_RANK()`: rows that sort equal share a number; no gaps (1, 1, 2).
    DenseRank,
}

impl RankFunction {
    /// The function of a window function's name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "row_number" => Some(Self::RowNumber),
            "rank" => Some(Self::Rank),
            "dense_rank" => Some(Self::DenseRank),
            _ => None,
        }
    }

    /// Its SQL name.
    pub fn sql(self) -> &'static str {
        match self {
            Self::RowNumber => "ROW_NUMBER",
            Self::Rank => "RANK",
            Self::DenseRank => "DENSE_RANK",
        }
    }
}

/// Window assignment over the event-time column.
#[derive(Debug, Clone)]
pub struct WindowAssignSpec {
    /// Which windows.
    pub kind: WindowKind,
    /// Index of the event-time column in the input.
    pub time_col: usize,
}

/// A windowed GROUP BY.
#[derive(Clone, Debug)]
pub struct WindowAggSpec {
    /// Index of `window_end` in the input.
    pub end_col: usize,
    /// Index of `window_start` in the input.
    pub start_col: usize,
    /// Group columns other than the window's, as input indices, in GROUP BY order.
    pub key_cols: Vec<usize>,
    /// Output layout of the group columns: where window_start / window_end go among the keys.
    pub group_layout: Vec<GroupCol>,
    /// The aggregate functions, compiled against the input schema.
    pub aggs: Vec<Arc<datafusion_physical_expr::aggregate::AggregateFunctionExpr>>,
    /// Session windows: rows are merged into sessions by this gap.
    pub session_gap_ms: Option<i64>,
    /// Processing-time windows: fire when the wall clock passes their end.
    pub processing_time: bool,
}

/// One group column of a window aggregate's output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GroupCol {
    /// `key_cols[i]`.
    Key(usize),
    /// The window's start.
    Start,
    /// The window's end.
    End,
}

/// A window join: equal window and keys, plus an optional residual filter.
#[derive(Clone, Debug)]
pub struct WindowJoinSpec {
    /// Equi-join columns of the left input (window_start, window_end first).
    pub left_keys: Vec<usize>,
    /// Equi-join columns of the right input, pairwise with `left_keys`.
    pub right_keys: Vec<usize>,
    /// `window_end` in the left input.
    pub left_end: usize,
    /// Non-equi condition over the joined row (left columns then right).
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// Inputs `0..left_inputs` are the left side, the rest the right side.
    pub left_inputs: usize,
}

/// `WHERE filter` then `SELECT exprs` over each input batch.
#[derive(Clone)]
pub struct ProjectSpec {
    /// Rows where this is not true are dropped.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// One expression per output column.
    pub exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// Calls a function that blocks for long (image classification): run it off the
    /// async threads.
    pub blocking: bool,
}

impl ProjectSpec {
    /// Whether any expression (or the filter) calls one of the functions `names`.
    pub fn calls_any(&self, names: &std::collections::HashSet<String>) -> bool {
        fn walk(e: &Arc<dyn PhysicalExpr>, names: &std::collections::HashSet<String>) -> bool {
            if let Some(f) = e.downcast_ref::<datafusion_physical_expr::ScalarFunctionExpr>()
                && names.contains(f.name())
            {
                return true;
            }
            e.children().into_iter().any(|c| walk(c, names))
        }
        self.exprs
            .iter()
            .chain(self.filter.iter())
            .any(|e| walk(e, names))
    }
}

impl fmt::Debug for NodeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeSpec::Source(t, _) => write!(f, "Source({} via {})", t.name, t.connector()),
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
            NodeSpec::WindowAssign(w) => {
                write!(f, "WindowAssign({:?} on column {})", w.kind, w.time_col)
            }
            NodeSpec::WindowAggregate(a) => write!(
                f,
                "WindowAggregate(keys {:?}, aggs [{}]{})",
                a.key_cols,
                a.aggs
                    .iter()
                    .map(|x| x.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                a.session_gap_ms
                    .map(|g| format!(", session gap {g} ms"))
                    .unwrap_or_default()
            ),
            NodeSpec::WindowJoin(j) => write!(
                f,
                "WindowJoin(left {:?} = right {:?})",
                j.left_keys, j.right_keys
            ),
            NodeSpec::GroupAggregate(a) => write!(
                f,
                "GroupAggregate(keys {:?}, aggs [{}]{})",
                a.key_cols,
                a.aggs
                    .iter()
                    .map(|x| x.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if a.retracting { ", retracting" } else { "" }
            ),
            NodeSpec::Join(j) => write!(
                f,
                "Join({:?}, left {:?} = right {:?}{})",
                j.kind,
                j.left_keys,
                j.right_keys,
                if j.interval.is_some() {
                    ", interval"
                } else {
                    ""
                }
            ),
            NodeSpec::Over(o) => write!(
                f,
                "Over(partition {:?}, {:?}, aggs [{}])",
                o.partition,
                o.frame,
                o.aggs
                    .iter()
                    .map(|x| x.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            NodeSpec::Normalize(n) => write!(f, "Normalize(key {:?})", n.key),
            NodeSpec::Unnest(u) => write!(f, "Unnest(column {})", u.column),
            NodeSpec::LookupJoin(l) => write!(
                f,
                "LookupJoin({}{} via {}, keys {:?})",
                if l.left_outer { "left, " } else { "" },
                l.table.name,
                l.table.connector(),
                l.table_keys
            ),
            NodeSpec::Rank(r) => write!(
                f,
                "Rank(partition {:?}, order {:?}, top {}{})",
                r.partition,
                r.order,
                r.limit,
                if r.window_end.is_some() {
                    ", per window"
                } else {
                    ""
                }
            ),
            NodeSpec::Quality(q) => write!(
                f,
                "Quality({}: {})",
                q.table.name,
                q.rules
                    .iter()
                    .map(|r| format!("{} {} → {}", r.name, r.text, r.action.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl NodeSpec {
    /// Short kind name: `source`, `project`, `sink`, …
    pub fn kind(&self) -> &'static str {
        match self {
            NodeSpec::Source(..) => "source",
            NodeSpec::Project(_) => "project",
            NodeSpec::Sink(_) => "sink",
            NodeSpec::WindowAssign(_) => "window",
            NodeSpec::WindowAggregate(_) => "window-aggregate",
            NodeSpec::WindowJoin(_) => "window-join",
            NodeSpec::GroupAggregate(_) => "aggregate",
            NodeSpec::Join(_) => "join",
            NodeSpec::Rank(_) => "rank",
            NodeSpec::Over(_) => "over",
            NodeSpec::Normalize(_) => "normalize",
            NodeSpec::Unnest(_) => "unnest",
            NodeSpec::LookupJoin(_) => "lookup-join",
            NodeSpec::Quality(_) => "quality",
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
                "{}: {} <- [{}] {:?}{}\n",
                n.id,
                n.label,
                inputs.join(", "),
                n.spec,
                if n.updating.is_some() {
                    " (updating)"
                } else {
                    ""
                }
            ));
        }
        s
    }
}
