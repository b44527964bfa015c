//! Window assignment for `TUMBLE`, `HOP` and `SESSION`: appends
//! `window_start`, `window_end`, `window_time` to each row. A HOP row is
//! repeated once per window that contains it; a SESSION row gets its own
//! `[ts, ts + gap)` window, which the session aggregate merges.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, TimestampMillisecondArray, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use runnel_common::metrics::Counter;
use runnel_sql::{WindowAssignSpec, WindowKind};

use crate::error::EngineError;
use crate::operator::{Operator, Output};

/// Stateless window assigner.
pub struct WindowAssign {
    label: String,
    kind: WindowKind,
    time_col: usize,
    schema: SchemaRef,
    dropped: Counter,
}

impl WindowAssign {
    /// Checks that the time column is a timestamp.
    pub fn try_new(
        label: &str,
        spec: &WindowAssignSpec,
        input: &SchemaRef,
        output: &SchemaRef,
        dropped: Counter,
    ) -> Result<Self, EngineError> {
        if !matches!(
            input.field(spec.time_col).data_type(),
            DataType::Timestamp(_, _)
        ) {
            return Err(EngineError::Invalid(format!(
                "{label}: the time column is not a TIMESTAMP"
            )));
        }
        Ok(Self {
            label: label.to_string(),
            kind: spec.kind,
            time_col: spec.time_col,
            schema: output.clone(),
            dropped,
        })
    }
}

/// Event times of column `col` as milliseconds.
pub(crate) fn millis(
    batch: &RecordBatch,
    col: usize,
) -> Result<TimestampMillisecondArray, EngineError> {
    let c = batch.column(col);
    let c = cast(c, &DataType::Timestamp(TimeUnit::Millisecond, None))
        .map_err(|e| EngineError::Internal(format!("reading event time: {e}")))?;
    c.as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .cloned()
        .ok_or_else(|| EngineError::Internal("event time column is not a timestamp".into()))
}

// rem_euclid, not %: event times before 1970 must still land in the window that contains them.
fn window_start(ts: i64, size: i64) -> i64 {
    ts - ts.rem_euclid(size)
}

