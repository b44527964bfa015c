//! Checkpoints: aligned barriers (Chandy–Lamport, as Flink does), one coordinator per
//! pipeline, state files written through `object_store`, an atomically written manifest.
//!
//! Every interval the coordinator asks each source subtask for checkpoint `n`; the source
//! records its position and sends barrier `n` downstream. An operator that has barrier `n`
//! from all its inputs snapshots its state and forwards the barrier; a sink pre-commits.
//! Each reports to the coordinator, which, once every subtask reported, writes the state
//! files, then the manifest (write, fsync, rename, fsync the directory): only then is `n`
//! complete, and only then are sinks told to commit `n`. A crash at any point before the
//! rename leaves `n` invisible; restart resumes from the newest complete manifest.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use runnel_common::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::error::EngineError;
use crate::operator::StateReader;

/// Test hook: `RUNNEL_FAIL_AT=after-state|after-manifest|after-pre-commit|after-commit`
/// aborts the process (no cleanup, as a power loss would) at that phase of checkpoint
/// `RUNNEL_FAIL_AT_CHECKPOINT` (default 2).
pub fn crash_point(phase: &str, id: u64) {
    static AT: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        let phase = std::env::var("RUNNEL_FAIL_AT").ok()?;
        let id = std::env::var("RUNNEL_FAIL_AT_CHECKPOINT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2);
        Some((phase, id))
    });
    if let Some((p, n)) = at
        && p == phase
        && *n == id
    {
        eprintln!("runnel: injected crash {phase} of checkpoint {id}");
        std::process::abort();
    }
}

/// An operator subtask's saved state: named batches.
pub type NamedBatches = Vec<(String, RecordBatch)>;

/// Version of the manifest and state-file format; a newer runnel reads older versions.
pub const FORMAT_VERSION: u32 = 1;

const MANIFEST_PREFIX: &str = "chk-";

/// Where one pipeline's checkpoints are stored: a local directory or a prefix in an
/// object store (`s3://bucket/prefix`). Every state file and manifest goes through
/// `object_store`; a local directory additionally gets fsyncs and a write-then-rename
/// manifest, since local writes are neither durable nor atomic by themselves, while an
/// object store's put is both once acknowledged.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    store: Arc<dyn ObjectStore>,
    /// This pipeline's prefix inside `store` (empty when the store is rooted at a local
    /// directory).
    prefix: String,
    /// The directory, when local.
    local: Option<PathBuf>,
    /// The directory or URL, for messages.
    shown: String,
}

/// How to reach an S3-compatible object store; unset fields come from the standard
/// `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_REGION`, `AWS_ENDPOINT`, ...).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Endpoint URL for S3-compatible stores (MinIO, Ceph, ...); path-style requests.
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Access key id.
    pub access_key: Option<String>,
    /// Secret access key.
    pub secret_key: Option<String>,
    /// Allow plain-HTTP endpoints (implied by an `http://` endpoint).
    pub allow_http: bool,
}

