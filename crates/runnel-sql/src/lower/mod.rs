//! DataFusion logical plan → [`PipelineGraph`] nodes, one function per
//! streaming node kind. Expressions become vectorized physical expressions.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion_common::{DFSchema, DFSchemaRef};
use datafusion_expr::execution_props::ExecutionProps;
use datafusion_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion_expr::simplify::SimplifyContext;
use datafusion_expr::{Expr, LogicalPlan};
use datafusion_optimizer::simplify_expressions::ExprSimplifier;
use datafusion_physical_expr::expressions::{CastExpr, Column};
use datafusion_physical_expr::{PhysicalExpr, create_physical_expr};
use runnel_common::TableSpec;
use runnel_common::types::sql_name;

mod aggregate;
mod lookup;
mod over;
pub(crate) mod quality;
mod rank;
mod unnest;
pub(crate) mod used;

use crate::catalog::{Relation, RelationSource};
use crate::error::{SqlError, clean_datafusion_message};
use crate::graph::{
    Input, IntervalBounds, JoinKind, JoinSpec, Node, NodeSpec, NormalizeSpec, Partitioning,
    PipelineGraph, ProjectSpec, WindowAssignSpec, WindowCols, WindowJoinSpec, WindowKind,
};

/// A table's computed columns (`name AS expr` in its DDL).
pub(crate) struct Computed {
    /// The table's physical columns (what its connector reads).
    pub physical: DFSchemaRef,
    /// Every column as declared, physical and computed, as expressions over those.
    pub exprs: Vec<Expr>,
    /// The columns `exprs` give.
    pub schema: SchemaRef,
    /// `WATERMARK FOR` a computed column: its index in `exprs`, and the delay.
    pub watermark: Option<(usize, i64)>,
}

/// Builds graph nodes for planned queries, sharing sources and views between
/// statements.
pub(crate) struct Lowerer {
    pub graph: PipelineGraph,
    sources: HashMap<String, usize>,
    /// Source tables that read upserts (see `TableCheck::reads_upserts`).
    pub upsert_sources: std::collections::HashSet<String>,
    /// Tables with computed columns, by name.
    pub computed: HashMap<String, Computed>,
    /// Tables with validation rules, by name.
    pub checks: HashMap<String, Vec<quality::Check>>,
    views: HashMap<String, Vec<usize>>,
    sinks: HashMap<String, usize>,
    memo: HashMap<LogicalPlan, Vec<usize>>,
    props: ExecutionProps,
    line: u64,
    /// The columns the script reads (joins drop the others); `None`: keep all.
    pub used: Option<used::Used>,
}

impl Lowerer {
    pub fn new() -> Self {
        Self {
            graph: PipelineGraph::default(),
            sources: HashMap::new(),
            upsert_sources: Default::default(),
            computed: HashMap::new(),
            checks: HashMap::new(),
            views: HashMap::new(),
            sinks: HashMap::new(),
            memo: HashMap::new(),
            props: ExecutionProps::new(),
            line: 0,
            used: None,
        }
    }

    /// Lowers `plan` and connects it to `sink`, casting columns by position.
    pub fn insert(
        &mut self,
        plan: &LogicalPlan,
        sink: &TableSpec,
        columns: Option<&[String]>,
        line: u64,
        accepts_updates: bool,
    ) -> Result<(), SqlError> {
        self.line = line;
        let outputs = self.lower(plan)?;
        if !accepts_updates
            && let Some(op) = outputs
                .iter()
                .find_map(|o| self.graph.nodes[*o].updating.clone())
        {
            return Err(SqlError::at(
                line,
                format!(
                    "INSERT INTO {}: the {} sink '{}' is append-only, but the query's result is                      updating ({op} changes rows it already emitted); write to a table that                      takes changelogs (file, log or print with format 'json' write an 'op'                      field per row, blackhole and dashboard take them too) or make the query                      append-only (aggregate over a window: TABLE(TUMBLE(…)))",
                    sink.name,
                    sink.connector(),
                    sink.name
                ),
            ));
        }
        let query_schema = plan.schema().clone();
        let sink_schema = sink.schema.clone();
        let read_only: Vec<usize> = sink
            .metadata
            .iter()
            .filter(|m| m.is_virtual)
            .map(|m| m.column)
            .collect();
        let exprs =
            self.sink_mapping(&query_schema, &sink.name, &sink_schema, columns, &read_only)?;
        let feeds = match exprs {
            None => outputs,
            Some(exprs) => vec![self.push_project(outputs, None, exprs, sink_schema.clone())],
        };
        let feeds = feeds
            .into_iter()
            .map(|f| self.push_quality(f, sink, true))
            .collect::<Result<Vec<_>, _>>()?;
        let sink_id = match self.sinks.get(&sink.name) {
            Some(id) => *id,
            None => {
                let id = self.push(
                    format!("sink {}", sink.name),
                    NodeSpec::Sink(sink.clone()),
                    sink_schema.clone(),
                    vec![],
                );
                self.sinks.insert(sink.name.clone(), id);
                id
            }
        };
        // A sink with a primary key applies each key's changes in order (upserts into a
        // database, keyed Kafka records): every change of a key must reach the same
        // subtask, as Flink's keyed shuffle before an upsert sink does.
        let partitioning = if sink.primary_key.is_empty() {
            Partitioning::Forward
        } else {
            Partitioning::Hash(sink.primary_key.clone())
        };
        for f in feeds {
            self.graph.nodes[sink_id].inputs.push(Input {
                node: f,
                partitioning: partitioning.clone(),
            });
        }
        // Sinks must come after their inputs: move it to the end if a later statement fed it.
        self.reorder_sink(sink_id);
        Ok(())
    }

