//! Checkpointing of a prepared pipeline from its settings: where, how often, how many
//! kept, and the checkpoint to resume from.

use std::sync::Arc;
use std::time::Duration;

use runnel_engine::checkpoint::{CheckpointConfig, CheckpointDir};

use crate::{Prepared, RuntimeError};

/// `None` when checkpointing is off: `SET 'execution.checkpointing.interval' = 'off'`, or
/// not set and every source ends (a bounded pipeline that crashes is simply run again).
/// Otherwise the configuration, with the newest compatible checkpoint to resume from
/// unless `from_scratch`.
///
/// # Errors
/// [`RuntimeError::Checkpoint`] when the location cannot be used or listed, or its newest
/// checkpoint was taken by a different version of the pipeline.
pub(crate) async fn config(
    prepared: &Prepared,
    from_scratch: bool,
) -> Result<Option<CheckpointConfig>, RuntimeError> {
    let s = &prepared.settings;
    let Some(interval) = interval(prepared) else {
        return Ok(None);
    };
    let dir = pipeline_dir(prepared)?;
    let name = &prepared.name;
    let fingerprint = fingerprint(prepared);
    let restore = if let Some(savepoint) = &prepared.options.savepoint {
        let r =
            runnel_engine::checkpoint::savepoint::load(&dir, savepoint, &fingerprint, name).await?;
        Some(Arc::new(r))
    } else if from_scratch {
        None
    } else {
        runnel_engine::checkpoint::load_latest(&dir, &fingerprint, name)
            .await?
            .map(Arc::new)
    };
    Ok(Some(CheckpointConfig {
        interval,
        dir,
        retain: s.checkpoints_retained,
        pipeline: name.to_string(),
        fingerprint,
        restore,
        owner: None,
    }))
}

/// Time between checkpoints; `None` when checkpointing is off.
pub(crate) fn interval(prepared: &Prepared) -> Option<Duration> {
    if prepared.ad_hoc {
        return None;
    }
    match prepared.settings.checkpoint_interval {
        None if prepared.unbounded() => Some(Duration::from_secs(10)),
        None | Some(None) => None,
        Some(Some(d)) if d.is_zero() => None,
        Some(Some(d)) => Some(d),
    }
}

/// Where the pipeline's checkpoints go: `<state.checkpoints.dir>/<pipeline name>`.
///
/// # Errors
/// [`RuntimeError::Checkpoint`] when the location cannot be used.
pub(crate) fn pipeline_dir(prepared: &Prepared) -> Result<CheckpointDir, RuntimeError> {
    let s = &prepared.settings;
    let err = |location: &str| {
        let location = location.to_string();
        move |e: runnel_engine::checkpoint::CheckpointError| RuntimeError::Checkpoint {
            location,
            message: e.to_string(),
        }
    };
    let base = match &s.checkpoints_dir {
        None => {
            let dir = prepared.options.data_dir.join("checkpoints");
            CheckpointDir::local(&dir).map_err(err(&dir.display().to_string()))?
        }
        Some((d, _)) if d.starts_with("s3://") => CheckpointDir::s3(d, &s.s3).map_err(err(d))?,
        Some((d, _)) => CheckpointDir::local(std::path::Path::new(d.trim_start_matches("file://")))
            .map_err(err(d))?,
    };
    base.join(&safe_name(&prepared.name))
        .map_err(err(&base.to_string()))
}

/// A name usable as a directory or topic name: other characters become `_`.
pub(crate) fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The planned dataflow and the parallelism, hashed: stable across runs and builds.
fn fingerprint(prepared: &Prepared) -> String {
    fnv_hex(&format!(
        "{}\nparallelism={}",
        prepared.graph.explain(),
        prepared.parallelism
    ))
}

/// FNV-1a of `text`, as 16 hex digits (a checkpoint's dataflow fingerprint).
pub(crate) fn fnv_hex(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
