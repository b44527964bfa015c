//! `CROSS JOIN UNNEST(arr) AS t(x)`: Flink's way to turn one row with an array into
//! one row per element. An array of ROWs is spread into one column per field
//! (`UNNEST(detect(img)) AS d(label, score, …)`), a MAP into key and value.
//!
//! Planned here as a relation over the outer row (a lateral relation): the array
//! expression, unnested, then the element's fields. The lowering runs it as an
//! Unnest operator over the left side of the join.

use arrow::datatypes::DataType;
use datafusion_common::{DFSchema, Result, plan_err};
use datafusion_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use datafusion_expr::{Expr, ExprSchemable, LogicalPlanBuilder, col};
use sqlparser::ast::TableFactor;

/// Name of the unnested array column inside the planned relation.
pub const UNNEST_COLUMN: &str = "__unnest";

/// Plans `UNNEST(expr)` in FROM; leaves every other relation to the others.
#[derive(Debug, Default)]
pub struct UnnestPlanner;

impl RelationPlanner for UnnestPlanner {
    fn plan_relation(
        &self,
        relation: TableFactor,
        ctx: &mut dyn RelationPlannerContext,
    ) -> Result<RelationPlanning> {
        let (alias, array_exprs, with_offset, with_ordinality) = match relation {
            TableFactor::UNNEST {
                alias,
                array_exprs,
                with_offset,
                with_ordinality,
                ..
            } => (alias, array_exprs, with_offset, with_ordinality),
            other => return Ok(RelationPlanning::Original(Box::new(other))),
        };
        if with_offset || with_ordinality {
            return plan_err!("UNNEST … WITH ORDINALITY / WITH OFFSET is not supported");
        }
        let [array] = <[_; 1]>::try_from(array_exprs).map_err(|exprs| {
            datafusion_common::DataFusionError::Plan(format!(
                "UNNEST takes one array (or map), not {}; write one CROSS JOIN UNNEST per array",
                exprs.len()
            ))
        })?;
        let empty = DFSchema::empty();
        let mut expr = ctx.sql_to_expr(array.clone(), &empty)?;
        let mut dt = expr.get_type(&empty)?;
        if matches!(dt, DataType::Map(..)) {
            // A map's entries, as an array of ROW<key, value>.
            expr = datafusion_functions_nested::expr_fn::map_entries(expr);
            dt = expr.get_type(&empty)?;
        }
        let element = match &dt {
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                f.data_type().clone()
            }
            other => {
                return plan_err!(
                    "UNNEST needs an ARRAY or a MAP, but {array} is {}",
                    runnel_common::types::sql_name(other)
                );
            }
        };
        let mut plan = LogicalPlanBuilder::empty(true)
            .project(vec![expr.alias(UNNEST_COLUMN)])?
            .unnest_column(UNNEST_COLUMN)?;
        if let DataType::Struct(fields) = &element {
            // Named as the alias names them (`AS d (label, …)`) right away: a field named
            // like a column of the other side must not make the join's schema ambiguous.
            let renamed = |i: usize| {
                alias
                    .as_ref()
                    .filter(|a| a.columns.len() == fields.len())
                    .map(|a| a.columns[i].name.value.clone())
            };
            let spread: Vec<Expr> = fields
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    datafusion_functions::core::expr_fn::get_field(
                        col(UNNEST_COLUMN),
                        f.name().as_str(),
                    )
                    .alias(renamed(i).unwrap_or_else(|| f.name().clone()))
                })
                .collect();
            plan = plan.project(spread)?;
        }
        let plan = plan.build()?;
        let names = plan.schema().fields().len();
        if let Some(a) = &alias
            && !a.columns.is_empty()
            && a.columns.len() != names
        {
            return plan_err!(
                "UNNEST({array}) AS {}(…) names {} columns, but each element has {names}",
                a.name,
                a.columns.len()
            );
        }
        Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
            plan, alias,
        ))))
    }
}
