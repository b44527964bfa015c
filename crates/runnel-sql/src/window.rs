//! `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL …))`, `HOP` and `SESSION`:
//! Flink's window table-valued functions, planned as a relation whose schema
//! is the input's plus `window_start`, `window_end` and `window_time`.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion_common::{DataFusionError, Result, TableReference, plan_err};
use datafusion_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use datafusion_expr::{LogicalPlanBuilder, TableSource};
use sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, TableAlias,
    TableFactor,
};

use crate::catalog::{Relation, RelationSource};
use crate::ddl::interval_ms;
use crate::dialect::TABLE_ARG_FN;
use crate::graph::WindowKind;

/// A planned window TVF: what the lowering needs to assign windows.
#[derive(Debug, Clone)]
pub struct WindowTvf {
    /// Tumble, hop or session, with sizes in ms.
    pub kind: WindowKind,
    /// The table or view the function reads.
    pub input: Arc<RelationSource>,
    /// Index of the `DESCRIPTOR(col)` column in the input.
    pub time_col: usize,
    /// `PARTITION BY` columns (SESSION only), as input indices.
    pub partition: Vec<usize>,
}

/// Plans window TVFs in FROM; leaves every other relation to DataFusion.
#[derive(Debug, Default)]
pub struct WindowTvfPlanner;

impl RelationPlanner for WindowTvfPlanner {
    fn plan_relation(
        &self,
        relation: TableFactor,
        ctx: &mut dyn RelationPlannerContext,
    ) -> Result<RelationPlanning> {
        let (name, args, alias) = match &relation {
            TableFactor::TableFunction {
                expr: SqlExpr::Function(f),
                alias,
            } => match &f.args {
                FunctionArguments::List(list) => (f.name.clone(), list.args.clone(), alias.clone()),
                _ => return Ok(RelationPlanning::Original(Box::new(relation))),
            },
            TableFactor::Function {
                name, args, alias, ..
            } => (name.clone(), args.clone(), alias.clone()),
            _ => return Ok(RelationPlanning::Original(Box::new(relation))),
        };
        let fname = object_last(&name).to_ascii_uppercase();
        if !matches!(fname.as_str(), "TUMBLE" | "HOP" | "CUMULATE" | "SESSION") {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        }
        let planned = plan_tvf(&fname, args, alias, ctx)?;
        Ok(RelationPlanning::Planned(Box::new(planned)))
    }
}

fn object_last(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.clone())
        .unwrap_or_default()
}

fn arg_expr(arg: &FunctionArg) -> Option<&SqlExpr> {
    match arg {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
        FunctionArg::Named {
            arg: FunctionArgExpr::Expr(e),
            ..
        } => Some(e),
        FunctionArg::ExprNamed {
            arg: FunctionArgExpr::Expr(e),
            ..
        } => Some(e),
        _ => None,
    }
}

fn function_args(e: &SqlExpr) -> Option<(String, Vec<SqlExpr>)> {
    let SqlExpr::Function(f) = e else { return None };
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let args = list.args.iter().filter_map(arg_expr).cloned().collect();
    Some((object_last(&f.name), args))
}

fn ident_name(e: &SqlExpr) -> Option<String> {
    match e {
        SqlExpr::Identifier(i) => Some(i.value.clone()),
        SqlExpr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        _ => None,
    }
}

