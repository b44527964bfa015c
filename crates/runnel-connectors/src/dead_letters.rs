//! The one dead-letter service: records that cannot be used (malformed input, an image
//! `classify` cannot read, later a failed validation rule) are written here, in one
//! shape, counted in one place, and never stop the pipeline.
//!
//! Every dead letter is one JSON object:
//! `{"time", "table", "location", "reason", "raw"}` plus the location's parts
//! (`file` + `line`, `topic` + `partition` + `offset`, or `function`). `raw` holds the
//! original bytes as text (`raw_base64` instead when they are not UTF-8).
//!
//! Where they go, first match wins: the table's own option (`'dead-letter.path'` or
//! `'dead-letter.topic'`), the script's `SET 'dead-letter.path'` / `SET
//! 'dead-letter.topic'`, then the connector's default (beside the input file, or the topic
//! `<topic>.dead-letter`). A file is created, and a topic created in the embedded log, on
//! the first letter.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use runnel_common::metrics::{ConnectorMetrics, Counter};
use runnel_log::{Log, Record, Topic};
use serde_json::{Value, json};

use crate::ConnectorError;

/// Where a rejected record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Line `line` (1-based) of an input file.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// A record of a log (or, later, Kafka) topic.
    Topic {
        /// The topic.
        topic: String,
        /// Its partition.
        partition: u32,
        /// Its offset.
        offset: u64,
    },
    /// A value a SQL function could not use.
    Function {
        /// The function.
        name: String,
    },
    /// A row an operator's expression failed on (division by zero, overflow, …).
    Operator {
        /// The operator's label.
        name: String,
    },
    /// A row that violates a table's validation rules (`CHECK`, `NOT NULL`).
    Rule {
        /// The rules it violates, comma-separated.
        names: String,
    },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File { path, line } => write!(f, "{}:{line}", path.display()),
            Location::Topic {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}/{partition}/{offset}"),
            Location::Function { name } => write!(f, "{name}()"),
            Location::Operator { name } => write!(f, "operator {name}"),
            Location::Rule { names } => write!(f, "rule {names}"),
        }
    }
}

/// One rejected record.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Where it came from.
    pub location: Location,
    /// Why it was rejected, naming the column and value where known.
    pub reason: String,
    /// The original bytes (or, for a row, its JSON text).
    pub raw: Vec<u8>,
    /// When it was rejected, ms since the epoch (a record's own time where it has one).
    pub time_ms: i64,
}

impl DeadLetter {
    /// A letter rejected now.
    pub fn new(location: Location, reason: impl Into<String>, raw: Vec<u8>) -> Self {
        DeadLetter {
            location,
            reason: reason.into(),
            raw,
            time_ms: runnel_common::time::now_ms(),
        }
    }

    /// The JSON object written for it.
    pub fn to_json(&self, table: &str) -> Value {
        let mut v = json!({
            "time": runnel_common::time::format_timestamp(self.time_ms),
            "table": table,
            "location": self.location.to_string(),
            "reason": self.reason,
        });
        if let Value::Object(map) = &mut v {
            match std::str::from_utf8(&self.raw) {
                Ok(text) => map.insert("raw".into(), json!(text)),
                Err(_) => {
                    use base64::Engine as _;
                    map.insert(
                        "raw_base64".into(),
                        json!(base64::engine::general_purpose::STANDARD.encode(&self.raw)),
                    )
                }
            };
            match &self.location {
                Location::File { path, line } => {
                    map.insert("file".into(), json!(path.display().to_string()));
                    map.insert("line".into(), json!(line));
                }
                Location::Topic {
                    topic,
                    partition,
                    offset,
                } => {
                    map.insert("topic".into(), json!(topic));
                    map.insert("partition".into(), json!(partition));
                    map.insert("offset".into(), json!(offset));
                }
                Location::Function { name } => {
                    map.insert("function".into(), json!(name));
                }
                Location::Operator { name } => {
                    map.insert("operator".into(), json!(name));
                }
                Location::Rule { names } => {
                    map.insert("rule".into(), json!(names));
                }
            }
        }
        v
    }
}

/// A dead-letter destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A JSON-lines file.
    File(PathBuf),
    /// A topic of the embedded log.
    Topic(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::File(p) => write!(f, "{}", p.display()),
            Target::Topic(t) => write!(f, "log topic '{t}'"),
        }
    }
}

/// A dead-letter file shared by every table writing to it.
type SharedFile = Arc<Mutex<BufWriter<File>>>;

/// The dead-letter service of one run: the script-wide target and every table's counts.
#[derive(Debug, Default)]
pub struct DeadLetters {
    default: Option<Target>,
    log: Option<Arc<Log>>,
    fresh: bool,
    writers: Mutex<BTreeMap<String, Arc<DeadLetterWriter>>>,
    files: Mutex<BTreeMap<PathBuf, SharedFile>>,
    total: Counter,
    /// The latest letters (newest last), for the page.
    recent: Mutex<std::collections::VecDeque<Value>>,
}

