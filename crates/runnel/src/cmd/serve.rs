//! `runnel serve`: the HTTP API over the log in `--data-dir`, hosting the pipelines
//! submitted to `POST /api/pipelines` (kept in `--data-dir`, resumed at the next start).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use runnel_server::{DEFAULT_MAX_BODY_BYTES, ServerState};

/// `runnel serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Directory of the embedded log
    #[arg(long, default_value = "runnel-data")]
    pub data_dir: PathBuf,
    /// Create unknown topics on their first POST instead of answering 404
    #[arg(long)]
    pub auto_create: bool,
    /// Partitions of auto-created topics
    #[arg(long, default_value_t = 1)]
    pub auto_create_partitions: u32,
    /// Largest accepted request body in bytes (larger ones get 413)
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Authentication and how the server is reached
    #[command(flatten)]
    pub http: crate::cli::HttpArgs,
}

/// Runs `runnel serve` until Ctrl-C (or SIGTERM), then closes the log cleanly.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let log = runnel_runtime::resources::open_log(&args.data_dir).await?;
    let state = ServerState::new(log.clone())
        .with_auto_create(args.auto_create.then_some(args.auto_create_partitions))
        .with_max_body_bytes(args.max_body_bytes);
    let mut resources = runnel_runtime::Resources::new(&args.data_dir);
    resources.log = Some(log.clone());
    let hub = resources.hub.clone();
    let host = runnel_runtime::host::Host::open(resources).await;
    let admin = runnel_server::AdminState::new(hub).with_host(host.clone());
    admin.set_ready(true);
    let server = runnel_server::Server::start(&args.listen, &args.http.config(), state, admin)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let addr = server.addr;
    println!(
        "runnel serving {} (log in {})",
        server.url(),
        args.data_dir.display()
    );
    if let Some(tls) = &server.tls {
        println!("TLS certificate SHA-256 {}", tls.fingerprint());
    }
    tracing::info!(%addr, data_dir = %args.data_dir.display(), "serving");
    shutdown_signal().await;
    // Each running pipeline resumes from its newest checkpoint at the next start.
    host.shutdown().await;
    server.stop().await;
    drop(host);
    // Aborted subtasks let go of the log as the runtime drops them: give them a moment.
    for _ in 0..40 {
        if Arc::strong_count(&log) == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Once serve returns, its connections are closed and the log should be ours alone;
    // if a handler still holds it, dropping the last reference closes it just the same.
    tokio::task::spawn_blocking(move || match Arc::try_unwrap(log) {
        Ok(log) => log.close().context("closing the log"),
        Err(shared) => {
            tracing::warn!("the log is still referenced at shutdown; it closes when released");
            drop(shared);
            Ok(())
        }
    })
    .await
    .context("closing the log failed")??;
    eprintln!("runnel: stopped; log closed");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
