//! `runnel consume TOPIC`: print records as NDJSON (the read endpoint's format), from
//! `--data-dir` directly or through a running server (`--url`); with `--group`, start at
//! and commit the group's offsets so a second run does not repeat records.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::http::Method;
use clap::Args;
use runnel_log::{Log, Topic};
use runnel_server::client::HttpClient;
use runnel_server::wire;

use crate::cmd::topics::{Backend, Target, check, close_log, dir_topic};

/// Records fetched per read call.
const PAGE: usize = 1000;

/// `runnel consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read
    pub topic: String,
    /// Start at the oldest record when the group has no committed offset (default: only new records)
    #[arg(long)]
    pub from_beginning: bool,
    /// Consumer group: start at its committed offsets and commit what was printed
    #[arg(long, short)]
    pub group: Option<String>,
    /// Stop after this many records
    #[arg(long, short = 'n')]
    pub max: Option<u64>,
    /// Read only this partition (default: all, one after another)
    #[arg(long, short)]
    pub partition: Option<u32>,
    /// Keep waiting for new records (until Ctrl-C or --max) instead of stopping at the end
    #[arg(long, short)]
    pub follow: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: Target,
}

/// Runs `runnel consume`.
pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.store(true, Ordering::Relaxed);
        }
    });
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let backend = args.target.open()?;
        let mut source: Box<dyn PartitionSource + '_> = match &backend {
            Backend::Dir(log) => Box::new(DirSource {
                log,
                topic: dir_topic(log, &args.topic)?,
            }),
            Backend::Url(client) => Box::new(UrlSource::new(client, &handle, &args.topic)?),
        };
        let result = run(&args, source.as_mut(), &stop);
        drop(source);
        if let Backend::Dir(log) = backend {
            close_log(log)?;
        }
        result
    })
    .await
    .context("the consume task failed")?
}

/// Reading and committing, over the log or over HTTP.
trait PartitionSource {
    /// Number of partitions of the topic.
    fn partitions(&self) -> u32;
    /// (start, end) offsets of `partition`.
    fn bounds(&mut self, partition: u32) -> anyhow::Result<(u64, u64)>;
    /// The offset `group` committed, if any.
    fn committed(&mut self, group: &str, partition: u32) -> anyhow::Result<Option<u64>>;
    /// Up to `max` records from `offset` as NDJSON lines, and the offset after them.
    fn read(
        &mut self,
        partition: u32,
        offset: u64,
        max: usize,
    ) -> anyhow::Result<(Vec<String>, u64)>;
    /// Durably records that `group` continues at `offset`.
    fn commit(&mut self, group: &str, partition: u32, offset: u64) -> anyhow::Result<()>;
}

fn run(
    args: &ConsumeArgs,
    source: &mut dyn PartitionSource,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let partitions: Vec<u32> = match args.partition {
        Some(p) if p < source.partitions() => vec![p],
        Some(p) => bail!(
            "topic {} has no partition {p} (it has {})",
            args.topic,
            source.partitions()
        ),
        None => (0..source.partitions()).collect(),
    };
    let mut next = Vec::with_capacity(partitions.len());
    for &p in &partitions {
        let (start, end) = source.bounds(p)?;
        let committed = match &args.group {
            Some(g) => source.committed(g, p)?,
            None => None,
        };
        // A committed offset retention has since deleted restarts at the oldest record.
        next.push(
            committed.map_or(if args.from_beginning { start } else { end }, |c| {
                c.clamp(start, end)
            }),
        );
    }
    let mut remaining = args.max.unwrap_or(u64::MAX);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    loop {
        let mut progressed = false;
        for (i, &p) in partitions.iter().enumerate() {
            while remaining > 0 && !stop.load(Ordering::Relaxed) {
                let want = usize::try_from(remaining.min(PAGE as u64)).unwrap_or(PAGE);
                let (lines, after) = source.read(p, next[i], want)?;
                if lines.is_empty() {
                    break;
                }
                for line in &lines {
                    writeln!(out, "{line}").context("writing to stdout")?;
                }
                out.flush().context("writing to stdout")?;
                remaining = remaining.saturating_sub(lines.len() as u64);
                next[i] = after;
                progressed = true;
                // Commit after printing: a crash in between repeats records, never skips them.
                if let Some(g) = &args.group {
                    source.commit(g, p, after)?;
                }
            }
        }
        if !args.follow || remaining == 0 || stop.load(Ordering::Relaxed) {
            break;
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

struct DirSource<'a> {
    log: &'a Log,
    topic: Arc<Topic>,
}

impl DirSource<'_> {
    fn partition(&self, p: u32) -> anyhow::Result<&runnel_log::Partition> {
        self.topic
            .partition(p)
            .with_context(|| format!("topic {} has no partition {p}", self.topic.name()))
    }
}

impl PartitionSource for DirSource<'_> {
    fn partitions(&self) -> u32 {
        self.topic.partition_count()
    }

    fn bounds(&mut self, partition: u32) -> anyhow::Result<(u64, u64)> {
        let p = self.partition(partition)?;
        Ok((p.start_offset(), p.end_offset()))
    }

    fn committed(&mut self, group: &str, partition: u32) -> anyhow::Result<Option<u64>> {
        Ok(self
            .log
            .committed_offset(group, self.topic.name(), partition))
    }

    fn read(
        &mut self,
        partition: u32,
        offset: u64,
        max: usize,
    ) -> anyhow::Result<(Vec<String>, u64)> {
        let records = self.partition(partition)?.read(offset, max, 32 << 20)?;
        let after = records.last().map_or(offset, |r| r.offset + 1);
        Ok((
            records
                .iter()
                .map(|r| wire::record_json(partition, r))
                .collect(),
            after,
        ))
    }

    fn commit(&mut self, group: &str, partition: u32, offset: u64) -> anyhow::Result<()> {
        Ok(self
            .log
            .commit_offset(group, self.topic.name(), partition, offset)?)
    }
}

