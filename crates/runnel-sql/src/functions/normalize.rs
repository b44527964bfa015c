//! Normalisation helpers of the cleaning layer, for what DataFusion's library lacks:
//!
//! - `parse_timestamp(text [, 'pattern', …])`: a TIMESTAMP(3) from text in any of the
//!   usual forms — ISO 8601 with `T` or a space, fractions and a zone (`Z`, `+02:00`,
//!   converted to UTC), RFC 2822, `yyyy/MM/dd`, `dd.MM.yyyy`, `dd/MM/yyyy` (day first),
//!   each with an optional `HH:mm[:ss]`, and epoch seconds (up to 11 digits) or
//!   milliseconds (12–14). Given Java patterns (as `TO_TIMESTAMP` takes) they are tried
//!   first, in order. NULL when nothing matches.
//! - `normalize_text(text)`: trimmed, inner runs of white space made one space, and
//!   lower-cased (Unicode case folding by `to_lowercase`).
//! - `convert_unit(x, 'from', 'to')`: a measurement in another unit of the same kind —
//!   temperature (`C`, `F`, `K`), length (`mm`, `cm`, `m`, `km`, `in`, `ft`, `yd`, `mi`),
//!   mass (`mg`, `g`, `kg`, `t`, `oz`, `lb`), pressure (`Pa`, `hPa`, `kPa`, `MPa`, `bar`,
//!   `mbar`, `psi`, `atm`, `mmHg`), speed (`m/s`, `km/h`, `mph`, `kn`), time (`ms`, `s`,
//!   `min`, `h`, `d`). Unit names ignore case where that is unambiguous (`mbar`/`MPa` aside).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Float64Type, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use datafusion_common::{DataFusionError, Result, plan_err};
use datafusion_expr::ScalarUDF;

use super::simple::immutable;

/// The functions of this file.
pub fn all() -> Vec<Arc<ScalarUDF>> {
    vec![
        immutable(
            "parse_timestamp",
            coerce_parse_timestamp,
            |_| Ok(DataType::Timestamp(TimeUnit::Millisecond, None)),
            parse_timestamp,
        ),
        immutable(
            "normalize_text",
            |args| match args {
                [t] if is_text(t) => Ok(vec![DataType::Utf8]),
                _ => plan_err!("normalize_text(text) takes one string"),
            },
            |_| Ok(DataType::Utf8),
            normalize_text,
        ),
        immutable(
            "convert_unit",
            |args| match args {
                [x, f, t] if (x.is_numeric() || x.is_null()) && is_text(f) && is_text(t) => {
                    Ok(vec![DataType::Float64, DataType::Utf8, DataType::Utf8])
                }
                _ => plan_err!("convert_unit(x, 'from', 'to') takes a number and two unit names"),
            },
            |_| Ok(DataType::Float64),
            convert_unit,
        ),
    ]
}

fn is_text(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    )
}

fn coerce_parse_timestamp(args: &[DataType]) -> Result<Vec<DataType>> {
    if args.is_empty() || !args.iter().all(is_text) {
        return plan_err!("parse_timestamp(text [, 'pattern', …]) takes strings");
    }
    Ok(vec![DataType::Utf8; args.len()])
}

/// Forms tried after the caller's patterns, as chrono formats.
const FORMATS: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M:%S%.f",
    "%Y/%m/%d %H:%M",
    "%d.%m.%Y %H:%M:%S%.f",
    "%d.%m.%Y %H:%M",
    "%d/%m/%Y %H:%M:%S%.f",
    "%d/%m/%Y %H:%M",
    "%Y%m%dT%H%M%S",
];

const DATES: &[&str] = &["%Y-%m-%d", "%Y/%m/%d", "%d.%m.%Y", "%d/%m/%Y", "%Y%m%d"];

/// Milliseconds since the epoch (UTC) of `text` in one of the usual forms.
pub(crate) fn parse_any(text: &str) -> Option<i64> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if t.bytes().all(|b| b.is_ascii_digit()) && t.len() != 8 {
        let n: i64 = t.parse().ok()?;
        return match t.len() {
            1..=11 => n.checked_mul(1000),
            12..=14 => Some(n),
            _ => None,
        };
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.timestamp_millis());
    }
    // ISO with a zone but a space instead of 'T', or a zone without a colon.
    for f in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(d) = DateTime::parse_from_str(t, f) {
            return Some(d.timestamp_millis());
        }
    }
    if let Some(naive) = t.strip_suffix('Z').or_else(|| t.strip_suffix(" UTC"))
        && let Some(ms) = parse_naive(naive)
    {
        return Some(ms);
    }
    if let Ok(d) = DateTime::parse_from_rfc2822(t) {
        return Some(d.timestamp_millis());
    }
    parse_naive(t)
}

