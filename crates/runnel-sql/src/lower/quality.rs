//! Lowering of a table's validation rules (`CHECK`, `NOT NULL`): a quality node right
//! after the table's source (with its computed columns), or right before its sink.

use std::sync::Arc;

use datafusion_common::DFSchema;
use datafusion_expr::Expr;
use runnel_common::TableSpec;

use super::Lowerer;
use crate::error::SqlError;
use crate::graph::{Input, NodeSpec, OnViolation, Partitioning, QualitySpec, RuleSpec};

/// A planned rule of a table.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    /// Its name.
    pub name: String,
    /// How it reads in a message.
    pub text: String,
    /// The condition, typed over the table's columns (computed ones included).
    pub expr: Expr,
    /// The columns it reads.
    pub columns: Vec<usize>,
    /// `'quality.on-violation[.rule]'` of the table; `None`: the script's setting.
    pub action: Option<OnViolation>,
}

impl Lowerer {
    /// The script's `SET 'quality.on-violation'`, else dead-letter.
    fn default_violation(&self) -> Result<OnViolation, SqlError> {
        match self.graph.settings.get("quality.on-violation") {
            None => Ok(OnViolation::DeadLetter),
            Some(v) => OnViolation::parse(v)
                .map_err(|m| SqlError::at(self.line, format!("SET 'quality.on-violation': {m}"))),
        }
    }

    /// Puts the rules of `table` (if it has any) after `input`, whose rows have the
    /// table's columns; returns the node that gives the checked rows.
    pub(super) fn push_quality(
        &mut self,
        input: usize,
        table: &TableSpec,
        sink: bool,
    ) -> Result<usize, SqlError> {
        let Some(checks) = self.checks.get(&table.name).cloned() else {
            return Ok(input);
        };
        let schema = self.graph.nodes[input].schema.clone();
        let df = Arc::new(
            DFSchema::try_from(schema.as_ref().clone())
                .map_err(|e| SqlError::at(self.line, format!("table '{}': {e}", table.name)))?,
        );
        let default = self.default_violation()?;
        let mut rules = Vec::with_capacity(checks.len());
        for c in checks {
            rules.push(RuleSpec {
                check: self.physical(&c.expr, &df)?,
                name: c.name,
                text: c.text,
                columns: c.columns,
                action: c.action.unwrap_or(default),
            });
        }
        let event_time = self.graph.nodes[input].event_time;
        let window = self.graph.nodes[input].window;
        let id = self.push(
            format!("check {}", table.name),
            NodeSpec::Quality(QualitySpec {
                table: table.clone(),
                sink,
                rules,
            }),
            schema,
            vec![Input {
                node: input,
                partitioning: Partitioning::Forward,
            }],
        );
        self.graph.nodes[id].event_time = event_time;
        self.graph.nodes[id].window = window;
        Ok(id)
    }
}
