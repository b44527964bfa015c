//! Session windows: rows of a key belong to one session while consecutive
//! event times are at most `gap` apart (sessions that touch merge, as in Flink);
//! `window_end` = last event + gap.
//!
//! Incremental and vectorized. Rows are buffered until the watermark may have
//! closed a session. Then the buffered rows are sorted by (key, time), cut into
//! sessions and pre-aggregated into partial accumulator states in one pass;
//! these join the open sessions kept from before, which are sorted by
//! (key, start) and merged where they touch (`merge_batch` on the partial
//! states). Closed sessions are evaluated and emitted; each open one stays as a
//! single row of partial state, so a long session costs one row, not all its
//! events, and every row is sorted once.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{
    SortColumn, concat, concat_batches, lexsort_to_indices, take, take_record_batch,
};
use arrow::datatypes::SchemaRef;
use arrow::row::RowConverter;
use datafusion_expr::{EmitTo, GroupsAccumulator};
use runnel_common::Timestamp;
use runnel_common::metrics::Counter;
use runnel_common::time::TS_MIN;
use runnel_sql::{GroupCol, WindowAggSpec};

use super::aggregate::{
    AggFns, assemble, evaluate, key_converter, output_schema, state_batch, update,
};
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
    /// Intermediate-state columns of each aggregate.
    widths: Vec<usize>,
    converter: RowConverter,
    input: SchemaRef,
    /// Rows not yet folded into sessions.
    buffer: Vec<RecordBatch>,
    /// Open sessions, one row of partial state each.
    open: Option<Sessions>,
    /// No session ends before this: the watermark must reach `next_close - 1`
    /// before anything can be emitted.
    next_close: Timestamp,
    watermark: Timestamp,
    schema: SchemaRef,
    late: Counter,
    /// Rows whose expressions fail.
    errors: RowErrors,
}

/// Sessions as columns: keys, first and last event time, and the partial
/// state of every aggregate (their state columns one after another).
struct Sessions {
    keys: Vec<ArrayRef>,
    starts: Vec<i64>,
    lasts: Vec<i64>,
    states: Vec<ArrayRef>,
}

impl Sessions {
    fn len(&self) -> usize {
        self.starts.len()
    }

    fn append(self, other: Sessions) -> Result<Sessions, EngineError> {
        let cat = |a: Vec<ArrayRef>, b: Vec<ArrayRef>| -> Result<Vec<ArrayRef>, EngineError> {
            a.iter()
                .zip(&b)
                .map(|(a, b)| Ok(concat(&[a.as_ref(), b.as_ref()])?))
                .collect()
        };
        let mut starts = self.starts;
        starts.extend(other.starts);
        let mut lasts = self.lasts;
        lasts.extend(other.lasts);
        Ok(Sessions {
            keys: cat(self.keys, other.keys)?,
            starts,
            lasts,
            states: cat(self.states, other.states)?,
        })
    }

    /// The sessions at `rows`, with `(start, last)` of each.
    fn take(
        &self,
        firsts: &UInt32Array,
        starts: Vec<i64>,
        lasts: Vec<i64>,
        states: Vec<ArrayRef>,
    ) -> Result<Sessions, EngineError> {
        let keys = self
            .keys
            .iter()
            .map(|k| take(k.as_ref(), firsts, None))
            .collect::<Result<_, _>>()?;
        Ok(Sessions {
            keys,
            starts,
            lasts,
            states,
        })
    }

    fn to_batch(&self) -> Result<RecordBatch, EngineError> {
        let mut cols = self.keys.clone();
        cols.push(Arc::new(Int64Array::from(self.starts.clone())));
        cols.push(Arc::new(Int64Array::from(self.lasts.clone())));
        cols.extend(self.states.iter().cloned());
        state_batch(cols)
    }

