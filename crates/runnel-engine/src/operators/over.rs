//! OVER aggregates in event time (Flink's `OverAggregate`): rows wait per partition
//! until the watermark passes them, then go out in time order, each with its
//! aggregates over the frame that ends at it — the last n+1 rows (`ROWS n PRECEDING`),
//! the rows of the last interval (`RANGE … PRECEDING`, rows of equal time are peers and
//! share a result) or every row so far (`UNBOUNDED PRECEDING`). The output is
//! append-only. Rows behind the watermark are late: dropped and counted.
//!
//! The work is columnar: a batch's aggregate arguments are evaluated once when it
//! arrives and the batch is kept (not copied row by row) until its last row is emitted.
//! When the watermark moves, the released rows of every partition are gathered into one
//! batch in output order, and the accumulators read one-row slices of it. Accumulators
//! slide: a row enters when it is emitted and is retracted when it leaves the frame
//! (DataFusion's sliding accumulators, which expect exactly this order); a bounded
//! frame keeps only its rows' argument columns. An aggregate that cannot retract
//! (MEDIAN, APPROX_PERCENTILE_CONT, APPROX_DISTINCT) is rebuilt from the frame's rows
//! when one leaves: slower, but any aggregate works.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Int64Array, MutableArrayData, RecordBatch,
    UInt32Array, make_array,
};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::row::RowConverter;
use datafusion_common::ScalarValue;
use datafusion_expr::Accumulator;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;
use hashbrown::HashMap;
use runnel_common::Timestamp;
use runnel_common::metrics::Counter;
use runnel_common::time::{TS_MIN, now_ms};
use runnel_sql::{OverFrame, OverSpec};

use super::aggregate::{AggFns, state_batch};
use super::rows;
use super::window_assign::millis;
use crate::error::EngineError;
use crate::eval::RowErrors;
use crate::operator::{Operator, Output, StateReader, StateWriter};

/// A partition key in Arrow's row format.
type Key = Box<[u8]>;

/// A row waiting for the watermark: its time and where it is in the [`Store`].
#[derive(Debug, Clone, Copy)]
struct Waiting {
    time: Timestamp,
    batch: u64,
    row: u32,
}

/// The batches that hold waiting rows — the input columns, then every aggregate's
/// argument columns — each freed when its last waiting row has been emitted.
#[derive(Default)]
struct Store {
    /// Id of the front batch.
    base: u64,
    /// Columns, and how many of the batch's rows still wait.
    batches: VecDeque<(Vec<ArrayRef>, usize)>,
}

impl Store {
    fn push(&mut self, columns: Vec<ArrayRef>, waiting: usize) -> u64 {
        let id = self.base + self.batches.len() as u64;
        self.batches.push_back((columns, waiting));
        id
    }

    /// A row of batch `id` left; batches at the front without waiting rows go.
    fn release(&mut self, id: u64) {
        if let Some(b) = self.batches.get_mut((id - self.base) as usize) {
            b.1 = b.1.saturating_sub(1);
        }
    }

    fn trim(&mut self) {
        while matches!(self.batches.front(), Some((_, 0))) {
            self.batches.pop_front();
            self.base += 1;
        }
    }

    /// The first `width` columns (all when `None`) of `rows`, in that order.
    fn gather(
        &self,
        rows: &[(u64, u32)],
        width: Option<usize>,
    ) -> Result<Vec<ArrayRef>, EngineError> {
        let Some((first, _)) = self.batches.front() else {
            return Err(internal("rows wait in a batch that is gone"));
        };
        let at: Vec<(usize, usize)> = rows
            .iter()
            .map(|&(b, r)| ((b - self.base) as usize, r as usize))
            .collect();
        (0..width.unwrap_or(first.len()))
            .map(|c| {
                let arrays: Vec<&dyn Array> = self
                    .batches
                    .iter()
                    .map(|(cols, _)| cols[c].as_ref())
                    .collect();
                arrow::compute::interleave(&arrays, &at).map_err(internal)
            })
            .collect()
    }
}

