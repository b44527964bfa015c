//! Lowering of Top-N and deduplication: a filter `rn <= N` (or `rn = 1`, `rn < N`) over
//! `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …) AS rn` (or `RANK()`, `DENSE_RANK()`)
//! becomes one Rank node.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion_common::ScalarValue;
use datafusion_expr::logical_plan::{Filter, Projection, Window};
use datafusion_expr::{Expr, LogicalPlan, Operator as Op};

use super::Lowerer;
use crate::error::SqlError;
use crate::graph::{NodeSpec, RankFunction, RankSpec, WindowCols};

/// A Top-N pattern found under a filter.
pub(super) struct TopN<'a> {
    projection: &'a Projection,
    window: &'a Window,
    limit: usize,
    /// Conjuncts of the filter other than the rank bound.
    rest: Vec<Expr>,
}

fn strip_alias(plan: &LogicalPlan) -> &LogicalPlan {
    match plan {
        LogicalPlan::SubqueryAlias(a) => strip_alias(&a.input),
        other => other,
    }
}

/// The numbering `e` calls: ROW_NUMBER, RANK or DENSE_RANK.
pub(super) fn rank_function(e: &Expr) -> Option<RankFunction> {
    let inner = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        other => other,
    };
    match inner {
        Expr::WindowFunction(w) => RankFunction::from_name(w.fun.name()),
        _ => None,
    }
}

/// Whether `e` numbers rows (ROW_NUMBER, RANK or DENSE_RANK).
pub(super) fn is_row_number(e: &Expr) -> bool {
    rank_function(e).is_some()
}

/// The filter `f`, if it bounds a ROW_NUMBER() column.
pub(super) fn top_n(f: &Filter) -> Option<TopN<'_>> {
    let LogicalPlan::Projection(projection) = strip_alias(&f.input) else {
        return None;
    };
    let LogicalPlan::Window(window) = strip_alias(&projection.input) else {
        return None;
    };
    if window.window_expr.len() != 1 || !is_row_number(&window.window_expr[0]) {
        return None;
    }
    // The window's own output column (after the input's) and the projection column
    // that forwards it.
    let win_col = window.input.schema().fields().len();
    let win_name = window.schema.qualified_field(win_col);
    let rn_at = projection.expr.iter().position(|e| {
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        matches!(inner, Expr::Column(c) if c.name == win_name.1.name().as_str())
    })?;
    let (q, field) = projection.schema.qualified_field(rn_at);
    let is_rn = |e: &Expr| matches!(e, Expr::Column(c) if c.name == *field.name() && (c.relation.is_none() || c.relation.as_ref() == q));
    let mut limit = None;
    let mut rest = Vec::new();
    for c in datafusion_expr::utils::split_conjunction(&f.predicate) {
        let bound = match c {
            Expr::BinaryExpr(b) => {
                let n = |e: &Expr| match e {
                    Expr::Literal(v, _) => scalar_u64(v),
                    Expr::Cast(c) => match c.expr.as_ref() {
                        Expr::Literal(v, _) => scalar_u64(v),
                        _ => None,
                    },
                    _ => None,
                };
                let col_of = |e: &Expr| match e {
                    Expr::Cast(c) => is_rn(&c.expr),
                    other => is_rn(other),
                };
                match (col_of(&b.left), col_of(&b.right), b.op) {
                    (true, false, Op::LtEq) => n(&b.right),
                    (true, false, Op::Lt) => n(&b.right).map(|v| v.saturating_sub(1)),
                    (true, false, Op::Eq) if n(&b.right) == Some(1) => Some(1),
                    (false, true, Op::GtEq) => n(&b.left),
                    (false, true, Op::Gt) => n(&b.left).map(|v| v.saturating_sub(1)),
                    (false, true, Op::Eq) if n(&b.left) == Some(1) => Some(1),
                    _ => None,
                }
            }
            _ => None,
        };
        match bound {
            Some(b) if limit.is_none() => limit = Some(b as usize),
            _ => rest.push(c.clone()),
        }
    }
    let limit = limit.filter(|l| *l > 0)?;
    Some(TopN {
        projection,
        window,
        limit,
        rest,
    })
}

fn scalar_u64(v: &ScalarValue) -> Option<u64> {
    match v {
        ScalarValue::Int8(Some(x)) => u64::try_from(*x).ok(),
        ScalarValue::Int16(Some(x)) => u64::try_from(*x).ok(),
        ScalarValue::Int32(Some(x)) => u64::try_from(*x).ok(),
        ScalarValue::Int64(Some(x)) => u64::try_from(*x).ok(),
        ScalarValue::UInt8(Some(x)) => Some(u64::from(*x)),
        ScalarValue::UInt16(Some(x)) => Some(u64::from(*x)),
        ScalarValue::UInt32(Some(x)) => Some(u64::from(*x)),
        ScalarValue::UInt64(Some(x)) => Some(*x),
        _ => None,
    }
}

