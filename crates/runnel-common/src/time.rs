//! Event time: milliseconds since the Unix epoch, intervals and RFC 3339 text.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// Event time in milliseconds since 1970-01-01T00:00:00Z.
pub type Timestamp = i64;

/// The smallest timestamp: "no progress yet".
pub const TS_MIN: Timestamp = i64::MIN;
/// The largest timestamp: the final watermark of a bounded stream.
pub const TS_MAX: Timestamp = i64::MAX;

/// Parses an RFC 3339 timestamp (`2026-01-01T00:00:10.123Z`), the SQL form
/// `2026-01-01 00:00:10.123` (read as UTC), or integer epoch milliseconds.
pub fn parse_timestamp(text: &str) -> Option<Timestamp> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(t, fmt) {
            return Some(naive.and_utc().timestamp_millis());
        }
    }
    None
}

/// Formats epoch milliseconds as RFC 3339 UTC with milliseconds: `2026-01-01T00:00:10.000Z`.
pub fn format_timestamp(ms: Timestamp) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(dt) => dt.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

/// Parses a duration written by users: `5 s`, `100ms`, `10 seconds`, `2 min`, `1h`.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: i64 = num.parse().ok()?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Wall-clock now in epoch milliseconds.
pub fn now_ms() -> Timestamp {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let ms = parse_timestamp("2026-01-01T00:00:10.123Z").expect("valid");
        assert_eq!(format_timestamp(ms), "2026-01-01T00:00:10.123Z");
        assert_eq!(parse_timestamp("1000"), Some(1000));
        assert_eq!(parse_timestamp("2026-01-01 00:00:10"), Some(ms - 123));
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("5 s"), Some(5000));
        assert_eq!(parse_duration_ms("100ms"), Some(100));
        assert_eq!(parse_duration_ms("2 min"), Some(120_000));
        assert_eq!(parse_duration_ms("soon"), None);
    }
}
