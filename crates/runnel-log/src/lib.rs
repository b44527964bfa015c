//! The embedded durable log: `Log` opens a directory, creates topics and hands out
//! `Partition`s; `Partition::append` returns offsets once the records are durable
//! (fsynced, shared by concurrent appenders through group commit) and
//! `Partition::read` returns acknowledged records from an offset.
//!
//! Data enters through `append` (ingest API, `runnel produce`) and leaves through `read`
//! (the `log` source, `runnel consume`). On disk:
//!
//! ```text
//! <dir>/LOCK                                   held while a Log is open
//! <dir>/topics/<topic>/topic.json              TopicConfig
//! <dir>/topics/<topic>/<p>/<base>.log          segments of batch frames (frame.rs)
//! <dir>/topics/<topic>/<p>/<base>.index        sparse offset index (segment.rs)
//! <dir>/topics/<topic>/<p>/recovery-point.json last position known durable (recovery.rs)
//! <dir>/groups/<group>.json                    consumer offsets (offsets.rs)
//! ```
//!
//! The crate is synchronous (std threads, `Mutex`/`Condvar`); async callers use
//! `spawn_blocking`. Everything here may block on disk I/O.
//!
//! ```
//! use runnel_log::{Log, LogOptions, Record, TopicConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let log = Log::open(dir.path(), LogOptions::default())?;
//! let topic = log.create_topic("orders", TopicConfig::with_partitions(2))?;
//! let p = topic.partition_for(Some(b"customer-7"));
//! let partition = topic.partition(p).ok_or("no such partition")?;
//! let appended = partition.append(vec![Record::keyed("customer-7", "{\"total\": 12}")])?;
//! let records = partition.read(appended.base_offset, 100, 1 << 20)?;
//! assert_eq!(records[0].value, b"{\"total\": 12}");
//! log.commit_offset("billing", "orders", p, appended.base_offset + 1)?;
//! log.close()?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod bench;
mod commit;
mod error;
mod frame;
mod fsutil;
mod offsets;
mod partition;
mod record;
mod recovery;
mod retention;
mod segment;
mod topic;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

pub use bench::{BenchLimit, BenchReport, run_append_bench, run_read_bench};
pub use error::{LogError, Result};
pub use partition::{AppendResult, CorruptionReport, Fault, Partition};
pub use record::{Record, StoredRecord};
pub use retention::RetentionReport;
pub use topic::{
    DEFAULT_SEGMENT_BYTES, FsyncPolicy, MAX_PARTITIONS, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES,
    Topic, TopicConfig, murmur2,
};

use offsets::ConsumerOffsets;
use partition::PartitionTuning;
use segment::Segment;

/// Tuning knobs of a `Log` (defaults are right for production).
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Bytes of log between sparse index entries.
    pub index_interval_bytes: u32,
    /// How often each partition's recovery point is refreshed (it is also written on close).
    pub recovery_point_interval: Duration,
    /// Longest sleep of the background thread (interval fsyncs tick at least this often).
    pub background_tick: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            index_interval_bytes: 4096,
            recovery_point_interval: Duration::from_secs(10),
            background_tick: Duration::from_millis(100),
        }
    }
}

/// A partition that refuses writes, for the status API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnavailablePartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// Why it refuses writes.
    pub reason: String,
}

/// Files an open partition keeps open (active segment log and index, and a spare).
const FILES_PER_PARTITION: u64 = 3;

/// File descriptors left for everything else (connections, other files).
const FD_RESERVE: u64 = 256;

/// Problems the status API should show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogHealth {
    /// Damaged batches found at open or by reads.
    pub corruption: Vec<CorruptionReport>,
    /// Partitions refusing writes (a background fsync failed).
    pub unavailable: Vec<UnavailablePartition>,
    /// Topics that could not be opened (a missing or damaged `topic.json`, a partition
    /// that cannot be recovered): set aside, with why, so the rest of the log opens.
    pub quarantined: Vec<(String, String)>,
}

impl LogHealth {
    /// True when there is nothing to report.
    pub fn is_healthy(&self) -> bool {
        self.corruption.is_empty() && self.unavailable.is_empty() && self.quarantined.is_empty()
    }
}

