//! A table's validation rules (`CHECK (…)`, `NOT NULL`) on every row it reads or is
//! about to write. A row violates a rule when the condition is false (NULL passes, as
//! in SQL; `NOT NULL` catches those), or when the condition cannot be evaluated on it.
//!
//! Each violation is counted per rule. What happens to the row is the strictest action
//! of the rules it violates: `warn` passes it on (logged, at most one line per rule every
//! ten seconds), `drop` drops it, `dead-letter` sends it to the table's dead-letter
//! output with the rules and the values they read, `fail` stops the pipeline. A
//! retraction (`-U`, `-D`) that violates a rule takes back a row that was never let
//! through, so it is dropped without a count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use runnel_common::changelog;
use runnel_common::metrics::Counter;
use runnel_connectors::dead_letters::{DeadLetter, DeadLetterWriter, Location};
use runnel_connectors::format::json::JsonEncoder;
use runnel_sql::{OnViolation, QualitySpec, RuleSpec};

use crate::error::EngineError;
use crate::operator::{Operator, Output};

/// How often a `warn` rule logs.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// One rule with its counters.
struct Rule {
    spec: RuleSpec,
    violations: Counter,
    /// The process-wide metric (`/metrics`).
    exported: ::metrics::Counter,
    /// `warn`: when it last logged, and violations since.
    last_warned: Option<Instant>,
    unlogged: u64,
}

/// The quality operator.
pub struct Quality {
    label: String,
    table: String,
    rules: Vec<Rule>,
    writer: Option<Arc<DeadLetterWriter>>,
}

impl Quality {
    /// The rules of `spec`, counted in `counters`; dead letters go to `writer`.
    pub fn new(
        label: &str,
        spec: &QualitySpec,
        counters: &crate::metrics::NamedCounters,
        writer: Option<Arc<DeadLetterWriter>>,
    ) -> Self {
        let rules = spec
            .rules
            .iter()
            .map(|r| Rule {
                violations: counters.counter(&r.name),
                exported: ::metrics::counter!(
                    "runnel_quality_violations_total",
                    "table" => spec.table.name.clone(),
                    "rule" => r.name.clone(),
                    "action" => r.action.as_str(),
                ),
                spec: r.clone(),
                last_warned: None,
                unlogged: 0,
            })
            .collect();
        Quality {
            label: label.to_string(),
            table: spec.table.name.clone(),
            rules,
            writer,
        }
    }

    /// Whether each row passes `rule` (`None`), or why not. Evaluated on the whole batch;
    /// when that fails, row by row, so only the rows it fails on violate the rule.
    /// Per row, `Some(detail)` when it violates `rule`; `None` when every row passes
    /// (the common case: no per-row verdicts are made).
    fn evaluate(rule: &RuleSpec, batch: &RecordBatch) -> Option<Vec<Option<String>>> {
        let n = batch.num_rows();
        let eval = |b: &RecordBatch| -> Result<BooleanArray, String> {
            let v = rule
                .check
                .evaluate(b)
                .and_then(|v| v.into_array(b.num_rows()))
                .map_err(|e| e.to_string())?;
            v.as_any()
                .downcast_ref::<BooleanArray>()
                .cloned()
                .ok_or_else(|| format!("gives {}, not BOOLEAN", v.data_type()))
        };
        match eval(batch) {
            Ok(mask) => {
                // NULL passes, as in SQL.
                if mask.null_count() + mask.true_count() == n {
                    return None;
                }
                Some(
                    (0..n)
                        .map(|i| (mask.is_valid(i) && !mask.value(i)).then(String::new))
                        .collect(),
                )
            }
            Err(_) => Some(
                (0..n)
                    .map(|i| match eval(&batch.slice(i, 1)) {
                        Ok(m) => (m.is_valid(0) && !m.value(0)).then(String::new),
                        Err(e) => Some(format!(" (cannot be evaluated: {e})")),
                    })
                    .collect(),
            ),
        }
    }

