//! The admin API and the live dashboard: what a running pipeline is doing and what its
//! `dashboard` tables produce.
//!
//! `GET /api/pipelines[/{name}]` answer JSON snapshots; `/api/pipelines/{name}/events`
//! and `/api/streams/{sink}` push updates as Server-Sent Events, coalesced to a few
//! per second so a busy pipeline cannot flood a browser. The page itself (`/`) is
//! embedded in the binary.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use runnel_runtime::resources::{Dashboards, Panel};
pub use runnel_runtime::status::{
    EdgeStatus, NodeStatus, PipelineHandle, PipelineStatus, StatusFn,
};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::error::ApiError;

/// Shortest time between two SSE events of one stream.
const MIN_EVENT_INTERVAL: Duration = Duration::from_millis(250);
/// How often pipeline status is pushed.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// What the admin routes share: the pipelines, their dashboards and readiness.
#[derive(Clone, Default)]
pub struct AdminState {
    pipelines: Arc<RwLock<Vec<PipelineHandle>>>,
    dashboards: Arc<Dashboards>,
    ready: Arc<AtomicBool>,
    /// Submitted pipelines (`runnel serve`); `None` where one fixed pipeline runs.
    pub(crate) host: Option<runnel_runtime::host::Host>,
}

impl AdminState {
    /// State over the dashboards `dashboards` (shared with the pipeline's sinks).
    pub fn new(dashboards: Arc<Dashboards>) -> Self {
        AdminState {
            dashboards,
            ..AdminState::default()
        }
    }

    /// Hosts submitted pipelines (`POST /api/pipelines`) with `host`.
    pub fn with_host(mut self, host: runnel_runtime::host::Host) -> Self {
        self.host = Some(host);
        self
    }

