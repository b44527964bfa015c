//! A table's columns read from what is stored, for `runnel query`'s shorthand (`SELECT …
//! FROM <topic or path>` with no `CREATE TABLE`): a log topic's first JSON records, a
//! Parquet file's footer and its Hive partition directories, a Delta table's schema.
//!
//! Every result is an ordinary [`TableSpec`] for an existing connector (`log`,
//! `filesystem`, `delta`), so the query then runs like any declared table.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use runnel_common::{Options, TableSpec};
use serde_json::Value;

/// Records of a topic read to infer its columns.
pub const SAMPLE_RECORDS: usize = 1000;

/// Reading a topic or path failed, or nothing there could be a table.
pub type InferResult = Result<Option<TableSpec>, String>;

fn spec(
    name: &str,
    fields: Vec<Field>,
    options: Vec<(&str, String)>,
    partitions: usize,
) -> TableSpec {
    let count = fields.len();
    TableSpec {
        name: name.to_string(),
        schema: Arc::new(Schema::new(fields)),
        watermark: None,
        options: Options::new(options.into_iter().map(|(k, v)| (k.to_string(), v))),
        line: 0,
        metadata: Vec::new(),
        primary_key: Vec::new(),
        partition_keys: (count - partitions..count).collect(),
    }
}

/// A bounded read, from the start, of `topic` of `log`, with the columns of its first
/// [`SAMPLE_RECORDS`] JSON records (`None` when the log has no such topic).
///
/// # Errors
/// The topic cannot be read, or its first records are not JSON objects.
pub fn log_topic(log: &runnel_log::Log, name: &str) -> InferResult {
    let Some(topic) = log.topic(name) else {
        return Ok(None);
    };
    let mut columns: Vec<(String, Option<DataType>)> = Vec::new();
    let mut seen = 0;
    'partitions: for p in topic.partitions() {
        let mut offset = p.start_offset();
        while offset < p.end_offset() {
            let records = p
                .read(offset, SAMPLE_RECORDS, 16 << 20)
                .map_err(|e| format!("reading topic '{name}': {e}"))?;
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            for r in records {
                let value: Value = serde_json::from_slice(&r.value).map_err(|e| {
                    format!(
                        "record {} of partition {} is not JSON ({e}); declare the table \
                         with CREATE TABLE … WITH ('connector' = 'log', 'format' = 'raw')",
                        r.offset,
                        p.id()
                    )
                })?;
                let Value::Object(map) = value else {
                    return Err(format!(
                        "record {} of partition {} is not a JSON object",
                        r.offset,
                        p.id()
                    ));
                };
                for (key, v) in &map {
                    let t = json_type(v);
                    match columns.iter_mut().find(|(k, _)| k == key) {
                        Some((_, have)) => *have = merge(have.take(), t),
                        None => columns.push((key.clone(), t)),
                    }
                }
                seen += 1;
                if seen >= SAMPLE_RECORDS {
                    break 'partitions;
                }
            }
        }
    }
    if seen == 0 {
        return Err(format!(
            "topic '{name}' is empty, so its columns cannot be inferred; declare it with \
             CREATE TABLE {name} (…) WITH ('connector' = 'log', 'topic' = '{name}', 'bounded' = 'true')"
        ));
    }
    let fields = columns
        .into_iter()
        .map(|(k, t)| Field::new(k, t.unwrap_or(DataType::Utf8), true))
        .collect();
    Ok(Some(spec(
        name,
        fields,
        vec![
            ("connector", "log".into()),
            ("topic", name.into()),
            ("bounded", "true".into()),
            ("scan.startup.mode", "earliest".into()),
        ],
        0,
    )))
}

/// The SQL type of a JSON value (`None` for null: decided by the other records).
fn json_type(v: &Value) -> Option<DataType> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(_) => DataType::Boolean,
        Value::Number(n) if n.is_i64() => DataType::Int64,
        Value::Number(_) => DataType::Float64,
        Value::String(s) if looks_like_time(s) => DataType::Timestamp(TimeUnit::Millisecond, None),
        Value::String(_) => DataType::Utf8,
        Value::Array(items) => {
            let element = items
                .iter()
                .map(json_type)
                .fold(None, merge)
                .unwrap_or(DataType::Utf8);
            runnel_common::types::array_type(element)
        }
        Value::Object(map) => DataType::Struct(Fields::from(
            map.iter()
                .map(|(k, v)| Field::new(k, json_type(v).unwrap_or(DataType::Utf8), true))
                .collect::<Vec<_>>(),
        )),
    })
}

/// `2026-12-06T10:00:00Z`, `2026-12-06 10:00:00.123`: a date, a time, nothing else.
fn looks_like_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 19
        && b.len() <= 35
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b' ')
        && b[13] == b':'
        && crate::format::convert_text(
            &DataType::Timestamp(TimeUnit::Millisecond, None),
            std::borrow::Cow::Borrowed(s),
        )
        .is_ok()
}

/// One type for two records' values of a column: numbers widen to DOUBLE, anything
/// else that differs is read as STRING.
fn merge(a: Option<DataType>, b: Option<DataType>) -> Option<DataType> {
    match (a, b) {
        (None, t) | (t, None) => t,
        (Some(a), Some(b)) if a == b => Some(a),
        (Some(DataType::Int64 | DataType::Float64), Some(DataType::Int64 | DataType::Float64)) => {
            Some(DataType::Float64)
        }
        (Some(DataType::Struct(x)), Some(DataType::Struct(y))) => {
            let mut fields: Vec<Field> = x.iter().map(|f| f.as_ref().clone()).collect();
            for f in y.iter() {
                match fields.iter_mut().find(|g| g.name() == f.name()) {
                    Some(g) => {
                        let t = merge(Some(g.data_type().clone()), Some(f.data_type().clone()));
                        *g = g.clone().with_data_type(t.unwrap_or(DataType::Utf8));
                    }
                    None => fields.push(f.as_ref().clone()),
                }
            }
            Some(DataType::Struct(Fields::from(fields)))
        }
        _ => Some(DataType::Utf8),
    }
}