    fn from_batch(batch: &RecordBatch, num_keys: usize) -> Result<Sessions, EngineError> {
        let times = |i: usize| {
            batch
                .columns()
                .get(i)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .map(|a| a.values().to_vec())
                .ok_or_else(|| {
                    EngineError::Internal(format!(
                        "session window snapshot: column {i} is not the sessions' start or end"
                    ))
                })
        };
        Ok(Sessions {
            keys: batch.columns()[..num_keys.min(batch.num_columns())].to_vec(),
            starts: times(num_keys)?,
            lasts: times(num_keys + 1)?,
            states: batch.columns()[(num_keys + 2).min(batch.num_columns())..].to_vec(),
        })
    }
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
        let widths = fns.state_widths()?;
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
            widths,
            converter,
            input: input.clone(),
            buffer: Vec::new(),
            open: None,
            next_close: Timestamp::MAX,
            watermark: TS_MIN,
            schema,
            late,
        })
    }

    /// Sorts the buffered rows by (key, time), cuts them into sessions and
    /// pre-aggregates each; `None` when nothing is buffered.
    fn fold_buffer(&mut self) -> Result<Option<Sessions>, EngineError> {
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let all = concat_batches(&self.input, &self.buffer)?;
        self.buffer.clear();
        let ts = millis(&all, self.time_col)?;
        let keys: Vec<ArrayRef> = self
            .key_cols
            .iter()
            .map(|&c| all.column(c).clone())
            .collect();
        let time: ArrayRef = Arc::new(Int64Array::from(ts.values().to_vec()));
        let order = self.sort(&keys, &time)?;
        let order_v = order.values();
        let rows = self.key_rows(&keys)?;

        let mut firsts: Vec<u32> = Vec::new();
        let (mut starts, mut lasts) = (Vec::new(), Vec::new());
        let mut gids = Vec::with_capacity(order_v.len());
        for &row in order_v {
            let r = row as usize;
            let t = ts.value(r);
            let joins = match (firsts.last(), lasts.last()) {
                (Some(&first), Some(&last)) => {
                    t - last <= self.gap && same_key(&rows, first as usize, r)
                }
                _ => false,
            };
            if joins {
                if let Some(l) = lasts.last_mut() {
                    *l = t;
                }
            } else {
                firsts.push(row);
                starts.push(t);
                lasts.push(t);
            }
            gids.push(firsts.len() - 1);
        }
        let inputs = self
            .fns
            .evaluate_inputs(&all)
            .map_err(|f| self.errors.fail(&f))?;
        let mut accs = self.fns.accumulators()?;
        update(&mut accs, &inputs, Some(&order), &gids, firsts.len())?;
        let states = take_states(&mut accs)?;
        let firsts = UInt32Array::from(firsts);
        let keys = keys
            .iter()
            .map(|k| take(k.as_ref(), &firsts, None))
            .collect::<Result<_, _>>()?;
        Ok(Some(Sessions {
            keys,
            starts,
            lasts,
            states,
        }))
    }

    /// Merges touching sessions of the same key; emits those the watermark
    /// has closed and keeps the others open.
    fn merge(
        &mut self,
        sessions: Sessions,
        watermark: Timestamp,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        let start_col: ArrayRef = Arc::new(Int64Array::from(sessions.starts.clone()));
        let order = self.sort(&sessions.keys, &start_col)?;
        let rows = self.key_rows(&sessions.keys)?;

        // Merged sessions as (first member, start, last), and each member's session.
        let mut merged: Vec<(usize, i64, i64)> = Vec::new();
        let mut member_of = vec![0usize; sessions.len()];
        for &i in order.values() {
            let i = i as usize;
            let (start, last) = (sessions.starts[i], sessions.lasts[i]);
            match merged.last_mut() {
                Some(m) if start - m.2 <= self.gap && same_key(&rows, m.0, i) => {
                    m.2 = m.2.max(last);
                }
                _ => merged.push((i, start, last)),
            }
            member_of[i] = merged.len() - 1;
        }
        // Nothing merged and nothing closed: the sessions stay as they are.
        let closes = |m: &(usize, i64, i64)| m.2.saturating_add(self.gap) - 1 <= watermark;
        if merged.len() == sessions.len() && !merged.iter().any(closes) {
            self.next_close = sessions
                .lasts
                .iter()
                .map(|l| l.saturating_add(self.gap))
                .min()
                .unwrap_or(Timestamp::MAX);
            self.open = Some(sessions);
            return Ok(());
        }

        // Number closed and open sessions apart; route every member to its session.
        let mut slot = Vec::with_capacity(merged.len());
        let (mut closed, mut open) = (Group::default(), Group::default());
        for m in &merged {
            if closes(m) {
                slot.push((true, closed.firsts.len()));
                closed.push(m);
            } else {
                slot.push((false, open.firsts.len()));
                open.push(m);
            }
        }
        for (i, &m) in member_of.iter().enumerate() {
            let (is_closed, gid) = slot[m];
            let g = if is_closed { &mut closed } else { &mut open };
            g.rows.push(i as u32);
            g.gids.push(gid);
        }

        self.next_close = open
            .lasts
            .iter()
            .map(|l| l.saturating_add(self.gap))
            .min()
            .unwrap_or(Timestamp::MAX);
        if !open.firsts.is_empty() {
            let mut accs = self.merged(&sessions.states, &open)?;
            let states = take_states(&mut accs)?;
            let firsts = UInt32Array::from(std::mem::take(&mut open.firsts));
            self.open = Some(sessions.take(&firsts, open.starts, open.lasts, states)?);
        }
        if !closed.firsts.is_empty() {
            let mut accs = self.merged(&sessions.states, &closed)?;
            let values = evaluate(&mut accs)?;
            let firsts = UInt32Array::from(std::mem::take(&mut closed.firsts));
            let keys = sessions
                .keys
                .iter()
                .map(|k| take(k.as_ref(), &firsts, None))
                .collect::<Result<Vec<_>, _>>()?;
            let ends = closed
                .lasts
                .iter()
                .map(|l| l.saturating_add(self.gap))
                .collect();
            out.emit(assemble(
                &self.schema,
                &self.layout,
                keys,
                closed.starts,
                ends,
                values,
            )?);
        }
        Ok(())
    }

    /// Fresh accumulators holding `group`'s members' partial states merged per session.
    fn merged(
        &self,
        states: &[ArrayRef],
        group: &Group,
    ) -> Result<Vec<Box<dyn GroupsAccumulator>>, EngineError> {
        let rows = UInt32Array::from(group.rows.clone());
        let mut accs = self.fns.accumulators()?;
        let mut at = 0;
        for (acc, &width) in accs.iter_mut().zip(&self.widths) {
            let cols = states
                .get(at..at + width)
                .ok_or_else(|| {
                    EngineError::Internal(
                        "session window: fewer state columns than aggregates".into(),
                    )
                })?
                .iter()
                .map(|c| take(c.as_ref(), &rows, None))
                .collect::<Result<Vec<_>, _>>()?;
            acc.merge_batch(&cols, &group.gids, group.firsts.len())
                .map_err(|e| EngineError::Internal(format!("session window: {e}")))?;
            at += width;
        }
        Ok(accs)
    }

    /// Row order by the keys, then `then`.
    fn sort(&self, keys: &[ArrayRef], then: &ArrayRef) -> Result<UInt32Array, EngineError> {
        let mut sort: Vec<SortColumn> = keys
            .iter()
            .map(|k| SortColumn {
                values: k.clone(),
                options: None,
            })
            .collect();
        sort.push(SortColumn {
            values: then.clone(),
            options: None,
        });
        Ok(lexsort_to_indices(&sort, None)?)
    }

    fn key_rows(&self, keys: &[ArrayRef]) -> Result<Option<arrow::row::Rows>, EngineError> {
        if self.key_cols.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.converter.convert_columns(keys)?))
    }
}