impl CheckpointDir {
    /// A local directory, created if missing.
    pub fn local(dir: &Path) -> Result<CheckpointDir, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("creating checkpoint directory {}: {e}", dir.display()))?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| format!("checkpoint directory {}: {e}", dir.display()))?;
        Ok(CheckpointDir {
            store: Arc::new(store),
            prefix: String::new(),
            local: Some(dir.to_path_buf()),
            shown: dir.display().to_string(),
        })
    }

    /// `s3://bucket/prefix`: checkpoints go under `prefix/` of `bucket`. Nothing is
    /// contacted yet; the first listing reports an unreachable store or missing bucket.
    pub fn s3(url: &str, options: &S3Options) -> Result<CheckpointDir, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("'{url}' is not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!(
                "'{url}' names no bucket (expected s3://bucket/prefix)"
            ));
        }
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(endpoint) = &options.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(options.allow_http || endpoint.starts_with("http://"));
        } else if options.allow_http {
            builder = builder.with_allow_http(true);
        }
        if let Some(region) = &options.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &options.access_key {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &options.secret_key {
            builder = builder.with_secret_access_key(secret);
        }
        let store = builder.build().map_err(|e| format!("{url}: {e}"))?;
        Ok(CheckpointDir {
            store: Arc::new(store),
            prefix: prefix.trim_matches('/').to_string(),
            local: None,
            shown: url.trim_end_matches('/').to_string(),
        })
    }

    /// The sub-directory (or sub-prefix) `name`.
    pub fn join(&self, name: &str) -> Result<CheckpointDir, String> {
        match &self.local {
            Some(dir) => CheckpointDir::local(&dir.join(name)),
            None => Ok(CheckpointDir {
                store: self.store.clone(),
                prefix: self.key(name),
                local: None,
                shown: format!("{}/{name}", self.shown),
            }),
        }
    }

    /// The local directory, if it is one.
    pub fn local_path(&self) -> Option<&Path> {
        self.local.as_deref()
    }

    fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    fn path(&self, rel: &str) -> ObjectPath {
        ObjectPath::from(self.key(rel))
    }

    async fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<(), String> {
        self.store
            .put(&self.path(rel), bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| format!("writing {self}/{rel}: {e}"))
    }

    async fn read(&self, rel: &str) -> Result<Vec<u8>, String> {
        let get = self
            .store
            .get(&self.path(rel))
            .await
            .map_err(|e| format!("{self}/{rel}: {e}"))?;
        let bytes = get
            .bytes()
            .await
            .map_err(|e| format!("{self}/{rel}: {e}"))?;
        Ok(bytes.to_vec())
    }

    /// Ids of the complete checkpoints (those with a manifest), ascending.
    async fn complete_ids(&self) -> Result<Vec<u64>, String> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let listing = self
            .store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(|e| format!("listing {self}: {e}"))?;
        let mut ids: Vec<u64> = listing
            .objects
            .iter()
            .filter_map(|o| {
                o.location
                    .filename()?
                    .strip_prefix(MANIFEST_PREFIX)?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Makes checkpoint `id`'s state files durable, then publishes its manifest.
    async fn publish(&self, m: &Manifest) -> Result<(), String> {
        let id = m.id;
        match &self.local {
            Some(dir) => {
                let (dir, m) = (dir.clone(), m.clone());
                tokio::task::spawn_blocking(move || {
                    // object_store's local writes are not fsynced: make the state durable first.
                    let state_dir = dir.join(id.to_string());
                    if state_dir.exists() {
                        sync_dir_files(&state_dir)?;
                    }
                    crash_point("after-state", id);
                    write_manifest(&dir, &m)?;
                    crash_point("after-manifest", id);
                    Ok::<(), String>(())
                })
                .await
                .map_err(|e| format!("manifest task: {e}"))?
            }
            None => {
                // Each put is durable and atomic once acknowledged: the state files are in
                // place, and the manifest appears whole or not at all.
                crash_point("after-state", id);
                let json = serde_json::to_vec_pretty(m).map_err(|e| e.to_string())?;
                self.put(&manifest_name(id), json).await?;
                crash_point("after-manifest", id);
                Ok(())
            }
        }
    }

    /// Deletes checkpoint `id`: its manifest first, so it is never seen half-deleted.
    async fn delete(&self, id: u64) {
        match &self.local {
            Some(dir) => {
                let dir = dir.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = std::fs::remove_file(dir.join(manifest_name(id)));
                    let _ = std::fs::remove_dir_all(dir.join(id.to_string()));
                })
                .await;
            }
            None => {
                if let Err(e) = self.store.delete(&self.path(&manifest_name(id))).await {
                    tracing::warn!("deleting checkpoint {id} in {self}: {e}");
                    return;
                }
                let files = ObjectPath::from(self.key(&id.to_string()));
                if let Ok(listing) = self.store.list_with_delimiter(Some(&files)).await {
                    for o in listing.objects {
                        let _ = self.store.delete(&o.location).await;
                    }
                }
            }
        }
    }
}

