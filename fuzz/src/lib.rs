//! What the fuzz targets share.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// A table with one column of every type the decoders convert to.
pub fn every_type() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("i", DataType::Int64, true),
        Field::new("small", DataType::Int32, true),
        Field::new("d", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("b", DataType::Boolean, true),
        Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("n", DataType::Decimal128(10, 2), true),
        Field::new("day", DataType::Date32, true),
        Field::new("raw", DataType::Binary, true),
    ]))
}
