//! Regular joins of two streams (Flink's "unbounded" join): INNER, LEFT, RIGHT and FULL
//! OUTER on equal keys plus any residual condition, over append-only or changelog
//! inputs, and interval joins (time-bounded, append-only, state freed by watermark).
//!
//! Each side keeps its rows per key, in Arrow's row format, with how many rows of the
//! other side each one matches. A row arriving on one side is joined with the other
//! side's rows of its key that pass the residual condition (evaluated vectorized over
//! all candidate pairs of a batch). Outer sides emit a NULL-padded row while a row has
//! no match and retract it (`-D`) when the first match arrives, as Flink does; a
//! retraction on one side retracts every joined row it produced.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion_physical_expr::PhysicalExpr;
use hashbrown::HashMap;
use runnel_common::Timestamp;
use runnel_common::changelog::{self, RowKind};
use runnel_common::time::{TS_MIN, now_ms};
use runnel_sql::{JoinKind, JoinSpec};

use super::aggregate::state_batch;
use super::window_assign::millis;
use crate::error::EngineError;
use crate::eval::RowErrors;
use crate::operator::{Operator, Output, StateReader, StateWriter};

/// A row in Arrow's row format, shared (cheap to clone) between the state and the output.
type Bytes = Arc<[u8]>;
/// A join key in Arrow's row format.
type Key = Box<[u8]>;
/// A joined output row: left part, right part (`None`: NULL-padded), and its kind.
type JoinedRow = (Option<Bytes>, Option<Bytes>, RowKind);

/// One stored row of a side.
#[derive(Debug, Clone)]
struct Entry {
    row: Bytes,
    /// Rows of the other side it currently joins with.
    matches: u32,
    /// Event time (interval joins) or the processing time it arrived (state TTL).
    time: i64,
}

/// One input side's rows and encodings.
struct Side {
    /// Full-row encoding of the side's columns.
    rows: RowConverter,
    /// Encoding of the join key columns.
    keys: RowConverter,
    key_cols: Vec<usize>,
    width: usize,
    /// Rows without a match are kept NULL-padded in the output.
    outer: bool,
    /// Event-time column (interval joins).
    time_col: Option<usize>,
    /// Interval joins: a row can match the other side's rows until the watermark
    /// passes its time plus this.
    keep_ms: i64,
    state: HashMap<Key, Vec<Entry>>,
    /// Columns nothing downstream reads: NULL in the state and the output.
    unused: Vec<usize>,
}

impl Side {
    /// `batch` with the columns nothing reads replaced by NULL.
    fn blank_unused(&self, batch: RecordBatch) -> Result<RecordBatch, EngineError> {
        if self.unused.is_empty() {
            return Ok(batch);
        }
        let schema = batch.schema();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut cols = batch.columns().to_vec();
        for &c in &self.unused {
            if let (Some(col), Some(field)) = (cols.get_mut(c), fields.get_mut(c)) {
                *col = arrow::array::new_null_array(field.data_type(), batch.num_rows());
                field.set_nullable(true);
            }
        }
        let schema = Schema::new_with_metadata(fields, schema.metadata().clone());
        RecordBatch::try_new(Arc::new(schema), cols).map_err(internal)
    }

    fn try_new(
        schema: &Schema,
        width: usize,
        key_cols: &[usize],
        outer: bool,
    ) -> Result<Self, EngineError> {
        let sort = |cols: &mut dyn Iterator<Item = usize>| -> Result<RowConverter, EngineError> {
            RowConverter::new(
                cols.map(|c| SortField::new(schema.field(c).data_type().clone()))
                    .collect(),
            )
            .map_err(internal)
        };
        Ok(Side {
            rows: sort(&mut (0..width))?,
            keys: sort(&mut key_cols.iter().copied())?,
            key_cols: key_cols.to_vec(),
            width,
            outer,
            time_col: None,
            keep_ms: 0,
            state: HashMap::new(),
            unused: Vec::new(),
        })
    }

