//! The results hub: the latest rows of every `dashboard` table, kept in memory for the
//! live web page. A run has one [`Dashboards`]; each dashboard table is one [`Panel`] in
//! it, which the `dashboard` sink feeds and the server's Server-Sent-Events streams and
//! page read. Nothing here is durable: a dashboard shows what is happening now.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::broadcast;

/// Most keys a gallery keeps images for (older keys are evicted first).
pub(crate) const MAX_GALLERY_KEYS: usize = 256;

/// How a panel is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The latest rows as a table.
    Table,
    /// A numeric column plotted over time, one line per series.
    Timeseries,
    /// The latest image per key, with its label and score.
    Gallery,
}

impl View {
    /// The option value naming this view.
    pub fn as_str(self) -> &'static str {
        match self {
            View::Table => "table",
            View::Timeseries => "timeseries",
            View::Gallery => "gallery",
        }
    }
}

/// A panel's settings, from the table's columns and `WITH (…)` options.
#[derive(Debug, Clone)]
pub struct PanelConfig {
    /// The table name; also the stream name in `/api/streams/{name}`.
    pub name: String,
    /// Heading shown on the page.
    pub title: String,
    /// How rows are drawn.
    pub view: View,
    /// Rows with the same value in this column replace each other.
    pub key: Option<String>,
    /// Most rows kept.
    pub max_rows: usize,
    /// Timeseries x axis column.
    pub x: Option<String>,
    /// Timeseries y axis column.
    pub y: Option<String>,
    /// Timeseries: one line per value of this column.
    pub series: Option<String>,
    /// Gallery: the BYTES column holding the image.
    pub image: Option<String>,
    /// Gallery: look the image up in this log topic by `partition` and `offset` columns.
    pub image_topic: Option<String>,
    /// Columns shown (name, SQL type), without the image column.
    pub columns: Vec<(String, String)>,
}

/// An image kept for a gallery key.
#[derive(Debug, Clone)]
pub struct PanelImage {
    /// The encoded bytes as written.
    pub bytes: Arc<Vec<u8>>,
    /// `image/jpeg`, `image/png`, `image/webp` or `application/octet-stream`.
    pub content_type: &'static str,
    /// Bumped on every new image, so URLs change and browsers refetch.
    pub version: u64,
}

#[derive(Debug, Default)]
struct PanelState {
    /// (key, row), oldest first.
    rows: VecDeque<(Option<String>, Value)>,
    images: HashMap<String, PanelImage>,
    /// Each key's image before the latest: a page drawing a row fetches its image a
    /// moment later, by version, when a newer one may have arrived already.
    previous: HashMap<String, PanelImage>,
    versions: u64,
}

/// One dashboard table: its latest rows and a broadcast of new ones.
#[derive(Debug)]
pub struct Panel {
    config: PanelConfig,
    state: Mutex<PanelState>,
    tx: broadcast::Sender<Arc<Vec<Value>>>,
}

