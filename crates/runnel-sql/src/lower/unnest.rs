//! Lowering of `CROSS JOIN UNNEST(…)`: the right side is a lateral relation over
//! each left row (see `crate::unnest`), so it runs over the left stream itself —
//! projections that keep the left columns and add the right side's, and an Unnest
//! operator that repeats each row per element — with no join state at all.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion_common::DFSchemaRef;
use datafusion_common::tree_node::{Transformed, TreeNode};
use datafusion_expr::logical_plan::Join;
use datafusion_expr::{Expr, LogicalPlan};
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::expressions::Column;

use super::{Lowerer, forward, identity};
use crate::error::{SqlError, clean_datafusion_message};
use crate::graph::{NodeSpec, UnnestSpec};

impl Lowerer {
    /// Whether `join` is `left CROSS JOIN UNNEST(<expression over left>)`.
    pub(super) fn is_lateral(join: &Join) -> bool {
        join.on.is_empty() && !join.right.all_out_ref_exprs().is_empty()
    }

    /// Node ids producing the rows of the lateral join `join` (then its filter).
    pub(super) fn lower_lateral(&mut self, join: &Join) -> Result<Vec<usize>, SqlError> {
        if join.join_type != datafusion_expr::JoinType::Inner {
            return Err(self.unsupported(&format!(
                "{} JOIN UNNEST is not supported; write CROSS JOIN UNNEST(…) AS t(…)",
                join.join_type
            )));
        }
        let left = self.lower(&join.left)?;
        let ids = self.lower_lateral_side(&join.right, left, join.left.schema())?;
        let Some(filter) = &join.filter else {
            return Ok(ids);
        };
        let pred = self.physical(filter, &join.schema)?;
        let schema: SchemaRef = Arc::new(join.schema.as_arrow().clone());
        let exprs = identity(&schema);
        Ok(vec![self.push_project(ids, Some(pred), exprs, schema)])
    }

    /// Nodes whose rows are the left side's columns followed by `plan`'s, where
    /// `plan` is the lateral side planned over one left row.
    fn lower_lateral_side(
        &mut self,
        plan: &LogicalPlan,
        left: Vec<usize>,
        left_schema: &DFSchemaRef,
    ) -> Result<Vec<usize>, SqlError> {
        let width = left_schema.fields().len();
        match plan {
            LogicalPlan::EmptyRelation(e) if e.produce_one_row => Ok(left),
            LogicalPlan::SubqueryAlias(a) => self.lower_lateral_side(&a.input, left, left_schema),
            // The wrapper DataFusion puts around a relation naming outer columns.
            LogicalPlan::Subquery(s) => self.lower_lateral_side(&s.subquery, left, left_schema),
            LogicalPlan::Projection(p) => {
                let ids = self.lower_lateral_side(&p.input, left, left_schema)?;
                let combined = Arc::new(
                    left_schema
                        .as_ref()
                        .clone()
                        .join(p.input.schema())
                        .map_err(|e| self.plan_error(&e))?,
                );
                let mut exprs = identity(left_schema.as_arrow());
                for e in &p.expr {
                    exprs.push(self.physical(&decorrelate(e)?, &combined)?);
                }
                let schema = concat(left_schema, &p.schema);
                Ok(vec![self.push_project(ids, None, exprs, schema)])
            }
            LogicalPlan::Unnest(u) => {
                let ids = self.lower_lateral_side(&u.input, left, left_schema)?;
                let [(column, list)] = u.list_type_columns.as_slice() else {
                    return Err(self.unsupported("UNNEST of more than one array at once"));
                };
                if list.depth != 1 || !u.struct_type_columns.is_empty() {
                    return Err(self.unsupported("UNNEST of nested arrays in one step"));
                }
                let inner = u.input.schema();
                let element = u.schema.field(*column).as_ref().clone();
                // The operator appends the element after the left and inner columns …
                let mut fields: Vec<Field> = left_schema
                    .fields()
                    .iter()
                    .chain(inner.fields().iter())
                    .map(|f| f.as_ref().clone())
                    .collect();
                fields.push(element);
                let appended = fields.len() - 1;
                let expanded: SchemaRef = Arc::new(Schema::new(fields));
                let event_time = ids.first().and_then(|i| self.graph.nodes[*i].event_time);
                let window = ids.first().and_then(|i| self.graph.nodes[*i].window);
                let id = self.push(
                    "unnest".to_string(),
                    NodeSpec::Unnest(UnnestSpec {
                        column: width + column,
                    }),
                    expanded.clone(),
                    forward(ids),
                );
                self.graph.nodes[id].event_time = event_time;
                self.graph.nodes[id].window = window;
                // … and this projection puts it where DataFusion's Unnest has it.
                let mut exprs = identity(left_schema.as_arrow());
                for (out, from) in u.dependency_indices.iter().enumerate() {
                    let at = if out == *column {
                        appended
                    } else {
                        width + from
                    };
                    exprs.push(Arc::new(Column::new(expanded.field(at).name(), at))
                        as Arc<dyn PhysicalExpr>);
                }
                let schema = concat(left_schema, &u.schema);
                Ok(vec![self.push_project(vec![id], None, exprs, schema)])
            }
            other => Err(self.unsupported(&format!(
                "{} inside UNNEST is not supported",
                other.display()
            ))),
        }
    }

    fn plan_error(&self, e: &datafusion_common::DataFusionError) -> SqlError {
        SqlError::Plan {
            line: self.line,
            message: clean_datafusion_message(e),
        }
    }
}

/// `e` with its references to the outer (left) row made plain column references.
fn decorrelate(e: &Expr) -> Result<Expr, SqlError> {
    e.clone()
        .transform(|e| {
            Ok(match e {
                Expr::OuterReferenceColumn(_, c) => Transformed::yes(Expr::Column(c)),
                other => Transformed::no(other),
            })
        })
        .map(|t| t.data)
        .map_err(|e| SqlError::Internal(e.to_string()))
}

/// The arrow schema of the left columns followed by `right`'s.
fn concat(left: &DFSchemaRef, right: &DFSchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        left.fields()
            .iter()
            .chain(right.fields().iter())
            .cloned()
            .collect::<Vec<_>>(),
    ))
}