/// A Parquet file, or a directory of them (Hive partitions `k=v/` becoming STRING
/// columns), read by the `filesystem` connector; `None` when `name` is no such path.
///
/// # Errors
/// The directory holds no Parquet file, or the first one cannot be read.
pub fn parquet_path(name: &str) -> InferResult {
    let root = Path::new(name);
    let is_parquet = |p: &Path| p.extension().is_some_and(|e| e == "parquet");
    let first = if root.is_file() && is_parquet(root) {
        root.to_path_buf()
    } else if root.is_dir() {
        match first_parquet(root).map_err(|e| format!("reading '{name}': {e}"))? {
            Some(f) => f,
            None => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    let file =
        std::fs::File::open(&first).map_err(|e| format!("opening '{}': {e}", first.display()))?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| format!("reading Parquet file '{}': {e}", first.display()))?;
    let mut fields = sql_fields(builder.schema().fields())?;
    // Partition columns: the `k=v` directories between the root and the file.
    let mut partitions = 0;
    if root.is_dir()
        && let Ok(rel) = first.strip_prefix(root)
        && let Some(dirs) = rel.parent()
    {
        for part in dirs.iter() {
            if let Some((k, _)) = part.to_string_lossy().split_once('=')
                && fields.iter().all(|f| f.name() != k)
            {
                fields.push(Field::new(k, DataType::Utf8, true));
                partitions += 1;
            }
        }
    }
    Ok(Some(spec(
        name,
        fields,
        vec![
            ("connector", "filesystem".into()),
            ("path", name.into()),
            ("format", "parquet".into()),
        ],
        partitions,
    )))
}

/// The first `.parquet` file under `dir` in name order (skipping `_` and `.` entries:
/// staging directories, `_SUCCESS`, `_delta_log`).
fn first_parquet(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| !n.to_string_lossy().starts_with(['_', '.']))
        })
        .collect();
    entries.sort();
    for p in &entries {
        if p.is_file() && p.extension().is_some_and(|e| e == "parquet") {
            return Ok(Some(p.clone()));
        }
    }
    for p in &entries {
        if p.is_dir()
            && let Some(f) = first_parquet(p)?
        {
            return Ok(Some(f));
        }
    }
    Ok(None)
}

/// A stored schema's columns as the SQL types runnel reads them into.
///
/// # Errors
/// A column whose type runnel cannot read.
pub fn sql_fields(fields: &Fields) -> Result<Vec<Field>, String> {
    fields
        .iter()
        .map(|f| {
            sql_type(f.data_type())
                .map(|t| Field::new(f.name(), t, true))
                .ok_or_else(|| {
                    format!(
                        "column '{}' has type {}, which runnel does not read",
                        f.name(),
                        f.data_type()
                    )
                })
        })
        .collect()
}

fn sql_type(dt: &DataType) -> Option<DataType> {
    Some(match dt {
        DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::Date32
        | DataType::Utf8
        | DataType::Binary => dt.clone(),
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Float16 => DataType::Float32,
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            DataType::Binary
        }
        DataType::Timestamp(_, None) | DataType::Date64 => {
            DataType::Timestamp(TimeUnit::Millisecond, None)
        }
        DataType::Timestamp(_, Some(_)) => {
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        }
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            runnel_common::types::array_type(sql_type(f.data_type())?)
        }
        DataType::Struct(fields) => DataType::Struct(Fields::from(sql_fields(fields).ok()?)),
        _ => return None,
    })
}

/// What `name` is among what runnel stored, in this order: a topic of `log`, a Delta
/// table, a Parquet file or directory (`None`: none of them).
///
/// # Errors
/// The first of them that exists cannot be read.
pub fn stored(log: Option<&runnel_log::Log>, name: &str) -> InferResult {
    if let Some(log) = log
        && let Some(spec) = log_topic(log, name)?
    {
        return Ok(Some(spec));
    }
    #[cfg(feature = "delta")]
    if let Some(spec) = crate::sink::delta::infer(name)? {
        return Ok(Some(spec));
    }
    parquet_path(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_values_infer_types_that_widen() {
        let t = |v: Value| json_type(&v);
        assert_eq!(t(json!(1)), Some(DataType::Int64));
        assert_eq!(merge(t(json!(1)), t(json!(1.5))), Some(DataType::Float64));
        assert_eq!(merge(t(json!(1)), t(json!("x"))), Some(DataType::Utf8));
        assert_eq!(merge(None, t(json!(true))), Some(DataType::Boolean));
        assert_eq!(
            t(json!("2026-12-06T10:00:00Z")),
            Some(DataType::Timestamp(TimeUnit::Millisecond, None))
        );
        assert_eq!(t(json!("2026-12-06")), Some(DataType::Utf8));
        let Some(DataType::Struct(fields)) = merge(t(json!({"a": 1})), t(json!({"b": "x"}))) else {
            panic!("not a struct")
        };
        assert_eq!(fields.len(), 2);
    }
}