/// Closed or open merged sessions: their first member, start and last event
/// time, and which member rows go to which of them.
#[derive(Default)]
struct Group {
    firsts: Vec<u32>,
    starts: Vec<i64>,
    lasts: Vec<i64>,
    rows: Vec<u32>,
    gids: Vec<usize>,
}

impl Group {
    fn push(&mut self, m: &(usize, i64, i64)) {
        self.firsts.push(m.0 as u32);
        self.starts.push(m.1);
        self.lasts.push(m.2);
    }
}

/// Whether rows `a` and `b` have the same key (always, without keys).
fn same_key(rows: &Option<arrow::row::Rows>, a: usize, b: usize) -> bool {
    rows.as_ref().is_none_or(|rs| rs.row(a) == rs.row(b))
}

/// Every group's partial state, aggregate after aggregate.
fn take_states(accs: &mut [Box<dyn GroupsAccumulator>]) -> Result<Vec<ArrayRef>, EngineError> {
    let mut cols = Vec::new();
    for acc in accs {
        cols.extend(
            acc.state(EmitTo::All)
                .map_err(|e| EngineError::Internal(format!("session window: {e}")))?,
        );
    }
    Ok(cols)
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
            self.next_close = self.next_close.min(min.saturating_add(self.gap));
        }
        self.buffer.push(batch);
        Ok(())
    }

    /// Rows not yet folded, and the open sessions' partial states.
    fn snapshot(&mut self, state: &mut StateWriter) -> Result<(), EngineError> {
        for b in &self.buffer {
            state.put("buffer", b.clone());
        }
        if let Some(open) = &self.open {
            state.put("open", open.to_batch()?);
        }
        Ok(())
    }

    fn restore(&mut self, state: &StateReader) -> Result<(), EngineError> {
        for b in state.get("buffer") {
            let ts = millis(b, self.time_col)?;
            if let Some(min) = arrow::compute::min(&ts) {
                self.next_close = self.next_close.min(min.saturating_add(self.gap));
            }
            self.buffer.push(b.clone());
        }
        for b in state.get("open") {
            let restored = Sessions::from_batch(b, self.key_cols.len())?;
            if let Some(min) = restored.lasts.iter().min() {
                self.next_close = self.next_close.min(min.saturating_add(self.gap));
            }
            self.open = Some(match self.open.take() {
                Some(open) => open.append(restored)?,
                None => restored,
            });
        }
        Ok(())
    }

    fn process_watermark(
        &mut self,
        watermark: Timestamp,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        self.watermark = watermark;
        // No session can have closed unless the earliest possible end has passed.
        if self.next_close.saturating_sub(1) > watermark {
            return Ok(());
        }
        let fresh = self.fold_buffer()?;
        let sessions = match (self.open.take(), fresh) {
            (Some(open), Some(fresh)) => open.append(fresh)?,
            (open, fresh) => match open.or(fresh) {
                Some(s) => s,
                None => {
                    self.next_close = Timestamp::MAX;
                    return Ok(());
                }
            },
        };
        self.merge(sessions, watermark, out)
    }
}
