//! GROUP BY keys over an unbounded stream (Flink's non-window aggregate): every batch
//! updates the accumulators of the keys it touches and emits, per touched key, the
//! change of its result row — `+I` for a new key, `-U`/`+U` when the value changed,
//! `-D` when retractions emptied it. A key touched by many rows of one mini-batch emits
//! one change: the mini-batch is one input batch, or with `table.exec.mini-batch.*` set,
//! the batches of up to `size` rows or `allow-latency` (touched keys are flushed when
//! either is reached, at the end of input, and carried through checkpoints).
//!
//! Over a changelog input the accumulators retract: DataFusion's sliding accumulators
//! for COUNT, SUM and AVG, [`Multiset`] for MIN, MAX and COUNT(DISTINCT).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::RowConverter;
use datafusion_common::ScalarValue;
use datafusion_expr::Accumulator;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;
use hashbrown::HashMap;
use runnel_common::changelog::{self, RowKind};
use runnel_common::time::now_ms;
use runnel_sql::{GroupAggSpec, MiniBatch};

use super::aggregate::{AggFns, state_batch};
use super::multiset::{Multiset, Pick};
use super::rows;
use crate::error::EngineError;
use crate::eval::RowErrors;
use crate::operator::{Operator, Output, StateReader, StateWriter};

/// A non-window GROUP BY with an updating result.
pub struct GroupAggregate {
    key_cols: Vec<usize>,
    aggs: Vec<Arc<AggregateFunctionExpr>>,
    arg_types: Vec<DataType>,
    fns: AggFns,
    retracting: bool,
    converter: Option<RowConverter>,
    groups: HashMap<Box<[u8]>, Group>,
    schema: SchemaRef,
    ttl_ms: Option<i64>,
    last_sweep: i64,
    /// Rows whose expressions fail.
    errors: RowErrors,
    mini_batch: Option<MiniBatch>,
    /// Keys touched since the last flush, in first-touch order.
    pending: Vec<Box<[u8]>>,
    /// With a mini-batch over DISTINCT aggregates: rows not yet applied, with their
    /// aggregate inputs (`None` after a restore: evaluated again). A key's rows of the
    /// whole mini-batch then reach its accumulators in one call, which pays off where
    /// a call is costly (a distinct set per key); cheap accumulators take each batch
    /// as it comes.
    buffered: Vec<(RecordBatch, Option<Vec<Vec<ArrayRef>>>)>,
    buffer_rows: bool,
    /// Input rows since the last flush, and when the first of them arrived.
    pending_rows: usize,
    pending_since: Option<i64>,
}

struct Group {
    accs: Vec<Box<dyn Accumulator>>,
    /// Rows in the group: inserts minus retractions.
    rows: i64,
    /// The result row last emitted (one value per aggregate), empty before the first.
    emitted: Vec<ScalarValue>,
    /// Processing time of the last change, for the state TTL.
    touched_ms: i64,
    /// Touched since the last flush (listed in `pending`).
    pending: bool,
}

/// The changes one batch produced, assembled into an output batch at the end.
#[derive(Default)]
struct Changes {
    keys: Vec<Box<[u8]>>,
    kinds: Vec<RowKind>,
    values: Vec<Vec<ScalarValue>>,
}

impl Changes {
    fn push(&mut self, key: &[u8], kind: RowKind, values: &[ScalarValue]) {
        self.keys.push(key.into());
        self.kinds.push(kind);
        self.values.push(values.to_vec());
    }
}

