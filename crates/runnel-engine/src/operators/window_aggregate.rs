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
    AggFns, GroupKeys, assemble, evaluate, key_converter, output_schema, restore_state,
    snapshot_state, state_batch, update,
};
use super::window_assign::millis;
use crate::error::EngineError;
use crate::eval::RowErrors;
use crate::operator::{Operator, Output, StateReader, StateWriter};

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
    /// Windows over PROCTIME(): they close by the wall clock, and no row is late.
    processing_time: bool,
    /// Rows whose expressions fail.
    errors: RowErrors,
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
            processing_time: spec.processing_time,
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

impl WindowAggregate {
    /// Fires every window that ends at or before `time` + 1 ms.
    fn fire_until(&mut self, time: Timestamp, out: &mut Output) -> Result<(), EngineError> {
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() - 1 > time {
                break;
            }
            let end = *entry.key();
            let state = entry.remove();
            self.fire(end, state, out)?;
        }
        Ok(())
    }
}

impl Operator for WindowAggregate {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        let Some((inputs, batch)) = self.errors.guard(batch, |b| self.fns.evaluate_inputs(b))?
        else {
            return Ok(());
        };
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
        // Rows per window touched by this batch (usually one or a few).
        let mut touched: Vec<(Timestamp, Vec<u32>, Vec<usize>)> = Vec::new();
        let mut late = 0u64;
        for i in 0..batch.num_rows() {
            if ends.is_null(i) {
                late += 1;
                continue;
            }
            let end = ends.value(i);
            if !self.processing_time && end - 1 <= self.watermark {
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
        if self.processing_time {
            self.fire_until(runnel_common::time::now_ms(), out)?;
        }
        Ok(())
    }

    /// One batch per open window: end, start, key columns, then every
    /// aggregate's intermediate state (DataFusion's state/merge contract).
    fn snapshot(&mut self, state: &mut StateWriter) -> Result<(), EngineError> {
        let keyed = !self.key_cols.is_empty();
        for (end, st) in self.open.iter_mut() {
            let n = if keyed { st.keys.len() } else { 1 };
            let mut cols: Vec<arrow::array::ArrayRef> = vec![
                std::sync::Arc::new(arrow::array::TimestampMillisecondArray::from(vec![*end; n])),
                std::sync::Arc::new(arrow::array::TimestampMillisecondArray::from(vec![
                    st.start;
                    n
                ])),
            ];
            if keyed {
                cols.extend(st.keys.columns(&self.converter)?);
            }
            cols.extend(snapshot_state(&self.fns, &mut st.accs, n)?);
            state.put("window", state_batch(cols)?);
        }
        Ok(())
    }

    fn restore(&mut self, state: &StateReader) -> Result<(), EngineError> {
        let k = self.key_cols.len();
        for b in state.get("window") {
            let n = b.num_rows();
            if n == 0 {
                continue;
            }
            let (end, start) = (millis(b, 0)?.value(0), millis(b, 1)?.value(0));
            let mut keys = GroupKeys::new(&self.converter);
            if k > 0 {
                let rows = self.converter.convert_columns(&b.columns()[2..2 + k])?;
                for i in 0..n {
                    keys.intern(rows.row(i));
                }
            }
            let accs = restore_state(&self.fns, &b.columns()[2 + k..], n)?;
            self.open.insert(end, WindowState { start, keys, accs });
        }
        Ok(())
    }

    /// Processing-time windows close by the wall clock even when no row arrives.
    fn next_timer(&self) -> Option<Timestamp> {
        if !self.processing_time {
            return None;
        }
        self.open.keys().next().map(|end| end - 1)
    }

    fn on_timer(&mut self, now: Timestamp, out: &mut Output) -> Result<(), EngineError> {
        self.fire_until(now, out)
    }

    fn process_watermark(
        &mut self,
        watermark: Timestamp,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        self.watermark = watermark;
        // Processing-time windows close by the clock (watermarks only pace the calls),
        // and all at once when the input ends.
        let until = if self.processing_time && watermark != runnel_common::time::TS_MAX {
            runnel_common::time::now_ms()
        } else {
            watermark
        };
        self.fire_until(until, out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
    use runnel_sql::{NodeSpec, Planner};

    use super::*;

    fn operator() -> (WindowAggregate, SchemaRef) {
        let graph = Planner::new()
            .plan(
                "CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH (connector = 'blackhole');
                 CREATE TABLE o (k STRING, s TIMESTAMP(3), n BIGINT, total BIGINT, d BIGINT) WITH (connector = 'blackhole');
                 INSERT INTO o SELECT k, window_start, COUNT(*), SUM(v), COUNT(DISTINCT v)
                 FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end;",
            )
            .expect("plans");
        let node = graph
            .nodes
            .iter()
            .find(|n| matches!(n.spec, NodeSpec::WindowAggregate(_)))
            .expect("a window aggregate");
        let NodeSpec::WindowAggregate(spec) = &node.spec else {
            unreachable!("matched above")
        };
        let input = graph.nodes[node.inputs[0].node].schema.clone();
        let op = WindowAggregate::try_new(
            spec,
            &input,
            &node.schema,
            Counter::default(),
            RowErrors::strict("test"),
        )
        .expect("builds");
        (op, input)
    }

    /// Rows `(k, v, ts)` already assigned to 10 s tumbling windows.
    fn rows(input: &SchemaRef, rows: &[(&str, i64, i64)]) -> RecordBatch {
        let ts = |f: &dyn Fn(i64) -> i64| -> ArrayRef {
            Arc::new(TimestampMillisecondArray::from(
                rows.iter().map(|r| f(r.2)).collect::<Vec<_>>(),
            ))
        };
        RecordBatch::try_new(
            input.clone(),
            vec![
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                ts(&|t| t),
                ts(&|t| t - t.rem_euclid(10_000)),
                ts(&|t| t - t.rem_euclid(10_000) + 10_000),
                ts(&|t| t - t.rem_euclid(10_000) + 9_999),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn snapshot_restore_round_trip_gives_identical_results() {
        let (mut plain, input) = operator();
        let first = rows(
            &input,
            &[("a", 1, 1_000), ("b", 2, 2_000), ("a", 1, 12_000)],
        );
        let second = rows(
            &input,
            &[("a", 5, 3_000), ("c", 7, 15_000), ("b", 2, 9_000)],
        );
        let mut expected = Output::default();
        plain
            .process_batch(0, first.clone(), &mut expected)
            .expect("batch");
        plain
            .process_batch(0, second.clone(), &mut expected)
            .expect("batch");
        plain
            .process_watermark(Timestamp::MAX, &mut expected)
            .expect("fires");
        let expected: Vec<RecordBatch> = expected.drain().collect();
        assert_eq!(expected.iter().map(|b| b.num_rows()).sum::<usize>(), 4);

        let (mut before, _) = operator();
        let mut out = Output::default();
        before.process_batch(0, first, &mut out).expect("batch");
        let mut writer = StateWriter::default();
        before.snapshot(&mut writer).expect("snapshot");
        let (mut after, _) = operator();
        after
            .restore(&StateReader {
                entries: writer.entries,
            })
            .expect("restore");
        after.process_batch(0, second, &mut out).expect("batch");
        after
            .process_watermark(Timestamp::MAX, &mut out)
            .expect("fires");
        let got: Vec<RecordBatch> = out.drain().collect();
        assert_eq!(got, expected);
    }
}
