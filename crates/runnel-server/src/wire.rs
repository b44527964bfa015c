//! The records' wire format, shared by the HTTP API and the CLI: a request body (by
//! content type) → log records, and a stored record → one NDJSON line.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use runnel_common::time::format_timestamp;
use runnel_log::{Record, StoredRecord};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::ApiError;

/// Record header naming the record's content type (`application/json` for JSON records).
pub const CONTENT_TYPE_HEADER: &str = "content-type";

/// Content type stored for JSON and NDJSON records.
pub const JSON: &str = "application/json";

/// Content type of newline-delimited JSON bodies.
pub const NDJSON: &str = "application/x-ndjson";

/// Content type stored for raw bodies sent without one.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// What applies to every record of one request: key, event time, extra headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordMeta {
    /// Partitioning key (`X-Key`).
    pub key: Option<Vec<u8>>,
    /// Event time in ms since the epoch (`X-Event-Time`).
    pub event_time: Option<i64>,
    /// Extra record headers (`X-Meta-<name>`), names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Turns a body into records: `application/json` gives one record per array element (or
/// one for an object), `application/x-ndjson` one per non-blank line, anything else one
/// raw record holding the whole body. Every record gets `meta` and a `content-type` header.
///
/// # Errors
/// 400 `malformed_json` (naming the line for NDJSON) or `empty_body`; nothing is partial.
pub fn parse_records(
    content_type: Option<&str>,
    body: &[u8],
    meta: &RecordMeta,
) -> Result<Vec<Record>, ApiError> {
    let essence = content_type.map(mime_essence);
    let (values, stored_type): (Vec<Vec<u8>>, String) = match essence.as_deref() {
        Some(JSON) => (json_values(body)?, JSON.to_owned()),
        Some(NDJSON) => (ndjson_values(body)?, JSON.to_owned()),
        _ => (
            vec![body.to_vec()],
            content_type.unwrap_or(OCTET_STREAM).trim().to_owned(),
        ),
    };
    if values.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the body holds no records",
        ));
    }
    Ok(values
        .into_iter()
        .map(|value| {
            let mut headers = Vec::with_capacity(meta.headers.len() + 1);
            headers.push((
                CONTENT_TYPE_HEADER.to_owned(),
                stored_type.clone().into_bytes(),
            ));
            headers.extend(meta.headers.iter().cloned());
            Record {
                key: meta.key.clone(),
                value,
                headers,
                event_time: meta.event_time,
            }
        })
        .collect())
}

/// One stored record as the JSON object the read endpoint and `runnel consume` print.
pub fn record_json(partition: u32, record: &StoredRecord) -> String {
    let is_json = record.headers.iter().any(|(name, v)| {
        name == CONTENT_TYPE_HEADER && std::str::from_utf8(v).is_ok_and(|t| mime_essence(t) == JSON)
    });
    let value = match std::str::from_utf8(&record.value) {
        Ok(text) if is_json => match RawValue::from_string(text.trim().to_owned()) {
            Ok(raw) => WireValue::Json(raw),
            Err(_) => WireValue::Base64(BASE64.encode(&record.value)),
        },
        _ => WireValue::Base64(BASE64.encode(&record.value)),
    };
    let mut headers: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
    for (k, v) in &record.headers {
        let v = serde_json::Value::String(text_or_base64(v));
        // A name given more than once keeps every value, as an array.
        match headers.entry(k.as_str()) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(v);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => match e.get_mut() {
                serde_json::Value::Array(all) => all.push(v),
                first => *first = serde_json::Value::Array(vec![first.take(), v]),
            },
        }
    }
    let key_is_text = record
        .key
        .as_deref()
        .is_none_or(|k| std::str::from_utf8(k).is_ok());
    let out = WireRecord {
        partition,
        offset: record.offset,
        key: record.key.as_deref().map(text_or_base64),
        // A key that is not UTF-8 is shown in base64 and says so, so that it never reads
        // back like a text key spelled the same.
        key_encoding: (!key_is_text).then_some("base64"),
        event_time: record.event_time.map(format_timestamp),
        headers,
        value_encoding: matches!(value, WireValue::Base64(_)).then_some("base64"),
        value,
    };
    serde_json::to_string(&out).unwrap_or_else(|e| {
        format!("{{\"error\":\"internal\",\"detail\":\"cannot serialize record: {e}\"}}")
    })
}

/// Lower-cased `type/subtype` of a content type, without parameters.
pub fn mime_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

#[derive(Serialize)]
struct WireRecord<'a> {
    partition: u32,
    offset: u64,
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_encoding: Option<&'static str>,
    event_time: Option<String>,
    headers: BTreeMap<&'a str, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_encoding: Option<&'static str>,
    value: WireValue,
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireValue {
    Json(Box<RawValue>),
    Base64(String),
}

fn text_or_base64(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => BASE64.encode(bytes),
    }
}

/// Checks the `\\u` escapes of valid JSON text: a UTF-16 surrogate must be a high one
/// followed by a low one (serde_json's raw values do not look inside strings).
fn check_escapes(json: &str) -> Result<(), String> {
    let b = json.as_bytes();
    let hex = |at: usize| -> Option<u16> {
        b.get(at..at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u16::from_str_radix(h, 16).ok())
    };
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        if b.get(i + 1) != Some(&b'u') {
            i += 2;
            continue;
        }
        let unit = hex(i + 2).ok_or("a \\u escape without four hex digits")?;
        match unit {
            0xD800..=0xDBFF => {
                let low = (b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u'))
                    .then(|| hex(i + 8))
                    .flatten();
                if !low.is_some_and(|l| (0xDC00..=0xDFFF).contains(&l)) {
                    return Err(format!("lone UTF-16 surrogate \\u{unit:04x} in a string"));
                }
                i += 12;
            }
            0xDC00..=0xDFFF => {
                return Err(format!("lone UTF-16 surrogate \\u{unit:04x} in a string"));
            }
            _ => i += 6,
        }
    }
    Ok(())
}

