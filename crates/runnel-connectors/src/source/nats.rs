//! `nats`: NATS JetStream. Its sink lives in `sink/nats.rs`.
//!
//! As a source, one subtask reads the `stream` through a durable pull consumer
//! (`consumer`, default `runnel-<table>`, filtered by `subject`); with checkpoints each
//! message is acknowledged when the checkpoint covering it completes, so after a crash
//! the consumer redelivers what was not (once `ack-wait` has passed): at least once.
//! Without checkpoints messages are acknowledged on receipt. `METADATA FROM 'subject'`
//! (STRING), `'sequence'` (BIGINT, the stream sequence) and `'timestamp'`
//! (TIMESTAMP_LTZ(3), when the stream stored it) come from the message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, SchemaRef};
use async_nats::jetstream::{self, AckKind, consumer::pull};
use async_trait::async_trait;
use futures::StreamExt as _;
use runnel_common::TableSpec;
use runnel_log::StoredRecord;
use tokio::sync::mpsc;

use crate::descriptor::{
    self, CheckContext, CheckFuture, Connector, Guarantee, OptionDef, OptionType, Role,
};
use crate::source::records::RecordDecoder;
use crate::{ConnectorError, Source, SourceContext, SourcePoll};

const NAME: &str = "nats";

/// `connector = 'nats'`.
pub const CONNECTOR: Connector = Connector {
    name: NAME,
    doc: "NATS JetStream: a stream read through a durable pull consumer (acknowledged when \
          the checkpoint completes), or rows published exactly once (message ids within the \
          stream's duplicate window)",
    options: &[
        OptionDef::new(
            "url",
            OptionType::Text,
            "nats://[user:password@]host[:port] (port 4222 by default)",
        )
        .required(),
        OptionDef::new(
            "subject",
            OptionType::Text,
            "source: the consumer's filter subject (wildcards * and >); sink: the subject",
        )
        .required(),
        OptionDef::new(
            "stream",
            OptionType::Text,
            "the JetStream stream (a source reads it; a sink checks it exists and \
             captures the subject)",
        ),
        OptionDef::new(
            "consumer",
            OptionType::Text,
            "the durable consumer's name (default runnel-<table>)",
        )
        .source_only(),
        OptionDef::new(
            "ack-wait",
            OptionType::Text,
            "how long JetStream waits for an acknowledgement before it redelivers; must \
             exceed the checkpoint interval",
        )
        .default("30 s")
        .source_only(),
        OptionDef::new(
            "format",
            OptionType::Choice(&["json", "csv", "raw"]),
            "payload encoding (raw: the payload is the column `value`, STRING or BYTES)",
        )
        .default("json"),
    ],
    source: Some(build_source),
    sink: Some(crate::sink::nats::build),
    unbounded: descriptor::always_unbounded,
    guarantee: Guarantee::ExactlyOnce,
    updates: descriptor::append_only,
    needs: &[],
    validate,
    check,
    metadata: &["subject", "sequence", "timestamp"],
    upserts: false,
    lookup: None,
};

/// A table's server settings.
#[derive(Clone)]
pub(crate) struct NatsConfig {
    /// `host:port`.
    pub(crate) address: String,
    /// `nats://host:port`, for messages.
    pub(crate) shown: String,
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) subject: String,
    pub(crate) stream: Option<String>,
    pub(crate) consumer: Option<String>,
    pub(crate) ack_wait: Duration,
    pub(crate) format: String,
}

