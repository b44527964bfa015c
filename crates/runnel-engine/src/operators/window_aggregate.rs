//! Windowed aggregation over TUMBLE and HOP windows (and over the windows of
//! an upstream window aggregate): one set of vectorized accumulators per open
//! window, keyed by `window_end`. A window fires once, when the watermark
//! passes its end, and its memory is freed. Rows for a window that already
//! fired are late: dropped and counted, never silently.

use std::collections::BTreeMap;

use arrow::array::{Array, RecordBatch, UInt32Array};
use arrow::datatypes::SchemaRef;
use arrow::row::RowConverter;
use datafusion_expr::GroupsAccumulator;
use runnel_common::Timestamp;
use runnel_common::metrics::Counter;
use runnel_common::time::TS_MIN;
use runnel_sql::{GroupCol, WindowAggSpec};

use super::aggregate::{
    AggFns, GroupKeys, assemble, evaluate, key_converter, output_schema, update,
};
use super::window_assign::millis;
use crate::error::EngineError;
use crate::operator::{Operator, Output};

/// GROUP BY window_start, window_end[, keys] for fixed windows.
pub struct WindowAggregate {
    key_cols: Vec<usize>,
    start_col: usize,
    end_col: usize,
    layout: Vec<GroupCol>,
    fns: AggFns,
    converter: RowConverter,
    open: BTreeMap<Timestamp, WindowState>,
    watermark: Timestamp,
    schema: SchemaRef,
    late: Counter,
}

struct WindowState {
    start: Timestamp,
    keys: GroupKeys,
    accs: Vec<Box<dyn GroupsAccumulator>>,
}

impl WindowAggregate {
    /// Validates the spec against the input schema.
    pub fn try_new(
        spec: &WindowAggSpec,
        input: &SchemaRef,
        planned: &SchemaRef,
        late: Counter,
    ) -> Result<Self, EngineError> {
        let fns = AggFns::new(&spec.aggs);
        let converter = key_converter(input, &spec.key_cols)?;
        let schema = output_schema(
            input,
            &spec.key_cols,
            spec.start_col,
            spec.end_col,
            &spec.group_layout,
            &fns,
            planned,
        );
        Ok(Self {
            key_cols: spec.key_cols.clone(),
            start_col: spec.start_col,
            end_col: spec.end_col,
            layout: spec.group_layout.clone(),
            fns,
            converter,
            open: BTreeMap::new(),
            watermark: TS_MIN,
            schema,
            late,
        })
    }

    fn fire(
        &mut self,
        end: Timestamp,
        state: WindowState,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        let WindowState {
            start,
            keys,
            mut accs,
        } = state;
        let n = if self.key_cols.is_empty() {
            1
        } else {
            keys.len()
        };
        let key_arrays = if self.key_cols.is_empty() {
            Vec::new()
        } else {
            keys.columns(&self.converter)?
        };
        let values = evaluate(&mut accs)?;
        let batch = assemble(
            &self.schema,
            &self.layout,
            key_arrays,
            vec![start; n],
            vec![end; n],
            values,
        )?;
        out.emit(batch);
        Ok(())
    }
}

impl Operator for WindowAggregate {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        _out: &mut Output,
    ) -> Result<(), EngineError> {
        let ends = millis(&batch, self.end_col)?;
        let starts = millis(&batch, self.start_col)?;
        let key_arrays: Vec<_> = self
            .key_cols
            .iter()
            .map(|&c| batch.column(c).clone())
            .collect();
        let rows = if self.key_cols.is_empty() {
            None
        } else {
            Some(self.converter.convert_columns(&key_arrays)?)
        };
        let inputs = self.fns.evaluate_inputs(&batch)?;
        // Rows per window touched by this batch (usually one or a few).
        let mut touched: Vec<(Timestamp, Vec<u32>, Vec<usize>)> = Vec::new();
        let mut late = 0u64;
        for i in 0..batch.num_rows() {
            if ends.is_null(i) {
                late += 1;
                continue;
            }
            let end = ends.value(i);
            if end - 1 <= self.watermark {
                late += 1;
                continue;
            }
            if !self.open.contains_key(&end) {
                let accs = self.fns.accumulators()?;
                let start = if starts.is_null(i) {
                    end
                } else {
                    starts.value(i)
                };
                self.open.insert(
                    end,
                    WindowState {
                        start,
                        keys: GroupKeys::new(&self.converter),
                        accs,
                    },
                );
            }
            let Some(state) = self.open.get_mut(&end) else {
                continue;
            };
            // Without keys the whole window is group 0.
            let gid = match &rows {
                Some(r) => state.keys.intern(r.row(i)),
                None => 0,
            };
            let slot = match touched.iter().position(|(e, _, _)| *e == end) {
                Some(p) => p,
                None => {
                    touched.push((end, Vec::new(), Vec::new()));
                    touched.len() - 1
                }
            };
            touched[slot].1.push(i as u32);
            touched[slot].2.push(gid);
        }
        if late > 0 {
            self.late.add(late);
        }
        for (end, idx, gids) in touched {
            let Some(state) = self.open.get_mut(&end) else {
                continue;
            };
            let n = if self.key_cols.is_empty() {
                1
            } else {
                state.keys.len()
            };
            let all = idx.len() == batch.num_rows();
            let idx = UInt32Array::from(idx);
            update(
                &mut state.accs,
                &inputs,
                if all { None } else { Some(&idx) },
                &gids,
                n,
            )?;
        }
        Ok(())
    }

    fn process_watermark(
        &mut self,
        watermark: Timestamp,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        self.watermark = watermark;
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() - 1 > watermark {
                break;
            }
            let end = *entry.key();
            let state = entry.remove();
            self.fire(end, state, out)?;
        }
        Ok(())
    }
}
