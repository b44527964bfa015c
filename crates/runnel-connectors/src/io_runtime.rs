//! A small runtime of its own for network calls made from synchronous code.
//!
//! The transactional-sink mechanism's steps ([`crate::txn::Apply`],
//! [`crate::txn::SealedStore`]) are synchronous and run inside async tasks and blocking
//! threads alike; async clients (object stores, databases) are called from them through
//! [`wait`], which runs the future on this runtime and blocks the calling thread, without
//! entering a runtime, until it ends. Clients whose connection tasks must keep running
//! between calls are created here too ([`spawn`]), so a connection never depends on a
//! runtime that is busy or gone.

use std::future::Future;
use std::sync::OnceLock;

use crate::ConnectorError;

fn runtime() -> Result<&'static tokio::runtime::Runtime, ConnectorError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("runnel-io")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| ConnectorError::Other(format!("starting the I/O runtime: {e}")))
}

/// Runs `fut` on the I/O runtime and waits for its result, blocking this thread.
///
/// # Errors
/// The runtime cannot start, or the future was dropped before it finished.
pub fn wait<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, ConnectorError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime()?.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| ConnectorError::Other("an I/O task ended without an answer".into()))
}

/// Spawns `fut` on the I/O runtime (a client's connection task).
///
/// # Errors
/// The runtime cannot start.
pub fn spawn(fut: impl Future<Output = ()> + Send + 'static) -> Result<(), ConnectorError> {
    runtime()?.spawn(fut);
    Ok(())
}
