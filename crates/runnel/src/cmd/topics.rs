//! `runnel topics create|list|describe`: manage topics in `--data-dir` directly or, with
//! `--url`, on a running server. Also holds `Target`, the `--data-dir`/`--url` choice
//! shared by `produce` and `consume`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use runnel_log::{Log, LogError, LogOptions, Topic, TopicConfig};
use runnel_server::client::{HttpClient, HttpResponse};
use serde_json::{Value, json};

/// Where a command works: the log directory itself, or a running server.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Directory of the embedded log (used when --url is not given)
    #[arg(long, default_value = "runnel-data")]
    pub data_dir: PathBuf,
    /// Talk to a running `runnel serve` instead, e.g. http://127.0.0.1:8080
    #[arg(long)]
    pub url: Option<String>,
    #[command(flatten)]
    pub client: crate::cli::ClientArgs,
}

/// An opened target.
pub enum Backend {
    /// The log, opened in this process.
    Dir(Arc<Log>),
    /// A server's HTTP API.
    Url(HttpClient),
}

impl Target {
    /// Opens the log directory or checks the URL.
    pub fn open(&self) -> anyhow::Result<Backend> {
        match &self.url {
            Some(url) => Ok(Backend::Url(self.client.client(url)?)),
            None => match Log::open(&self.data_dir, LogOptions::default()) {
                Ok(log) => Ok(Backend::Dir(Arc::new(log))),
                Err(e @ LogError::Locked { .. }) => Err(anyhow::Error::new(e).context(
                    "a server may be running on this directory: pass --url http://HOST:PORT to go through it",
                )),
                Err(e) => Err(anyhow::Error::new(e)
                    .context(format!("opening the log in {}", self.data_dir.display()))),
            },
        }
    }
}

/// Flushes and releases the log directory.
pub fn close_log(log: Arc<Log>) -> anyhow::Result<()> {
    match Arc::try_unwrap(log) {
        Ok(log) => log.close().context("closing the log"),
        Err(_) => bail!("the log is still in use at exit (a runnel bug, please report it)"),
    }
}

/// The topic `name` of an opened log directory.
pub fn dir_topic(log: &Log, name: &str) -> anyhow::Result<Arc<Topic>> {
    log.topic(name).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown topic '{name}' in {}; create it with `runnel topics create {name} --partitions N`",
            log.dir().display()
        )
    })
}

/// Fails with the server's error unless `response` is a success.
pub fn check(response: HttpResponse, what: &str) -> anyhow::Result<HttpResponse> {
    if response.is_success() {
        Ok(response)
    } else {
        bail!("{what}: {}", response.error_message())
    }
}

/// `runnel topics …`.
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create a topic with N partitions
    Create(CreateArgs),
    /// List topics with their partitions, records and sizes
    List(ListArgs),
    /// Show a topic's partitions (start/end offsets, sizes) and any corruption found
    Describe(DescribeArgs),
}

/// `runnel topics create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Topic name: 1 to 200 of A-Z a-z 0-9 . _ -
    pub name: String,
    /// Number of partitions (fixed at creation)
    #[arg(short, long, default_value_t = 1)]
    pub partitions: u32,
    /// Delete sealed segments older than this many ms
    #[arg(long)]
    pub retention_ms: Option<u64>,
    /// Keep each partition at most about this many bytes
    #[arg(long)]
    pub retention_bytes: Option<u64>,
    /// When appends are fsynced: always (default) or interval:100ms (may lose the last interval on power failure)
    #[arg(long)]
    pub fsync: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: Target,
}

/// `runnel topics list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: Target,
}

/// `runnel topics describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Topic name
    pub name: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: Target,
}

