//! `runnel camera-sim`: N simulated cameras, each POSTing one JPEG every 1/F seconds
//! to the ingest API, as real cameras uploading snapshots would.
//!
//! Frames come from a folder of photos (default: the bundled test photos) with a random
//! crop, mirror and brightness change each, so no two frames are byte-identical.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::http::Method;
use clap::Args;
use image::RgbImage;
use rand::{Rng, SeedableRng};
use runnel_server::client::HttpClient;

use crate::cli::ClientArgs;

/// The bundled test photos (name, bytes), so the simulator works from any directory.
pub const BUNDLED: &[(&str, &[u8])] = &[
    (
        "astronaut.png",
        include_bytes!("../../../../assets/images/astronaut.png"),
    ),
    (
        "chelsea.png",
        include_bytes!("../../../../assets/images/chelsea.png"),
    ),
    (
        "china.jpg",
        include_bytes!("../../../../assets/images/china.jpg"),
    ),
    (
        "coffee.png",
        include_bytes!("../../../../assets/images/coffee.png"),
    ),
    (
        "flower.jpg",
        include_bytes!("../../../../assets/images/flower.jpg"),
    ),
    (
        "rocket.jpg",
        include_bytes!("../../../../assets/images/rocket.jpg"),
    ),
    (
        "grace_hopper.jpg",
        include_bytes!("../../../../assets/images/grace_hopper.jpg"),
    ),
    (
        "camera.png",
        include_bytes!("../../../../assets/images/camera.png"),
    ),
    (
        "boats.jpg",
        include_bytes!("../../../../assets/images/boats.jpg"),
    ),
];

/// Longest side of a simulated frame, in pixels (a typical snapshot size).
const MAX_SIDE: u32 = 640;