impl Panel {
    fn new(config: PanelConfig) -> Self {
        let (tx, _) = broadcast::channel(256);
        Panel {
            config,
            state: Mutex::new(PanelState::default()),
            tx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PanelState> {
        // Only plain collections are behind the lock; a panicked writer leaves them usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Its settings.
    pub fn config(&self) -> &PanelConfig {
        &self.config
    }

    /// The current rows, oldest first.
    pub fn rows(&self) -> Vec<Value> {
        self.lock().rows.iter().map(|(_, r)| r.clone()).collect()
    }

    /// The current rows and a receiver of every later batch of rows, taken atomically so
    /// no row is missed or seen twice.
    pub fn subscribe(&self) -> (Vec<Value>, broadcast::Receiver<Arc<Vec<Value>>>) {
        let state = self.lock();
        let rx = self.tx.subscribe();
        (state.rows.iter().map(|(_, r)| r.clone()).collect(), rx)
    }

    /// The latest image of a gallery key.
    pub fn image(&self, key: &str) -> Option<PanelImage> {
        self.lock().images.get(key).cloned()
    }

    /// The image of a gallery key with `version` (the one its row names) while it is
    /// still kept, else the latest.
    pub fn image_version(&self, key: &str, version: Option<u64>) -> Option<PanelImage> {
        let state = self.lock();
        let latest = state.images.get(key)?;
        match (version, state.previous.get(key)) {
            (Some(v), Some(prev)) if prev.version == v => Some(prev.clone()),
            _ => Some(latest.clone()),
        }
    }

    /// Folds rows (with the images of gallery rows) into the state and broadcasts them.
    /// Folds new rows (and their images) into the panel and tells subscribers.
    pub(crate) fn push(&self, mut rows: Vec<Value>, images: Vec<Option<Vec<u8>>>) {
        let mut state = self.lock();
        for (i, row) in rows.iter_mut().enumerate() {
            if retracts(row) {
                // `-U` / `-D` of an updating result: the row (by key, else by value) goes.
                let key = self
                    .config
                    .key
                    .as_ref()
                    .and_then(|k| row.get(k))
                    .map(key_string);
                let pos = match &key {
                    Some(k) => state.rows.iter().position(|(rk, _)| rk.as_ref() == Some(k)),
                    None => state.rows.iter().position(|(_, r)| same_row(r, row)),
                };
                if let Some(pos) = pos {
                    state.rows.remove(pos);
                }
                continue;
            }
            let key = self
                .config
                .key
                .as_ref()
                .and_then(|k| row.get(k))
                .map(key_string);
            if let (Some(key), Some(Some(bytes))) = (&key, images.get(i)) {
                state.versions += 1;
                let version = state.versions;
                let image = PanelImage {
                    content_type: sniff(bytes),
                    bytes: Arc::new(bytes.clone()),
                    version,
                };
                if !state.images.contains_key(key) && state.images.len() >= MAX_GALLERY_KEYS {
                    let oldest = state
                        .images
                        .iter()
                        .min_by_key(|(_, img)| img.version)
                        .map(|(k, _)| k.clone());
                    if let Some(oldest) = oldest {
                        state.images.remove(&oldest);
                        state.previous.remove(&oldest);
                    }
                }
                if let Some(before) = state.images.insert(key.clone(), image) {
                    state.previous.insert(key.clone(), before);
                }
                if let Value::Object(map) = row {
                    map.insert(
                        "_image".into(),
                        Value::String(format!(
                            "/api/streams/{}/images/{}?v={version}",
                            url_escape(&self.config.name),
                            url_escape(key)
                        )),
                    );
                }
            }
            if let Some(k) = &key
                && let Some(pos) = state.rows.iter().position(|(rk, _)| rk.as_ref() == Some(k))
            {
                state.rows.remove(pos);
            }
            state.rows.push_back((key, row.clone()));
            while state.rows.len() > self.config.max_rows {
                state.rows.pop_front();
            }
        }
        // No subscriber is fine: the page may not be open.
        let _ = self.tx.send(Arc::new(rows));
    }
}

/// Whether a dashboard row is the retraction (`-U`, `-D`) of an updating result.
fn retracts(row: &Value) -> bool {
    matches!(row.get("_op").and_then(Value::as_str), Some("-U" | "-D"))
}

/// Rows equal but for their row kind.
fn same_row(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let data = |m: &serde_json::Map<String, Value>| {
                m.iter()
                    .filter(|(k, _)| !k.starts_with('_'))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            };
            data(x) == data(y)
        }
        _ => a == b,
    }
}

/// Every dashboard panel of a pipeline, in the order the tables were declared.
#[derive(Debug, Default)]
pub struct Dashboards {
    panels: Mutex<Vec<Arc<Panel>>>,
    /// The results of `collect` tables (an ad-hoc query's rows), by table.
    collected: Mutex<HashMap<String, Arc<crate::sink::collect::Collected>>>,
}

impl Dashboards {
    /// The result of `collect` table `name`, created on first use (subtasks share it).
    ///
    /// # Errors
    /// Columns rows cannot be compared on.
    pub fn collect(
        &self,
        name: &str,
        schema: arrow::datatypes::SchemaRef,
    ) -> Result<Arc<crate::sink::collect::Collected>, crate::ConnectorError> {
        let mut collected = self.collected.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = collected.get(name) {
            return Ok(c.clone());
        }
        let c = Arc::new(crate::sink::collect::Collected::new(schema)?);
        collected.insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// The result of `collect` table `name`, if it was written.
    pub fn collected(&self, name: &str) -> Option<Arc<crate::sink::collect::Collected>> {
        self.collected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// All panels.
    pub fn panels(&self) -> Vec<Arc<Panel>> {
        self.panels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The panel of table `name`.
    pub fn panel(&self, name: &str) -> Option<Arc<Panel>> {
        self.panels().into_iter().find(|p| p.config.name == name)
    }

    /// The panel for `config`, created on first use (subtasks of one sink share it).
    pub fn register(&self, config: PanelConfig) -> Arc<Panel> {
        let mut panels = self.panels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = panels.iter().find(|p| p.config.name == config.name) {
            return p.clone();
        }
        let panel = Arc::new(Panel::new(config));
        panels.push(panel.clone());
        panel
    }
}

/// A key value as the string used to upsert and to name images.
fn key_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Percent-encodes everything but unreserved URL characters.
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The content type of common image encodings, from their magic bytes.
fn sniff(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "image/jpeg"
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "image/webp"
    } else {
        "application/octet-stream"
    }
}
