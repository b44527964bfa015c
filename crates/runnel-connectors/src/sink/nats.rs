//! `nats` as a sink: each row published to the table's `subject` in JetStream (its
//! descriptor and options are in `source/nats.rs`).
//!
//! With checkpoints it is exactly-once on the shared transactional-sink mechanism: a
//! checkpoint's messages are staged, and applied once it completes, each published with
//! the message id `<pipeline>/<table>/<task>/<subtask>/<checkpoint>/<n>`; an apply
//! repeated after a crash publishes the same ids, which JetStream drops as duplicates —
//! within the stream's duplicate window (`duplicate_window`, 2 minutes by default), so a
//! pipeline down for longer than that may repeat the batch it was applying. Without
//! checkpoints messages are published at once and their acknowledgements awaited at the
//! end (at least once).

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use async_nats::jetstream::{self, context::PublishAckFuture};
use async_trait::async_trait;
use bytes::Bytes;
use runnel_common::TableSpec;
use runnel_common::metrics::ConnectorMetrics;

use crate::format::csv::CsvEncoder;
use crate::format::json::JsonEncoder;
use crate::sink::log_txn;
use crate::source::nats::{CONNECTOR, NatsConfig, parse};
use crate::source::records::value_columns;
use crate::txn::{self, Apply, Staging, Txn};
use crate::{ConnectorError, Sink, SinkContext};

/// The rows of a batch as message payloads.
fn payloads(format: &str, rows: &RecordBatch) -> Result<Vec<Vec<u8>>, ConnectorError> {
    if format == "raw" {
        let col = rows.column(0);
        return Ok((0..rows.num_rows())
            .map(|i| {
                if col.is_null(i) {
                    Vec::new()
                } else if *col.data_type() == DataType::Binary {
                    col.as_binary::<i32>().value(i).to_vec()
                } else {
                    col.as_string::<i32>().value(i).as_bytes().to_vec()
                }
            })
            .collect());
    }
    let mut buf = Vec::new();
    if format == "csv" {
        CsvEncoder.encode(rows, &mut buf)?;
    } else {
        JsonEncoder.encode(rows, &mut buf)?;
    }
    Ok(buf
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// Publishes and waits for JetStream's acknowledgements.
struct Publisher {
    table: String,
    config: NatsConfig,
    js: tokio::sync::OnceCell<jetstream::Context>,
}

impl Publisher {
    async fn context(&self) -> Result<&jetstream::Context, ConnectorError> {
        self.js
            .get_or_try_init(|| async {
                let client =
                    self.config.connect().await.map_err(|e| {
                        ConnectorError::Other(format!("table '{}': {e}", self.table))
                    })?;
                Ok(jetstream::new(client))
            })
            .await
    }

    fn fail(&self, e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Other(format!(
            "table '{}': publishing to '{}' at {}: {e}",
            self.table, self.config.subject, self.config.shown
        ))
    }

    async fn send(
        &self,
        payload: Vec<u8>,
        id: Option<String>,
    ) -> Result<PublishAckFuture, ConnectorError> {
        let js = self.context().await?;
        let mut publish = jetstream::message::PublishMessage::build().payload(Bytes::from(payload));
        if let Some(id) = id {
            publish = publish.message_id(id);
        }
        js.send_publish(self.config.subject.clone(), publish)
            .await
            .map_err(|e| self.fail(e))
    }

    async fn settle(&self, acks: Vec<PublishAckFuture>) -> Result<(), ConnectorError> {
        for a in acks {
            a.await.map_err(|e| self.fail(e))?;
        }
        Ok(())
    }
}

/// The exactly-once step: a sealed batch is one checkpoint's payloads of one subtask.
struct NatsApply {
    publisher: Arc<Publisher>,
    id_prefix: String,
}

impl Apply for NatsApply {
    fn apply(&self, txn: &Txn, sealed: &Path) -> Result<(), ConnectorError> {
        let mut bytes = Vec::new();
        std::fs::File::open(sealed)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| ConnectorError::io(format!("reading '{}'", sealed.display()), e))?;
        let mut messages = Vec::new();
        let mut at = 0usize;
        while at + 4 <= bytes.len() {
            let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
                as usize;
            at += 4;
            let Some(m) = bytes.get(at..at + len) else {
                return Err(ConnectorError::Other(format!(
                    "staged batch '{}' is damaged",
                    sealed.display()
                )));
            };
            messages.push(m.to_vec());
            at += len;
        }
        let prefix = format!("{}{}/{}/", self.id_prefix, txn.subtask, txn.checkpoint);
        let publisher = self.publisher.clone();
        let (checkpoint, half) = (txn.checkpoint, messages.len() / 2);
        crate::io_runtime::wait(async move {
            let mut acks = Vec::with_capacity(messages.len().min(4096));
            for (i, m) in messages.into_iter().enumerate() {
                if i == half && i > 0 {
                    // Half of the batch is in the stream.
                    publisher.settle(std::mem::take(&mut acks)).await?;
                    runnel_common::fault::crash_point("mid-apply", checkpoint);
                }
                acks.push(publisher.send(m, Some(format!("{prefix}{i}"))).await?);
                if acks.len() >= 4096 {
                    publisher.settle(std::mem::take(&mut acks)).await?;
                }
            }
            publisher.settle(acks).await
        })?
    }
}

struct NatsSink {
    publisher: Arc<Publisher>,
    format: String,
    values: Vec<usize>,
    staging: Option<Staging>,
    acks: Vec<PublishAckFuture>,
    metrics: ConnectorMetrics,
    buf: Vec<u8>,
}

#[async_trait]
impl Sink for NatsSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        let rows = batch.project(&self.values)?;
        let messages = payloads(&self.format, &rows)?;
        self.metrics.rows.add(batch.num_rows() as u64);
        self.metrics
            .bytes
            .add(messages.iter().map(|m| m.len() as u64).sum());
        match self.staging.as_mut() {
            Some(staging) => {
                self.buf.clear();
                for m in &messages {
                    self.buf.extend_from_slice(&(m.len() as u32).to_le_bytes());
                    self.buf.extend_from_slice(m);
                }
                staging.write(&self.buf)
            }
            None => {
                for m in messages {
                    let ack = self.publisher.send(m, None).await?;
                    self.acks.push(ack);
                }
                if self.acks.len() >= 4096 {
                    self.publisher
                        .settle(std::mem::take(&mut self.acks))
                        .await?;
                }
                Ok(())
            }
        }
    }

    async fn pre_commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        match self.staging.as_mut() {
            Some(s) => s.seal(checkpoint),
            None => self.publisher.settle(std::mem::take(&mut self.acks)).await,
        }
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        let Some(staging) = self.staging.take() else {
            return Ok(());
        };
        let (staging, result) =
            crate::sink::log::blocking_with(staging, move |s| s.commit(checkpoint)).await?;
        self.staging = Some(staging);
        result
    }

    async fn finish(&mut self) -> Result<(), ConnectorError> {
        match self.staging.take() {
            Some(staging) => {
                crate::sink::log::blocking_with(staging, Staging::finish)
                    .await?
                    .1
            }
            None => self.publisher.settle(std::mem::take(&mut self.acks)).await,
        }
    }
}

