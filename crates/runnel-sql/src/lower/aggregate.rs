//! Lowering of aggregates: window aggregates (tumble, hop, session, cumulative keys) and
//! their aggregate calls, compiled against the input schema.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion_common::DFSchemaRef;
use datafusion_expr::Expr;
use datafusion_physical_expr::expressions::Column;

use super::Lowerer;
use crate::error::{SqlError, clean_datafusion_message};
use crate::graph::{GroupAggSpec, GroupCol, NodeSpec, WindowAggSpec, WindowCols};

impl Lowerer {
    /// GROUP BY window_start, window_end[, keys] over windowed rows.
    pub(super) fn lower_aggregate(
        &mut self,
        agg: &datafusion_expr::logical_plan::Aggregate,
    ) -> Result<Vec<usize>, SqlError> {
        // LAG looks back by rows in time order: only OVER gives it that order.
        let is_lag = |e: &Expr| {
            let inner = match e {
                Expr::Alias(a) => a.expr.as_ref(),
                other => other,
            };
            matches!(inner, Expr::AggregateFunction(f) if f.func.name() == "lag")
        };
        if agg.aggr_expr.iter().any(is_lag) {
            return Err(self.unsupported(
                "LAG(…) is an OVER function: LAG(x) OVER (PARTITION BY … ORDER BY ts), not an \
                 aggregate of GROUP BY",
            ));
        }
        let inputs = self.lower(&agg.input)?;
        let first = &self.graph.nodes[inputs[0]];
        let Some(win) = first.window else {
            return self.lower_group_aggregate(agg, inputs);
        };
        if let Some(op) = &first.updating {
            return Err(self.unsupported(&format!(
                "a window aggregate needs an append-only input, but its input is updated by {op}"
            )));
        }
        let event_time = first.event_time;
        let input_schema = agg.input.schema();
        let mut key_cols = Vec::new();
        let mut layout = Vec::new();
        for g in &agg.group_expr {
            let col = match g {
                Expr::Column(c) => input_schema.index_of_column(c).ok(),
                _ => None,
            };
            let Some(col) = col else {
                return Err(self.unsupported(&format!(
                    "GROUP BY {g}: group by columns only (compute the expression in a view first)"
                )));
            };
            if col == win.start {
                layout.push(GroupCol::Start);
            } else if col == win.end {
                layout.push(GroupCol::End);
            } else {
                layout.push(GroupCol::Key(key_cols.len()));
                key_cols.push(col);
            }
        }
        if !layout.contains(&GroupCol::Start) || !layout.contains(&GroupCol::End) {
            return Err(self
                .unsupported("a windowed GROUP BY must include both window_start and window_end"));
        }
        let arrow_input: SchemaRef = Arc::new(input_schema.as_arrow().clone());
        let n_groups = agg.group_expr.len();
        let mut aggs = Vec::new();
        for (i, e) in agg.aggr_expr.iter().enumerate() {
            let name = agg.schema.field(n_groups + i).name().clone();
            aggs.push(Arc::new(self.aggregate_expr(
                e,
                input_schema,
                &arrow_input,
                &name,
                event_time,
            )?));
        }
        // Route every window of a key to one subtask; with no keys, spread windows by start.
        let hash: Vec<usize> = match (key_cols.is_empty(), win.session_gap_ms) {
            (false, _) => key_cols.clone(),
            (true, None) => vec![win.start],
            (true, Some(_)) => Vec::new(), // one global session stream: a single subtask
        };
        let spec = WindowAggSpec {
            end_col: win.end,
            start_col: win.start,
            key_cols,
            group_layout: layout.clone(),
            aggs,
            session_gap_ms: win.session_gap_ms,
            processing_time: win.processing_time,
        };
        let schema: SchemaRef = Arc::new(agg.schema.as_arrow().clone());
        let inputs = super::hashed(inputs, &hash);
        let label = if win.session_gap_ms.is_some() {
            "session aggregate"
        } else {
            "window aggregate"
        };
        let id = self.push(
            label.to_string(),
            NodeSpec::WindowAggregate(spec),
            schema,
            inputs,
        );
        let start = layout.iter().position(|g| *g == GroupCol::Start);
        let end = layout.iter().position(|g| *g == GroupCol::End);
        if let (Some(start), Some(end)) = (start, end) {
            self.graph.nodes[id].window = Some(WindowCols {
                start,
                end,
                session_gap_ms: None,
                processing_time: false,
            });
        }
        Ok(vec![id])
    }