/// `runnel camera-sim`.
#[derive(Debug, Args)]
pub struct CameraSimArgs {
    /// Number of cameras (keys cam-0 … cam-N-1)
    #[arg(long, default_value_t = 4)]
    pub cameras: usize,
    /// Frames per second per camera
    #[arg(long, default_value_t = 1.0)]
    pub fps: f64,
    /// The runnel server to post to
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Folder of JPEG/PNG/WebP photos to make frames from (default: the bundled photos)
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Stop after this many seconds (default: run until Ctrl-C)
    #[arg(long)]
    pub duration: Option<f64>,
    /// Topic to post to (with --mqtt: camera K publishes to <topic>/cam-K)
    #[arg(long, default_value = "frames")]
    pub topic: String,
    /// Publish the frames to this MQTT broker instead (mqtt://host:port, or mqtts://… with
    /// the system's CAs or --tls-ca), QoS 1, one client per camera
    #[cfg(feature = "mqtt")]
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// What the cameras did.
#[derive(Debug, Default, Clone)]
pub struct SimStats {
    /// Frames posted.
    pub sent: u64,
    /// Frames the server acknowledged (200).
    pub acked: u64,
    /// Frames that failed (connection error or non-200 answer).
    pub failed: u64,
    /// The last failure, for the report.
    pub last_error: Option<String>,
    /// Acknowledgement latencies in ms since the last report.
    latencies_ms: Vec<f64>,
    /// All acknowledgement latencies in ms (for the final report).
    all_latencies_ms: Vec<f64>,
}

impl SimStats {
    /// One line: counts and ack latency percentiles of `window` (or of the whole run).
    pub fn line(&self, whole_run: bool) -> String {
        let lat = if whole_run {
            &self.all_latencies_ms
        } else {
            &self.latencies_ms
        };
        let mut s = format!(
            "sent {} acked {} failed {}",
            self.sent, self.acked, self.failed
        );
        if !lat.is_empty() {
            s.push_str(&format!(
                " | ack latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
                percentile(lat, 0.50),
                percentile(lat, 0.99),
                percentile(lat, 1.0)
            ));
        }
        if let Some(e) = &self.last_error {
            s.push_str(&format!(" | last error: {e}"));
        }
        s
    }
}

fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i.min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

/// Everything a simulation run needs.
pub struct SimConfig {
    /// Number of cameras.
    pub cameras: usize,
    /// Frames per second per camera.
    pub fps: f64,
    /// The server, reached with its token and TLS trust.
    pub client: HttpClient,
    /// Source photos, decoded.
    pub photos: Vec<RgbImage>,
    /// Topic to post to.
    pub topic: String,
    /// Publish over MQTT to this broker instead of posting: its URL, and the CA file its
    /// certificate is checked against for `mqtts://`.
    pub mqtt: Option<(String, Option<PathBuf>)>,
}

/// Runs `runnel camera-sim` until `--duration` or Ctrl-C, printing a report every 5 s.
pub async fn camera_sim(args: CameraSimArgs) -> anyhow::Result<()> {
    if args.cameras == 0 {
        bail!("--cameras must be at least 1");
    }
    if !(args.fps > 0.0 && args.fps <= 1000.0) {
        bail!("--fps must be between 0 and 1000, got {}", args.fps);
    }
    let client = args.client.client(&args.url)?;
    let photos = load_photos(args.images.as_deref())?;
    #[cfg(feature = "mqtt")]
    let mqtt = match args.mqtt.as_deref() {
        Some(url) => {
            // Checked once here, so a bad URL or CA file stops the command at once.
            runnel_connectors::source::mqtt::client_options(
                url,
                "check",
                args.client.tls_ca.as_deref(),
            )
            .map_err(|e| anyhow::anyhow!("--mqtt: {e}"))?;
            Some((url.to_string(), args.client.tls_ca.clone()))
        }
        None => None,
    };
    #[cfg(not(feature = "mqtt"))]
    let mqtt = None;
    let config = SimConfig {
        cameras: args.cameras,
        fps: args.fps,
        client,
        photos,
        topic: args.topic.clone(),
        mqtt,
    };
    match &config.mqtt {
        Some((url, ca)) => eprintln!(
            "camera-sim: {} cameras at {} frame/s each -> {} topics {}/cam-<k>",
            config.cameras,
            config.fps,
            mqtt_shown(url, ca.as_deref()),
            config.topic
        ),
        None => eprintln!(
            "camera-sim: {} cameras at {} frame/s each -> {}/v1/topics/{}/records",
            config.cameras,
            config.fps,
            config.client.url(),
            config.topic
        ),
    }
    let stats = Arc::new(Mutex::new(SimStats::default()));
    let reporter = {
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
                eprintln!("camera-sim: {}", s.line(false));
                s.latencies_ms.clear();
            }
        })
    };
    let duration = args.duration.map(Duration::from_secs_f64);
    let stop = async move {
        match duration {
            Some(d) => {
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    () = crate::cmd::serve::shutdown_signal() => {}
                }
            }
            None => crate::cmd::serve::shutdown_signal().await,
        }
    };
    run(config, stats.clone(), stop).await;
    reporter.abort();
    let s = stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
    eprintln!("camera-sim: done: {}", s.line(true));
    if s.acked == 0 && s.sent > 0 {
        bail!("no frame was acknowledged ({} failed)", s.failed);
    }
    Ok(())
}