struct Partition {
    key: Key,
    /// Rows not yet emitted, in arrival order.
    waiting: Vec<Waiting>,
    /// Times of the emitted rows still in the frame (bounded frames), oldest first.
    frame_times: VecDeque<Timestamp>,
    /// Their argument columns, one row each (empty: no columns yet).
    frame_args: Vec<ArrayRef>,
    accs: Vec<Box<dyn Accumulator>>,
    /// When a row of it last arrived (wall clock, for the state TTL).
    touched_ms: i64,
    /// Listed in [`Over::dirty`].
    dirty: bool,
}

/// The OVER operator.
pub struct Over {
    partition: Vec<usize>,
    time_col: usize,
    frame: OverFrame,
    aggs: Vec<Arc<AggregateFunctionExpr>>,
    fns: AggFns,
    /// Argument columns per aggregate (arguments, then ORDER BY values).
    arg_widths: Vec<usize>,
    width: usize,
    keys: Option<RowConverter>,
    /// Partitions by key; slots of `parts`.
    index: HashMap<Key, usize>,
    parts: Vec<Option<Partition>>,
    free: Vec<usize>,
    /// Partitions with waiting rows.
    dirty: Vec<usize>,
    store: Store,
    watermark: Timestamp,
    schema: SchemaRef,
    late: Counter,
    /// Rows whose expressions fail.
    errors: RowErrors,
    /// `table.exec.state.ttl`.
    ttl_ms: Option<i64>,
    last_sweep: i64,
}

impl Over {
    /// Validates the spec against the input schema.
    pub fn try_new(
        spec: &OverSpec,
        input: &SchemaRef,
        planned: &SchemaRef,
        late: Counter,
        errors: RowErrors,
    ) -> Result<Self, EngineError> {
        let width = input.fields().len();
        let keys = rows::codec(input, &spec.partition)?;
        let fields: Vec<Field> = planned
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let arg_widths = spec
            .aggs
            .iter()
            .map(|a| a.expressions().len() + a.order_bys().len())
            .collect();
        Ok(Self {
            errors,
            partition: spec.partition.clone(),
            time_col: spec.time_col,
            frame: spec.frame,
            aggs: spec.aggs.clone(),
            fns: AggFns::new(&spec.aggs),
            arg_widths,
            width,
            keys,
            index: HashMap::new(),
            parts: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            store: Store::default(),
            watermark: TS_MIN,
            schema: Arc::new(Schema::new(fields)),
            late,
            ttl_ms: spec.state_ttl_ms,
            last_sweep: now_ms(),
        })
    }

    /// Forgets partitions untouched for the state TTL (their frames and accumulators;
    /// a later row of the key starts afresh, as in Flink). Rows still waiting for the
    /// watermark keep their partition.
    fn sweep(&mut self) {
        let Some(ttl) = self.ttl_ms else { return };
        let now = now_ms();
        if now - self.last_sweep < ttl / 2 {
            return;
        }
        self.last_sweep = now;
        let (parts, free) = (&mut self.parts, &mut self.free);
        self.index.retain(|_, &mut slot| {
            let keep = parts[slot]
                .as_ref()
                .is_some_and(|p| !p.waiting.is_empty() || p.touched_ms + ttl > now);
            if !keep {
                parts[slot] = None;
                free.push(slot);
            }
            keep
        });
    }

    /// Partitions in state (tests).
    #[cfg(test)]
    pub(crate) fn partitions(&self) -> usize {
        self.index.len()
    }

