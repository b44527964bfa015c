//! `POST /v1/topics/{topic}/records`: validate, append to the log, answer 200 only after
//! fsync; `GET /v1/topics/{topic}/records`: read acknowledged records as NDJSON.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use runnel_common::time::parse_timestamp;
use serde::Serialize;

use crate::error::ApiError;
use crate::wire::{self, RecordMeta};
use crate::{DEFAULT_READ_MAX, READ_MAX_CAP, ServerState, blocking};

/// Largest amount of record data one read answer carries (at least one record is sent).
const READ_MAX_BYTES: usize = 32 << 20;

/// Name prefix of request headers kept as record headers.
const META_PREFIX: &str = "x-meta-";

/// The records routes (`POST` and `GET /v1/topics/{topic}/records`) with `state` applied.
pub fn ingest_routes(state: ServerState) -> Router {
    Router::new()
        .route(
            "/v1/topics/{topic}/records",
            post(post_records).get(get_records),
        )
        .with_state(state)
}

/// The answer to a successful POST.
#[derive(Debug, Serialize)]
struct Appended {
    topic: String,
    partition: u32,
    offsets: Vec<u64>,
}

async fn post_records(
    State(state): State<ServerState>,
    Path(topic_name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Appended>, ApiError> {
    // Cheap checks first: an unknown topic or a bad header costs no body read.
    if state.auto_create().is_none() {
        state.resolve_topic(&topic_name, false).await?;
    }
    let meta = request_meta(&headers)?;
    // Bound the memory of requests in flight before reading a byte of the body.
    let declared = declared_length(&headers).map_or(state.max_body_bytes(), |n| {
        n.min(state.max_body_bytes() as u64) as usize
    });
    let Some(_reserved) = state.reserve_ingest(declared) else {
        metrics::counter!("runnel_ingest_rejected_busy_total").increment(1);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too much ingest data in flight; retry in a second",
        ));
    };
    let body = read_body(&headers, body, state.max_body_bytes()).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::bad_request("invalid_header", "Content-Type is not ASCII text")
            })
        })
        .transpose()?;
    // Parsing a large body takes a while: off the async threads, so /healthz and event
    // streams keep answering.
    let content_type = content_type.map(str::to_owned);
    let key = meta.key.clone();
    let records =
        blocking(move || wire::parse_records(content_type.as_deref(), &body, &meta)).await?;
    let topic = state.resolve_topic(&topic_name, true).await?;
    let partition = topic.partition_for(key.as_deref());
    let appended = blocking(move || {
        let p = topic.partition(partition).ok_or_else(|| {
            ApiError::internal(format!("partition_for chose missing partition {partition}"))
        })?;
        // The ack is our durability promise: append returns only after the fsync.
        Ok(p.append(records)?)
    })
    .await?;
    Ok(Json(Appended {
        topic: topic_name,
        partition,
        offsets: (0..u64::from(appended.count))
            .map(|i| appended.base_offset + i)
            .collect(),
    }))
}

async fn get_records(
    State(state): State<ServerState>,
    Path(topic_name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let partition = param::<u32>(&params, "partition")?.unwrap_or(0);
    let offset = param::<u64>(&params, "offset")?;
    let max = param::<usize>(&params, "max")?.unwrap_or(DEFAULT_READ_MAX);
    if max == 0 || max > READ_MAX_CAP {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("max must be between 1 and {READ_MAX_CAP}, got {max}"),
        ));
    }
    if let Some(other) = params
        .keys()
        .find(|k| !["partition", "offset", "max"].contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("unknown query parameter '{other}'; known: partition, offset, max"),
        ));
    }
    let topic = state.resolve_topic(&topic_name, false).await?;
    let (lines, next) = blocking(move || {
        let p = topic.partition(partition).ok_or_else(|| {
            ApiError::from(runnel_log::LogError::UnknownPartition {
                topic: topic.name().to_owned(),
                partition,
                partitions: topic.partition_count(),
            })
        })?;
        let from = offset.unwrap_or_else(|| p.start_offset());
        let records = match p.read(from, max, READ_MAX_BYTES) {
            Ok(r) => r,
            // Reading starts at a damaged batch: say where reading can go on.
            Err(e @ runnel_log::LogError::Corrupt { .. }) => {
                metrics::counter!("runnel_log_damaged_reads_total").increment(1);
                let mut err = ApiError::from(e);
                if let Some(next) = p.resume_after_damage(from) {
                    err.detail = format!(
                        "{}; the records from offset {from} to {} are damaged: read on from next_offset={next}",
                        err.detail,
                        next - 1
                    );
                    err.next_offset = Some(next);
                }
                return Err(err);
            }
            Err(e) => return Err(e.into()),
        };
        let next = records.last().map_or(from, |r| r.offset + 1);
        let mut out = String::new();
        for r in &records {
            out.push_str(&wire::record_json(partition, r));
            out.push('\n');
        }
        Ok((out, next))
    })
    .await?;
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(wire::NDJSON))],
        lines,
    )
        .into_response();
    response
        .headers_mut()
        .insert("x-next-offset", HeaderValue::from(next));
    Ok(response)
}

/// Key, event time and `X-Meta-*` headers of a request.
/// Earliest and latest accepted `X-Event-Time`: years 1 to 9999 (what a timestamp
/// column can show; the extremes of i64 are runnel's "no time" markers).
const EVENT_TIME_RANGE: std::ops::RangeInclusive<i64> = -62_135_596_800_000..=253_402_300_799_999;

fn request_meta(headers: &HeaderMap) -> Result<RecordMeta, ApiError> {
    for single in ["x-key", "x-event-time"] {
        let n = headers.get_all(single).iter().count();
        if n > 1 {
            return Err(ApiError::bad_request(
                "invalid_header",
                format!("{single} is given {n} times; give it once"),
            ));
        }
    }
    let key = headers.get("x-key").map(|v| v.as_bytes().to_vec());
    let event_time = match headers.get("x-event-time") {
        None => None,
        Some(v) => {
            let text = v.to_str().unwrap_or_default();
            Some(parse_timestamp(text).filter(|t| EVENT_TIME_RANGE.contains(t)).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_event_time",
                    format!(
                        "X-Event-Time '{}' is neither RFC 3339 (2026-01-01T00:00:00Z) nor epoch milliseconds of the years 1 to 9999",
                        String::from_utf8_lossy(v.as_bytes())
                    ),
                )
            })?)
        }
    };
    let mut extra = Vec::new();
    for (name, value) in headers {
        // Header names arrive lower-cased from the HTTP layer.
        if let Some(meta) = name.as_str().strip_prefix(META_PREFIX)
            && !meta.is_empty()
        {
            extra.push((meta.to_owned(), value.as_bytes().to_vec()));
        }
    }
    Ok(RecordMeta {
        key,
        event_time,
        headers: extra,
    })
}

/// The body length the client declared (`Content-Length`), if any.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads the body, refusing (413) as soon as it is known to exceed `limit`: from
/// Content-Length before reading, else while streaming, never after buffering it whole.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::too_large(limit)),
        Err(e) => Err(ApiError::bad_request(
            "body_read_failed",
            format!("reading the request body failed: {e}"),
        )),
    }
}

fn param<T: std::str::FromStr>(
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    params
        .get(name)
        .map(|v| {
            v.parse::<T>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_parameter",
                    format!("query parameter {name}='{v}' is not a non-negative integer"),
                )
            })
        })
        .transpose()
}