    fn reorder_sink(&mut self, sink_id: usize) {
        let max_input = self.graph.nodes[sink_id]
            .inputs
            .iter()
            .map(|i| i.node)
            .max()
            .unwrap_or(0);
        if max_input < sink_id {
            return;
        }
        // Rebuild ids so that every node's inputs precede it.
        let node = self.graph.nodes.remove(sink_id);
        self.graph.nodes.push(node);
        let remap = |old: usize| {
            if old == sink_id {
                usize::MAX
            } else if old > sink_id {
                old - 1
            } else {
                old
            }
        };
        let last = self.graph.nodes.len() - 1;
        for (i, n) in self.graph.nodes.iter_mut().enumerate() {
            n.id = i;
            for input in &mut n.inputs {
                input.node = match remap(input.node) {
                    usize::MAX => last,
                    x => x,
                };
            }
        }
        for v in self.sources.values_mut().chain(self.sinks.values_mut()) {
            *v = match remap(*v) {
                usize::MAX => last,
                x => x,
            };
        }
        for ids in self.views.values_mut().chain(self.memo.values_mut()) {
            for v in ids.iter_mut() {
                *v = match remap(*v) {
                    usize::MAX => last,
                    x => x,
                };
            }
        }
    }

    /// `None` if the query's columns already have the sink's types in order.
    fn sink_mapping(
        &self,
        query: &DFSchema,
        sink_name: &str,
        sink: &SchemaRef,
        columns: Option<&[String]>,
        read_only: &[usize],
    ) -> Result<Option<Vec<Arc<dyn PhysicalExpr>>>, SqlError> {
        let qfields = query.fields();
        // The columns an INSERT writes: all but `METADATA … VIRTUAL` ones (as in Flink).
        let writable: Vec<usize> = (0..sink.fields().len())
            .filter(|i| !read_only.contains(i))
            .collect();
        // Which query column feeds each sink column (None = NULL).
        let sources: Vec<Option<usize>> = match columns {
            None if qfields.len() == writable.len() && writable.len() < sink.fields().len() => (0
                ..sink.fields().len())
                .map(|i| writable.iter().position(|w| *w == i))
                .collect(),
            None => {
                if qfields.len() != sink.fields().len() {
                    return Err(SqlError::at(
                        self.line,
                        format!(
                            "INSERT INTO {sink_name}: the query produces {} columns ({}) but '{sink_name}' takes {} ({})",
                            qfields.len(),
                            describe_fields(
                                qfields.iter().map(|f| (f.name().as_str(), f.data_type()))
                            ),
                            writable.len(),
                            describe_fields(
                                writable
                                    .iter()
                                    .map(|&i| sink.field(i))
                                    .map(|f| (f.name().as_str(), f.data_type()))
                            ),
                        ),
                    ));
                }
                (0..qfields.len()).map(Some).collect()
            }
            Some(cols) => {
                if cols.len() != qfields.len() {
                    return Err(SqlError::at(
                        self.line,
                        format!(
                            "INSERT INTO {sink_name} ({}): {} columns listed but the query produces {}",
                            cols.join(", "),
                            cols.len(),
                            qfields.len()
                        ),
                    ));
                }
                for c in cols {
                    match sink.index_of(c) {
                        Err(_) => {
                            return Err(SqlError::at(
                                self.line,
                                format!(
                                    "INSERT INTO {sink_name}: '{sink_name}' has no column '{c}'"
                                ),
                            ));
                        }
                        Ok(i) if read_only.contains(&i) => {
                            return Err(SqlError::at(
                                self.line,
                                format!(
                                    "INSERT INTO {sink_name}: column '{c}' is METADATA VIRTUAL, \
                                     read-only: it cannot be written"
                                ),
                            ));
                        }
                        Ok(_) => {}
                    }
                }
                sink.fields()
                    .iter()
                    .map(|f| cols.iter().position(|c| c == f.name()))
                    .collect()
            }
        };
        let mut exprs: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
        let mut identity = sources.len() == qfields.len();
        for (i, (target, src)) in sink.fields().iter().zip(&sources).enumerate() {
            let Some(src) = *src else {
                identity = false;
                let null = datafusion_common::ScalarValue::try_from(target.data_type())
                    .map_err(|e| SqlError::Internal(e.to_string()))?;
                exprs.push(Arc::new(
                    datafusion_physical_expr::expressions::Literal::new(null),
                ));
                continue;
            };
            if src != i {
                identity = false;
            }
            let from = qfields[src].data_type();
            let col: Arc<dyn PhysicalExpr> = Arc::new(Column::new(qfields[src].name(), src));
            if from == target.data_type() {
                exprs.push(col);
            } else if insert_cast_allowed(from, target.data_type()) {
                identity = false;
                exprs.push(Arc::new(CastExpr::new(
                    col,
                    target.data_type().clone(),
                    None,
                )));
            } else {
                return Err(SqlError::at(
                    self.line,
                    format!(
                        "INSERT INTO {sink_name}: query column {} '{}' of type {} cannot be written to column '{}' of type {}; add an explicit CAST",
                        src + 1,
                        qfields[src].name(),
                        sql_name(from),
                        target.name(),
                        sql_name(target.data_type())
                    ),
                ));
            }
        }
        Ok(if identity { None } else { Some(exprs) })
    }