    /// The slot of `key`'s partition, made when new.
    fn slot(&mut self, key: &[u8]) -> usize {
        if let Some(&slot) = self.index.get(key) {
            return slot;
        }
        let p = Partition {
            key: key.into(),
            waiting: Vec::new(),
            frame_times: VecDeque::new(),
            frame_args: Vec::new(),
            accs: Vec::new(),
            touched_ms: now_ms(),
            dirty: false,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.parts[s] = Some(p);
                s
            }
            None => {
                self.parts.push(Some(p));
                self.parts.len() - 1
            }
        };
        self.index.insert(key.into(), slot);
        slot
    }

    fn part(&mut self, slot: usize) -> Result<&mut Partition, EngineError> {
        self.parts
            .get_mut(slot)
            .and_then(Option::as_mut)
            .ok_or_else(|| internal("a partition slot is empty"))
    }

    fn accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>, EngineError> {
        accumulators(&self.aggs, self.frame)
    }

    /// Keeps the rows of `batch` (input columns, then `args`) that are not late,
    /// each waiting in its partition.
    fn hold(
        &mut self,
        batch: &RecordBatch,
        args: Vec<ArrayRef>,
        now: i64,
    ) -> Result<(), EngineError> {
        let times = millis(batch, self.time_col)?;
        let keys = match &self.keys {
            Some(codec) => Some(rows::convert(codec, batch, &self.partition)?),
            None => None,
        };
        let mut kept: Vec<(usize, Timestamp, u32)> = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let time = if times.is_valid(i) {
                times.value(i)
            } else {
                TS_MIN
            };
            if time == TS_MIN || time <= self.watermark {
                self.late.add(1);
                continue;
            }
            let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(i).data());
            let slot = self.slot(key);
            kept.push((slot, time, i as u32));
        }
        if kept.is_empty() {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = batch.columns()[..self.width].to_vec();
        columns.extend(args);
        let id = self.store.push(columns, kept.len());
        for (slot, time, row) in kept {
            let p = self.part(slot)?;
            p.waiting.push(Waiting {
                time,
                batch: id,
                row,
            });
            p.touched_ms = now;
            if !p.dirty {
                p.dirty = true;
                self.dirty.push(slot);
            }
        }
        Ok(())
    }

    /// Emits, per partition, the waiting rows the watermark passed.
    fn fire(&mut self, watermark: Timestamp, out: &mut Output) -> Result<(), EngineError> {
        // Partitions with rows to emit, in key order (the output must not depend on
        // hashing); the others have nothing the watermark could release.
        let mut ready: Vec<usize> = Vec::new();
        for &slot in &self.dirty {
            if let Some(p) = self.parts.get(slot).and_then(Option::as_ref)
                && p.waiting.iter().any(|w| w.time <= watermark)
            {
                ready.push(slot);
            }
        }
        if ready.is_empty() {
            return Ok(());
        }
        ready.sort_by(|&a, &b| {
            let key = |s: usize| self.parts[s].as_ref().map(|p| &p.key);
            key(a).cmp(&key(b))
        });
        // Their released rows, in output order: (slot, first, count) into `at`.
        let mut at: Vec<(u64, u32)> = Vec::new();
        let mut times: Vec<Timestamp> = Vec::new();
        let mut spans: Vec<(usize, usize, usize)> = Vec::with_capacity(ready.len());
        for &slot in &ready {
            let p = self.part(slot)?;
            let (mut go, stay): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut p.waiting)
                .into_iter()
                .partition(|w| w.time <= watermark);
            p.waiting = stay;
            go.sort_by_key(|w| w.time);
            spans.push((slot, at.len(), go.len()));
            for w in go {
                at.push((w.batch, w.row));
                times.push(w.time);
            }
        }
        let columns = self.store.gather(&at, None)?;
        for &(b, _) in &at {
            self.store.release(b);
        }
        self.store.trim();
        let (parts, dirty) = (&mut self.parts, &mut self.dirty);
        dirty.retain(|&slot| match parts.get_mut(slot).and_then(Option::as_mut) {
            Some(p) if !p.waiting.is_empty() => true,
            Some(p) => {
                p.dirty = false;
                false
            }
            None => false,
        });

        let args = &columns[self.width..];
        let args_data: Vec<_> = args.iter().map(|a| a.to_data()).collect();
        let mut results: Vec<Vec<ScalarValue>> =
            vec![Vec::with_capacity(at.len()); self.aggs.len()];
        let fire = Fire {
            frame: self.frame,
            aggs: &self.aggs,
            arg_widths: &self.arg_widths,
            args,
            args_data: &args_data,
            times: &times,
        };
        for (slot, first, count) in spans {
            let p = self
                .parts
                .get_mut(slot)
                .and_then(Option::as_mut)
                .ok_or_else(|| internal("a partition slot is empty"))?;
            if p.accs.is_empty() {
                p.accs = accumulators(fire.aggs, fire.frame)?;
            }
            fire.run(p, first, count, &mut results)?;
        }

        let mut columns: Vec<ArrayRef> = columns[..self.width].to_vec();
        for col in results {
            columns.push(ScalarValue::iter_to_array(col).map_err(internal)?);
        }
        let columns = super::rows::conform(columns, &self.schema)?;
        out.emit(RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(internal)?);
        Ok(())
    }

    /// Puts frame rows back: `keys[i]`'s partition gets row `i` of `args`, at `times[i]`
    /// (rows of a key oldest first), and its accumulators see them again.
    fn restore_frames(
        &mut self,
        keys: &[&[u8]],
        times: &[Timestamp],
        args: &[ArrayRef],
    ) -> Result<(), EngineError> {
        let mut by_key: HashMap<&[u8], Vec<u32>> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            by_key.entry(*k).or_default().push(i as u32);
        }
        for (key, rows) in by_key {
            let idx = UInt32Array::from(rows.clone());
            let taken = args
                .iter()
                .map(|a| arrow::compute::take(a, &idx, None).map_err(internal))
                .collect::<Result<Vec<_>, _>>()?;
            let mut accs = self.accumulators()?;
            let mut at = 0;
            for (acc, &w) in accs.iter_mut().zip(&self.arg_widths) {
                acc.update_batch(&taken[at..at + w]).map_err(internal)?;
                at += w;
            }
            let slot = self.slot(key);
            let p = self.part(slot)?;
            p.touched_ms = now_ms();
            p.accs = accs;
            p.frame_times = rows.iter().map(|&r| times[r as usize]).collect();
            p.frame_args = taken;
        }
        Ok(())
    }
}

