//! Flink's string and conditional functions DataFusion lacks or names differently:
//! `REGEXP_EXTRACT`, `SPLIT_INDEX`, `IF`, `IFNULL`, `JSON_VALUE`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringBuilder};
use arrow::datatypes::DataType;
use datafusion_common::{DataFusionError, Result, plan_err};
use datafusion_expr::ScalarUDF;

use super::simple::immutable;

/// The functions of this file.
pub fn all() -> Vec<Arc<ScalarUDF>> {
    vec![
        immutable(
            "regexp_extract",
            coerce_regexp_extract,
            |_| Ok(DataType::Utf8),
            regexp_extract,
        ),
        immutable(
            "split_index",
            coerce_split_index,
            |_| Ok(DataType::Utf8),
            split_index,
        ),
        immutable(
            "if",
            coerce_if,
            |t| Ok(t.get(1).cloned().unwrap_or(DataType::Null)),
            if_,
        ),
        immutable(
            "ifnull",
            coerce_ifnull,
            |t| Ok(t.first().cloned().unwrap_or(DataType::Null)),
            ifnull,
        ),
        immutable(
            "json_value",
            coerce_json_value,
            |_| Ok(DataType::Utf8),
            json_value,
        ),
    ]
}

fn is_text(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    )
}

fn coerce_regexp_extract(args: &[DataType]) -> Result<Vec<DataType>> {
    match args {
        [a, b] if is_text(a) && is_text(b) => Ok(vec![DataType::Utf8, DataType::Utf8]),
        [a, b, i] if is_text(a) && is_text(b) && (i.is_integer() || i.is_null()) => {
            Ok(vec![DataType::Utf8, DataType::Utf8, DataType::Int64])
        }
        _ => plan_err!(
            "REGEXP_EXTRACT(string, regex[, group]) needs STRING, STRING and INT, got {args:?}"
        ),
    }
}

/// `REGEXP_EXTRACT(s, regex[, group])`: group `group` (default 1; 0 = the whole match) of
/// the first match, NULL when nothing matches or the group does not exist.
fn regexp_extract(_: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let text = args[0].as_string::<i32>();
    let patterns = args[1].as_string::<i32>();
    let groups = args
        .get(2)
        .map(|a| a.as_primitive::<arrow::datatypes::Int64Type>());
    let mut cache: Option<(String, regex::Regex)> = None;
    let mut out = StringBuilder::with_capacity(rows, rows * 8);
    for i in 0..rows {
        if text.is_null(i) || patterns.is_null(i) || groups.is_some_and(|g| g.is_null(i)) {
            out.append_null();
            continue;
        }
        let p = patterns.value(i);
        if cache.as_ref().is_none_or(|(c, _)| c != p) {
            let re = regex::Regex::new(p).map_err(|e| {
                DataFusionError::Execution(format!("REGEXP_EXTRACT: invalid regex '{p}': {e}"))
            })?;
            cache = Some((p.to_string(), re));
        }
        let group = groups.map_or(1, |g| g.value(i));
        let found = cache.as_ref().and_then(|(_, re)| {
            let caps = re.captures(text.value(i))?;
            let m = caps.get(usize::try_from(group).ok()?)?;
            Some(m.as_str().to_string())
        });
        out.append_option(found);
    }
    Ok(Arc::new(out.finish()))
}

fn coerce_split_index(args: &[DataType]) -> Result<Vec<DataType>> {
    match args {
        [a, b, i] if is_text(a) && is_text(b) && (i.is_integer() || i.is_null()) => {
            Ok(vec![DataType::Utf8, DataType::Utf8, DataType::Int64])
        }
        _ => plan_err!(
            "SPLIT_INDEX(string, separator, index) needs STRING, STRING and INT, got {args:?}"
        ),
    }
}

/// `SPLIT_INDEX(s, sep, i)`: the `i`-th (from 0) piece of `s` split at `sep`; NULL when
/// out of range.
fn split_index(_: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let text = args[0].as_string::<i32>();
    let seps = args[1].as_string::<i32>();
    let idx = args[2].as_primitive::<arrow::datatypes::Int64Type>();
    let mut out = StringBuilder::with_capacity(rows, rows * 8);
    for i in 0..rows {
        if text.is_null(i) || seps.is_null(i) || idx.is_null(i) || seps.value(i).is_empty() {
            out.append_null();
            continue;
        }
        let piece = usize::try_from(idx.value(i))
            .ok()
            .and_then(|n| text.value(i).split(seps.value(i)).nth(n));
        out.append_option(piece);
    }
    Ok(Arc::new(out.finish()))
}

/// The type both branches become: the same type, the wider number, else STRING.
fn common(a: &DataType, b: &DataType) -> DataType {
    match (a, b) {
        (a, b) if a == b => a.clone(),
        (DataType::Null, t) | (t, DataType::Null) => t.clone(),
        (a, b) if a.is_integer() && b.is_integer() => DataType::Int64,
        (a, b) if a.is_numeric() && b.is_numeric() => DataType::Float64,
        _ => DataType::Utf8,
    }
}

