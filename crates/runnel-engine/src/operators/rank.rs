//! Top-N and deduplication: `ROW_NUMBER() OVER (PARTITION BY p ORDER BY o) AS rn`
//! filtered by `rn <= N` (Flink's Rank operator); `RANK()` and `DENSE_RANK()` number
//! rows that sort equal alike, so more than N rows may rank within N.
//!
//! Each partition keeps its rows sorted by the ORDER BY columns (ties in arrival order),
//! in Arrow's order-preserving row format. Over an append-only input only the first N
//! rows can ever be shown, so only they are kept; over a changelog every row is kept so
//! a retraction can let the next one in. After each batch, every touched partition's
//! numbered top N is compared with what was emitted before the batch, and only the
//! differences go out (`-U`/`+U` where a rank's row changed, `+I`, `-D`) — with
//! `rn = 1` and a time ORDER BY this is deduplication (keep first or last).
//!
//! Window Top-N (the partition includes `window_end` of a window TVF's rows): rows are
//! held until the watermark passes the window's end, then its top N are emitted once,
//! append-only, and forgotten.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, UInt64Array};
use arrow::compute::SortOptions;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use hashbrown::HashMap;
use runnel_common::Timestamp;
use runnel_common::changelog::{self, RowKind};
use runnel_common::time::now_ms;
use runnel_sql::{RankFunction, RankSpec};

use super::aggregate::state_batch;
use super::rows;
use super::window_assign::millis;
use crate::error::EngineError;
use crate::operator::{Operator, Output, StateReader, StateWriter};

/// A partition key in Arrow's row format.
type Key = Box<[u8]>;

/// A partition's rows within the limit, with their numbers.
type Numbered = Vec<(Ranked, u64)>;

/// One stored row: its sort key and its columns.
#[derive(Debug, Clone, PartialEq)]
struct Ranked {
    order: Box<[u8]>,
    row: Box<[u8]>,
}

#[derive(Default)]
struct Partition {
    rows: Vec<Ranked>,
    touched_ms: i64,
    window_end: Option<Timestamp>,
}

impl Partition {
    /// Inserts after rows that sort equal (arrival order breaks ties).
    fn insert(&mut self, r: Ranked) {
        let at = self.rows.partition_point(|x| x.order <= r.order);
        self.rows.insert(at, r);
    }
}

/// The numbers of `rows` (sorted) that rank within `limit`, in order.
fn numbers(
    function: RankFunction,
    limit: usize,
    rows: &[Ranked],
) -> impl Iterator<Item = u64> + '_ {
    let mut number = 0u64;
    rows.iter()
        .enumerate()
        .map(move |(i, r)| {
            let tie = i > 0 && rows[i - 1].order == r.order;
            number = match function {
                RankFunction::RowNumber => i as u64 + 1,
                RankFunction::Rank if tie => number,
                RankFunction::Rank => i as u64 + 1,
                RankFunction::DenseRank if tie => number,
                RankFunction::DenseRank => number + 1,
            };
            number
        })
        .take_while(move |n| *n <= limit as u64)
}

/// The numbers of `rows` (sorted) that rank within `limit`.
fn numbered(function: RankFunction, limit: usize, rows: &[Ranked]) -> Vec<u64> {
    numbers(function, limit, rows).collect()
}

/// How many of `rows` (sorted) rank within `limit`.
fn within(function: RankFunction, limit: usize, rows: &[Ranked]) -> usize {
    match function {
        RankFunction::RowNumber => rows.len().min(limit),
        _ => numbers(function, limit, rows).count(),
    }
}

/// The Rank operator.
pub struct Rank {
    partition: Vec<usize>,
    order: Vec<usize>,
    function: RankFunction,
    limit: usize,
    /// Keep every row (the input retracts).
    keep_all: bool,
    window_end: Option<usize>,
    width: usize,
    rows: RowConverter,
    keys: Option<RowConverter>,
    sorter: RowConverter,
    state: HashMap<Box<[u8]>, Partition>,
    /// Window Top-N: partitions by window end.
    by_end: BTreeMap<Timestamp, Vec<Box<[u8]>>>,
    schema: SchemaRef,
    ttl_ms: Option<i64>,
    last_sweep: i64,
    /// Keep-first deduplication on processing time (see [`RankSpec::first_arrival`]).
    first_arrival: bool,
}