    /// Adds a running pipeline.
    pub fn add_pipeline(&self, handle: PipelineHandle) {
        self.pipelines
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle);
    }

    /// Marks the server ready (`/readyz` answers 200).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The statuses of every pipeline.
    pub fn statuses(&self) -> Vec<PipelineStatus> {
        self.handles().iter().map(|h| (h.status)()).collect()
    }

    fn handles(&self) -> Vec<PipelineHandle> {
        let mut all = self
            .pipelines
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(host) = &self.host {
            all.extend(host.handles());
        }
        all
    }

    pub(crate) fn handle(&self, name: &str) -> Result<PipelineHandle, ApiError> {
        self.handles()
            .into_iter()
            .find(|h| h.name == name)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_pipeline",
                    format!(
                        "no pipeline named '{name}'; pipelines: {}",
                        names(&self.handles())
                    ),
                )
            })
    }

    fn panel(&self, name: &str) -> Result<Arc<Panel>, ApiError> {
        self.dashboards.panel(name).ok_or_else(|| {
            let known: Vec<_> = self
                .dashboards
                .panels()
                .iter()
                .map(|p| p.config().name.clone())
                .collect();
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_stream",
                format!(
                    "no dashboard table named '{name}'; dashboard tables: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })
    }

    /// A pipeline's status with its dashboard panels, as JSON.
    pub(crate) fn status_json(&self, handle: &PipelineHandle) -> Value {
        let mut v = serde_json::to_value((handle.status)()).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            map.insert("panels".into(), self.panels_json());
        }
        v
    }

    fn panels_json(&self) -> Value {
        Value::Array(
            self.dashboards
                .panels()
                .iter()
                .map(|p| {
                    let c = p.config();
                    json!({
                        "name": c.name,
                        "title": c.title,
                        "view": c.view.as_str(),
                        "key": c.key,
                        "max_rows": c.max_rows,
                        "x": c.x,
                        "y": c.y,
                        "series": c.series,
                        "columns": c.columns.iter()
                            .map(|(n, t)| json!({"name": n, "type": t}))
                            .collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )
    }
}

fn names(handles: &[PipelineHandle]) -> String {
    if handles.is_empty() {
        return "none".into();
    }
    handles
        .iter()
        .map(|h| h.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `/api/…`, `/readyz` and the embedded page.
pub fn admin_routes(state: AdminState) -> Router {
    Router::new()
        .route(
            "/api/pipelines",
            get(list_pipelines).post(crate::pipelines::submit),
        )
        .route(
            "/api/pipelines/{name}",
            get(get_pipeline).delete(crate::pipelines::delete),
        )
        .route("/api/pipelines/{name}/stop", post(crate::pipelines::stop))
        .route("/api/pipelines/{name}/start", post(crate::pipelines::start))
        .route("/api/queries", post(crate::pipelines::start_query))
        .route(
            "/api/queries/{id}",
            get(crate::pipelines::query_view).delete(crate::pipelines::cancel_query),
        )
        .route("/api/pipelines/{name}/events", get(pipeline_events))
        .route("/api/pipelines/{name}/quality", get(pipeline_quality))
        .route("/api/streams", get(stream_all_rows))
        .route("/api/streams/{sink}", get(stream_rows))
        .route("/api/streams/{sink}/images/{key}", get(stream_image))
        .route("/api/openapi.json", get(openapi))
        .route("/readyz", get(readyz))
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/{file}", get(asset))
        .with_state(state)
}

async fn list_pipelines(State(s): State<AdminState>) -> Json<Value> {
    let hosted = match &s.host {
        Some(host) => host.list().await,
        None => Vec::new(),
    };
    let list: Vec<Value> = s
        .statuses()
        .into_iter()
        .map(|p| {
            let mut v = json!({"name": p.name, "state": p.state, "health": p.health, "uptime_s": p.uptime_s});
            if let Some(h) = hosted.iter().find(|h| h.name == p.name) {
                v["hosted"] = true.into();
                v["savepoint"] = json!(h.savepoint);
                v["created_ms"] = h.created_ms.into();
                if let Some(e) = &h.error {
                    v["error"] = e.clone().into();
                }
            }
            v
        })
        .collect();
    Json(json!({ "pipelines": list, "hosting": s.host.is_some() }))
}

async fn get_pipeline(
    State(s): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let h = s.handle(&name)?;
    let mut v = s.status_json(&h);
    if let Some(host) = &s.host
        && let Ok(hosted) = host.get(&name).await
    {
        v["hosted"] = serde_json::to_value(&hosted).unwrap_or_default();
    }
    Ok(Json(v))
}

/// Data quality per table: rule violations, dead letters, late rows and each source's
/// profile (`SET 'quality.profile' = 'on'`).
async fn pipeline_quality(
    State(s): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let h = s.handle(&name)?;
    let status = (h.status)();
    Ok(Json(json!({
        "pipeline": status.name,
        "profile": status
            .quality
            .as_ref()
            .and_then(|q| q["tables"].as_array())
            .is_some_and(|t| t.iter().any(|t| t.get("profile").is_some())),
        "tables": status
            .quality
            .as_ref()
            .map_or_else(|| json!([]), |q| q["tables"].clone()),
    })))
}

async fn pipeline_events(
    State(s): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let h = s.handle(&name)?;
    let stream = futures::stream::unfold(true, move |first| {
        let (s, h) = (s.clone(), h.clone());
        async move {
            if !first {
                tokio::time::sleep(STATUS_INTERVAL).await;
            }
            let data = s.status_json(&h).to_string();
            Some((Ok(Event::default().event("status").data(data)), false))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// What the rows stream does next.
enum RowsState {
    Start(Arc<Panel>),
    Live(
        Arc<Panel>,
        tokio::sync::broadcast::Receiver<Arc<Vec<Value>>>,
    ),
}

async fn stream_rows(
    State(s): State<AdminState>,
    Path(sink): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let panel = s.panel(&sink)?;
    Ok(Sse::new(rows_stream(panel, false)).keep_alive(KeepAlive::default()))
}

/// `?panels=a,b,c` (default: every dashboard table).
#[derive(Debug, Default, serde::Deserialize)]
struct PanelsParam {
    panels: Option<String>,
}

/// `GET /api/streams`: the rows of several dashboard tables over one event stream, each
/// event naming its table (`"panel"`). A browser opens at most six connections to a
/// server over HTTP/1.1: a page with a stream per table would leave none for its images.
async fn stream_all_rows(
    State(s): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<PanelsParam>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let panels: Vec<Arc<Panel>> = match q.panels.as_deref().filter(|p| !p.is_empty()) {
        Some(names) => names
            .split(',')
            .map(|n| s.panel(n.trim()))
            .collect::<Result<_, _>>()?,
        None => s.dashboards.panels(),
    };
    let streams: Vec<_> = panels
        .into_iter()
        .map(|p| Box::pin(rows_stream(p, true)))
        .collect();
    Ok(Sse::new(futures::stream::select_all(streams)).keep_alive(KeepAlive::default()))
}

/// One table's rows: all of them first, then what arrives, coalesced to one event per
/// [`MIN_EVENT_INTERVAL`]. With `tagged`, each event names the table.
fn rows_stream(
    panel: Arc<Panel>,
    tagged: bool,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    let tag = tagged.then(|| panel.config().name.clone());
    futures::stream::unfold(RowsState::Start(panel), move |state| {
        let tag = tag.clone();
        async move {
            let tag = tag.as_deref();
            match state {
                RowsState::Start(panel) => {
                    let (rows, rx) = panel.subscribe();
                    let event = rows_event(tag, true, rows);
                    Some((Ok(event), RowsState::Live(panel, rx)))
                }
                RowsState::Live(panel, mut rx) => {
                    // Wait for rows, then gather whatever else arrives in the next moment,
                    // so a busy sink costs the browser one event per interval.
                    let mut rows: Vec<Value> = match rx.recv().await {
                        Ok(r) => r.as_ref().clone(),
                        Err(RecvError::Lagged(_)) => {
                            return Some((
                                Ok(rows_event(tag, true, panel.rows())),
                                RowsState::Live(panel, rx),
                            ));
                        }
                        Err(RecvError::Closed) => return None,
                    };
                    tokio::time::sleep(MIN_EVENT_INTERVAL).await;
                    loop {
                        match rx.try_recv() {
                            Ok(more) => rows.extend(more.iter().cloned()),
                            Err(TryRecvError::Lagged(_)) => {
                                return Some((
                                    Ok(rows_event(tag, true, panel.rows())),
                                    RowsState::Live(panel, rx),
                                ));
                            }
                            Err(_) => break,
                        }
                    }
                    let max = panel.config().max_rows;
                    if rows.len() > max {
                        rows.drain(..rows.len() - max);
                    }
                    Some((Ok(rows_event(tag, false, rows)), RowsState::Live(panel, rx)))
                }
            }
        }
    })
}

fn rows_event(panel: Option<&str>, reset: bool, rows: Vec<Value>) -> Event {
    let mut data = json!({"reset": reset, "rows": rows});
    if let Some(p) = panel {
        data["panel"] = p.into();
    }
    Event::default().event("rows").data(data.to_string())
}

/// `?v=` of an image URL: the version its row names.
#[derive(Debug, Default, serde::Deserialize)]
struct ImageVersion {
    v: Option<u64>,
}

async fn stream_image(
    State(s): State<AdminState>,
    Path((sink, key)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<ImageVersion>,
) -> Result<Response, ApiError> {
    let panel = s.panel(&sink)?;
    let image = panel.image_version(&key, q.v).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_image",
            format!("dashboard table '{sink}' has no image for key '{key}'"),
        )
    })?;
    let mut resp = image.bytes.as_ref().clone().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(image.content_type),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    Ok(resp)
}

async fn readyz(State(s): State<AdminState>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready").into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the pipeline is still starting",
        )
        .into_response()
    }
}

/// The OpenAPI description of every route.
pub const OPENAPI_JSON: &str = include_str!("../assets/openapi.json");
const INDEX_HTML: &str = include_str!("../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../assets/dashboard/app.js");
const STYLE_CSS: &str = include_str!("../assets/dashboard/style.css");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, ty) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no asset '{file}'"),
            )
            .into_response();
        }
    };
    (
        [
            (header::CONTENT_TYPE, ty),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
