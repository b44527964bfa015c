//! `camera`: IP cameras read over HTTP with no script in between. Each camera is a
//! snapshot URL fetched every `interval` (`GET …/snapshot.jpg`) or an MJPEG stream
//! (`multipart/x-mixed-replace`, as most IP cameras and `motion`/`mjpg-streamer` serve)
//! read as it comes; `mode = 'auto'` tells them apart by the answer's content type.
//!
//! One row per frame: the image (the table's one BYTES column), and from `METADATA FROM`
//! the camera's name (`'camera'`, STRING), the capture time (`'timestamp'`, when runnel
//! received the frame: cameras' own clocks are rarely set) and the URL (`'url'`).
//! Cameras are spread over the source's subtasks. A camera that cannot be reached, answers
//! with an error or stops sending is retried with backoff (1 s doubling to 30 s) and
//! shown as a problem on the page and at `/metrics` until it sends again. Frames are live:
//! nothing is replayed after a restart (the guarantee is at least once for what was read
//! before a checkpoint, and frames that arrive while runnel is down are not seen).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, BinaryArray, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use runnel_common::TableSpec;
use tokio::sync::mpsc;

use crate::descriptor::{
    self, CheckContext, CheckFuture, Connector, Guarantee, OptionDef, OptionType, Role,
};
use crate::{ConnectorError, Source, SourceContext, SourcePoll};

const NAME: &str = "camera";

/// `connector = 'camera'`.
pub const CONNECTOR: Connector = Connector {
    name: NAME,
    doc: "IP cameras over HTTP: snapshot URLs fetched every 'interval', or MJPEG streams \
          (multipart/x-mixed-replace); one row per frame with the camera's name and capture \
          time",
    options: &[
        OptionDef::new(
            "cameras",
            OptionType::Text,
            "the cameras, separated by ';': name=URL (http:// or https://), or a bare URL \
             named after its host",
        )
        .required(),
        OptionDef::new(
            "mode",
            OptionType::Choice(&["auto", "snapshot", "mjpeg"]),
            "snapshot: fetch the URL every 'interval'; mjpeg: read it as a stream of images; \
             auto: by the content type of the answer",
        )
        .default("auto"),
        OptionDef::new(
            "interval",
            OptionType::Text,
            "time between snapshots; of a stream, frames closer together than this are \
             skipped ('0 s' keeps every frame)",
        )
        .default("1 s"),
        OptionDef::new(
            "timeout",
            OptionType::Text,
            "a camera that answers nothing for this long is retried",
        )
        .default("10 s"),
        OptionDef::new(
            "username",
            OptionType::Text,
            "HTTP basic authentication user of every camera",
        ),
        OptionDef::new("password", OptionType::Text, "its password (never printed)"),
        OptionDef::new(
            "max-frame-bytes",
            OptionType::Int {
                min: 1024,
                max: 1 << 30,
            },
            "largest image accepted; a larger one is an error and the camera is retried",
        )
        .default("16777216"),
    ],
    source: Some(build_source),
    sink: None,
    unbounded: descriptor::always_unbounded,
    guarantee: Guarantee::AtLeastOnce,
    updates: descriptor::append_only,
    needs: &[],
    validate,
    check,
    metadata: &["camera", "timestamp", "url"],
    upserts: false,
    lookup: None,
};

/// Whether cameras are polled or streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Auto,
    Snapshot,
    Mjpeg,
}

/// One camera.
#[derive(Debug, Clone)]
struct Camera {
    name: String,
    url: String,
}

/// A table's cameras and how they are read.
#[derive(Debug, Clone)]
struct Config {
    cameras: Vec<Camera>,
    mode: Mode,
    interval: Duration,
    timeout: Duration,
    credentials: Option<(String, String)>,
    max_frame: usize,
}