pub(crate) fn parse(spec: &TableSpec) -> Result<NatsConfig, ConnectorError> {
    let o = &spec.options;
    let bad = |key: &str, why: String| {
        ConnectorError::Other(format!("table '{}': option '{key}': {why}", spec.name))
    };
    let url = o.get("url").unwrap_or_default().trim();
    let Some(rest) = url.strip_prefix("nats://") else {
        return Err(bad(
            "url",
            format!("expected nats://host[:port] (TLS is not built in yet), got '{url}'"),
        ));
    };
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let address = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:4222")
    };
    let credentials = userinfo.map(|u| match u.split_once(':') {
        Some((user, pass)) => (user.to_string(), pass.to_string()),
        None => (u.to_string(), String::new()),
    });
    let subject = o.get("subject").unwrap_or_default().trim().to_string();
    if subject.is_empty() {
        return Err(bad("subject", "is empty".into()));
    }
    let ack_wait = o.get("ack-wait").unwrap_or("30 s");
    let ack_wait = runnel_common::time::parse_duration_ms(ack_wait)
        .filter(|ms| *ms >= 1000)
        .map(|ms| Duration::from_millis(ms as u64))
        .ok_or_else(|| {
            bad(
                "ack-wait",
                format!("'{ack_wait}' is not a duration of 1 s or more"),
            )
        })?;
    Ok(NatsConfig {
        shown: format!("nats://{address}"),
        address,
        credentials,
        subject,
        stream: o.get("stream").map(str::to_string),
        consumer: o.get("consumer").map(str::to_string),
        ack_wait,
        format: o.get("format").unwrap_or("json").to_string(),
    })
}