fn parse_naive(t: &str) -> Option<i64> {
    for f in FORMATS {
        if let Ok(v) = NaiveDateTime::parse_from_str(t, f) {
            return Some(v.and_utc().timestamp_millis());
        }
    }
    for f in DATES {
        if let Ok(d) = NaiveDate::parse_from_str(t, f) {
            return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
        }
    }
    None
}

fn parse_timestamp(_: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let text = args[0].as_string::<i32>();
    let patterns: Vec<_> = args[1..].iter().map(|a| a.as_string::<i32>()).collect();
    let mut chrono_of: Vec<(String, String)> = Vec::new();
    let mut out = TimestampMillisecondBuilder::with_capacity(rows);
    for i in 0..rows {
        if text.is_null(i) {
            out.append_null();
            continue;
        }
        let mut found = None;
        for p in patterns.iter().filter(|p| p.is_valid(i)) {
            let java = p.value(i);
            let chrono = match chrono_of.iter().find(|(j, _)| j == java) {
                Some((_, c)) => c.clone(),
                None => {
                    let c = super::time::java_pattern(java)
                        .map_err(|e| DataFusionError::Execution(format!("PARSE_TIMESTAMP: {e}")))?;
                    chrono_of.push((java.to_string(), c.clone()));
                    c
                }
            };
            if let Some(v) = super::time::parse_with(text.value(i), &chrono) {
                found = Some(v.and_utc().timestamp_millis());
                break;
            }
        }
        out.append_option(found.or_else(|| parse_any(text.value(i))));
    }
    Ok(Arc::new(out.finish()))
}

fn normalize_text(_: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let text = args[0].as_string::<i32>();
    let mut out = StringBuilder::with_capacity(rows, text.values().len());
    let mut buf = String::new();
    for i in 0..rows {
        if text.is_null(i) {
            out.append_null();
            continue;
        }
        buf.clear();
        for word in text.value(i).split_whitespace() {
            if !buf.is_empty() {
                buf.push(' ');
            }
            buf.push_str(&word.to_lowercase());
        }
        out.append_value(&buf);
    }
    Ok(Arc::new(out.finish()))
}

/// A unit's kind and how to reach the kind's base unit: base = x * scale + offset.
fn unit(name: &str) -> Option<(&'static str, f64, f64)> {
    let exact = match name.trim() {
        "MPa" => Some(("pressure", 1e6, 0.0)),
        "mbar" => Some(("pressure", 100.0, 0.0)),
        "Pa" => Some(("pressure", 1.0, 0.0)),
        _ => None,
    };
    if exact.is_some() {
        return exact;
    }
    let n = name.trim().to_ascii_lowercase();
    Some(match n.as_str() {
        "c" | "°c" | "celsius" => ("temperature", 1.0, 273.15),
        "f" | "°f" | "fahrenheit" => ("temperature", 5.0 / 9.0, 273.15 - 32.0 * 5.0 / 9.0),
        "k" | "kelvin" => ("temperature", 1.0, 0.0),
        "mm" => ("length", 1e-3, 0.0),
        "cm" => ("length", 1e-2, 0.0),
        "m" => ("length", 1.0, 0.0),
        "km" => ("length", 1e3, 0.0),
        "in" | "inch" => ("length", 0.0254, 0.0),
        "ft" | "foot" | "feet" => ("length", 0.3048, 0.0),
        "yd" => ("length", 0.9144, 0.0),
        "mi" | "mile" => ("length", 1609.344, 0.0),
        "mg" => ("mass", 1e-6, 0.0),
        "g" => ("mass", 1e-3, 0.0),
        "kg" => ("mass", 1.0, 0.0),
        "t" => ("mass", 1e3, 0.0),
        "oz" => ("mass", 0.028_349_523_125, 0.0),
        "lb" => ("mass", 0.453_592_37, 0.0),
        "pa" => ("pressure", 1.0, 0.0),
        "hpa" => ("pressure", 100.0, 0.0),
        "kpa" => ("pressure", 1e3, 0.0),
        "bar" => ("pressure", 1e5, 0.0),
        "psi" => ("pressure", 6_894.757_293_168, 0.0),
        "atm" => ("pressure", 101_325.0, 0.0),
        "mmhg" => ("pressure", 133.322_387_415, 0.0),
        "m/s" => ("speed", 1.0, 0.0),
        "km/h" | "kph" => ("speed", 1.0 / 3.6, 0.0),
        "mph" => ("speed", 0.447_04, 0.0),
        "kn" | "knot" | "knots" => ("speed", 1852.0 / 3600.0, 0.0),
        "ms" => ("time", 1e-3, 0.0),
        "s" => ("time", 1.0, 0.0),
        "min" => ("time", 60.0, 0.0),
        "h" => ("time", 3600.0, 0.0),
        "d" => ("time", 86_400.0, 0.0),
        _ => return None,
    })
}