impl Rank {
    /// Validates the spec against the input schema.
    pub fn try_new(
        spec: &RankSpec,
        input: &SchemaRef,
        planned: &SchemaRef,
        keep_all: bool,
    ) -> Result<Self, EngineError> {
        let width = input.fields().len();
        let rows = rows::row_codec(input, width)?;
        let keys = rows::codec(input, &spec.partition)?;
        let sorter = RowConverter::new(
            spec.order
                .iter()
                .map(|&(c, descending)| {
                    SortField::new_with_options(
                        input.field(c).data_type().clone(),
                        SortOptions {
                            descending,
                            nulls_first: !descending,
                        },
                    )
                })
                .collect(),
        )
        .map_err(internal)?;
        Ok(Self {
            partition: spec.partition.clone(),
            order: spec.order.iter().map(|(c, _)| *c).collect(),
            function: spec.function,
            limit: spec.limit,
            keep_all,
            window_end: spec.window_end,
            width,
            rows,
            keys,
            sorter,
            state: HashMap::new(),
            by_end: BTreeMap::new(),
            schema: Arc::clone(planned),
            ttl_ms: spec.state_ttl_ms,
            last_sweep: now_ms(),
            first_arrival: spec.first_arrival,
        })
    }

    fn encode(&self, batch: &RecordBatch) -> Result<Vec<(Key, Ranked)>, EngineError> {
        let cols = |idx: &[usize]| -> Vec<ArrayRef> {
            idx.iter().map(|&c| Arc::clone(batch.column(c))).collect()
        };
        let all: Vec<usize> = (0..self.width).collect();
        let rows = self.rows.convert_columns(&cols(&all)).map_err(internal)?;
        let order = self
            .sorter
            .convert_columns(&cols(&self.order))
            .map_err(internal)?;
        let keys = rows::encode(self.keys.as_ref(), batch, &self.partition)?;
        Ok(keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| {
                (
                    k,
                    Ranked {
                        order: order.row(i).as_ref().into(),
                        row: rows.row(i).as_ref().into(),
                    },
                )
            })
            .collect())
    }

    /// Output rows: each row's columns and its number.
    fn assemble(
        &self,
        rows: &[(&[u8], u64)],
        kinds: Option<&[RowKind]>,
    ) -> Result<RecordBatch, EngineError> {
        let mut columns = rows::decode(&self.rows, rows.iter().map(|(r, _)| *r))?;
        columns.push(Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|(_, n)| *n),
        )));
        let columns = super::rows::conform(columns, &self.schema)?;
        match kinds {
            None => RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(internal),
            Some(k) => changelog::with_kinds(&self.schema, columns, k).map_err(internal),
        }
    }

    /// A partition's rows that rank within the limit, with their numbers.
    fn top(&self, key: &[u8]) -> Numbered {
        self.state.get(key).map_or(Vec::new(), |p| {
            let numbers = numbered(self.function, self.limit, &p.rows);
            p.rows.iter().cloned().zip(numbers).collect()
        })
    }

    fn sweep(&mut self, now: i64) {
        let Some(ttl) = self.ttl_ms else { return };
        if self.window_end.is_some() || now - self.last_sweep < ttl / 2 {
            return;
        }
        self.last_sweep = now;
        self.state.retain(|_, p| p.touched_ms + ttl > now);
    }

    /// Keep-first deduplication on processing time: a key's first row goes out (as
    /// number 1) and is kept; later rows of the key are dropped.
    fn first_arrivals(
        &mut self,
        batch: &RecordBatch,
        now: i64,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        // Keys first: most rows of a busy stream repeat a key and are dropped unencoded.
        let mut first = Vec::new();
        match &self.keys {
            // In Arrow's row format, looked up without a copy per row.
            Some(codec) => {
                let keys = super::rows::convert(codec, batch, &self.partition)?;
                let mut fresh: hashbrown::HashSet<&[u8]> = hashbrown::HashSet::new();
                for (i, key) in keys.iter().enumerate() {
                    let key = key.data();
                    if !self.state.contains_key(key) && fresh.insert(key) {
                        first.push(i as u32);
                    }
                }
            }
            // No PARTITION BY: one key.
            None => {
                if !self.state.contains_key(&[][..]) && batch.num_rows() > 0 {
                    first.push(0);
                }
            }
        }
        if first.is_empty() {
            self.sweep(now);
            return Ok(());
        }
        let n = first.len();
        let kept =
            arrow::compute::take_record_batch(batch, &arrow::array::UInt32Array::from(first))
                .map_err(internal)?;
        for (key, ranked) in self.encode(&kept)? {
            self.state.insert(
                key,
                Partition {
                    rows: vec![ranked],
                    touched_ms: now,
                    window_end: None,
                },
            );
        }
        self.sweep(now);
        let mut columns: Vec<ArrayRef> = kept.columns()[..self.width].to_vec();
        columns.push(Arc::new(UInt64Array::from(vec![1u64; n])));
        columns.truncate(self.schema.fields().len());
        let columns = super::rows::conform(columns, &self.schema)?;
        out.emit(RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(internal)?);
        Ok(())
    }

    fn schema_of_rows(&self) -> Schema {
        Schema::new(self.schema.fields()[..self.width].to_vec())
    }
}