impl Operator for WindowAssign {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        let ts = millis(&batch, self.time_col)?;
        let mut rows: Vec<u32> = Vec::with_capacity(batch.num_rows());
        let mut starts: Vec<i64> = Vec::with_capacity(batch.num_rows());
        let mut ends: Vec<i64> = Vec::with_capacity(batch.num_rows());
        let mut nulls = 0u64;
        for (i, t) in ts.iter().enumerate() {
            let Some(t) = t else {
                nulls += 1;
                continue;
            };
            match self.kind {
                WindowKind::Tumble { size_ms } => {
                    let s = window_start(t, size_ms);
                    rows.push(i as u32);
                    starts.push(s);
                    ends.push(s + size_ms);
                }
                WindowKind::Hop { slide_ms, size_ms } => {
                    let last = window_start(t, slide_ms);
                    let n = size_ms / slide_ms;
                    for k in (0..n).rev() {
                        let s = last - k * slide_ms;
                        rows.push(i as u32);
                        starts.push(s);
                        ends.push(s + size_ms);
                    }
                }
                WindowKind::Cumulate { step_ms, size_ms } => {
                    // Every window of the row's size period that ends after it.
                    let base = window_start(t, size_ms);
                    let mut end = window_start(t, step_ms) + step_ms;
                    while end <= base + size_ms {
                        rows.push(i as u32);
                        starts.push(base);
                        ends.push(end);
                        end += step_ms;
                    }
                }
                WindowKind::Session { gap_ms } => {
                    rows.push(i as u32);
                    starts.push(t);
                    ends.push(t.saturating_add(gap_ms));
                }
            }
        }
        if nulls > 0 {
            // A row without event time belongs to no window.
            self.dropped.add(nulls);
        }
        if rows.is_empty() {
            return Ok(());
        }
        let identity = rows.len() == batch.num_rows() && nulls == 0;
        let mut columns: Vec<ArrayRef> = if identity {
            batch.columns().to_vec()
        } else {
            let idx = UInt32Array::from(rows);
            batch
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), &idx, None))
                .collect::<Result<_, _>>()
                .map_err(|e| EngineError::Internal(format!("{}: {e}", self.label)))?
        };
        let times: Vec<i64> = ends.iter().map(|e| e - 1).collect();
        columns.push(Arc::new(TimestampMillisecondArray::from(starts)));
        columns.push(Arc::new(TimestampMillisecondArray::from(ends)));
        columns.push(Arc::new(TimestampMillisecondArray::from(times)));
        let out_batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| EngineError::Internal(format!("{}: {e}", self.label)))?;
        out.emit(out_batch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{Field, Schema};
    use proptest::prelude::*;

    use super::*;

    /// Runs the assigner over `times` and returns (input row, start, end) per output row.
    fn assign(kind: WindowKind, times: &[i64]) -> Vec<(i64, i64, i64)> {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let input = Arc::new(Schema::new(vec![Field::new("ts", ts.clone(), true)]));
        let output = Arc::new(Schema::new(vec![
            Field::new("ts", ts.clone(), true),
            Field::new("window_start", ts.clone(), false),
            Field::new("window_end", ts.clone(), false),
            Field::new("window_time", ts, false),
        ]));
        let spec = WindowAssignSpec { kind, time_col: 0 };
        let mut op =
            WindowAssign::try_new("t", &spec, &input, &output, Counter::default()).expect("valid");
        let batch = RecordBatch::try_new(
            input,
            vec![Arc::new(TimestampMillisecondArray::from(times.to_vec()))],
        )
        .expect("batch");
        let mut out = Output::default();
        op.process_batch(0, batch, &mut out).expect("assign");
        let mut rows = Vec::new();
        for b in out.drain() {
            let col = |i| millis(&b, i).expect("timestamps");
            let (t, s, e) = (col(0), col(1), col(2));
            for r in 0..b.num_rows() {
                rows.push((t.value(r), s.value(r), e.value(r)));
            }
        }
        rows
    }

    proptest! {
        /// Every event lands in exactly the windows that contain it: one tumble
        /// window, and size / slide distinct hop windows, all aligned.
        #[test]
        fn windows_contain_their_events(
            times in proptest::collection::vec(-1_000_000i64..1_000_000, 1..50),
            slide in 1i64..500,
            factor in 1i64..6,
        ) {
            let size = slide * factor;
            let tumble = assign(WindowKind::Tumble { size_ms: size }, &times);
            prop_assert_eq!(tumble.len(), times.len());
            for (t, s, e) in tumble {
                prop_assert!(s <= t && t < e && e - s == size && s.rem_euclid(size) == 0);
            }
            let hop = assign(WindowKind::Hop { slide_ms: slide, size_ms: size }, &times);
            prop_assert_eq!(hop.len(), times.len() * factor as usize);
            for &t in &times {
                let mut starts: Vec<i64> = hop.iter().filter(|r| r.0 == t).map(|r| r.1).collect();
                starts.sort();
                starts.dedup();
                // All aligned windows [s, s + size) with s <= t < s + size, each once.
                let expected: Vec<i64> = (0..factor).map(|k| t - t.rem_euclid(slide) - k * slide).rev().collect();
                prop_assert_eq!(&starts, &expected);
                for (_, s, e) in hop.iter().filter(|r| r.0 == t) {
                    prop_assert!(*s <= t && t < *e && e - s == size);
                }
            }
        }
    }

    #[test]
    fn window_start_handles_negative_times() {
        assert_eq!(window_start(-1, 10), -10);
        assert_eq!(window_start(0, 10), 0);
        assert_eq!(window_start(19, 10), 10);
    }
}
