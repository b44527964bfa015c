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
use crate::operator::{Operator, Output};

/// `SELECT exprs FROM input WHERE filter`, vectorized.
pub struct Project {
    label: String,
    filter: Option<Arc<dyn PhysicalExpr>>,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    blocking: bool,
}

impl Project {
    /// Checks the expressions against the input schema and derives the exact
    /// output types (names come from the plan).
    pub fn try_new(
        label: &str,
        spec: &ProjectSpec,
        input: &SchemaRef,
        output: &SchemaRef,
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
            label: label.to_string(),
            filter: spec.filter.clone(),
            exprs: spec.exprs.clone(),
            schema: Arc::new(Schema::new(fields)),
            blocking: spec.blocking,
        })
    }

    fn eval_err(&self, e: impl std::fmt::Display) -> EngineError {
        EngineError::Eval {
            operator: self.label.clone(),
            message: e.to_string(),
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
        let batch = match &self.filter {
            None => batch,
            Some(pred) => {
                let mask = pred
                    .evaluate(&batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
                    .map_err(|e| self.eval_err(e))?;
                let Some(mask) = mask.as_any().downcast_ref::<BooleanArray>() else {
                    return Err(
                        self.eval_err(format!("WHERE yields {}, not BOOLEAN", mask.data_type()))
                    );
                };
                if mask.true_count() == batch.num_rows() {
                    batch
                } else {
                    filter_record_batch(&batch, mask).map_err(|e| self.eval_err(e))?
                }
            }
        };
        if batch.num_rows() == 0 {
            return Ok(());
        }
        // A changelog's row kinds travel along (the filter above kept them in step).
        let ops = changelog::ops(&batch).map(|o| Arc::new(o.clone()) as ArrayRef);
        let rows = batch.num_rows();
        let mut columns = Vec::with_capacity(self.exprs.len());
        for expr in &self.exprs {
            let v = expr
                .evaluate(&batch)
                .and_then(|v| v.into_array(rows))
                .map_err(|e| self.eval_err(e))?;
            columns.push(v);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let out_batch = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
            .map_err(|e| self.eval_err(e))?;
        let out_batch = match ops {
            None => out_batch,
            Some(ops) => changelog::attach(&out_batch, ops).map_err(|e| self.eval_err(e))?,
        };
        out.emit(out_batch);
        Ok(())
    }
}
