//! Lowering of OVER aggregates: `agg(x) OVER (PARTITION BY k ORDER BY time ROWS|RANGE
//! BETWEEN … PRECEDING AND CURRENT ROW)`, as Flink runs them: ordered by the event-time
//! column, every OVER of a query over the same window.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion_common::ScalarValue;
use datafusion_expr::expr::{AggregateFunction, AggregateFunctionParams, WindowFunction};
use datafusion_expr::logical_plan::Window;
use datafusion_expr::{Expr, WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition};

use super::Lowerer;
use crate::error::SqlError;
use crate::graph::{NodeSpec, OverFrame, OverSpec};

impl Lowerer {
    pub(super) fn lower_over(&mut self, w: &Window) -> Result<Vec<usize>, SqlError> {
        let inputs = self.lower(&w.input)?;
        let first = &self.graph.nodes[inputs[0]];
        if let Some(op) = &first.updating {
            return Err(self.unsupported(&format!(
                "OVER aggregates need an append-only input, but theirs is updated by {op}"
            )));
        }
        let Some(time_col) = first.event_time else {
            return Err(self.unsupported(
                "OVER aggregates are ordered by event time: the input needs a time column \
                 declared with WATERMARK FOR",
            ));
        };
        let input_schema = w.input.schema();
        let arrow_input: SchemaRef = Arc::new(input_schema.as_arrow().clone());
        let time_name = input_schema.field(time_col).name().clone();
        let mut shape: Option<(Vec<Expr>, OverFrame)> = None;
        let mut aggs = Vec::new();
        let width = input_schema.fields().len();
        for (i, e) in w.window_expr.iter().enumerate() {
            let inner = match e {
                Expr::Alias(a) => a.expr.as_ref(),
                other => other,
            };
            let Expr::WindowFunction(wf) = inner else {
                return Err(self.unsupported(&format!("{e} is not an OVER aggregate")));
            };
            let WindowFunction { fun, params } = wf.as_ref();
            let WindowFunctionDefinition::AggregateUDF(udaf) = fun else {
                return Err(self.unsupported(&format!(
                    "{}() OVER (…) is not supported; OVER takes aggregates (COUNT, SUM, AVG, \
                     MIN, MAX, …), and ROW_NUMBER() for Top-N",
                    fun.name().to_ascii_uppercase()
                )));
            };
            let [order] = params.order_by.as_slice() else {
                return Err(self.unsupported(&format!(
                    "OVER (… ORDER BY {time_name}): order by the event-time column only"
                )));
            };
            let ordered_by_time = matches!(&order.expr, Expr::Column(c)
                if input_schema.index_of_column(c).ok() == Some(time_col));
            if !ordered_by_time || !order.asc {
                return Err(self.unsupported(&format!(
                    "OVER (… ORDER BY {}): order by the event-time column {time_name} ascending",
                    order.expr
                )));
            }
            let frame = self.frame(&params.window_frame)?;
            if frame == OverFrame::Unbounded
                && crate::functions::outlier::NEED_BOUNDED_FRAME.contains(&udaf.name())
            {
                return Err(self.unsupported(&format!(
                    "{}() OVER an unbounded frame would keep every row of the partition; \
                     bound the frame: ROWS BETWEEN n PRECEDING AND CURRENT ROW or RANGE \
                     BETWEEN INTERVAL … PRECEDING AND CURRENT ROW",
                    udaf.name()
                )));
            }
            match &shape {
                None => shape = Some((params.partition_by.clone(), frame)),
                Some((p, f)) if *p == params.partition_by && *f == frame => {}
                Some(_) => {
                    return Err(self.unsupported(
                        "every OVER of a query must use the same PARTITION BY, ORDER BY and frame",
                    ));
                }
            }
            let call = Expr::AggregateFunction(AggregateFunction {
                func: Arc::clone(udaf),
                params: AggregateFunctionParams {
                    // COUNT(*) reaches OVER with its wildcard still in place.
                    #[allow(deprecated)]
                    args: params
                        .args
                        .iter()
                        .map(|a| match a {
                            Expr::Wildcard { .. } => {
                                Expr::Literal(ScalarValue::Int64(Some(1)), None)
                            }
                            other => other.clone(),
                        })
                        .collect(),
                    distinct: params.distinct,
                    filter: params.filter.clone(),
                    order_by: Vec::new(),
                    null_treatment: params.null_treatment,
                },
            });
            let name = w.schema.field(width + i).name().clone();
            aggs.push(Arc::new(self.aggregate_expr(
                &call,
                input_schema,
                &arrow_input,
                &name,
                None,
            )?));
        }
        let Some((partition_by, frame)) = shape else {
            return Err(SqlError::Internal("an OVER without functions".into()));
        };
        let partition = partition_by
            .iter()
            .map(|e| match e {
                Expr::Column(c) => input_schema
                    .index_of_column(c)
                    .map_err(|_| SqlError::Internal(format!("column {c} not found"))),
                other => Err(self.unsupported(&format!(
                    "OVER (PARTITION BY {other}): partition by columns (compute it in a view first)"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let spec = OverSpec {
            state_ttl_ms: self.state_ttl_ms(),
            partition: partition.clone(),
            time_col,
            frame,
            aggs,
        };
        let schema: SchemaRef = Arc::new(w.schema.as_arrow().clone());
        let inputs = super::hashed(inputs, &partition);
        let id = self.push(
            "over aggregate".into(),
            NodeSpec::Over(spec),
            schema,
            inputs,
        );
        self.graph.nodes[id].event_time = Some(time_col);
        Ok(vec![id])
    }

    fn frame(&self, f: &datafusion_expr::WindowFrame) -> Result<OverFrame, SqlError> {
        let bad = || {
            self.unsupported(
                "OVER frames are ROWS BETWEEN n PRECEDING AND CURRENT ROW, RANGE BETWEEN \
                 INTERVAL … PRECEDING AND CURRENT ROW, or UNBOUNDED PRECEDING",
            )
        };
        if f.end_bound != WindowFrameBound::CurrentRow {
            return Err(bad());
        }
        let WindowFrameBound::Preceding(v) = &f.start_bound else {
            return Err(bad());
        };
        if v.is_null() {
            return Ok(OverFrame::Unbounded);
        }
        match f.units {
            WindowFrameUnits::Rows => match v {
                ScalarValue::UInt64(Some(n)) => Ok(OverFrame::Rows(*n)),
                ScalarValue::Int64(Some(n)) if *n >= 0 => Ok(OverFrame::Rows(*n as u64)),
                _ => Err(bad()),
            },
            WindowFrameUnits::Range => match v {
                ScalarValue::IntervalDayTime(Some(d)) => Ok(OverFrame::Range(
                    i64::from(d.days) * 86_400_000 + i64::from(d.milliseconds),
                )),
                ScalarValue::IntervalMonthDayNano(Some(d)) if d.months == 0 => Ok(
                    OverFrame::Range(i64::from(d.days) * 86_400_000 + d.nanoseconds / 1_000_000),
                ),
                _ => Err(bad()),
            },
            WindowFrameUnits::Groups => Err(bad()),
        }
    }
}