impl std::fmt::Display for CheckpointDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// How and where a pipeline checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// Time between checkpoints (`execution.checkpointing.interval`).
    pub interval: Duration,
    /// Where this pipeline's checkpoints go (`<state dir>/<pipeline name>`).
    pub dir: CheckpointDir,
    /// Complete checkpoints kept (`execution.checkpointing.retained`, default 3).
    pub retain: usize,
    /// The pipeline's identity.
    pub pipeline: String,
    /// Identifies the dataflow's shape; a checkpoint of another shape cannot be restored.
    pub fingerprint: String,
    /// The checkpoint to resume from, if any.
    pub restore: Option<Arc<Restored>>,
}

/// One subtask's part of a manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubtaskEntry {
    /// Graph node.
    pub node: usize,
    /// Subtask index.
    pub subtask: usize,
    /// Source position (offsets, file position, generator sequence).
    pub position: Option<serde_json::Value>,
    /// The subtask's watermark when it took the snapshot.
    pub watermark: Timestamp,
    /// State file name, relative to the checkpoint directory.
    pub file: Option<String>,
    /// The subtask had already finished (its input ended).
    pub ended: bool,
}

/// A complete checkpoint's description, written last and atomically.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// Pipeline name.
    pub pipeline: String,
    /// Dataflow fingerprint.
    pub fingerprint: String,
    /// Checkpoint id, increasing.
    pub id: u64,
    /// When the barrier was injected (ms since the epoch).
    pub started_ms: i64,
    /// How long until the manifest was written.
    pub duration_ms: u64,
    /// Bytes of state files.
    pub size_bytes: u64,
    /// Every subtask.
    pub subtasks: Vec<SubtaskEntry>,
}

/// A checkpoint loaded for restore.
#[derive(Debug)]
pub struct Restored {
    /// Its manifest.
    pub manifest: Manifest,
    states: HashMap<(usize, usize), NamedBatches>,
}

impl Restored {
    /// The manifest entry of a subtask.
    pub fn entry(&self, node: usize, subtask: usize) -> Option<&SubtaskEntry> {
        self.manifest
            .subtasks
            .iter()
            .find(|e| e.node == node && e.subtask == subtask)
    }

    /// The saved operator state of a subtask.
    pub fn state(&self, node: usize, subtask: usize) -> StateReader {
        StateReader {
            entries: self
                .states
                .get(&(node, subtask))
                .cloned()
                .unwrap_or_default(),
        }
    }
}

/// What subtasks tell the coordinator.
#[derive(Debug)]
pub enum Report {
    /// A subtask finished its part of checkpoint `id`.
    Done {
        /// Checkpoint.
        id: u64,
        /// Node.
        node: usize,
        /// Subtask.
        subtask: usize,
        /// Source position.
        position: Option<serde_json::Value>,
        /// Watermark at the snapshot.
        watermark: Timestamp,
        /// Operator state.
        state: Vec<(String, RecordBatch)>,
    },
    /// A source reached its end and waits for a final checkpoint to cover its last rows.
    Finishing {
        /// Node.
        node: usize,
        /// Subtask.
        subtask: usize,
    },
    /// A subtask ended; it counts as done for every later checkpoint.
    Ended {
        /// Node.
        node: usize,
        /// Subtask.
        subtask: usize,
        /// Last source position.
        position: Option<serde_json::Value>,
    },
}

/// The handles a subtask uses to take part in checkpoints.
#[derive(Clone)]
pub struct Participant {
    /// Where to report.
    pub reports: mpsc::UnboundedSender<Report>,
    /// Sources: checkpoint ids to inject. Sinks: ids to commit.
    pub signals: broadcast::Sender<u64>,
}

/// Status of the last checkpoints, for the run summary and the admin API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointStats {
    /// The last complete checkpoint.
    pub last: Option<CheckpointInfo>,
    /// Checkpoints that failed, with the reason.
    pub failed: Vec<String>,
    /// The checkpoint restored at start.
    pub restored_from: Option<u64>,
}

