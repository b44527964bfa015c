//! JSON lines ↔ RecordBatch: one object per line, keys are column names.
//!
//! Decoding converts each field straight into the column's Arrow builder;
//! a line that is not an object or has a value that does not convert is a
//! [`Reject`]. Encoding writes text directly into a byte buffer.

use std::borrow::Cow;
use std::io::Write as _;

use arrow::array::{
    Array, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array,
    Float64Array, GenericListArray, Int8Array, Int16Array, Int32Array, Int64Array, OffsetSizeTrait,
    StringArray, StructArray, TimestampMillisecondArray, UInt8Array, UInt16Array, UInt32Array,
    UInt64Array,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use base64::Engine as _;
use runnel_common::time::format_timestamp;
use runnel_common::types::sql_name;
use serde_json::{Map, Value};

use super::{Cell, Columns, Decoded, Reject, convert_text, float_to_int, int_in_range};
use crate::ConnectorError;

/// Decodes JSON lines into batches of the table's schema.
pub struct JsonDecoder {
    schema: SchemaRef,
    columns: Columns,
}

impl JsonDecoder {
    /// A decoder for `schema`; fails on a column type it cannot produce.
    pub fn try_new(schema: SchemaRef) -> Result<Self, ConnectorError> {
        Ok(Self {
            columns: Columns::try_new(schema.clone())?,
            schema,
        })
    }

    /// Decodes `(1-based line number, line bytes)` pairs; blank lines are skipped.
    ///
    /// # Errors
    /// Only if Arrow cannot assemble the batch (a runnel bug); bad lines are rejects.
    pub fn decode_lines<'l>(
        &mut self,
        lines: impl Iterator<Item = (usize, &'l [u8])>,
    ) -> Result<Decoded, ConnectorError> {
        let mut rejects = Vec::new();
        for (line, bytes) in lines {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match self.decode_row(bytes) {
                Ok(cells) => self.columns.append_row(cells),
                Err(reason) => rejects.push(Reject {
                    line,
                    reason,
                    raw: trim_eol(bytes).to_vec(),
                }),
            }
        }
        Ok(Decoded {
            batch: self.columns.finish()?,
            rejects,
        })
    }

    /// Number of rows decoded but not yet returned (always 0 between calls).
    pub fn pending_rows(&self) -> usize {
        self.columns.rows()
    }

    fn decode_row(&self, bytes: &[u8]) -> Result<Vec<Cell<'static>>, String> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
        let map = match value {
            Value::Object(map) => map,
            other => return Err(format!("expected a JSON object, got {}", kind(&other))),
        };
        let mut cells = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            let cell = match lookup(&map, field.name()) {
                None | Some(Value::Null) => Cell::Null,
                Some(v) => convert_json(field.data_type(), v).map_err(|why| {
                    if why.starts_with("expected") {
                        format!(
                            "column '{}': {}, got {}",
                            field.name(),
                            why,
                            shorten(&v.to_string())
                        )
                    } else {
                        format!("column '{}': {}", field.name(), why)
                    }
                })?,
            };
            cells.push(cell);
        }
        Ok(cells)
    }
}

