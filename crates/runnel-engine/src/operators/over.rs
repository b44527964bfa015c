//! OVER aggregates in event time (Flink's `OverAggregate`): rows wait per partition
//! until the watermark passes them, then go out in time order, each with its
//! aggregates over the frame that ends at it — the last n+1 rows (`ROWS n PRECEDING`),
//! the rows of the last interval (`RANGE … PRECEDING`, rows of equal time are peers and
//! share a result) or every row so far (`UNBOUNDED PRECEDING`). The output is
//! append-only. Rows behind the watermark are late: dropped and counted.
//!
//! Accumulators slide: a row enters when it is emitted and is retracted when it leaves
//! the frame (DataFusion's sliding accumulators, which expect exactly this order). An
//! aggregate that cannot retract (MEDIAN, APPROX_PERCENTILE_CONT, APPROX_DISTINCT) is
//! rebuilt from the frame's rows when one leaves: slower, but any aggregate works.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
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

/// A row: its time, its columns (row format) and each aggregate's argument values.
#[derive(Debug, Clone)]
struct Held {
    time: Timestamp,
    row: Box<[u8]>,
    args: Vec<Vec<ScalarValue>>,
}

#[derive(Default)]
struct Partition {
    /// Rows not yet emitted, in arrival order.
    pending: Vec<Held>,
    /// Emitted rows still in the frame (bounded frames), oldest first.
    frame: VecDeque<Held>,
    accs: Vec<Box<dyn Accumulator>>,
    /// When a row of it last arrived (wall clock, for the state TTL).
    touched_ms: i64,
}

