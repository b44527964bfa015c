//! `runnel demo`: the camera demo in one process, with nothing to set up.
//!
//! The embedded log (in a temporary or given directory), the HTTP server with the
//! dashboard, simulated cameras posting over HTTP like real ones, and
//! `examples/camera.sql` classifying every frame and detecting its objects. A line per
//! 10-second window is printed until Ctrl-C.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use runnel_log::TopicConfig;
use runnel_server::AdminState;
use runnel_server::client::{ClientOptions, HttpClient, Trust};
use serde_json::Value;

use crate::cmd::camera_sim::{self, SimConfig, SimStats};
use crate::cmd::run;
use runnel_runtime::{PrepareOptions, Resources, prepare};
use runnel_server::{Server, ServerState};

/// The demo pipeline, built in so the demo runs from any directory.
const CAMERA_SQL: &str = include_str!("../../../../examples/camera.sql");

/// `runnel demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address of the dashboard and ingest API
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Directory for the log (default: a new temporary directory, removed at exit)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of simulated cameras (0: only what clients POST)
    #[arg(long, default_value_t = 4)]
    pub cameras: usize,
    /// Frames per second per camera
    #[arg(long, default_value_t = 1.0)]
    pub fps: f64,
    /// Folder of photos for the cameras (default: the bundled test photos)
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Run this pipeline instead of the built-in examples/camera.sql
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// Subtasks per operator (default: the number of cores)
    #[arg(short, long)]
    pub parallelism: Option<usize>,
    /// Stop after this many seconds (default: run until Ctrl-C)
    #[arg(long)]
    pub duration: Option<f64>,
    /// Authentication and how the server is reached
    #[command(flatten)]
    pub http: crate::cli::HttpArgs,
}

/// The built-in pipeline. Built without the `delta` feature, its warehouse table is
/// written as plain partitioned Parquet instead of a Delta table.
fn camera_sql() -> String {
    if cfg!(feature = "delta") {
        CAMERA_SQL.to_string()
    } else {
        CAMERA_SQL.replace(
            "connector = 'delta', path = 'demo-out/warehouse/frames'",
            "connector = 'filesystem', path = 'demo-out/warehouse/frames', format = 'parquet'",
        )
    }
}

