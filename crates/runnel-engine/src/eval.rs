//! Non-strict evaluation: one row whose expression fails (a division by zero, an
//! overflowing CAST, a function that rejects its argument) is dead-lettered and the
//! pipeline goes on.
//!
//! Operators evaluate whole batches, as before. Only when that fails does [`RowErrors`]
//! look for the culprits, the way RisingWave's non-strict mode does: it evaluates the
//! batch one row at a time, sends every failing row to the dead-letter service with the
//! expression, the error and the row's values, and evaluates the rest as one batch
//! again. `SET 'pipeline.on-error' = 'fail'` keeps the strict behaviour: the first
//! failure stops the pipeline.

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use datafusion_physical_expr::PhysicalExpr;
use runnel_connectors::dead_letters::{DeadLetter, DeadLetterWriter, Location};
use runnel_connectors::format::json::JsonEncoder;

use crate::error::EngineError;

/// What an operator does with a row whose expression fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnError {
    /// Dead-letter the row and go on (the default).
    #[default]
    DeadLetter,
    /// Stop the pipeline with the error.
    Fail,
}

impl OnError {
    /// Reads a `'pipeline.on-error'` value.
    ///
    /// # Errors
    /// The value is not `dead-letter` or `fail`.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "dead-letter" | "dead_letter" | "skip" => Ok(OnError::DeadLetter),
            "fail" => Ok(OnError::Fail),
            other => Err(format!(
                "'pipeline.on-error' must be 'dead-letter' or 'fail', not '{other}'"
            )),
        }
    }
}

/// One failed evaluation: which expression, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The expression, as the plan shows it (`x / y`, `WHERE …`).
    pub expr: String,
    /// DataFusion's or Arrow's message.
    pub message: String,
}

impl Failure {
    /// A failure of `expr` with `error`.
    pub fn new(expr: impl std::fmt::Display, error: impl std::fmt::Display) -> Self {
        Failure {
            expr: readable(&expr.to_string()),
            message: error.to_string(),
        }
    }
}