impl Operator for Rank {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        let now = now_ms();
        if self.first_arrival {
            return self.first_arrivals(&batch, now, out);
        }
        let ops = changelog::ops(&batch).cloned();
        let encoded = self.encode(&batch)?;
        let ends = match self.window_end {
            Some(c) => Some(millis(&batch, c)?),
            None => None,
        };
        // The top N of every touched partition before this batch.
        let mut before: Vec<(Key, Numbered)> = Vec::new();
        let mut seen: hashbrown::HashSet<Key> = hashbrown::HashSet::new();
        for (i, (key, ranked)) in encoded.into_iter().enumerate() {
            if self.window_end.is_none() && seen.insert(key.clone()) {
                before.push((key.clone(), self.top(&key)));
            }
            let kind = changelog::kind_at(ops.as_ref(), i);
            let (function, limit) = (self.function, self.limit);
            let keep_all = self.keep_all;
            let part = self.state.entry(key.clone()).or_default();
            part.touched_ms = now;
            if kind.is_retract() {
                if let Some(pos) = part.rows.iter().position(|r| *r == ranked) {
                    part.rows.remove(pos);
                }
            } else {
                part.insert(ranked);
                if !keep_all {
                    // Over an append-only input a number only grows: rows past the
                    // limit never rank within it again.
                    part.rows.truncate(within(function, limit, &part.rows));
                }
            }
            if let Some(ends) = &ends
                && part.window_end.is_none()
            {
                let end = ends.value(i);
                part.window_end = Some(end);
                self.by_end.entry(end).or_default().push(key);
            }
        }
        if self.window_end.is_some() {
            return Ok(());
        }
        let mut rows: Vec<(Box<[u8]>, u64)> = Vec::new();
        let mut kinds = Vec::new();
        for (key, old) in before {
            let new = self.top(&key);
            for n in 0..old.len().max(new.len()) {
                match (old.get(n), new.get(n)) {
                    (Some((a, x)), Some((b, y))) if a.row == b.row && x == y => {}
                    (Some((a, x)), Some((b, y))) => {
                        rows.push((a.row.clone(), *x));
                        kinds.push(RowKind::UpdateBefore);
                        rows.push((b.row.clone(), *y));
                        kinds.push(RowKind::UpdateAfter);
                    }
                    (Some((a, x)), None) => {
                        rows.push((a.row.clone(), *x));
                        kinds.push(RowKind::Delete);
                    }
                    (None, Some((b, y))) => {
                        rows.push((b.row.clone(), *y));
                        kinds.push(RowKind::Insert);
                    }
                    (None, None) => {}
                }
            }
            if self.state.get(&key).is_some_and(|p| p.rows.is_empty()) {
                self.state.remove(&key);
            }
        }
        if !rows.is_empty() {
            let refs: Vec<(&[u8], u64)> = rows.iter().map(|(r, n)| (&**r, *n)).collect();
            out.emit(self.assemble(&refs, Some(&kinds))?);
        }
        self.sweep(now);
        Ok(())
    }

    /// Window Top-N: windows the watermark passed are ranked and emitted once.
    fn process_watermark(
        &mut self,
        watermark: Timestamp,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        if self.window_end.is_none() {
            return Ok(());
        }
        let open = self.by_end.split_off(&watermark.saturating_add(1));
        let done = std::mem::replace(&mut self.by_end, open);
        let mut rows: Vec<(Box<[u8]>, u64)> = Vec::new();
        for key in done.into_values().flatten() {
            if let Some(p) = self.state.remove(&key) {
                let numbers = numbered(self.function, self.limit, &p.rows);
                for (r, n) in p.rows.into_iter().zip(numbers) {
                    rows.push((r.row, n));
                }
            }
        }
        if !rows.is_empty() {
            let refs: Vec<(&[u8], u64)> = rows.iter().map(|(r, n)| (&**r, *n)).collect();
            out.emit(self.assemble(&refs, None)?);
        }
        Ok(())
    }

    /// Every kept row, partition by partition in rank order, with its last change.
    fn snapshot(&mut self, state: &mut StateWriter) -> Result<(), EngineError> {
        let mut rows: Vec<&[u8]> = Vec::new();
        let mut touched = Vec::new();
        for p in self.state.values() {
            for r in &p.rows {
                rows.push(&r.row);
                touched.push(p.touched_ms);
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut cols = rows::decode(&self.rows, rows.iter().copied())?;
        cols.push(Arc::new(Int64Array::from(touched)));
        state.put("rows", state_batch(cols)?);
        Ok(())
    }

    fn restore(&mut self, state: &StateReader) -> Result<(), EngineError> {
        let schema = Arc::new(self.schema_of_rows());
        for batch in state.get("rows") {
            if batch.num_columns() != self.width + 1 {
                return Err(internal("rank snapshot has the wrong number of columns"));
            }
            let data =
                RecordBatch::try_new(Arc::clone(&schema), batch.columns()[..self.width].to_vec())
                    .map_err(internal)?;
            let touched = batch
                .column(self.width)
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .ok_or_else(|| internal("rank snapshot column is not BIGINT"))?;
            let ends = match self.window_end {
                Some(c) => Some(millis(&data, c)?),
                None => None,
            };
            for (i, (key, ranked)) in self.encode(&data)?.into_iter().enumerate() {
                let part = self.state.entry(key.clone()).or_default();
                part.touched_ms = touched.value(i);
                // Written in rank order: appending keeps it.
                part.rows.push(ranked);
                if let Some(ends) = &ends
                    && part.window_end.is_none()
                {
                    let end = ends.value(i);
                    part.window_end = Some(end);
                    self.by_end.entry(end).or_default().push(key);
                }
            }
        }
        Ok(())
    }
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("rank: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(orders: &[u8]) -> Vec<Ranked> {
        orders
            .iter()
            .map(|o| Ranked {
                order: Box::new([*o]),
                row: Box::new([]),
            })
            .collect()
    }

    #[test]
    fn ties_share_a_number_under_rank_and_dense_rank() {
        let sorted = rows(&[1, 1, 2, 3, 3, 4]);
        assert_eq!(numbered(RankFunction::RowNumber, 3, &sorted), vec![1, 2, 3]);
        // RANK: 1 1 3 4 4 6 — within 3: the first three.
        assert_eq!(numbered(RankFunction::Rank, 3, &sorted), vec![1, 1, 3]);
        assert_eq!(
            numbered(RankFunction::Rank, 4, &sorted),
            vec![1, 1, 3, 4, 4]
        );
        // DENSE_RANK: 1 1 2 3 3 4.
        assert_eq!(
            numbered(RankFunction::DenseRank, 3, &sorted),
            vec![1, 1, 2, 3, 3]
        );
        assert!(numbered(RankFunction::Rank, 0, &sorted).is_empty());
    }
}