/// Dead letters kept in memory for the page, per run.
pub const RECENT: usize = 50;

/// Longest `raw` text kept in memory for the page.
const RECENT_RAW: usize = 300;

impl DeadLetters {
    /// The service; `default` is the script's `SET 'dead-letter.*'` target (if any),
    /// `log` the embedded log for topic targets. With `fresh` (a run that does not resume
    /// from a checkpoint) dead-letter files start empty, as the run's other outputs do;
    /// otherwise they are appended to.
    pub fn new(default: Option<Target>, log: Option<Arc<Log>>, fresh: bool) -> Arc<Self> {
        Arc::new(DeadLetters {
            default,
            log,
            fresh,
            writers: Mutex::default(),
            files: Mutex::default(),
            total: Counter::default(),
            recent: Mutex::default(),
        })
    }

    /// The latest [`RECENT`] dead letters of the run, newest first (their `raw` cut
    /// short), with where each went.
    pub fn recent(&self) -> Vec<Value> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().cloned().collect()
    }

    fn remember(&self, letters: impl Iterator<Item = Value>) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        for mut v in letters {
            for key in ["raw", "raw_base64"] {
                if let Some(Value::String(text)) = v.get_mut(key)
                    && text.len() > RECENT_RAW
                {
                    let mut cut = RECENT_RAW;
                    while !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    text.truncate(cut);
                    text.push('…');
                }
            }
            recent.push_back(v);
            if recent.len() > RECENT {
                recent.pop_front();
            }
        }
    }

    /// The file `path`, opened once for every table that writes to it.
    fn file(&self, path: &Path) -> Result<SharedFile, ConnectorError> {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = files.get(path) {
            return Ok(f.clone());
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| ConnectorError::io(parent.display().to_string(), e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(!self.fresh)
            .truncate(self.fresh)
            .open(path)
            .map_err(|e| ConnectorError::io(path.display().to_string(), e))?;
        let shared = Arc::new(Mutex::new(BufWriter::new(file)));
        files.insert(path.to_path_buf(), shared.clone());
        Ok(shared)
    }

    /// The writer of `table` (one per table, shared by its subtasks): to `own` (the
    /// table's option) if given, else the script-wide target, else `fallback`. Its count
    /// also goes to `metrics`.
    pub fn writer(
        self: &Arc<Self>,
        table: &str,
        own: Option<Target>,
        fallback: Target,
        metrics: &ConnectorMetrics,
    ) -> Arc<DeadLetterWriter> {
        let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        writers
            .entry(table.to_string())
            .or_insert_with(|| {
                let target = own.or_else(|| self.default.clone()).unwrap_or(fallback);
                Arc::new(DeadLetterWriter {
                    table: table.to_string(),
                    target,
                    service: self.clone(),
                    open: Mutex::new(None),
                    metrics: metrics.clone(),
                })
            })
            .clone()
    }

    /// Every table's count and target, by table name.
    pub fn counts(&self) -> Vec<(String, u64, String)> {
        let writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        writers
            .values()
            .map(|w| {
                (
                    w.table.clone(),
                    w.metrics.dead_letters.get(),
                    w.target.to_string(),
                )
            })
            .collect()
    }

    /// Dead letters of the whole run.
    pub fn total(&self) -> u64 {
        self.total.get()
    }
}

/// An open destination.
enum Open {
    File(SharedFile),
    Topic(Arc<Topic>),
}

/// Writes one table's dead letters. Blocking (file or log I/O): call it off the async
/// threads for anything but a handful of letters.
pub struct DeadLetterWriter {
    table: String,
    target: Target,
    service: Arc<DeadLetters>,
    open: Mutex<Option<Open>>,
    metrics: ConnectorMetrics,
}

impl std::fmt::Debug for DeadLetterWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterWriter")
            .field("table", &self.table)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl DeadLetterWriter {
    /// Where the letters go.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// How many were written.
    pub fn count(&self) -> u64 {
        self.metrics.dead_letters.get()
    }

    /// Writes `letters` durably enough that a stopped pipeline leaves them complete
    /// (a file is flushed, a topic append is fsynced), then counts them.
    ///
    /// # Errors
    /// The destination cannot be created or written; the message names it.
    pub fn write(&self, letters: &[DeadLetter]) -> Result<(), ConnectorError> {
        if letters.is_empty() {
            return Ok(());
        }
        let ctx = || {
            format!(
                "table '{}': writing dead letters to {}",
                self.table, self.target
            )
        };
        let mut open = self.open.lock().map_err(|_| {
            ConnectorError::Other(format!("{}: another subtask failed while writing", ctx()))
        })?;
        if open.is_none() {
            *open = Some(self.open_target().map_err(|e| match e {
                ConnectorError::Io { source, .. } => ConnectorError::io(ctx(), source),
                other => other,
            })?);
            if let Ok(mut p) = self.metrics.dead_letter_path.lock() {
                *p = Some(self.target.to_string());
            }
        }
        match open.as_mut() {
            Some(Open::File(f)) => {
                let mut text = Vec::new();
                for l in letters {
                    text.extend_from_slice(l.to_json(&self.table).to_string().as_bytes());
                    text.push(b'\n');
                }
                let mut w = f.lock().unwrap_or_else(|p| p.into_inner());
                // Flushed per call: the file is complete whenever the pipeline stops.
                w.write_all(&text)
                    .and_then(|()| w.flush())
                    .map_err(|e| ConnectorError::io(ctx(), e))?;
            }
            Some(Open::Topic(topic)) => {
                let records: Vec<Record> = letters
                    .iter()
                    .map(|l| Record {
                        key: None,
                        value: l.to_json(&self.table).to_string().into_bytes(),
                        headers: vec![("content-type".into(), b"application/json".to_vec())],
                        event_time: Some(l.time_ms),
                    })
                    .collect();
                let p = topic.partition_for(None);
                let part = topic.partition(p).ok_or_else(|| {
                    ConnectorError::Other(format!("{}: partition {p} is missing", ctx()))
                })?;
                part.append(records)
                    .map_err(|e| ConnectorError::Other(format!("{}: {e}", ctx())))?;
            }
            None => {}
        }
        let n = letters.len() as u64;
        let target = self.target.to_string();
        self.service.remember(letters.iter().map(|l| {
            let mut v = l.to_json(&self.table);
            v["target"] = Value::String(target.clone());
            v
        }));
        self.metrics.dead_letters.add(n);
        self.service.total.add(n);
        metrics::counter!("runnel_dead_letters_total", "table" => self.table.clone()).increment(n);
        Ok(())
    }

    fn open_target(&self) -> Result<Open, ConnectorError> {
        match &self.target {
            Target::File(path) => self.service.file(path).map(Open::File),
            Target::Topic(name) => {
                let log = self.service.log.as_ref().ok_or_else(|| {
                    ConnectorError::Other(format!(
                        "table '{}': dead letters go to log topic '{name}', but this pipeline \
                         runs without the embedded log; set 'dead-letter.path' instead",
                        self.table
                    ))
                })?;
                crate::source::log::open_or_create_topic(log, &self.table, name, 1).map(Open::Topic)
            }
        }
    }
}

/// The table's own dead-letter option: `'dead-letter.path'` (a file) or
/// `'dead-letter.topic'` (a log topic).
pub fn own_target(spec: &runnel_common::TableSpec) -> Option<Target> {
    match (
        spec.options.get("dead-letter.path"),
        spec.options.get("dead-letter.topic"),
    ) {
        (Some(p), _) => Some(Target::File(PathBuf::from(p))),
        (None, Some(t)) => Some(Target::Topic(t.to_string())),
        (None, None) => None,
    }
}

/// The file target `path`, or the default `<input>.dead-letter.jsonl` beside `input`.
pub fn beside(input: &Path) -> Target {
    let text = input.display().to_string();
    Target::File(PathBuf::from(format!(
        "{}.dead-letter.jsonl",
        text.trim_end_matches(['/', '\\'])
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shape_for_every_origin_and_one_count() {
        let dir = tempfile::tempdir().unwrap();
        let service =
            DeadLetters::new(Some(Target::File(dir.path().join("all.jsonl"))), None, true);
        let m = ConnectorMetrics::default();
        let w = service.writer("t", None, Target::File(dir.path().join("x")), &m);
        w.write(&[
            DeadLetter::new(
                Location::File {
                    path: "in.jsonl".into(),
                    line: 3,
                },
                "bad",
                b"{x".to_vec(),
            ),
            DeadLetter::new(
                Location::Function {
                    name: "classify".into(),
                },
                "undecodable",
                vec![0xff, 0],
            ),
        ])
        .unwrap();
        let text = std::fs::read_to_string(dir.path().join("all.jsonl")).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["location"], "in.jsonl:3");
        assert_eq!(lines[0]["line"], 3);
        assert_eq!(lines[0]["raw"], "{x");
        assert_eq!(lines[0]["table"], "t");
        assert_eq!(lines[1]["location"], "classify()");
        assert_eq!(lines[1]["raw_base64"], "/wA=");
        assert_eq!(m.dead_letters.get(), 2);
        assert_eq!(service.total(), 2);
        assert_eq!(service.counts()[0].1, 2);
        // A table's own option wins over the script-wide target.
        let own = service.writer(
            "u",
            Some(Target::File(dir.path().join("u.jsonl"))),
            Target::File(dir.path().join("x")),
            &ConnectorMetrics::default(),
        );
        assert_eq!(own.target(), &Target::File(dir.path().join("u.jsonl")));
    }
}
