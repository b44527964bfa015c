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
pub fn readable(expr: &str) -> String {
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

    /// Every row of `batch` failed together (`f`, e.g. a look-up that could not be
    /// answered): dead-letters them all, unless failures are strict.
    ///
    /// # Errors
    /// Strict mode: `f`; or the dead letters cannot be written.
    pub fn reject_all(&self, batch: &RecordBatch, f: &Failure) -> Result<(), EngineError> {
        if self.on_error == OnError::Fail {
            return Err(self.fail(f));
        }
        let bad: Vec<(usize, Failure)> = (0..batch.num_rows()).map(|r| (r, f.clone())).collect();
        self.dead_letter(batch, &bad)
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

/// An expression prepared to be evaluated over a wide row cheaply: when it holds a CASE
/// over fields of ROW columns (`CASE WHEN t = 0 THEN person.dateTime … END`, as Flink's
/// Nexmark table computes its event time), the fields are taken out of their ROWs first
/// (no copy) and the CASE runs over just those arrays. DataFusion's CASE filters the
/// whole batch it is given once per branch, every string of every ROW column included.
#[derive(Debug, Clone)]
pub struct Compiled {
    expr: Arc<dyn PhysicalExpr>,
    /// Set when the expression was rewritten: the field reads evaluated first, then the
    /// plain input columns, make the batch `expr` reads.
    hoisted: Option<Hoisted>,
}

/// The field reads evaluated first, and the plain input columns after them.
type Hoisted = (Vec<Arc<dyn PhysicalExpr>>, Vec<usize>);

impl Compiled {
    /// `expr`, rewritten when that pays off.
    pub fn new(expr: &Arc<dyn PhysicalExpr>) -> Self {
        match hoist_fields(expr) {
            Some((expr, fields, cols)) => Compiled {
                expr,
                hoisted: Some((fields, cols)),
            },
            None => Compiled {
                expr: Arc::clone(expr),
                hoisted: None,
            },
        }
    }

    /// Evaluates the expression over `batch` (in the input's schema).
    ///
    /// # Errors
    /// As the expression's evaluation.
    pub fn evaluate(
        &self,
        batch: &RecordBatch,
    ) -> datafusion_common::Result<datafusion_expr::ColumnarValue> {
        let Some((fields, cols)) = &self.hoisted else {
            return self.expr.evaluate(batch);
        };
        let n = batch.num_rows();
        let mut arrays = Vec::with_capacity(fields.len() + cols.len());
        for f in fields {
            arrays.push(f.evaluate(batch)?.into_array(n)?);
        }
        for &c in cols {
            arrays.push(Arc::clone(batch.column(c)));
        }
        let schema: arrow::datatypes::Fields = arrays
            .iter()
            .enumerate()
            .map(|(i, a)| {
                arrow::datatypes::Field::new(format!("h{i}"), a.data_type().clone(), true)
            })
            .collect();
        let narrow = RecordBatch::try_new_with_options(
            Arc::new(arrow::datatypes::Schema::new(schema)),
            arrays,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        self.expr.evaluate(&narrow)
    }
}

fn is_field_read(e: &Arc<dyn PhysicalExpr>) -> bool {
    e.downcast_ref::<datafusion_physical_expr::ScalarFunctionExpr>()
        .is_some_and(|f| {
            f.name() == "get_field"
                && f.args().first().is_some_and(|a| {
                    a.downcast_ref::<datafusion_physical_expr::expressions::Column>()
                        .is_some()
                })
        })
}

/// `expr` over [field reads…, plain columns…] when it has a CASE and reads ROW fields.
#[allow(clippy::type_complexity)]
fn hoist_fields(
    expr: &Arc<dyn PhysicalExpr>,
) -> Option<(
    Arc<dyn PhysicalExpr>,
    Vec<Arc<dyn PhysicalExpr>>,
    Vec<usize>,
)> {
    use datafusion_common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
    use datafusion_physical_expr::expressions::{CaseExpr, Column};
    let mut has_case = false;
    let mut fields: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    let mut cols: Vec<usize> = Vec::new();
    let _ = expr.apply(|e| {
        if e.downcast_ref::<CaseExpr>().is_some() {
            has_case = true;
        }
        if is_field_read(e) {
            if !fields.iter().any(|f| f.as_ref() == e.as_ref()) {
                fields.push(Arc::clone(e));
            }
            return Ok(TreeNodeRecursion::Jump);
        }
        if let Some(c) = e.downcast_ref::<Column>()
            && !cols.contains(&c.index())
        {
            cols.push(c.index());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if !has_case || fields.is_empty() {
        return None;
    }
    let rewritten = Arc::clone(expr)
        .transform_down(|e| {
            if is_field_read(&e) {
                let i = fields.iter().position(|f| f.as_ref() == e.as_ref());
                return Ok(match i {
                    Some(i) => Transformed::new(
                        Arc::new(Column::new(&format!("h{i}"), i)) as Arc<dyn PhysicalExpr>,
                        true,
                        TreeNodeRecursion::Jump,
                    ),
                    None => Transformed::no(e),
                });
            }
            if let Some(c) = e.downcast_ref::<Column>()
                && let Some(j) = cols.iter().position(|&x| x == c.index())
            {
                let i = fields.len() + j;
                return Ok(Transformed::yes(
                    Arc::new(Column::new(&format!("h{i}"), i)) as Arc<dyn PhysicalExpr>
                ));
            }
            Ok(Transformed::no(e))
        })
        .ok()?
        .data;
    Some((rewritten, fields, cols))
}