/// Runs `runnel topics …`.
pub async fn topics(command: TopicsCommand) -> anyhow::Result<()> {
    match command {
        TopicsCommand::Create(args) => create(args).await,
        TopicsCommand::List(args) => list(args).await,
        TopicsCommand::Describe(args) => describe(args).await,
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let mut config = TopicConfig::with_partitions(args.partitions);
    config.retention_ms = args.retention_ms;
    config.retention_bytes = args.retention_bytes;
    if let Some(f) = &args.fsync {
        config.fsync = f.parse()?;
    }
    match args.target.open()? {
        Backend::Url(client) => {
            let mut body = json!({ "name": args.name, "partitions": args.partitions });
            body["retention_ms"] = json!(args.retention_ms);
            body["retention_bytes"] = json!(args.retention_bytes);
            body["fsync"] = json!(config.fsync.to_string());
            let r = client
                .request(
                    axum::http::Method::POST,
                    "/v1/topics",
                    &[("content-type", "application/json")],
                    body.to_string(),
                )
                .await?;
            check(r, &format!("creating topic '{}'", args.name))?;
        }
        Backend::Dir(log) => {
            let created = log.create_topic(&args.name, config);
            close_log(log)?;
            created.with_context(|| format!("creating topic '{}'", args.name))?;
        }
    }
    println!(
        "created topic {} with {} partition(s)",
        args.name, args.partitions
    );
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let topics: Vec<Value> = match args.target.open()? {
        Backend::Url(client) => {
            let r = client
                .request(axum::http::Method::GET, "/v1/topics", &[], "")
                .await?;
            let r = check(r, "listing topics")?;
            r.json()["topics"].as_array().cloned().unwrap_or_default()
        }
        Backend::Dir(log) => {
            let mut out = Vec::new();
            {
                for name in log.topics() {
                    let Some(t) = log.topic(&name) else { continue };
                    let records: u64 = t
                        .partitions()
                        .iter()
                        .map(|p| p.end_offset() - p.start_offset())
                        .sum();
                    let size: u64 = t.partitions().iter().map(|p| p.size_bytes()).sum();
                    out.push(json!({"name": name, "partitions": t.partition_count(),
                        "records": records, "size_bytes": size}));
                }
            }
            close_log(log)?;
            out
        }
    };
    println!(
        "{:<40} {:>10} {:>12} {:>14}",
        "TOPIC", "PARTITIONS", "RECORDS", "BYTES"
    );
    for t in topics {
        println!(
            "{:<40} {:>10} {:>12} {:>14}",
            t["name"].as_str().unwrap_or("?"),
            t["partitions"],
            t["records"],
            t["size_bytes"]
        );
    }
    Ok(())
}

async fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let d: Value = match args.target.open()? {
        Backend::Url(client) => {
            let path = format!("/v1/topics/{}", args.name);
            let r = client
                .request(axum::http::Method::GET, &path, &[], "")
                .await?;
            check(r, &format!("describing topic '{}'", args.name))?.json()
        }
        Backend::Dir(log) => {
            let d = describe_dir(&log, &args.name);
            close_log(log)?;
            d?
        }
    };
    print_description(&d);
    Ok(())
}

fn describe_dir(log: &Log, name: &str) -> anyhow::Result<Value> {
    let t = dir_topic(log, name)?;
    let health = log.health();
    Ok(json!({
        "name": t.name(),
        "config": serde_json::to_value(t.config())?,
        "partitions": t.partitions().iter().map(|p| json!({
            "partition": p.id(), "start_offset": p.start_offset(),
            "end_offset": p.end_offset(), "size_bytes": p.size_bytes(),
            "segments": p.segment_count(), "unavailable": p.unavailable_reason(),
        })).collect::<Vec<_>>(),
        "corruption": health.corruption.iter().filter(|c| c.topic == t.name()).map(|c| json!({
            "partition": c.partition, "file": c.file.display().to_string(),
            "position": c.position, "first_offset": c.first_offset,
            "resume_offset": c.resume_offset, "reason": c.reason,
        })).collect::<Vec<_>>(),
    }))
}

fn print_description(d: &Value) {
    let config = &d["config"];
    println!(
        "topic {}  partitions={}  fsync={}  segment_bytes={}  retention_ms={}  retention_bytes={}",
        d["name"].as_str().unwrap_or("?"),
        d["partitions"].as_array().map_or(0, Vec::len),
        config["fsync"].as_str().unwrap_or("?"),
        config["segment_bytes"],
        config["retention_ms"],
        config["retention_bytes"]
    );
    println!(
        "{:>9} {:>12} {:>12} {:>14} {:>8}  STATUS",
        "PARTITION", "START", "END", "BYTES", "SEGMENTS"
    );
    for p in d["partitions"].as_array().into_iter().flatten() {
        let status = p["unavailable"]
            .as_str()
            .map_or_else(|| "ok".to_owned(), |r| format!("unavailable: {r}"));
        println!(
            "{:>9} {:>12} {:>12} {:>14} {:>8}  {status}",
            p["partition"], p["start_offset"], p["end_offset"], p["size_bytes"], p["segments"]
        );
    }
    for c in d["corruption"].as_array().into_iter().flatten() {
        println!(
            "corrupt: partition {} file {} at byte {}: offsets {}..{} unreadable: {}",
            c["partition"],
            c["file"].as_str().unwrap_or("?"),
            c["position"],
            c["first_offset"],
            c["resume_offset"],
            c["reason"].as_str().unwrap_or("?")
        );
    }
}