/// Whether `from` converts to `to` (checked while planning when both are constants).
///
/// # Errors
/// An unknown unit, or units of different kinds.
pub(crate) fn check_units(from: &str, to: &str) -> std::result::Result<(), String> {
    let kind = |u: &str| {
        unit(u).map(|(k, _, _)| k).ok_or_else(|| {
            format!(
                "CONVERT_UNIT: unknown unit '{u}' (temperature C F K; length mm cm m km in ft \
                 yd mi; mass mg g kg t oz lb; pressure Pa hPa kPa MPa bar mbar psi atm mmHg; \
                 speed m/s km/h mph kn; time ms s min h d)"
            )
        })
    };
    let (a, b) = (kind(from)?, kind(to)?);
    if a != b {
        return Err(format!("CONVERT_UNIT: '{from}' is a {a} and '{to}' a {b}"));
    }
    Ok(())
}

fn convert_unit(_: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let x = args[0].as_primitive::<Float64Type>();
    let (from, to) = (args[1].as_string::<i32>(), args[2].as_string::<i32>());
    let mut out = Float64Builder::with_capacity(rows);
    for i in 0..rows {
        if x.is_null(i) || from.is_null(i) || to.is_null(i) {
            out.append_null();
            continue;
        }
        let lookup = |u: &str| {
            unit(u).ok_or_else(|| {
                DataFusionError::Execution(format!("CONVERT_UNIT: unknown unit '{u}'"))
            })
        };
        let (kind_from, scale_from, offset_from) = lookup(from.value(i))?;
        let (kind_to, scale_to, offset_to) = lookup(to.value(i))?;
        if kind_from != kind_to {
            return Err(DataFusionError::Execution(format!(
                "CONVERT_UNIT: '{}' is a {kind_from} and '{}' a {kind_to}",
                from.value(i),
                to.value(i)
            )));
        }
        let base = x.value(i) * scale_from + offset_from;
        out.append_value((base - offset_to) / scale_to);
    }
    Ok(Arc::new(out.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms_to_the_same_instant() {
        let want = parse_any("2026-03-01T12:30:00Z").unwrap();
        for t in [
            "2026-03-01 12:30:00",
            "2026-03-01T12:30:00.000",
            "2026-03-01T14:30:00+02:00",
            "2026-03-01 14:30:00+0200",
            "Sun, 1 Mar 2026 12:30:00 +0000",
            "2026/03/01 12:30",
            "01.03.2026 12:30:00",
            "01/03/2026 12:30",
            "1772368200",
            "1772368200000",
            " 2026-03-01 12:30:00 UTC ",
        ] {
            assert_eq!(parse_any(t), Some(want), "{t}");
        }
        assert_eq!(parse_any("yesterday"), None);
        assert_eq!(parse_any("2026-02-30"), None);
    }

    #[test]
    fn converts_units_of_one_kind() {
        let c = |x: f64, f: &str, t: &str| {
            let (_, sf, of) = unit(f).unwrap();
            let (_, st, ot) = unit(t).unwrap();
            ((x * sf + of) - ot) / st
        };
        assert!((c(212.0, "F", "C") - 100.0).abs() < 1e-9);
        assert!((c(0.0, "C", "K") - 273.15).abs() < 1e-9);
        assert!((c(1.0, "bar", "psi") - 14.503_773_8).abs() < 1e-6);
        assert!((c(100.0, "km/h", "m/s") - 27.777_777_8).abs() < 1e-6);
        assert!((c(1013.25, "hPa", "atm") - 1.0).abs() < 1e-9);
        assert!(unit("furlong").is_none());
    }
}
