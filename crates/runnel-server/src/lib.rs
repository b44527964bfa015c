//! runnel's HTTP server: the ingest API in front of the embedded log (`ingest.rs`), topic
//! and consumer-group administration (`topics.rs`), and `/healthz`.
//!
//! Data enters with `POST /v1/topics/{topic}/records` and is acknowledged only once the
//! log has fsynced it; it leaves with `GET /v1/topics/{topic}/records` as NDJSON. Every
//! error answer is JSON: `{"error": "<code>", "detail": "<text>"}`.
//!
//! Each group of routes is a `Router` with its state already applied, so more routes (an
//! admin API, a dashboard) are added with `Router::merge`:
//!
//! ```no_run
//! use std::sync::Arc;
//! use runnel_log::{Log, LogOptions};
//! use runnel_server::{ServerState, router, serve};
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let log = Arc::new(Log::open("runnel-data".as_ref(), LogOptions::default())?);
//! let state = ServerState::new(log).with_auto_create(Some(1));
//! let app = router(state); // .merge(other_routes)
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! serve(listener, app, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod client;
mod error;
pub mod guard;
mod ingest;
pub mod loadgen;
mod pipelines;
pub mod prometheus;
pub mod tls;
mod topics;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::routing::get;
use runnel_log::{Log, LogError, Topic, TopicConfig};

pub use admin::{AdminState, EdgeStatus, NodeStatus, PipelineHandle, PipelineStatus, admin_routes};
pub use error::{ApiError, ServerError};
pub use ingest::ingest_routes;
pub use topics::topic_routes;

/// Default largest request body: 16 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;

/// Default number of records a read returns.
pub const DEFAULT_READ_MAX: usize = 100;

/// Most records one read returns.
pub const READ_MAX_CAP: usize = 10_000;

/// What every handler shares: the log and the server's settings. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ServerState {
    log: Arc<Log>,
    auto_create: Option<u32>,
    max_body_bytes: usize,
    started: Instant,
    /// Memory that ingest requests being parsed and appended may take, in KiB.
    ingest_budget: Arc<tokio::sync::Semaphore>,
}

/// Memory the requests being ingested may take at once: a request is charged
/// [`INGEST_AMPLIFICATION`] times its body (what parsed records cost at worst, for tiny
/// records), and past the budget a POST gets 503 with Retry-After.
pub const INGEST_BUDGET_BYTES: usize = 768 << 20;

/// Bytes of memory one body byte may become while its records are parsed and appended.
pub const INGEST_AMPLIFICATION: usize = 40;

impl ServerState {
    /// State serving `log`: no auto-create, a 16 MiB body limit.
    pub fn new(log: Arc<Log>) -> Self {
        ServerState {
            log,
            auto_create: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            started: Instant::now(),
            ingest_budget: Arc::new(tokio::sync::Semaphore::new(INGEST_BUDGET_BYTES >> 10)),
        }
    }

    /// Creates unknown topics on first POST with this many partitions (`None`: answer 404).
    pub fn with_auto_create(mut self, partitions: Option<u32>) -> Self {
        self.auto_create = partitions;
        self
    }

    /// Rejects request bodies larger than `bytes` with 413.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// The log this server writes to.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Partitions of auto-created topics, if auto-create is on.
    pub fn auto_create(&self) -> Option<u32> {
        self.auto_create
    }

    /// Largest accepted request body in bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Reserves memory for ingesting a body of `bytes`; `None` (answer 503) when the
    /// requests in flight already hold the budget.
    pub(crate) fn reserve_ingest(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let kib = (bytes.saturating_mul(INGEST_AMPLIFICATION) >> 10)
            .clamp(1, INGEST_BUDGET_BYTES >> 10) as u32;
        self.ingest_budget.clone().try_acquire_many_owned(kib).ok()
    }

    /// When this state was built (the server's start, for uptime).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The topic `name`; created when auto-create is on and `create` is true.
    pub(crate) async fn resolve_topic(
        &self,
        name: &str,
        create: bool,
    ) -> Result<Arc<Topic>, ApiError> {
        if let Some(t) = self.log.topic(name) {
            return Ok(t);
        }
        if let Some(why) = self.log.quarantined(name) {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "topic_quarantined",
                format!("topic '{name}' could not be opened and is set aside: {why}"),
            ));
        }
        let (Some(partitions), true) = (self.auto_create, create) else {
            return Err(LogError::UnknownTopic(name.to_owned()).into());
        };
        let log = self.log.clone();
        let name = name.to_owned();
        blocking(move || {
            match log.create_topic(&name, TopicConfig::with_partitions(partitions)) {
                Ok(t) => Ok(t),
                // Another request created it first.
                Err(LogError::TopicExists(_)) => log.topic(&name).ok_or_else(|| {
                    ApiError::internal(format!("topic '{name}' exists but is not open"))
                }),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }
}

/// Every route of this crate: ingest, topics and groups, and `GET /healthz`.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(ingest_routes(state.clone()))
        .merge(topic_routes(state))
}

/// How the HTTP surface is protected.
#[derive(Debug, Clone, Default)]
pub struct HttpConfig {
    /// The bearer token every request but the page must carry (at least 16 bytes).
    pub token: Option<String>,
    /// The URL users reach the server at, when it is not the bound address (a proxy, a
    /// DNS name): its host is accepted in `Host` headers.
    pub public_url: Option<String>,
    /// Serve HTTPS with this certificate.
    pub tls: Option<tls::TlsSource>,
}