    /// Takes one stored copy of `row` out of the rows of `key`.
    fn remove(&mut self, key: &Key, row: &Bytes) -> Option<Entry> {
        let list = self.state.get_mut(key)?;
        let pos = list.iter().position(|e| e.row == *row)?;
        let e = list.swap_remove(pos);
        if list.is_empty() {
            self.state.remove(key);
        }
        Some(e)
    }

    /// Encoded keys and rows of `batch`'s data columns.
    fn encode(&self, batch: &RecordBatch) -> Result<(Vec<Key>, Vec<Bytes>), EngineError> {
        let cols: Vec<ArrayRef> = batch.columns()[..self.width].to_vec();
        let rows = self.rows.convert_columns(&cols).map_err(internal)?;
        let keys: Vec<Key> = if self.key_cols.is_empty() {
            vec![Box::from(&[][..]); batch.num_rows()]
        } else {
            let kc: Vec<ArrayRef> = self
                .key_cols
                .iter()
                .map(|&c| Arc::clone(batch.column(c)))
                .collect();
            let k = self.keys.convert_columns(&kc).map_err(internal)?;
            k.iter().map(|r| Box::from(r.as_ref())).collect()
        };
        Ok((keys, rows.iter().map(|r| Arc::from(r.as_ref())).collect()))
    }