/// Decodes the photos of `dir` (or the bundled ones), scaled to at most 640 px.
pub fn load_photos(dir: Option<&Path>) -> anyhow::Result<Vec<RgbImage>> {
    let mut encoded: Vec<(String, Vec<u8>)> = Vec::new();
    match dir {
        None => {
            encoded.extend(BUNDLED.iter().map(|(n, b)| (n.to_string(), b.to_vec())));
        }
        Some(dir) => {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("--images {}: cannot read the folder", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|e| {
                        matches!(
                            e.to_ascii_lowercase().to_str(),
                            Some("jpg" | "jpeg" | "png" | "webp")
                        )
                    })
                })
                .collect();
            paths.sort();
            for p in paths {
                let bytes =
                    std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                encoded.push((p.display().to_string(), bytes));
            }
        }
    }
    let mut photos = Vec::new();
    for (name, bytes) in encoded {
        match image::load_from_memory(&bytes) {
            Ok(img) => {
                let img = img.to_rgb8();
                let (w, h) = img.dimensions();
                let scale = (MAX_SIDE as f64 / w.max(h) as f64).min(1.0);
                let img = if scale < 1.0 {
                    image::imageops::resize(
                        &img,
                        ((w as f64 * scale) as u32).max(1),
                        ((h as f64 * scale) as u32).max(1),
                        image::imageops::FilterType::Triangle,
                    )
                } else {
                    img
                };
                photos.push(img);
            }
            Err(e) => tracing::warn!("skipping {name}: not a readable image: {e}"),
        }
    }
    if photos.is_empty() {
        bail!(
            "--images {}: no readable JPEG/PNG/WebP photo in the folder",
            dir.map(|d| d.display().to_string()).unwrap_or_default()
        );
    }
    Ok(photos)
}

/// A new frame: a random crop (70–100 % per side), maybe mirrored, brightness ±30,
/// encoded as JPEG.
pub fn make_frame(photo: &RgbImage, rng: &mut impl Rng) -> Vec<u8> {
    let (w, h) = photo.dimensions();
    let cw = ((w as f64) * rng.random_range(0.7..=1.0)).max(1.0) as u32;
    let ch = ((h as f64) * rng.random_range(0.7..=1.0)).max(1.0) as u32;
    let x = rng.random_range(0..=w - cw);
    let y = rng.random_range(0..=h - ch);
    let mut img = image::imageops::crop_imm(photo, x, y, cw, ch).to_image();
    if rng.random_bool(0.5) {
        image::imageops::flip_horizontal_in_place(&mut img);
    }
    let img = image::imageops::colorops::brighten(&img, rng.random_range(-30..=30));
    let mut out = Vec::with_capacity(64 << 10);
    let encoded =
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode_image(&img);
    if encoded.is_err() {
        out.clear();
    }
    out
}

/// Runs the cameras until `stop` completes; counts go to `stats`.
pub async fn run(
    config: SimConfig,
    stats: Arc<Mutex<SimStats>>,
    stop: impl Future<Output = ()> + Send,
) {
    let photos = Arc::new(config.photos);
    let mut tasks = tokio::task::JoinSet::new();
    let period = Duration::from_secs_f64(1.0 / config.fps);
    for cam in 0..config.cameras {
        let photos = photos.clone();
        let stats = stats.clone();
        let client = config.client.clone();
        let path = format!("/v1/topics/{}/records", config.topic);
        // Cameras start spread over one period, as real ones are not synchronized.
        let offset = period.mul_f64(cam as f64 / config.cameras as f64);
        #[cfg(feature = "mqtt")]
        if let Some((url, ca)) = config.mqtt.clone() {
            let topic = format!("{}/cam-{cam}", config.topic);
            tasks.spawn(async move {
                tokio::time::sleep(offset).await;
                mqtt_camera(cam, period, (url, ca), topic, photos, stats).await;
            });
            continue;
        }
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            camera(cam, period, client, path, photos, stats).await;
        });
    }
    stop.await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// One camera's frames: a JPEG per period, from its photos in turn, each with its own
/// noise and exposure.
struct Frames {
    cam: usize,
    photos: Arc<Vec<RgbImage>>,
    rng: rand::rngs::StdRng,
    tick: tokio::time::Interval,
    frame_no: usize,
}

impl Frames {
    fn new(cam: usize, period: Duration, photos: Arc<Vec<RgbImage>>) -> Self {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Frames {
            cam,
            photos,
            rng: rand::rngs::StdRng::seed_from_u64(
                cam as u64 ^ runnel_common::time::now_ms() as u64,
            ),
            tick,
            frame_no: 0,
        }
    }

