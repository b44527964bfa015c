//! Savepoints: complete checkpoints copied aside under a name, so that retention never
//! deletes them and a pipeline can be resumed from one on purpose (`savepoints/<name>/`
//! inside the pipeline's checkpoint directory, in the same layout as the directory
//! itself: a manifest and its state files).

use super::manifest::{Manifest, manifest_name};
use super::{CheckpointDir, CheckpointError, RestoreError, Restored};

/// The sub-directory of a pipeline's checkpoint directory that holds its savepoints.
pub const SAVEPOINTS: &str = "savepoints";

/// Whether `name` can name a savepoint: 1–64 of `A-Z a-z 0-9 - _ .`, not starting with a dot.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The directory of savepoint `name` of the pipeline whose checkpoints are in `dir`.
///
/// # Errors
/// A bad name, or a local directory that cannot be created.
pub fn dir_of(dir: &CheckpointDir, name: &str) -> Result<CheckpointDir, CheckpointError> {
    if !valid_name(name) {
        return Err(CheckpointError::Location(format!(
            "'{name}' is not a savepoint name: use 1 to 64 letters, digits, '-', '_' or '.'"
        )));
    }
    dir.join(&format!("{SAVEPOINTS}/{name}"))
}

/// Copies complete checkpoint `id` of `dir` to savepoint `name` (its state files first,
/// the manifest last, so a savepoint is complete or invisible).
///
/// # Errors
/// The checkpoint cannot be read or the copy written.
pub async fn save(dir: &CheckpointDir, id: u64, name: &str) -> Result<Manifest, CheckpointError> {
    let target = dir_of(dir, name)?;
    let manifest_file = manifest_name(id);
    let text = dir.read(&manifest_file).await?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| CheckpointError::Corrupt {
            location: format!("{dir}/{manifest_file}"),
            reason: e.to_string(),
        })?;
    for entry in &manifest.subtasks {
        if let Some(file) = &entry.file {
            let bytes = dir.read(file).await?;
            target.put(file, bytes).await?;
        }
    }
    target.publish(&manifest).await?;
    Ok(manifest)
}

/// The savepoints of the pipeline whose checkpoints are in `dir`, by name (a local
/// directory's; an object store's are not listed).
pub fn list(dir: &CheckpointDir) -> Vec<String> {
    let Some(local) = dir.local_path() else {
        return Vec::new();
    };
    let mut names: Vec<String> = std::fs::read_dir(local.join(SAVEPOINTS))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| complete(&e.path()))
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| valid_name(n))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether the local directory holds a manifest.
fn complete(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| {
        entries.any(|e| {
            e.is_ok_and(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(super::manifest::MANIFEST_PREFIX))
            })
        })
    })
}

/// Savepoint `name` loaded for a restore.
///
/// # Errors
/// No such savepoint, an unreadable one, or one of a different dataflow.
pub async fn load(
    dir: &CheckpointDir,
    name: &str,
    fingerprint: &str,
    pipeline: &str,
) -> Result<Restored, RestoreError> {
    let unreachable = |reason: String| RestoreError::Unreachable {
        dir: dir.to_string(),
        pipeline: pipeline.to_string(),
        reason,
    };
    let missing = dir
        .local_path()
        .is_some_and(|local| !complete(&local.join(SAVEPOINTS).join(name)));
    let found = match missing || !valid_name(name) {
        true => None,
        false => {
            let target = dir_of(dir, name).map_err(|e| unreachable(e.to_string()))?;
            super::load_latest(&target, fingerprint, pipeline).await?
        }
    };
    match found {
        Some(r) => Ok(r),
        None => {
            let known = list(dir);
            Err(unreachable(format!(
                "there is no savepoint named '{name}' (savepoints: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )))
        }
    }
}
