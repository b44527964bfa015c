//! Changelog rows: how an updating result travels between operators.
//!
//! An append-only stream's batches hold only the rows. An updating stream's batches
//! carry one more column, last, named [`OP_COLUMN`]: an `Int8` [`RowKind`] per row
//! (Flink's `RowKind` byte values). Operators that do not care pass it along; those
//! that keep state read it to insert or retract. Every consumer can tell the two
//! apart from the batch alone, with [`ops`].

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int8Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

/// Name of the row-kind column of an updating stream's batches.
pub const OP_COLUMN: &str = "__op";

/// What a changelog row does to the result (Flink's `RowKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i8)]
pub enum RowKind {
    /// `+I`: a new row.
    Insert = 0,
    /// `-U`: the old value of a row about to be updated.
    UpdateBefore = 1,
    /// `+U`: the new value of an updated row.
    UpdateAfter = 2,
    /// `-D`: a row is gone.
    Delete = 3,
}

impl RowKind {
    /// The kind stored as `code` (unknown codes read as inserts).
    pub fn from_code(code: i8) -> Self {
        match code {
            1 => RowKind::UpdateBefore,
            2 => RowKind::UpdateAfter,
            3 => RowKind::Delete,
            _ => RowKind::Insert,
        }
    }

    /// Whether the row takes something away (`-U`, `-D`).
    pub fn is_retract(self) -> bool {
        matches!(self, RowKind::UpdateBefore | RowKind::Delete)
    }

    /// Flink's short form: `+I`, `-U`, `+U`, `-D`.
    pub fn short(self) -> &'static str {
        match self {
            RowKind::Insert => "+I",
            RowKind::UpdateBefore => "-U",
            RowKind::UpdateAfter => "+U",
            RowKind::Delete => "-D",
        }
    }

    /// Parses Flink's short form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "+I" => RowKind::Insert,
            "-U" => RowKind::UpdateBefore,
            "+U" => RowKind::UpdateAfter,
            "-D" => RowKind::Delete,
            _ => return None,
        })
    }
}

/// The row kinds of `batch`, if it is a changelog batch.
pub fn ops(batch: &RecordBatch) -> Option<&Int8Array> {
    let schema = batch.schema_ref();
    let last = schema.fields().last()?;
    if last.name() != OP_COLUMN {
        return None;
    }
    batch.columns().last()?.as_any().downcast_ref::<Int8Array>()
}

/// The row kind of row `i` of a batch whose kinds are `ops` (`None`: all inserts).
pub fn kind_at(ops: Option<&Int8Array>, i: usize) -> RowKind {
    ops.map_or(RowKind::Insert, |o| RowKind::from_code(o.value(i)))
}

/// `batch` without its row-kind column (the rows' own columns).
pub fn data(batch: &RecordBatch) -> RecordBatch {
    if ops(batch).is_none() {
        return batch.clone();
    }
    let n = batch.num_columns() - 1;
    let projection: Vec<usize> = (0..n).collect();
    // Projecting existing columns cannot fail.
    batch.project(&projection).unwrap_or_else(|_| batch.clone())
}

/// The field of the row-kind column.
pub fn op_field() -> Field {
    Field::new(OP_COLUMN, DataType::Int8, false)
}

/// Builds a changelog batch: `columns` (in `schema`, which has no row-kind column) and
/// one kind per row.
///
/// # Errors
/// When the columns do not match the schema.
pub fn with_kinds(
    schema: &Schema,
    mut columns: Vec<ArrayRef>,
    kinds: &[RowKind],
) -> Result<RecordBatch, ArrowError> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(op_field());
    columns.push(Arc::new(Int8Array::from_iter_values(
        kinds.iter().map(|k| *k as i8),
    )));
    let options = RecordBatchOptions::new().with_row_count(Some(kinds.len()));
    RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)
}

/// Appends the row-kind column `op` to `batch` (the rows' own columns).
///
/// # Errors
/// When the lengths differ.
pub fn attach(batch: &RecordBatch, op: ArrayRef) -> Result<RecordBatch, ArrowError> {
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(op_field());
    let mut columns = batch.columns().to_vec();
    columns.push(op);
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    #[test]
    fn kinds_round_trip_through_a_batch() {
        let schema = Schema::new(vec![Field::new("v", DataType::Int64, true)]);
        let b = with_kinds(
            &schema,
            vec![Arc::new(Int64Array::from(vec![1, 2]))],
            &[RowKind::Insert, RowKind::Delete],
        )
        .expect("batch");
        let o = ops(&b).expect("changelog batch");
        assert_eq!(kind_at(Some(o), 1), RowKind::Delete);
        assert_eq!(data(&b).num_columns(), 1);
        assert!(ops(&data(&b)).is_none());
        assert_eq!(RowKind::parse("-U"), Some(RowKind::UpdateBefore));
    }
}