/// What one firing shares across partitions: the released rows' argument columns
/// (in output order) and times.
struct Fire<'a> {
    frame: OverFrame,
    aggs: &'a [Arc<AggregateFunctionExpr>],
    arg_widths: &'a [usize],
    args: &'a [ArrayRef],
    args_data: &'a [arrow::array::ArrayData],
    times: &'a [Timestamp],
}

impl Fire<'_> {
    /// Emits `count` rows of partition `p`, released rows `first..first + count`: each
    /// row enters the frame, the rows that left it are retracted, and every aggregate's
    /// value is pushed to `results`.
    ///
    /// Frame positions: the partition's `old` earlier rows (`frame_args`) are 0..old,
    /// this firing's are old..old + count; `lo` rows have left.
    fn run(
        &self,
        p: &mut Partition,
        first: usize,
        count: usize,
        results: &mut [Vec<ScalarValue>],
    ) -> Result<(), EngineError> {
        let bounded = self.frame != OverFrame::Unbounded;
        let old = p.frame_times.len();
        let earlier = std::mem::take(&mut p.frame_args);
        let mut lo = 0;
        let mut i = 0;
        while i < count {
            // Peers: RANGE frames treat rows of equal time as one step.
            let mut j = i + 1;
            if !matches!(self.frame, OverFrame::Rows(_)) {
                while j < count && self.times[first + j] == self.times[first + i] {
                    j += 1;
                }
            }
            let now = self.times[first + i];
            let entering = self.slices(&earlier, old, first, old + i, old + j);
            update(&mut p.accs, self.arg_widths, &entering, false)?;
            if bounded {
                p.frame_times.extend(&self.times[first + i..first + j]);
            }
            // Rows that left the frame.
            let mut left = 0;
            loop {
                let leaves = match (self.frame, p.frame_times.front()) {
                    (OverFrame::Rows(n), Some(_)) => p.frame_times.len() as u64 > n + 1,
                    (OverFrame::Range(ms), Some(&t)) => t < now.saturating_sub(ms),
                    _ => false,
                };
                if !leaves {
                    break;
                }
                p.frame_times.pop_front();
                left += 1;
            }
            if left > 0 {
                let gone = self.slices(&earlier, old, first, lo, lo + left);
                update(&mut p.accs, self.arg_widths, &gone, true)?;
                lo += left;
                // An aggregate that cannot retract (MEDIAN, APPROX_PERCENTILE_CONT, …)
                // starts over from the rows still in the frame.
                if p.accs.iter().any(|a| !a.supports_retract_batch()) {
                    let frame = self.slices(&earlier, old, first, lo, old + j);
                    let mut at = 0;
                    for (k, acc) in p.accs.iter_mut().enumerate() {
                        let w = self.arg_widths[k];
                        if !acc.supports_retract_batch() {
                            *acc = fresh(&self.aggs[k])?;
                            for part in &frame {
                                acc.update_batch(&part[at..at + w]).map_err(internal)?;
                            }
                        }
                        at += w;
                    }
                }
            }
            for (col, acc) in results.iter_mut().zip(p.accs.iter_mut()) {
                let v = acc.evaluate().map_err(internal)?;
                for _ in i + 1..j {
                    col.push(v.clone());
                }
                col.push(v);
            }
            i = j;
        }
        if bounded {
            p.frame_args = self.keep(&earlier, old, first, lo, old + count)?;
        }
        Ok(())
    }

    /// Frame rows `from..to` as argument columns: up to two parts, the earlier rows'
    /// and this firing's.
    fn slices(
        &self,
        earlier: &[ArrayRef],
        old: usize,
        first: usize,
        from: usize,
        to: usize,
    ) -> Vec<Vec<ArrayRef>> {
        let mut parts = Vec::with_capacity(2);
        if from < old {
            let end = to.min(old);
            parts.push(earlier.iter().map(|a| a.slice(from, end - from)).collect());
        }
        if to > old {
            let start = from.max(old);
            parts.push(
                self.args
                    .iter()
                    .map(|a| a.slice(first + start - old, to - start))
                    .collect(),
            );
        }
        parts
    }

    /// A compact copy of frame rows `from..to` (not a slice, which would keep the whole
    /// firing's columns alive).
    fn keep(
        &self,
        earlier: &[ArrayRef],
        old: usize,
        first: usize,
        from: usize,
        to: usize,
    ) -> Result<Vec<ArrayRef>, EngineError> {
        self.args_data
            .iter()
            .enumerate()
            .map(|(c, now)| {
                let before = earlier.get(c).map(|a| a.to_data());
                let mut sources = vec![now];
                if let Some(b) = &before {
                    sources.push(b);
                }
                let mut copy = MutableArrayData::new(sources, false, to - from);
                if from < old && before.is_some() {
                    copy.try_extend(1, from, to.min(old)).map_err(internal)?;
                }
                if to > old {
                    let start = from.max(old);
                    copy.try_extend(0, first + start - old, first + to - old)
                        .map_err(internal)?;
                }
                Ok(make_array(copy.freeze()))
            })
            .collect()
    }
}

