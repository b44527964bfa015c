//! Flink names a selected ROW field after the field: `SELECT bid.price FROM t` gives
//! a column `price`, where DataFusion would name it `t.bid[price]`. Before planning,
//! every unaliased field access in a SELECT list gets its field's name as alias —
//! unless that name is already taken in the same list (Flink would rename one of
//! them; here both keep DataFusion's names and an outer query can alias them).

use sqlparser::ast::{Expr, Ident, Query, SelectItem, SetExpr, TableFactor, TableWithJoins};

/// Aliases the field accesses of `query`, its CTEs and subqueries.
pub fn alias_fields(query: &mut Query) {
    if let Some(with) = &mut query.with {
        for cte in &mut with.cte_tables {
            alias_fields(&mut cte.query);
        }
    }
    set_expr(&mut query.body);
}

/// Names the unnamed computed columns of an INSERT's SELECT list `EXPR$<i>` (Flink's
/// names for them): an INSERT maps columns by position, so `SELECT ts, CAST(ts AS
/// DATE)` must not fail on two columns DataFusion would both call `ts`.
pub fn name_insert_columns(query: &mut Query) {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    for (i, item) in select.projection.iter_mut().enumerate() {
        if let SelectItem::UnnamedExpr(expr) = item
            && !matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
        {
            *item = SelectItem::ExprWithAlias {
                expr: expr.clone(),
                alias: Ident::new(format!("EXPR${i}")),
            };
        }
    }
}

fn set_expr(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            // The names that qualify a column in this SELECT; `None` when one
            // relation's name cannot be told (then nothing is rewritten).
            let mut qualifiers = Some(Vec::new());
            for t in &mut select.from {
                relation_names(t, &mut qualifiers);
            }
            let Some(qualifiers) = qualifiers else {
                return;
            };
            let fields: Vec<Option<String>> = select
                .projection
                .iter()
                .map(|item| field_name(item, &qualifiers))
                .collect();
            let taken: Vec<String> = select.projection.iter().filter_map(output_name).collect();
            for (item, field) in select.projection.iter_mut().zip(fields) {
                let Some(field) = field else { continue };
                if taken.iter().filter(|t| **t == field).count() > 1 {
                    continue;
                }
                if let SelectItem::UnnamedExpr(expr) = item {
                    *item = SelectItem::ExprWithAlias {
                        expr: expr.clone(),
                        alias: Ident::new(field),
                    };
                }
            }
        }
        SetExpr::Query(q) => alias_fields(q),
        SetExpr::SetOperation { left, right, .. } => {
            set_expr(left);
            set_expr(right);
        }
        _ => {}
    }
}

/// Names of the relations of a FROM item (aliases, else table names); recurses into
/// subqueries.
fn relation_names(t: &mut TableWithJoins, out: &mut Option<Vec<String>>) {
    factor_names(&mut t.relation, out);
    for j in &mut t.joins {
        factor_names(&mut j.relation, out);
    }
}

fn factor_names(f: &mut TableFactor, out: &mut Option<Vec<String>>) {
    let mut add = |name: &Ident| {
        if let Some(v) = out.as_mut() {
            v.push(name.value.clone());
        }
    };
    match f {
        TableFactor::Table { name, alias, .. } => {
            if let Some(last) = name.0.last().and_then(|p| p.as_ident()) {
                add(last);
            }
            if let Some(a) = alias {
                add(&a.name);
            }
        }
        TableFactor::Derived {
            subquery, alias, ..
        } => {
            alias_fields(subquery);
            if let Some(a) = alias {
                add(&a.name);
            }
        }
        TableFactor::NestedJoin {
            table_with_joins,
            alias,
        } => {
            if let Some(a) = alias {
                add(&a.name);
            }
            relation_names(table_with_joins, out);
        }
        _ => *out = None,
    }
}

/// The field a select item reads, when it is an unaliased `row.field` (or
/// `t.row.field`): the parts after the qualifier are more than one.
fn field_name(item: &SelectItem, qualifiers: &[String]) -> Option<String> {
    let SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) = item else {
        return None;
    };
    let first = parts.first()?;
    let qualified = qualifiers.contains(&first.value);
    let path = if qualified {
        parts.len() - 1
    } else {
        parts.len()
    };
    (path >= 2).then(|| parts.last().map(|p| p.value.clone()))?
}

/// The name a select item's column will have, as far as the rewrite is concerned.
fn output_name(item: &SelectItem) -> Option<String> {
    match item {
        SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
        SelectItem::UnnamedExpr(Expr::Identifier(i)) => Some(i.value.clone()),
        SelectItem::UnnamedExpr(Expr::CompoundIdentifier(p)) => p.last().map(|i| i.value.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use sqlparser::ast::Statement;
    use sqlparser::parser::Parser;

    use super::*;
    use crate::dialect::FlinkDialect;

    fn rewritten(sql: &str) -> String {
        let mut stmts = Parser::parse_sql(&FlinkDialect {}, sql).expect("parses");
        let Statement::Query(q) = &mut stmts[0] else {
            panic!("not a query")
        };
        alias_fields(q);
        stmts[0].to_string()
    }

    #[test]
    fn row_fields_are_named_after_the_field() {
        assert_eq!(
            rewritten("SELECT bid.price, t.bid.url, t.x, event_type FROM t"),
            "SELECT bid.price AS price, t.bid.url AS url, t.x, event_type FROM t"
        );
        // Qualified columns stay; a name two fields share is left alone.
        assert_eq!(
            rewritten("SELECT B.price, person.id, auction.id FROM bid AS B, t"),
            "SELECT B.price, person.id, auction.id FROM bid AS B, t"
        );
        assert_eq!(
            rewritten("SELECT * FROM (SELECT bid.price FROM t) AS s"),
            "SELECT * FROM (SELECT bid.price AS price FROM t) AS s"
        );
    }
}