fn plan_tvf(
    fname: &str,
    args: Vec<FunctionArg>,
    alias: Option<TableAlias>,
    ctx: &mut dyn RelationPlannerContext,
) -> Result<PlannedRelation> {
    let usage = match fname {
        "TUMBLE" => "TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL 'size' SECOND)",
        "HOP" => "HOP(TABLE t, DESCRIPTOR(ts), INTERVAL 'slide' SECOND, INTERVAL 'size' SECOND)",
        "CUMULATE" => {
            "CUMULATE(TABLE t, DESCRIPTOR(ts), INTERVAL 'step' SECOND, INTERVAL 'size' SECOND)"
        }
        _ => "SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), INTERVAL 'gap' SECOND)",
    };
    let exprs: Vec<&SqlExpr> = args.iter().filter_map(arg_expr).collect();
    let Some((marker, table_args)) = exprs.first().and_then(|e| function_args(e)) else {
        return plan_err!("{fname}: the first argument must be TABLE name; usage: {usage}");
    };
    if marker != TABLE_ARG_FN || table_args.is_empty() {
        return plan_err!("{fname}: the first argument must be TABLE name; usage: {usage}");
    }
    let table_name = match &table_args[0] {
        SqlExpr::CompoundIdentifier(parts) => parts
            .iter()
            .map(|p| p.value.clone())
            .collect::<Vec<_>>()
            .join("."),
        SqlExpr::Identifier(i) => i.value.clone(),
        other => return plan_err!("{fname}: expected a table name after TABLE, got {other}"),
    };
    let source = ctx
        .context_provider()
        .get_table_source(TableReference::bare(table_name.clone()))?;
    let Some(input) = source.downcast_ref::<RelationSource>() else {
        return plan_err!("{fname}: '{table_name}' is not a runnel table or view");
    };
    let input = Arc::new(input.clone());
    let schema = input.schema();
    let col_index = |name: &str| -> Result<usize> {
        schema.index_of(name).map_err(|_| {
            DataFusionError::Plan(format!(
                "{fname}: '{table_name}' has no column '{name}'; columns: {}",
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    };
    let mut partition = Vec::new();
    let keys: Vec<&SqlExpr> = table_args[1..]
        .iter()
        .flat_map(|k| match k {
            SqlExpr::Tuple(items) => items.iter().collect::<Vec<_>>(),
            SqlExpr::Nested(inner) => vec![inner.as_ref()],
            other => vec![other],
        })
        .collect();
    for k in keys {
        let Some(n) = ident_name(k) else {
            return plan_err!("{fname}: PARTITION BY takes column names, got {k}");
        };
        partition.push(col_index(&n)?);
    }
    if !partition.is_empty() && fname != "SESSION" {
        return plan_err!("{fname}: PARTITION BY is only allowed in SESSION");
    }
    let Some((desc, desc_args)) = exprs.get(1).and_then(|e| function_args(e)) else {
        return plan_err!(
            "{fname}: the second argument must be DESCRIPTOR(time_column); usage: {usage}"
        );
    };
    if !desc.eq_ignore_ascii_case("DESCRIPTOR") || desc_args.len() != 1 {
        return plan_err!(
            "{fname}: the second argument must be DESCRIPTOR(time_column); usage: {usage}"
        );
    }
    let Some(time_name) = ident_name(&desc_args[0]) else {
        return plan_err!("{fname}: DESCRIPTOR takes a column name");
    };
    let time_col = col_index(&time_name)?;
    if !matches!(
        schema.field(time_col).data_type(),
        DataType::Timestamp(_, _)
    ) {
        return plan_err!(
            "{fname}: DESCRIPTOR({time_name}) must name a TIMESTAMP(3) column with a WATERMARK"
        );
    }
    let intervals: Vec<i64> = exprs[2..]
        .iter()
        .map(|e| {
            interval_ms(e).ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "{fname}: expected INTERVAL 'n' unit, got {e}; usage: {usage}"
                ))
            })
        })
        .collect::<Result<_>>()?;
    let kind = match (fname, intervals.as_slice()) {
        ("TUMBLE", [size]) if *size > 0 => WindowKind::Tumble { size_ms: *size },
        ("HOP", [slide, size]) if *slide > 0 && *size > 0 => {
            if size % slide != 0 {
                return plan_err!(
                    "HOP: the size ({size} ms) must be a multiple of the slide ({slide} ms)"
                );
            }
            WindowKind::Hop {
                slide_ms: *slide,
                size_ms: *size,
            }
        }
        ("CUMULATE", [step, size]) if *step > 0 && *size > 0 => {
            if size % step != 0 {
                return plan_err!(
                    "CUMULATE: the size ({size} ms) must be a multiple of the step ({step} ms)"
                );
            }
            WindowKind::Cumulate {
                step_ms: *step,
                size_ms: *size,
            }
        }
        ("SESSION", [gap]) if *gap > 0 => WindowKind::Session { gap_ms: *gap },
        _ => {
            return plan_err!(
                "{fname}: wrong interval arguments (sizes must be positive); usage: {usage}"
            );
        }
    };
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("window_start", ts.clone(), false));
    fields.push(Field::new("window_end", ts.clone(), false));
    fields.push(Field::new("window_time", ts, false));
    let out_schema = Arc::new(Schema::new(fields));
    let tvf = WindowTvf {
        kind,
        input,
        time_col,
        partition,
    };
    let label = format!("{}({table_name})", fname.to_ascii_lowercase());
    let rel = Arc::new(RelationSource::new(
        &label,
        Relation::Window(Box::new(tvf)),
        out_schema,
    ));
    let plan = LogicalPlanBuilder::scan(TableReference::bare(label), rel, None)?.build()?;
    Ok(PlannedRelation::new(plan, alias))
}
