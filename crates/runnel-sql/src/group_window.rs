//! Flink's legacy group windows, rewritten into window table functions before planning:
//!
//! ```sql
//! SELECT bidder, COUNT(*), SESSION_START(dateTime, INTERVAL '10' SECOND)
//! FROM bid GROUP BY bidder, SESSION(dateTime, INTERVAL '10' SECOND)
//! ```
//!
//! becomes `… FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(dateTime),
//! INTERVAL '10' SECOND)) GROUP BY bidder, window_start, window_end` with
//! `SESSION_START(…)` read as `window_start` (`_END` → `window_end`, `_ROWTIME` →
//! `window_time`). TUMBLE(ts, size) and HOP(ts, slide, size) likewise.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, Query, SetExpr,
    TableFactor, visit_expressions_mut,
};
use sqlparser::parser::Parser;

use crate::dialect::FlinkDialect;

/// A group window call found in GROUP BY.
struct GroupWindow {
    kind: String,
    time_col: String,
    intervals: Vec<String>,
}

fn call_name_args(e: &Expr) -> Option<(String, Vec<Expr>)> {
    let Expr::Function(f) = e else { return None };
    let name = f.name.0.last()?.as_ident()?.value.to_ascii_uppercase();
    let FunctionArguments::List(list) = &f.args else {
        return Some((name, Vec::new()));
    };
    let args = list
        .args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        })
        .collect();
    Some((name, args))
}

fn column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        _ => None,
    }
}

/// Rewrites the legacy group windows of `query` (and of its subqueries in FROM).
///
/// # Errors
/// A group window over something other than one table or view, or with bad arguments.
pub fn rewrite(query: &mut Query) -> Result<(), String> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Ok(());
    };
    for t in &mut select.from {
        if let TableFactor::Derived { subquery, .. } = &mut t.relation {
            rewrite(subquery)?;
        }
    }
    let GroupByExpr::Expressions(groups, _) = &mut select.group_by else {
        return Ok(());
    };
    let mut found: Option<(usize, GroupWindow)> = None;
    for (i, g) in groups.iter().enumerate() {
        let Some((name, args)) = call_name_args(g) else {
            continue;
        };
        if !matches!(name.as_str(), "TUMBLE" | "HOP" | "SESSION") {
            continue;
        }
        let usage = match name.as_str() {
            "HOP" => "HOP(time_col, INTERVAL 'slide' …, INTERVAL 'size' …)",
            _ => "(time_col, INTERVAL …)",
        };
        let want = if name == "HOP" { 3 } else { 2 };
        let time_col = args.first().and_then(column_name);
        let (Some(time_col), true) = (time_col, args.len() == want) else {
            return Err(format!("GROUP BY {name}{usage}: wrong arguments in {g}"));
        };
        let intervals = args[1..].iter().map(|a| a.to_string()).collect();
        found = Some((
            i,
            GroupWindow {
                kind: name,
                time_col,
                intervals,
            },
        ));
        break;
    }
    let Some((at, window)) = found else {
        return Ok(());
    };
    // GROUP BY …, window_start, window_end in place of the window call.
    groups.remove(at);
    let keys: Vec<String> = groups.iter().filter_map(column_name).collect();
    groups.insert(at, Expr::Identifier(Ident::new("window_end")));
    groups.insert(at, Expr::Identifier(Ident::new("window_start")));
    if select.from.len() != 1 || !select.from[0].joins.is_empty() {
        return Err(format!(
            "GROUP BY {}(…) needs FROM one table or view (join or subquery first in a view)",
            window.kind
        ));
    }
    let (name, alias) = match &select.from[0].relation {
        TableFactor::Table { name, alias, .. } => (name.to_string(), alias.clone()),
        _ => {
            return Err(format!(
                "GROUP BY {}(…) needs FROM a table or view name (declare the subquery as a view)",
                window.kind
            ));
        }
    };
    let partition = if window.kind == "SESSION" && !keys.is_empty() {
        format!(" PARTITION BY ({})", keys.join(", "))
    } else {
        String::new()
    };
    let tvf = format!(
        "TABLE({}(TABLE {name}{partition}, DESCRIPTOR({}), {}))",
        window.kind,
        window.time_col,
        window.intervals.join(", ")
    );
    let mut relation = Parser::new(&FlinkDialect)
        .try_with_sql(&tvf)
        .and_then(|mut p| p.parse_table_factor())
        .map_err(|e| format!("GROUP BY {}(…): {e}", window.kind))?;
    match &mut relation {
        TableFactor::TableFunction { alias: a, .. } | TableFactor::Function { alias: a, .. } => {
            *a = alias;
        }
        _ => return Err(format!("GROUP BY {}(…): could not plan", window.kind)),
    }
    select.from[0].relation = relation;
    // TUMBLE_START(…) → window_start and friends, wherever they are used.
    let prefix = format!("{}_", window.kind);
    let _ = visit_expressions_mut(select.as_mut(), |e| {
        if let Some((name, _)) = call_name_args(e)
            && let Some(part) = name.strip_prefix(&prefix)
        {
            let col = match part {
                "START" => Some("window_start"),
                "END" => Some("window_end"),
                "ROWTIME" => Some("window_time"),
                _ => None,
            };
            if let Some(col) = col {
                *e = Expr::Identifier(Ident::new(col));
            }
        }
        ControlFlow::<()>::Continue(())
    });
    Ok(())
}
