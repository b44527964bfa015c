//! Lowering of a lookup join (`JOIN t FOR SYSTEM_TIME AS OF s.proc_time`): the stream
//! side is lowered as usual; the looked-up table is not, its connector answers the
//! look-ups. Equalities between a table column and an expression over the stream
//! become look-up keys; the rest of the condition filters the joined rows.

use std::sync::Arc;

use datafusion_common::DFSchemaRef;
use datafusion_expr::logical_plan::Join;
use datafusion_expr::{Expr, LogicalPlan, Operator};
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::expressions::CastExpr;

use super::{Lowerer, forward};
use crate::catalog::{Relation, RelationSource};
use crate::error::SqlError;
use crate::graph::{LookupJoinSpec, NodeSpec};
use crate::lookup::LookupRelation;

/// The looked-up table a join's right side scans, with the columns it projects.
pub(super) fn lookup_side(plan: &LogicalPlan) -> Option<(&LookupRelation, Option<&Vec<usize>>)> {
    match plan {
        LogicalPlan::SubqueryAlias(a) => lookup_side(&a.input),
        LogicalPlan::TableScan(scan) => {
            let rel = scan.source.downcast_ref::<RelationSource>()?;
            match &rel.relation {
                Relation::Lookup(l) => Some((l, scan.projection.as_ref())),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Which sides' columns an expression reads.
fn reads(e: &Expr, left: &DFSchemaRef, right: &DFSchemaRef) -> (bool, bool) {
    let cols = e.column_refs();
    let l = cols.iter().any(|c| left.has_column(c));
    let r = cols.iter().any(|c| right.has_column(c));
    (l, r)
}

impl Lowerer {
    /// Node ids producing the rows of `join`, whose right side is a looked-up table.
    pub(super) fn lower_lookup_join(
        &mut self,
        join: &Join,
        lookup: &LookupRelation,
        projection: Option<&Vec<usize>>,
    ) -> Result<Vec<usize>, SqlError> {
        let table = &lookup.table;
        let left_outer = match join.join_type {
            datafusion_expr::JoinType::Inner => false,
            datafusion_expr::JoinType::Left => true,
            other => {
                return Err(self.unsupported(&format!(
                    "a lookup join (FOR SYSTEM_TIME AS OF) is INNER or LEFT, not {other}: \
                     the stream is the left side, the looked-up table '{}' the right",
                    table.name
                )));
            }
        };
        if self.computed.contains_key(&table.name) {
            return Err(self.unsupported(&format!(
                "table '{}' has computed columns; a looked-up table must declare physical \
                 columns only",
                table.name
            )));
        }
        let ls = join.left.schema().clone();
        let rs = join.right.schema().clone();
        let table_columns: Vec<usize> = match projection {
            Some(cols) => cols.clone(),
            None => (0..table.schema.fields().len()).collect(),
        };
        let left = self.lower(&join.left)?;
        self.check_proctime(&left, &ls, lookup)?;

        let mut conjuncts: Vec<Expr> = join
            .on
            .iter()
            .map(|(l, r)| l.clone().eq(r.clone()))
            .collect();
        if let Some(f) = &join.filter {
            conjuncts.extend(
                datafusion_expr::utils::split_conjunction(f)
                    .into_iter()
                    .cloned(),
            );
        }
        let mut stream_keys: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
        let mut table_keys = Vec::new();
        let mut rest = Vec::new();
        for c in conjuncts {
            if let Expr::BinaryExpr(b) = &c
                && b.op == Operator::Eq
            {
                let pair = match (b.left.as_ref(), b.right.as_ref()) {
                    (Expr::Column(col), other) | (other, Expr::Column(col))
                        if rs.has_column(col) && reads(other, &ls, &rs) == (true, false) =>
                    {
                        Some((col, other))
                    }
                    _ => None,
                };
                if let Some((col, stream_expr)) = pair {
                    let ri = rs
                        .index_of_column(col)
                        .map_err(|e| SqlError::Internal(e.to_string()))?;
                    let ti = table_columns[ri];
                    let mut key = self.physical(stream_expr, &ls)?;
                    let want = table.schema.field(ti).data_type();
                    let have = key
                        .data_type(ls.as_arrow())
                        .map_err(|e| SqlError::Internal(e.to_string()))?;
                    if &have != want {
                        key = Arc::new(CastExpr::new(key, want.clone(), None));
                    }
                    stream_keys.push(key);
                    table_keys.push(ti);
                    continue;
                }
            }
            rest.push(c);
        }
        if table_keys.is_empty() {
            return Err(self.unsupported(&format!(
                "the lookup join with '{}' needs an equality between a column of '{}' and the \
                 stream in its ON condition (e.g. ON s.id = {}.{})",
                table.name,
                table.name,
                table.name,
                table
                    .schema
                    .fields()
                    .first()
                    .map_or("id", |f| f.name().as_str())
            )));
        }
        let filter = match datafusion_expr::utils::conjunction(rest) {
            None => None,
            Some(f) => Some(self.physical(&f, &join.schema)?),
        };
        let spec = LookupJoinSpec {
            table: table.clone(),
            left_outer,
            stream_keys,
            table_keys,
            table_columns,
            filter,
        };
        let left_node = left[0];
        let (event_time, window) = (
            self.graph.nodes[left_node].event_time,
            self.graph.nodes[left_node].window,
        );
        let label = format!(
            "{}lookup join with {}",
            if left_outer { "left " } else { "" },
            table.name
        );
        let schema = Arc::new(join.schema.as_arrow().clone());
        let id = self.push(label, NodeSpec::LookupJoin(spec), schema, forward(left));
        // Stream columns come first, where they were.
        let node = &mut self.graph.nodes[id];
        node.event_time = event_time;
        node.window = window;
        Ok(vec![id])
    }

    /// `FOR SYSTEM_TIME AS OF col`: `col` must be a processing-time column of the stream.
    fn check_proctime(
        &self,
        left: &[usize],
        ls: &DFSchemaRef,
        lookup: &LookupRelation,
    ) -> Result<(), SqlError> {
        let Some(index) = ls.fields().iter().position(|f| f.name() == &lookup.as_of) else {
            return Err(self.unsupported(&format!(
                "FOR SYSTEM_TIME AS OF {}: the stream has no column '{}'",
                lookup.as_of, lookup.as_of
            )));
        };
        if left.iter().all(|&n| self.is_proctime(n, index)) {
            return Ok(());
        }
        Err(self.unsupported(&format!(
            "{} FOR SYSTEM_TIME AS OF {}: only processing-time lookup joins are supported, and \
             '{}' is not a PROCTIME() column (add one to the stream, `p AS PROCTIME()`, and \
             look up AS OF it); an event-time temporal join against a versioned table is not \
             supported yet",
            lookup.table.name, lookup.as_of, lookup.as_of
        )))
    }

    /// Whether column `col` of node `id`'s output is computed by `PROCTIME()`.
    pub(super) fn is_proctime(&self, id: usize, col: usize) -> bool {
        let node = &self.graph.nodes[id];
        if let NodeSpec::Quality(_) = &node.spec {
            // Rules pass rows through unchanged.
            return node.inputs.iter().all(|i| self.is_proctime(i.node, col));
        }
        let NodeSpec::Project(p) = &node.spec else {
            return false;
        };
        let Some(e) = p.exprs.get(col) else {
            return false;
        };
        if e.downcast_ref::<datafusion_physical_expr::ScalarFunctionExpr>()
            .is_some_and(|f| f.name() == "proctime")
        {
            return true;
        }
        match e.downcast_ref::<datafusion_physical_expr::expressions::Column>() {
            Some(c) => node
                .inputs
                .iter()
                .all(|i| self.is_proctime(i.node, c.index())),
            None => false,
        }
    }
}
