//! `collect` sink: the rows of an ad-hoc query (`runnel query`'s bare `SELECT`), held in
//! memory until the query ends and then printed by the caller.
//!
//! An updating result (a `GROUP BY` without a window, a join) arrives as a changelog; the
//! [`Collected`] table applies it, so what is printed is the query's final result: a
//! retraction takes back the row it names. Nothing here is durable: a query that fails
//! is simply run again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::ArrayRef;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, SortField};
use async_trait::async_trait;
use runnel_common::TableSpec;
use runnel_common::changelog::{RowKind, ops};

use crate::descriptor::{self, Connector, Guarantee};
use crate::{ConnectorError, Sink, SinkContext};

/// `connector = 'collect'`: the implicit sink of a bare `SELECT`.
pub const CONNECTOR: Connector = Connector {
    name: "collect",
    doc: "an ad-hoc query's result, held in memory and printed by `runnel query`",
    options: &[],
    source: None,
    sink: Some(build),
    unbounded: descriptor::never_unbounded,
    guarantee: Guarantee::AtLeastOnce,
    updates: descriptor::takes_updates,
    needs: &[],
    validate: descriptor::no_validation,
    check: descriptor::no_check,
    metadata: &[],
    upserts: false,
    lookup: None,
};

/// Most bytes of result rows held in memory.
pub const MAX_RESULT_BYTES: usize = 2 << 30;

/// The final rows of a query: inserts add, retractions take away (insertion order kept).
#[derive(Debug)]
pub struct Collected {
    schema: SchemaRef,
    inner: Mutex<Rows>,
}

#[derive(Debug)]
struct Rows {
    converter: RowConverter,
    /// Rows in arrival order; `None` once retracted.
    rows: Vec<Option<OwnedRow>>,
    /// Where each distinct row is in `rows` (a row can be there several times).
    at: HashMap<OwnedRow, Vec<usize>>,
    bytes: usize,
    live: usize,
}

impl Collected {
    /// An empty result with the sink table's columns.
    ///
    /// # Errors
    /// A column type rows cannot be compared on.
    pub fn new(schema: SchemaRef) -> Result<Collected, ConnectorError> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields)
            .map_err(|e| ConnectorError::Other(format!("collecting the query's rows: {e}")))?;
        Ok(Collected {
            schema,
            inner: Mutex::new(Rows {
                converter,
                rows: Vec::new(),
                at: HashMap::new(),
                bytes: 0,
                live: 0,
            }),
        })
    }

    /// Applies one batch (a changelog batch when it carries a row-kind column).
    ///
    /// # Errors
    /// The result passed [`MAX_RESULT_BYTES`], or the batch's columns do not fit.
    pub fn apply(&self, batch: &RecordBatch) -> Result<(), ConnectorError> {
        let kinds = ops(batch).cloned();
        let width = self.schema.fields().len();
        let columns: Vec<ArrayRef> = batch.columns().iter().take(width).cloned().collect();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let rows = inner
            .converter
            .convert_columns(&columns)
            .map_err(|e| ConnectorError::Other(format!("collecting the query's rows: {e}")))?;
        for (i, row) in rows.iter().enumerate() {
            let retract = kinds
                .as_ref()
                .is_some_and(|k| RowKind::from_code(k.value(i)).is_retract());
            let inner = &mut *inner;
            if retract {
                let owned = row.owned();
                if let Some(places) = inner.at.get_mut(&owned)
                    && let Some(place) = places.pop()
                {
                    inner.rows[place] = None;
                    inner.bytes -= owned.as_ref().len();
                    inner.live -= 1;
                    if places.is_empty() {
                        inner.at.remove(&owned);
                    }
                }
                continue;
            }
            inner.bytes += row.as_ref().len();
            if inner.bytes > MAX_RESULT_BYTES {
                return Err(ConnectorError::Other(format!(
                    "the query's result passed {} MiB held in memory; add a LIMIT or an \
                     aggregate, or write it to a table with INSERT INTO",
                    MAX_RESULT_BYTES >> 20
                )));
            }
            let owned = row.owned();
            inner
                .at
                .entry(owned.clone())
                .or_default()
                .push(inner.rows.len());
            inner.rows.push(Some(owned));
            inner.live += 1;
        }
        // Retracted rows leave holes; close them up once they are most of the list.
        if inner.rows.len() > 1024 && inner.live < inner.rows.len() / 2 {
            let kept: Vec<OwnedRow> = inner.rows.drain(..).flatten().collect();
            inner.at.clear();
            for (i, row) in kept.iter().enumerate() {
                inner.at.entry(row.clone()).or_default().push(i);
            }
            inner.rows = kept.into_iter().map(Some).collect();
        }
        Ok(())
    }

    /// The result's columns.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The rows now in the result, in arrival order.
    ///
    /// # Errors
    /// Rows that cannot be turned back into columns (should not happen).
    pub fn batch(&self) -> Result<RecordBatch, ConnectorError> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let columns = inner
            .converter
            .convert_rows(inner.rows.iter().flatten().map(|r| r.row()))
            .map_err(|e| ConnectorError::Other(format!("reading the query's rows: {e}")))?;
        if columns.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| ConnectorError::Other(format!("reading the query's rows: {e}")))
    }
}

/// A sink subtask adding to the table's [`Collected`] result.
struct CollectSink {
    result: Arc<Collected>,
}

/// One sink per subtask, all adding to one result in the run's hub.
pub fn build(
    spec: &TableSpec,
    contexts: Vec<SinkContext>,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
    let Some(first) = contexts.first() else {
        return Ok(Vec::new());
    };
    let result = first.dashboards.collect(&spec.name, spec.schema.clone())?;
    Ok(contexts
        .iter()
        .map(|_| {
            Box::new(CollectSink {
                result: result.clone(),
            }) as Box<dyn Sink>
        })
        .collect())
}

#[async_trait]
impl Sink for CollectSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        self.result.apply(&batch)
    }

    async fn finish(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int8Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use runnel_common::changelog::OP_COLUMN;

    #[test]
    fn retractions_take_back_the_rows_they_name() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let collected = Collected::new(schema.clone()).unwrap();
        let with_op = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new(OP_COLUMN, DataType::Int8, false),
        ]));
        let batch = |k: Vec<&str>, n: Vec<i64>, op: Vec<i8>| {
            RecordBatch::try_new(
                with_op.clone(),
                vec![
                    Arc::new(StringArray::from(k)),
                    Arc::new(Int64Array::from(n)),
                    Arc::new(Int8Array::from(op)),
                ],
            )
            .unwrap()
        };
        collected
            .apply(&batch(vec!["a", "b", "a"], vec![1, 1, 1], vec![0, 0, 0]))
            .unwrap();
        // a: 1 → 2 (one of its two copies), b deleted.
        collected
            .apply(&batch(vec!["a", "a", "b"], vec![1, 2, 1], vec![1, 2, 3]))
            .unwrap();
        let out = collected.batch().unwrap();
        let k = out
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let n = out.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        let rows: Vec<(&str, i64)> = (0..out.num_rows())
            .map(|i| (k.value(i), n.value(i)))
            .collect();
        assert_eq!(rows, vec![("a", 1), ("a", 2)]);
        // An append-only batch (no row-kind column) only adds.
        let plain = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["c"])),
                Arc::new(Int64Array::from(vec![3])),
            ],
        )
        .unwrap();
        collected.apply(&plain).unwrap();
        assert_eq!(collected.batch().unwrap().num_rows(), 3);
    }
}