impl NatsConfig {
    pub(crate) async fn connect(&self) -> Result<async_nats::Client, ConnectorError> {
        let options = match &self.credentials {
            Some((u, p)) => {
                async_nats::ConnectOptions::with_user_and_password(u.clone(), p.clone())
            }
            None => async_nats::ConnectOptions::new(),
        }
        .connection_timeout(Duration::from_secs(10))
        .retry_on_initial_connect();
        let connect = options.connect(self.address.as_str());
        let client = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| {
                ConnectorError::Other(format!(
                    "cannot reach the NATS server at {}: no answer within 10 s",
                    self.shown
                ))
            })?
            .map_err(|e| {
                ConnectorError::Other(format!(
                    "cannot connect to the NATS server at {}: {e}",
                    self.shown
                ))
            })?;
        // `retry_on_initial_connect` returns at once: wait for the connection.
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.connection_state() != async_nats::connection::State::Connected {
            if Instant::now() > deadline {
                return Err(ConnectorError::Other(format!(
                    "cannot reach the NATS server at {}: not connected within 10 s",
                    self.shown
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(client)
    }
}

fn validate(spec: &TableSpec) -> Result<(), ConnectorError> {
    let config = parse(spec)?;
    for m in &spec.metadata {
        let dt = spec.schema.field(m.column).data_type();
        let ok = match m.key.as_str() {
            "subject" => *dt == DataType::Utf8,
            "sequence" => *dt == DataType::Int64,
            "timestamp" => matches!(dt, DataType::Timestamp(..)),
            _ => false,
        };
        if !ok {
            return Err(ConnectorError::Type {
                table: spec.name.clone(),
                column: spec.schema.field(m.column).name().clone(),
                data_type: runnel_common::types::sql_name(dt),
                reason: format!(
                    "cannot hold NATS metadata '{}' (subject: STRING, sequence: BIGINT, \
                     timestamp: TIMESTAMP_LTZ(3))",
                    m.key
                ),
            });
        }
    }
    if config.format == "raw" {
        crate::source::records::check_raw_layout(spec, "NATS")?;
    }
    Ok(())
}

/// The server answers, and the stream exists (a source needs it; a sink's messages
/// must be captured by one).
fn check(spec: TableSpec, role: Role, _: CheckContext) -> CheckFuture {
    Box::pin(async move {
        let config = parse(&spec)?;
        let client = config
            .connect()
            .await
            .map_err(|e| ConnectorError::Other(format!("table '{}': {e}", spec.name)))?;
        let js = jetstream::new(client);
        match (&config.stream, role) {
            (None, Role::Sink) => Ok(()),
            (None, _) => Err(ConnectorError::Other(format!(
                "table '{}': option 'stream' is required to read from NATS JetStream",
                spec.name
            ))),
            (Some(stream), _) => js.get_stream(stream).await.map(|_| ()).map_err(|e| {
                ConnectorError::Other(format!(
                    "table '{}': the JetStream stream '{stream}' at {}: {e}",
                    spec.name, config.shown
                ))
            }),
        }
    })
}

/// One message waiting for its acknowledgement.
type Acker = async_nats::jetstream::message::Acker;

struct NatsSource {
    table: String,
    schema: SchemaRef,
    layout: Vec<Column>,
    decoder: RecordDecoder,
    batch_size: usize,
    messages: Option<mpsc::Receiver<async_nats::jetstream::Message>>,
    manual_acks: bool,
    acks: crate::source::records::AckBook<Acker>,
    metrics: runnel_common::metrics::ConnectorMetrics,
}

#[derive(Clone, Copy)]
enum Column {
    Value(usize),
    Subject,
    Sequence,
    Stored,
}

#[async_trait]
impl Source for NatsSource {
    async fn poll(&mut self) -> Result<SourcePoll, ConnectorError> {
        let Some(rx) = self.messages.as_mut() else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Ok(SourcePoll::Pending);
        };
        let Some(got) =
            crate::source::records::recv_batch(rx, self.batch_size, Duration::from_millis(50))
                .await
        else {
            return Err(ConnectorError::Other(format!(
                "table '{}': the NATS consumer task ended",
                self.table
            )));
        };
        if got.is_empty() {
            return Ok(SourcePoll::Pending);
        }
        let mut infos = Vec::with_capacity(got.len());
        let mut records = Vec::with_capacity(got.len());
        let mut ackers = Vec::with_capacity(got.len());
        for m in got {
            let (seq, stored) = m
                .info()
                .map(|i| {
                    (
                        i.stream_sequence as i64,
                        (i.published.unix_timestamp_nanos() / 1_000_000) as i64,
                    )
                })
                .unwrap_or((0, runnel_common::time::now_ms()));
            let (message, acker) = m.split();
            infos.push((message.subject.to_string(), seq, stored));
            records.push(StoredRecord {
                offset: seq as u64,
                timestamp: stored,
                event_time: None,
                key: None,
                value: message.payload.to_vec(),
                headers: Vec::new(),
            });
            ackers.push(acker);
        }
        let reads: Vec<(u32, &StoredRecord)> = records.iter().map(|r| (0, r)).collect();
        let (decoded, kept) = self.decoder.decode_kept(&infos[0].0, &reads).await?;
        self.metrics
            .bytes
            .add(records.iter().map(|r| r.value.len() as u64).sum());
        let kept_infos: Vec<&(String, i64, i64)> = infos
            .iter()
            .zip(&kept)
            .filter(|(_, k)| **k)
            .map(|(i, _)| i)
            .collect();
        let batch = match decoded {
            Some(values) if values.num_rows() > 0 => {
                let columns: Vec<ArrayRef> = self
                    .layout
                    .iter()
                    .map(|c| match c {
                        Column::Value(i) => values.column(*i).clone(),
                        Column::Subject => Arc::new(StringArray::from_iter_values(
                            kept_infos.iter().map(|i| i.0.as_str()),
                        )) as ArrayRef,
                        Column::Sequence => {
                            Arc::new(Int64Array::from_iter_values(kept_infos.iter().map(|i| i.1)))
                        }
                        Column::Stored => Arc::new(TimestampMillisecondArray::from_iter_values(
                            kept_infos.iter().map(|i| i.2),
                        )),
                    })
                    .collect();
                Some(crate::source::records::assemble(&self.schema, columns)?)
            }
            _ => None,
        };
        if self.manual_acks {
            self.acks.hold(ackers);
        } else {
            for a in ackers {
                let _ = a.ack_with(AckKind::Ack).await;
            }
        }
        match batch {
            Some(b) => {
                self.metrics.rows.add(b.num_rows() as u64);
                Ok(SourcePoll::Batch(b))
            }
            None => Ok(SourcePoll::Pending),
        }
    }

    fn checkpoint_barrier(&mut self, checkpoint: u64) {
        self.acks.barrier(checkpoint);
    }

    async fn checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        for a in self.acks.complete(checkpoint) {
            // A lost acknowledgement only means a redelivery (at least once).
            if let Err(e) = a.ack_with(AckKind::Ack).await {
                tracing::warn!(table = %self.table, "acknowledging a NATS message: {e}");
            }
        }
        Ok(())
    }
}

/// Pulls messages from the durable consumer into `tx`, re-creating the pull on errors.
async fn drive(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    tx: mpsc::Sender<async_nats::jetstream::Message>,
    metrics: runnel_common::metrics::ConnectorMetrics,
    table: String,
    shown: String,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match consumer.messages().await {
            Ok(mut messages) => {
                while let Some(m) = messages.next().await {
                    match m {
                        Ok(m) => {
                            backoff = Duration::from_secs(1);
                            metrics.clear_problem();
                            if tx.send(m).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let problem = format!("reading from NATS at {shown}: {e}");
                            tracing::warn!(table = %table, "{problem}");
                            metrics.set_problem(problem);
                        }
                    }
                }
            }
            Err(e) => {
                if tx.is_closed() {
                    return;
                }
                let problem = format!("NATS at {shown} unreachable ({e}); retrying in {backoff:?}");
                tracing::warn!(table = %table, "{problem}");
                metrics.set_problem(problem);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn build_source(
    spec: &TableSpec,
    contexts: Vec<SourceContext>,
) -> Result<Vec<Box<dyn Source>>, ConnectorError> {
    CONNECTOR.check_options(spec)?;
    validate(spec)?;
    let config = parse(spec)?;
    let Some(stream) = config.stream.clone() else {
        return Err(ConnectorError::Other(format!(
            "table '{}': option 'stream' is required to read from NATS JetStream",
            spec.name
        )));
    };
    let positions = crate::source::records::value_positions(spec);
    let layout: Vec<Column> = (0..spec.schema.fields().len())
        .map(|i| match spec.metadata_of(i).map(|m| m.key.as_str()) {
            Some("subject") => Column::Subject,
            Some("sequence") => Column::Sequence,
            Some("timestamp") => Column::Stored,
            _ => Column::Value(positions[i].unwrap_or(0)),
        })
        .collect();
    let mut out: Vec<Box<dyn Source>> = Vec::with_capacity(contexts.len());
    for ctx in contexts {
        let decoder = crate::source::records::payload_decoder(spec, &config.format, &ctx)?;
        let messages = if ctx.subtask == 0 {
            let (tx, rx) = mpsc::channel(4096);
            let (config, stream, table, metrics) = (
                config.clone(),
                stream.clone(),
                spec.name.clone(),
                ctx.metrics.clone(),
            );
            let durable = config
                .consumer
                .clone()
                .unwrap_or_else(|| crate::source::records::safe_id(&format!("runnel-{table}")));
            tokio::spawn(async move {
                let shown = config.shown.clone();
                let consumer = loop {
                    let made = async {
                        let client = config.connect().await?;
                        let js = jetstream::new(client);
                        let s = js.get_stream(&stream).await.map_err(|e| {
                            ConnectorError::Other(format!("the stream '{stream}': {e}"))
                        })?;
                        s.get_or_create_consumer(
                            &durable,
                            pull::Config {
                                durable_name: Some(durable.clone()),
                                filter_subject: config.subject.clone(),
                                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                                ack_wait: config.ack_wait,
                                max_ack_pending: 100_000,
                                ..Default::default()
                            },
                        )
                        .await
                        .map_err(|e| {
                            ConnectorError::Other(format!("the consumer '{durable}': {e}"))
                        })
                    };
                    match made.await {
                        Ok(c) => break c,
                        Err(e) => {
                            let problem = format!("NATS at {shown}: {e}; retrying in 2 s");
                            tracing::warn!(table = %table, "{problem}");
                            metrics.set_problem(problem);
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            if tx.is_closed() {
                                return;
                            }
                        }
                    }
                };
                drive(consumer, tx, metrics, table, shown).await;
            });
            Some(rx)
        } else {
            None
        };
        out.push(Box::new(NatsSource {
            table: spec.name.clone(),
            schema: spec.schema.clone(),
            layout: layout.clone(),
            decoder,
            batch_size: ctx.batch_size.max(1),
            messages,
            manual_acks: ctx.checkpointing,
            acks: Default::default(),
            metrics: ctx.metrics.clone(),
        }));
    }
    Ok(out)
}