/// Adds (or retracts) `parts` of argument columns to each accumulator.
fn update(
    accs: &mut [Box<dyn Accumulator>],
    widths: &[usize],
    parts: &[Vec<ArrayRef>],
    retract: bool,
) -> Result<(), EngineError> {
    let mut at = 0;
    for (acc, &w) in accs.iter_mut().zip(widths) {
        for part in parts {
            let cols = &part[at..at + w];
            if !retract {
                acc.update_batch(cols).map_err(internal)?;
            } else if acc.supports_retract_batch() {
                acc.retract_batch(cols).map_err(internal)?;
            }
        }
        at += w;
    }
    Ok(())
}

fn accumulators(
    aggs: &[Arc<AggregateFunctionExpr>],
    frame: OverFrame,
) -> Result<Vec<Box<dyn Accumulator>>, EngineError> {
    aggs.iter()
        .map(|a| match frame {
            OverFrame::Unbounded => a.create_accumulator().map_err(internal),
            // An aggregate that cannot retract gets a plain accumulator, rebuilt from
            // the frame as rows leave it.
            _ => fresh(a),
        })
        .collect()
}

/// A sliding accumulator of `agg`, or a plain one for an aggregate that has none.
fn fresh(agg: &AggregateFunctionExpr) -> Result<Box<dyn Accumulator>, EngineError> {
    agg.create_sliding_accumulator()
        .or_else(|_| agg.create_accumulator())
        .map_err(internal)
}

