//! Consumer-group offsets: one JSON file per group under `groups/`, replaced atomically
//! (write temp, fsync, rename, fsync dir) on every commit, so a crash keeps either the
//! previous or the new offsets, never a torn file.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{LogError, Result};
use crate::fsutil;

/// topic → partition → next offset to consume.
type GroupOffsets = BTreeMap<String, BTreeMap<u32, u64>>;

/// The committed offsets of every consumer group.
#[derive(Debug)]
pub(crate) struct ConsumerOffsets {
    dir: PathBuf,
    groups: Mutex<BTreeMap<String, GroupOffsets>>,
}

impl ConsumerOffsets {
    /// Loads all group files in `dir` (created if missing); unreadable files are skipped
    /// with a warning.
    pub fn load(dir: PathBuf) -> Result<ConsumerOffsets> {
        fs::create_dir_all(&dir)
            .map_err(|e| LogError::io(format!("creating {}", dir.display()), e))?;
        let mut groups = BTreeMap::new();
        let entries = fs::read_dir(&dir)
            .map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(group) = name.strip_suffix(".json") else {
                continue;
            };
            match read_group(&path) {
                Ok(offsets) => {
                    groups.insert(group.to_owned(), offsets);
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping unreadable consumer-group offsets")
                }
            }
        }
        Ok(ConsumerOffsets {
            dir,
            groups: Mutex::new(groups),
        })
    }

    /// Durably records that `group` will continue `topic`/`partition` at `offset`.
    pub fn commit(&self, group: &str, topic: &str, partition: u32, offset: u64) -> Result<()> {
        fsutil::validate_name("group", group)?;
        let mut groups = self
            .groups
            .lock()
            .map_err(|_| LogError::Internal("consumer offsets lock poisoned".into()))?;
        let mut updated = groups.get(group).cloned().unwrap_or_default();
        updated
            .entry(topic.to_owned())
            .or_default()
            .insert(partition, offset);
        let bytes = serde_json::to_vec_pretty(&updated)
            .map_err(|e| LogError::Internal(format!("serializing offsets: {e}")))?;
        fsutil::write_atomic(&self.path(group), &bytes)?;
        groups.insert(group.to_owned(), updated);
        Ok(())
    }

    /// The committed offset, if the group committed one for this partition.
    pub fn get(&self, group: &str, topic: &str, partition: u32) -> Option<u64> {
        self.groups
            .lock()
            .ok()?
            .get(group)?
            .get(topic)?
            .get(&partition)
            .copied()
    }

    /// Names of all groups with committed offsets.
    pub fn groups(&self) -> Vec<String> {
        self.groups
            .lock()
            .map(|g| g.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// All (topic, partition, offset) committed by `group`.
    pub fn group(&self, group: &str) -> Vec<(String, u32, u64)> {
        let Ok(groups) = self.groups.lock() else {
            return Vec::new();
        };
        groups
            .get(group)
            .map(|g| {
                g.iter()
                    .flat_map(|(t, ps)| ps.iter().map(move |(p, o)| (t.clone(), *p, *o)))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn path(&self, group: &str) -> PathBuf {
        self.dir.join(format!("{group}.json"))
    }
}

fn read_group(path: &Path) -> std::result::Result<GroupOffsets, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}