impl GroupAggregate {
    /// Validates the spec against the input schema.
    pub fn try_new(
        spec: &GroupAggSpec,
        input: &SchemaRef,
        planned: &SchemaRef,
        errors: RowErrors,
    ) -> Result<Self, EngineError> {
        let converter = rows::codec(input, &spec.key_cols)?;
        let arg_types = spec
            .aggs
            .iter()
            .map(|a| match a.expressions().first() {
                Some(e) => e.data_type(input).map_err(internal),
                None => Ok(DataType::Null),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let fields: Vec<Field> = planned
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        Ok(Self {
            errors,
            key_cols: spec.key_cols.clone(),
            aggs: spec.aggs.clone(),
            arg_types,
            fns: AggFns::new(&spec.aggs),
            retracting: spec.retracting,
            converter,
            groups: HashMap::new(),
            schema: Arc::new(Schema::new(fields)),
            ttl_ms: spec.state_ttl_ms,
            last_sweep: now_ms(),
            mini_batch: spec.mini_batch,
            pending: Vec::new(),
            buffered: Vec::new(),
            buffer_rows: spec.mini_batch.is_some() && spec.aggs.iter().any(|a| a.is_distinct()),
            pending_rows: 0,
            pending_since: None,
        })
    }

    fn accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>, EngineError> {
        self.aggs
            .iter()
            .zip(&self.arg_types)
            .map(|(a, t)| {
                if !self.retracting {
                    return a.create_accumulator().map_err(internal);
                }
                let name = a.fun().name().to_ascii_lowercase();
                let pick = match name.as_str() {
                    "min" => Some(Pick::Min),
                    "max" => Some(Pick::Max),
                    "count" if a.is_distinct() => Some(Pick::CountDistinct),
                    _ => None,
                };
                match pick {
                    Some(p) => Ok(Box::new(Multiset::try_new(p, t).map_err(internal)?) as _),
                    None => a.create_sliding_accumulator().map_err(internal),
                }
            })
            .collect()
    }

    /// The encoded key of every row of `batch`.
    fn keys(&self, batch: &RecordBatch) -> Result<Vec<Box<[u8]>>, EngineError> {
        rows::encode(self.converter.as_ref(), batch, &self.key_cols)
    }

    fn assemble(&self, changes: Changes) -> Result<RecordBatch, EngineError> {
        let mut columns: Vec<ArrayRef> = match &self.converter {
            None => Vec::new(),
            Some(converter) => rows::decode(converter, changes.keys.iter().map(|k| &**k))?,
        };
        for a in 0..self.aggs.len() {
            let values = changes.values.iter().map(|v| v[a].clone());
            columns.push(ScalarValue::iter_to_array(values).map_err(internal)?);
        }
        let columns = super::rows::conform(columns, &self.schema)?;
        changelog::with_kinds(&self.schema, columns, &changes.kinds).map_err(internal)
    }

    fn sweep(&mut self, now: i64) {
        let Some(ttl) = self.ttl_ms else { return };
        if now - self.last_sweep < ttl / 2 {
            return;
        }
        self.last_sweep = now;
        self.groups
            .retain(|_, g| g.pending || g.touched_ms + ttl > now);
    }

    /// Whether the held-back changes are due: always without mini-batches.
    fn due(&self, now: i64) -> bool {
        match self.mini_batch {
            None => true,
            Some(m) => {
                self.pending_rows >= m.size
                    || self
                        .pending_since
                        .is_some_and(|since| now - since >= m.latency_ms)
            }
        }
    }

    /// Feeds `batch` (its aggregate inputs evaluated) to the groups of its keys and
    /// marks them pending.
    fn apply(
        &mut self,
        batch: &RecordBatch,
        inputs: &[Vec<ArrayRef>],
        now: i64,
    ) -> Result<(), EngineError> {
        let ops = changelog::ops(batch).cloned();
        let keys = self.keys(batch)?;
        // Rows per key, in first-seen order: (key, inserted rows, retracted rows).
        let mut order: Vec<(usize, Vec<u32>, Vec<u32>)> = Vec::new();
        let mut seen: HashMap<&[u8], usize> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            let slot = *seen.entry(k.as_ref()).or_insert_with(|| {
                order.push((i, Vec::new(), Vec::new()));
                order.len() - 1
            });
            if changelog::kind_at(ops.as_ref(), i).is_retract() {
                order[slot].2.push(i as u32);
            } else {
                order[slot].1.push(i as u32);
            }
        }
        for (first, ins, ret) in order {
            let key = &keys[first];
            if !self.groups.contains_key(key) {
                if ins.is_empty() {
                    // Retractions of a key this subtask does not hold (expired by TTL).
                    continue;
                }
                let accs = self.accumulators()?;
                self.groups.insert(
                    key.clone(),
                    Group {
                        accs,
                        rows: 0,
                        emitted: Vec::new(),
                        touched_ms: now,
                        pending: false,
                    },
                );
            }
            let Some(group) = self.groups.get_mut(key) else {
                continue;
            };
            group.touched_ms = now;
            for (acc, values) in group.accs.iter_mut().zip(inputs) {
                if !ins.is_empty() {
                    acc.update_batch(&take(values, &ins)?).map_err(internal)?;
                }
                if !ret.is_empty() {
                    acc.retract_batch(&take(values, &ret)?).map_err(internal)?;
                }
            }
            group.rows += ins.len() as i64 - ret.len() as i64;
            if !group.pending {
                group.pending = true;
                self.pending.push(key.clone());
            }
        }
        Ok(())
    }

    /// Applies the rows buffered for the mini-batch.
    fn apply_buffered(&mut self, now: i64) -> Result<(), EngineError> {
        let Some((first, _)) = self.buffered.first() else {
            return Ok(());
        };
        let schema = first.schema();
        let buffered = std::mem::take(&mut self.buffered);
        let all = arrow::compute::concat_batches(&schema, buffered.iter().map(|(b, _)| b))
            .map_err(internal)?;
        let parts: Vec<&Vec<Vec<ArrayRef>>> =
            buffered.iter().filter_map(|(_, i)| i.as_ref()).collect();
        let inputs = match parts.first() {
            Some(first) if parts.len() == buffered.len() => {
                let mut inputs = Vec::with_capacity(first.len());
                for (a, agg) in first.iter().enumerate() {
                    let mut cols = Vec::with_capacity(agg.len());
                    for c in 0..agg.len() {
                        let arrays: Vec<&dyn Array> =
                            parts.iter().map(|p| p[a][c].as_ref()).collect();
                        cols.push(arrow::compute::concat(&arrays).map_err(internal)?);
                    }
                    inputs.push(cols);
                }
                inputs
            }
            _ => self
                .fns
                .evaluate_inputs(&all)
                .map_err(|f| self.errors.fail(&f))?,
        };
        self.apply(&all, &inputs, now)
    }

    /// Emits the change of every key touched since the last flush.
    fn flush(&mut self, out: &mut Output) -> Result<(), EngineError> {
        self.pending_rows = 0;
        self.pending_since = None;
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut changes = Changes::default();
        for key in std::mem::take(&mut self.pending) {
            let Some(group) = self.groups.get_mut(&key) else {
                continue;
            };
            group.pending = false;
            if group.rows <= 0 {
                if !group.emitted.is_empty() {
                    changes.push(&key, RowKind::Delete, &group.emitted);
                }
                self.groups.remove(&key);
                continue;
            }
            let now_values = group
                .accs
                .iter_mut()
                .map(|a| a.evaluate().map_err(internal))
                .collect::<Result<Vec<_>, _>>()?;
            if group.emitted.is_empty() {
                changes.push(&key, RowKind::Insert, &now_values);
            } else if group.emitted != now_values {
                changes.push(&key, RowKind::UpdateBefore, &group.emitted);
                changes.push(&key, RowKind::UpdateAfter, &now_values);
            }
            group.emitted = now_values;
        }
        if !changes.kinds.is_empty() {
            out.emit(self.assemble(changes)?);
        }
        Ok(())
    }
}

fn take(values: &[ArrayRef], rows: &[u32]) -> Result<Vec<ArrayRef>, EngineError> {
    // A run of consecutive rows (often a single one) is a zero-copy slice.
    if let (Some(&first), Some(&last)) = (rows.first(), rows.last())
        && (last - first) as usize + 1 == rows.len()
    {
        let (at, n) = (first as usize, rows.len());
        return Ok(values.iter().map(|v| v.slice(at, n)).collect());
    }
    let idx = UInt32Array::from(rows.to_vec());
    values
        .iter()
        .map(|v| arrow::compute::take(v.as_ref(), &idx, None).map_err(internal))
        .collect()
}

impl Operator for GroupAggregate {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        let now = now_ms();
        let Some((inputs, batch)) = self.errors.guard(batch, |b| self.fns.evaluate_inputs(b))?
        else {
            return Ok(());
        };
        self.pending_rows += batch.num_rows();
        self.pending_since.get_or_insert(now);
        if self.buffer_rows {
            self.buffered.push((batch, Some(inputs)));
        } else {
            self.apply(&batch, &inputs, now)?;
        }
        if self.due(now) {
            self.apply_buffered(now)?;
            self.flush(out)?;
        }
        self.sweep(now);
        Ok(())
    }