/// The embedded log: a directory of topics, their partitions and consumer offsets.
#[derive(Debug)]
pub struct Log {
    shared: Arc<Shared>,
    /// Taken by the first close, which may come through a shared handle (`shutdown`).
    background: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    options: LogOptions,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    create_lock: Mutex<()>,
    offsets: ConsumerOffsets,
    stop: Mutex<bool>,
    stop_cv: Condvar,
    closed: AtomicBool,
    /// Topics set aside at open: (name, why).
    quarantined: Vec<(String, String)>,
    _lock: File,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering every partition.
    ///
    /// # Errors
    /// `Locked` if another `Log` has the directory open; `Io` / `Corrupt` if a topic
    /// config cannot be read. Damaged batches do not fail the open: see `health()`.
    pub fn open(dir: &Path, options: LogOptions) -> Result<Log> {
        for sub in ["topics", "groups", "staging"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p)
                .map_err(|e| LogError::io(format!("creating {}", p.display()), e))?;
        }
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| LogError::io(format!("opening {}", lock_path.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LogError::Locked {
                    dir: dir.to_owned(),
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(LogError::io(format!("locking {}", lock_path.display()), e));
            }
        }
        fsutil::fsync_dir(dir)?;
        clear_dir(&dir.join("staging"))?;
        let tuning = PartitionTuning {
            index_interval_bytes: u64::from(options.index_interval_bytes.max(1)),
            recovery_point_interval: options.recovery_point_interval,
        };
        let mut topics = BTreeMap::new();
        let mut quarantined = Vec::new();
        let topics_dir = dir.join("topics");
        let entries = fs::read_dir(&topics_dir)
            .map_err(|e| LogError::io(format!("listing {}", topics_dir.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| LogError::io(format!("listing {}", topics_dir.display()), e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if fsutil::validate_name("topic", &name).is_err() || !entry.path().is_dir() {
                continue;
            }
            match open_topic(&entry.path(), &name, tuning) {
                Ok(topic) => {
                    topics.insert(name, Arc::new(topic));
                }
                // One topic that cannot be opened must not keep the log (and the server
                // with it) from starting: it is set aside, reported, and left on disk.
                Err(e) => {
                    tracing::error!(
                        topic = %name,
                        error = %e,
                        "topic cannot be opened; quarantined (its files are left as they are)"
                    );
                    quarantined.push((name, e.to_string()));
                }
            }
        }
        let offsets = ConsumerOffsets::load(dir.join("groups"))?;
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            options,
            topics: RwLock::new(topics),
            create_lock: Mutex::new(()),
            offsets,
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            closed: AtomicBool::new(false),
            quarantined,
            _lock: lock,
        });
        let bg = shared.clone();
        let background = std::thread::Builder::new()
            .name("runnel-log-flush".into())
            .spawn(move || background_loop(&bg))
            .map_err(|e| LogError::io("starting the log's background thread", e))?;
        Ok(Log {
            shared,
            background: Mutex::new(Some(background)),
        })
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Creates a topic durably (its directories and config are fsynced before it appears).
    ///
    /// # Errors
    /// `InvalidName`, `InvalidConfig`, `TopicExists`, or `Io`.
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Arc<Topic>> {
        fsutil::validate_name("topic", name)?;
        config.validate()?;
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let _guard = self
            .shared
            .create_lock
            .lock()
            .map_err(|_| LogError::Internal("topic creation lock poisoned".into()))?;
        let final_dir = self.shared.dir.join("topics").join(name);
        if self.topic(name).is_some() || final_dir.exists() {
            return Err(LogError::TopicExists(name.to_owned()));
        }
        // Each open partition holds a few files open: refuse before touching the disk
        // what the process could not keep open (and would then fail to reopen).
        if let Some(free) = fsutil::free_file_descriptors() {
            let needed = u64::from(config.partitions) * FILES_PER_PARTITION;
            if needed + FD_RESERVE > free {
                return Err(LogError::InvalidConfig {
                    field: "partitions",
                    message: format!(
                        "{} partitions need about {needed} open files, but only {free} more \
                         can be opened (RLIMIT_NOFILE, `ulimit -n`); use fewer partitions or \
                         raise the limit",
                        config.partitions
                    ),
                });
            }
        }
        // Build the topic in staging and rename it in: a crash never leaves half a topic.
        let staging = self.shared.dir.join("staging");
        let tmp = staging.join(name);
        if tmp.exists() {
            fs::remove_dir_all(&tmp)
                .map_err(|e| LogError::io(format!("removing {}", tmp.display()), e))?;
        }
        fs::create_dir(&tmp).map_err(|e| LogError::io(format!("creating {}", tmp.display()), e))?;
        let json = serde_json::to_vec_pretty(&config)
            .map_err(|e| LogError::Internal(format!("serializing topic config: {e}")))?;
        fsutil::write_atomic(&tmp.join("topic.json"), &json)?;
        for p in 0..config.partitions {
            let pdir = tmp.join(p.to_string());
            fs::create_dir(&pdir)
                .map_err(|e| LogError::io(format!("creating {}", pdir.display()), e))?;
            Segment::create(&pdir, 0)?;
            fsutil::fsync_dir(&pdir)?;
        }
        fsutil::fsync_dir(&tmp)?;
        fs::rename(&tmp, &final_dir).map_err(|e| {
            LogError::io(
                format!("renaming {} to {}", tmp.display(), final_dir.display()),
                e,
            )
        })?;
        fsutil::fsync_dir(&self.shared.dir.join("topics"))?;
        fsutil::fsync_dir(&staging)?;
        let tuning = self.tuning();
        let topic = match open_topic(&final_dir, name, tuning) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                // A topic that cannot be opened now would not open at the next start
                // either: it is new and empty, so take it back out.
                if let Err(rm) = fs::remove_dir_all(&final_dir) {
                    tracing::warn!(dir = %final_dir.display(), error = %rm, "could not remove a topic that failed to open");
                }
                return Err(e);
            }
        };
        self.shared
            .topics
            .write()
            .map_err(|_| LogError::Internal("topics lock poisoned".into()))?
            .insert(name.to_owned(), topic.clone());
        tracing::info!(
            topic = name,
            partitions = config.partitions,
            "created topic"
        );
        Ok(topic)
    }