/// One complete checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointInfo {
    /// Id.
    pub id: u64,
    /// When it completed (ms since the epoch).
    pub time_ms: i64,
    /// Barrier injection to manifest written.
    pub duration_ms: u64,
    /// Bytes of state.
    pub size_bytes: u64,
}

/// Shared, updated by the coordinator.
pub type SharedStats = Arc<std::sync::Mutex<CheckpointStats>>;

/// The coordinator task: triggers checkpoints, collects reports, writes them.
pub struct Coordinator {
    config: CheckpointConfig,
    expected: Vec<(usize, usize)>,
    sources: Vec<(usize, usize)>,
    reports: mpsc::UnboundedReceiver<Report>,
    triggers: broadcast::Sender<u64>,
    commits: broadcast::Sender<u64>,
    stats: SharedStats,
}

struct InFlight {
    started: Instant,
    started_ms: i64,
    done: BTreeMap<(usize, usize), SubtaskEntry>,
    states: Vec<((usize, usize), NamedBatches)>,
}

impl Coordinator {
    /// A coordinator expecting a report from every `(node, subtask)` in `expected`, of which
    /// `sources` inject barriers.
    pub fn new(
        config: CheckpointConfig,
        expected: Vec<(usize, usize)>,
        sources: Vec<(usize, usize)>,
        stats: SharedStats,
    ) -> (Coordinator, Participant, Participant) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (triggers, _) = broadcast::channel(16);
        let (commits, _) = broadcast::channel(16);
        let source_part = Participant {
            reports: tx.clone(),
            signals: triggers.clone(),
        };
        let sink_part = Participant {
            reports: tx,
            signals: commits.clone(),
        };
        (
            Coordinator {
                config,
                expected,
                sources,
                reports: rx,
                triggers,
                commits,
                stats,
            },
            source_part,
            sink_part,
        )
    }

    /// Runs until every subtask ended (or the pipeline is dropped).
    pub async fn run(mut self) -> Result<(), EngineError> {
        let mut next_id = self
            .config
            .restore
            .as_ref()
            .map_or(1, |r| r.manifest.id + 1);
        let mut ended: HashMap<(usize, usize), Option<serde_json::Value>> = HashMap::new();
        let mut finishing: std::collections::HashSet<(usize, usize)> = Default::default();
        let mut inflight: BTreeMap<u64, InFlight> = BTreeMap::new();
        let mut tick = tokio::time::interval(self.config.interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if ended.len() == self.expected.len() {
                        return Ok(());
                    }
                    // One checkpoint at a time: a slow one delays the next, never overlaps it.
                    // Barriers start at live sources; with none left there is nothing to do.
                    if !inflight.is_empty() || self.sources.iter().all(|k| ended.contains_key(k)) {
                        continue;
                    }
                    self.trigger(&mut next_id, &mut inflight);
                }
                report = self.reports.recv() => {
                    let Some(report) = report else { return Ok(()) };
                    match report {
                        Report::Finishing { node, subtask } => {
                            finishing.insert((node, subtask));
                        }
                        Report::Ended { node, subtask, position } => {
                            ended.insert((node, subtask), position);
                        }
                        Report::Done { id, node, subtask, position, watermark, state } => {
                            if let Some(f) = inflight.get_mut(&id) {
                                let file = (!state.is_empty()).then(|| format!("{id}/op-{node}-{subtask}.arrows"));
                                f.done.insert((node, subtask), SubtaskEntry {
                                    node, subtask, position, watermark, file, ended: false,
                                });
                                if !state.is_empty() {
                                    f.states.push(((node, subtask), state));
                                }
                            }
                        }
                    }
                    // Complete what every live subtask has reported.
                    let ready: Vec<u64> = inflight
                        .iter()
                        .filter(|(_, f)| self.expected.iter().all(|k| f.done.contains_key(k) || ended.contains_key(k)))
                        .map(|(id, _)| *id)
                        .collect();
                    for id in ready {
                        let Some(f) = inflight.remove(&id) else { continue };
                        match self.complete(id, f, &ended).await {
                            Ok(info) => {
                                if let Ok(mut s) = self.stats.lock() {
                                    s.last = Some(info);
                                }
                                let _ = self.commits.send(id);
                                self.retain().await;
                            }
                            Err(e) => {
                                tracing::warn!("checkpoint {id} failed: {e}");
                                if let Ok(mut s) = self.stats.lock() {
                                    s.failed.push(format!("{id}: {e}"));
                                    let n = s.failed.len();
                                    if n > 10 {
                                        s.failed.drain(..n - 10);
                                    }
                                }
                            }
                        }
                    }
                    // Every live source reached its end: cover the last rows now rather
                    // than at the next tick.
                    let live: Vec<_> = self.sources.iter().filter(|k| !ended.contains_key(k)).collect();
                    if inflight.is_empty() && !live.is_empty() && live.iter().all(|k| finishing.contains(k)) {
                        finishing.clear();
                        self.trigger(&mut next_id, &mut inflight);
                    }
                }
            }
        }
    }

    fn trigger(&self, next_id: &mut u64, inflight: &mut BTreeMap<u64, InFlight>) {
        let id = *next_id;
        *next_id += 1;
        inflight.insert(
            id,
            InFlight {
                started: Instant::now(),
                started_ms: runnel_common::time::now_ms(),
                done: BTreeMap::new(),
                states: Vec::new(),
            },
        );
        let _ = self.triggers.send(id);
    }

    async fn complete(
        &self,
        id: u64,
        f: InFlight,
        ended: &HashMap<(usize, usize), Option<serde_json::Value>>,
    ) -> Result<CheckpointInfo, String> {
        let mut size = 0u64;
        let InFlight {
            started,
            started_ms,
            done,
            states,
        } = f;
        for ((node, subtask), state) in states {
            // Encoding a large state takes seconds of CPU: keep it off the async threads.
            let bytes = tokio::task::spawn_blocking(move || encode_state(&state))
                .await
                .map_err(|e| format!("encoding state: {e}"))??;
            size += bytes.len() as u64;
            self.config
                .dir
                .put(&format!("{id}/op-{node}-{subtask}.arrows"), bytes)
                .await?;
        }
        let mut subtasks: Vec<SubtaskEntry> = done.into_values().collect();
        for ((node, subtask), position) in ended {
            if !subtasks
                .iter()
                .any(|e| e.node == *node && e.subtask == *subtask)
            {
                subtasks.push(SubtaskEntry {
                    node: *node,
                    subtask: *subtask,
                    position: position.clone(),
                    watermark: runnel_common::time::TS_MAX,
                    file: None,
                    ended: true,
                });
            }
        }
        subtasks.sort_by_key(|e| (e.node, e.subtask));
        let manifest = Manifest {
            version: FORMAT_VERSION,
            pipeline: self.config.pipeline.clone(),
            fingerprint: self.config.fingerprint.clone(),
            id,
            started_ms,
            duration_ms: started.elapsed().as_millis() as u64,
            size_bytes: size,
            subtasks,
        };
        self.config.dir.publish(&manifest).await?;
        Ok(CheckpointInfo {
            id,
            time_ms: runnel_common::time::now_ms(),
            duration_ms: manifest.duration_ms,
            size_bytes: size,
        })
    }

    /// Deletes checkpoints older than the newest `retain` complete ones.
    async fn retain(&self) {
        let dir = &self.config.dir;
        let keep = self.config.retain.max(1);
        let ids = match dir.complete_ids().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!("not deleting old checkpoints: {e}");
                return;
            }
        };
        if ids.len() > keep {
            for id in &ids[..ids.len() - keep] {
                dir.delete(*id).await;
            }
        }
    }
}

