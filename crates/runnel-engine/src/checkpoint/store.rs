//! Where one pipeline's checkpoints are kept: a local directory or a prefix in an object
//! store, with durable state files and an atomically published manifest.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::manifest::{MANIFEST_PREFIX, Manifest, manifest_name};
use runnel_connectors::ConnectorError;
use runnel_connectors::txn::SealedStore;

use super::{CheckpointError, crash_point};

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

pub use runnel_common::s3::S3Options;

impl CheckpointDir {
    /// A local directory, created if missing.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn local(dir: &Path) -> Result<CheckpointDir, CheckpointError> {
        std::fs::create_dir_all(dir).map_err(CheckpointError::io(dir.display()))?;
        let store =
            LocalFileSystem::new_with_prefix(dir).map_err(CheckpointError::store(dir.display()))?;
        Ok(CheckpointDir {
            store: Arc::new(store),
            prefix: String::new(),
            local: Some(dir.to_path_buf()),
            shown: dir.display().to_string(),
        })
    }

    /// `s3://bucket/prefix`: checkpoints go under `prefix/` of `bucket`. Nothing is
    /// contacted yet; the first listing reports an unreachable store or missing bucket.
    ///
    /// # Errors
    /// [`CheckpointError::Location`] for a URL without a bucket.
    pub fn s3(url: &str, options: &S3Options) -> Result<CheckpointDir, CheckpointError> {
        let (store, prefix) =
            runnel_common::s3::store(url, options).map_err(CheckpointError::Location)?;
        Ok(CheckpointDir {
            store,
            prefix,
            local: None,
            shown: url.trim_end_matches('/').to_string(),
        })
    }

    /// The sub-directory (or sub-prefix) `name`.
    ///
    /// # Errors
    /// A local sub-directory cannot be created.
    pub fn join(&self, name: &str) -> Result<CheckpointDir, CheckpointError> {
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

    pub(crate) fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    fn path(&self, rel: &str) -> ObjectPath {
        ObjectPath::from(self.key(rel))
    }

    pub(crate) async fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<(), CheckpointError> {
        self.store
            .put(&self.path(rel), bytes.into())
            .await
            .map(|_| ())
            .map_err(CheckpointError::store(format!("writing {self}/{rel}")))
    }

    pub(crate) async fn read(&self, rel: &str) -> Result<Vec<u8>, CheckpointError> {
        let get = self
            .store
            .get(&self.path(rel))
            .await
            .map_err(CheckpointError::store(format!("{self}/{rel}")))?;
        let bytes = get
            .bytes()
            .await
            .map_err(CheckpointError::store(format!("{self}/{rel}")))?;
        Ok(bytes.to_vec())
    }

    /// Where sink `table`'s sealed batches are copied (`sealed/<table>/`), when this is an
    /// object store: the machine that sealed them may not be the one that restores the
    /// checkpoint. `None` for a local directory (the batches stay on this machine).
    pub fn sealed_store(&self, table: &str) -> Option<Arc<dyn SealedStore>> {
        if self.local.is_some() {
            return None;
        }
        let safe: String = table
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Some(Arc::new(ObjectSealedStore {
            dir: CheckpointDir {
                store: self.store.clone(),
                prefix: self.key(&format!("sealed/{safe}")),
                local: None,
                shown: format!("{}/sealed/{safe}", self.shown),
            },
        }))
    }

    /// Makes this member the owner of the directory (a distributed task's): writes `token`
    /// to its owner file, durably, replacing the previous owner's.
    ///
    /// # Errors
    /// The store cannot be written.
    pub async fn claim(&self, token: &str) -> Result<(), CheckpointError> {
        match &self.local {
            Some(dir) => {
                let (dir, token) = (dir.clone(), token.to_string());
                tokio::task::spawn_blocking(move || {
                    let _lock = owner_lock(&dir)?;
                    write_durably(&dir, OWNER_FILE, token.as_bytes())
                })
                .await
                .map_err(|e| CheckpointError::Internal(format!("owner task: {e}")))?
            }
            None => self.put(OWNER_FILE, token.as_bytes().to_vec()).await,
        }
    }

    /// The token in the owner file, if any member claimed the directory.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn owner(&self) -> Result<Option<String>, CheckpointError> {
        match self.store.get(&self.path(OWNER_FILE)).await {
            Ok(got) => {
                let bytes = got
                    .bytes()
                    .await
                    .map_err(CheckpointError::store(format!("{self}/{OWNER_FILE}")))?;
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(CheckpointError::store(format!("{self}/{OWNER_FILE}"))(e)),
        }
    }

    /// Deletes everything under this directory (or prefix): a pipeline started over.
    ///
    /// # Errors
    /// The store cannot be listed or a file deleted.
    pub async fn clear(&self) -> Result<(), CheckpointError> {
        if let Some(dir) = &self.local {
            return match std::fs::remove_dir_all(dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(CheckpointError::io(dir.display())(e)),
            };
        }
        use futures::TryStreamExt;
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let objects: Vec<_> = self
            .store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(CheckpointError::store(format!("listing {self}")))?;
        for o in objects {
            self.store
                .delete(&o.location)
                .await
                .map_err(CheckpointError::store(format!("deleting {}", o.location)))?;
        }
        Ok(())
    }

    /// The id of the newest complete checkpoint, if any: how far the directory's owner
    /// got (a distributed member watches its peers' tasks advance).
    ///
    /// # Errors
    /// The store cannot be listed.
    pub async fn newest_complete(&self) -> Result<Option<u64>, CheckpointError> {
        Ok(self.complete_ids().await?.last().copied())
    }

    /// Ids of the complete checkpoints (those with a manifest), ascending.
    pub(crate) async fn complete_ids(&self) -> Result<Vec<u64>, CheckpointError> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let listing = self
            .store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(CheckpointError::store(format!("listing {self}")))?;
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

    /// Makes checkpoint `id`'s state files durable, then publishes its manifest. A
    /// manifest with an owner (a distributed task's) is published only while the owner
    /// file still names it ([`CheckpointError::Fenced`] otherwise); in a local directory
    /// the check and the publication hold the owner lock, which [`CheckpointDir::claim`]
    /// takes too, so a new owner restores either this checkpoint or one before it that
    /// this member can no longer follow with another. (An object store has no such lock:
    /// there a claim can come between the check and the put, a window of one request.)
    pub(crate) async fn publish(&self, m: &Manifest) -> Result<(), CheckpointError> {
        let id = m.id;
        let fenced = move |now: Option<&str>, token: &str, at: &str| {
            CheckpointError::Fenced(format!(
                "checkpoint {id} not published: {at} now belongs to {} (this member, {token}, \
                 lost the task)",
                now.unwrap_or("nobody")
            ))
        };
        match &self.local {
            Some(dir) => {
                let (dir, m) = (dir.clone(), m.clone());
                let shown = self.shown.clone();
                tokio::task::spawn_blocking(move || {
                    let _lock = match &m.owner {
                        Some(token) => {
                            let lock = owner_lock(&dir)?;
                            let now = match std::fs::read_to_string(dir.join(OWNER_FILE)) {
                                Ok(t) => Some(t),
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                                Err(e) => return Err(CheckpointError::io(dir.display())(e)),
                            };
                            if now.as_deref() != Some(token.as_str()) {
                                return Err(fenced(now.as_deref(), token, &shown));
                            }
                            Some(lock)
                        }
                        None => None,
                    };
                    // object_store's local writes are not fsynced: make the state durable first.
                    let state_dir = dir.join(id.to_string());
                    if state_dir.exists() {
                        sync_dir_files(&state_dir)?;
                    }
                    crash_point("after-state", id);
                    write_manifest(&dir, &m)?;
                    crash_point("after-manifest", id);
                    Ok::<(), CheckpointError>(())
                })
                .await
                .map_err(|e| CheckpointError::Internal(format!("manifest task: {e}")))?
            }
            None => {
                if let Some(token) = &m.owner {
                    let now = self.owner().await?;
                    if now.as_deref() != Some(token.as_str()) {
                        return Err(fenced(now.as_deref(), token, &self.shown));
                    }
                }
                // Each put is durable and atomic once acknowledged: the state files are in
                // place, and the manifest appears whole or not at all.
                crash_point("after-state", id);
                let json = serde_json::to_vec_pretty(m)
                    .map_err(|e| CheckpointError::Internal(format!("encoding a manifest: {e}")))?;
                self.put(&manifest_name(id), json).await?;
                crash_point("after-manifest", id);
                Ok(())
            }
        }
    }

    /// Deletes checkpoint `id`: its manifest first, so it is never seen half-deleted.
    pub(crate) async fn delete(&self, id: u64) {
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

fn sync_dir_files(dir: &Path) -> Result<(), CheckpointError> {
    for e in std::fs::read_dir(dir).map_err(CheckpointError::io(dir.display()))? {
        let p = e.map_err(CheckpointError::io(dir.display()))?.path();
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(CheckpointError::io(format!("fsync {}", p.display())))?;
    }
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(CheckpointError::io(format!("fsync {}", dir.display())))
}

/// Who owns a distributed task's checkpoint directory.
const OWNER_FILE: &str = "owner";
/// Held while the owner file is written or checked for a publication.
const OWNER_LOCK: &str = "owner.lock";

/// Write, fsync, rename, fsync the directory.
pub(crate) fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), CheckpointError> {
    let json = serde_json::to_vec_pretty(m)
        .map_err(|e| CheckpointError::Internal(format!("encoding a manifest: {e}")))?;
    write_durably(dir, &manifest_name(m.id), &json)
}

/// The owner lock of a local task directory, held until dropped (blocks while another
/// process holds it: a claim or a publication, a few milliseconds).
fn owner_lock(dir: &Path) -> Result<std::fs::File, CheckpointError> {
    std::fs::create_dir_all(dir).map_err(CheckpointError::io(dir.display()))?;
    let path = dir.join(OWNER_LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(CheckpointError::io(path.display()))?;
    file.lock().map_err(CheckpointError::io(path.display()))?;
    Ok(file)
}

/// `bytes` as `dir/name`, whole or not at all, durably: write, fsync, rename, fsync the
/// directory.
fn write_durably(dir: &Path, name: &str, json: &[u8]) -> Result<(), CheckpointError> {
    std::fs::create_dir_all(dir).map_err(CheckpointError::io(dir.display()))?;
    let fin = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(CheckpointError::io(tmp.display()))?;
    f.write_all(json)
        .and_then(|()| f.sync_all())
        .map_err(CheckpointError::io(tmp.display()))?;
    std::fs::rename(&tmp, &fin).map_err(CheckpointError::io(fin.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(CheckpointError::io(format!("fsync {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(err.to_string().contains("names no bucket"), "{err}");
    }
}

/// Sealed sink batches kept in the checkpoints' object store ([`SealedStore`]).
///
/// Sinks call it from their (synchronous) staging code, inside async tasks or blocking
/// threads alike: each call runs on the connectors' I/O runtime
/// ([`runnel_connectors::io_runtime`]).
#[derive(Debug)]
struct ObjectSealedStore {
    dir: CheckpointDir,
}

impl ObjectSealedStore {
    fn wait<T: Send + 'static>(
        &self,
        what: String,
        fut: impl std::future::Future<Output = Result<T, CheckpointError>> + Send + 'static,
    ) -> Result<T, ConnectorError> {
        runnel_connectors::io_runtime::wait(fut)?
            .map_err(|e| ConnectorError::Other(format!("{what}: {e}")))
    }
}

impl SealedStore for ObjectSealedStore {
    fn put(&self, name: &str, from: &Path) -> Result<(), ConnectorError> {
        let (dir, name, from) = (self.dir.clone(), name.to_string(), from.to_path_buf());
        let what = format!("copying sealed batch '{}' to {}", from.display(), self.dir);
        self.wait(what, async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut file = tokio::fs::File::open(&from)
                .await
                .map_err(CheckpointError::io(from.display()))?;
            let path = dir.path(&name);
            let mut up = object_store::buffered::BufWriter::new(dir.store.clone(), path);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(CheckpointError::io(from.display()))?;
                if n == 0 {
                    break;
                }
                up.write_all(&buf[..n])
                    .await
                    .map_err(CheckpointError::io(format!("{dir}/{name}")))?;
            }
            up.shutdown()
                .await
                .map_err(CheckpointError::io(format!("{dir}/{name}")))
        })
    }

    fn get(&self, name: &str, to: &Path) -> Result<(), ConnectorError> {
        let (dir, name, to) = (self.dir.clone(), name.to_string(), to.to_path_buf());
        let what = format!("fetching sealed batch {}/{name}", self.dir);
        self.wait(what, async move {
            use futures::StreamExt as _;
            use tokio::io::AsyncWriteExt as _;
            let got = dir
                .store
                .get(&dir.path(&name))
                .await
                .map_err(CheckpointError::store(format!("{dir}/{name}")))?;
            // Written under a temporary name, synced, then renamed: a crash never leaves a
            // partial batch under the sealed name.
            let tmp = to.with_extension("fetching");
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(CheckpointError::io(tmp.display()))?;
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(CheckpointError::store(format!("{dir}/{name}")))?;
                file.write_all(&chunk)
                    .await
                    .map_err(CheckpointError::io(tmp.display()))?;
            }
            file.sync_all()
                .await
                .map_err(CheckpointError::io(tmp.display()))?;
            tokio::fs::rename(&tmp, &to)
                .await
                .map_err(CheckpointError::io(to.display()))
        })
    }

    fn list(&self) -> Result<Vec<String>, ConnectorError> {
        let dir = self.dir.clone();
        let what = format!("listing sealed batches in {}", self.dir);
        self.wait(what, async move {
            use futures::TryStreamExt as _;
            let prefix = ObjectPath::from(dir.prefix.as_str());
            let objects: Vec<_> = dir
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(CheckpointError::store(format!("listing {dir}")))?;
            Ok(objects
                .into_iter()
                .filter_map(|o| o.location.filename().map(str::to_string))
                .collect())
        })
    }

    fn delete(&self, name: &str) -> Result<(), ConnectorError> {
        let (dir, name) = (self.dir.clone(), name.to_string());
        let what = format!("deleting sealed batch {}/{name}", self.dir);
        self.wait(what, async move {
            match dir.store.delete(&dir.path(&name)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(CheckpointError::store(format!("{dir}/{name}"))(e)),
            }
        })
    }
}