fn parse(spec: &TableSpec) -> Result<Config, ConnectorError> {
    let o = &spec.options;
    let bad = |key: &str, why: String| {
        ConnectorError::Other(format!("table '{}': option '{key}': {why}", spec.name))
    };
    let mut cameras: Vec<Camera> = Vec::new();
    for item in o
        .get("cameras")
        .unwrap_or_default()
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (name, url) = match item.split_once('=') {
            Some((n, u)) if !n.contains("://") => (n.trim().to_string(), u.trim().to_string()),
            _ => (String::new(), item.to_string()),
        };
        let Some(rest) = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
        else {
            return Err(bad(
                "cameras",
                format!("'{}' is not an http:// or https:// URL", shown(&url)),
            ));
        };
        let host = rest
            .split(['/', '?'])
            .next()
            .unwrap_or_default()
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_string();
        if host.is_empty() {
            return Err(bad("cameras", format!("'{}' has no host", shown(&url))));
        }
        let name = if name.is_empty() { host } else { name };
        if cameras.iter().any(|c| c.name == name) {
            return Err(bad(
                "cameras",
                format!("two cameras are named '{name}'; name them: name=URL"),
            ));
        }
        cameras.push(Camera { name, url });
    }
    if cameras.is_empty() {
        return Err(bad("cameras", "names no camera".into()));
    }
    let duration = |key: &str, default: &str, min_ms: i64| {
        let text = o.get(key).unwrap_or(default);
        runnel_common::time::parse_duration_ms(text)
            .filter(|ms| *ms >= min_ms)
            .map(|ms| Duration::from_millis(ms as u64))
            .ok_or_else(|| {
                bad(
                    key,
                    format!("'{text}' is not a duration of {min_ms} ms or more"),
                )
            })
    };
    let credentials = match (o.get("username"), o.get("password")) {
        (None, None) => None,
        (u, p) => Some((
            u.unwrap_or_default().to_string(),
            p.unwrap_or_default().to_string(),
        )),
    };
    Ok(Config {
        cameras,
        mode: match o.get("mode").unwrap_or("auto") {
            "snapshot" => Mode::Snapshot,
            "mjpeg" => Mode::Mjpeg,
            _ => Mode::Auto,
        },
        interval: duration("interval", "1 s", 0)?,
        timeout: duration("timeout", "10 s", 100)?,
        credentials,
        max_frame: o
            .get("max-frame-bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(16 << 20),
    })
}