/// The field named `name`: exact match first, then case-insensitive.
fn lookup<'m>(map: &'m Map<String, Value>, name: &str) -> Option<&'m Value> {
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// Converts one JSON value (`null` included) to a cell of the nested type
/// `dt` (`ARRAY<…>` or `ROW<…>`): an array's elements by position; a row from
/// an object by field name (case-insensitive, missing fields are NULL) or from
/// an array by position. The error names the path to the bad value.
pub(crate) fn convert_nested(dt: &DataType, v: &Value) -> Result<Cell<'static>, String> {
    let item = |dt: &DataType, v: &Value, at: String| -> Result<Cell<'static>, String> {
        match v {
            Value::Null => Ok(Cell::Null),
            v => convert_json(dt, v).map_err(|why| {
                if why.starts_with("expected") {
                    format!("{at}: {why}, got {}", shorten(&v.to_string()))
                } else {
                    format!("{at}: {why}")
                }
            }),
        }
    };
    match (dt, v) {
        (_, Value::Null) => Ok(Cell::Null),
        (DataType::List(f), Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| item(f.data_type(), v, format!("[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Cell::List),
        (DataType::Struct(fields), Value::Object(map)) => fields
            .iter()
            .map(|f| match lookup(map, f.name()) {
                None => Ok(Cell::Null),
                Some(v) => item(f.data_type(), v, format!(".{}", f.name())),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Cell::Struct),
        (DataType::Struct(fields), Value::Array(items)) if items.len() == fields.len() => fields
            .iter()
            .zip(items)
            .map(|(f, v)| item(f.data_type(), v, format!(".{}", f.name())))
            .collect::<Result<Vec<_>, _>>()
            .map(Cell::Struct),
        _ => Err(format!("expected {}", sql_name(dt))),
    }
}

/// Converts one non-null JSON value to a cell of type `dt`.
fn convert_json(dt: &DataType, v: &Value) -> Result<Cell<'static>, String> {
    let expected = || format!("expected {}", sql_name(dt));
    match (dt, v) {
        (DataType::List(_) | DataType::Struct(_), Value::String(s)) => {
            match serde_json::from_str::<Value>(s) {
                Ok(inner @ (Value::Array(_) | Value::Object(_))) => convert_nested(dt, &inner),
                _ => Err(expected()),
            }
        }
        (DataType::List(_) | DataType::Struct(_), v) => convert_nested(dt, v),
        (DataType::Utf8, Value::String(s)) => Ok(Cell::Str(Cow::Owned(s.clone()))),
        (DataType::Utf8, other) => Ok(Cell::Str(Cow::Owned(other.to_string()))),
        (_, Value::String(s)) => convert_text(dt, Cow::Borrowed(s.as_str())).map(own),
        (DataType::Boolean, Value::Bool(b)) => Ok(Cell::Bool(*b)),
        (DataType::Boolean, Value::Number(n)) => match n.as_i64() {
            Some(0) => Ok(Cell::Bool(false)),
            Some(1) => Ok(Cell::Bool(true)),
            _ => Err(expected()),
        },
        (
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Timestamp(_, _),
            Value::Number(n),
        ) => {
            if let Some(i) = n.as_i64() {
                if matches!(dt, DataType::Timestamp(_, _)) {
                    Ok(Cell::Int(i))
                } else {
                    int_in_range(dt, i)
                }
            } else if n.is_u64() {
                Err(format!("{} out of range for {}", n, sql_name(dt)))
            } else {
                let f = n.as_f64().ok_or_else(expected)?;
                let int_dt = if matches!(dt, DataType::Timestamp(_, _)) {
                    &DataType::Int64
                } else {
                    dt
                };
                float_to_int(int_dt, f).map_err(|_| expected())
            }
        }
        (DataType::Date32, Value::Number(n)) => match n.as_i64() {
            Some(d) if i32::try_from(d).is_ok() => Ok(Cell::Int(d)),
            _ => Err(expected()),
        },
        (DataType::Float32 | DataType::Float64, Value::Number(n)) => {
            n.as_f64().map(Cell::Float).ok_or_else(expected)
        }
        (DataType::Decimal128(p, s), Value::Number(n)) => {
            super::parse_decimal(&n.to_string(), *p, *s)
        }
        _ => Err(expected()),
    }
}

fn own(c: Cell<'_>) -> Cell<'static> {
    match c {
        Cell::Null => Cell::Null,
        Cell::Bool(b) => Cell::Bool(b),
        Cell::Int(i) => Cell::Int(i),
        Cell::Float(f) => Cell::Float(f),
        Cell::Decimal(d) => Cell::Decimal(d),
        Cell::Str(s) => Cell::Str(Cow::Owned(s.into_owned())),
        Cell::Bytes(b) => Cell::Bytes(b),
        Cell::List(items) => Cell::List(items.into_iter().map(own).collect()),
        Cell::Struct(fields) => Cell::Struct(fields.into_iter().map(own).collect()),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Keeps reject reasons readable when the offending value is a large document.
fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn trim_eol(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && (b[end - 1] == b'\n' || b[end - 1] == b'\r') {
        end -= 1;
    }
    &b[..end]
}

/// Encodes batches as JSON lines: one object per row, keys in schema order.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonEncoder;

impl JsonEncoder {
    /// Appends one `{…}\n` line per row of `batch` to `out`.
    ///
    /// # Errors
    /// Only if a value cannot be rendered at all (an Arrow type runnel does not use).
    ///
    /// A changelog batch's row kind is written last as `"op":"+I"` (`-U`, `+U`, `-D`),
    /// as Flink's `changelog-json` does.
    pub fn encode(&self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), ConnectorError> {
        let ops = runnel_common::changelog::ops(batch).cloned();
        let data;
        let batch = match ops {
            None => batch,
            Some(_) => {
                data = runnel_common::changelog::data(batch);
                &data
            }
        };
        let schema = batch.schema();
        let keys: Vec<Vec<u8>> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut k = Vec::with_capacity(f.name().len() + 4);
                k.push(if i == 0 { b'{' } else { b',' });
                write_str(&mut k, f.name());
                k.push(b':');
                k
            })
            .collect();
        let cols = batch
            .columns()
            .iter()
            .map(|c| Col::try_new(c.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        out.reserve(batch.num_rows() * 16 * cols.len().max(1));
        for row in 0..batch.num_rows() {
            if cols.is_empty() {
                out.push(b'{');
            }
            for (key, col) in keys.iter().zip(&cols) {
                out.extend_from_slice(key);
                col.write(out, row);
            }
            if let Some(ops) = &ops {
                let kind = runnel_common::changelog::kind_at(Some(ops), row);
                out.extend_from_slice(if cols.is_empty() {
                    b"\"op\":\""
                } else {
                    b",\"op\":\""
                });
                out.extend_from_slice(kind.short().as_bytes());
                out.push(b'"');
            }
            out.extend_from_slice(b"}\n");
        }
        Ok(())
    }
}

/// A column viewed with its concrete array type, so writing a cell is one match.
enum Col<'a> {
    Null,
    Bool(&'a BooleanArray),
    I8(&'a Int8Array),
    I16(&'a Int16Array),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    U8(&'a UInt8Array),
    U16(&'a UInt16Array),
    U32(&'a UInt32Array),
    U64(&'a UInt64Array),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Decimal(&'a Decimal128Array, i8),
    Utf8(&'a StringArray),
    Binary(&'a BinaryArray),
    Date(&'a Date32Array),
    Ts(&'a TimestampMillisecondArray),
    Struct(&'a StructArray, Vec<(Vec<u8>, Col<'a>)>),
    List(&'a dyn Array, Vec<usize>, Box<Col<'a>>),
    /// Anything else is rendered as a JSON string with Arrow's display formatting.
    Other(&'a dyn Array, ArrayFormatter<'a>),
}

impl<'a> Col<'a> {
    fn try_new(a: &'a dyn Array) -> Result<Self, ConnectorError> {
        Ok(match a.data_type() {
            DataType::Null => Col::Null,
            DataType::Boolean => Col::Bool(a.as_boolean()),
            DataType::Int8 => Col::I8(a.as_primitive()),
            DataType::Int16 => Col::I16(a.as_primitive()),
            DataType::Int32 => Col::I32(a.as_primitive()),
            DataType::Int64 => Col::I64(a.as_primitive()),
            DataType::UInt8 => Col::U8(a.as_primitive()),
            DataType::UInt16 => Col::U16(a.as_primitive()),
            DataType::UInt32 => Col::U32(a.as_primitive()),
            DataType::UInt64 => Col::U64(a.as_primitive()),
            DataType::Float32 => Col::F32(a.as_primitive()),
            DataType::Float64 => Col::F64(a.as_primitive()),
            DataType::Decimal128(_, s) => Col::Decimal(a.as_primitive(), *s),
            DataType::Utf8 => Col::Utf8(a.as_string()),
            DataType::Binary => Col::Binary(a.as_binary()),
            DataType::Date32 => Col::Date(a.as_primitive()),
            DataType::Timestamp(TimeUnit::Millisecond, _) => Col::Ts(a.as_primitive()),
            DataType::Struct(fields) => {
                let s = a.as_struct();
                let children = fields
                    .iter()
                    .zip(s.columns())
                    .enumerate()
                    .map(|(i, (f, c))| {
                        let mut k = Vec::new();
                        if i > 0 {
                            k.push(b',');
                        }
                        write_str(&mut k, f.name());
                        k.push(b':');
                        Ok((k, Col::try_new(c.as_ref())?))
                    })
                    .collect::<Result<Vec<_>, ConnectorError>>()?;
                Col::Struct(s, children)
            }
            DataType::List(_) => list(a, a.as_list::<i32>())?,
            DataType::LargeList(_) => list(a, a.as_list::<i64>())?,
            _ => Col::Other(a, ArrayFormatter::try_new(a, &FormatOptions::default())?),
        })
    }

    /// Writes the value at `i` (or `null`).
    fn write(&self, out: &mut Vec<u8>, i: usize) {
        macro_rules! num {
            ($a:expr) => {{
                if $a.is_null(i) {
                    out.extend_from_slice(b"null");
                } else {
                    let _ = write!(out, "{}", $a.value(i));
                }
            }};
        }
        macro_rules! float {
            ($a:expr) => {{
                let v = $a.value(i);
                if $a.is_null(i) || !v.is_finite() {
                    out.extend_from_slice(b"null");
                } else if v.fract() == 0.0 && v.abs() < 1e15 {
                    // Keep DOUBLE recognisable as a float: 24.0, not 24 (as Flink writes it).
                    let _ = write!(out, "{:.1}", v);
                } else {
                    let _ = write!(out, "{}", v);
                }
            }};
        }
        match self {
            Col::Null => out.extend_from_slice(b"null"),
            Col::Bool(a) => {
                if a.is_null(i) {
                    out.extend_from_slice(b"null");
                } else {
                    out.extend_from_slice(if a.value(i) { b"true" } else { b"false" });
                }
            }
            Col::I8(a) => num!(a),
            Col::I16(a) => num!(a),
            Col::I32(a) => num!(a),
            Col::I64(a) => num!(a),
            Col::U8(a) => num!(a),
            Col::U16(a) => num!(a),
            Col::U32(a) => num!(a),
            Col::U64(a) => num!(a),
            Col::F32(a) => float!(a),
            Col::F64(a) => float!(a),
            Col::Decimal(a, s) => {
                if a.is_null(i) {
                    out.extend_from_slice(b"null");
                } else {
                    write_decimal(out, a.value(i), *s);
                }
            }
            Col::Utf8(a) => {
                if a.is_null(i) {
                    out.extend_from_slice(b"null");
                } else {
                    write_str(out, a.value(i));
                }
            }
            Col::Binary(a) => {
                if a.is_null(i) {
                    out.extend_from_slice(b"null");
                } else {
                    out.push(b'"');
                    let s = base64::engine::general_purpose::STANDARD.encode(a.value(i));
                    out.extend_from_slice(s.as_bytes());
                    out.push(b'"');
                }
            }
            Col::Date(a) => {
                if a.is_null(i) {
                    out.extend_from_slice(b"null");
                } else {
                    write_str(out, &format_date(a.value(i)));
                }
            }
            Col::Ts(a) => {
                if a.is_null(i) {
                    out.extend_from_slice(b"null");
                } else {
                    out.push(b'"');
                    out.extend_from_slice(format_timestamp(a.value(i)).as_bytes());
                    out.push(b'"');
                }
            }
            Col::Struct(a, children) => {
                if a.is_null(i) {
                    out.extend_from_slice(b"null");
                } else {
                    out.push(b'{');
                    for (k, c) in children {
                        out.extend_from_slice(k);
                        c.write(out, i);
                    }
                    out.push(b'}');
                }
            }
            Col::List(a, offsets, child) => {
                if a.is_null(i) {
                    out.extend_from_slice(b"null");
                } else {
                    out.push(b'[');
                    for (n, j) in (offsets[i]..offsets[i + 1]).enumerate() {
                        if n > 0 {
                            out.push(b',');
                        }
                        child.write(out, j);
                    }
                    out.push(b']');
                }
            }
            Col::Other(a, f) => {
                if a.is_null(i) {
                    out.extend_from_slice(b"null");
                } else {
                    write_str(out, &f.value(i).to_string());
                }
            }
        }
    }
}

fn list<'a, O: OffsetSizeTrait>(
    a: &'a dyn Array,
    l: &'a GenericListArray<O>,
) -> Result<Col<'a>, ConnectorError> {
    let offsets = l.value_offsets().iter().map(|o| o.as_usize()).collect();
    Ok(Col::List(
        a,
        offsets,
        Box::new(Col::try_new(l.values().as_ref())?),
    ))
}

/// Writes `s` as a JSON string literal with the escapes JSON requires.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes an unscaled decimal with exactly `scale` fraction digits: `1250, 2` → `12.50`.
pub fn write_decimal(out: &mut Vec<u8>, v: i128, scale: i8) {
    let digits = v.unsigned_abs().to_string();
    if v < 0 {
        out.push(b'-');
    }
    if scale <= 0 {
        out.extend_from_slice(digits.as_bytes());
        if v != 0 {
            out.extend(std::iter::repeat_n(b'0', (-scale) as usize));
        }
        return;
    }
    let scale = scale as usize;
    if digits.len() <= scale {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', scale - digits.len()));
        out.extend_from_slice(digits.as_bytes());
    } else {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int.as_bytes());
        out.push(b'.');
        out.extend_from_slice(frac.as_bytes());
    }
}

/// `YYYY-MM-DD` of days since the epoch.
pub fn format_date(days: i32) -> String {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|e| e.checked_add_signed(chrono::TimeDelta::days(days as i64)))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| days.to_string())
}

/// Decodes a whole JSON-lines buffer (line numbers from 1); for tests and small inputs.
pub fn decode_all(schema: SchemaRef, bytes: &[u8]) -> Result<Decoded, ConnectorError> {
    let mut d = JsonDecoder::try_new(schema)?;
    d.decode_lines(
        bytes
            .split(|b| *b == b'\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l)),
    )
}

/// Encodes one batch to a JSON-lines string; for tests and small outputs.
pub fn encode_to_string(batch: &RecordBatch) -> Result<String, ConnectorError> {
    let mut out = Vec::new();
    JsonEncoder.encode(batch, &mut out)?;
    String::from_utf8(out).map_err(|e| {
        ConnectorError::Other(format!("runnel bug: JSON encoder wrote invalid UTF-8: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, ListArray, StringArray};
    use arrow::datatypes::{Field, Int32Type, Schema};

    use super::*;

    fn all_types_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("b", DataType::Boolean, true),
            Field::new("i8", DataType::Int8, true),
            Field::new("i16", DataType::Int16, true),
            Field::new("i32", DataType::Int32, true),
            Field::new("i64", DataType::Int64, true),
            Field::new("f32", DataType::Float32, true),
            Field::new("f64", DataType::Float64, true),
            Field::new("d", DataType::Decimal128(10, 2), true),
            Field::new("s", DataType::Utf8, true),
            Field::new("bin", DataType::Binary, true),
            Field::new("day", DataType::Date32, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new(
                "tz",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
        ]))
    }

    #[test]
    fn decodes_every_type_and_encodes_it_back() {
        let input = br#"{"b":true,"i8":-8,"i16":"16","i32":32,"i64":9007199254740993,"f32":1.5,"f64":"2.25","d":12.5,"s":"a \"q\"\n","bin":"aGk=","day":"2026-01-02","ts":"2026-01-01T00:00:10.123Z","tz":1767225610000}
{"B":false,"extra":[1,2],"ts":1000,"d":"-0.01","s":7}

{"s":{"k":[1,true]},"f64":null}"#;
        let d = decode_all(all_types_schema(), input).unwrap();
        assert!(d.rejects.is_empty(), "{:?}", d.rejects);
        let batch = d.batch.unwrap();
        assert_eq!(batch.num_rows(), 3);
        let text = encode_to_string(&batch).unwrap();
        let expected = concat!(
            r#"{"b":true,"i8":-8,"i16":16,"i32":32,"i64":9007199254740993,"f32":1.5,"f64":2.25,"d":12.50,"s":"a \"q\"\n","bin":"aGk=","day":"2026-01-02","ts":"2026-01-01T00:00:10.123Z","tz":"2026-01-01T00:00:10.000Z"}"#,
            "\n",
            r#"{"b":false,"i8":null,"i16":null,"i32":null,"i64":null,"f32":null,"f64":null,"d":-0.01,"s":"7","bin":null,"day":null,"ts":"1970-01-01T00:00:01.000Z","tz":null}"#,
            "\n",
            r#"{"b":null,"i8":null,"i16":null,"i32":null,"i64":null,"f32":null,"f64":null,"d":null,"s":"{\"k\":[1,true]}","bin":null,"day":null,"ts":null,"tz":null}"#,
            "\n",
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn nested_arrays_and_rows_decode_and_encode_back() {
        use runnel_common::types::{array_type, row_type};
        let boxes = array_type(row_type(vec![
            ("label".into(), DataType::Utf8),
            ("score".into(), DataType::Float64),
        ]));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("tags", array_type(DataType::Utf8), true),
            Field::new("boxes", boxes, true),
            Field::new("grid", array_type(array_type(DataType::Int32)), true),
        ]));
        let input = br#"{"id":1,"tags":["a",null,"c"],"boxes":[{"label":"dog","score":0.9},{"LABEL":"cat"}],"grid":[[1,2],[],null]}
{"id":2,"tags":[],"boxes":null}
{"id":3,"boxes":[["car",0.5]],"tags":["x"]}
{"id":4,"boxes":[{"label":"dog","score":"high"}]}
{"id":5,"tags":{"a":1}}
{"id":6,"grid":[[1,2.5]]}"#;
        let d = decode_all(schema, input).unwrap();
        let reasons: Vec<(usize, &str)> = d
            .rejects
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    4,
                    r#"column 'boxes': [0]: .score: expected DOUBLE, got "high""#
                ),
                (5, r#"column 'tags': expected ARRAY<STRING>, got {"a":1}"#),
                (6, "column 'grid': [0]: [1]: expected INT, got 2.5"),
            ]
        );
        let text = encode_to_string(&d.batch.unwrap()).unwrap();
        let expected = concat!(
            r#"{"id":1,"tags":["a",null,"c"],"boxes":[{"label":"dog","score":0.9},{"label":"cat","score":null}],"grid":[[1,2],[],null]}"#,
            "\n",
            r#"{"id":2,"tags":[],"boxes":null,"grid":null}"#,
            "\n",
            r#"{"id":3,"tags":["x"],"boxes":[{"label":"car","score":0.5}],"grid":null}"#,
            "\n",
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn bad_lines_are_rejected_and_good_rows_remain() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("price", DataType::Int64, true),
            Field::new("small", DataType::Int8, true),
        ]));
        let input = b"{\"id\":1,\"price\":10}\n{not json\n{\"id\":3,\"price\":\"abc\"}\n[1]\n{\"id\":5,\"price\":2.5}\n{\"id\":6,\"small\":300}\n{\"id\":7,\"price\":7.0}\n";
        let d = decode_all(schema, input).unwrap();
        let lines: Vec<usize> = d.rejects.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6]);
        assert_eq!(
            d.rejects[1].reason,
            "column 'price': expected BIGINT, got \"abc\""
        );
        assert_eq!(d.rejects[1].raw, br#"{"id":3,"price":"abc"}"#.to_vec());
        assert!(
            d.rejects[0].reason.starts_with("invalid JSON"),
            "{}",
            d.rejects[0].reason
        );
        assert_eq!(d.rejects[2].reason, "expected a JSON object, got an array");
        assert_eq!(
            d.rejects[3].reason,
            "column 'price': expected BIGINT, got 2.5"
        );
        assert_eq!(
            d.rejects[4].reason,
            "column 'small': 300 out of range for TINYINT"
        );
        let batch = d.batch.unwrap();
        assert_eq!(
            encode_to_string(&batch).unwrap(),
            "{\"id\":1,\"price\":10,\"small\":null}\n{\"id\":7,\"price\":7,\"small\":null}\n"
        );
    }

    #[test]
    fn a_changelog_batch_gets_an_op_field() {
        use runnel_common::changelog::{RowKind, with_kinds};
        let schema = Schema::new(vec![Field::new("k", DataType::Utf8, true)]);
        let b = with_kinds(
            &schema,
            vec![Arc::new(StringArray::from(vec!["a", "a"])) as ArrayRef],
            &[RowKind::UpdateBefore, RowKind::UpdateAfter],
        )
        .unwrap();
        let text = encode_to_string(&b).unwrap();
        assert_eq!(
            text,
            "{\"k\":\"a\",\"op\":\"-U\"}\n{\"k\":\"a\",\"op\":\"+U\"}\n"
        );
    }

    #[test]
    fn encodes_nested_and_special_values() {
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
        ]);
        let strs = StringArray::from(vec![Some("x\u{1}\t"), None]);
        let f64s = Float64Array::from(vec![f64::NAN, 0.1]);
        let st = StructArray::from(vec![
            (
                Arc::new(Field::new("s", DataType::Utf8, true)),
                Arc::new(strs) as ArrayRef,
            ),
            (
                Arc::new(Field::new("f", DataType::Float64, true)),
                Arc::new(f64s) as ArrayRef,
            ),
        ]);
        let batch = RecordBatch::try_from_iter(vec![
            ("l", Arc::new(list) as ArrayRef),
            ("st", Arc::new(st) as ArrayRef),
        ])
        .unwrap();
        assert_eq!(
            encode_to_string(&batch).unwrap(),
            "{\"l\":[1,null],\"st\":{\"s\":\"x\\u0001\\t\",\"f\":null}}\n{\"l\":null,\"st\":{\"s\":null,\"f\":0.1}}\n"
        );
    }

    #[test]
    fn decimals_render_with_their_scale() {
        let mut out = Vec::new();
        for (v, s) in [(1250, 2), (-5, 3), (0, 2), (7, 0), (7, -2)] {
            write_decimal(&mut out, v, s);
            out.push(b' ');
        }
        assert_eq!(String::from_utf8(out).unwrap(), "12.50 -0.005 0.00 7 700 ");
    }
}