    /// Node ids whose outputs, together, are the rows of `plan` (in its schema).
    fn lower(&mut self, plan: &LogicalPlan) -> Result<Vec<usize>, SqlError> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let Some(rel) = scan.source.downcast_ref::<RelationSource>() else {
                    return Err(SqlError::Internal(format!(
                        "scan of foreign table source {}",
                        scan.table_name
                    )));
                };
                let ids = self.lower_relation(rel)?;
                match &scan.projection {
                    None => Ok(ids),
                    Some(cols) => {
                        let full = datafusion_expr::TableSource::schema(rel);
                        let exprs: Vec<Arc<dyn PhysicalExpr>> = cols
                            .iter()
                            .map(|&i| Arc::new(Column::new(full.field(i).name(), i)) as _)
                            .collect();
                        let schema = Arc::new(scan.projected_schema.as_arrow().clone());
                        Ok(vec![self.push_project(ids, None, exprs, schema)])
                    }
                }
            }
            LogicalPlan::Projection(p) => {
                let (inputs, filter, input_schema) = match p.input.as_ref() {
                    LogicalPlan::Filter(f) if rank::top_n(f).is_some() => {
                        let t = rank::top_n(f)
                            .ok_or_else(|| SqlError::Internal("top-n match".into()))?;
                        (self.lower_top_n(t, f)?, None, f.input.schema().clone())
                    }
                    LogicalPlan::Filter(f) if Self::fold_filter_into_join(f).is_some() => {
                        let join = Self::fold_filter_into_join(f)
                            .ok_or_else(|| SqlError::Internal("join fold".into()))?;
                        (self.lower_join(&join)?, None, f.input.schema().clone())
                    }
                    LogicalPlan::Filter(f) => {
                        let ids = self.lower(&f.input)?;
                        let pred = self.physical(&f.predicate, f.input.schema())?;
                        (ids, Some(pred), f.input.schema().clone())
                    }
                    other => (self.lower(other)?, None, other.schema().clone()),
                };
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| self.physical(e, &input_schema))
                    .collect::<Result<Vec<_>, _>>()?;
                let schema = Arc::new(p.schema.as_arrow().clone());
                Ok(vec![self.push_project(inputs, filter, exprs, schema)])
            }
            LogicalPlan::Filter(f) => {
                if let Some(t) = rank::top_n(f) {
                    return self.lower_top_n(t, f);
                }
                if let Some(join) = Self::fold_filter_into_join(f) {
                    return self.lower_join(&join);
                }
                let ids = self.lower(&f.input)?;
                let pred = self.physical(&f.predicate, f.input.schema())?;
                let schema: SchemaRef = Arc::new(f.input.schema().as_arrow().clone());
                let exprs = identity(&schema);
                Ok(vec![self.push_project(ids, Some(pred), exprs, schema)])
            }
            LogicalPlan::SubqueryAlias(a) => self.lower(&a.input),
            LogicalPlan::Union(u) => {
                let mut ids = Vec::new();
                for input in &u.inputs {
                    ids.extend(self.lower(input)?);
                }
                Ok(ids)
            }
            LogicalPlan::Aggregate(agg) => {
                // The same windowed aggregate written twice (Nexmark q5 does) runs once.
                if let Some(ids) = self.memo.get(plan) {
                    return Ok(ids.clone());
                }
                let ids = self.lower_aggregate(agg)?;
                self.memo.insert(plan.clone(), ids.clone());
                Ok(ids)
            }
            LogicalPlan::Sort(_) => Err(self.unsupported("ORDER BY is not supported on a stream")),
            LogicalPlan::Limit(_) => Err(self.unsupported("LIMIT is not supported on a stream")),
            LogicalPlan::Distinct(_) => {
                Err(self.unsupported("SELECT DISTINCT over an unbounded stream is not supported"))
            }
            LogicalPlan::Join(join) => self.lower_join(join),
            LogicalPlan::Window(w) => {
                if let Some(f) = w.window_expr.iter().find_map(rank::rank_function) {
                    return Err(self.unsupported(&format!(
                        "{}() OVER (…) runs as Top-N or deduplication: filter it in the \
                         enclosing query, WHERE rn <= N (or rn = 1)",
                        f.sql()
                    )));
                }
                self.lower_over(w)
            }
            LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => {
                Err(self.unsupported("a query must read from a declared table (FROM …)"))
            }
            other => Err(self.unsupported(&format!(
                "{} is not supported in a streaming query",
                other.display()
            ))),
        }
    }

    /// Node ids producing the rows of a table, view or window TVF.
    fn lower_relation(&mut self, rel: &RelationSource) -> Result<Vec<usize>, SqlError> {
        match &rel.relation {
            Relation::Table(spec) => Ok(vec![self.source(&spec.clone())?]),
            Relation::Lookup(l) => Err(self.unsupported(&format!(
                "'{}' FOR SYSTEM_TIME AS OF is looked up, not read: it must be the right side \
                 of a JOIN whose left side is the stream",
                l.table.name
            ))),
            Relation::View(view_plan) => {
                if let Some(ids) = self.views.get(&rel.name) {
                    return Ok(ids.clone());
                }
                let ids = self.lower(view_plan.as_ref())?;
                self.views.insert(rel.name.clone(), ids.clone());
                Ok(ids)
            }
            Relation::Window(tvf) => {
                let inputs = self.lower_relation(&tvf.input)?;
                if let Some(op) = inputs
                    .iter()
                    .find_map(|i| self.graph.nodes[*i].updating.clone())
                {
                    return Err(self.unsupported(&format!(
                        "a window TVF needs an append-only input, but {} is updated by {op}",
                        tvf.input.name
                    )));
                }
                let n = datafusion_expr::TableSource::schema(tvf.input.as_ref())
                    .fields()
                    .len();
                let schema = datafusion_expr::TableSource::schema(rel);
                let spec = WindowAssignSpec {
                    kind: tvf.kind,
                    time_col: tvf.time_col,
                };
                let inputs = forward(inputs);
                let id = self.push(
                    rel.name.clone(),
                    NodeSpec::WindowAssign(spec),
                    schema,
                    inputs,
                );
                let session_gap_ms = match tvf.kind {
                    WindowKind::Session { gap_ms } => Some(gap_ms),
                    _ => None,
                };
                // Windows over a PROCTIME() column close by the wall clock.
                let processing_time = matches!(&self.graph.nodes[inputs_of(&self.graph, id)].spec,
                NodeSpec::Project(p) if p.exprs.get(tvf.time_col).is_some_and(|e| {
                    e.downcast_ref::<datafusion_physical_expr::ScalarFunctionExpr>()
                        .is_some_and(|f| f.name() == "proctime")
                }));
                if processing_time && session_gap_ms.is_some() {
                    return Err(self.unsupported(
                        "SESSION windows over PROCTIME() are not supported; use TUMBLE or HOP",
                    ));
                }
                self.graph.nodes[id].window = Some(WindowCols {
                    start: n,
                    end: n + 1,
                    session_gap_ms,
                    processing_time,
                });
                self.graph.nodes[id].event_time = Some(tvf.time_col);
                Ok(vec![id])
            }
        }
    }

    /// A join: Flink's window join when both sides are windowed and joined on their
    /// windows, else a regular join (an interval join when its condition bounds the two
    /// event times).
    fn lower_join(
        &mut self,
        join: &datafusion_expr::logical_plan::Join,
    ) -> Result<Vec<usize>, SqlError> {
        use datafusion_expr::JoinType;
        if Self::is_lateral(join) {
            return self.lower_lateral(join);
        }
        if let Some((lookup, projection)) = lookup::lookup_side(&join.right) {
            return self.lower_lookup_join(join, lookup, projection);
        }
        let kind = match join.join_type {
            JoinType::Inner => JoinKind::Inner,
            JoinType::Left => JoinKind::Left,
            JoinType::Right => JoinKind::Right,
            JoinType::Full => JoinKind::Full,
            JoinType::LeftSemi => JoinKind::Semi,
            JoinType::LeftAnti => JoinKind::Anti,
            other => {
                return Err(self.unsupported(&format!(
                    "{other} joins (IN / EXISTS subqueries) are not supported on streams yet; \
                     write an INNER or OUTER JOIN"
                )));
            }
        };
        let left = self.lower(&join.left)?;
        let right = self.lower(&join.right)?;
        let ls = join.left.schema();
        let rs = join.right.schema();
        let mut left_keys = Vec::new();
        let mut right_keys = Vec::new();
        for (l, r) in &join.on {
            let (Expr::Column(lc), Expr::Column(rc)) = (l, r) else {
                return Err(
                    self.unsupported(&format!("join condition {l} = {r}: compare columns only"))
                );
            };
            let (Ok(li), Ok(ri)) = (ls.index_of_column(lc), rs.index_of_column(rc)) else {
                return Err(SqlError::Internal(format!(
                    "join columns {lc} / {rc} not found"
                )));
            };
            left_keys.push(li);
            right_keys.push(ri);
        }
        // Without DataFusion's optimizer, `a = b AND …` stays in the filter: take the
        // column equalities between the two sides out as join keys.
        let mut rest = Vec::new();
        if let Some(f) = &join.filter {
            for conjunct in datafusion_expr::utils::split_conjunction(f) {
                if let Expr::BinaryExpr(b) = conjunct
                    && b.op == datafusion_expr::Operator::Eq
                    && let (Expr::Column(a), Expr::Column(c)) = (b.left.as_ref(), b.right.as_ref())
                {
                    let pair = match (ls.index_of_column(a), rs.index_of_column(c)) {
                        (Ok(li), Ok(ri)) => Some((li, ri)),
                        _ => match (ls.index_of_column(c), rs.index_of_column(a)) {
                            (Ok(li), Ok(ri)) => Some((li, ri)),
                            _ => None,
                        },
                    };
                    if let Some((li, ri)) = pair {
                        left_keys.push(li);
                        right_keys.push(ri);
                        continue;
                    }
                }
                rest.push(conjunct.clone());
            }
        }
        let lw = self.graph.nodes[left[0]].window;
        let rw = self.graph.nodes[right[0]].window;
        let has = |a: usize, b: usize| {
            left_keys
                .iter()
                .zip(&right_keys)
                .any(|(x, y)| *x == a && *y == b)
        };
        let updating = left
            .iter()
            .chain(&right)
            .any(|i| self.graph.nodes[*i].updating.is_some());
        let window_join = match (lw, rw) {
            (Some(lw), Some(rw)) => {
                kind == JoinKind::Inner
                    && !updating
                    && has(lw.start, rw.start)
                    && has(lw.end, rw.end)
            }
            _ => false,
        };
        let left_time = self.graph.nodes[left[0]].event_time;
        let right_time = self.graph.nodes[right[0]].event_time;
        let interval = match (left_time, right_time) {
            (Some(lt), Some(rt)) if kind == JoinKind::Inner && !updating => {
                interval_bounds(&rest, ls, rs, lt, rt)
            }
            _ => None,
        };
        let residual = datafusion_expr::utils::conjunction(rest);
        // The condition sees both sides (a semi or anti join outputs the left only).
        let both = Arc::new(ls.join(rs).map_err(|e| SqlError::Internal(e.to_string()))?);
        let filter = match residual {
            None => None,
            Some(f) => Some(self.physical(&f, &both)?),
        };
        let n_left = left.len();
        let mut inputs = hashed(left, &left_keys);
        inputs.extend(hashed(right, &right_keys));
        let schema: SchemaRef = Arc::new(join.schema.as_arrow().clone());
        if window_join && let Some(lw) = lw {
            let spec = WindowJoinSpec {
                left_keys,
                right_keys,
                left_end: lw.end,
                filter,
                left_inputs: n_left,
            };
            let id = self.push(
                "window join".into(),
                NodeSpec::WindowJoin(spec),
                schema,
                inputs,
            );
            self.graph.nodes[id].window = Some(WindowCols {
                start: lw.start,
                end: lw.end,
                session_gap_ms: None,
                processing_time: false,
            });
            return Ok(vec![id]);
        }
        // Columns nothing reads travel as NULL (not keys, not event time).
        let unused = match (&self.used, kind) {
            (Some(used), JoinKind::Inner | JoinKind::Left | JoinKind::Right | JoinKind::Full) => {
                let left_width = ls.fields().len();
                let times = [left_time, right_time.map(|t| left_width + t)];
                join.schema
                    .iter()
                    .enumerate()
                    .filter(|(i, (qualifier, field))| {
                        field.is_nullable()
                            && !left_keys.contains(i)
                            && !right_keys.iter().any(|k| left_width + k == *i)
                            && !times.contains(&Some(*i))
                            && !used.reads(*qualifier, field.name())
                    })
                    .map(|(i, _)| i)
                    .collect()
            }
            _ => Vec::new(),
        };
        let spec = JoinSpec {
            kind,
            left_keys,
            right_keys,
            filter,
            left_inputs: n_left,
            left_width: ls.fields().len(),
            interval,
            state_ttl_ms: self.state_ttl_ms(),
            unused,
        };
        let label = match (kind, interval.is_some()) {
            (_, true) => "interval join".to_string(),
            (JoinKind::Inner, _) => "join".to_string(),
            (JoinKind::Semi, _) => "semi join (IN / EXISTS)".to_string(),
            (JoinKind::Anti, _) => "anti join (NOT IN / NOT EXISTS)".to_string(),
            (k, _) => format!("{} outer join", format!("{k:?}").to_ascii_lowercase()),
        };
        let id = self.push(label.clone(), NodeSpec::Join(spec), schema, inputs);
        let node = &mut self.graph.nodes[id];
        if interval.is_some() {
            node.event_time = left_time;
        } else if !matches!(kind, JoinKind::Inner | JoinKind::Semi) || updating {
            node.updating = Some(format!("the {label} at line {}", self.line));
        }
        Ok(vec![id])
    }

    /// `WHERE` over a join (`FROM a, b WHERE a.k = b.k …`): the predicate joins the
    /// condition, so its equalities become join keys.
    fn fold_filter_into_join(
        f: &datafusion_expr::logical_plan::Filter,
    ) -> Option<datafusion_expr::logical_plan::Join> {
        let LogicalPlan::Join(join) = f.input.as_ref() else {
            return None;
        };
        if join.join_type != datafusion_expr::JoinType::Inner {
            return None;
        }
        let mut folded = join.clone();
        folded.filter = Some(match &join.filter {
            None => f.predicate.clone(),
            Some(c) => c.clone().and(f.predicate.clone()),
        });
        Some(folded)
    }

    fn unsupported(&self, msg: &str) -> SqlError {
        SqlError::at(self.line, msg)
    }

    /// Simplifies (DataFusion needs e.g. COALESCE rewritten to CASE) and
    /// compiles an expression to a vectorized physical expression.
    fn physical(&self, e: &Expr, schema: &DFSchemaRef) -> Result<Arc<dyn PhysicalExpr>, SqlError> {
        let plan_err = |err: datafusion_common::DataFusionError| SqlError::Plan {
            line: self.line,
            message: clean_datafusion_message(&err),
        };
        let context = SimplifyContext::builder()
            .with_schema(Arc::clone(schema))
            .with_query_execution_start_time(Some(chrono::Utc::now()))
            .build();
        let simplified = ExprSimplifier::new(context)
            .simplify(e.clone())
            .map_err(plan_err)?;
        create_physical_expr(
            &simplified,
            schema,
            &self.props,
            &PhysicalPlanningContext::default(),
        )
        .map_err(plan_err)
    }

    fn source(&mut self, spec: &TableSpec) -> Result<usize, SqlError> {
        if let Some(id) = self.sources.get(&spec.name) {
            return Ok(*id);
        }
        let computed = self.computed.get(&spec.name);
        let computed_time = computed.and_then(|c| c.watermark).map(|(i, _)| i);
        let event_time = spec
            .watermark
            .as_ref()
            .map(|w| w.column)
            .filter(|_| computed_time.is_none());
        let time_expr = match (computed, computed_time) {
            (Some(c), Some(i)) => Some(self.physical(&c.exprs[i], &c.physical)?),
            _ => None,
        };
        let id = self.push(
            format!("source {}", spec.name),
            NodeSpec::Source(spec.clone(), time_expr),
            spec.schema.clone(),
            vec![],
        );
        self.graph.nodes[id].event_time = event_time;
        let id = match self.computed.get(&spec.name) {
            None => id,
            Some(c) => {
                let (exprs, physical, schema) =
                    (c.exprs.clone(), c.physical.clone(), c.schema.clone());
                let exprs = exprs
                    .iter()
                    .map(|e| self.physical(e, &physical))
                    .collect::<Result<Vec<_>, _>>()?;
                let p = self.push_project(vec![id], None, exprs, schema);
                if computed_time.is_some() {
                    self.graph.nodes[p].event_time = computed_time;
                }
                p
            }
        };
        let id = self.push_quality(id, spec, false)?;
        let event_time = self.graph.nodes[id].event_time;
        let id = if self.upsert_sources.contains(&spec.name) {
            // Upserts become a changelog with the retracted rows, per key.
            let schema = self.graph.nodes[id].schema.clone();
            let key: Vec<usize> = spec
                .primary_key
                .iter()
                .filter_map(|&k| schema.index_of(spec.schema.field(k).name()).ok())
                .collect();
            let normalize = NormalizeSpec {
                key: key.clone(),
                state_ttl_ms: self.state_ttl_ms(),
            };
            let n = self.push(
                format!("normalize {}", spec.name),
                NodeSpec::Normalize(normalize),
                schema,
                hashed(vec![id], &key),
            );
            self.graph.nodes[n].event_time = event_time;
            self.graph.nodes[n].updating =
                Some(format!("the {} source '{}'", spec.connector(), spec.name));
            n
        } else {
            id
        };
        self.sources.insert(spec.name.clone(), id);
        Ok(id)
    }

    fn push_project(
        &mut self,
        inputs: Vec<usize>,
        filter: Option<Arc<dyn PhysicalExpr>>,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> usize {
        // The event-time column survives a projection that keeps it as a plain column.
        let upstream = inputs.first().and_then(|i| self.graph.nodes[*i].event_time);
        let event_time = upstream.and_then(|src| {
            exprs
                .iter()
                .position(|e| e.downcast_ref::<Column>().is_some_and(|c| c.index() == src))
        });
        let window = inputs
            .first()
            .and_then(|i| self.graph.nodes[*i].window)
            .and_then(|w| {
                let pos = |src: usize| {
                    exprs
                        .iter()
                        .position(|e| e.downcast_ref::<Column>().is_some_and(|c| c.index() == src))
                };
                Some(WindowCols {
                    start: pos(w.start)?,
                    end: pos(w.end)?,
                    session_gap_ms: w.session_gap_ms,
                    processing_time: w.processing_time,
                })
            });
        let label = if filter.is_some() {
            "filter+project"
        } else {
            "project"
        };
        let spec = NodeSpec::Project(ProjectSpec {
            filter,
            exprs,
            blocking: false,
        });
        let inputs = forward(inputs);
        let id = self.push(label.to_string(), spec, schema, inputs);
        self.graph.nodes[id].event_time = event_time;
        self.graph.nodes[id].window = window;
        id
    }

    fn push(
        &mut self,
        label: String,
        spec: NodeSpec,
        schema: SchemaRef,
        inputs: Vec<Input>,
    ) -> usize {
        let id = self.graph.nodes.len();
        // A changelog stays a changelog through stateless steps; stateful operators
        // set their own mode after pushing.
        let updating = inputs
            .iter()
            .find_map(|i| self.graph.nodes[i.node].updating.clone());
        self.graph.nodes.push(Node {
            id,
            label,
            spec,
            schema,
            inputs,
            event_time: None,
            window: None,
            updating,
        });
        id
    }
}

