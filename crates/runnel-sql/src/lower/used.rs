//! Which columns a script reads: a join keeps in its state only the columns of its
//! inputs that something above it (or the join itself) reads; the others travel as
//! NULL, so a bid's long `extra` text is not copied into every joined row.
//!
//! The analysis is conservative: it collects every column reference of every
//! INSERT and view of the script (a join lowered once may serve several), and
//! counts every input column as read below a node that does not name what it
//! reads (unions, aliases, DISTINCT, UNNEST, …) and at every plan's root.

use std::collections::{HashMap, HashSet};

use datafusion_common::tree_node::TreeNodeRecursion;
use datafusion_common::{Column, TableReference};
use datafusion_expr::LogicalPlan;

/// Columns referenced anywhere in the plans given to [`Used::add`].
#[derive(Debug, Default, Clone)]
pub struct Used {
    /// Name → the qualifiers it is referenced with (`None`: unqualified).
    names: HashMap<String, HashSet<Option<TableReference>>>,
}

impl Used {
    /// Adds the references of `plan` (with its subqueries) and its output columns.
    pub fn add(&mut self, plan: &LogicalPlan) {
        for c in plan.schema().columns() {
            self.insert(c);
        }
        let _ = plan.apply_with_subqueries(|node| {
            match node {
                LogicalPlan::Projection(_)
                | LogicalPlan::Filter(_)
                | LogicalPlan::Aggregate(_)
                | LogicalPlan::Join(_)
                | LogicalPlan::Window(_)
                | LogicalPlan::Sort(_)
                | LogicalPlan::Limit(_)
                | LogicalPlan::TableScan(_) => {}
                other => {
                    for input in other.inputs() {
                        for c in input.schema().columns() {
                            self.insert(c);
                        }
                    }
                }
            }
            for e in node.expressions() {
                for c in e.column_refs() {
                    self.insert(c.clone());
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }

    fn insert(&mut self, c: Column) {
        self.names.entry(c.name).or_default().insert(c.relation);
    }

    /// Whether `relation.name` may be read: referenced with that qualifier or none.
    pub fn reads(&self, relation: Option<&TableReference>, name: &str) -> bool {
        self.names.get(name).is_some_and(|quals| {
            quals.contains(&None) || relation.is_none() || quals.contains(&relation.cloned())
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{NodeSpec, Planner};

    fn unused(sql: &str) -> Vec<usize> {
        let graph = Planner::new()
            .plan(&format!(
                "CREATE TABLE a (id BIGINT, cat BIGINT, note STRING) WITH (connector = 'blackhole');
                 CREATE TABLE b (auction BIGINT, price BIGINT, extra STRING) WITH (connector = 'blackhole');
                 CREATE TABLE o (cat BIGINT, price BIGINT) WITH (connector = 'blackhole');
                 CREATE TABLE o3 (cat BIGINT, price BIGINT, note STRING) WITH (connector = 'blackhole');
                 {sql}"
            ))
            .expect("plans");
        graph
            .nodes
            .iter()
            .find_map(|n| match &n.spec {
                NodeSpec::Join(j) => Some(j.unused.clone()),
                _ => None,
            })
            .expect("a join")
    }

    #[test]
    fn joins_carry_only_the_columns_the_script_reads() {
        assert_eq!(
            unused("INSERT INTO o SELECT a.cat, b.price FROM a JOIN b ON a.id = b.auction;"),
            vec![2, 5]
        );
        // A view's join serves every INSERT: what any of them reads is kept.
        assert_eq!(
            unused(
                "CREATE VIEW j AS SELECT a.cat AS cat, b.price AS price, a.note AS note FROM a JOIN b ON a.id = b.auction;
                 INSERT INTO o SELECT cat, price FROM j;
                 INSERT INTO o3 SELECT cat, price, note FROM j;"
            ),
            vec![5]
        );
        // Through an alias nothing is dropped (the analysis does not follow renames).
        assert_eq!(
            unused("INSERT INTO o SELECT q.cat, q.price FROM (a JOIN b ON a.id = b.auction) AS q;"),
            Vec::<usize>::new()
        );
    }
}