/// Runs the demo until Ctrl-C or `--duration`.
pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let (sql, file) = match &args.pipeline {
        Some(p) => (
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read pipeline file {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (camera_sql(), "examples/camera.sql".to_string()),
    };
    let (data_dir, _temp) = match &args.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("runnel-demo-")
                .tempdir()
                .context("creating a temporary data directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let photos = if args.cameras > 0 {
        camera_sim::load_photos(args.images.as_deref())?
    } else {
        Vec::new()
    };

    eprintln!("runnel demo: loading the image model and planning {file} …");
    let mut options = PrepareOptions::new(file.clone(), data_dir.clone());
    options.parallelism = args.parallelism;
    let prepared = prepare(&sql, &options).with_context(|| file.clone())?;

    let mut resources = Resources::new(&data_dir);
    let log = resources.open_log().await?;
    for (topic, partitions) in [("frames", 4), ("labels", 1), ("events", 1)] {
        if log.topic(topic).is_none() {
            let log = log.clone();
            tokio::task::spawn_blocking(move || {
                log.create_topic(topic, TopicConfig::with_partitions(partitions))
            })
            .await
            .context("creating topics failed")?
            .with_context(|| format!("creating topic '{topic}'"))?;
        }
    }
    let admin = AdminState::new(resources.hub.clone());
    let server = Server::start(
        &args.listen,
        &args.http.config(),
        ServerState::new(log).with_auto_create(Some(1)),
        admin.clone(),
    )
    .await?;
    let url = server.url();
    // The one line on stdout, so scripts (and tests) can find the server.
    println!("dashboard: {url}/");
    if let Some(tls) = &server.tls {
        eprintln!("runnel demo: TLS certificate SHA-256 {}", tls.fingerprint());
    }
    eprintln!(
        "runnel demo: {} cameras at {} frame/s; data in {}{}; Ctrl-C to stop",
        args.cameras,
        args.fps,
        data_dir.display(),
        if args.data_dir.is_none() {
            " (temporary)"
        } else {
            ""
        }
    );
    eprintln!(
        "runnel demo: open {url}/ — results in topic 'labels' and the Delta table \
         demo-out/warehouse/frames, window counts in demo-out/label_counts/"
    );

    let printer = tokio::spawn(print_windows(resources.hub.clone()));
    let (cams_stop, cams_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stats = Arc::new(Mutex::new(SimStats::default()));
    // The simulated cameras post to this server: its token, and its own certificate
    // pinned by fingerprint (whether generated or read from --tls-cert).
    let client = HttpClient::with_options(
        &url,
        &ClientOptions {
            token: args.http.auth_token.clone(),
            trust: server
                .tls
                .as_ref()
                .map_or(Trust::System, |t| Trust::Fingerprint(t.fingerprint())),
        },
    )?;
    let cameras = (args.cameras > 0).then(|| {
        let sim = SimConfig {
            cameras: args.cameras,
            fps: args.fps,
            client,
            photos,
            topic: "frames".into(),
            mqtt: None,
        };
        let stats = stats.clone();
        tokio::spawn(camera_sim::run(sim, stats, async {
            let _ = cams_stop_rx.await;
        }))
    });

    let duration = args.duration.map(Duration::from_secs_f64);
    let stop = async move {
        match duration {
            Some(d) => tokio::select! {
                () = tokio::time::sleep(d) => {}
                () = crate::cmd::serve::shutdown_signal() => {}
            },
            None => crate::cmd::serve::shutdown_signal().await,
        }
    };
    let result = run::run_to_end(prepared, resources.clone(), &admin, stop).await;
    let _ = cams_stop.send(());
    if let Some(c) = cameras {
        let _ = c.await;
    }
    printer.abort();
    server.stop().await;
    resources.close().await;
    if args.cameras > 0 {
        let s = stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        eprintln!("runnel demo: cameras: {}", s.line(true));
    }
    eprintln!("runnel demo: stopped");
    result
}

/// Prints one line per closed 10-second window, from the `label_counts` table, with the
/// end-to-end latency of the frames classified meanwhile (from `latest_frames`).
async fn print_windows(dashboards: Arc<runnel_runtime::resources::Dashboards>) {
    // The sinks register their panels when the pipeline starts.
    let (counts, frames) = loop {
        if let (Some(c), Some(f)) = (
            dashboards.panel("label_counts"),
            dashboards.panel("latest_frames"),
        ) {
            break (c, f);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (_, mut count_rx) = counts.subscribe();
    let (_, mut frame_rx) = frames.subscribe();
    // window_end → camera → label → frames
    let mut windows: BTreeMap<String, BTreeMap<String, BTreeMap<String, i64>>> = BTreeMap::new();
    let mut latencies: Vec<i64> = Vec::new();
    let mut flush = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            rows = count_rx.recv() => {
                let Ok(rows) = rows else { continue };
                for r in rows.iter() {
                    let (Some(end), Some(cam), Some(label)) = (
                        r.get("window_end").and_then(Value::as_str),
                        r.get("camera").and_then(Value::as_str),
                        r.get("label").and_then(Value::as_str),
                    ) else { continue };
                    let n = r.get("frames").and_then(Value::as_i64).unwrap_or(0);
                    *windows.entry(end.to_string()).or_default()
                        .entry(cam.to_string()).or_default()
                        .entry(label.to_string()).or_default() += n;
                }
            }
            rows = frame_rx.recv() => {
                let Ok(rows) = rows else { continue };
                latencies.extend(rows.iter().filter_map(|r| r.get("latency_ms").and_then(Value::as_i64)));
            }
            _ = flush.tick() => {
                // A window's rows arrive together when it fires; print it once quiet.
                if windows.is_empty() { continue; }
                for (end, cams) in std::mem::take(&mut windows) {
                    println!("{}", window_line(&end, &cams, &mut latencies));
                }
            }
        }
    }
}

fn window_line(
    end: &str,
    cams: &BTreeMap<String, BTreeMap<String, i64>>,
    latencies: &mut Vec<i64>,
) -> String {
    let total: i64 = cams.values().flat_map(|l| l.values()).sum();
    let mut line = format!("window ending {end}: {total} frames");
    if !latencies.is_empty() {
        latencies.sort_unstable();
        let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        line.push_str(&format!(", latency p50 {} ms p99 {} ms", p(0.5), p(0.99)));
        latencies.clear();
    }
    for (cam, labels) in cams {
        let mut top: Vec<(&String, &i64)> = labels.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let shown: Vec<String> = top
            .iter()
            .take(3)
            .map(|(l, n)| format!("{l} ×{n}"))
            .collect();
        line.push_str(&format!(" | {cam}: {}", shown.join(", ")));
    }
    line
}