/// A URL as shown in messages: without user information.
fn shown(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

/// The column each metadata key fills, and the image column.
#[derive(Debug, Clone, Copy)]
enum Column {
    Image,
    Camera,
    Timestamp,
    Url,
}

fn layout(spec: &TableSpec) -> Result<Vec<Column>, ConnectorError> {
    let mut out = Vec::new();
    let mut images = 0;
    for (i, field) in spec.schema.fields().iter().enumerate() {
        let dt = field.data_type();
        let wrong = |reason: &str| ConnectorError::Type {
            table: spec.name.clone(),
            column: field.name().clone(),
            data_type: runnel_common::types::sql_name(dt),
            reason: reason.to_string(),
        };
        let column = match spec.metadata_of(i).map(|m| m.key.as_str()) {
            Some("camera") if *dt == DataType::Utf8 => Column::Camera,
            Some("url") if *dt == DataType::Utf8 => Column::Url,
            Some("timestamp") if matches!(dt, DataType::Timestamp(..)) => Column::Timestamp,
            Some(key) => {
                return Err(wrong(&format!(
                    "cannot hold camera metadata '{key}' (camera: STRING, url: STRING, \
                     timestamp: TIMESTAMP_LTZ(3))"
                )));
            }
            None if matches!(dt, DataType::Binary | DataType::LargeBinary) => {
                images += 1;
                Column::Image
            }
            None => {
                return Err(wrong(
                    "a camera table has one BYTES column (the image); other columns are \
                     METADATA FROM 'camera', 'timestamp' or 'url'",
                ));
            }
        };
        out.push(column);
    }
    if images != 1 {
        return Err(ConnectorError::Other(format!(
            "table '{}': a camera table has exactly one BYTES column for the image (it has \
             {images})",
            spec.name
        )));
    }
    Ok(out)
}

fn validate(spec: &TableSpec) -> Result<(), ConnectorError> {
    parse(spec)?;
    layout(spec)?;
    Ok(())
}

/// Options only: a camera that is down at start is retried while the pipeline runs (and
/// shown on the page), as it would be if it went down later.
fn check(spec: TableSpec, _role: Role, _: CheckContext) -> CheckFuture {
    Box::pin(async move { validate(&spec) })
}

/// One frame.
struct Frame {
    camera: usize,
    at: i64,
    image: bytes::Bytes,
}

/// One subtask: the frames of its cameras.
struct CameraSource {
    table: String,
    schema: SchemaRef,
    layout: Vec<Column>,
    cameras: Vec<Camera>,
    frames: mpsc::Receiver<Frame>,
    batch_size: usize,
    metrics: runnel_common::metrics::ConnectorMetrics,
    /// Stops the camera tasks when the source is dropped.
    _stop: tokio::sync::watch::Sender<bool>,
}

#[async_trait]
impl Source for CameraSource {
    async fn poll(&mut self) -> Result<SourcePoll, ConnectorError> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
        while got.len() < self.batch_size {
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Ok(Some(f)) => got.push(f),
                // No camera of this subtask, or every camera task ended.
                Ok(None) if got.is_empty() => {
                    tokio::time::sleep_until(deadline).await;
                    return Ok(SourcePoll::Pending);
                }
                Ok(None) | Err(_) => break,
            }
        }
        if got.is_empty() {
            return Ok(SourcePoll::Pending);
        }
        self.metrics
            .bytes
            .add(got.iter().map(|f| f.image.len() as u64).sum());
        let columns: Vec<ArrayRef> = self
            .layout
            .iter()
            .map(|c| -> ArrayRef {
                match c {
                    Column::Image => Arc::new(BinaryArray::from_iter_values(
                        got.iter().map(|f| f.image.as_ref()),
                    )),
                    Column::Camera => Arc::new(StringArray::from_iter_values(
                        got.iter().map(|f| self.cameras[f.camera].name.as_str()),
                    )),
                    Column::Url => Arc::new(StringArray::from_iter_values(
                        got.iter().map(|f| shown(&self.cameras[f.camera].url)),
                    )),
                    Column::Timestamp => Arc::new(TimestampMillisecondArray::from_iter_values(
                        got.iter().map(|f| f.at),
                    )),
                }
            })
            .collect();
        let batch = crate::source::records::assemble(&self.schema, columns).map_err(|e| {
            ConnectorError::Other(format!("table '{}': building a batch: {e}", self.table))
        })?;
        self.metrics.rows.add(batch.num_rows() as u64);
        Ok(SourcePoll::Batch(batch))
    }
}

/// The cameras' problems, shown together as the table's problem.
#[derive(Clone, Default)]
struct Problems(Arc<Mutex<std::collections::BTreeMap<String, String>>>);