fn manifest_name(id: u64) -> String {
    format!("{MANIFEST_PREFIX}{id:010}.json")
}

fn sync_dir_files(dir: &Path) -> Result<(), String> {
    for e in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let p = e.map_err(|e| e.to_string())?.path();
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("fsync {}: {e}", p.display()))?;
    }
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("fsync {}: {e}", dir.display()))
}

/// Write, fsync, rename, fsync the directory.
fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let fin = dir.join(manifest_name(m.id));
    let tmp = dir.join(format!(".{}.tmp", manifest_name(m.id)));
    let json = serde_json::to_vec_pretty(m).map_err(|e| e.to_string())?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(&json)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &fin).map_err(|e| format!("{}: {e}", fin.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("fsync {}: {e}", dir.display()))
}

/// State file: per entry `u32 name length, name, u64 IPC length, Arrow IPC stream`.
fn encode_state(entries: &[(String, RecordBatch)]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    out.extend_from_slice(b"RNST");
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    for (name, batch) in entries {
        let mut ipc = Vec::new();
        {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema())
                .map_err(|e| e.to_string())?;
            w.write(batch).map_err(|e| e.to_string())?;
            w.finish().map_err(|e| e.to_string())?;
        }
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(ipc.len() as u64).to_le_bytes());
        out.extend_from_slice(&ipc);
    }
    Ok(out)
}