/// A physical expression's text without DataFusion's column indexes (`x@0` → `x`).
fn readable(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '@' && chars.peek().is_some_and(char::is_ascii_digit) {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// How one operator subtask handles rows whose expressions fail.
#[derive(Debug, Clone)]
pub struct RowErrors {
    operator: String,
    on_error: OnError,
    writer: Option<Arc<DeadLetterWriter>>,
}

impl RowErrors {
    /// Failures in `operator` stop the pipeline (tests, and operators built without a
    /// dead-letter service).
    pub fn strict(operator: &str) -> Self {
        RowErrors {
            operator: operator.to_string(),
            on_error: OnError::Fail,
            writer: None,
        }
    }

    /// Failures in `operator` are handled as `on_error` says; dead letters go to `writer`.
    pub fn new(operator: &str, on_error: OnError, writer: Option<Arc<DeadLetterWriter>>) -> Self {
        RowErrors {
            operator: operator.to_string(),
            on_error,
            writer,
        }
    }

    /// The error that stops the pipeline.
    pub fn fail(&self, f: &Failure) -> EngineError {
        EngineError::Eval {
            operator: self.operator.clone(),
            message: format!("evaluating {}: {}", f.expr, f.message),
        }
    }

    /// Runs `eval` over `batch`. When it fails and failures are dead-lettered, finds the
    /// rows that fail on their own, dead-letters them, and runs `eval` over the others.
    /// Returns the result with the batch it was computed from (`batch` itself, or its
    /// surviving rows), or `None` when no row survived.
    ///
    /// # Errors
    /// Strict mode: the first failure. Otherwise only when the surviving rows fail
    /// together though each passed alone, or the dead letters cannot be written.
    pub fn guard<T>(
        &self,
        batch: RecordBatch,
        eval: impl Fn(&RecordBatch) -> Result<T, Failure>,
    ) -> Result<Option<(T, RecordBatch)>, EngineError> {
        let first = match eval(&batch) {
            Ok(v) => return Ok(Some((v, batch))),
            Err(f) => f,
        };
        if self.on_error == OnError::Fail {
            return Err(self.fail(&first));
        }
        let mut good = Vec::with_capacity(batch.num_rows());
        let mut bad = Vec::new();
        for row in 0..batch.num_rows() {
            match eval(&batch.slice(row, 1)) {
                Ok(_) => good.push(row as u32),
                Err(f) => bad.push((row, f)),
            }
        }
        if bad.is_empty() {
            // Fails as a whole but not row by row: not a row's fault.
            return Err(self.fail(&first));
        }
        self.dead_letter(&batch, &bad)?;
        if good.is_empty() {
            return Ok(None);
        }
        let kept = take_record_batch(&batch, &UInt32Array::from(good)).map_err(|e| {
            EngineError::Internal(format!("{}: keeping the good rows: {e}", self.operator))
        })?;
        match eval(&kept) {
            Ok(v) => Ok(Some((v, kept))),
            Err(f) => Err(self.fail(&f)),
        }
    }

    /// Evaluates the condition `pred` (`what` names it: `ON …`, `WHERE …`) over `batch`.
    /// A row it fails on does not match; it is dead-lettered unless failures are strict.
    ///
    /// # Errors
    /// Strict mode: the first failure; or the dead letters cannot be written.
    pub fn mask(
        &self,
        batch: &RecordBatch,
        what: &str,
        pred: &Arc<dyn PhysicalExpr>,
    ) -> Result<BooleanArray, EngineError> {
        let eval = |b: &RecordBatch| -> Result<BooleanArray, Failure> {
            let v = pred
                .evaluate(b)
                .and_then(|v| v.into_array(b.num_rows()))
                .map_err(|e| Failure::new(format!("{what} {pred}"), e))?;
            v.as_any()
                .downcast_ref::<BooleanArray>()
                .cloned()
                .ok_or_else(|| {
                    Failure::new(
                        format!("{what} {pred}"),
                        format!("yields {}, not BOOLEAN", v.data_type()),
                    )
                })
        };
        let first = match eval(batch) {
            Ok(m) => return Ok(m),
            Err(f) => f,
        };
        if self.on_error == OnError::Fail {
            return Err(self.fail(&first));
        }
        let mut bad = Vec::new();
        let values: Vec<Option<bool>> = (0..batch.num_rows())
            .map(|row| match eval(&batch.slice(row, 1)) {
                Ok(m) => m.is_valid(0).then(|| m.value(0)),
                Err(f) => {
                    bad.push((row, f));
                    Some(false)
                }
            })
            .collect();
        if bad.is_empty() {
            return Err(self.fail(&first));
        }
        self.dead_letter(batch, &bad)?;
        Ok(BooleanArray::from(values))
    }

    fn dead_letter(
        &self,
        batch: &RecordBatch,
        bad: &[(usize, Failure)],
    ) -> Result<(), EngineError> {
        let letters: Vec<DeadLetter> = bad
            .iter()
            .map(|(row, f)| {
                let mut raw = Vec::new();
                // A row that cannot be rendered is still reported, without its values.
                let _ = JsonEncoder.encode(&batch.slice(*row, 1), &mut raw);
                while raw.last() == Some(&b'\n') {
                    raw.pop();
                }
                DeadLetter::new(
                    Location::Operator {
                        name: self.operator.clone(),
                    },
                    format!("evaluating {}: {}", f.expr, f.message),
                    raw,
                )
            })
            .collect();
        tracing::debug!(
            operator = %self.operator,
            rows = letters.len(),
            "rows whose expressions failed were dead-lettered"
        );
        match &self.writer {
            Some(w) => w.write(&letters).map_err(|e| EngineError::Connector {
                table: self.operator.clone(),
                error: Box::new(e),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array};
    use arrow::compute::kernels::numeric::div;
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(x: &[i64], y: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("y", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(x.to_vec())) as ArrayRef,
                Arc::new(Int64Array::from(y.to_vec())),
            ],
        )
        .expect("batch")
    }

    fn divide(b: &RecordBatch) -> Result<ArrayRef, Failure> {
        div(b.column(0), b.column(1)).map_err(|e| Failure::new("x@0 / y@1", e))
    }

    #[test]
    fn failing_rows_are_isolated_and_the_rest_evaluated() {
        let errors = RowErrors::new("Project", OnError::DeadLetter, None);
        let (out, kept) = errors
            .guard(batch(&[6, 1, 8, 3], &[3, 0, 2, 0]), divide)
            .expect("guarded")
            .expect("rows left");
        let out = out.as_any().downcast_ref::<Int64Array>().expect("i64");
        assert_eq!(out.values(), &[2, 4]);
        assert_eq!(kept.num_rows(), 2);
    }

    #[test]
    fn strict_mode_fails_with_the_expression() {
        let e = RowErrors::strict("Project")
            .guard(batch(&[1], &[0]), divide)
            .expect_err("strict");
        assert!(e.to_string().contains("evaluating x / y"), "{e}");
    }

    #[test]
    fn no_survivors() {
        let errors = RowErrors::new("Project", OnError::DeadLetter, None);
        assert!(
            errors
                .guard(batch(&[1, 2], &[0, 0]), divide)
                .expect("guarded")
                .is_none()
        );
    }

    #[test]
    fn reads_the_setting() {
        assert_eq!(OnError::parse("FAIL"), Ok(OnError::Fail));
        assert_eq!(OnError::parse("dead-letter"), Ok(OnError::DeadLetter));
        assert!(OnError::parse("ignore").is_err());
    }
}