    /// GROUP BY keys (any expressions) over an unbounded stream: an updating result.
    fn lower_group_aggregate(
        &mut self,
        agg: &datafusion_expr::logical_plan::Aggregate,
        mut inputs: Vec<usize>,
    ) -> Result<Vec<usize>, SqlError> {
        let input_schema = agg.input.schema();
        let width = input_schema.fields().len();
        let event_time = self.graph.nodes[inputs[0]].event_time;
        let retracting = inputs
            .iter()
            .any(|i| self.graph.nodes[*i].updating.is_some());
        // Group expressions that are not plain columns are computed first, as extra
        // columns after the input's own.
        let mut key_cols = Vec::new();
        let mut extra = Vec::new();
        for g in &agg.group_expr {
            match g {
                Expr::Column(c) if let Ok(i) = input_schema.index_of_column(c) => key_cols.push(i),
                other => {
                    key_cols.push(width + extra.len());
                    extra.push(self.physical(other, input_schema)?);
                }
            }
        }
        if !extra.is_empty() {
            let mut exprs = super::identity(input_schema.as_arrow());
            let mut fields: Vec<arrow::datatypes::Field> = input_schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            let group_fields = agg.schema.fields();
            for (i, e) in extra.into_iter().enumerate() {
                let at = key_cols.iter().position(|k| *k == width + i).unwrap_or(0);
                let f = group_fields[at].as_ref().clone();
                fields.push(f.with_name(format!("__group{i}")));
                exprs.push(e);
            }
            let schema = Arc::new(arrow::datatypes::Schema::new(fields));
            inputs = vec![self.push_project(inputs, None, exprs, schema)];
        }
        let arrow_input: SchemaRef = Arc::new(input_schema.as_arrow().clone());
        let n_groups = agg.group_expr.len();
        let mut aggs = Vec::new();
        for (i, e) in agg.aggr_expr.iter().enumerate() {
            let name = agg.schema.field(n_groups + i).name().clone();
            let a = self.aggregate_expr(e, input_schema, &arrow_input, &name, event_time)?;
            if retracting {
                self.check_retractable(&a)?;
            }
            aggs.push(Arc::new(a));
        }
        let spec = GroupAggSpec {
            key_cols: key_cols.clone(),
            aggs,
            retracting,
            state_ttl_ms: self.state_ttl_ms(),
            mini_batch: self.mini_batch(),
        };
        let schema: SchemaRef = Arc::new(agg.schema.as_arrow().clone());
        let inputs = super::hashed(inputs, &key_cols);
        let label = "group aggregate".to_string();
        let id = self.push(
            label.clone(),
            NodeSpec::GroupAggregate(spec),
            schema,
            inputs,
        );
        self.graph.nodes[id].updating = Some(format!("the GROUP BY at line {}", self.line));
        Ok(vec![id])
    }

    /// Over a changelog an aggregate must take rows back out.
    fn check_retractable(
        &self,
        a: &datafusion_physical_expr::aggregate::AggregateFunctionExpr,
    ) -> Result<(), SqlError> {
        let name = a.fun().name().to_ascii_lowercase();
        let own = matches!(name.as_str(), "min" | "max") || (name == "count" && a.is_distinct());
        let retracts = !a.is_distinct()
            && a.create_sliding_accumulator()
                .is_ok_and(|acc| acc.supports_retract_batch());
        if own || retracts {
            return Ok(());
        }
        Err(self.unsupported(&format!(
            "{}{} over an updating input is not supported (it cannot take rows back out);              COUNT, SUM, AVG, MIN, MAX and COUNT(DISTINCT …) can",
            name.to_ascii_uppercase(),
            if a.is_distinct() { "(DISTINCT …)" } else { "" }
        )))
    }

    /// `SET 'table.exec.state.ttl'`, if given.
    pub(super) fn state_ttl_ms(&self) -> Option<i64> {
        self.graph
            .settings
            .get("table.exec.state.ttl")
            .and_then(|v| runnel_common::time::parse_duration_ms(v))
            .filter(|ms| *ms > 0)
    }