fn decode_state(bytes: &[u8], origin: &str) -> Result<Vec<(String, RecordBatch)>, String> {
    let bad = |what: &str| format!("state file {origin}: {what}");
    if bytes.len() < 8 || &bytes[..4] != b"RNST" {
        return Err(bad("not a runnel state file"));
    }
    let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if version > FORMAT_VERSION {
        return Err(bad(&format!(
            "format version {version} is newer than this runnel ({FORMAT_VERSION})"
        )));
    }
    let mut i = 8;
    let mut out = Vec::new();
    let take = |i: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = bytes.get(*i..*i + n).ok_or_else(|| bad("truncated"))?;
        *i += n;
        Ok(s)
    };
    while i < bytes.len() {
        let n = take(&mut i, 4)?;
        let n = u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
        let name = String::from_utf8_lossy(take(&mut i, n)?).into_owned();
        let l = take(&mut i, 8)?;
        let l = u64::from_le_bytes(l.try_into().map_err(|_| bad("truncated"))?) as usize;
        let ipc = take(&mut i, l)?;
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
            .map_err(|e| bad(&e.to_string()))?;
        for b in reader {
            out.push((name.clone(), b.map_err(|e| bad(&e.to_string()))?));
        }
    }
    Ok(out)
}

/// Why no checkpoint was restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The newest complete checkpoint belongs to a different dataflow.
    #[error(
        "checkpoint {id} in {dir} was taken by a different version of pipeline '{pipeline}' \
         (the SQL or the parallelism changed, so its state cannot be restored); run with \
         --from-scratch to start over, or restore the previous SQL"
    )]
    Incompatible {
        /// Checkpoint id.
        id: u64,
        /// Directory.
        dir: String,
        /// Pipeline.
        pipeline: String,
    },
    /// The checkpoint location could not be listed (unreachable store, missing bucket,
    /// no permission): starting over instead would repeat output, so this stops the run.
    #[error(
        "cannot read checkpoints of pipeline '{pipeline}' in {dir}: {reason}; fix the \
         location (SET 'state.checkpoints.dir') or run with --from-scratch"
    )]
    Unreachable {
        /// Directory or URL.
        dir: String,
        /// Pipeline.
        pipeline: String,
        /// What failed.
        reason: String,
    },
}

