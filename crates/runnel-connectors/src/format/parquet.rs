//! Parquet files: how runnel writes them (the table's types, zstd, statistics, row
//! groups readers like) and reads them back into a table's schema.
//!
//! Written types follow the DDL: `TIMESTAMP(3)` and `TIMESTAMP_LTZ(3)` as
//! `timestamp[ms, UTC]` (runnel's times are UTC instants), `DECIMAL(p, s)` as decimal,
//! everything else as its Arrow type. Read files are matched by column name (case
//! insensitively); a column the file lacks is NULL, and a column of another type is cast,
//! or the read fails naming the file and the column.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::ConnectorError;

/// Rows per row group: about what DuckDB and Spark write, large enough for good
/// compression and small enough for readers to split and skip by statistics.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// A row group is also closed at this estimated size.
const ROW_GROUP_BYTES: usize = 64 << 20;

/// The schema files of a table with `schema` are written with.
pub fn file_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Timestamp(unit, None) => f
                .as_ref()
                .clone()
                .with_data_type(DataType::Timestamp(*unit, Some("UTC".into()))),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// A batch in `file_schema` (the timestamps relabelled as UTC; no data is converted).
///
/// # Errors
/// Never for a batch of the table's schema.
pub fn to_file_batch(
    batch: &RecordBatch,
    file_schema: &SchemaRef,
) -> Result<RecordBatch, ConnectorError> {
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(file_schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else if let Some(t) = retime(c, f.data_type()) {
                Ok(t)
            } else {
                cast_with_options(c, f.data_type(), &CastOptions::default())
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(RecordBatch::try_new(file_schema.clone(), columns)?)
}

/// A timestamp column as another timestamp type: Arrow keeps instants as UTC epoch
/// values whatever the zone label, and runnel reads a zoneless time as UTC, so only the
/// unit is converted and the label replaced (no zone database needed). `None` when
/// either type is not a timestamp.
fn retime(column: &ArrayRef, target: &DataType) -> Option<ArrayRef> {
    use arrow::array::{Array, AsArray, PrimitiveArray};
    use arrow::datatypes::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    let (DataType::Timestamp(from, _), DataType::Timestamp(to, tz)) = (column.data_type(), target)
    else {
        return None;
    };
    let per_second = |u: &TimeUnit| match u {
        TimeUnit::Second => 1i64,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    };
    let values: Vec<Option<i64>> = match from {
        TimeUnit::Second => column
            .as_primitive::<TimestampSecondType>()
            .iter()
            .collect(),
        TimeUnit::Millisecond => column
            .as_primitive::<TimestampMillisecondType>()
            .iter()
            .collect(),
        TimeUnit::Microsecond => column
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .collect(),
        TimeUnit::Nanosecond => column
            .as_primitive::<TimestampNanosecondType>()
            .iter()
            .collect(),
    };
    let (f, t) = (per_second(from), per_second(to));
    let convert = |v: i64| {
        if t >= f {
            v.saturating_mul(t / f)
        } else {
            v.div_euclid(f / t)
        }
    };
    let values = values.into_iter().map(|v| v.map(convert));
    let array: ArrayRef = match to {
        TimeUnit::Second => Arc::new(
            PrimitiveArray::<TimestampSecondType>::from_iter(values).with_timezone_opt(tz.clone()),
        ),
        TimeUnit::Millisecond => Arc::new(
            PrimitiveArray::<TimestampMillisecondType>::from_iter(values)
                .with_timezone_opt(tz.clone()),
        ),
        TimeUnit::Microsecond => Arc::new(
            PrimitiveArray::<TimestampMicrosecondType>::from_iter(values)
                .with_timezone_opt(tz.clone()),
        ),
        TimeUnit::Nanosecond => Arc::new(
            PrimitiveArray::<TimestampNanosecondType>::from_iter(values)
                .with_timezone_opt(tz.clone()),
        ),
    };
    debug_assert_eq!(array.len(), column.len());
    Some(array)
}

/// Writer settings: zstd level 3, page statistics, row groups of [`ROW_GROUP_ROWS`].
pub fn writer_properties() -> WriterProperties {
    let level = ZstdLevel::try_new(3).unwrap_or_default();
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .set_created_by(format!("runnel {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A Parquet writer into `file` for rows of `schema` (the table's data columns).
///
/// # Errors
/// The schema has a type Parquet cannot hold.
pub fn writer(file: File, schema: &Schema) -> Result<ArrowWriter<File>, ConnectorError> {
    Ok(ArrowWriter::try_new(
        file,
        file_schema(schema),
        Some(writer_properties()),
    )?)
}

/// Reads a Parquet file's rows into `schema`, `batch_size` rows at a time, skipping the
/// first `skip` rows.
pub struct ParquetRows {
    reader: ParquetRecordBatchReader,
    /// Per column of `schema`: its index in the file, if it has one.
    columns: Vec<Option<usize>>,
    schema: SchemaRef,
    path: String,
}

impl ParquetRows {
    /// Opens `path`.
    ///
    /// # Errors
    /// The file cannot be read or is not Parquet.
    pub fn open(
        path: &Path,
        schema: SchemaRef,
        batch_size: usize,
        skip: usize,
    ) -> Result<Self, ConnectorError> {
        let shown = path.display().to_string();
        let ctx = |e: &dyn std::fmt::Display| {
            ConnectorError::Other(format!("reading Parquet file '{shown}': {e}"))
        };
        let file =
            File::open(path).map_err(|e| ConnectorError::io(format!("opening '{shown}'"), e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| ctx(&e))?;
        let file_schema = builder.schema().clone();
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                file_schema
                    .fields()
                    .iter()
                    .position(|g| g.name().eq_ignore_ascii_case(f.name()))
            })
            .collect();
        let reader = builder
            .with_batch_size(batch_size.max(1))
            .with_offset(skip)
            .build()
            .map_err(|e| ctx(&e))?;
        Ok(Self {
            reader,
            columns,
            schema,
            path: shown,
        })
    }

    /// The next batch in the table's schema, or `None` at the end of the file.
    ///
    /// # Errors
    /// The file is damaged, or a column cannot be cast to the declared type.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, ConnectorError> {
        let Some(batch) = self.reader.next() else {
            return Ok(None);
        };
        let batch = batch.map_err(|e| {
            ConnectorError::Other(format!("reading Parquet file '{}': {e}", self.path))
        })?;
        let rows = batch.num_rows();
        let columns: Vec<ArrayRef> = self
            .schema
            .fields()
            .iter()
            .zip(&self.columns)
            .map(|(f, at)| match at {
                None => Ok(new_null_array(f.data_type(), rows)),
                Some(i) => {
                    let c = batch.column(*i);
                    if c.data_type() == f.data_type() {
                        return Ok(c.clone());
                    }
                    let target = f.data_type();
                    if let Some(t) = retime(c, target) {
                        return Ok(t);
                    }
                    let safe = CastOptions {
                        safe: false,
                        ..CastOptions::default()
                    };
                    cast_with_options(c, target, &safe).map_err(|e| {
                        ConnectorError::Other(format!(
                            "Parquet file '{}': column '{}' is {} in the file and cannot be \
                             read as {}: {e}",
                            self.path,
                            f.name(),
                            c.data_type(),
                            runnel_common::types::sql_name(target)
                        ))
                    })
                }
            })
            .collect::<Result<_, _>>()?;
        let nulls_ok = self
            .schema
            .fields()
            .iter()
            .zip(&columns)
            .find(|(f, c)| !f.is_nullable() && c.null_count() > 0);
        if let Some((f, _)) = nulls_ok {
            return Err(ConnectorError::Other(format!(
                "Parquet file '{}': column '{}' is NOT NULL but the file has NULLs in it{}",
                self.path,
                f.name(),
                if self.columns.iter().any(Option::is_none) {
                    " (or lacks the column)"
                } else {
                    ""
                }
            )));
        }
        Ok(Some(RecordBatch::try_new(self.schema.clone(), columns)?))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Decimal128Array, Int64Array, StringArray, TimestampMillisecondArray};

    use super::*;

    #[test]
    fn writes_the_ddl_types_and_reads_them_back() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("price", DataType::Decimal128(10, 2), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
                Arc::new(TimestampMillisecondArray::from(vec![1_000, 2_000, 3_000])),
                Arc::new(
                    Decimal128Array::from(vec![Some(12345), None, Some(-5)])
                        .with_precision_and_scale(10, 2)
                        .expect("decimal"),
                ),
            ],
        )
        .expect("batch");
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("x.parquet");
        let mut w = writer(File::create(&path).expect("file"), &schema).expect("writer");
        let fs = file_schema(&schema);
        assert_eq!(
            fs.field(2).data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        );
        w.write(&to_file_batch(&batch, &fs).expect("file batch"))
            .expect("write");
        w.close().expect("close");
        let mut rows = ParquetRows::open(&path, schema.clone(), 1024, 1).expect("open");
        let got = rows.next_batch().expect("read").expect("rows");
        assert_eq!(got, batch.slice(1, 2));
        assert!(rows.next_batch().expect("end").is_none());
        // A column the file lacks reads as NULL; a NOT NULL one fails, naming it.
        let wider = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("extra", DataType::Int32, true),
        ]));
        let mut rows = ParquetRows::open(&path, wider, 1024, 0).expect("open");
        let got = rows.next_batch().expect("read").expect("rows");
        assert_eq!(got.column(1).null_count(), 3);
        let strict = Arc::new(Schema::new(vec![Field::new(
            "extra",
            DataType::Int32,
            false,
        )]));
        let mut rows = ParquetRows::open(&path, strict, 1024, 0).expect("open");
        let e = rows.next_batch().expect_err("NOT NULL");
        assert!(e.to_string().contains("'extra'"), "{e}");
        // Not Parquet: the error names the file.
        std::fs::write(dir.path().join("bad.parquet"), b"not parquet").expect("write");
        let e = ParquetRows::open(&dir.path().join("bad.parquet"), schema, 10, 0)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("bad.parquet"), "{e}");
    }
}
