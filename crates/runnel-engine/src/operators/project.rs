//! Filter + projection: evaluates DataFusion physical expressions over whole
//! batches. Every stateless step (WHERE, SELECT expressions, casts, quality
//! functions) is this one operator.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion_physical_expr::PhysicalExpr;
use runnel_common::changelog;
use runnel_sql::ProjectSpec;

use crate::error::EngineError;
use crate::eval::{Compiled, Failure, RowErrors};
use crate::operator::{Operator, Output};

/// `SELECT exprs FROM input WHERE filter`, vectorized.
pub struct Project {
    filter: Option<Arc<dyn PhysicalExpr>>,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    blocking: bool,
    errors: RowErrors,
    /// The SELECT expressions prepared for evaluation (see [`Compiled`]).
    compiled: Vec<Compiled>,
}

impl Project {
    /// Checks the expressions against the input schema and derives the exact
    /// output types (names come from the plan).
    pub fn try_new(
        label: &str,
        spec: &ProjectSpec,
        input: &SchemaRef,
        output: &SchemaRef,
        errors: RowErrors,
    ) -> Result<Self, EngineError> {
        let mut fields = Vec::with_capacity(spec.exprs.len());
        for (expr, named) in spec.exprs.iter().zip(output.fields()) {
            let f = expr.return_field(input).map_err(|e| EngineError::Eval {
                operator: label.to_string(),
                message: format!("expression {expr}: {e}"),
            })?;
            fields.push(Field::new(named.name(), f.data_type().clone(), true));
        }
        Ok(Self {
            compiled: spec.exprs.iter().map(Compiled::new).collect(),
            filter: spec.filter.clone(),
            exprs: spec.exprs.clone(),
            schema: Arc::new(Schema::new(fields)),
            blocking: spec.blocking,
            errors,
        })
    }
}

impl Project {
    /// WHERE then SELECT over `batch`: the projected columns of the rows that pass.
    fn eval(&self, batch: &RecordBatch) -> Result<Option<RecordBatch>, Failure> {
        let filtered;
        let batch = match &self.filter {
            None => batch,
            Some(pred) => {
                let where_ = || format!("WHERE {pred}");
                let mask = pred
                    .evaluate(batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
                    .map_err(|e| Failure::new(where_(), e))?;
                let Some(mask) = mask.as_any().downcast_ref::<BooleanArray>() else {
                    return Err(Failure::new(
                        where_(),
                        format!("yields {}, not BOOLEAN", mask.data_type()),
                    ));
                };
                if mask.true_count() == batch.num_rows() {
                    batch
                } else {
                    filtered =
                        filter_record_batch(batch, mask).map_err(|e| Failure::new(where_(), e))?;
                    &filtered
                }
            }
        };
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let rows = batch.num_rows();
        let mut columns = Vec::with_capacity(self.exprs.len());
        for (expr, compiled) in self.exprs.iter().zip(&self.compiled) {
            let v = compiled
                .evaluate(batch)
                .and_then(|v| v.into_array(rows))
                .map_err(|e| Failure::new(expr, e))?;
            columns.push(v);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let out = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
            .map_err(|e| Failure::new("SELECT", e))?;
        // A changelog's row kinds travel along (the filter above kept them in step).
        match changelog::ops(batch) {
            None => Ok(Some(out)),
            Some(ops) => changelog::attach(&out, Arc::new(ops.clone()) as ArrayRef)
                .map(Some)
                .map_err(|e| Failure::new("SELECT", e)),
        }
    }
}

impl Operator for Project {
    fn blocking(&self) -> bool {
        self.blocking
    }

    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        if let Some((Some(out_batch), _)) = self.errors.guard(batch, |b| self.eval(b))? {
            out.emit(out_batch);
        }
        Ok(())
    }
}