impl Operator for Over {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        _out: &mut Output,
    ) -> Result<(), EngineError> {
        let now = if self.ttl_ms.is_some() { now_ms() } else { 0 };
        let Some((inputs, batch)) = self.errors.guard(batch, |b| self.fns.evaluate_inputs(b))?
        else {
            return Ok(());
        };
        self.hold(&batch, inputs.into_iter().flatten().collect(), now)
    }

    fn process_watermark(
        &mut self,
        watermark: Timestamp,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        self.watermark = watermark;
        self.fire(watermark, out)?;
        self.sweep();
        Ok(())
    }

    /// Waiting rows (`rows`: the input columns and a false flag); for bounded frames
    /// each partition's frame rows (`frame`: key, time, argument columns); for
    /// unbounded frames each partition's accumulator state (`accumulators`).
    fn snapshot(&mut self, state: &mut StateWriter) -> Result<(), EngineError> {
        let mut waiting: Vec<(u64, u32)> = Vec::new();
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut times: Vec<Timestamp> = Vec::new();
        let mut frames: Vec<&[ArrayRef]> = Vec::new();
        for p in self.parts.iter().flatten() {
            waiting.extend(p.waiting.iter().map(|w| (w.batch, w.row)));
            if !p.frame_times.is_empty() {
                keys.extend(std::iter::repeat_n(&*p.key, p.frame_times.len()));
                times.extend(&p.frame_times);
                frames.push(&p.frame_args);
            }
        }
        if !waiting.is_empty() {
            let mut cols = self.store.gather(&waiting, Some(self.width))?;
            cols.push(Arc::new(BooleanArray::from(vec![false; waiting.len()])));
            state.put("rows", state_batch(cols)?);
        }
        if !keys.is_empty() {
            let mut cols: Vec<ArrayRef> = vec![
                Arc::new(BinaryArray::from_iter_values(keys)),
                Arc::new(Int64Array::from(times)),
            ];
            let n_args: usize = self.arg_widths.iter().sum();
            for c in 0..n_args {
                let parts: Vec<&dyn Array> = frames.iter().map(|f| f[c].as_ref()).collect();
                cols.push(arrow::compute::concat(&parts).map_err(internal)?);
            }
            state.put("frame", state_batch(cols)?);
        }
        if self.frame == OverFrame::Unbounded {
            let mut keys = Vec::new();
            let mut states: Vec<Vec<ScalarValue>> = Vec::new();
            for p in self.parts.iter_mut().flatten() {
                if p.accs.is_empty() {
                    continue;
                }
                keys.push(p.key.clone());
                let mut all = Vec::new();
                for acc in p.accs.iter_mut() {
                    all.extend(acc.state().map_err(internal)?);
                }
                if states.is_empty() {
                    states = vec![Vec::new(); all.len()];
                }
                for (col, v) in states.iter_mut().zip(all) {
                    col.push(v);
                }
            }
            if !keys.is_empty() {
                let mut cols: Vec<ArrayRef> =
                    vec![Arc::new(BinaryArray::from_iter_values(keys.iter()))];
                for col in states {
                    cols.push(ScalarValue::iter_to_array(col).map_err(internal)?);
                }
                state.put("accumulators", state_batch(cols)?);
            }
        }
        Ok(())
    }

    fn restore(&mut self, state: &StateReader) -> Result<(), EngineError> {
        let data_schema = Arc::new(Schema::new(self.schema.fields()[..self.width].to_vec()));
        for batch in state.get("rows") {
            if batch.num_columns() != self.width + 1 {
                return Err(internal("OVER snapshot has the wrong number of columns"));
            }
            let data = RecordBatch::try_new(
                Arc::clone(&data_schema),
                batch.columns()[..self.width].to_vec(),
            )
            .map_err(internal)?;
            let in_frame = batch
                .column(self.width)
                .as_any()
                .downcast_ref::<BooleanArray>()
                .cloned()
                .ok_or_else(|| internal("OVER snapshot flag is not BOOLEAN"))?;
            let args: Vec<ArrayRef> = self
                .fns
                .evaluate_inputs(&data)
                .map_err(|f| internal(format!("restoring rows: {}: {}", f.expr, f.message)))?
                .into_iter()
                .flatten()
                .collect();
            // Rows flagged in-frame come from snapshots taken before frames were kept
            // as argument columns.
            let (framed, waiting): (Vec<u32>, Vec<u32>) =
                (0..data.num_rows() as u32).partition(|&i| in_frame.value(i as usize));
            // The rows at `idx`, with their argument columns.
            let pick = |idx: Vec<u32>| -> Result<(RecordBatch, Vec<ArrayRef>), EngineError> {
                let idx = UInt32Array::from(idx);
                let part = arrow::compute::take_record_batch(&data, &idx).map_err(internal)?;
                let args = args
                    .iter()
                    .map(|a| arrow::compute::take(a, &idx, None).map_err(internal))
                    .collect::<Result<_, _>>()?;
                Ok((part, args))
            };
            if !framed.is_empty() {
                let (part, args) = pick(framed)?;
                let keys = rows::encode(self.keys.as_ref(), &part, &self.partition)?;
                let times = millis(&part, self.time_col)?;
                let keys: Vec<&[u8]> = keys.iter().map(|k| &**k).collect();
                self.restore_frames(&keys, times.values(), &args)?;
            }
            if !waiting.is_empty() {
                let (part, args) = pick(waiting)?;
                self.hold(&part, args, now_ms())?;
            }
        }
        for batch in state.get("frame") {
            let n_args: usize = self.arg_widths.iter().sum();
            if batch.num_columns() != 2 + n_args {
                return Err(internal(
                    "OVER frame snapshot has the wrong number of columns",
                ));
            }
            let keys = batch
                .column(0)
                .as_any()
                .downcast_ref::<BinaryArray>()
                .ok_or_else(|| internal("OVER snapshot keys are not BYTES"))?;
            let times = batch
                .column(1)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| internal("OVER snapshot times are not BIGINT"))?;
            let keys: Vec<&[u8]> = keys.iter().map(|k| k.unwrap_or_default()).collect();
            self.restore_frames(&keys, times.values(), &batch.columns()[2..])?;
        }
        for batch in state.get("accumulators") {
            let keys = batch
                .column(0)
                .as_any()
                .downcast_ref::<BinaryArray>()
                .cloned()
                .ok_or_else(|| internal("OVER snapshot keys are not BYTES"))?;
            for r in 0..batch.num_rows() {
                let mut accs = self.accumulators()?;
                let mut at = 1;
                for acc in accs.iter_mut() {
                    let w = acc.state().map_err(internal)?.len();
                    let one: Vec<ArrayRef> = batch.columns()[at..at + w]
                        .iter()
                        .map(|c| c.slice(r, 1))
                        .collect();
                    acc.merge_batch(&one).map_err(internal)?;
                    at += w;
                }
                let slot = self.slot(keys.value(r));
                self.part(slot)?.accs = accs;
            }
        }
        Ok(())
    }
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("OVER aggregate: {e}"))
}