    /// `SET 'table.exec.mini-batch.enabled' = 'true'` with its latency and size
    /// (Flink's defaults would refuse to start without them; runnel takes 1 s and
    /// 5000 rows).
    pub(super) fn mini_batch(&self) -> Option<crate::graph::MiniBatch> {
        let s = &self.graph.settings;
        if !s
            .get("table.exec.mini-batch.enabled")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        {
            return None;
        }
        let latency_ms = s
            .get("table.exec.mini-batch.allow-latency")
            .and_then(|v| runnel_common::time::parse_duration_ms(v))
            .filter(|ms| *ms > 0)
            .unwrap_or(1000);
        let size = s
            .get("table.exec.mini-batch.size")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(5000);
        Some(crate::graph::MiniBatch { latency_ms, size })
    }

    pub(super) fn aggregate_expr(
        &self,
        e: &Expr,
        input: &DFSchemaRef,
        arrow_input: &SchemaRef,
        name: &str,
        event_time: Option<usize>,
    ) -> Result<datafusion_physical_expr::aggregate::AggregateFunctionExpr, SqlError> {
        use datafusion_expr::expr::{AggregateFunction, AggregateFunctionParams, NullTreatment};
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
            return Err(self.unsupported(&format!("{e} is not an aggregate function")));
        };
        let AggregateFunctionParams {
            args,
            distinct,
            filter,
            order_by,
            null_treatment,
        } = params;
        // `agg(x) FILTER (WHERE c)` is `agg(CASE WHEN c THEN x END)` for aggregates that
        // skip NULLs: rows that fail the condition contribute nothing.
        const SKIP_NULLS: [&str; 10] = [
            "count",
            "sum",
            "min",
            "max",
            "avg",
            "mean",
            "stddev",
            "stddev_pop",
            "var",
            "var_pop",
        ];
        let args: Vec<Expr> = match filter {
            None => args.clone(),
            Some(_) if !SKIP_NULLS.contains(&func.name().to_ascii_lowercase().as_str()) => {
                return Err(self.unsupported(&format!(
                    "FILTER (WHERE …) is supported with COUNT, SUM, MIN, MAX, AVG, STDDEV and \
                     VAR, not with {}",
                    func.name().to_ascii_uppercase()
                )));
            }
            Some(cond) => args
                .iter()
                .map(|a| {
                    Expr::Case(datafusion_expr::expr::Case {
                        expr: None,
                        when_then_expr: vec![(cond.clone(), Box::new(a.clone()))],
                        else_expr: None,
                    })
                })
                .collect(),
        };
        // DataFusion's APPROX_DISTINCT has no HyperLogLog for floating point: it counts
        // the values' text instead (one text per distinct number).
        let args: Vec<Expr> = if func.name().eq_ignore_ascii_case("approx_distinct") {
            use datafusion_expr::ExprSchemable;
            args.into_iter()
                .map(|a| match a.get_type(input.as_ref()) {
                    Ok(t) if t.is_floating() => Expr::Cast(datafusion_expr::expr::Cast::new(
                        Box::new(a),
                        arrow::datatypes::DataType::Utf8,
                    )),
                    _ => a,
                })
                .collect()
        } else {
            args
        };
        let phys_args = args
            .iter()
            .map(|a| self.physical(a, input))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sorts = Vec::new();
        for s in order_by {
            sorts.push(datafusion_physical_expr::PhysicalSortExpr {
                expr: self.physical(&s.expr, input)?,
                options: arrow::compute::SortOptions {
                    descending: !s.asc,
                    nulls_first: s.nulls_first,
                },
            });
        }
        // Flink's FIRST_VALUE / LAST_VALUE follow event time.
        let fname = func.name().to_ascii_lowercase();
        if sorts.is_empty()
            && (fname == "first_value" || fname == "last_value")
            && let Some(et) = event_time
        {
            sorts.push(datafusion_physical_expr::PhysicalSortExpr {
                expr: Arc::new(Column::new(arrow_input.field(et).name(), et)),
                options: arrow::compute::SortOptions {
                    descending: false,
                    nulls_first: false,
                },
            });
        }
        let mut builder = datafusion_physical_expr::aggregate::AggregateExprBuilder::new(
            Arc::clone(func),
            phys_args,
        )
        .schema(Arc::clone(arrow_input))
        .alias(name)
        .order_by(sorts)
        .with_ignore_nulls(matches!(null_treatment, Some(NullTreatment::IgnoreNulls)));
        if *distinct {
            builder = builder.distinct();
        }
        builder.build().map_err(|err| SqlError::Plan {
            line: self.line,
            message: clean_datafusion_message(&err),
        })
    }
}
