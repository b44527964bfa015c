//! Formats: bytes ↔ Arrow RecordBatch. Rejected records become dead letters.
//!
//! Decoders of every text format share the column conversions in this module:
//! a field is first converted to a [`Cell`] of the column's type, and a row is
//! appended to the builders only when all of its fields converted, so a
//! rejected record never leaves half a row behind.

pub mod csv;
pub mod json;
pub mod parquet;

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::NullBufferBuilder;
use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, ListArray,
    StringBuilder, StructArray, TimestampMillisecondBuilder,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, FieldRef, Fields, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use base64::Engine as _;
use runnel_common::time::parse_timestamp;
use runnel_common::types::sql_name;

use crate::ConnectorError;

/// One input record that could not be converted: it goes to the dead letters.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// 1-based line number of the record in its input.
    pub line: usize,
    /// Why it was rejected, naming the column and the value.
    pub reason: String,
    /// The original bytes of the record.
    pub raw: Vec<u8>,
}

/// What a decoder produced from a chunk of input.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The good rows in the table's schema; `None` when there were none.
    pub batch: Option<RecordBatch>,
    /// The records that could not be converted, in input order.
    pub rejects: Vec<Reject>,
}

/// Fails unless every column of `schema` has a type the text formats can convert.
pub fn check_schema(table: &str, schema: &SchemaRef) -> Result<(), ConnectorError> {
    for field in schema.fields() {
        if !is_supported(field.data_type()) {
            return Err(ConnectorError::Type {
                table: table.to_string(),
                column: field.name().clone(),
                data_type: sql_name(field.data_type()),
                reason: format!(
                    "the file formats cannot read; supported: {}",
                    runnel_common::types::SUPPORTED
                ),
            });
        }
    }
    Ok(())
}

fn is_supported(dt: &DataType) -> bool {
    match dt {
        DataType::List(f) => return is_supported(f.data_type()),
        DataType::Struct(fields) => return fields.iter().all(|f| is_supported(f.data_type())),
        _ => {}
    }
    matches!(
        dt,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(_, _)
            | DataType::Utf8
            | DataType::Binary
            | DataType::Date32
            | DataType::Timestamp(TimeUnit::Millisecond, _)
    )
}