/// Forward edges from each of `nodes`.
pub(super) fn forward(nodes: Vec<usize>) -> Vec<Input> {
    nodes
        .into_iter()
        .map(|node| Input {
            node,
            partitioning: Partitioning::Forward,
        })
        .collect()
}

/// Edges from each of `nodes`, hash-partitioned by the upstream columns `cols`.
pub(super) fn hashed(nodes: Vec<usize>, cols: &[usize]) -> Vec<Input> {
    nodes
        .into_iter()
        .map(|node| Input {
            node,
            partitioning: Partitioning::Hash(cols.to_vec()),
        })
        .collect()
}

pub(super) fn identity(schema: &Schema) -> Vec<Arc<dyn PhysicalExpr>> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| Arc::new(Column::new(f.name(), i)) as _)
        .collect()
}

fn describe_fields<'a>(fields: impl Iterator<Item = (&'a str, &'a DataType)>) -> String {
    fields
        .map(|(n, t)| format!("{n} {}", sql_name(t)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Flink's implicit casts on INSERT: widening between numbers, anything to
/// STRING, timestamps to timestamps, NULL to anything.
fn insert_cast_allowed(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let numeric = |t: &DataType| {
        matches!(
            t,
            Int8 | Int16
                | Int32
                | Int64
                | UInt8
                | UInt16
                | UInt32
                | UInt64
                | Float16
                | Float32
                | Float64
                | Decimal128(_, _)
                | Decimal256(_, _)
        )
    };
    match (from, to) {
        (Null, _) => true,
        (_, Utf8 | LargeUtf8) => !matches!(from, Binary | LargeBinary | BinaryView),
        (Utf8 | LargeUtf8 | Utf8View, Binary) => true,
        (Binary | LargeBinary | BinaryView, Binary) => true,
        (a, b) if numeric(a) && numeric(b) => true,
        (Timestamp(_, _) | Date32 | Date64, Timestamp(_, _)) => true,
        (Timestamp(_, _), Date32) => true,
        (Boolean, Boolean) => true,
        (Struct(_), Struct(_)) | (List(_), List(_)) => arrow::compute::can_cast_types(from, to),
        _ => false,
    }
}

/// The bounds `lo <= l.t - r.t <= hi` (ms) that `conjuncts` put on the two event-time
/// columns, if they bound both ways: the join is then an interval join.
fn interval_bounds(
    conjuncts: &[Expr],
    ls: &DFSchema,
    rs: &DFSchema,
    lt: usize,
    rt: usize,
) -> Option<IntervalBounds> {
    use datafusion_expr::Operator as Op;
    // `e` as (side, offset ms): side 0 = l.t, 1 = r.t.
    let term = |e: &Expr| -> Option<(u8, i64)> {
        let col = |e: &Expr| -> Option<u8> {
            let Expr::Column(c) = e else { return None };
            if ls.index_of_column(c).ok() == Some(lt) {
                Some(0)
            } else if rs.index_of_column(c).ok() == Some(rt) {
                Some(1)
            } else {
                None
            }
        };
        match e {
            Expr::BinaryExpr(b) if matches!(b.op, Op::Plus | Op::Minus) => {
                let side = col(&b.left)?;
                let ms = interval_ms(&b.right)?;
                Some((side, if b.op == Op::Minus { -ms } else { ms }))
            }
            Expr::Cast(c) => col(&c.expr).map(|s| (s, 0)),
            other => col(other).map(|s| (s, 0)),
        }
    };
    let (mut lo, mut hi) = (None::<i64>, None::<i64>);
    // a >= b (a - b >= 0), with a, b terms of opposite sides.
    let mut ge = |a: (u8, i64), b: (u8, i64)| match (a.0, b.0) {
        // l + x >= r + y  =>  l - r >= y - x
        (0, 1) => lo = Some(lo.map_or(b.1 - a.1, |v: i64| v.max(b.1 - a.1))),
        // r + x >= l + y  =>  l - r <= x - y
        (1, 0) => hi = Some(hi.map_or(a.1 - b.1, |v: i64| v.min(a.1 - b.1))),
        _ => {}
    };
    for c in conjuncts {
        match c {
            Expr::Between(b) if !b.negated => {
                if let (Some(x), Some(low), Some(high)) =
                    (term(&b.expr), term(&b.low), term(&b.high))
                {
                    ge(x, low);
                    ge(high, x);
                }
            }
            Expr::BinaryExpr(b) => {
                let (Some(x), Some(y)) = (term(&b.left), term(&b.right)) else {
                    continue;
                };
                match b.op {
                    Op::GtEq | Op::Gt => ge(x, y),
                    Op::LtEq | Op::Lt => ge(y, x),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let (lo, hi) = (lo?, hi?);
    Some(IntervalBounds {
        left_time: lt,
        right_time: rt,
        left_keep_ms: -lo,
        right_keep_ms: hi,
    })
}

/// Milliseconds of an interval literal.
fn interval_ms(e: &Expr) -> Option<i64> {
    use datafusion_common::ScalarValue;
    match e {
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            Some(i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds))
        }
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            Some(i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        Expr::Cast(c) => interval_ms(&c.expr),
        _ => None,
    }
}

/// The first input of node `id`.
fn inputs_of(graph: &PipelineGraph, id: usize) -> usize {
    graph.nodes[id].inputs.first().map_or(id, |i| i.node)
}