    /// Waits for the next tick and makes its frame (`None` if encoding failed).
    async fn next(&mut self) -> Option<Vec<u8>> {
        self.tick.tick().await;
        let photo = self.photos[(self.cam + self.frame_no) % self.photos.len()].clone();
        self.frame_no += 1;
        let seed: u64 = self.rng.random();
        tokio::task::spawn_blocking(move || {
            make_frame(&photo, &mut rand::rngs::StdRng::seed_from_u64(seed))
        })
        .await
        .ok()
    }
}

async fn camera(
    cam: usize,
    period: Duration,
    client: HttpClient,
    path: String,
    photos: Arc<Vec<RgbImage>>,
    stats: Arc<Mutex<SimStats>>,
) {
    let key = format!("cam-{cam}");
    let mut conn = None;
    let mut frames = Frames::new(cam, period, photos);
    loop {
        let Some(frame) = frames.next().await else {
            continue;
        };
        let event_time = runnel_common::time::now_ms().to_string();
        let headers = [
            ("content-type", "image/jpeg"),
            ("x-key", key.as_str()),
            ("x-event-time", event_time.as_str()),
        ];
        if conn.is_none() {
            match client.connect().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
                    s.sent += 1;
                    s.failed += 1;
                    s.last_error = Some(e.to_string());
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let started = Instant::now();
        let result = c.request(Method::POST, &path, &headers, frame).await;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
        s.sent += 1;
        match result {
            Ok(r) if r.is_success() => {
                s.acked += 1;
                s.latencies_ms.push(ms);
                s.all_latencies_ms.push(ms);
            }
            Ok(r) => {
                s.failed += 1;
                s.last_error = Some(format!("HTTP {}: {}", r.status, r.error_message()));
            }
            Err(e) => {
                s.failed += 1;
                s.last_error = Some(e.to_string());
                conn = None;
            }
        }
    }
}

/// A broker URL as shown in messages (without its credentials).
fn mqtt_shown(url: &str, ca: Option<&std::path::Path>) -> String {
    #[cfg(feature = "mqtt")]
    if let Ok((_, shown)) = runnel_connectors::source::mqtt::client_options(url, "shown", ca) {
        return shown;
    }
    let _ = ca;
    url.split_once('@')
        .map_or(url, |(_, host)| host)
        .to_string()
}

/// One camera publishing a frame per period over MQTT (QoS 1); a frame counts as
/// acknowledged when the broker's PUBACK arrives.
#[cfg(feature = "mqtt")]
async fn mqtt_camera(
    cam: usize,
    period: Duration,
    (url, ca): (String, Option<PathBuf>),
    topic: String,
    photos: Arc<Vec<RgbImage>>,
    stats: Arc<Mutex<SimStats>>,
) {
    use rumqttc::{AsyncClient, Event, Packet, QoS};
    let id = format!("runnel-camera-sim-{}-{cam}", std::process::id());
    let options = match runnel_connectors::source::mqtt::client_options(&url, &id, ca.as_deref()) {
        Ok((options, _)) => options,
        Err(e) => {
            stats.lock().unwrap_or_else(|p| p.into_inner()).last_error = Some(e);
            return;
        }
    };
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let mut frames = Frames::new(cam, period, photos);
    loop {
        let Some(frame) = frames.next().await else {
            continue;
        };
        let started = Instant::now();
        let sent = client
            .publish(topic.clone(), QoS::AtLeastOnce, false, frame)
            .await;
        let acked = match sent {
            Err(e) => Err(e.to_string()),
            Ok(()) => {
                let wait = async {
                    loop {
                        match eventloop.poll().await {
                            Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                            Ok(_) => {}
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                };
                tokio::time::timeout(Duration::from_secs(10), wait)
                    .await
                    .unwrap_or_else(|_| Err("no PUBACK within 10 s".into()))
            }
        };
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
        s.sent += 1;
        match acked {
            Ok(()) => {
                s.acked += 1;
                s.latencies_ms.push(ms);
                s.all_latencies_ms.push(ms);
            }
            Err(e) => {
                s.failed += 1;
                s.last_error = Some(e);
            }
        }
    }
}
