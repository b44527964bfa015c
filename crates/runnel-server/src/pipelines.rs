//! Submitting and controlling pipelines on `runnel serve`: `POST /api/pipelines` with a
//! SQL script, `POST /api/pipelines/{name}/stop` (a savepoint, then stop), `…/start`
//! (from the newest checkpoint or a named savepoint) and `DELETE /api/pipelines/{name}`.
//! The [`runnel_runtime::host::Host`] does the work; these only translate.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use runnel_runtime::host::{Host, HostError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::AdminState;
use crate::error::ApiError;

/// `?name=` and `?savepoint=`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Params {
    name: Option<String>,
    savepoint: Option<String>,
}

/// A JSON submission: `{"sql": "…", "name": "…"}`.
#[derive(Debug, Deserialize)]
struct Submission {
    sql: String,
    name: Option<String>,
}

/// A JSON body of stop and start: `{"savepoint": "…"}`.
#[derive(Debug, Default, Deserialize)]
struct SavepointBody {
    savepoint: Option<String>,
}

fn host(s: &AdminState) -> Result<&Host, ApiError> {
    s.host.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not_hosting",
            "this process runs one fixed pipeline (`runnel run` or `runnel demo`); submit \
             pipelines to `runnel serve`",
        )
    })
}

fn api_error(e: HostError) -> ApiError {
    match e {
        HostError::Invalid(e) => {
            let mut a = ApiError::bad_request("invalid_pipeline", e.to_string());
            a.at = e.position();
            a
        }
        e @ HostError::Unknown { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_pipeline", e.to_string())
        }
        HostError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        HostError::Failed(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "failed", m),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// `POST /api/pipelines`: the script as the body (`text/plain` or `application/sql`, with
/// `?name=`), or `{"sql": …, "name": …}` as JSON. 201 with the pipeline; 400 with `line`
/// and `column` for a script that does not plan.
pub(crate) async fn submit(
    State(s): State<AdminState>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let host = host(&s)?;
    let (sql, name) = if is_json(&headers) {
        let sub: Submission = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "malformed_json",
                format!("expected {{\"sql\": \"…\", \"name\": \"…\"}}: {e}"),
            )
        })?;
        (sub.sql, sub.name.or(params.name))
    } else {
        let sql = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::bad_request("invalid_utf8", "the script is not UTF-8 text"))?;
        (sql, params.name)
    };
    if sql.trim().is_empty() {
        return Err(ApiError::bad_request(
            "empty_script",
            "the body is empty; send the SQL script (CREATE TABLE … INSERT INTO …)",
        ));
    }
    let hosted = host
        .submit(&sql, name.as_deref())
        .await
        .map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(json!(hosted))).into_response())
}

fn savepoint(
    params: Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Option<String>, ApiError> {
    if is_json(headers) && !body.is_empty() {
        let b: SavepointBody = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(
                "malformed_json",
                format!("expected {{\"savepoint\": \"…\"}}: {e}"),
            )
        })?;
        return Ok(b.savepoint.or(params.savepoint));
    }
    Ok(params.savepoint)
}

/// `POST /api/pipelines/{name}/stop[?savepoint=NAME]`: a savepoint, then stop.
pub(crate) async fn stop(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    control(&s, &name, savepoint(params, &headers, &body)?, true).await
}

/// `POST /api/pipelines/{name}/start[?savepoint=NAME]`.
pub(crate) async fn start(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    control(&s, &name, savepoint(params, &headers, &body)?, false).await
}

async fn control(
    s: &AdminState,
    name: &str,
    savepoint: Option<String>,
    stop: bool,
) -> Result<Json<Value>, ApiError> {
    let host = host(s)?;
    let hosted = if stop {
        host.stop(name, savepoint).await
    } else {
        host.start(name, savepoint).await
    };
    Ok(Json(json!(hosted.map_err(api_error)?)))
}

/// `DELETE /api/pipelines/{name}`: only a pipeline that is not running.
pub(crate) async fn delete(
    State(s): State<AdminState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let host = host(&s)?;
    host.delete(&name).await.map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?max_rows=`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ViewParams {
    max_rows: Option<usize>,
}

/// `POST /api/queries`: a temporary query (`SET` / `CREATE` statements, then one
/// `SELECT`), its rows collected live; 201 with its first view.
pub(crate) async fn start_query(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let host = host(&s)?;
    let sql = if is_json(&headers) {
        let sub: Submission = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "malformed_json",
                format!("expected {{\"sql\": \"…\"}}: {e}"),
            )
        })?;
        sub.sql
    } else {
        String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::bad_request("invalid_utf8", "the query is not UTF-8 text"))?
    };
    let view = host.query(&sql).await.map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(json!(view))).into_response())
}

/// `GET /api/queries/{id}[?max_rows=N]`: its state and rows as they stand.
pub(crate) async fn query_view(
    State(s): State<AdminState>,
    Path(id): Path<u64>,
    Query(params): Query<ViewParams>,
) -> Result<Json<Value>, ApiError> {
    let host = host(&s)?;
    let view = host
        .query_view(id, params.max_rows.unwrap_or(1000))
        .map_err(api_error)?;
    Ok(Json(json!(view)))
}

/// `DELETE /api/queries/{id}`: stops it.
pub(crate) async fn cancel_query(
    State(s): State<AdminState>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    let host = host(&s)?;
    host.cancel_query(id).map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT)
}