/// The OVER operator.
pub struct Over {
    partition: Vec<usize>,
    time_col: usize,
    frame: OverFrame,
    aggs: Vec<Arc<AggregateFunctionExpr>>,
    fns: AggFns,
    width: usize,
    rows: RowConverter,
    keys: Option<RowConverter>,
    state: HashMap<Box<[u8]>, Partition>,
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
        let rows = rows::row_codec(input, width)?;
        let keys = rows::codec(input, &spec.partition)?;
        let fields: Vec<Field> = planned
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        Ok(Self {
            errors,
            partition: spec.partition.clone(),
            time_col: spec.time_col,
            frame: spec.frame,
            aggs: spec.aggs.clone(),
            fns: AggFns::new(&spec.aggs),
            width,
            rows,
            keys,
            state: HashMap::new(),
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
        self.state
            .retain(|_, p| !p.pending.is_empty() || p.touched_ms + ttl > now);
    }

    /// Partitions in state (tests).
    #[cfg(test)]
    pub(crate) fn partitions(&self) -> usize {
        self.state.len()
    }

    fn accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>, EngineError> {
        self.aggs
            .iter()
            .map(|a| match self.frame {
                OverFrame::Unbounded => a.create_accumulator().map_err(internal),
                // An aggregate that cannot retract gets a plain accumulator, rebuilt
                // from the frame as rows leave it.
                _ => fresh(a),
            })
            .collect()
    }

    /// Each row of `batch` as (partition key, held row).
    fn hold(&self, batch: RecordBatch) -> Result<Vec<(Key, Held)>, EngineError> {
        let Some((inputs, batch)) = self.errors.guard(batch, |b| self.fns.evaluate_inputs(b))?
        else {
            return Ok(Vec::new());
        };
        let batch = &batch;
        let n = batch.num_rows();
        let all: Vec<ArrayRef> = batch.columns()[..self.width].to_vec();
        let rows = self.rows.convert_columns(&all).map_err(internal)?;
        let keys = rows::encode(self.keys.as_ref(), batch, &self.partition)?;
        let times = millis(batch, self.time_col)?;
        let mut out = Vec::with_capacity(n);
        for (i, key) in keys.into_iter().enumerate() {
            let args = inputs
                .iter()
                .map(|cols| {
                    cols.iter()
                        .map(|c| ScalarValue::try_from_array(c, i).map_err(internal))
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect::<Result<Vec<_>, _>>()?;
            let time = if times.is_valid(i) {
                times.value(i)
            } else {
                TS_MIN
            };
            out.push((
                key,
                Held {
                    time,
                    row: rows.row(i).as_ref().into(),
                    args,
                },
            ));
        }
        Ok(out)
    }

    /// Emits, per partition, the pending rows the watermark passed.
    fn fire(&mut self, watermark: Timestamp, out: &mut Output) -> Result<(), EngineError> {
        let mut rows: Vec<Box<[u8]>> = Vec::new();
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.aggs.len()];
        let frame = self.frame;
        // Partitions with rows to emit, in key order (the output must not depend on
        // hashing); the others have nothing the watermark could release.
        let mut keys: Vec<Box<[u8]>> = self
            .state
            .iter()
            .filter(|(_, p)| p.pending.iter().any(|h| h.time <= watermark))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        for key in keys {
            let needs_accs = self.state.get(&key).is_some_and(|p| p.accs.is_empty());
            let new_accs = if needs_accs {
                Some(self.accumulators()?)
            } else {
                None
            };
            let Some(p) = self.state.get_mut(&key) else {
                continue;
            };
            if let Some(a) = new_accs {
                p.accs = a;
            }
            let (mut ready, waiting): (Vec<Held>, Vec<Held>) = std::mem::take(&mut p.pending)
                .into_iter()
                .partition(|h| h.time <= watermark);
            p.pending = waiting;
            ready.sort_by_key(|h| h.time);
            let mut i = 0;
            while i < ready.len() {
                // Peers: RANGE frames treat rows of equal time as one step.
                let mut j = i + 1;
                if !matches!(frame, OverFrame::Rows(_)) {
                    while j < ready.len() && ready[j].time == ready[i].time {
                        j += 1;
                    }
                }
                let now = ready[i].time;
                for h in &ready[i..j] {
                    for (acc, args) in p.accs.iter_mut().zip(&h.args) {
                        acc.update_batch(&scalars(args)?).map_err(internal)?;
                    }
                    if frame != OverFrame::Unbounded {
                        p.frame.push_back(h.clone());
                    }
                }
                // Rows that left the frame.
                let mut left = false;
                loop {
                    let leaves = match (frame, p.frame.front()) {
                        (OverFrame::Rows(n), Some(_)) => p.frame.len() as u64 > n + 1,
                        (OverFrame::Range(ms), Some(f)) => f.time < now.saturating_sub(ms),
                        _ => false,
                    };
                    if !leaves {
                        break;
                    }
                    let Some(old) = p.frame.pop_front() else {
                        break;
                    };
                    left = true;
                    for (acc, args) in p.accs.iter_mut().zip(&old.args) {
                        if acc.supports_retract_batch() {
                            acc.retract_batch(&scalars(args)?).map_err(internal)?;
                        }
                    }
                }
                // An aggregate that cannot retract (MEDIAN, APPROX_PERCENTILE_CONT, …)
                // starts over from the rows still in the frame.
                if left {
                    for (k, acc) in p.accs.iter_mut().enumerate() {
                        if acc.supports_retract_batch() {
                            continue;
                        }
                        *acc = fresh(&self.aggs[k])?;
                        for h in &p.frame {
                            acc.update_batch(&scalars(&h.args[k])?).map_err(internal)?;
                        }
                    }
                }
                let result = p
                    .accs
                    .iter_mut()
                    .map(|a| a.evaluate().map_err(internal))
                    .collect::<Result<Vec<_>, _>>()?;
                for h in &ready[i..j] {
                    rows.push(h.row.clone());
                    for (col, v) in values.iter_mut().zip(&result) {
                        col.push(v.clone());
                    }
                }
                i = j;
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut columns = rows::decode(&self.rows, rows.iter().map(|r| &**r))?;
        for col in values {
            columns.push(ScalarValue::iter_to_array(col).map_err(internal)?);
        }
        let columns = super::rows::conform(columns, &self.schema)?;
        out.emit(RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(internal)?);
        Ok(())
    }
}

/// A sliding accumulator of `agg`, or a plain one for an aggregate that has none.
fn fresh(agg: &AggregateFunctionExpr) -> Result<Box<dyn Accumulator>, EngineError> {
    agg.create_sliding_accumulator()
        .or_else(|_| agg.create_accumulator())
        .map_err(internal)
}

/// One-row argument arrays.
fn scalars(args: &[ScalarValue]) -> Result<Vec<ArrayRef>, EngineError> {
    args.iter()
        .map(|v| v.to_array().map_err(internal))
        .collect()
}

impl Operator for Over {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        _out: &mut Output,
    ) -> Result<(), EngineError> {
        let now = if self.ttl_ms.is_some() { now_ms() } else { 0 };
        for (key, held) in self.hold(batch)? {
            if held.time == TS_MIN || held.time <= self.watermark {
                self.late.add(1);
                continue;
            }
            let p = self.state.entry(key).or_default();
            p.touched_ms = now;
            p.pending.push(held);
        }
        Ok(())
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

    /// Pending and in-frame rows (`frame` column true), and for unbounded frames each
    /// partition's accumulator state.
    fn snapshot(&mut self, state: &mut StateWriter) -> Result<(), EngineError> {
        let mut rows: Vec<&[u8]> = Vec::new();
        let mut in_frame = Vec::new();
        for p in self.state.values() {
            for h in &p.frame {
                rows.push(&h.row);
                in_frame.push(true);
            }
            for h in &p.pending {
                rows.push(&h.row);
                in_frame.push(false);
            }
        }
        if !rows.is_empty() {
            let mut cols = rows::decode(&self.rows, rows.iter().copied())?;
            cols.push(Arc::new(BooleanArray::from(in_frame)));
            state.put("rows", state_batch(cols)?);
        }
        if self.frame == OverFrame::Unbounded {
            let mut keys = Vec::new();
            let mut states: Vec<Vec<ScalarValue>> = Vec::new();
            for (k, p) in self.state.iter_mut() {
                if p.accs.is_empty() {
                    continue;
                }
                keys.push(k.clone());
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
                let mut cols: Vec<ArrayRef> = vec![Arc::new(
                    arrow::array::BinaryArray::from_iter_values(keys.iter()),
                )];
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
            let flags = batch
                .column(self.width)
                .as_any()
                .downcast_ref::<BooleanArray>()
                .cloned()
                .ok_or_else(|| internal("OVER snapshot flag is not BOOLEAN"))?;
            for (i, (key, held)) in self.hold(data.clone())?.into_iter().enumerate() {
                let needs = self.state.get(&key).is_none_or(|p| p.accs.is_empty());
                let accs = if needs {
                    Some(self.accumulators()?)
                } else {
                    None
                };
                let p = self.state.entry(key).or_default();
                p.touched_ms = now_ms();
                if let Some(a) = accs {
                    p.accs = a;
                }
                if flags.value(i) {
                    // Back into the frame and the sliding accumulators.
                    for (acc, args) in p.accs.iter_mut().zip(&held.args) {
                        acc.update_batch(&scalars(args)?).map_err(internal)?;
                    }
                    p.frame.push_back(held);
                } else {
                    p.pending.push(held);
                }
            }
        }
        for batch in state.get("accumulators") {
            let keys = batch
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::BinaryArray>()
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
                self.state.entry(Box::from(keys.value(r))).or_default().accs = accs;
            }
        }
        Ok(())
    }
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("OVER aggregate: {e}"))
}