/// The newest complete, readable checkpoint in `dir`; corrupt ones are skipped with a
/// warning (never deleted).
pub async fn load_latest(
    dir: &CheckpointDir,
    fingerprint: &str,
    pipeline: &str,
) -> Result<Option<Restored>, RestoreError> {
    let ids = dir
        .complete_ids()
        .await
        .map_err(|reason| RestoreError::Unreachable {
            dir: dir.to_string(),
            pipeline: pipeline.to_string(),
            reason,
        })?;
    for id in ids.into_iter().rev() {
        match load(dir, id).await {
            Ok(r) => {
                if r.manifest.fingerprint != fingerprint {
                    return Err(RestoreError::Incompatible {
                        id,
                        dir: dir.to_string(),
                        pipeline: pipeline.to_string(),
                    });
                }
                return Ok(Some(r));
            }
            Err(e) => {
                tracing::warn!(
                    "checkpoint {id} in {dir} is unreadable ({e}); falling back to the previous one"
                );
                eprintln!(
                    "runnel: warning: checkpoint {id} in {dir} is unreadable ({e}); falling back to the previous one"
                );
            }
        }
    }
    Ok(None)
}

async fn load(dir: &CheckpointDir, id: u64) -> Result<Restored, String> {
    let name = manifest_name(id);
    let text = dir.read(&name).await?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("{dir}/{name}: {e}"))?;
    if manifest.version > FORMAT_VERSION || manifest.id != id {
        return Err(format!(
            "{dir}/{name}: version {} / id {} not readable",
            manifest.version, manifest.id
        ));
    }
    let mut states = HashMap::new();
    for e in &manifest.subtasks {
        if let Some(file) = &e.file {
            let bytes = dir.read(file).await?;
            states.insert(
                (e.node, e.subtask),
                decode_state(&bytes, &format!("{dir}/{file}"))?,
            );
        }
    }
    Ok(Restored { manifest, states })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn state_round_trips_and_bad_files_are_named() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let b =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
        let bytes = encode_state(&[("window".into(), b.clone()), ("other".into(), b)]).unwrap();
        let back = decode_state(&bytes, "x").unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].0, "other");
        assert_eq!(back[0].1.num_rows(), 3);
        let err = decode_state(&bytes[..bytes.len() - 3], "f.arrows").unwrap_err();
        assert!(err.contains("f.arrows"), "{err}");
    }

    #[test]
    fn s3_urls_name_bucket_and_prefix() {
        let options = S3Options {
            endpoint: Some("http://127.0.0.1:9".into()),
            region: Some("us-east-1".into()),
            ..S3Options::default()
        };
        let dir = CheckpointDir::s3("s3://bucket/a/b/", &options).unwrap();
        assert_eq!(dir.prefix, "a/b");
        let pipeline = dir.join("p").unwrap();
        assert_eq!(pipeline.to_string(), "s3://bucket/a/b/p");
        assert_eq!(pipeline.key("chk-1.json"), "a/b/p/chk-1.json");
        assert!(pipeline.local_path().is_none());
        let root = CheckpointDir::s3("s3://bucket", &options).unwrap();
        assert_eq!(root.join("p").unwrap().key("1/x"), "p/1/x");
        let err = CheckpointDir::s3("s3:///x", &options).unwrap_err();
        assert!(err.contains("names no bucket"), "{err}");
    }

    #[tokio::test]
    async fn corrupt_manifest_falls_back_to_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointDir::local(dir.path()).unwrap();
        let m = |id| Manifest {
            version: FORMAT_VERSION,
            pipeline: "p".into(),
            fingerprint: "f".into(),
            id,
            started_ms: 0,
            duration_ms: 1,
            size_bytes: 0,
            subtasks: vec![],
        };
        write_manifest(dir.path(), &m(1)).unwrap();
        write_manifest(dir.path(), &m(2)).unwrap();
        std::fs::write(dir.path().join(manifest_name(2)), b"{ not json").unwrap();
        let r = load_latest(&store, "f", "p").await.unwrap().unwrap();
        assert_eq!(r.manifest.id, 1);
        assert!(
            dir.path().join(manifest_name(2)).exists(),
            "nothing is deleted"
        );
        let e = load_latest(&store, "other", "p").await.unwrap_err();
        assert!(e.to_string().contains("--from-scratch"), "{e}");
    }
}
