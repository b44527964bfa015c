//! `JOIN dim FOR SYSTEM_TIME AS OF s.proc_time AS d ON …`: Flink's lookup join (a
//! processing-time temporal join). The table after `FOR SYSTEM_TIME AS OF` is not
//! read as a stream: each stream row looks up the rows the table holds when it
//! arrives. Planned here as a scan of a [`Relation::Lookup`]; the lowering turns the
//! join it is the right side of into a lookup-join node.

use std::sync::Arc;

use datafusion_common::{Result, TableReference, plan_err};
use datafusion_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use datafusion_expr::{LogicalPlanBuilder, TableSource};
use runnel_common::TableSpec;
use sqlparser::ast::{Expr as SqlExpr, TableFactor, TableVersion};

use crate::catalog::{Relation, RelationSource};

/// A table read by look-ups (`FOR SYSTEM_TIME AS OF`).
#[derive(Debug, Clone)]
pub struct LookupRelation {
    /// The looked-up table.
    pub table: TableSpec,
    /// The stream's column named after `AS OF` (it must be a `PROCTIME()` column).
    pub as_of: String,
}

/// Plans `t FOR SYSTEM_TIME AS OF …` in FROM; leaves every other relation to the others.
#[derive(Debug, Default)]
pub struct LookupPlanner;

impl RelationPlanner for LookupPlanner {
    fn plan_relation(
        &self,
        relation: TableFactor,
        ctx: &mut dyn RelationPlannerContext,
    ) -> Result<RelationPlanning> {
        let TableFactor::Table {
            name,
            alias,
            version: Some(version),
            ..
        } = &relation
        else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        let table_name = name
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(|i| i.value.clone()))
            .collect::<Vec<_>>()
            .join(".");
        let as_of = match version {
            TableVersion::ForSystemTimeAsOf(expr) => match expr {
                SqlExpr::Identifier(i) => i.value.clone(),
                SqlExpr::CompoundIdentifier(parts) => match parts.last() {
                    Some(i) => i.value.clone(),
                    None => return plan_err!("FOR SYSTEM_TIME AS OF needs a column"),
                },
                other => {
                    return plan_err!(
                        "{table_name} FOR SYSTEM_TIME AS OF {other}: name the stream's processing-time \
                         column (declared as PROCTIME()), e.g. FOR SYSTEM_TIME AS OF s.proc_time"
                    );
                }
            },
            other => {
                return plan_err!(
                    "{table_name} {other}: only FOR SYSTEM_TIME AS OF (a lookup join) is supported"
                );
            }
        };
        let source = ctx
            .context_provider()
            .get_table_source(TableReference::bare(table_name.clone()))?;
        let Some(rel) = source.downcast_ref::<RelationSource>() else {
            return plan_err!("'{table_name}' is not a runnel table");
        };
        let Relation::Table(spec) = &rel.relation else {
            return plan_err!(
                "{table_name} FOR SYSTEM_TIME AS OF: '{table_name}' is a view; a lookup join \
                 reads a declared table (CREATE TABLE … WITH ('connector' = …))"
            );
        };
        let lookup = Arc::new(RelationSource::new(
            &table_name,
            Relation::Lookup(Box::new(LookupRelation {
                table: spec.clone(),
                as_of,
            })),
            rel.schema(),
        ));
        let plan =
            LogicalPlanBuilder::scan(TableReference::bare(table_name), lookup, None)?.build()?;
        Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
            plan,
            alias.clone(),
        ))))
    }
}