struct UrlSource<'a> {
    client: &'a HttpClient,
    handle: &'a tokio::runtime::Handle,
    topic: String,
    partitions: u32,
}

impl<'a> UrlSource<'a> {
    fn new(
        client: &'a HttpClient,
        handle: &'a tokio::runtime::Handle,
        topic: &str,
    ) -> anyhow::Result<Self> {
        let mut s = UrlSource {
            client,
            handle,
            topic: topic.to_owned(),
            partitions: 0,
        };
        let d = s.get(&format!("/v1/topics/{topic}"))?;
        s.partitions = d["partitions"].as_array().map_or(0, |p| p.len() as u32);
        Ok(s)
    }

    fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let r = self
            .handle
            .block_on(self.client.request(Method::GET, path, &[], ""))?;
        Ok(check(r, &format!("GET {path}"))?.json())
    }
}

impl PartitionSource for UrlSource<'_> {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn bounds(&mut self, partition: u32) -> anyhow::Result<(u64, u64)> {
        let d = self.get(&format!("/v1/topics/{}", self.topic))?;
        let p = &d["partitions"][partition as usize];
        match (p["start_offset"].as_u64(), p["end_offset"].as_u64()) {
            (Some(s), Some(e)) => Ok((s, e)),
            _ => bail!(
                "the server did not describe partition {partition} of {}",
                self.topic
            ),
        }
    }

    fn committed(&mut self, group: &str, partition: u32) -> anyhow::Result<Option<u64>> {
        let d = self.get(&format!("/v1/groups/{group}/offsets"))?;
        Ok(d["offsets"].as_array().into_iter().flatten().find_map(|o| {
            (o["topic"] == self.topic.as_str() && o["partition"] == partition)
                .then(|| o["offset"].as_u64())
                .flatten()
        }))
    }

    fn read(
        &mut self,
        partition: u32,
        offset: u64,
        max: usize,
    ) -> anyhow::Result<(Vec<String>, u64)> {
        let path = format!(
            "/v1/topics/{}/records?partition={partition}&offset={offset}&max={max}",
            self.topic
        );
        let r = self
            .handle
            .block_on(self.client.request(Method::GET, &path, &[], ""))?;
        let r = check(r, &format!("reading {}/{partition}", self.topic))?;
        let after = r
            .headers
            .get("x-next-offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .context("the server's answer lacks X-Next-Offset")?;
        Ok((r.text().lines().map(str::to_owned).collect(), after))
    }

    fn commit(&mut self, group: &str, partition: u32, offset: u64) -> anyhow::Result<()> {
        let body =
            serde_json::json!({ "topic": self.topic, "partition": partition, "offset": offset });
        let path = format!("/v1/groups/{group}/offsets");
        let r = self.handle.block_on(self.client.request(
            Method::POST,
            &path,
            &[("content-type", "application/json")],
            body.to_string(),
        ))?;
        check(r, &format!("committing {group}'s offset"))?;
        Ok(())
    }
}