pub(crate) fn build(
    spec: &TableSpec,
    contexts: Vec<SinkContext>,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
    CONNECTOR.check_options(spec)?;
    let config = parse(spec)?;
    if config.subject.contains(['*', '>']) {
        return Err(ConnectorError::Other(format!(
            "table '{}': option 'subject': a sink publishes to one subject, without * or > \
             wildcards",
            spec.name
        )));
    }
    let Some(first) = contexts.first() else {
        return Ok(Vec::new());
    };
    let publisher = Arc::new(Publisher {
        table: spec.name.clone(),
        config: config.clone(),
        js: tokio::sync::OnceCell::new(),
    });
    let staging = match first.checkpoint {
        None => None,
        Some(mode) => {
            let (stage_dir, safe) = log_txn::staging_dir(&first.data_dir, &spec.name);
            let apply = Arc::new(NatsApply {
                publisher: publisher.clone(),
                id_prefix: txn::commit_prefix(first, &safe),
            });
            txn::recover_with(
                &stage_dir,
                "",
                apply.as_ref(),
                mode,
                first.sealed.as_deref(),
            )?;
            Some((stage_dir, apply))
        }
    };
    let values = value_columns(spec);
    Ok(contexts
        .into_iter()
        .map(|ctx| {
            Box::new(NatsSink {
                publisher: publisher.clone(),
                format: config.format.clone(),
                values: values.clone(),
                staging: staging.as_ref().map(|(dir, apply)| {
                    Staging::new(
                        dir.clone(),
                        "",
                        ctx.subtask,
                        Vec::new(),
                        apply.clone() as Arc<dyn Apply>,
                    )
                    .with_mirror(ctx.sealed.clone())
                    .with_attempt(ctx.checkpoint.and_then(|m| m.attempt))
                }),
                acks: Vec::new(),
                metrics: ctx.metrics,
                buf: Vec::new(),
            }) as Box<dyn Sink>
        })
        .collect())
}