/// The whole HTTP surface: ingest and topics, the admin API and page, `/metrics`, with
/// request metrics, the [`guard`] against other web sites, and, when a token is set,
/// bearer-token authentication on every route but the static page. `bound` is where
/// the server listens.
///
/// # Errors
/// The token or `--public-url` is unusable.
pub fn app(
    state: ServerState,
    admin: AdminState,
    config: &HttpConfig,
    bound: std::net::SocketAddr,
) -> Result<Router, String> {
    prometheus::install();
    auth::check_token(config.token.as_deref())?;
    let guard = guard::Guard::new(bound, config.public_url.as_deref())?;
    let mut app = router(state).merge(admin_routes(admin.clone())).merge(
        Router::new()
            .route("/metrics", get(prometheus::metrics_handler))
            .with_state(admin),
    );
    if let Some(token) = &config.token {
        app = app.layer(axum::middleware::from_fn_with_state(
            Arc::new(auth::Token::new(token)),
            auth::require_token,
        ));
    }
    Ok(app
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(guard),
            guard::check,
        ))
        .layer(axum::middleware::from_fn(guard::security_headers))
        .layer(axum::middleware::from_fn(prometheus::track_http)))
}

/// Most connections served at once; past it a new connection gets a 503 and is closed.
pub const MAX_CONNECTIONS: usize = 512;

/// A client must send a request's headers within this time (also closes idle
/// keep-alive connections), so idle or slow connections cannot pile up.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a connection past [`MAX_CONNECTIONS`] is told before it is closed.
fn busy_answer() -> Vec<u8> {
    let body = r#"{"error":"busy","detail":"too many open connections; retry in a second"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `router` on `listener` until `shutdown` completes, then finishes in-flight
/// requests (event streams are cut). At most [`MAX_CONNECTIONS`] connections are served
/// at once and each must send its headers within [`HEADER_READ_TIMEOUT`].
///
/// # Errors
/// `Serve` if accepting connections fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_with(listener, router, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given (the handshake must also finish within
/// [`HEADER_READ_TIMEOUT`]).
///
/// # Errors
/// `Serve` if accepting connections fails.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<Arc<tls::Tls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    use tokio::io::AsyncWriteExt as _;

    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (mut stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors and the like: back off, keep serving.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("runnel_http_connections_refused_total").increment(1);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                    let _ = stream.write_all(&busy_answer()).await;
                    let _ = stream.shutdown().await;
                })
                .await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = stop_rx.clone();
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        connections.spawn(async move {
            let _permit = permit;
            match acceptor {
                None => serve_connection(stream, router, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, router, stop).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serves HTTP/1.1 on one connection until it ends or the server stops.
async fn serve_connection<I>(io: I, router: Router, mut stop: tokio::sync::watch::Receiver<bool>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    let service = hyper_util::service::TowerToHyperService::new(router);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A running HTTP server: ingest, admin API, page, metrics.
pub struct Server {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its TLS certificate, when it serves HTTPS.
    pub tls: Option<Arc<tls::Tls>>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl Server {
    /// Binds `listen` (refusing a non-loopback address without a token) and serves the
    /// whole [`app`] over `state` and `admin`.
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the address cannot be resolved or bound, or is not
    /// loopback and no token is set, or the token or public URL is unusable.
    pub async fn start(
        listen: &str,
        config: &HttpConfig,
        state: ServerState,
        admin: AdminState,
    ) -> Result<Server, ServerError> {
        let listener = auth::bind(listen, config.token.as_deref())
            .await
            .map_err(ServerError::Bind)?;
        let addr = listener
            .local_addr()
            .map_err(|e| ServerError::Bind(format!("reading the listening address: {e}")))?;
        let app = app(state, admin, config, addr).map_err(ServerError::Bind)?;
        let tls = match &config.tls {
            Some(source) => Some(tls::Tls::load(source.clone()).map_err(ServerError::Bind)?),
            None => None,
        };
        if tls.is_none() && !addr.ip().is_loopback() {
            eprintln!(
                "runnel: warning: serving {addr} without TLS: the auth token and all data \
                 travel in the clear; pass --tls-cert/--tls-key (or --tls-self-signed)"
            );
        }
        #[cfg(unix)]
        if let Some(t) = tls.clone().filter(|t| t.reloadable()) {
            reload_on_sighup(t);
        }
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = tls.clone();
        let task = tokio::spawn(async move {
            serve_with(listener, app, served, async {
                let _ = stop_rx.await;
            })
            .await
        });
        Ok(Server {
            addr,
            tls,
            stop,
            task,
        })
    }

    /// The URL it serves, `http://` or `https://`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish (event streams are cut).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        // Event streams never end by themselves; do not wait on them for long.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.task).await;
    }
}

/// Reads the certificate files again on every SIGHUP (a failed reload keeps the old one).
#[cfg(unix)]
fn reload_on_sighup(tls: Arc<tls::Tls>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; the TLS certificate will not be reloaded");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let t = tls.clone();
            match tokio::task::spawn_blocking(move || t.reload()).await {
                Ok(Ok(fingerprint)) => {
                    tracing::info!(%fingerprint, "TLS certificate reloaded");
                    eprintln!("runnel: TLS certificate reloaded (SHA-256 {fingerprint})");
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "TLS reload failed; keeping the old certificate");
                }
                Err(e) => tracing::error!(error = %e, "TLS reload task failed"),
            }
        }
    });
}

/// Runs blocking log work off the async threads (the log API blocks on disk I/O).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("blocking task failed: {e}")))?
}