impl Problems {
    fn set(
        &self,
        metrics: &runnel_common::metrics::ConnectorMetrics,
        camera: &str,
        what: Option<String>,
    ) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let changed = match what {
            Some(w) => all.insert(camera.to_string(), w.clone()).as_ref() != Some(&w),
            None => all.remove(camera).is_some(),
        };
        if !changed {
            return;
        }
        if all.is_empty() {
            metrics.clear_problem();
        } else {
            metrics.set_problem(
                all.iter()
                    .map(|(c, w)| format!("camera {c}: {w}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            );
        }
    }
}

/// What one camera task needs.
struct Feed {
    index: usize,
    camera: Camera,
    config: Arc<Config>,
    client: reqwest::Client,
    frames: mpsc::Sender<Frame>,
    metrics: runnel_common::metrics::ConnectorMetrics,
    problems: Problems,
    table: String,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Feed {
    fn problem(&self, what: Option<String>) {
        if let Some(w) = &what {
            tracing::warn!(table = %self.table, camera = %self.camera.name, "{w}");
        }
        self.problems.set(&self.metrics, &self.camera.name, what);
    }

    /// Reads the camera until the source goes away, reconnecting with backoff.
    async fn run(mut self) {
        let mut backoff = Duration::from_secs(1);
        let mut stop = self.stop.clone();
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                r = self.once() => r,
                _ = stop.changed() => return,
            };
            match result {
                Ok(()) => return,
                Err(why) => {
                    // A stream that ran for a while earns a fresh backoff.
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = Duration::from_secs(1);
                    }
                    self.problem(Some(format!("{why}; retrying in {}", fmt_secs(backoff))));
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    fn get(&self) -> reqwest::RequestBuilder {
        let mut r = self.client.get(&self.camera.url);
        if let Some((u, p)) = &self.config.credentials {
            r = r.basic_auth(u, Some(p));
        }
        r
    }

    /// Reads until an error (`Err`) or the pipeline no longer takes frames (`Ok`).
    async fn once(&mut self) -> Result<(), String> {
        let shown = shown(&self.camera.url);
        let mut next = tokio::time::Instant::now();
        loop {
            let response = tokio::time::timeout(self.config.timeout, self.get().send())
                .await
                .map_err(|_| {
                    format!(
                        "{shown} did not answer within {}",
                        fmt_secs(self.config.timeout)
                    )
                })?
                .map_err(|e| format!("{shown} unreachable ({})", root_cause(&e)))?;
            if !response.status().is_success() {
                return Err(format!("{shown} answered HTTP {}", response.status()));
            }
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_ascii_lowercase();
            let streaming = content_type.starts_with("multipart/");
            match (self.config.mode, streaming) {
                (Mode::Mjpeg, false) => {
                    return Err(format!(
                        "{shown} sent {content_type:?}, not an MJPEG stream \
                         (multipart/x-mixed-replace); use mode 'snapshot'"
                    ));
                }
                (Mode::Snapshot, true) => {
                    return Err(format!(
                        "{shown} sent a stream ({content_type}); use mode 'mjpeg' or 'auto'"
                    ));
                }
                (_, true) => return self.stream(response, &content_type, &shown).await,
                _ => {}
            }
            let body = tokio::time::timeout(self.config.timeout, response.bytes())
                .await
                .map_err(|_| format!("{shown} stopped sending the snapshot"))?
                .map_err(|e| format!("{shown}: reading the snapshot: {}", root_cause(&e)))?;
            if body.is_empty() {
                return Err(format!("{shown} sent an empty snapshot"));
            }
            if body.len() > self.config.max_frame {
                return Err(format!(
                    "{shown} sent a snapshot of {} bytes, over 'max-frame-bytes'",
                    body.len()
                ));
            }
            if !self.send(body).await {
                return Ok(());
            }
            next += self.config.interval;
            let now = tokio::time::Instant::now();
            if next < now {
                next = now;
            }
            tokio::time::sleep_until(next).await;
        }
    }

    /// Reads an MJPEG stream's parts.
    async fn stream(
        &mut self,
        mut response: reqwest::Response,
        content_type: &str,
        shown: &str,
    ) -> Result<(), String> {
        let boundary = content_type
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("boundary="))
            .next()
            .map(|b| b.trim_matches('"').to_string())
            .ok_or_else(|| format!("{shown} sent {content_type:?} without a boundary"))?;
        let mut parser = MjpegParser::new(&boundary, self.config.max_frame);
        let mut last: Option<tokio::time::Instant> = None;
        loop {
            let chunk = tokio::time::timeout(self.config.timeout, response.chunk())
                .await
                .map_err(|_| {
                    format!(
                        "{shown} sent no frame for {}",
                        fmt_secs(self.config.timeout)
                    )
                })?
                .map_err(|e| format!("{shown}: the stream broke ({})", root_cause(&e)))?;
            let Some(chunk) = chunk else {
                return Err(format!("{shown} ended the stream"));
            };
            for frame in parser.push(&chunk).map_err(|e| format!("{shown}: {e}"))? {
                let now = tokio::time::Instant::now();
                if last.is_some_and(|l| now.duration_since(l) < self.config.interval) {
                    continue;
                }
                last = Some(now);
                if !self.send(frame).await {
                    return Ok(());
                }
            }
        }
    }

    /// Hands a frame to the source; `false` once the source is gone.
    async fn send(&mut self, image: bytes::Bytes) -> bool {
        self.problem(None);
        self.frames
            .send(Frame {
                camera: self.index,
                at: runnel_common::time::now_ms(),
                image,
            })
            .await
            .is_ok()
    }
}

fn fmt_secs(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The innermost reason of an HTTP error ("connection refused"), not reqwest's chain.
fn root_cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(s) = source.source() {
        source = s;
    }
    source.to_string()
}

/// Splits a `multipart/x-mixed-replace` body into its parts' bodies: each part starts
/// with `--boundary`, its headers and a blank line; its body is `Content-Length` bytes
/// or runs to the next boundary.
struct MjpegParser {
    marker: Vec<u8>,
    buf: Vec<u8>,
    max_frame: usize,
}

impl MjpegParser {
    fn new(boundary: &str, max_frame: usize) -> Self {
        let boundary = boundary.trim_start_matches("--");
        MjpegParser {
            marker: format!("--{boundary}").into_bytes(),
            buf: Vec::new(),
            max_frame,
        }
    }

    /// Adds received bytes; returns the frames now complete.
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<bytes::Bytes>, String> {
        self.buf.extend_from_slice(chunk);
        let mut frames = Vec::new();
        loop {
            let Some(start) = find(&self.buf, &self.marker) else {
                // Keep a possible partial marker only.
                let keep = self.marker.len().min(self.buf.len());
                self.buf.drain(..self.buf.len() - keep);
                break;
            };
            let Some(headers_end) = find(&self.buf[start..], b"\r\n\r\n") else {
                self.guard()?;
                break;
            };
            let body_start = start + headers_end + 4;
            let headers =
                String::from_utf8_lossy(&self.buf[start..body_start]).to_ascii_lowercase();
            let length = headers
                .lines()
                .filter_map(|l| l.strip_prefix("content-length:"))
                .find_map(|v| v.trim().parse::<usize>().ok());
            let end = match length {
                Some(n) if n > self.max_frame => {
                    self.buf.clear();
                    return Err(format!("a frame of {n} bytes is over 'max-frame-bytes'"));
                }
                Some(n) if self.buf.len() >= body_start + n => body_start + n,
                Some(_) => {
                    self.guard()?;
                    break;
                }
                None => match find(&self.buf[body_start..], &self.marker) {
                    Some(next) => body_start + next,
                    None => {
                        self.guard()?;
                        break;
                    }
                },
            };
            let mut body = &self.buf[body_start..end];
            while let Some(rest) = body
                .strip_suffix(b"\r\n")
                .or_else(|| body.strip_suffix(b"\n"))
            {
                body = rest;
            }
            if !body.is_empty() {
                frames.push(bytes::Bytes::copy_from_slice(body));
            }
            self.buf.drain(..end);
        }
        Ok(frames)
    }

    /// A part larger than a frame may be is an error, not unbounded memory.
    fn guard(&mut self) -> Result<(), String> {
        if self.buf.len() > self.max_frame + 64 * 1024 {
            self.buf.clear();
            return Err(format!(
                "a frame is over 'max-frame-bytes' ({} bytes)",
                self.max_frame
            ));
        }
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn build_source(
    spec: &TableSpec,
    contexts: Vec<SourceContext>,
) -> Result<Vec<Box<dyn Source>>, ConnectorError> {
    CONNECTOR.check_options(spec)?;
    let config = Arc::new(parse(spec)?);
    let layout = layout(spec)?;
    let client = reqwest::Client::builder()
        .connect_timeout(config.timeout)
        .build()
        .map_err(|e| {
            ConnectorError::Other(format!("table '{}': an HTTP client: {e}", spec.name))
        })?;
    let problems = Problems::default();
    let mut out: Vec<Box<dyn Source>> = Vec::with_capacity(contexts.len());
    for ctx in contexts {
        // A few frames in flight per camera: a slow pipeline slows the cameras' reading
        // (a stream's TCP window fills), it never piles frames up in memory.
        let (tx, rx) = mpsc::channel(8);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        for (index, camera) in config.cameras.iter().enumerate() {
            if index % ctx.parallelism.max(1) != ctx.subtask {
                continue;
            }
            let feed = Feed {
                index,
                camera: camera.clone(),
                config: config.clone(),
                client: client.clone(),
                frames: tx.clone(),
                metrics: ctx.metrics.clone(),
                problems: problems.clone(),
                table: spec.name.clone(),
                stop: stop_rx.clone(),
            };
            tokio::spawn(feed.run());
        }
        drop(tx);
        out.push(Box::new(CameraSource {
            table: spec.name.clone(),
            schema: spec.schema.clone(),
            layout: layout.clone(),
            cameras: config.cameras.clone(),
            frames: rx,
            batch_size: ctx.batch_size.max(1),
            metrics: ctx.metrics.clone(),
            _stop: stop,
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mjpeg_parts_split_with_and_without_content_length() {
        let mut p = MjpegParser::new("frame", 1 << 20);
        let stream = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 4\r\n\r\nJPG1\r\n\
                       --frame\r\nContent-Type: image/jpeg\r\n\r\nJPEG-two\r\n--frame\r\n";
        // Byte by byte: partial markers and headers are kept until complete.
        let mut frames = Vec::new();
        for b in stream.iter() {
            frames.extend(p.push(&[*b]).unwrap());
        }
        assert_eq!(
            frames,
            vec![bytes::Bytes::from("JPG1"), bytes::Bytes::from("JPEG-two")]
        );
        let mut p = MjpegParser::new("--b", 10);
        let err = p
            .push(b"--b\r\nContent-Length: 999\r\n\r\n")
            .err()
            .unwrap_or_default();
        assert!(err.contains("max-frame-bytes"), "{err}");
    }

    #[test]
    fn cameras_are_named_and_urls_checked() {
        let spec_with = |cameras: &str| TableSpec {
            line: 0,
            name: "cams".into(),
            schema: Arc::new(arrow::datatypes::Schema::new(vec![
                arrow::datatypes::Field::new("image", DataType::Binary, true),
            ])),
            watermark: None,
            metadata: Vec::new(),
            primary_key: Vec::new(),
            partition_keys: Vec::new(),
            options: runnel_common::options::Options::new(vec![
                ("connector".to_string(), "camera".to_string()),
                ("cameras".to_string(), cameras.to_string()),
            ]),
        };
        let spec =
            spec_with("door=http://u:secret@10.0.0.5/snap.jpg; http://yard.local:8080/video.mjpg");
        let c = parse(&spec).unwrap();
        assert_eq!(c.cameras[0].name, "door");
        assert_eq!(c.cameras[1].name, "yard.local:8080");
        assert_eq!(shown(&c.cameras[0].url), "http://10.0.0.5/snap.jpg");
        let e = parse(&spec_with("door=rtsp://x/stream"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not an http:// or https:// URL"), "{e}");
        assert!(parse(&spec_with("a=http://x/1;a=http://x/2")).is_err());
        assert!(layout(&spec).is_ok());
    }
}