/// A field converted to its column's type, not yet appended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell<'a> {
    Null,
    Bool(bool),
    /// Every integer column, timestamps (ms) and dates (days); range-checked already.
    Int(i64),
    Float(f64),
    Decimal(i128),
    Str(Cow<'a, str>),
    Bytes(Vec<u8>),
    /// An `ARRAY<t>` value: its elements, each converted to `t`.
    List(Vec<Cell<'a>>),
    /// A `ROW<…>` value: one cell per field, in the type's field order.
    Struct(Vec<Cell<'a>>),
}

/// One typed Arrow builder per column of the table.
pub(crate) struct Columns {
    schema: SchemaRef,
    builders: Vec<Builder>,
    rows: usize,
}

enum Builder {
    Boolean(BooleanBuilder),
    Int8(Int8Builder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal(Decimal128Builder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Date32(Date32Builder),
    Timestamp(TimestampMillisecondBuilder),
    List {
        field: FieldRef,
        child: Box<Builder>,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
    },
    Struct {
        fields: Fields,
        children: Vec<Builder>,
        nulls: NullBufferBuilder,
    },
}

impl Columns {
    /// Builders for `schema`; fails on a type the formats do not support.
    pub(crate) fn try_new(schema: SchemaRef) -> Result<Self, ConnectorError> {
        check_schema("?", &schema)?;
        let builders = schema
            .fields()
            .iter()
            .map(|f| new_builder(f.data_type()))
            .collect();
        Ok(Self {
            schema,
            builders,
            rows: 0,
        })
    }

    /// Appends one row; `cells` has been converted by [`convert_text`] or the
    /// JSON conversions for exactly these column types.
    pub(crate) fn append_row(&mut self, cells: Vec<Cell<'_>>) {
        for (b, cell) in self.builders.iter_mut().zip(cells) {
            append(b, cell);
        }
        self.rows += 1;
    }

    /// Number of rows appended since the last [`Columns::finish`].
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// The appended rows as a batch (`None` if there are none); the builders are reset.
    pub(crate) fn finish(&mut self) -> Result<Option<RecordBatch>, ConnectorError> {
        if self.rows == 0 {
            return Ok(None);
        }
        let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(finish_builder).collect();
        self.rows = 0;
        Ok(Some(RecordBatch::try_new(self.schema.clone(), arrays)?))
    }
}

fn new_builder(dt: &DataType) -> Builder {
    match dt {
        DataType::Boolean => Builder::Boolean(BooleanBuilder::new()),
        DataType::Int8 => Builder::Int8(Int8Builder::new()),
        DataType::Int16 => Builder::Int16(Int16Builder::new()),
        DataType::Int32 => Builder::Int32(Int32Builder::new()),
        DataType::Int64 => Builder::Int64(Int64Builder::new()),
        DataType::Float32 => Builder::Float32(Float32Builder::new()),
        DataType::Float64 => Builder::Float64(Float64Builder::new()),
        DataType::Decimal128(_, _) => {
            Builder::Decimal(Decimal128Builder::new().with_data_type(dt.clone()))
        }
        DataType::Binary => Builder::Binary(BinaryBuilder::new()),
        DataType::Date32 => Builder::Date32(Date32Builder::new()),
        DataType::Timestamp(_, _) => {
            Builder::Timestamp(TimestampMillisecondBuilder::new().with_data_type(dt.clone()))
        }
        DataType::List(field) => Builder::List {
            field: field.clone(),
            child: Box::new(new_builder(field.data_type())),
            offsets: vec![0],
            nulls: NullBufferBuilder::new(0),
        },
        DataType::Struct(fields) => Builder::Struct {
            fields: fields.clone(),
            children: fields.iter().map(|f| new_builder(f.data_type())).collect(),
            nulls: NullBufferBuilder::new(0),
        },
        // check_schema admitted only the types above and Utf8.
        _ => Builder::Utf8(StringBuilder::new()),
    }
}

fn append(b: &mut Builder, cell: Cell<'_>) {
    macro_rules! int {
        ($b:expr, $t:ty) => {
            match cell {
                Cell::Int(v) => $b.append_value(v as $t),
                _ => $b.append_null(),
            }
        };
    }
    match b {
        Builder::Boolean(b) => b.append_option(if let Cell::Bool(v) = cell {
            Some(v)
        } else {
            None
        }),
        Builder::Int8(b) => int!(b, i8),
        Builder::Int16(b) => int!(b, i16),
        Builder::Int32(b) => int!(b, i32),
        Builder::Int64(b) => int!(b, i64),
        Builder::Date32(b) => int!(b, i32),
        Builder::Timestamp(b) => int!(b, i64),
        Builder::Float32(b) => b.append_option(if let Cell::Float(v) = cell {
            Some(v as f32)
        } else {
            None
        }),
        Builder::Float64(b) => b.append_option(if let Cell::Float(v) = cell {
            Some(v)
        } else {
            None
        }),
        Builder::Decimal(b) => b.append_option(if let Cell::Decimal(v) = cell {
            Some(v)
        } else {
            None
        }),
        Builder::Utf8(b) => match cell {
            Cell::Str(s) => b.append_value(s),
            _ => b.append_null(),
        },
        Builder::Binary(b) => match cell {
            Cell::Bytes(v) => b.append_value(v),
            _ => b.append_null(),
        },
        Builder::List {
            child,
            offsets,
            nulls,
            ..
        } => {
            let mut len = offsets.last().copied().unwrap_or(0);
            if let Cell::List(items) = cell {
                len += items.len() as i32;
                for item in items {
                    append(child, item);
                }
                nulls.append_non_null();
            } else {
                nulls.append_null();
            }
            offsets.push(len);
        }
        Builder::Struct {
            children, nulls, ..
        } => {
            if let Cell::Struct(values) = cell {
                for (c, v) in children.iter_mut().zip(values) {
                    append(c, v);
                }
                nulls.append_non_null();
            } else {
                for c in children.iter_mut() {
                    append(c, Cell::Null);
                }
                nulls.append_null();
            }
        }
    }
}

fn finish_builder(b: &mut Builder) -> ArrayRef {
    match b {
        Builder::Boolean(b) => Arc::new(b.finish()),
        Builder::Int8(b) => Arc::new(b.finish()),
        Builder::Int16(b) => Arc::new(b.finish()),
        Builder::Int32(b) => Arc::new(b.finish()),
        Builder::Int64(b) => Arc::new(b.finish()),
        Builder::Float32(b) => Arc::new(b.finish()),
        Builder::Float64(b) => Arc::new(b.finish()),
        Builder::Decimal(b) => Arc::new(b.finish()),
        Builder::Utf8(b) => Arc::new(b.finish()),
        Builder::Binary(b) => Arc::new(b.finish()),
        Builder::Date32(b) => Arc::new(b.finish()),
        Builder::Timestamp(b) => Arc::new(b.finish()),
        Builder::List {
            field,
            child,
            offsets,
            nulls,
        } => {
            let values = finish_builder(child);
            let offsets =
                OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
            Arc::new(ListArray::new(
                field.clone(),
                offsets,
                values,
                nulls.finish(),
            ))
        }
        Builder::Struct {
            fields,
            children,
            nulls,
        } => {
            let columns: Vec<ArrayRef> = children.iter_mut().map(finish_builder).collect();
            let len = columns.first().map_or(0, |c| c.len());
            if columns.is_empty() {
                return Arc::new(StructArray::new_empty_fields(len, nulls.finish()));
            }
            Arc::new(StructArray::new(fields.clone(), columns, nulls.finish()))
        }
    }
}

/// Converts text (a CSV field or a JSON string) to a cell of type `dt`.
/// The error is the expected SQL type, for the caller's reject reason.
pub(crate) fn convert_text<'a>(dt: &DataType, text: Cow<'a, str>) -> Result<Cell<'a>, String> {
    let t = text.trim();
    let cell = match dt {
        DataType::Utf8 => return Ok(Cell::Str(text)),
        DataType::Boolean => match t.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" => Some(Cell::Bool(true)),
            "false" | "f" | "0" | "no" => Some(Cell::Bool(false)),
            _ => None,
        },
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            match t.parse::<i64>() {
                Ok(v) => return int_in_range(dt, v),
                Err(_) => match t.parse::<f64>() {
                    Ok(f) if f.is_finite() => return float_to_int(dt, f),
                    _ => None,
                },
            }
        }
        DataType::Float32 | DataType::Float64 => t.parse::<f64>().ok().map(Cell::Float),
        DataType::Decimal128(p, s) => return parse_decimal(t, *p, *s),
        DataType::Date32 => parse_date(t).map(Cell::Int),
        DataType::Timestamp(_, _) => parse_timestamp(t).map(Cell::Int),
        DataType::Binary => base64::engine::general_purpose::STANDARD
            .decode(t)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t))
            .ok()
            .map(Cell::Bytes),
        // A nested value in text (a CSV field, a JSON string) is itself JSON.
        DataType::List(_) | DataType::Struct(_) => {
            let v: serde_json::Value = serde_json::from_str(t)
                .map_err(|_| format!("expected {} as JSON", sql_name(dt)))?;
            return json::convert_nested(dt, &v);
        }
        _ => None,
    };
    cell.ok_or_else(|| format!("expected {}", sql_name(dt)))
}