fn json_values(body: &[u8]) -> Result<Vec<Vec<u8>>, ApiError> {
    let whole: &RawValue = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("invalid JSON body: {e}")))?;
    check_escapes(whole.get())
        .map_err(|e| ApiError::bad_request("malformed_json", format!("invalid JSON body: {e}")))?;
    if whole.get().starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(whole.get()).map_err(|e| {
            ApiError::bad_request("malformed_json", format!("invalid JSON array: {e}"))
        })?;
        Ok(items.iter().map(|v| v.get().as_bytes().to_vec()).collect())
    } else {
        Ok(vec![whole.get().as_bytes().to_vec()])
    }
}

fn ndjson_values(body: &[u8]) -> Result<Vec<Vec<u8>>, ApiError> {
    let mut out = Vec::new();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: &RawValue = serde_json::from_slice(line).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!(
                    "line {}, column {}: {}; nothing of this request was stored",
                    i + 1,
                    e.column(),
                    serde_message(&e)
                ),
            )
        })?;
        check_escapes(value.get()).map_err(|e| {
            ApiError::bad_request(
                "malformed_json",
                format!("line {}: {e}; nothing of this request was stored", i + 1),
            )
        })?;
        out.push(value.get().as_bytes().to_vec());
    }
    Ok(out)
}

/// serde_json's message without its " at line L column C" suffix (we name the line ourselves).
fn serde_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(i) => full[..i].to_owned(),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(records: &[Record]) -> Vec<&str> {
        records
            .iter()
            .map(|r| std::str::from_utf8(&r.value).unwrap_or("<bytes>"))
            .collect()
    }

    #[test]
    fn json_array_gives_one_record_per_element() {
        let r = parse_records(
            Some("application/json; charset=utf-8"),
            br#" [{"a":1}, 2 ,"x"] "#,
            &RecordMeta::default(),
        )
        .map_err(|e| e.detail)
        .unwrap_or_default();
        assert_eq!(values(&r), vec![r#"{"a":1}"#, "2", r#""x""#]);
        assert_eq!(
            r[0].headers[0],
            ("content-type".into(), b"application/json".to_vec())
        );
    }

    #[test]
    fn lone_surrogates_are_refused() {
        for bad in [
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00x"}"#,
            r#"["\ud800\u0041"]"#,
        ] {
            assert!(
                parse_records(Some(JSON), bad.as_bytes(), &RecordMeta::default()).is_err(),
                "{bad}"
            );
            assert!(
                parse_records(Some(NDJSON), bad.as_bytes(), &RecordMeta::default()).is_err(),
                "{bad}"
            );
        }
        for good in [
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{"a":"\\ud800"}"#,
            r#"{"a":"\u00e9"}"#,
        ] {
            assert!(
                parse_records(Some(JSON), good.as_bytes(), &RecordMeta::default()).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn keys_and_repeated_headers_read_back_unambiguously() {
        let stored = |key: &[u8]| StoredRecord {
            offset: 0,
            timestamp: 0,
            key: Some(key.to_vec()),
            value: b"v".to_vec(),
            headers: vec![("h".into(), b"1".to_vec()), ("h".into(), b"2".to_vec())],
            event_time: None,
        };
        let text: serde_json::Value =
            serde_json::from_str(&record_json(0, &stored(b"/w=="))).unwrap_or_default();
        let bytes: serde_json::Value =
            serde_json::from_str(&record_json(0, &stored(&[0xff]))).unwrap_or_default();
        assert_eq!(text["key"], "/w==");
        assert_eq!(bytes["key"], "/w==");
        assert!(text.get("key_encoding").is_none());
        assert_eq!(bytes["key_encoding"], "base64");
        assert_eq!(text["headers"]["h"], serde_json::json!(["1", "2"]));
    }

    #[test]
    fn ndjson_names_the_bad_line() {
        let e = parse_records(
            Some(NDJSON),
            b"{\"a\":1}\n\n{\"a\":\n",
            &RecordMeta::default(),
        )
        .err();
        let e = e.map(|e| (e.status, e.code, e.detail));
        assert!(
            matches!(&e, Some((StatusCode::BAD_REQUEST, "malformed_json", d)) if d.starts_with("line 3,")),
            "{e:?}"
        );
    }

    #[test]
    fn raw_body_is_one_record_with_its_content_type() {
        let meta = RecordMeta {
            key: Some(b"k".to_vec()),
            event_time: Some(5),
            headers: vec![("cam".into(), b"7".to_vec())],
        };
        let r = parse_records(Some("image/jpeg"), &[0xff, 0xd8, 0x00], &meta).map_err(|e| e.detail);
        let r = r.unwrap_or_default();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].value, vec![0xff, 0xd8, 0x00]);
        assert_eq!(
            r[0].headers,
            vec![
                ("content-type".into(), b"image/jpeg".to_vec()),
                ("cam".into(), b"7".to_vec())
            ]
        );
        let stored = StoredRecord {
            offset: 3,
            timestamp: 0,
            key: r[0].key.clone(),
            value: r[0].value.clone(),
            headers: r[0].headers.clone(),
            event_time: Some(5),
        };
        let line: serde_json::Value =
            serde_json::from_str(&record_json(1, &stored)).unwrap_or_default();
        assert_eq!(line["value"], "/9gA");
        assert_eq!(line["key"], "k");
        assert_eq!(line["event_time"], "1970-01-01T00:00:00.005Z");
        assert_eq!(line["headers"]["cam"], "7");
    }
}
