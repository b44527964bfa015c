//! Flink's window join: rows of two windowed inputs with equal window and
//! keys are joined once the watermark passes the window's end; both sides'
//! rows of that window are then dropped. Rows for a window that already
//! closed are late: dropped and counted.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, filter_record_batch, take};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use datafusion_physical_expr::PhysicalExpr;
use hashbrown::HashMap;
use runnel_common::Timestamp;
use runnel_common::metrics::Counter;
use runnel_common::time::TS_MIN;
use runnel_sql::WindowJoinSpec;

use super::window_assign::millis;
use crate::error::EngineError;
use crate::eval::RowErrors;
use crate::operator::{Operator, Output, StateReader, StateWriter};

/// Inner join of two windowed inputs on window and keys.
pub struct WindowJoin {
    left_keys: Vec<usize>,
    right_keys: Vec<usize>,
    left_end: usize,
    right_end: usize,
    left_inputs: usize,
    filter: Option<Arc<dyn PhysicalExpr>>,
    converter: RowConverter,
    left_schema: SchemaRef,
    right_schema: SchemaRef,
    schema: SchemaRef,
    left: BTreeMap<Timestamp, Vec<RecordBatch>>,
    right: BTreeMap<Timestamp, Vec<RecordBatch>>,
    watermark: Timestamp,
    late: Counter,
    /// Rows whose expressions fail.
    errors: RowErrors,
}

impl WindowJoin {
    /// Validates key types on both sides.
    pub fn try_new(
        spec: &WindowJoinSpec,
        left: &SchemaRef,
        right: &SchemaRef,
        output: &SchemaRef,
        late: Counter,
        errors: RowErrors,
    ) -> Result<Self, EngineError> {
        let pos = spec
            .left_keys
            .iter()
            .position(|k| *k == spec.left_end)
            .ok_or_else(|| {
                EngineError::Invalid("window join without window_end among its keys".into())
            })?;
        let converter = RowConverter::new(
            spec.left_keys
                .iter()
                .map(|&c| SortField::new(left.field(c).data_type().clone()))
                .collect(),
        )?;
        Ok(Self {
            errors,
            left_keys: spec.left_keys.clone(),
            right_keys: spec.right_keys.clone(),
            left_end: spec.left_end,
            right_end: spec.right_keys[pos],
            left_inputs: spec.left_inputs,
            filter: spec.filter.clone(),
            converter,
            left_schema: left.clone(),
            right_schema: right.clone(),
            schema: output.clone(),
            left: BTreeMap::new(),
            right: BTreeMap::new(),
            watermark: TS_MIN,
            late,
        })
    }

    fn join_window(
        &self,
        left: Vec<RecordBatch>,
        right: Vec<RecordBatch>,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        let l = concat_batches(&self.left_schema, &left)?;
        let r = concat_batches(&self.right_schema, &right)?;
        let cast_to = |arrays: Vec<ArrayRef>| -> Result<Vec<ArrayRef>, EngineError> {
            arrays
                .into_iter()
                .zip(self.left_keys.iter())
                .map(|(a, &lk)| {
                    let want = self.left_schema.field(lk).data_type();
                    if a.data_type() == want {
                        Ok(a)
                    } else {
                        Ok(arrow::compute::cast(&a, want)?)
                    }
                })
                .collect()
        };
        let lrows = self.converter.convert_columns(
            &self
                .left_keys
                .iter()
                .map(|&c| l.column(c).clone())
                .collect::<Vec<_>>(),
        )?;
        let rrows = self.converter.convert_columns(&cast_to(
            self.right_keys
                .iter()
                .map(|&c| r.column(c).clone())
                .collect(),
        )?)?;
        let mut table: HashMap<&[u8], Vec<u32>> = HashMap::new();
        for i in 0..r.num_rows() {
            table.entry(rrows.row(i).data()).or_default().push(i as u32);
        }
        let (mut li, mut ri) = (Vec::new(), Vec::new());
        for i in 0..l.num_rows() {
            if let Some(matches) = table.get(lrows.row(i).as_ref()) {
                for &m in matches {
                    li.push(i as u32);
                    ri.push(m);
                }
            }
        }
        if li.is_empty() {
            return Ok(());
        }
        let (li, ri) = (UInt32Array::from(li), UInt32Array::from(ri));
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for c in l.columns() {
            cols.push(take(c.as_ref(), &li, None)?);
        }
        for c in r.columns() {
            cols.push(take(c.as_ref(), &ri, None)?);
        }
        let cols = cols
            .into_iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    arrow::compute::cast(&c, f.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let joined = RecordBatch::try_new(self.schema.clone(), cols)?;
        let joined = match &self.filter {
            None => joined,
            Some(f) => {
                let mask = self.errors.mask(&joined, "ON", f)?;
                filter_record_batch(&joined, &mask)?
            }
        };
        out.emit(joined);
        Ok(())
    }
}

impl Operator for WindowJoin {
    fn process_batch(
        &mut self,
        input: usize,
        batch: RecordBatch,
        _out: &mut Output,
    ) -> Result<(), EngineError> {
        let is_left = input < self.left_inputs;
        let ends = millis(
            &batch,
            if is_left {
                self.left_end
            } else {
                self.right_end
            },
        )?;
        let mut by_end: BTreeMap<Timestamp, Vec<u32>> = BTreeMap::new();
        let mut late = 0u64;
        for i in 0..batch.num_rows() {
            if ends.is_null(i) || ends.value(i) - 1 <= self.watermark {
                late += 1;
                continue;
            }
            by_end.entry(ends.value(i)).or_default().push(i as u32);
        }
        if late > 0 {
            self.late.add(late);
        }
        let side = if is_left {
            &mut self.left
        } else {
            &mut self.right
        };
        let single = by_end.len() == 1 && late == 0;
        for (end, idx) in by_end {
            let part = if single {
                batch.clone()
            } else {
                arrow::compute::take_record_batch(&batch, &UInt32Array::from(idx))?
            };
            side.entry(end).or_default().push(part);
        }
        Ok(())
    }

    /// Both sides' buffered rows, by side.
    fn snapshot(&mut self, state: &mut StateWriter) -> Result<(), EngineError> {
        for (name, side) in [("left", &self.left), ("right", &self.right)] {
            for b in side.values().flatten() {
                state.put(name, b.clone());
            }
        }
        Ok(())
    }

    fn restore(&mut self, state: &StateReader) -> Result<(), EngineError> {
        for (name, end_col) in [("left", self.left_end), ("right", self.right_end)] {
            for b in state.get(name) {
                let ends = millis(b, end_col)?;
                let Some(end) = (0..ends.len())
                    .find(|&i| !ends.is_null(i))
                    .map(|i| ends.value(i))
                else {
                    continue;
                };
                let side = if name == "left" {
                    &mut self.left
                } else {
                    &mut self.right
                };
                side.entry(end).or_default().push(b.clone());
            }
        }
        Ok(())
    }

    fn process_watermark(
        &mut self,
        watermark: Timestamp,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        self.watermark = watermark;
        let ends: Vec<Timestamp> = self
            .left
            .keys()
            .chain(self.right.keys())
            .copied()
            .filter(|e| e - 1 <= watermark)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for end in ends {
            let l = self.left.remove(&end);
            let r = self.right.remove(&end);
            if let (Some(l), Some(r)) = (l, r) {
                self.join_window(l, r, out)?;
            }
        }
        Ok(())
    }
}