/// Checks that `v` fits the integer column type `dt`.
pub(crate) fn int_in_range<'a>(dt: &DataType, v: i64) -> Result<Cell<'a>, String> {
    let (lo, hi) = match dt {
        DataType::Int8 => (i8::MIN as i64, i8::MAX as i64),
        DataType::Int16 => (i16::MIN as i64, i16::MAX as i64),
        DataType::Int32 => (i32::MIN as i64, i32::MAX as i64),
        _ => (i64::MIN, i64::MAX),
    };
    if !(lo..=hi).contains(&v) {
        return Err(format!("{} out of range for {}", v, sql_name(dt)));
    }
    Ok(Cell::Int(v))
}

/// A float into an integer column: accepted only without a fraction and in range.
pub(crate) fn float_to_int<'a>(dt: &DataType, f: f64) -> Result<Cell<'a>, String> {
    if f.fract() != 0.0 || !f.is_finite() {
        return Err(format!("expected {} (a whole number)", sql_name(dt)));
    }
    // 2^63 is exactly representable; anything at or beyond it does not fit an i64.
    if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) {
        return Err(format!("{} out of range for {}", f, sql_name(dt)));
    }
    int_in_range(dt, f as i64)
}

/// Days since the epoch of `YYYY-MM-DD` (or a timestamp's date, or an integer day count).
fn parse_date(t: &str) -> Option<i64> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
        return Some((d - epoch).num_days());
    }
    if let Ok(days) = t.parse::<i32>() {
        return Some(days as i64);
    }
    None
}