impl Lowerer {
    /// The Rank node, the projection above it, and the rest of the filter.
    pub(super) fn lower_top_n(
        &mut self,
        t: TopN<'_>,
        filter: &Filter,
    ) -> Result<Vec<usize>, SqlError> {
        let w = t.window;
        let inner = match &w.window_expr[0] {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        let Expr::WindowFunction(wf) = inner else {
            return Err(SqlError::Internal(
                "ROW_NUMBER is not a window function".into(),
            ));
        };
        let function = rank_function(inner).unwrap_or(RankFunction::RowNumber);
        let fname = function.sql();
        let params = &wf.params;
        let input_schema = w.input.schema();
        let col = |e: &Expr, what: &str| -> Result<usize, SqlError> {
            match e {
                Expr::Column(c) => input_schema
                    .index_of_column(c)
                    .map_err(|_| SqlError::Internal(format!("{what} column {c} not found"))),
                other => Err(self.unsupported(&format!(
                    "{fname}() OVER ({what} {other}): use columns (compute the expression in a view first)"
                ))),
            }
        };
        let partition = params
            .partition_by
            .iter()
            .map(|e| col(e, "PARTITION BY"))
            .collect::<Result<Vec<_>, _>>()?;
        if params.order_by.is_empty() {
            return Err(self.unsupported(&format!("{fname}() OVER (…) needs an ORDER BY")));
        }
        let order = params
            .order_by
            .iter()
            .map(|s| col(&s.expr, "ORDER BY").map(|c| (c, !s.asc)))
            .collect::<Result<Vec<_>, _>>()?;
        let inputs = self.lower(&w.input)?;
        let first = &self.graph.nodes[inputs[0]];
        let input_updating = inputs
            .iter()
            .any(|i| self.graph.nodes[*i].updating.is_some());
        let window = first.window;
        let event_time = first.event_time;
        // Window Top-N: partitioned by the window of append-only windowed rows.
        let window_end = window
            .filter(|win| {
                !input_updating && partition.contains(&win.start) && partition.contains(&win.end)
            })
            .map(|win| win.end);
        // Keep-first deduplication on processing time: the first arrival wins for good.
        let first_arrival = t.limit == 1
            && function == RankFunction::RowNumber
            && !input_updating
            && window_end.is_none()
            && matches!(order.as_slice(), [(c, false)]
                if inputs.iter().all(|&i| self.is_proctime(i, *c)));
        let spec = RankSpec {
            first_arrival,
            partition: partition.clone(),
            order,
            function,
            limit: t.limit,
            number: true,
            window_end,
            input_updating,
            state_ttl_ms: self.state_ttl_ms(),
        };
        let schema: SchemaRef = Arc::new(w.schema.as_arrow().clone());
        let inputs = super::hashed(inputs, &partition);
        let label = if t.limit == 1 && function == RankFunction::RowNumber {
            "deduplicate"
        } else {
            "top-n"
        };
        let label = if window_end.is_some() {
            format!("window {label}")
        } else {
            label.to_string()
        };
        let id = self.push(label.clone(), NodeSpec::Rank(spec), schema, inputs);
        if first_arrival {
            // Append-only: the rows keep their event time.
            self.graph.nodes[id].event_time = event_time;
        } else if window_end.is_some() {
            self.graph.nodes[id].window = window.map(|w| WindowCols {
                session_gap_ms: None,
                processing_time: false,
                ..w
            });
            self.graph.nodes[id].event_time = event_time;
        } else {
            self.graph.nodes[id].updating =
                Some(format!("the {label} ({fname}) at line {}", self.line));
        }
        // The SELECT around ROW_NUMBER, then what else the WHERE asked.
        let exprs = t
            .projection
            .expr
            .iter()
            .map(|e| self.physical(e, &w.schema))
            .collect::<Result<Vec<_>, _>>()?;
        let pschema: SchemaRef = Arc::new(t.projection.schema.as_arrow().clone());
        let rest = match datafusion_expr::utils::conjunction(t.rest) {
            None => None,
            Some(e) => Some(self.physical(&e, filter.input.schema())?),
        };
        let projected = self.push_project(vec![id], None, exprs, pschema.clone());
        Ok(match rest {
            None => vec![projected],
            Some(pred) => {
                let exprs = super::identity(&pschema);
                vec![self.push_project(vec![projected], Some(pred), exprs, pschema)]
            }
        })
    }
}
