//! Upserts to a changelog (Flink's ChangelogNormalize), after an upsert source such as
//! `upsert-kafka`.
//!
//! The source's rows are upserts keyed by the table's PRIMARY KEY: a new value for its
//! key (`+U` or `+I`), or a deletion (`-D`) that names only the key (a tombstone has no
//! value). Downstream operators retract by whole rows, so the last row per key is kept:
//! a new key gives `+I`, a changed value `-U` old and `+U` new, an unchanged value
//! nothing, a deletion `-D` with the row it deletes (nothing for a key never seen).

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::row::RowConverter;
use hashbrown::HashMap;
use runnel_common::changelog::{self, RowKind};
use runnel_common::time::now_ms;
use runnel_sql::NormalizeSpec;

use super::aggregate::state_batch;
use super::rows::{self, Bytes};
use crate::error::EngineError;
use crate::operator::{Operator, Output, StateReader, StateWriter};

/// The last row of a key and when it last changed.
struct Last {
    row: Bytes,
    touched_ms: i64,
}

/// The Normalize operator.
pub struct Normalize {
    key: Vec<usize>,
    width: usize,
    rows: RowConverter,
    keys: Option<RowConverter>,
    state: HashMap<Bytes, Last>,
    schema: SchemaRef,
    ttl_ms: Option<i64>,
    last_sweep: i64,
}

impl Normalize {
    /// Validates the spec against the input schema.
    pub fn try_new(spec: &NormalizeSpec, input: &SchemaRef) -> Result<Self, EngineError> {
        let width = input
            .fields()
            .iter()
            .take_while(|f| f.name() != changelog::OP_COLUMN)
            .count();
        if spec.key.is_empty() || spec.key.iter().any(|&k| k >= width) {
            return Err(EngineError::Invalid(
                "an upsert source needs a PRIMARY KEY of its own columns".into(),
            ));
        }
        let data = Arc::new(Schema::new(input.fields()[..width].to_vec()));
        Ok(Self {
            key: spec.key.clone(),
            width,
            rows: rows::row_codec(&data, width)?,
            keys: rows::codec(&data, &spec.key)?,
            state: HashMap::new(),
            schema: data,
            ttl_ms: spec.state_ttl_ms,
            last_sweep: now_ms(),
        })
    }

    fn sweep(&mut self, now: i64) {
        let Some(ttl) = self.ttl_ms else { return };
        if now - self.last_sweep < ttl / 2 {
            return;
        }
        self.last_sweep = now;
        self.state.retain(|_, l| l.touched_ms + ttl > now);
    }
}

impl Operator for Normalize {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        let now = now_ms();
        let ops = changelog::ops(&batch).cloned();
        let data = changelog::data(&batch);
        let keys = rows::encode(self.keys.as_ref(), &data, &self.key)?;
        let all: Vec<usize> = (0..self.width).collect();
        let encoded = rows::encode(Some(&self.rows), &data, &all)?;
        let mut emitted: Vec<Bytes> = Vec::new();
        let mut kinds: Vec<RowKind> = Vec::new();
        for (i, (key, row)) in keys.into_iter().zip(encoded).enumerate() {
            if changelog::kind_at(ops.as_ref(), i).is_retract() {
                if let Some(old) = self.state.remove(&key) {
                    emitted.push(old.row);
                    kinds.push(RowKind::Delete);
                }
                continue;
            }
            match self.state.get_mut(&key) {
                Some(old) => {
                    old.touched_ms = now;
                    if old.row != row {
                        let before = std::mem::replace(&mut old.row, row.clone());
                        emitted.push(before);
                        kinds.push(RowKind::UpdateBefore);
                        emitted.push(row);
                        kinds.push(RowKind::UpdateAfter);
                    }
                }
                None => {
                    self.state.insert(
                        key,
                        Last {
                            row: row.clone(),
                            touched_ms: now,
                        },
                    );
                    emitted.push(row);
                    kinds.push(RowKind::Insert);
                }
            }
        }
        if !emitted.is_empty() {
            let columns = rows::decode(&self.rows, emitted.iter().map(|r| &r[..]))?;
            let columns = rows::conform(columns, &self.schema)?;
            out.emit(changelog::with_kinds(&self.schema, columns, &kinds).map_err(internal)?);
        }
        self.sweep(now);
        Ok(())
    }

    /// The last row of every key, with its last change.
    fn snapshot(&mut self, state: &mut StateWriter) -> Result<(), EngineError> {
        if self.state.is_empty() {
            return Ok(());
        }
        let mut cols = rows::decode(&self.rows, self.state.values().map(|l| &l.row[..]))?;
        cols.push(Arc::new(Int64Array::from_iter_values(
            self.state.values().map(|l| l.touched_ms),
        )));
        state.put("last", state_batch(cols)?);
        Ok(())
    }

    fn restore(&mut self, state: &StateReader) -> Result<(), EngineError> {
        for batch in state.get("last") {
            if batch.num_columns() != self.width + 1 {
                return Err(internal(
                    "normalize snapshot has the wrong number of columns",
                ));
            }
            let columns = rows::conform(batch.columns()[..self.width].to_vec(), &self.schema)?;
            let data = RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(internal)?;
            let touched = batch
                .column(self.width)
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .ok_or_else(|| internal("normalize snapshot column is not BIGINT"))?;
            let keys = rows::encode(self.keys.as_ref(), &data, &self.key)?;
            let all: Vec<usize> = (0..self.width).collect();
            let encoded = rows::encode(Some(&self.rows), &data, &all)?;
            for (i, (key, row)) in keys.into_iter().zip(encoded).enumerate() {
                self.state.insert(
                    key,
                    Last {
                        row,
                        touched_ms: touched.value(i),
                    },
                );
            }
        }
        Ok(())
    }
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("normalize: {e}"))
}
