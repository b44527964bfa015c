//! The planner every command uses: DataFusion's and runnel's functions, plus
//! `classify` / `classify_topk` when the script calls them (loading a model takes a
//! second, so scripts without them never pay for it).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use runnel_common::metrics::Counter;
use runnel_sql::{PipelineGraph, Planner};
use runnel_vision::{Classifier, ClassifierOptions, DeadLetter};

/// A planned script and what its functions need at run time.
pub struct Planned {
    /// The dataflow.
    pub graph: PipelineGraph,
    /// Images `classify` rejected, and the file they are listed in.
    pub rejects: Option<Rejects>,
}

/// Where `classify` puts images it cannot read.
#[derive(Clone)]
pub struct Rejects {
    /// How many so far.
    pub count: Counter,
    /// The dead-letter file (JSON lines: time, function, reason, bytes).
    pub path: PathBuf,
}

/// Plans `sql`; `data_dir` holds dead letters of SQL functions.
pub fn plan(sql: &str, data_dir: &Path) -> anyhow::Result<Planned> {
    let mut planner = Planner::new();
    let mut rejects = None;
    if calls_classify(sql) {
        let settings = runnel_sql::script_settings(sql)?;
        let classifier = Arc::new(load_classifier(&settings)?);
        let r = Rejects {
            count: Counter::default(),
            path: data_dir.join("dead-letters").join("classify.jsonl"),
        };
        for udf in runnel_vision::udfs(classifier, reject_fn(r.clone())) {
            planner.register_blocking_udf(udf);
        }
        rejects = Some(r);
    }
    let graph = planner.plan(sql)?;
    Ok(Planned { graph, rejects })
}

/// Whether the script mentions `classify(` or `classify_topk(` (a cheap scan; the
/// planner decides whether it really is a call).
fn calls_classify(sql: &str) -> bool {
    sql.to_ascii_lowercase().contains("classify")
}

/// Loads `SET 'vision.model'` (default: the bundled EfficientNet-Lite0) with
/// `SET 'vision.threads'` worker threads.
pub fn load_classifier(
    settings: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<Classifier> {
    let mut options = ClassifierOptions::default();
    if let Some(v) = settings.get("vision.threads") {
        options.threads = v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("SET 'vision.threads' = '{v}': expected a number >= 1"))?;
    }
    if let Some(v) = settings.get("vision.batch") {
        options.max_batch = v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("SET 'vision.batch' = '{v}': expected a number >= 1"))?;
    }
    let started = std::time::Instant::now();
    let classifier = match settings.get("vision.model") {
        Some(path) => Classifier::load_with_options(Path::new(path), &options)
            .with_context(|| format!("SET 'vision.model' = '{path}'"))?,
        None => Classifier::load_default(&options).context("loading the bundled image model")?,
    };
    tracing::info!(
        model = ?classifier,
        ms = started.elapsed().as_millis() as u64,
        "image classifier loaded"
    );
    Ok(classifier)
}

/// Appends each rejected image to the dead-letter file and counts it; never fails the
/// pipeline (a dead-letter file that cannot be written is reported once).
fn reject_fn(r: Rejects) -> runnel_vision::RejectFn {
    let file: Mutex<Option<std::fs::File>> = Mutex::new(None);
    let warned = std::sync::atomic::AtomicBool::new(false);
    Arc::new(move |d: DeadLetter| {
        r.count.add(1);
        let line = serde_json::json!({
            "time": runnel_common::time::format_timestamp(runnel_common::time::now_ms()),
            "function": "classify",
            "reason": d.reason,
            "bytes": d.bytes_len,
        });
        let mut guard = file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let opened = r
                .path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&r.path)
                });
            match opened {
                Ok(f) => *guard = Some(f),
                Err(e) => {
                    if !warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::warn!(path = %r.path.display(), "cannot write classify dead letters: {e}");
                    }
                    return;
                }
            }
        }
        if let Some(f) = guard.as_mut()
            && let Err(e) = writeln!(f, "{line}")
            && !warned.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(path = %r.path.display(), "cannot write classify dead letters: {e}");
        }
    })
}