/// Parses decimal text (`-12.5`, `1e3`, `.25`) into an unscaled i128 with `scale`
/// digits, rounding half away from zero; rejects values beyond `precision` digits.
pub(crate) fn parse_decimal<'a>(t: &str, precision: u8, scale: i8) -> Result<Cell<'a>, String> {
    let expected = || {
        format!(
            "expected {}",
            sql_name(&DataType::Decimal128(precision, scale))
        )
    };
    let (neg, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (
            &rest[..i],
            rest[i + 1..].parse::<i32>().map_err(|_| expected())?,
        ),
        None => (rest, 0),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(expected());
    }
    // All digits as one integer, with the decimal point `point` digits from the left.
    let digits: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .map(|b| b - b'0')
        .collect();
    let point = int_part.len() as i64 + exp as i64;
    // Keep the digits left of position point + scale; the next one decides rounding.
    let keep = point + scale as i64;
    let mut value: i128 = 0;
    let too_big = || {
        format!(
            "{} out of range for {}",
            t,
            sql_name(&DataType::Decimal128(precision, scale))
        )
    };
    let limit = 10i128.pow(precision as u32);
    if keep > 0 {
        for i in 0..keep {
            let d = digits.get(i as usize).copied().unwrap_or(0) as i128;
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(d))
                .ok_or_else(too_big)?;
            if value >= limit {
                return Err(too_big());
            }
        }
    }
    let next = if keep >= 0 {
        digits.get(keep as usize).copied().unwrap_or(0)
    } else {
        0
    };
    if next >= 5 {
        value += 1;
    }
    if value >= limit {
        return Err(too_big());
    }
    Ok(Cell::Decimal(if neg { -value } else { value }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(t: &str, p: u8, s: i8) -> Result<Cell<'static>, String> {
        parse_decimal(t, p, s)
    }

    #[test]
    fn decimals_get_the_column_scale() {
        assert_eq!(dec("12.5", 10, 2), Ok(Cell::Decimal(1250)));
        assert_eq!(dec("-0.125", 10, 2), Ok(Cell::Decimal(-13)));
        assert_eq!(dec("1e2", 10, 2), Ok(Cell::Decimal(10000)));
        assert_eq!(dec(".5", 3, 1), Ok(Cell::Decimal(5)));
        assert_eq!(dec("7", 5, 0), Ok(Cell::Decimal(7)));
        assert!(dec("1000", 3, 0).is_err());
        assert!(dec("abc", 10, 2).is_err());
        assert!(dec(".", 10, 2).is_err());
    }

    #[test]
    fn text_conversions() {
        assert_eq!(
            convert_text(&DataType::Int8, "300".into()),
            Err("300 out of range for TINYINT".into())
        );
        assert_eq!(
            convert_text(&DataType::Int64, " 42 ".into()),
            Ok(Cell::Int(42))
        );
        assert_eq!(
            convert_text(&DataType::Int64, "4.0".into()),
            Ok(Cell::Int(4))
        );
        assert!(convert_text(&DataType::Int64, "4.5".into()).is_err());
        assert_eq!(
            convert_text(&DataType::Date32, "1970-01-02".into()),
            Ok(Cell::Int(1))
        );
        assert_eq!(
            convert_text(&DataType::Binary, "aGk=".into()),
            Ok(Cell::Bytes(b"hi".to_vec()))
        );
    }
}
