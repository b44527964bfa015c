//! What a complete checkpoint holds: its manifest (every subtask's position, watermark
//! and state file) and the state files' encoding, and loading both for a restore.

use std::collections::HashMap;

use arrow::record_batch::RecordBatch;
use runnel_common::Timestamp;
use serde::{Deserialize, Serialize};

use super::{CheckpointDir, CheckpointError};
use crate::operator::StateReader;

/// An operator subtask's saved state: named batches.
pub type NamedBatches = Vec<(String, RecordBatch)>;

/// Version of the manifest and state-file format; a newer runnel reads older versions.
pub const FORMAT_VERSION: u32 = 1;

pub(crate) const MANIFEST_PREFIX: &str = "chk-";

/// The manifest file name of checkpoint `id`.
pub(crate) fn manifest_name(id: u64) -> String {
    format!("{MANIFEST_PREFIX}{id:010}.json")
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
    /// A source subtask was idle (its watermark did not hold others back); a restored
    /// source says so again at once, so event time moves as it would have.
    #[serde(default)]
    pub idle: bool,
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
    /// In a distributed run: the owner token of the member that published it (see
    /// [`super::CheckpointConfig::owner`]); its sinks' sealed batches carry its attempt id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A checkpoint loaded for restore.
#[derive(Debug)]
pub struct Restored {
    /// Its manifest.
    pub manifest: Manifest,
    pub(crate) states: HashMap<(usize, usize), NamedBatches>,
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

/// State file: per entry `u32 name length, name, u64 IPC length, Arrow IPC stream`.
pub(crate) fn encode_state(entries: &[(String, RecordBatch)]) -> Result<Vec<u8>, CheckpointError> {
    let arrow_err =
        |e: arrow::error::ArrowError| CheckpointError::Internal(format!("encoding state: {e}"));
    let mut out = Vec::new();
    out.extend_from_slice(b"RNST");
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    for (name, batch) in entries {
        let mut ipc = Vec::new();
        {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema())
                .map_err(arrow_err)?;
            w.write(batch).map_err(arrow_err)?;
            w.finish().map_err(arrow_err)?;
        }
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(ipc.len() as u64).to_le_bytes());
        out.extend_from_slice(&ipc);
    }
    Ok(out)
}

fn decode_state(bytes: &[u8], origin: &str) -> Result<Vec<(String, RecordBatch)>, CheckpointError> {
    let bad = |what: &str| CheckpointError::Corrupt {
        location: format!("state file {origin}"),
        reason: what.to_string(),
    };
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
    let take = |i: &mut usize, n: usize| -> Result<&[u8], CheckpointError> {
        let s = bytes
            .get(*i..i.checked_add(n).ok_or_else(|| bad("truncated"))?)
            .ok_or_else(|| bad("truncated"))?;
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

/// Loads checkpoint `id`'s manifest and state files.
pub(crate) async fn load(dir: &CheckpointDir, id: u64) -> Result<Restored, CheckpointError> {
    let name = manifest_name(id);
    let text = dir.read(&name).await?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| CheckpointError::Corrupt {
            location: format!("{dir}/{name}"),
            reason: e.to_string(),
        })?;
    if manifest.version > FORMAT_VERSION || manifest.id != id {
        return Err(CheckpointError::Corrupt {
            location: format!("{dir}/{name}"),
            reason: format!(
                "version {} / id {} not readable",
                manifest.version, manifest.id
            ),
        });
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
    use std::sync::Arc;

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
        assert!(err.to_string().contains("f.arrows"), "{err}");
    }
}
