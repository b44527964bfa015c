//! Session windows: rows of a key belong to one session while consecutive
//! event times are at most `gap` apart (sessions that touch merge, as in Flink); `window_end` = last event + gap.
//! Rows are buffered per subtask and, once the watermark may have closed a
//! session, sorted by (key, time) and cut into sessions in one vectorized
//! pass; closed sessions are aggregated and emitted, open ones stay buffered.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::row::RowConverter;
use runnel_common::Timestamp;
use runnel_common::metrics::Counter;
use runnel_common::time::TS_MIN;
use runnel_sql::{GroupCol, WindowAggSpec};

use super::aggregate::{AggFns, assemble, evaluate, key_converter, output_schema, update};
use super::window_assign::millis;
use crate::error::EngineError;
use crate::eval::RowErrors;
use crate::operator::{Operator, Output, StateReader, StateWriter};

/// GROUP BY window_start, window_end, keys over SESSION windows.
pub struct SessionAggregate {
    gap: i64,
    key_cols: Vec<usize>,
    time_col: usize,
    layout: Vec<GroupCol>,
    fns: AggFns,
    converter: RowConverter,
    input: SchemaRef,
    buffer: Vec<RecordBatch>,
    oldest: Timestamp,
    watermark: Timestamp,
    schema: SchemaRef,
    late: Counter,
    /// Rows whose expressions fail.
    errors: RowErrors,
}

impl SessionAggregate {
    /// Validates the spec; `window_start` of the input is each row's event time.
    pub fn try_new(
        spec: &WindowAggSpec,
        gap: i64,
        input: &SchemaRef,
        planned: &SchemaRef,
        late: Counter,
        errors: RowErrors,
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
            errors,
            gap,
            key_cols: spec.key_cols.clone(),
            time_col: spec.start_col,
            layout: spec.group_layout.clone(),
            fns,
            converter,
            input: input.clone(),
            buffer: Vec::new(),
            oldest: Timestamp::MAX,
            watermark: TS_MIN,
            schema,
            late,
        })
    }
}

impl Operator for SessionAggregate {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        _out: &mut Output,
    ) -> Result<(), EngineError> {
        // Rows whose aggregate arguments fail are set aside now, not when the session
        // closes.
        let Some(((), batch)) = self
            .errors
            .guard(batch, |b| self.fns.evaluate_inputs(b).map(|_| ()))?
        else {
            return Ok(());
        };
        let ts = millis(&batch, self.time_col)?;
        // A row whose own session [ts, ts + gap) would already have closed is late.
        let keep: Vec<u32> = (0..batch.num_rows())
            .filter(|&i| {
                !ts.is_null(i) && ts.value(i).saturating_add(self.gap) - 1 > self.watermark
            })
            .map(|i| i as u32)
            .collect();
        let dropped = batch.num_rows() - keep.len();
        if dropped > 0 {
            self.late.add(dropped as u64);
        }
        if keep.is_empty() {
            return Ok(());
        }
        let batch = if dropped == 0 {
            batch
        } else {
            take_record_batch(&batch, &UInt32Array::from(keep))?
        };
        let ts = millis(&batch, self.time_col)?;
        if let Some(min) = arrow::compute::min(&ts) {
            self.oldest = self.oldest.min(min);
        }
        self.buffer.push(batch);
        Ok(())
    }

    /// Open sessions are their buffered rows.
    fn snapshot(&mut self, state: &mut StateWriter) -> Result<(), EngineError> {
        for b in &self.buffer {
            state.put("buffer", b.clone());
        }
        Ok(())
    }

    fn restore(&mut self, state: &StateReader) -> Result<(), EngineError> {
        for b in state.get("buffer") {
            let ts = millis(b, self.time_col)?;
            if let Some(min) = arrow::compute::min(&ts) {
                self.oldest = self.oldest.min(min);
            }
            self.buffer.push(b.clone());
        }
        Ok(())
    }

    fn process_watermark(
        &mut self,
        watermark: Timestamp,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        self.watermark = watermark;
        // No session can have closed unless the oldest buffered row's could.
        if self.buffer.is_empty() || self.oldest.saturating_add(self.gap) - 1 > watermark {
            return Ok(());
        }
        let all = concat_batches(&self.input, &self.buffer)?;
        self.buffer.clear();
        let ts = millis(&all, self.time_col)?;
        let mut sort: Vec<SortColumn> = self
            .key_cols
            .iter()
            .map(|&c| SortColumn {
                values: all.column(c).clone(),
                options: None,
            })
            .collect();
        sort.push(SortColumn {
            values: Arc::new(ts.clone()) as ArrayRef,
            options: None,
        });
        let order = lexsort_to_indices(&sort, None)?;
        let key_arrays: Vec<ArrayRef> = self
            .key_cols
            .iter()
            .map(|&c| all.column(c).clone())
            .collect();
        let rows = if self.key_cols.is_empty() {
            None
        } else {
            Some(self.converter.convert_columns(&key_arrays)?)
        };

        // Cut the sorted rows into sessions.
        let mut sessions: Vec<(usize, usize, Timestamp, Timestamp)> = Vec::new(); // (first pos, last pos, start, last ts)
        let order_v = order.values();
        for (pos, &row) in order_v.iter().enumerate() {
            let r = row as usize;
            let t = ts.value(r);
            let same_key = match (&rows, sessions.last()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(rs), Some(&(first, _, _, _))) => rs.row(order_v[first] as usize) == rs.row(r),
            };
            match sessions.last_mut() {
                Some(s) if same_key && t - s.3 <= self.gap => {
                    s.1 = pos;
                    s.3 = t;
                }
                _ => sessions.push((pos, pos, t, t)),
            }
        }
        let mut closed_rows: Vec<u32> = Vec::new();
        let mut gids: Vec<usize> = Vec::new();
        let mut firsts: Vec<u32> = Vec::new();
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        let mut open_rows: Vec<u32> = Vec::new();
        let mut oldest = Timestamp::MAX;
        for &(first, last, start, last_ts) in &sessions {
            let end = last_ts.saturating_add(self.gap);
            if end - 1 <= watermark {
                let gid = firsts.len();
                firsts.push(order_v[first]);
                starts.push(start);
                ends.push(end);
                for &row in &order_v[first..=last] {
                    closed_rows.push(row);
                    gids.push(gid);
                }
            } else {
                oldest = oldest.min(start);
                open_rows.extend_from_slice(&order_v[first..=last]);
            }
        }
        if !open_rows.is_empty() {
            self.buffer
                .push(take_record_batch(&all, &UInt32Array::from(open_rows))?);
        }
        self.oldest = oldest;
        if firsts.is_empty() {
            return Ok(());
        }
        let inputs = self
            .fns
            .evaluate_inputs(&all)
            .map_err(|f| self.errors.fail(&f))?;
        let mut accs = self.fns.accumulators()?;
        update(
            &mut accs,
            &inputs,
            Some(&UInt32Array::from(closed_rows)),
            &gids,
            firsts.len(),
        )?;
        let values = evaluate(&mut accs)?;
        let firsts = UInt32Array::from(firsts);
        let keys = key_arrays
            .iter()
            .map(|k| take(k.as_ref(), &firsts, None))
            .collect::<Result<Vec<_>, _>>()?;
        out.emit(assemble(
            &self.schema,
            &self.layout,
            keys,
            starts,
            ends,
            values,
        )?);
        Ok(())
    }
}