    /// `temperature = 75.3, sensor = 's-1'`: the values `rule` reads in row `row`.
    fn values(rule: &RuleSpec, batch: &RecordBatch, row: usize) -> String {
        let options = FormatOptions::default().with_null("NULL");
        let schema = batch.schema();
        rule.columns
            .iter()
            .filter(|&&c| c < batch.num_columns())
            .map(|&c| {
                let col = batch.column(c);
                let value = ArrayFormatter::try_new(col.as_ref(), &options)
                    .map(|f| f.value(row).to_string())
                    .unwrap_or_else(|_| "?".into());
                let quoted = if col.is_valid(row)
                    && matches!(
                        col.data_type(),
                        arrow::datatypes::DataType::Utf8 | arrow::datatypes::DataType::LargeUtf8
                    ) {
                    format!("'{value}'")
                } else {
                    value
                };
                format!("{} = {quoted}", schema.field(c).name())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn warn(&mut self, rule: usize, batch: &RecordBatch, row: usize) {
        let r = &mut self.rules[rule];
        r.unlogged += 1;
        if r.last_warned.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        tracing::warn!(
            table = %self.table,
            rule = %r.spec.name,
            "rows violate {} ({} since the last warning), e.g. {}; they are kept \
             ('quality.on-violation' = 'warn')",
            r.spec.text,
            r.unlogged,
            Self::values(&r.spec, batch, row)
        );
        r.last_warned = Some(Instant::now());
        r.unlogged = 0;
    }
}

impl Operator for Quality {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        let n = batch.num_rows();
        let verdicts: Vec<Option<Vec<Option<String>>>> = self
            .rules
            .iter()
            .map(|r| Self::evaluate(&r.spec, &batch))
            .collect();
        let verdict = |r: usize, row: usize| verdicts[r].as_ref().and_then(|v| v[row].as_deref());
        if verdicts.iter().all(Option::is_none) {
            out.emit(batch);
            return Ok(());
        }
        let ops = changelog::ops(&batch);
        let mut keep = vec![true; n];
        let mut letters = Vec::new();
        for (row, kept) in keep.iter_mut().enumerate() {
            let broken: Vec<usize> = (0..self.rules.len())
                .filter(|&r| verdict(r, row).is_some())
                .collect();
            if broken.is_empty() {
                continue;
            }
            if changelog::kind_at(ops, row).is_retract() {
                *kept = false;
                continue;
            }
            let mut action = OnViolation::Warn;
            for &r in &broken {
                let rule = &self.rules[r];
                rule.violations.add(1);
                rule.exported.increment(1);
                action = action.max(rule.spec.action);
            }
            let reason = || {
                broken
                    .iter()
                    .map(|&r| {
                        let rule = &self.rules[r].spec;
                        format!(
                            "rule '{}' {} is violated{}: {}",
                            rule.name,
                            rule.text,
                            verdict(r, row).unwrap_or_default(),
                            Self::values(rule, &batch, row)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            match action {
                OnViolation::Fail => {
                    return Err(EngineError::Eval {
                        operator: self.label.clone(),
                        message: format!(
                            "table '{}': {} ('quality.on-violation' = 'fail')",
                            self.table,
                            reason()
                        ),
                    });
                }
                OnViolation::DeadLetter => {
                    *kept = false;
                    let mut raw = Vec::new();
                    let data = changelog::data(&batch.slice(row, 1));
                    // A row that cannot be rendered is still reported, without its values.
                    let _ = JsonEncoder.encode(&data, &mut raw);
                    while raw.last() == Some(&b'\n') {
                        raw.pop();
                    }
                    let names = broken
                        .iter()
                        .map(|&r| self.rules[r].spec.name.as_str())
                        .collect::<Vec<_>>()
                        .join(",");
                    letters.push(DeadLetter::new(Location::Rule { names }, reason(), raw));
                }
                OnViolation::Drop => *kept = false,
                OnViolation::Warn => {
                    for &r in &broken {
                        if self.rules[r].spec.action == OnViolation::Warn {
                            self.warn(r, &batch, row);
                        }
                    }
                }
            }
        }
        if !letters.is_empty() {
            match &self.writer {
                Some(w) => w.write(&letters).map_err(|e| EngineError::Connector {
                    table: self.table.clone(),
                    error: Box::new(e),
                })?,
                None => {
                    return Err(EngineError::Eval {
                        operator: self.label.clone(),
                        message: format!("no dead-letter output for: {}", letters[0].reason),
                    });
                }
            }
        }
        let kept = keep.iter().filter(|k| **k).count();
        if kept == n {
            out.emit(batch);
        } else if kept > 0 {
            let mask = BooleanArray::from(keep);
            let filtered = filter_record_batch(&batch, &mask)
                .map_err(|e| EngineError::Internal(format!("{}: {e}", self.label)))?;
            out.emit(filtered);
        }
        Ok(())
    }
}
