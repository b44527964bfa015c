//! Topic and consumer-group administration: create, list and describe topics (offsets,
//! sizes, corruption), read and commit a group's offsets.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use runnel_log::{FsyncPolicy, Log, LogHealth, Topic, TopicConfig};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::{ServerState, blocking};

/// Topic and group routes (`/v1/topics`, `/v1/topics/{topic}`, `/v1/groups/{group}/offsets`)
/// with `state` applied.
pub fn topic_routes(state: ServerState) -> Router {
    Router::new()
        .route("/v1/topics", get(list_topics).post(create_topic))
        .route("/v1/topics/{topic}", get(describe_topic))
        .route(
            "/v1/groups/{group}/offsets",
            get(group_offsets).post(commit_offset),
        )
        .with_state(state)
}

/// Body of `POST /v1/topics`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopic {
    name: String,
    #[serde(default = "one")]
    partitions: u32,
    #[serde(default)]
    retention_ms: Option<u64>,
    #[serde(default)]
    retention_bytes: Option<u64>,
    #[serde(default)]
    segment_bytes: Option<u64>,
    #[serde(default)]
    fsync: Option<FsyncPolicy>,
}

fn one() -> u32 {
    1
}

/// One line of `GET /v1/topics`.
#[derive(Debug, Serialize)]
struct TopicSummary {
    name: String,
    partitions: u32,
    records: u64,
    size_bytes: u64,
}

/// `GET /v1/topics/{topic}`.
#[derive(Debug, Serialize)]
struct TopicDescription {
    name: String,
    partitions: Vec<PartitionDescription>,
    config: TopicConfig,
    corruption: Vec<CorruptionJson>,
}

#[derive(Debug, Serialize)]
struct PartitionDescription {
    partition: u32,
    start_offset: u64,
    end_offset: u64,
    size_bytes: u64,
    segments: usize,
    unavailable: Option<String>,
}

#[derive(Debug, Serialize)]
struct CorruptionJson {
    partition: u32,
    file: String,
    position: u64,
    first_offset: u64,
    resume_offset: u64,
    reason: String,
}

/// Body of `POST /v1/groups/{group}/offsets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitOffset {
    topic: String,
    partition: u32,
    offset: u64,
}

#[derive(Debug, Serialize)]
struct GroupOffset {
    topic: String,
    partition: u32,
    offset: u64,
}

async fn create_topic(
    State(state): State<ServerState>,
    body: Bytes,
) -> Result<(StatusCode, Json<TopicDescription>), ApiError> {
    let req: CreateTopic = parse_json(&body)?;
    let log = state.log().clone();
    let mut config = TopicConfig::with_partitions(req.partitions);
    config.retention_ms = req.retention_ms;
    config.retention_bytes = req.retention_bytes;
    if let Some(b) = req.segment_bytes {
        config.segment_bytes = b;
    }
    if let Some(f) = req.fsync {
        config.fsync = f;
    }
    let topic = blocking(move || Ok(log.create_topic(&req.name, config)?)).await?;
    Ok((
        StatusCode::CREATED,
        Json(describe(&topic, &LogHealth::default())),
    ))
}

async fn list_topics(State(state): State<ServerState>) -> Json<serde_json::Value> {
    let log = state.log();
    let topics: Vec<TopicSummary> = log
        .topics()
        .iter()
        .filter_map(|name| log.topic(name))
        .map(|t| TopicSummary {
            name: t.name().to_owned(),
            partitions: t.partition_count(),
            records: t
                .partitions()
                .iter()
                .map(|p| p.end_offset() - p.start_offset())
                .sum(),
            size_bytes: t.partitions().iter().map(|p| p.size_bytes()).sum(),
        })
        .collect();
    Json(serde_json::json!({ "topics": topics }))
}

async fn describe_topic(
    State(state): State<ServerState>,
    Path(name): Path<String>,
) -> Result<Json<TopicDescription>, ApiError> {
    let topic = state.resolve_topic(&name, false).await?;
    let log: Arc<Log> = state.log().clone();
    let health = blocking(move || Ok(log.health())).await?;
    Ok(Json(describe(&topic, &health)))
}

async fn group_offsets(
    State(state): State<ServerState>,
    Path(group): Path<String>,
) -> Json<serde_json::Value> {
    let offsets: Vec<GroupOffset> = state
        .log()
        .group_offsets(&group)
        .into_iter()
        .map(|(topic, partition, offset)| GroupOffset {
            topic,
            partition,
            offset,
        })
        .collect();
    Json(serde_json::json!({ "group": group, "offsets": offsets }))
}

async fn commit_offset(
    State(state): State<ServerState>,
    Path(group): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req: CommitOffset = parse_json(&body)?;
    let log = state.log().clone();
    let g = group.clone();
    let (topic, partition, offset) = (req.topic.clone(), req.partition, req.offset);
    blocking(move || Ok(log.commit_offset(&g, &topic, partition, offset)?)).await?;
    Ok(Json(serde_json::json!({
        "group": group, "topic": req.topic, "partition": req.partition, "offset": req.offset
    })))
}

fn describe(topic: &Topic, health: &LogHealth) -> TopicDescription {
    TopicDescription {
        name: topic.name().to_owned(),
        partitions: topic
            .partitions()
            .iter()
            .map(|p| PartitionDescription {
                partition: p.id(),
                start_offset: p.start_offset(),
                end_offset: p.end_offset(),
                size_bytes: p.size_bytes(),
                segments: p.segment_count(),
                unavailable: p.unavailable_reason(),
            })
            .collect(),
        config: topic.config().clone(),
        corruption: health
            .corruption
            .iter()
            .filter(|c| c.topic == topic.name())
            .map(|c| CorruptionJson {
                partition: c.partition,
                file: c.file.display().to_string(),
                position: c.position,
                first_offset: c.first_offset,
                resume_offset: c.resume_offset,
                reason: c.reason.clone(),
            })
            .collect(),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("invalid request body: {e}")))
}