fn coerce_if(args: &[DataType]) -> Result<Vec<DataType>> {
    match args {
        [DataType::Boolean | DataType::Null, a, b] => {
            let t = common(a, b);
            Ok(vec![DataType::Boolean, t.clone(), t])
        }
        [c, _, _] => plan_err!("IF(condition, then, else) needs a BOOLEAN condition, got {c}"),
        _ => plan_err!(
            "IF takes three arguments (condition, then, else), got {}",
            args.len()
        ),
    }
}

/// `IF(c, a, b)`: `a` where `c` is true, else `b` (NULL conditions take `b`).
fn if_(_: &str, args: &[ArrayRef], _rows: usize) -> Result<ArrayRef> {
    let cond = args[0].as_boolean();
    // A NULL condition is not true.
    let mask: BooleanArray = cond.iter().map(|c| Some(c == Some(true))).collect();
    Ok(arrow::compute::kernels::zip::zip(
        &mask, &args[1], &args[2],
    )?)
}

fn coerce_ifnull(args: &[DataType]) -> Result<Vec<DataType>> {
    match args {
        [a, b] => {
            let t = common(a, b);
            Ok(vec![t.clone(), t])
        }
        _ => plan_err!(
            "IFNULL(value, default) takes two arguments, got {}",
            args.len()
        ),
    }
}

/// `IFNULL(a, b)`: `a`, or `b` where `a` is NULL.
fn ifnull(_: &str, args: &[ArrayRef], _rows: usize) -> Result<ArrayRef> {
    let mask = arrow::compute::is_not_null(&args[0])?;
    Ok(arrow::compute::kernels::zip::zip(
        &mask, &args[0], &args[1],
    )?)
}

fn coerce_json_value(args: &[DataType]) -> Result<Vec<DataType>> {
    match args {
        [a, b] if is_text(a) && is_text(b) => Ok(vec![DataType::Utf8, DataType::Utf8]),
        _ => plan_err!(
            "JSON_VALUE(json, path) needs a STRING and a STRING path such as '$.a.b[0]', got {args:?}"
        ),
    }
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// `$.a.b[0]`, `$['a']`; `None` if the path is not one runnel reads.
fn json_path(path: &str) -> Option<Vec<Step>> {
    let rest = path.trim().strip_prefix('$')?;
    let chars: Vec<char> = rest.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && chars[j] != '.' && chars[j] != '[' {
                    j += 1;
                }
                if j == start {
                    return None;
                }
                steps.push(Step::Key(chars[start..j].iter().collect()));
                i = j;
            }
            '[' => {
                let close = chars[i..].iter().position(|c| *c == ']')? + i;
                let inner: String = chars[i + 1..close].iter().collect();
                let inner = inner.trim();
                let quoted = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
                match quoted {
                    Some(k) => steps.push(Step::Key(k.to_string())),
                    None => steps.push(Step::Index(inner.parse().ok()?)),
                }
                i = close + 1;
            }
            _ => return None,
        }
    }
    Some(steps)
}

/// `JSON_VALUE(json, path)`: the scalar at `path` as text; NULL when the text is not
/// JSON, the path leads nowhere, or to an object or array (Flink's default behaviour).
fn json_value(_: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let docs = args[0].as_string::<i32>();
    let paths = args[1].as_string::<i32>();
    let mut cache: Option<(String, Vec<Step>)> = None;
    let mut out = StringBuilder::with_capacity(rows, rows * 8);
    for i in 0..rows {
        if docs.is_null(i) || paths.is_null(i) {
            out.append_null();
            continue;
        }
        let p = paths.value(i);
        if cache.as_ref().is_none_or(|(c, _)| c != p) {
            let steps = json_path(p).ok_or_else(|| {
                DataFusionError::Execution(format!(
                    "JSON_VALUE: path '{p}' is not supported; use $.key, $.key[0] or $['key']"
                ))
            })?;
            cache = Some((p.to_string(), steps));
        }
        let steps = cache.as_ref().map_or(&[][..], |(_, s)| s.as_slice());
        let value = serde_json::from_str::<serde_json::Value>(docs.value(i))
            .ok()
            .and_then(|doc| {
                let mut v = &doc;
                for s in steps {
                    v = match s {
                        Step::Key(k) => v.get(k)?,
                        Step::Index(n) => v.get(*n)?,
                    };
                }
                match v {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    serde_json::Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                }
            });
        out.append_option(value);
    }
    Ok(Arc::new(out.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths() {
        assert_eq!(
            json_path("$.a.b[2]['c d']"),
            Some(vec![
                Step::Key("a".into()),
                Step::Key("b".into()),
                Step::Index(2),
                Step::Key("c d".into())
            ])
        );
        assert_eq!(json_path("a.b"), None);
        assert_eq!(json_path("$."), None);
    }
}
