//! Flink's date and time functions under their Flink names and semantics: patterns are
//! Java `DateTimeFormatter` patterns (`yyyy-MM-dd HH:mm:ss`), not strftime, and
//! timestamps without a time zone are formatted as written (UTC).
//!
//! `DATE_FORMAT`, `TO_TIMESTAMP`, `FROM_UNIXTIME`, `UNIX_TIMESTAMP`, and the field
//! functions `YEAR`, `QUARTER`, `MONTH`, `WEEK`, `DAYOFYEAR`, `DAYOFMONTH`, `DAYOFWEEK`,
//! `HOUR`, `MINUTE`, `SECOND`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};
use datafusion_common::{DataFusionError, Result, plan_err};
use datafusion_expr::ScalarUDF;

use super::simple::{immutable, volatile};

/// Flink's default pattern for text timestamps.
const DEFAULT_PATTERN: &str = "yyyy-MM-dd HH:mm:ss";

const TS_MS: DataType = DataType::Timestamp(TimeUnit::Millisecond, None);

/// The functions of this file.
pub fn all() -> Vec<Arc<ScalarUDF>> {
    let mut v = vec![
        immutable(
            "date_format",
            coerce_date_format,
            |_| Ok(DataType::Utf8),
            date_format,
        ),
        immutable(
            "to_timestamp",
            |args| coerce_text_args("TO_TIMESTAMP(string[, pattern])", args),
            |_| Ok(TS_MS),
            to_timestamp,
        ),
        immutable(
            "from_unixtime",
            coerce_from_unixtime,
            |_| Ok(DataType::Utf8),
            from_unixtime,
        ),
        volatile("proctime", coerce_none, |_| Ok(TS_MS), proctime),
        volatile(
            "unix_timestamp",
            coerce_unix_timestamp,
            |_| Ok(DataType::Int64),
            unix_timestamp,
        ),
        immutable(
            "timestampadd",
            coerce_timestampadd,
            |_| Ok(TS_MS),
            timestampadd,
        ),
        immutable(
            "timestampdiff",
            coerce_timestampdiff,
            |_| Ok(DataType::Int32),
            timestampdiff,
        ),
    ];
    for (name, _) in FIELDS {
        v.push(immutable(
            name,
            coerce_timestamp,
            |_| Ok(DataType::Int64),
            field,
        ));
    }
    v
}

/// Translates a Java `DateTimeFormatter` pattern into a chrono format string.
///
/// # Errors
/// A pattern letter runnel does not support, named with its position.
pub fn java_pattern(pattern: &str) -> std::result::Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // 'quoted text'; '' is a literal quote.
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        out.push('\'');
                        i += 2;
                        continue;
                    }
                    break;
                }
                push_literal(&mut out, chars[i]);
                i += 1;
            }
            i += 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            push_literal(&mut out, c);
            i += 1;
            continue;
        }
        let mut n = 1;
        while chars.get(i + n) == Some(&c) {
            n += 1;
        }
        let spec = match (c, n) {
            ('y' | 'u', 2) => "%y",
            ('y' | 'u', _) => "%Y",
            ('M', 1) => "%-m",
            ('M', 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('D', _) => "%j",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('h', 1) => "%-I",
            ('h', _) => "%I",
            ('m', 1) => "%-M",
            ('m', _) => "%M",
            ('s', 1) => "%-S",
            ('s', _) => "%S",
            ('S', 1..=3) => "%3f",
            ('S', 4..=6) => "%6f",
            ('S', _) => "%9f",
            ('a', _) => "%p",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('Z', _) => "%z",
            ('X' | 'x', _) => "%:z",
            ('z', _) => "%Z",
            _ => {
                return Err(format!(
                    "pattern '{pattern}': letter '{c}' at position {} is not supported \
                     (supported: y M d D H h m s S a E Z X z and 'quoted text')",
                    i + 1
                ));
            }
        };
        out.push_str(spec);
        i += n;
    }
    Ok(out)
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

/// The chrono format of a pattern argument, cached while the pattern repeats (it is
/// nearly always a literal).
struct Patterns {
    last: Option<(String, String)>,
}

impl Patterns {
    fn new() -> Self {
        Patterns { last: None }
    }