    /// The columns of `rows` (`None`: a NULL row).
    fn columns(&self, rows: &[Option<&[u8]>]) -> Result<Vec<ArrayRef>, EngineError> {
        let parser = self.rows.parser();
        let present: Vec<&[u8]> = rows.iter().flatten().copied().collect();
        let cols = self
            .rows
            .convert_rows(present.iter().map(|r| parser.parse(r)))
            .map_err(internal)?;
        if present.len() == rows.len() {
            return Ok(cols);
        }
        let mut next = 0u32;
        let idx: UInt32Array = rows
            .iter()
            .map(|r| {
                r.map(|_| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        cols.iter()
            .map(|c| arrow::compute::take(c.as_ref(), &idx, None).map_err(internal))
            .collect()
    }
}

/// Output rows of one batch, assembled at the end.
#[derive(Default)]
struct Joined<'a> {
    left: Vec<Option<&'a [u8]>>,
    right: Vec<Option<&'a [u8]>>,
    kinds: Vec<RowKind>,
}

/// A regular or interval join.
pub struct Join {
    sides: [Side; 2],
    left_inputs: usize,
    filter: Option<Arc<dyn PhysicalExpr>>,
    /// Both inputs append-only and INNER: the output is append-only too.
    append_only: bool,
    /// Semi (`Some(false)`) or anti (`Some(true)`) join: only left rows go out.
    semi: Option<bool>,
    interval: bool,
    ttl_ms: Option<i64>,
    last_sweep: i64,
    schema: SchemaRef,
    data_schema: SchemaRef,
    /// Rows whose expressions fail.
    errors: RowErrors,
}

impl Join {
    /// Validates the spec against the input schemas.
    pub fn try_new(
        spec: &JoinSpec,
        left: &SchemaRef,
        right: &SchemaRef,
        planned: &SchemaRef,
        append_only: bool,
        errors: RowErrors,
    ) -> Result<Self, EngineError> {
        let outer_left = matches!(spec.kind, JoinKind::Left | JoinKind::Full);
        let outer_right = matches!(spec.kind, JoinKind::Right | JoinKind::Full);
        let mut l = Side::try_new(left, left.fields().len(), &spec.left_keys, outer_left)?;
        let mut r = Side::try_new(right, right.fields().len(), &spec.right_keys, outer_right)?;
        let lw = left.fields().len();
        l.unused = spec.unused.iter().copied().filter(|c| *c < lw).collect();
        r.unused = spec
            .unused
            .iter()
            .filter(|c| **c >= lw)
            .map(|c| c - lw)
            .collect();
        if let Some(b) = spec.interval {
            l.time_col = Some(b.left_time);
            l.keep_ms = b.left_keep_ms;
            r.time_col = Some(b.right_time);
            r.keep_ms = b.right_keep_ms;
        }
        // Both sides' columns, as the residual condition sees them (named as planned
        // where the output has them).
        let fields: Vec<Field> = left
            .fields()
            .iter()
            .chain(right.fields().iter())
            .enumerate()
            .map(|(i, f)| {
                let name = planned.fields().get(i).map_or(f.name(), |p| p.name());
                Field::new(name, f.data_type().clone(), true)
            })
            .collect();
        let data_schema = Arc::new(Schema::new(fields));
        Ok(Self {
            errors,
            sides: [l, r],
            left_inputs: spec.left_inputs,
            filter: spec.filter.clone(),
            append_only,
            semi: match spec.kind {
                JoinKind::Semi => Some(false),
                JoinKind::Anti => Some(true),
                _ => None,
            },
            interval: spec.interval.is_some(),
            ttl_ms: spec.state_ttl_ms,
            last_sweep: now_ms(),
            schema: planned.clone(),
            data_schema,
        })
    }

    /// For every row of `batch` (on side `me`), the indices of the other side's entries
    /// of its key that pass the residual condition.
    fn matches(
        &self,
        me: usize,
        batch: &RecordBatch,
        keys: &[Key],
    ) -> Result<Vec<Vec<usize>>, EngineError> {
        let other = &self.sides[1 - me];
        let mut cand: Vec<Vec<usize>> = keys
            .iter()
            .map(|k| {
                other
                    .state
                    .get(k)
                    .map_or(Vec::new(), |v| (0..v.len()).collect())
            })
            .collect();
        let Some(filter) = &self.filter else {
            return Ok(cand);
        };
        let total: usize = cand.iter().map(Vec::len).sum();
        if total == 0 {
            return Ok(cand);
        }
        // One joined batch of all candidate pairs, filtered at once.
        let mut mine_idx = Vec::with_capacity(total);
        let mut theirs: Vec<Option<&[u8]>> = Vec::with_capacity(total);
        for (i, (c, k)) in cand.iter().zip(keys).enumerate() {
            if let Some(entries) = other.state.get(k) {
                for &j in c {
                    mine_idx.push(i as u32);
                    theirs.push(Some(&entries[j].row));
                }
            }
        }
        let idx = UInt32Array::from(mine_idx);
        let mine: Vec<ArrayRef> = batch.columns()[..self.sides[me].width]
            .iter()
            .map(|c| arrow::compute::take(c.as_ref(), &idx, None).map_err(internal))
            .collect::<Result<_, _>>()?;
        let theirs = other.columns(&theirs)?;
        let columns = if me == 0 {
            [mine, theirs].concat()
        } else {
            [theirs, mine].concat()
        };
        let pairs =
            RecordBatch::try_new(Arc::clone(&self.data_schema), columns).map_err(internal)?;
        let mask = self.errors.mask(&pairs, "ON", filter)?;
        let mut at = 0;
        for c in cand.iter_mut() {
            let n = c.len();
            let mut keep = Vec::new();
            for (off, &j) in c.iter().enumerate() {
                if mask.is_valid(at + off) && mask.value(at + off) {
                    keep.push(j);
                }
            }
            at += n;
            *c = keep;
        }
        Ok(cand)
    }

    fn sweep(&mut self, now: i64) {
        let Some(ttl) = self.ttl_ms else { return };
        if self.interval || now - self.last_sweep < ttl / 2 {
            return;
        }
        self.last_sweep = now;
        for side in &mut self.sides {
            side.state.retain(|_, v| {
                v.retain(|e| e.time + ttl > now);
                !v.is_empty()
            });
        }
    }

    /// A semi or anti join's changes for a batch on side `me`: left rows appear and
    /// disappear as their count of matches crosses zero.
    #[allow(clippy::too_many_arguments)]
    fn semi_changes(
        &mut self,
        me: usize,
        anti: bool,
        keys: &[Key],
        rows: &[Bytes],
        matched: &[Vec<usize>],
        ops: Option<&arrow::array::Int8Array>,
        now: i64,
    ) -> Vec<(Bytes, RowKind)> {
        let mut out = Vec::new();
        let [left, right] = &mut self.sides;
        let (appear, vanish) = if anti {
            (RowKind::Delete, RowKind::Insert)
        } else {
            (RowKind::Insert, RowKind::Delete)
        };
        for (i, (key, row)) in keys.iter().zip(rows).enumerate() {
            let retract = changelog::kind_at(ops, i).is_retract();
            let hits = &matched[i];
            if me == 0 {
                let shown = |n: u32| if anti { n == 0 } else { n > 0 };
                if retract {
                    let Some(e) = left.remove(key, row) else {
                        continue;
                    };
                    if shown(e.matches) {
                        out.push((e.row, RowKind::Delete));
                    }
                } else {
                    let n = hits.len() as u32;
                    if shown(n) {
                        out.push((row.clone(), RowKind::Insert));
                    }
                    left.state.entry(key.clone()).or_default().push(Entry {
                        row: row.clone(),
                        matches: n,
                        time: now,
                    });
                }
                continue;
            }
            if retract {
                if right.remove(key, row).is_none() {
                    continue;
                }
            } else {
                right.state.entry(key.clone()).or_default().push(Entry {
                    row: row.clone(),
                    matches: 0,
                    time: now,
                });
            }
            let Some(lefts) = left.state.get_mut(key) else {
                continue;
            };
            for &j in hits {
                let Some(e) = lefts.get_mut(j) else { continue };
                if retract {
                    e.matches = e.matches.saturating_sub(1);
                    if e.matches == 0 {
                        out.push((e.row.clone(), vanish));
                    }
                } else {
                    e.matches += 1;
                    if e.matches == 1 {
                        out.push((e.row.clone(), appear));
                    }
                }
            }
        }
        out
    }

    fn assemble(&self, out: Joined<'_>) -> Result<RecordBatch, EngineError> {
        let mut columns = self.sides[0].columns(&out.left)?;
        columns.extend(self.sides[1].columns(&out.right)?);
        let columns = super::rows::conform(columns, &self.schema)?;
        if self.append_only {
            return RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(internal);
        }
        changelog::with_kinds(&self.schema, columns, &out.kinds).map_err(internal)
    }
}

impl Operator for Join {
    fn process_batch(
        &mut self,
        input: usize,
        batch: RecordBatch,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        let me = usize::from(input >= self.left_inputs);
        let batch = self.sides[me].blank_unused(batch)?;
        let now = now_ms();
        let ops = changelog::ops(&batch).cloned();
        let (keys, rows) = self.sides[me].encode(&batch)?;
        let matched = self.matches(me, &batch, &keys)?;
        let times: Option<Vec<i64>> = match self.sides[me].time_col {
            Some(c) => Some(millis(&batch, c)?.values().to_vec()),
            None => None,
        };
        if let Some(anti) = self.semi {
            let changes = self.semi_changes(me, anti, &keys, &rows, &matched, ops.as_ref(), now);
            if !changes.is_empty() {
                let left: Vec<Option<&[u8]>> = changes.iter().map(|(r, _)| Some(&**r)).collect();
                let kinds: Vec<RowKind> = changes.iter().map(|(_, k)| *k).collect();
                let columns = self.sides[0].columns(&left)?;
                let columns = super::rows::conform(columns, &self.schema)?;
                out.emit(if self.append_only {
                    RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(internal)?
                } else {
                    changelog::with_kinds(&self.schema, columns, &kinds).map_err(internal)?
                });
            }
            self.sweep(now);
            return Ok(());
        }
        // Changes to apply after the borrow of the other side's rows ends.
        let mut emitted: Vec<JoinedRow> = Vec::new();
        {
            let [a, b] = &mut self.sides;
            let (mine, other) = if me == 0 { (a, b) } else { (b, a) };
            for (i, (key, row)) in keys.iter().zip(&rows).enumerate() {
                let kind = changelog::kind_at(ops.as_ref(), i);
                let pick = |m: Option<Bytes>, o: Option<Bytes>| {
                    if me == 0 { (m, o) } else { (o, m) }
                };
                let others = other.state.get_mut(key);
                let hits = &matched[i];
                if kind.is_retract() {
                    if mine.remove(key, row).is_none() {
                        continue;
                    }
                    if hits.is_empty() {
                        if mine.outer {
                            let (l, r) = pick(Some(row.clone()), None);
                            emitted.push((l, r, RowKind::Delete));
                        }
                        continue;
                    }
                    if let Some(others) = others {
                        for &j in hits {
                            let e = &mut others[j];
                            let (l, r) = pick(Some(row.clone()), Some(e.row.clone()));
                            emitted.push((l, r, RowKind::Delete));
                            e.matches = e.matches.saturating_sub(1);
                            if other.outer && e.matches == 0 {
                                let (l, r) = pick(None, Some(e.row.clone()));
                                emitted.push((l, r, RowKind::Insert));
                            }
                        }
                    }
                } else {
                    if hits.is_empty() && mine.outer {
                        let (l, r) = pick(Some(row.clone()), None);
                        emitted.push((l, r, RowKind::Insert));
                    }
                    if let Some(others) = others {
                        for &j in hits {
                            let e = &mut others[j];
                            if other.outer && e.matches == 0 {
                                let (l, r) = pick(None, Some(e.row.clone()));
                                emitted.push((l, r, RowKind::Delete));
                            }
                            e.matches += 1;
                            let (l, r) = pick(Some(row.clone()), Some(e.row.clone()));
                            emitted.push((l, r, RowKind::Insert));
                        }
                    }
                    let time = times.as_ref().map_or(now, |t| t[i]);
                    mine.state.entry(key.clone()).or_default().push(Entry {
                        row: row.clone(),
                        matches: hits.len() as u32,
                        time,
                    });
                }
            }
        }
        if !emitted.is_empty() {
            let joined = Joined {
                left: emitted.iter().map(|e| e.0.as_deref()).collect(),
                right: emitted.iter().map(|e| e.1.as_deref()).collect(),
                kinds: emitted.iter().map(|e| e.2).collect(),
            };
            out.emit(self.assemble(joined)?);
        }
        self.sweep(now);
        Ok(())
    }

    /// Interval joins forget rows no later row of the other side can match.
    fn process_watermark(
        &mut self,
        watermark: Timestamp,
        _out: &mut Output,
    ) -> Result<(), EngineError> {
        if !self.interval || watermark == TS_MIN {
            return Ok(());
        }
        for side in &mut self.sides {
            let keep = side.keep_ms;
            side.state.retain(|_, v| {
                v.retain(|e| e.time.saturating_add(keep) >= watermark);
                !v.is_empty()
            });
        }
        Ok(())
    }

    /// Per side, one batch of its rows, how many rows each matches, and their time.
    fn snapshot(&mut self, state: &mut StateWriter) -> Result<(), EngineError> {
        for (s, side) in self.sides.iter().enumerate() {
            let entries: Vec<&Entry> = side.state.values().flatten().collect();
            if entries.is_empty() {
                continue;
            }
            let rows: Vec<Option<&[u8]>> = entries.iter().map(|e| Some(&*e.row)).collect();
            let mut cols = side.columns(&rows)?;
            cols.push(Arc::new(Int64Array::from_iter_values(
                entries.iter().map(|e| i64::from(e.matches)),
            )));
            cols.push(Arc::new(Int64Array::from_iter_values(
                entries.iter().map(|e| e.time),
            )));
            state.put(format!("side{s}"), state_batch(cols)?);
        }
        Ok(())
    }

    fn restore(&mut self, state: &StateReader) -> Result<(), EngineError> {
        for s in 0..2 {
            let name = format!("side{s}");
            for batch in state.get(&name) {
                let side = &mut self.sides[s];
                let width = side.width;
                if batch.num_columns() != width + 2 {
                    return Err(internal("join snapshot has the wrong number of columns"));
                }
                let data = batch.project(&(0..width).collect::<Vec<_>>())?;
                let (keys, rows) = side.encode(&data)?;
                let int = |c: usize| {
                    batch
                        .column(c)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .cloned()
                        .ok_or_else(|| internal("join snapshot column is not BIGINT"))
                };
                let matches = int(width)?;
                let times = int(width + 1)?;
                for (i, (k, r)) in keys.into_iter().zip(rows).enumerate() {
                    side.state.entry(k).or_default().push(Entry {
                        row: r,
                        matches: u32::try_from(matches.value(i)).unwrap_or(0),
                        time: times.value(i),
                    });
                }
            }
        }
        Ok(())
    }
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("join: {e}"))
}
