//! Rows and keys in Arrow's row format, shared by the operators that keep rows in state
//! (joins, Top-N, OVER, non-window aggregates).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::Schema;
use arrow::row::{RowConverter, SortField};

use crate::error::EngineError;

/// A row or a key, encoded.
pub type Bytes = Box<[u8]>;

/// Encodes columns `cols` of `schema`; `None` when there are none (every row has the
/// empty key).
pub fn codec(schema: &Schema, cols: &[usize]) -> Result<Option<RowConverter>, EngineError> {
    if cols.is_empty() {
        return Ok(None);
    }
    let fields = cols
        .iter()
        .map(|&c| SortField::new(schema.field(c).data_type().clone()))
        .collect();
    RowConverter::new(fields).map(Some).map_err(internal)
}

/// Encodes the first `width` columns of `schema` (whole rows).
pub fn row_codec(schema: &Schema, width: usize) -> Result<RowConverter, EngineError> {
    let fields = (0..width)
        .map(|c| SortField::new(schema.field(c).data_type().clone()))
        .collect();
    RowConverter::new(fields).map_err(internal)
}

/// Columns `cols` of every row of `batch`, encoded by `codec` (see [`codec`]).
pub fn encode(
    codec: Option<&RowConverter>,
    batch: &RecordBatch,
    cols: &[usize],
) -> Result<Vec<Bytes>, EngineError> {
    let Some(codec) = codec else {
        return Ok(vec![Box::from(&[][..]); batch.num_rows()]);
    };
    let rows = convert(codec, batch, cols)?;
    Ok(rows.iter().map(|r| Box::from(r.as_ref())).collect())
}

/// Columns `cols` of every row of `batch` in `codec`'s row format, without a copy per
/// row (look keys up with `rows.row(i).data()`).
pub fn convert(
    codec: &RowConverter,
    batch: &RecordBatch,
    cols: &[usize],
) -> Result<arrow::row::Rows, EngineError> {
    let arrays: Vec<ArrayRef> = cols.iter().map(|&c| Arc::clone(batch.column(c))).collect();
    codec.convert_columns(&arrays).map_err(internal)
}

/// Decodes rows back into columns.
pub fn decode<'a>(
    codec: &RowConverter,
    rows: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<ArrayRef>, EngineError> {
    let parser = codec.parser();
    codec
        .convert_rows(rows.into_iter().map(|r| parser.parse(r)))
        .map_err(internal)
}

/// `columns` cast where needed to the types of `schema`'s fields (planned types may
/// differ in time zone or precision from what accumulators and decoders produce).
pub fn conform(columns: Vec<ArrayRef>, schema: &Schema) -> Result<Vec<ArrayRef>, EngineError> {
    columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                arrow::compute::cast(&c, f.data_type()).map_err(internal)
            }
        })
        .collect()
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("row encoding: {e}"))
}