    fn get(&mut self, fname: &str, pattern: &str) -> Result<&str> {
        if self.last.as_ref().is_none_or(|(p, _)| p != pattern) {
            let chrono = java_pattern(pattern)
                .map_err(|e| DataFusionError::Execution(format!("{fname}: {e}")))?;
            self.last = Some((pattern.to_string(), chrono));
        }
        Ok(self.last.as_ref().map_or("", |(_, c)| c.as_str()))
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    )
}

fn coerce_date_format(args: &[DataType]) -> Result<Vec<DataType>> {
    match args {
        [t, p] if is_text(p) && is_text(t) => Ok(vec![DataType::Utf8, DataType::Utf8]),
        [DataType::Timestamp(..), p] if is_text(p) => Ok(vec![TS_MS, DataType::Utf8]),
        [t, _] => plan_err!(
            "DATE_FORMAT(timestamp, pattern) needs a TIMESTAMP or STRING and a STRING pattern, got {t}"
        ),
        _ => plan_err!(
            "DATE_FORMAT takes two arguments (timestamp, pattern), got {}",
            args.len()
        ),
    }
}

fn coerce_text_args(usage: &str, args: &[DataType]) -> Result<Vec<DataType>> {
    match args {
        [t] if is_text(t) => Ok(vec![DataType::Utf8]),
        [t, p] if is_text(t) && is_text(p) => Ok(vec![DataType::Utf8, DataType::Utf8]),
        _ => plan_err!("{usage} needs STRING arguments, got {args:?}"),
    }
}

fn coerce_from_unixtime(args: &[DataType]) -> Result<Vec<DataType>> {
    match args {
        [t] if t.is_integer() || t.is_null() => Ok(vec![DataType::Int64]),
        [t, p] if (t.is_integer() || t.is_null()) && is_text(p) => {
            Ok(vec![DataType::Int64, DataType::Utf8])
        }
        _ => plan_err!(
            "FROM_UNIXTIME(seconds[, pattern]) needs a BIGINT and a STRING pattern, got {args:?}"
        ),
    }
}

fn coerce_unix_timestamp(args: &[DataType]) -> Result<Vec<DataType>> {
    if args.is_empty() {
        return Ok(vec![]);
    }
    coerce_text_args("UNIX_TIMESTAMP([string[, pattern]])", args)
}

fn coerce_timestamp(args: &[DataType]) -> Result<Vec<DataType>> {
    match args {
        [DataType::Timestamp(..) | DataType::Null] => Ok(vec![TS_MS]),
        [DataType::Date32 | DataType::Date64] => Ok(vec![TS_MS]),
        [t] if is_text(t) => Ok(vec![TS_MS]),
        [t] => plan_err!("this time function needs a TIMESTAMP, got {t}"),
        _ => plan_err!(
            "this time function takes one TIMESTAMP argument, got {}",
            args.len()
        ),
    }
}

fn datetime(ms: i64) -> Option<NaiveDateTime> {
    DateTime::<Utc>::from_timestamp_millis(ms).map(|d| d.naive_utc())
}

/// `text` read with a chrono format (converted from a Java pattern).
pub(super) fn parse_with(text: &str, chrono: &str) -> Option<NaiveDateTime> {
    parse(text, chrono, false)
}

/// Parses `text` with a chrono format; a pattern without a time part gives midnight.
fn parse(text: &str, chrono: &str, default: bool) -> Option<NaiveDateTime> {
    let text = text.trim();
    if default {
        // Flink's default also reads fractional seconds and a 'T' separator.
        for f in [
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M",
            "%Y-%m-%d",
        ] {
            if let Ok(t) = NaiveDateTime::parse_from_str(text, f) {
                return Some(t);
            }
            if let Ok(d) = NaiveDate::parse_from_str(text, f) {
                return d.and_hms_opt(0, 0, 0);
            }
        }
        return None;
    }
    let has = |specs: &[&str]| specs.iter().any(|s| chrono.contains(s));
    if !has(&["%H", "%-H", "%I", "%-I"]) {
        return NaiveDate::parse_from_str(text, chrono)
            .ok()?
            .and_hms_opt(0, 0, 0);
    }
    if !has(&["%M", "%-M"]) {
        // chrono needs minutes to make a time; a pattern without them means :00.
        let (text, chrono) = (format!("{text}\u{1}00"), format!("{chrono}\u{1}%M"));
        return NaiveDateTime::parse_from_str(&text, &chrono).ok();
    }
    NaiveDateTime::parse_from_str(text, chrono).ok()
}