    /// Flushes held-back changes at the end of input, or when they are due.
    /// A mini-batch is flushed when its latency has passed, even if no row arrives.
    fn next_timer(&self) -> Option<runnel_common::Timestamp> {
        let m = self.mini_batch?;
        self.pending_since.map(|since| since + m.latency_ms)
    }

    fn on_timer(
        &mut self,
        now: runnel_common::Timestamp,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        if self.due(now) {
            self.apply_buffered(now)?;
            self.flush(out)?;
        }
        Ok(())
    }

    fn process_watermark(
        &mut self,
        watermark: runnel_common::Timestamp,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        if watermark == runnel_common::Timestamp::MAX || self.due(now_ms()) {
            self.apply_buffered(now_ms())?;
            self.flush(out)?;
        }
        Ok(())
    }

    /// One batch of every group: keys, row count, last change, each aggregate's
    /// intermediate state, then the values last emitted.
    fn snapshot(&mut self, state: &mut StateWriter) -> Result<(), EngineError> {
        if self.pending_rows > 0 {
            // How far the current mini-batch is filled, and its rows not yet applied.
            let rows: ArrayRef = Arc::new(Int64Array::from(vec![self.pending_rows as i64]));
            state.put("mini_batch", state_batch(vec![rows])?);
        }
        for (b, _) in &self.buffered {
            state.put("mini_batch_rows", b.clone());
        }
        if self.groups.is_empty() {
            return Ok(());
        }
        let mut keys = Vec::with_capacity(self.groups.len());
        let mut rows = Vec::with_capacity(self.groups.len());
        let mut touched = Vec::with_capacity(self.groups.len());
        let mut pending = Vec::with_capacity(self.groups.len());
        let mut shown = Vec::with_capacity(self.groups.len());
        let mut states: Vec<Vec<Vec<ScalarValue>>> = Vec::new();
        let mut emitted: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.aggs.len()];
        // Held-back keys first, in the order their changes will be emitted.
        let order: Vec<Box<[u8]>> = self
            .pending
            .iter()
            .cloned()
            .chain(
                self.groups
                    .iter()
                    .filter(|(_, g)| !g.pending)
                    .map(|(k, _)| k.clone()),
            )
            .collect();
        for k in order {
            let Some(g) = self.groups.get_mut(&k) else {
                continue;
            };
            keys.push(k.clone());
            rows.push(g.rows);
            touched.push(g.touched_ms);
            pending.push(g.pending);
            shown.push(!g.emitted.is_empty());
            for (a, acc) in g.accs.iter_mut().enumerate() {
                let s = acc.state().map_err(internal)?;
                if states.len() <= a {
                    states.push(vec![Vec::new(); s.len()]);
                }
                for (j, v) in s.into_iter().enumerate() {
                    if let Some(col) = states[a].get_mut(j) {
                        col.push(v);
                    }
                }
                emitted[a].push(g.emitted.get(a).cloned().unwrap_or(ScalarValue::Null));
            }
        }
        let mut cols: Vec<ArrayRef> = match &self.converter {
            None => Vec::new(),
            Some(converter) => rows::decode(converter, keys.iter().map(|k| &**k))?,
        };
        cols.push(Arc::new(Int64Array::from(rows)));
        cols.push(Arc::new(Int64Array::from(touched)));
        for agg in states {
            for col in agg {
                cols.push(ScalarValue::iter_to_array(col).map_err(internal)?);
            }
        }
        for (a, col) in emitted.into_iter().enumerate() {
            let arr = ScalarValue::iter_to_array(col).map_err(internal)?;
            let want = self.schema.field(self.key_cols.len() + a).data_type();
            cols.push(if arr.data_type() == want {
                arr
            } else {
                arrow::compute::cast(&arr, want).map_err(internal)?
            });
        }
        // Keys whose change is still held back by the mini-batch, and whether a
        // result row was emitted yet (a held-back key may have none).
        cols.push(Arc::new(arrow::array::BooleanArray::from(pending)));
        cols.push(Arc::new(arrow::array::BooleanArray::from(shown)));
        state.put("groups", state_batch(cols)?);
        Ok(())
    }

    fn restore(&mut self, state: &StateReader) -> Result<(), EngineError> {
        let widths = self
            .accumulators()?
            .iter_mut()
            .map(|a| a.state().map(|s| s.len()).map_err(internal))
            .collect::<Result<Vec<_>, _>>()?;
        for batch in state.get("mini_batch") {
            if let Some(rows) = batch
                .columns()
                .first()
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .filter(|c| !c.is_empty())
            {
                self.pending_rows = rows.value(0).max(0) as usize;
                self.pending_since = Some(now_ms());
            }
        }
        self.buffered
            .extend(state.get("mini_batch_rows").map(|b| (b.clone(), None)));
        for batch in state.get("groups") {
            let n_keys = self.key_cols.len();
            let cols = batch.columns();
            let expected = n_keys + 2 + widths.iter().sum::<usize>() + self.aggs.len();
            // Snapshots before mini-batches lack the last two columns (nothing was
            // pending, every key had emitted).
            if cols.len() != expected && cols.len() != expected + 2 {
                return Err(EngineError::Internal(format!(
                    "group aggregate snapshot has {} columns, expected {expected}",
                    cols.len()
                )));
            }
            let keys: Vec<Box<[u8]>> = match &self.converter {
                None => vec![Box::from(&[][..]); batch.num_rows()],
                Some(converter) => converter
                    .convert_columns(&cols[..n_keys])
                    .map_err(internal)?
                    .iter()
                    .map(|r| Box::from(r.as_ref()))
                    .collect(),
            };
            let int = |c: &ArrayRef| -> Result<Int64Array, EngineError> {
                c.as_any()
                    .downcast_ref::<Int64Array>()
                    .cloned()
                    .ok_or_else(|| EngineError::Internal("snapshot column is not BIGINT".into()))
            };
            let rows = int(&cols[n_keys])?;
            let touched = int(&cols[n_keys + 1])?;
            let emitted_at = n_keys + 2 + widths.iter().sum::<usize>();
            let flags = |i: usize| {
                cols.get(i)
                    .and_then(|c| c.as_any().downcast_ref::<arrow::array::BooleanArray>())
                    .cloned()
            };
            let (pending, shown) = (flags(expected), flags(expected + 1));
            for (r, key) in keys.into_iter().enumerate() {
                let mut accs = self.accumulators()?;
                let mut at = n_keys + 2;
                for (acc, w) in accs.iter_mut().zip(&widths) {
                    let one: Vec<ArrayRef> =
                        cols[at..at + w].iter().map(|c| c.slice(r, 1)).collect();
                    acc.merge_batch(&one).map_err(internal)?;
                    at += w;
                }
                let never_shown = shown.as_ref().is_some_and(|s| !s.value(r));
                let emitted = (0..self.aggs.len())
                    .filter(|_| !never_shown)
                    .map(|a| ScalarValue::try_from_array(&cols[emitted_at + a], r))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(internal)?;
                let is_pending = pending.as_ref().is_some_and(|p| p.value(r));
                if is_pending {
                    self.pending.push(key.clone());
                }
                self.groups.insert(
                    key,
                    Group {
                        accs,
                        rows: rows.value(r),
                        emitted,
                        touched_ms: touched.value(r),
                        pending: is_pending,
                    },
                );
            }
        }
        Ok(())
    }
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("group aggregate: {e}"))
}
