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

/// Where the built-in pipeline writes its files.
const DEMO_OUT: &str = "demo-out";

/// Moves a non-empty `dir` to `dir.1` (or the next free number) and says so.
fn keep_earlier_output(dir: &std::path::Path) -> anyhow::Result<()> {
    let used = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if !used {
        return Ok(());
    }
    let kept = (1..)
        .map(|n| PathBuf::from(format!("{}.{n}", dir.display())))
        .find(|p| !p.exists())
        .context("no free name for the earlier output")?;
    std::fs::rename(dir, &kept).with_context(|| {
        format!(
            "moving the earlier run's {} aside to {} (a new run starts it afresh)",
            dir.display(),
            kept.display()
        )
    })?;
    eprintln!(
        "runnel demo: the earlier run's output is kept in {}/ (this run writes a new {}/)",
        kept.display(),
        dir.display()
    );
    Ok(())
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

    // A run from scratch rewrites the exactly-once file sinks' directories: keep what an
    // earlier run wrote there instead of losing it.
    if args.pipeline.is_none() && !data_dir.join("checkpoints").exists() {
        keep_earlier_output(std::path::Path::new(DEMO_OUT))?;
    }
    eprintln!("runnel demo: loading the image model and planning {file} …");
    let mut options = PrepareOptions::new(file.clone(), data_dir.clone());
    options.parallelism = args.parallelism;
    let prepared = prepare(&sql, &options).with_context(|| file.clone())?;

    let mut resources = Resources::new(&data_dir);
    let log = resources.open_log().await?;
    // Frames are kept for 10 minutes (the log would grow ~10 MB a minute per 4 cameras
    // otherwise), results for a day.
    for (topic, partitions, segment_mb, retention_min) in [
        ("frames", 4, 4, 10),
        ("labels", 1, 16, 24 * 60),
        ("events", 1, 16, 24 * 60),
    ] {
        if log.topic(topic).is_none() {
            let log = log.clone();
            let mut config = TopicConfig::with_partitions(partitions);
            config.segment_bytes = segment_mb << 20;
            config.retention_ms = Some(retention_min * 60_000);
            tokio::task::spawn_blocking(move || log.create_topic(topic, config))
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
    // A temporary data directory is never resumed: show the rows the file sink has
    // committed since its last roll.
    if args.data_dir.is_none() && args.pipeline.is_none() {
        let dir = std::path::Path::new(DEMO_OUT).join("label_counts");
        let format = runnel_connectors::sink::file::FileSinkFormat::Json;
        if let Err(e) = runnel_connectors::sink::file_parts::roll_open_parts(&dir, format) {
            eprintln!("runnel demo: {}: {e}", dir.display());
        }
    }
    if args.cameras > 0 {
        let s = stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        eprintln!("runnel demo: cameras: {}", s.line(true));
    }
    if let Some((now, peak)) = resident_mb() {
        eprintln!("runnel demo: memory: {now} MB resident at the end, {peak} MB at the peak");
    }
    eprintln!("runnel demo: stopped");
    result
}

/// This process's resident memory now and at its peak, in MB (Linux: /proc/self/status).
fn resident_mb() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((kb("VmRSS:")? / 1024, kb("VmHWM:")? / 1024))
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
                    let memory = resident_mb().map(|(now, _)| format!(" | {now} MB")).unwrap_or_default();
                    println!("{}{memory}", window_line(&end, &cams, &mut latencies));
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
    // "2026-12-06T22:40:10.000Z" → "22:40:10"
    let time = end
        .split(['T', ' '])
        .nth(1)
        .unwrap_or(end)
        .split('.')
        .next()
        .unwrap_or(end)
        .trim_end_matches('Z');
    let mut line = format!("window to {time}: {total} frames");
    if !latencies.is_empty() {
        latencies.sort_unstable();
        let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        line.push_str(&format!(", latency p50 {} ms p99 {} ms", p(0.5), p(0.99)));
        latencies.clear();
    }
    // The labels of all cameras together, most frequent first.
    let mut labels: BTreeMap<&str, i64> = BTreeMap::new();
    for l in cams.values() {
        for (label, n) in l {
            *labels.entry(label).or_default() += n;
        }
    }
    let mut top: Vec<(&str, i64)> = labels.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let shown: Vec<String> = top
        .iter()
        .take(TOP_LABELS)
        .map(|(l, n)| format!("{l} ×{n}"))
        .collect();
    line.push_str(&format!(" | {}", shown.join(", ")));
    if top.len() > TOP_LABELS {
        line.push_str(&format!(", … ({} more)", top.len() - TOP_LABELS));
    }
    // Frames per camera, in natural order (cam-2 before cam-10).
    let mut per_cam: Vec<(&String, i64)> =
        cams.iter().map(|(c, l)| (c, l.values().sum())).collect();
    per_cam.sort_by_key(|(c, _)| natural_key(c));
    let counts: Vec<String> = per_cam
        .iter()
        .take(CAMERAS_SHOWN)
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    line.push_str(&format!(" | {}", counts.join(", ")));
    if per_cam.len() > CAMERAS_SHOWN {
        line.push_str(&format!(", … ({} cameras)", per_cam.len()));
    }
    line
}

/// Labels shown on a window line.
const TOP_LABELS: usize = 3;
/// Cameras whose frame counts a window line shows.
const CAMERAS_SHOWN: usize = 6;

/// Sorts names with numbers by their numbers' values: `cam-2` before `cam-10`.
fn natural_key(name: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            if !text.is_empty() {
                key.push((0, std::mem::take(&mut text)));
            }
            digits.push(c);
        } else {
            if !digits.is_empty() {
                key.push((
                    digits.parse().unwrap_or(u64::MAX),
                    std::mem::take(&mut digits),
                ));
            }
            text.push(c);
        }
    }
    if !text.is_empty() {
        key.push((0, text));
    }
    if !digits.is_empty() {
        key.push((digits.parse().unwrap_or(u64::MAX), digits));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_line_is_one_short_line_in_natural_camera_order() {
        let mut cams = BTreeMap::new();
        for i in 1..=16 {
            let mut labels = BTreeMap::new();
            labels.insert("person".to_string(), 5);
            labels.insert(format!("label-{i}"), 5);
            cams.insert(format!("cam-{i}"), labels);
        }
        let line = window_line("2026-12-06T22:40:10.000Z", &cams, &mut vec![30, 40, 90]);
        assert!(line.len() < 200, "{} chars: {line}", line.len());
        assert!(line.starts_with("window to 22:40:10: 160 frames"), "{line}");
        assert!(line.contains("person ×80"), "{line}");
        assert!(line.contains("… (14 more)"), "{line}");
        assert!(line.contains("cam-1 10, cam-2 10, cam-3 10"), "{line}");
        assert!(line.contains("… (16 cameras)"), "{line}");
        assert!(natural_key("cam-2") < natural_key("cam-10"));
    }

    #[test]
    fn an_earlier_runs_output_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("demo-out");
        std::fs::create_dir_all(out.join("label_counts")).unwrap();
        std::fs::write(out.join("label_counts/part-1.jsonl"), "{}\n").unwrap();
        keep_earlier_output(&out).unwrap();
        assert!(!out.exists());
        assert!(
            dir.path()
                .join("demo-out.1/label_counts/part-1.jsonl")
                .exists()
        );
        std::fs::create_dir_all(out.join("x")).unwrap();
        keep_earlier_output(&out).unwrap();
        assert!(dir.path().join("demo-out.2/x").exists());
        // Nothing there: nothing moved.
        keep_earlier_output(&out).unwrap();
        assert!(!dir.path().join("demo-out.3").exists());
    }
}
