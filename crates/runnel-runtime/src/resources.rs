//! What connectors may need from the run, provided before anything is built: the
//! embedded log and the results hub the web page reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use runnel_connectors::sink::dashboard::{Dashboards, Panel};
use runnel_log::{Log, LogOptions};

use crate::error::RuntimeError;

/// The shared resources of one run.
#[derive(Debug, Clone)]
pub struct Resources {
    /// The pipeline's data directory (log, checkpoints, dead letters).
    pub data_dir: PathBuf,
    /// The embedded durable log, when a table or the HTTP server needs it.
    pub log: Option<Arc<Log>>,
    /// Where `dashboard` tables put their rows for the web page.
    pub hub: Arc<Dashboards>,
}

impl Resources {
    /// Resources in `data_dir`, without a log.
    pub fn new(data_dir: &Path) -> Self {
        Resources {
            data_dir: data_dir.to_path_buf(),
            log: None,
            hub: Arc::default(),
        }
    }

    /// Opens (or creates) the embedded log in the data directory, once.
    ///
    /// # Errors
    /// [`RuntimeError::Log`] when it cannot be opened (e.g. another process holds it).
    pub async fn open_log(&mut self) -> Result<Arc<Log>, RuntimeError> {
        if let Some(log) = &self.log {
            return Ok(log.clone());
        }
        let log = open_log(&self.data_dir).await?;
        self.log = Some(log.clone());
        Ok(log)
    }

    /// Closes the log now, even if a finishing task still holds a handle (its appends
    /// fail from here on): the caller may remove the directory after this.
    pub async fn close(self) {
        if let Some(log) = self.log {
            close_log(log).await;
        }
    }
}

/// Opens (or creates) the embedded log in `dir`.
///
/// # Errors
/// [`RuntimeError::Log`].
pub async fn open_log(dir: &Path) -> Result<Arc<Log>, RuntimeError> {
    let owned = dir.to_path_buf();
    let shown = dir.display().to_string();
    let log = tokio::task::spawn_blocking(move || Log::open(&owned, LogOptions::default()))
        .await
        .map_err(|e| RuntimeError::Internal(format!("opening the log: {e}")))?
        .map_err(|error| RuntimeError::Log { dir: shown, error })?;
    let log = Arc::new(log);
    enforce_retention(&log);
    Ok(log)
}

/// How often the log's retention runs.
pub const RETENTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Deletes sealed segments past each topic's `retention_ms` / `retention_bytes` every
/// [`RETENTION_INTERVAL`] while the log is open (it holds the log weakly, so closing is
/// never held up by it). Call once per opened log, on a tokio runtime.
pub fn enforce_retention(log: &Arc<Log>) {
    let weak = Arc::downgrade(log);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RETENTION_INTERVAL);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(log) = weak.upgrade() else { return };
            let report = tokio::task::spawn_blocking(move || log.enforce_retention()).await;
            match report {
                Ok(Ok(r)) if r.segments_deleted > 0 => tracing::info!(
                    segments = r.segments_deleted,
                    bytes = r.bytes_deleted,
                    "log retention deleted old segments"
                ),
                Ok(Err(e)) => tracing::warn!("log retention: {e}"),
                _ => {}
            }
        }
    });
}

/// Flushes the log and writes its recovery points now, through the shared handle
/// ([`Log::shutdown`]): a task that still holds a handle (a server task finishing a
/// request, a batch in flight) can no longer append, and the log's background thread
/// has stopped, so nothing writes into the directory after this returns.
pub async fn close_log(log: Arc<Log>) {
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(e) = log.shutdown() {
            tracing::warn!("closing the log: {e}");
        }
    })
    .await;
}
