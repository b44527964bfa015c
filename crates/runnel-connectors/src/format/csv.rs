//! CSV with a header row ↔ RecordBatch; columns are matched to the header by name.
//!
//! A column missing from the header is NULL; an empty field is NULL except in
//! STRING columns. A record whose field count differs from the header's, or
//! with a field that does not convert, is a [`Reject`].

use std::borrow::Cow;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use base64::Engine as _;
use csv::ByteRecord;
use runnel_common::time::format_timestamp;

use super::{Cell, Columns, Decoded, Reject, convert_text};
use crate::ConnectorError;

/// The CSV reader settings every runnel CSV input uses: header row, `,`, `"` quoting.
pub fn reader_builder() -> csv::ReaderBuilder {
    let mut b = csv::ReaderBuilder::new();
    // Field-count mismatches become rejects with a reason instead of read errors.
    b.has_headers(true).flexible(true);
    b
}

/// Decodes CSV records into batches of the table's schema.
pub struct CsvDecoder {
    schema: SchemaRef,
    columns: Columns,
    /// For each column, its field index in the header.
    mapping: Vec<Option<usize>>,
    header_len: usize,
}

impl CsvDecoder {
    /// A decoder for `schema` reading records laid out like `headers` (matched case-insensitively).
    pub fn try_new(schema: SchemaRef, headers: &ByteRecord) -> Result<Self, ConnectorError> {
        let names: Vec<String> = headers
            .iter()
            .map(|h| String::from_utf8_lossy(h).trim().to_ascii_lowercase())
            .collect();
        let mapping = schema
            .fields()
            .iter()
            .map(|f| {
                let want = f.name().to_ascii_lowercase();
                names.iter().position(|n| *n == want)
            })
            .collect();
        Ok(Self {
            columns: Columns::try_new(schema.clone())?,
            schema,
            mapping,
            header_len: headers.len(),
        })
    }

    /// Decodes records (each carrying its position, for the line number).
    ///
    /// # Errors
    /// Only if Arrow cannot assemble the batch (a runnel bug); bad records are rejects.
    pub fn decode_records<'r>(
        &mut self,
        records: impl Iterator<Item = &'r ByteRecord>,
    ) -> Result<Decoded, ConnectorError> {
        let mut rejects = Vec::new();
        for record in records {
            match self.decode_row(record) {
                Ok(cells) => self.columns.append_row(cells),
                Err(reason) => rejects.push(Reject {
                    line: record.position().map_or(0, |p| p.line() as usize),
                    reason,
                    raw: raw_bytes(record),
                }),
            }
        }
        Ok(Decoded {
            batch: self.columns.finish()?,
            rejects,
        })
    }

    fn decode_row<'r>(&self, record: &'r ByteRecord) -> Result<Vec<Cell<'r>>, String> {
        if record.len() != self.header_len {
            return Err(format!(
                "expected {} fields as in the header, got {}",
                self.header_len,
                record.len()
            ));
        }
        let mut cells = Vec::with_capacity(self.mapping.len());
        for (field, idx) in self.schema.fields().iter().zip(&self.mapping) {
            let Some(bytes) = idx.and_then(|i| record.get(i)) else {
                cells.push(Cell::Null);
                continue;
            };
            let text = std::str::from_utf8(bytes)
                .map_err(|_| format!("column '{}': invalid UTF-8", field.name()))?;
            if text.is_empty() && field.data_type() != &DataType::Utf8 {
                cells.push(Cell::Null);
                continue;
            }
            let cell = convert_text(field.data_type(), Cow::Borrowed(text)).map_err(|why| {
                if why.starts_with("expected") {
                    format!("column '{}': {}, got {:?}", field.name(), why, text)
                } else {
                    format!("column '{}': {}", field.name(), why)
                }
            })?;
            cells.push(cell);
        }
        Ok(cells)
    }
}

/// The record written back as one CSV line (without the line end).
fn raw_bytes(record: &ByteRecord) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    if w.write_byte_record(record).is_err() {
        return record.as_slice().to_vec();
    }
    let mut out = w.into_inner().unwrap_or_default();
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    out
}