    /// The topic named `name`, if it exists.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.shared.topics.read().ok()?.get(name).cloned()
    }

    /// Names of all topics, sorted.
    pub fn topics(&self) -> Vec<String> {
        self.shared
            .topics
            .read()
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Durably records that consumer group `group` continues `topic`/`partition` at `offset`.
    ///
    /// # Errors
    /// `InvalidName`, `UnknownTopic`, `UnknownPartition`, or `Io` if the write failed.
    pub fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<()> {
        let t = self
            .topic(topic)
            .ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))?;
        if t.partition(partition).is_none() {
            return Err(LogError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partitions: t.partition_count(),
            });
        }
        self.shared.offsets.commit(group, topic, partition, offset)
    }

    /// The offset `group` committed for `topic`/`partition`, if any.
    pub fn committed_offset(&self, group: &str, topic: &str, partition: u32) -> Option<u64> {
        self.shared.offsets.get(group, topic, partition)
    }

    /// Names of consumer groups with committed offsets.
    pub fn consumer_groups(&self) -> Vec<String> {
        self.shared.offsets.groups()
    }

    /// Every (topic, partition, offset) committed by `group`.
    pub fn group_offsets(&self, group: &str) -> Vec<(String, u32, u64)> {
        self.shared.offsets.group(group)
    }

    /// Deletes sealed segments past each topic's retention; call periodically.
    ///
    /// # Errors
    /// `Io` if a segment file could not be deleted (later partitions are still processed).
    pub fn enforce_retention(&self) -> Result<RetentionReport> {
        let now = fsutil::now_ms();
        let mut report = RetentionReport::default();
        let mut first_err = None;
        for topic in self.topics_snapshot() {
            for p in topic.partitions() {
                match retention::enforce(p, now) {
                    Ok(r) => report.merge(r),
                    Err(e) => {
                        tracing::warn!(topic = topic.name(), partition = p.id(), error = %e, "retention failed");
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Why topic `name` was quarantined at open, if it was.
    pub fn quarantined(&self, name: &str) -> Option<String> {
        self.shared
            .quarantined
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, why)| why.clone())
    }

    /// What is wrong with the log: damage, partitions refusing writes, quarantined topics.
    pub fn health(&self) -> LogHealth {
        let mut health = LogHealth {
            quarantined: self.shared.quarantined.clone(),
            ..LogHealth::default()
        };
        for topic in self.topics_snapshot() {
            for p in topic.partitions() {
                health.corruption.extend(p.corruption());
                if let Some(reason) = p.unavailable_reason() {
                    health.unavailable.push(UnavailablePartition {
                        topic: topic.name().to_owned(),
                        partition: p.id(),
                        reason,
                    });
                }
            }
        }
        health
    }

    /// Flushes every partition, writes recovery points and releases the directory.
    ///
    /// # Errors
    /// The first flush or recovery-point failure (every partition is still closed).
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    /// `close` through a shared handle: stops the background thread, flushes every
    /// partition and writes the recovery points now, whoever else still holds the log.
    /// Appends after it fail; reads still work. The directory lock is released when the
    /// last handle is dropped. A second call does nothing.
    ///
    /// For owners that must be done with the directory at a known moment (the demo
    /// removes its temporary log after this) while a finishing task may still hold an
    /// `Arc<Log>`.
    ///
    /// # Errors
    /// The first flush or recovery-point failure (every partition is still closed).
    pub fn shutdown(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Ok(mut stop) = self.shared.stop.lock() {
            *stop = true;
        }
        self.shared.stop_cv.notify_all();
        let background = self.background.lock().ok().and_then(|mut b| b.take());
        if let Some(h) = background {
            let _ = h.join();
        }
        let mut first_err = None;
        for topic in self.topics_snapshot() {
            for p in topic.partitions() {
                if let Err(e) = p.close() {
                    tracing::warn!(topic = topic.name(), partition = p.id(), error = %e, "closing partition failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn tuning(&self) -> PartitionTuning {
        PartitionTuning {
            index_interval_bytes: u64::from(self.shared.options.index_interval_bytes.max(1)),
            recovery_point_interval: self.shared.options.recovery_point_interval,
        }
    }

    fn topics_snapshot(&self) -> Vec<Arc<Topic>> {
        self.shared.topics_snapshot()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(error = %e, "closing the log on drop failed");
        }
    }
}

impl Shared {
    fn topics_snapshot(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// Interval fsyncs and periodic recovery points until the log closes.
fn background_loop(shared: &Shared) {
    loop {
        let topics = shared.topics_snapshot();
        let tick = topics
            .iter()
            .filter_map(|t| match t.config().fsync {
                FsyncPolicy::Interval(d) => Some(d),
                FsyncPolicy::Always => None,
            })
            .fold(shared.options.background_tick, Duration::min)
            .max(Duration::from_millis(1));
        drop(topics);
        {
            let Ok(stop) = shared.stop.lock() else { return };
            let Ok((stop, _)) = shared.stop_cv.wait_timeout_while(stop, tick, |s| !*s) else {
                return;
            };
            if *stop {
                return;
            }
        }
        for topic in shared.topics_snapshot() {
            for p in topic.partitions() {
                p.tick();
            }
        }
    }
}

fn open_topic(dir: &Path, name: &str, tuning: PartitionTuning) -> Result<Topic> {
    let config_path = dir.join("topic.json");
    let bytes = fs::read(&config_path)
        .map_err(|e| LogError::io(format!("reading {}", config_path.display()), e))?;
    let config: TopicConfig = serde_json::from_slice(&bytes).map_err(|e| LogError::Corrupt {
        file: config_path.clone(),
        position: e.column() as u64,
        reason: format!("invalid topic config: {e}"),
    })?;
    config.validate()?;
    let mut partitions = Vec::with_capacity(config.partitions as usize);
    for p in 0..config.partitions {
        let pdir = dir.join(p.to_string());
        if !pdir.is_dir() {
            tracing::warn!(dir = %pdir.display(), "partition directory missing; recreating it empty");
            fs::create_dir_all(&pdir)
                .map_err(|e| LogError::io(format!("creating {}", pdir.display()), e))?;
            fsutil::fsync_dir(dir)?;
        }
        partitions.push(Partition::open(name, p, pdir, config.clone(), tuning)?);
    }
    Ok(Topic::new(name.to_owned(), config, partitions))
}

fn clear_dir(dir: &Path) -> Result<()> {
    let entries =
        fs::read_dir(dir).map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let res = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        if let Err(e) = res {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a leftover of an interrupted topic creation");
        }
    }
    Ok(())
}