fn format(t: &NaiveDateTime, chrono: &str) -> Result<String> {
    use std::fmt::Write;
    let mut s = String::new();
    write!(s, "{}", t.format(chrono))
        .map_err(|_| DataFusionError::Execution(format!("cannot format a time with '{chrono}'")))?;
    Ok(s)
}

/// `DATE_FORMAT(ts, pattern)`: the timestamp as text in a Java pattern.
fn date_format(_: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let patterns = args[1].as_string::<i32>();
    let mut cache = Patterns::new();
    let mut out = StringBuilder::with_capacity(rows, rows * 20);
    let text = (args[0].data_type() == &DataType::Utf8).then(|| args[0].as_string::<i32>());
    let ts = (text.is_none()).then(|| args[0].as_primitive::<TimestampMillisecondType>());
    for i in 0..rows {
        let value = match (text, ts) {
            (Some(t), _) if t.is_valid(i) => parse(t.value(i), "", true),
            (_, Some(a)) if a.is_valid(i) => datetime(a.value(i)),
            _ => None,
        };
        match (value, patterns.is_valid(i)) {
            (Some(v), true) => {
                let f = cache.get("DATE_FORMAT", patterns.value(i))?;
                out.append_value(format(&v, f)?);
            }
            _ => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// Milliseconds of `text` parsed with pattern `i` of `patterns` (or Flink's default).
fn parse_ms(
    fname: &str,
    text: &arrow::array::StringArray,
    patterns: Option<&arrow::array::StringArray>,
    cache: &mut Patterns,
    i: usize,
) -> Result<Option<i64>> {
    if text.is_null(i) {
        return Ok(None);
    }
    let parsed = match patterns {
        None => parse(text.value(i), "", true),
        Some(p) if p.is_null(i) => None,
        Some(p) => {
            let f = cache.get(fname, p.value(i))?.to_string();
            parse(text.value(i), &f, false)
        }
    };
    Ok(parsed.map(|t| t.and_utc().timestamp_millis()))
}

/// `TO_TIMESTAMP(text[, pattern])`: NULL when the text does not match (as Flink).
fn to_timestamp(_: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let text = args[0].as_string::<i32>();
    let patterns = args.get(1).map(|a| a.as_string::<i32>());
    let mut cache = Patterns::new();
    let mut out = TimestampMillisecondBuilder::with_capacity(rows);
    for i in 0..rows {
        out.append_option(parse_ms("TO_TIMESTAMP", text, patterns, &mut cache, i)?);
    }
    Ok(Arc::new(out.finish()))
}

/// `UNIX_TIMESTAMP()`: now in seconds; `UNIX_TIMESTAMP(text[, pattern])`: the text's.
fn unix_timestamp(_: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let mut out = Int64Builder::with_capacity(rows);
    let Some(text) = args.first().map(|a| a.as_string::<i32>()) else {
        let now = runnel_common::time::now_ms().div_euclid(1000);
        out.append_slice(&vec![now; rows]);
        return Ok(Arc::new(out.finish()));
    };
    let patterns = args.get(1).map(|a| a.as_string::<i32>());
    let mut cache = Patterns::new();
    for i in 0..rows {
        let ms = parse_ms("UNIX_TIMESTAMP", text, patterns, &mut cache, i)?;
        out.append_option(ms.map(|m| m.div_euclid(1000)));
    }
    Ok(Arc::new(out.finish()))
}

/// `FROM_UNIXTIME(seconds[, pattern])`: text, default `yyyy-MM-dd HH:mm:ss`.
fn from_unixtime(_: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let secs = args[0].as_primitive::<arrow::datatypes::Int64Type>();
    let patterns = args.get(1).map(|a| a.as_string::<i32>());
    let mut cache = Patterns::new();
    let mut out = StringBuilder::with_capacity(rows, rows * 20);
    for i in 0..rows {
        let pattern = match patterns {
            None => Some(DEFAULT_PATTERN),
            Some(p) if p.is_valid(i) => Some(p.value(i)),
            Some(_) => None,
        };
        let t = secs
            .is_valid(i)
            .then(|| secs.value(i).checked_mul(1000).and_then(datetime))
            .flatten();
        match (t, pattern) {
            (Some(t), Some(p)) => {
                let f = cache.get("FROM_UNIXTIME", p)?;
                out.append_value(format(&t, f)?);
            }
            _ => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// Field functions and how each reads its field.
/// Reads one field of a time.
type FieldOf = fn(&NaiveDateTime) -> i64;

const FIELDS: [(&str, FieldOf); 10] = [
    ("year", |t| i64::from(t.year())),
    ("quarter", |t| i64::from((t.month() - 1) / 3 + 1)),
    ("month", |t| i64::from(t.month())),
    ("week", |t| i64::from(t.iso_week().week())),
    ("dayofyear", |t| i64::from(t.ordinal())),
    ("dayofmonth", |t| i64::from(t.day())),
    // Flink: 1 = Sunday … 7 = Saturday.
    ("dayofweek", |t| i64::from(t.weekday().number_from_sunday())),
    ("hour", |t| i64::from(t.hour())),
    ("minute", |t| i64::from(t.minute())),
    ("second", |t| i64::from(t.second())),
];

/// `HOUR(ts)`, `MONTH(ts)`, …: the field named by the function.
fn field(name: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let Some((_, get)) = FIELDS.iter().find(|(n, _)| *n == name) else {
        return Err(DataFusionError::Internal(format!("no time field '{name}'")));
    };
    let ts = args[0].as_primitive::<TimestampMillisecondType>();
    let mut out = Int64Builder::with_capacity(rows);
    for i in 0..rows {
        out.append_option(
            ts.is_valid(i)
                .then(|| datetime(ts.value(i)))
                .flatten()
                .map(|t| get(&t)),
        );
    }
    Ok(Arc::new(out.finish()))
}

/// Units of `TIMESTAMPADD` / `TIMESTAMPDIFF`.
const UNITS: &str = "SECOND, MINUTE, HOUR, DAY, WEEK, MONTH, QUARTER, YEAR";

fn coerce_timestampadd(args: &[DataType]) -> Result<Vec<DataType>> {
    match args {
        [u, n, DataType::Timestamp(..) | DataType::Null]
            if is_text(u) && (n.is_integer() || n.is_null()) =>
        {
            Ok(vec![DataType::Utf8, DataType::Int64, TS_MS])
        }
        _ => plan_err!(
            "TIMESTAMPADD(unit, n, timestamp) needs a unit ({UNITS}), an INT and a TIMESTAMP, got {args:?}"
        ),
    }
}

fn coerce_timestampdiff(args: &[DataType]) -> Result<Vec<DataType>> {
    match args {
        [
            u,
            DataType::Timestamp(..) | DataType::Null,
            DataType::Timestamp(..) | DataType::Null,
        ] if is_text(u) => Ok(vec![DataType::Utf8, TS_MS, TS_MS]),
        _ => plan_err!(
            "TIMESTAMPDIFF(unit, from, to) needs a unit ({UNITS}) and two TIMESTAMPs, got {args:?}"
        ),
    }
}

/// Milliseconds of a fixed-length unit, or months of a calendar one.
enum Step {
    Ms(i64),
    Months(i64),
}

fn unit(fname: &str, u: &str) -> Result<Step> {
    Ok(match u.to_ascii_uppercase().as_str() {
        "MILLISECOND" => Step::Ms(1),
        "SECOND" => Step::Ms(1_000),
        "MINUTE" => Step::Ms(60_000),
        "HOUR" => Step::Ms(3_600_000),
        "DAY" => Step::Ms(86_400_000),
        "WEEK" => Step::Ms(7 * 86_400_000),
        "MONTH" => Step::Months(1),
        "QUARTER" => Step::Months(3),
        "YEAR" => Step::Months(12),
        other => {
            return Err(DataFusionError::Execution(format!(
                "{fname}: unknown unit {other}; units: {UNITS}"
            )));
        }
    })
}

fn add_months(t: NaiveDateTime, months: i64) -> Option<NaiveDateTime> {
    let m = chrono::Months::new(u32::try_from(months.unsigned_abs()).ok()?);
    if months >= 0 {
        t.checked_add_months(m)
    } else {
        t.checked_sub_months(m)
    }
}

/// `TIMESTAMPADD(unit, n, ts)`.
fn timestampadd(_: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let units = args[0].as_string::<i32>();
    let n = args[1].as_primitive::<arrow::datatypes::Int64Type>();
    let ts = args[2].as_primitive::<TimestampMillisecondType>();
    let mut out = TimestampMillisecondBuilder::with_capacity(rows);
    for i in 0..rows {
        if units.is_null(i) || n.is_null(i) || ts.is_null(i) {
            out.append_null();
            continue;
        }
        let v = match unit("TIMESTAMPADD", units.value(i))? {
            Step::Ms(ms) => n
                .value(i)
                .checked_mul(ms)
                .and_then(|d| ts.value(i).checked_add(d)),
            Step::Months(k) => datetime(ts.value(i))
                .and_then(|t| add_months(t, n.value(i).checked_mul(k)?))
                .map(|t| t.and_utc().timestamp_millis()),
        };
        out.append_option(v);
    }
    Ok(Arc::new(out.finish()))
}

/// `TIMESTAMPDIFF(unit, a, b)`: whole units from `a` to `b` (negative when `b` is earlier).
fn timestampdiff(_: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let units = args[0].as_string::<i32>();
    let a = args[1].as_primitive::<TimestampMillisecondType>();
    let b = args[2].as_primitive::<TimestampMillisecondType>();
    let mut out = arrow::array::Int32Builder::with_capacity(rows);
    for i in 0..rows {
        if units.is_null(i) || a.is_null(i) || b.is_null(i) {
            out.append_null();
            continue;
        }
        let (x, y) = (a.value(i), b.value(i));
        let v = match unit("TIMESTAMPDIFF", units.value(i))? {
            Step::Ms(ms) => Some((y - x) / ms),
            Step::Months(k) => match (datetime(x), datetime(y)) {
                (Some(tx), Some(ty)) => {
                    let mut months = i64::from(ty.year() - tx.year()) * 12 + i64::from(ty.month())
                        - i64::from(tx.month());
                    // A month not yet complete does not count.
                    if months > 0 && add_months(tx, months).is_some_and(|t| t > ty) {
                        months -= 1;
                    } else if months < 0 && add_months(tx, months).is_some_and(|t| t < ty) {
                        months += 1;
                    }
                    Some(months / k)
                }
                _ => None,
            },
        };
        out.append_option(v.and_then(|v| i32::try_from(v).ok()));
    }
    Ok(Arc::new(out.finish()))
}

/// `PROCTIME()` takes no arguments.
fn coerce_none(args: &[DataType]) -> Result<Vec<DataType>> {
    if args.is_empty() {
        Ok(Vec::new())
    } else {
        datafusion_common::plan_err!("PROCTIME() takes no arguments")
    }
}

/// `PROCTIME()`: the wall clock when the row is processed (a processing-time attribute;
/// windows over it fire by the clock, not by watermarks).
fn proctime(_: &str, _: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let now = chrono::Utc::now().timestamp_millis();
    Ok(Arc::new(arrow::array::TimestampMillisecondArray::from(
        vec![now; rows],
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_patterns_become_chrono_formats() {
        assert_eq!(
            java_pattern("yyyy-MM-dd HH:mm:ss").unwrap(),
            "%Y-%m-%d %H:%M:%S"
        );
        assert_eq!(
            java_pattern("yy/M/d h:mm a").unwrap(),
            "%y/%-m/%-d %-I:%M %p"
        );
        assert_eq!(java_pattern("HH:mm:ss.SSS").unwrap(), "%H:%M:%S.%3f");
        assert_eq!(
            java_pattern("'at' H'h' ''100%''").unwrap(),
            "at %-Hh '100%%'"
        );
        assert_eq!(java_pattern("EEE, d MMM yyyy").unwrap(), "%a, %-d %b %Y");
        let err = java_pattern("yyyy-QQ").unwrap_err();
        assert!(err.contains("letter 'Q' at position 6"), "{err}");
    }

    #[test]
    fn text_without_minutes_or_time_parses() {
        let f = java_pattern("dd/MM/yyyy HH").unwrap();
        let t = parse("04/03/2026 10", &f, false).unwrap();
        assert_eq!(t.to_string(), "2026-03-04 10:00:00");
        let f = java_pattern("yyyyMMdd").unwrap();
        assert_eq!(
            parse("20260304", &f, false).unwrap().to_string(),
            "2026-03-04 00:00:00"
        );
        assert!(parse("2026-03-04T05:06:07.5", "", true).is_some());
        assert!(parse("nope", "", true).is_none());
    }
}