/// Decodes a whole CSV buffer with its header row; for tests and small inputs.
pub fn decode_all(schema: SchemaRef, bytes: &[u8]) -> Result<Decoded, ConnectorError> {
    let mut reader = reader_builder().from_reader(bytes);
    let headers = reader
        .byte_headers()
        .map_err(|e| ConnectorError::Other(format!("reading CSV header: {e}")))?
        .clone();
    let mut decoder = CsvDecoder::try_new(schema, &headers)?;
    let mut records = Vec::new();
    let mut rejects = Vec::new();
    loop {
        let mut r = ByteRecord::new();
        match reader.read_byte_record(&mut r) {
            Ok(true) => records.push(r),
            Ok(false) => break,
            Err(e) => rejects.push(Reject {
                line: e.position().map_or(0, |p| p.line() as usize),
                reason: format!("invalid CSV: {e}"),
                raw: Vec::new(),
            }),
        }
    }
    let mut d = decoder.decode_records(records.iter())?;
    d.rejects.extend(rejects);
    d.rejects.sort_by_key(|r| r.line);
    Ok(d)
}

/// Encodes batches as CSV rows; the header is written once with [`CsvEncoder::header`].
#[derive(Debug, Default, Clone, Copy)]
pub struct CsvEncoder;

impl CsvEncoder {
    /// Appends the header row (column names) of `schema` to `out`.
    pub fn header(&self, schema: &SchemaRef, out: &mut Vec<u8>) -> Result<(), ConnectorError> {
        let mut w = writer(out);
        w.write_record(schema.fields().iter().map(|f| f.name().as_bytes()))
            .map_err(|e| ConnectorError::Other(format!("CSV encoding: {e}")))?;
        w.flush().map_err(|e| ConnectorError::io("CSV encoding", e))
    }

    /// Appends one CSV row per row of `batch` to `out`; NULL is an empty field.
    pub fn encode(&self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), ConnectorError> {
        let opts = FormatOptions::default();
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()?;
        let mut w = writer(out);
        let mut row: Vec<String> = Vec::with_capacity(batch.num_columns());
        for i in 0..batch.num_rows() {
            row.clear();
            for (col, f) in batch.columns().iter().zip(&formatters) {
                row.push(if col.is_null(i) {
                    String::new()
                } else {
                    match col.data_type() {
                        DataType::Timestamp(TimeUnit::Millisecond, _) => format_timestamp(
                            col.as_primitive::<arrow::datatypes::TimestampMillisecondType>()
                                .value(i),
                        ),
                        DataType::Binary => base64::engine::general_purpose::STANDARD
                            .encode(col.as_binary::<i32>().value(i)),
                        _ => f.value(i).to_string(),
                    }
                });
            }
            w.write_record(&row)
                .map_err(|e| ConnectorError::Other(format!("CSV encoding: {e}")))?;
        }
        w.flush().map_err(|e| ConnectorError::io("CSV encoding", e))
    }
}

fn writer(out: &mut Vec<u8>) -> csv::Writer<&mut Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{Field, Schema};

    use super::*;
    use crate::format::json::encode_to_string;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("price", DataType::Decimal128(8, 2), true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("missing", DataType::Float64, true),
        ]))
    }

    #[test]
    fn decodes_by_header_name_and_rejects_bad_rows() {
        let input = b"TS,Name,id,price,ok\n2026-01-01T00:00:10.123Z,a,1,1.5,true\n1000,\"b,c\",2,,false\nx,d,three,1,true\n5,e,4\n,,5,2.25,\n";
        let d = decode_all(schema(), input).unwrap();
        let reasons: Vec<(usize, &str)> = d
            .rejects
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (4, "column 'id': expected BIGINT, got \"three\""),
                (5, "expected 5 fields as in the header, got 3"),
            ]
        );
        assert_eq!(d.rejects[0].raw, b"x,d,three,1,true".to_vec());
        let text = encode_to_string(&d.batch.unwrap()).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"id":1,"name":"a","price":1.50,"ok":true,"ts":"2026-01-01T00:00:10.123Z","missing":null}"#,
                "\n",
                r#"{"id":2,"name":"b,c","price":null,"ok":false,"ts":"1970-01-01T00:00:01.000Z","missing":null}"#,
                "\n",
                r#"{"id":5,"name":"","price":2.25,"ok":null,"ts":null,"missing":null}"#,
                "\n",
            )
        );
    }

    #[test]
    fn encodes_with_header() {
        let d = decode_all(schema(), b"id,name,price,ts\n1,\"x,y\",3.5,0\n").unwrap();
        let mut out = Vec::new();
        CsvEncoder.header(&schema(), &mut out).unwrap();
        CsvEncoder.encode(&d.batch.unwrap(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id,name,price,ok,ts,missing\n1,\"x,y\",3.50,,1970-01-01T00:00:00.000Z,\n"
        );
    }
}
