//! `runnel produce TOPIC`: append records from stdin or a file, to `--data-dir` directly
//! or through a running server (`--url`). JSON lines by default: one record per line.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use anyhow::{Context, bail};
use axum::http::Method;
use clap::Args;
use runnel_common::time::parse_timestamp;
use runnel_log::Record;
use runnel_server::client::HttpClient;
use runnel_server::wire::{self, RecordMeta};

use crate::cmd::topics::{Backend, Target, check, close_log, dir_topic};

/// Most bytes of lines sent in one append (one HTTP request); the server's default limit is 16 MiB.
const BATCH_BYTES: usize = 4 << 20;

/// `runnel produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to append to
    pub topic: String,
    /// Read records from this file instead of stdin
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// Record key (picks the partition; without it records are spread round robin)
    #[arg(long, short)]
    pub key: Option<String>,
    /// application/x-ndjson: one JSON record per line; application/json: one value or an array; anything else: the whole input is one raw record
    #[arg(long, default_value = wire::NDJSON)]
    pub content_type: String,
    /// Event time of every record: RFC 3339 or epoch milliseconds
    #[arg(long)]
    pub event_time: Option<String>,
    /// Extra record header NAME=VALUE (repeatable)
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Records per append (each append is one fsync, or one HTTP request)
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: Target,
}

/// Runs `runnel produce`.
pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let handle = tokio::runtime::Handle::current();
    // Reading stdin and appending block: run the whole command on a blocking thread.
    let (records, topic) = tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, String)> {
        let backend = args.target.open()?;
        let result = run(&args, &backend, &handle);
        if let Backend::Dir(log) = backend {
            close_log(log)?;
        }
        Ok((result?, args.topic))
    })
    .await
    .context("the produce task failed")??;
    println!("produced {records} record(s) to {topic}");
    Ok(())
}

fn run(
    args: &ProduceArgs,
    backend: &Backend,
    handle: &tokio::runtime::Handle,
) -> anyhow::Result<u64> {
    let meta = meta(args)?;
    let input: Box<dyn Read> = match &args.file {
        Some(f) => {
            Box::new(std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?)
        }
        None => Box::new(std::io::stdin().lock()),
    };
    let mut sink = Sink::new(args, backend, &meta, handle)?;
    if wire::mime_essence(&args.content_type) != wire::NDJSON {
        let mut body = Vec::new();
        BufReader::new(input)
            .read_to_end(&mut body)
            .context("reading the input")?;
        sink.send(&body)?;
        return Ok(sink.produced);
    }
    let mut batch = Vec::new();
    let mut lines = 0usize;
    for (i, line) in BufReader::new(input).split(b'\n').enumerate() {
        let line = line.context("reading the input")?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // Check each line here so that the error names the input's line number.
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&line) {
            bail!(
                "line {} is not JSON: {e}; {} record(s) before it were produced",
                i + 1,
                sink.produced + lines as u64
            );
        }
        batch.extend_from_slice(&line);
        batch.push(b'\n');
        lines += 1;
        if lines >= args.batch.max(1) || batch.len() >= BATCH_BYTES {
            sink.send(&batch)?;
            batch.clear();
            lines = 0;
        }
    }
    if lines > 0 {
        sink.send(&batch)?;
    }
    Ok(sink.produced)
}

fn meta(args: &ProduceArgs) -> anyhow::Result<RecordMeta> {
    let event_time = match &args.event_time {
        Some(t) => Some(parse_timestamp(t).with_context(|| {
            format!("--event-time '{t}' is neither RFC 3339 nor epoch milliseconds")
        })?),
        None => None,
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        let Some((name, value)) = h.split_once('=') else {
            bail!("--header '{h}' is not NAME=VALUE");
        };
        headers.push((name.trim().to_ascii_lowercase(), value.as_bytes().to_vec()));
    }
    Ok(RecordMeta {
        key: args.key.as_ref().map(|k| k.as_bytes().to_vec()),
        event_time,
        headers,
    })
}

/// Where batches go: the log (append) or the server (POST).
struct Sink<'a> {
    args: &'a ProduceArgs,
    meta: &'a RecordMeta,
    target: SinkTarget<'a>,
    produced: u64,
}

enum SinkTarget<'a> {
    Dir(std::sync::Arc<runnel_log::Topic>),
    Url(&'a HttpClient, &'a tokio::runtime::Handle),
}

impl<'a> Sink<'a> {
    fn new(
        args: &'a ProduceArgs,
        backend: &'a Backend,
        meta: &'a RecordMeta,
        handle: &'a tokio::runtime::Handle,
    ) -> anyhow::Result<Self> {
        let target = match backend {
            Backend::Dir(log) => SinkTarget::Dir(dir_topic(log, &args.topic)?),
            Backend::Url(client) => SinkTarget::Url(client, handle),
        };
        Ok(Sink {
            args,
            meta,
            target,
            produced: 0,
        })
    }

    fn send(&mut self, body: &[u8]) -> anyhow::Result<()> {
        match &self.target {
            SinkTarget::Dir(topic) => {
                let records: Vec<Record> =
                    wire::parse_records(Some(&self.args.content_type), body, self.meta)
                        .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
                let p = topic.partition_for(self.meta.key.as_deref());
                let partition = topic
                    .partition(p)
                    .with_context(|| format!("topic {} has no partition {p}", topic.name()))?;
                let appended = partition
                    .append(records)
                    .with_context(|| format!("appending to {}/{p}", topic.name()))?;
                self.produced += u64::from(appended.count);
            }
            SinkTarget::Url(client, handle) => {
                let mut headers = vec![("content-type", self.args.content_type.as_str())];
                if let Some(k) = &self.args.key {
                    headers.push(("x-key", k));
                }
                if let Some(t) = &self.args.event_time {
                    headers.push(("x-event-time", t));
                }
                let meta_names: Vec<(String, &str)> = self
                    .args
                    .headers
                    .iter()
                    .filter_map(|h| h.split_once('='))
                    .map(|(n, v)| (format!("x-meta-{}", n.trim()), v))
                    .collect();
                headers.extend(meta_names.iter().map(|(n, v)| (n.as_str(), *v)));
                let path = format!("/v1/topics/{}/records", self.args.topic);
                let response = handle.block_on(client.request(
                    Method::POST,
                    &path,
                    &headers,
                    body.to_vec(),
                ))?;
                let response = check(response, &format!("producing to {}", self.args.topic))?;
                let n = response.json()["offsets"].as_array().map_or(0, Vec::len);
                self.produced += n as u64;
            }
        }
        Ok(())
    }
}
