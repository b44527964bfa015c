//! Lookup join (`JOIN t FOR SYSTEM_TIME AS OF s.proc_time`): each stream row is joined
//! with the rows its key finds in a looked-up table, asked one batch of keys at a time.
//! A `LEFT` join keeps a row that finds nothing (or nothing passing the residual
//! condition), NULL-padded. A changelog row's kind goes with every row it becomes.
//! Stateless: the table belongs to its connector, and a restore looks up again.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array};
use arrow::compute::{filter, take};
use arrow::datatypes::SchemaRef;
use datafusion_physical_expr::PhysicalExpr;
use runnel_common::changelog;
use runnel_connectors::lookup::LookupTable;
use runnel_sql::LookupJoinSpec;

use crate::error::EngineError;
use crate::eval::{Failure, RowErrors};
use crate::operator::{Operator, Output};

/// The LookupJoin operator.
pub struct LookupJoin {
    table: Arc<dyn LookupTable>,
    table_name: String,
    left_outer: bool,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    table_columns: Vec<usize>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    errors: RowErrors,
}

impl LookupJoin {
    /// A join of the stream with `table` (opened before the first batch arrives).
    pub fn new(
        spec: &LookupJoinSpec,
        table: Arc<dyn LookupTable>,
        output: &SchemaRef,
        errors: RowErrors,
    ) -> Self {
        LookupJoin {
            table,
            table_name: spec.table.name.clone(),
            left_outer: spec.left_outer,
            keys: spec.stream_keys.clone(),
            table_columns: spec.table_columns.clone(),
            filter: spec.filter.clone(),
            schema: output.clone(),
            errors,
        }
    }

    fn keys(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>, Failure> {
        self.keys
            .iter()
            .map(|k| {
                k.evaluate(batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
                    .map_err(|e| Failure::new(k, e))
            })
            .collect()
    }

    fn join(
        &self,
        data: &RecordBatch,
        matches: runnel_connectors::lookup::Matches,
    ) -> Result<(UInt32Array, Vec<ArrayRef>), EngineError> {
        let mut probe = matches.probe;
        let mut columns: Vec<ArrayRef> = data
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &probe, None))
            .collect::<Result<_, _>>()?;
        for &c in &self.table_columns {
            columns.push(matches.rows.column(c).clone());
        }
        if let Some(pred) = &self.filter {
            let joined = RecordBatch::try_new_with_options(
                self.schema.clone(),
                columns.clone(),
                &RecordBatchOptions::new().with_row_count(Some(probe.len())),
            )?;
            let mask = self.errors.mask(&joined, "ON", pred)?;
            probe = filter_u32(&probe, &mask)?;
            columns = columns
                .iter()
                .map(|c| filter(c.as_ref(), &mask))
                .collect::<Result<_, _>>()?;
        }
        Ok((probe, columns))
    }
}

fn filter_u32(a: &UInt32Array, mask: &BooleanArray) -> Result<UInt32Array, EngineError> {
    let f = filter(a, mask)?;
    f.as_any()
        .downcast_ref::<UInt32Array>()
        .cloned()
        .ok_or_else(|| EngineError::Internal("filtered indices changed type".into()))
}

impl Operator for LookupJoin {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        let Some((keys, batch)) = self
            .errors
            .guard(batch, |b| self.keys(&changelog::data(b)))?
        else {
            return Ok(());
        };
        let data = changelog::data(&batch);
        // A look-up that fails (after the table's own retries) sends the rows that asked
        // to the dead letters, unless failures are strict.
        let matches = match self.table.lookup(&keys) {
            Ok(m) => m,
            Err(e) => {
                let failure = Failure::new(format!("look-up in {}", self.table_name), e);
                return self.errors.reject_all(&data, &failure);
            }
        };
        let (mut probe, mut columns) = self.join(&data, matches)?;
        if self.left_outer {
            let mut matched = vec![false; data.num_rows()];
            for i in probe.values() {
                matched[*i as usize] = true;
            }
            let missing: Vec<u32> = (0..data.num_rows() as u32)
                .filter(|i| !matched[*i as usize])
                .collect();
            if !missing.is_empty() {
                let missing = UInt32Array::from(missing);
                let width = data.num_columns();
                for (i, c) in columns.iter_mut().enumerate() {
                    let pad = if i < width {
                        take(data.column(i).as_ref(), &missing, None)?
                    } else {
                        arrow::array::new_null_array(c.data_type(), missing.len())
                    };
                    *c = arrow::compute::concat(&[c.as_ref(), pad.as_ref()])?;
                }
                let all: Vec<u32> = probe
                    .values()
                    .iter()
                    .chain(missing.values().iter())
                    .copied()
                    .collect();
                probe = UInt32Array::from(all);
            }
        }
        if probe.is_empty() {
            return Ok(());
        }
        let options = RecordBatchOptions::new().with_row_count(Some(probe.len()));
        let joined = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        let joined = match changelog::ops(&batch) {
            None => joined,
            Some(ops) => changelog::attach(&joined, take(ops, &probe, None)?)?,
        };
        out.emit(joined);
        Ok(())
    }
}
