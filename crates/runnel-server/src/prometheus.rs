//! `GET /metrics` in Prometheus text format, and the HTTP request metrics.
//!
//! Libraries record with the `metrics` crate (log append and fsync latency, operator
//! batch latency, classification latency); this module installs the recorder that
//! renders them. Per-operator counters live in the engine's own atomics and are rendered
//! here from the pipelines' status, so the hot path pays nothing extra for them.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::admin::{AdminState, NodeStatus};

/// Latency buckets in seconds: 100 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls return the same handle.
/// `None` if another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .ok()?
                .install_recorder()
                .ok()?;
            // Histograms buffer samples until upkeep folds them in.
            let h = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        h.run_upkeep();
                    }
                })
                .ok()?;
            Some(handle)
        })
        .clone()
}

/// The method as a label: the standard ones by name, anything else as `other`, so that
/// made-up methods cannot grow `/metrics` without bound (every label has a fixed set of
/// values: routes are the router's patterns, statuses are HTTP's).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Axum middleware counting requests and timing them per route.
pub async fn track_http(request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("runnel_http_requests_total", "method" => method, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("runnel_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`.
pub async fn metrics_handler(State(admin): State<AdminState>) -> Response {
    let mut out = String::new();
    render_pipelines(&admin, &mut out);
    if let Some(handle) = install() {
        out.push_str(&handle.render());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// One per-operator metric family: name, type, help, and its value for a node.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&NodeStatus) -> Option<f64>,
);

const FAMILIES: &[Family] = &[
    (
        "runnel_operator_records_in_total",
        "counter",
        "Rows received by an operator",
        |n| Some(n.rows_in as f64),
    ),
    (
        "runnel_operator_records_out_total",
        "counter",
        "Rows emitted by an operator (sources: read, sinks: written)",
        |n| Some(n.rows_out as f64),
    ),
    (
        "runnel_operator_late_records_total",
        "counter",
        "Rows dropped because they arrived behind the watermark",
        |n| Some(n.late_rows as f64),
    ),
    (
        "runnel_operator_dead_letters_total",
        "counter",
        "Records sent to a dead-letter output",
        |n| Some(n.dead_letters as f64),
    ),
    (
        "runnel_connector_problem",
        "gauge",
        "1 while a source or sink cannot reach its external system (it retries), else 0",
        |n| Some(if n.problem.is_some() { 1.0 } else { 0.0 }),
    ),
    (
        "runnel_operator_backpressure_seconds_total",
        "counter",
        "Time spent waiting on full output channels",
        |n| Some(n.blocked_ms as f64 / 1000.0),
    ),
    (
        "runnel_operator_watermark_lag_seconds",
        "gauge",
        "Wall clock minus the operator's event-time watermark",
        |n| n.watermark_lag_ms.map(|lag| lag as f64 / 1000.0),
    ),
];

fn render_pipelines(admin: &AdminState, out: &mut String) {
    let statuses = admin.statuses();
    for (name, kind, help, value) in FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in &statuses {
            for n in &p.nodes {
                let Some(v) = value(n) else { continue };
                let _ = writeln!(
                    out,
                    "{name}{{pipeline=\"{}\",node=\"{}\",operator=\"{}\",kind=\"{}\"}} {v}",
                    escape(&p.name),
                    n.id,
                    escape(&n.label),
                    n.kind
                );
            }
        }
    }
    let name = "runnel_pipeline_uptime_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Seconds since the pipeline started\n# TYPE {name} gauge"
    );
    for p in &statuses {
        let _ = writeln!(
            out,
            "{name}{{pipeline=\"{}\"}} {}",
            escape(&p.name),
            p.uptime_s
        );
    }
}

/// Escapes a Prometheus label value.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        let made_up = axum::http::Method::from_bytes(b"FOOBAR").expect("a method");
        assert_eq!(method_label(&made_up), "other");
        assert_eq!(method_label(&axum::http::Method::GET), "GET");
    }
}
