//! Flink SQL type names ↔ Arrow data types.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, TimeUnit};

/// The Arrow type of a Flink SQL type name with its optional parameters,
/// e.g. `("DECIMAL", [10, 2])`. `None` if runnel does not support the type.
pub fn arrow_type(name: &str, params: &[u64]) -> Option<DataType> {
    let name = name.to_ascii_uppercase();
    Some(match name.as_str() {
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "TINYINT" => DataType::Int8,
        "SMALLINT" => DataType::Int16,
        "INT" | "INTEGER" => DataType::Int32,
        "BIGINT" => DataType::Int64,
        "FLOAT" | "REAL" => DataType::Float32,
        "DOUBLE" => DataType::Float64,
        "DECIMAL" | "NUMERIC" | "DEC" => {
            let p = params.first().copied().unwrap_or(10);
            let s = params.get(1).copied().unwrap_or(0);
            if p == 0 || p > 38 || s > p {
                return None;
            }
            DataType::Decimal128(p as u8, s as i8)
        }
        "VARCHAR" | "STRING" | "CHAR" | "TEXT" => DataType::Utf8,
        "BYTES" | "VARBINARY" | "BINARY" | "BLOB" => DataType::Binary,
        "TIMESTAMP" => DataType::Timestamp(TimeUnit::Millisecond, None),
        "TIMESTAMP_LTZ" => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        "DATE" => DataType::Date32,
        _ => return None,
    })
}

/// Flink's `MAP<key, value>`: Arrow's map of non-null keys to nullable values.
pub fn map_type(key: DataType, value: DataType) -> DataType {
    let entries = Fields::from(vec![
        Field::new("key", key, false),
        Field::new("value", value, true),
    ]);
    DataType::Map(
        Arc::new(Field::new("entries", DataType::Struct(entries), false)),
        false,
    )
}

/// Flink's `ARRAY<element>`: an Arrow list of nullable elements.
pub fn array_type(element: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("element", element, true)))
}

/// Flink's `ROW<name type, …>`: an Arrow struct of nullable fields.
pub fn row_type(fields: Vec<(String, DataType)>) -> DataType {
    DataType::Struct(
        fields
            .into_iter()
            .map(|(name, dt)| Field::new(name, dt, true))
            .collect(),
    )
}

/// The key and value types of a `MAP<key, value>` type.
pub fn map_types(dt: &DataType) -> Option<(&DataType, &DataType)> {
    let DataType::Map(entries, _) = dt else {
        return None;
    };
    let DataType::Struct(fields) = entries.data_type() else {
        return None;
    };
    match fields.iter().collect::<Vec<_>>().as_slice() {
        [k, v] => Some((k.data_type(), v.data_type())),
        _ => None,
    }
}

/// The Flink SQL name of an Arrow type, for error messages.
pub fn sql_name(dt: &DataType) -> String {
    match dt {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BYTES".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP(3)".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP_LTZ(3)".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Null => "NULL".into(),
        DataType::Map(..) => match map_types(dt) {
            Some((k, v)) => format!("MAP<{}, {}>", sql_name(k), sql_name(v)),
            None => format!("{dt}"),
        },
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            format!("ARRAY<{}>", sql_name(f.data_type()))
        }
        DataType::Struct(fields) => format!(
            "ROW<{}>",
            fields
                .iter()
                .map(|f| format!("{} {}", f.name(), sql_name(f.data_type())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("{other}"),
    }
}

/// Names of the supported types, for "unknown type" errors.
pub const SUPPORTED: &str = "BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, FLOAT, DOUBLE, DECIMAL(p,s), VARCHAR/STRING, BYTES/VARBINARY, DATE, TIMESTAMP(3), TIMESTAMP_LTZ(3), ARRAY<element>, ROW<name type, …>, MAP<key, value>";
