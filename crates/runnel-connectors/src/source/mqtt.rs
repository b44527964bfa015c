//! `mqtt`: an MQTT 3.1.1 broker (Mosquitto, EMQX, HiveMQ …), read with topic wildcards
//! (`+`, `#`; several filters separated by `;`) and written to one topic.
//!
//! As a source, one subtask holds the subscription (the others stay idle). With
//! checkpoints it runs a persistent session (`clean session` off, the client id stable
//! across restarts) with manual acknowledgements: a QoS 1 message is acknowledged only
//! when the checkpoint that covers it completes, so a crash before that has the broker
//! deliver it again (at least once). The broker limits the unacknowledged messages it
//! sends a client (Mosquitto's `max_inflight_messages`, 20 by default): raise it (0 is
//! unlimited) for more than that many messages per checkpoint interval. Without
//! checkpoints messages are acknowledged on receipt. The connection is re-established
//! with backoff (1 s doubling to 30 s) and the outage shown on the page and at `/metrics`.
//!
//! The payload is decoded by `format` (`json`, `csv` or `raw`); `METADATA FROM 'topic'`
//! (STRING), `'qos'` (INT), `'retain'` (BOOLEAN) and `'timestamp'` (TIMESTAMP_LTZ(3) or
//! TIMESTAMP(3): when runnel received it; MQTT 3.1.1 carries no time) columns are filled
//! from the message.
//! Undecodable payloads go to the dead letters with their topic.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, BooleanArray, Int32Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport,
};
use runnel_common::TableSpec;
use runnel_log::StoredRecord;
use tokio::sync::mpsc;

use crate::descriptor::{
    self, CheckContext, CheckFuture, Connector, Guarantee, OptionDef, OptionType, Role,
};
use crate::source::records::RecordDecoder;
use crate::{ConnectorError, Source, SourceContext, SourcePoll};

const NAME: &str = "mqtt";

/// `connector = 'mqtt'`.
pub const CONNECTOR: Connector = Connector {
    name: NAME,
    doc: "an MQTT 3.1.1 broker: topics with + and # wildcards read in a persistent session \
          (QoS 1 acknowledged when the checkpoint completes), or rows published to a topic",
    options: &[
        OptionDef::new(
            "url",
            OptionType::Text,
            "mqtt://[user:password@]host[:port] (port 1883 by default), or mqtts://… for TLS \
             (port 8883; the server certificate checked against the system's CAs or \
             'tls.ca-file')",
        )
        .required(),
        OptionDef::new(
            "tls.ca-file",
            OptionType::Text,
            "mqtts: trust the CA certificates in this PEM file instead of the system's CAs",
        ),
        OptionDef::new(
            "tls.cert-file",
            OptionType::Text,
            "mqtts: present this PEM certificate chain to the broker (mutual TLS; with \
             'tls.key-file')",
        ),
        OptionDef::new(
            "tls.key-file",
            OptionType::Text,
            "mqtts: the PEM private key of 'tls.cert-file'",
        ),
        OptionDef::new(
            "topic",
            OptionType::Text,
            "source: topic filters with + and # wildcards, separated by ';'; sink: the topic",
        )
        .required(),
        OptionDef::new(
            "qos",
            OptionType::Choice(&["0", "1"]),
            "quality of service of the subscription or of published messages",
        )
        .default("1"),
        OptionDef::new(
            "client-id",
            OptionType::Text,
            "the client id (default runnel-<pipeline>-<table>, plus -sink for a sink); a \
             source's session is kept under it",
        ),
        OptionDef::new(
            "username",
            OptionType::Text,
            "user name (overrides the URL's)",
        ),
        OptionDef::new(
            "password",
            OptionType::Text,
            "password (overrides the URL's; never printed)",
        ),
        OptionDef::new(
            "format",
            OptionType::Choice(&["json", "csv", "raw"]),
            "payload encoding (raw: the payload is the column `value`, STRING or BYTES)",
        )
        .default("json"),
        OptionDef::new(
            "retain",
            OptionType::Bool,
            "published messages are retained by the broker",
        )
        .default("false")
        .sink_only(),
        OptionDef::new("keep-alive", OptionType::Text, "MQTT keep-alive interval").default("30 s"),
    ],
    source: Some(build_source),
    sink: Some(crate::sink::mqtt::build),
    unbounded: descriptor::always_unbounded,
    guarantee: Guarantee::AtLeastOnce,
    updates: descriptor::append_only,
    needs: &[],
    validate,
    check,
    metadata: &["topic", "qos", "retain", "timestamp"],
    upserts: false,
    lookup: None,
};

/// A table's broker settings.
#[derive(Clone)]
pub(crate) struct MqttConfig {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// For `mqtts://`: how the broker's certificate is checked.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    /// `mqtt[s]://host:port`, for messages.
    pub(crate) shown: String,
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) topics: Vec<String>,
    pub(crate) qos: QoS,
    pub(crate) client_id: Option<String>,
    pub(crate) keep_alive: Duration,
    pub(crate) format: String,
    pub(crate) retain: bool,
}

pub(crate) fn parse(spec: &TableSpec) -> Result<MqttConfig, ConnectorError> {
    let o = &spec.options;
    let bad = |key: &str, why: String| {
        ConnectorError::Other(format!("table '{}': option '{key}': {why}", spec.name))
    };
    let url = o.get("url").unwrap_or_default().trim();
    let Endpoint {
        host,
        port,
        tls,
        mut credentials,
    } = endpoint(url).map_err(|why| bad("url", why))?;
    let tls_files = runnel_common::tls::ClientFiles {
        ca: o.get("tls.ca-file").map(std::path::PathBuf::from),
        cert: o.get("tls.cert-file").map(std::path::PathBuf::from),
        key: o.get("tls.key-file").map(std::path::PathBuf::from),
    };
    let tls = if tls {
        Some(
            runnel_common::tls::client_config(&tls_files, &format!("table '{}'", spec.name))
                .map_err(ConnectorError::Other)?,
        )
    } else if tls_files != runnel_common::tls::ClientFiles::default() {
        return Err(bad(
            "url",
            "the tls.* options need an mqtts:// URL".to_string(),
        ));
    } else {
        None
    };
    if let Some(user) = o.get("username") {
        let pass = credentials.map(|(_, p)| p).unwrap_or_default();
        credentials = Some((user.to_string(), pass));
    }
    if let Some(pass) = o.get("password") {
        let user = credentials.map(|(u, _)| u).unwrap_or_default();
        credentials = Some((user, pass.to_string()));
    }
    let topics: Vec<String> = o
        .get("topic")
        .unwrap_or_default()
        .split(';')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    if topics.is_empty() {
        return Err(bad("topic", "is empty".into()));
    }
    let keep_alive = o.get("keep-alive").unwrap_or("30 s");
    let keep_alive = runnel_common::time::parse_duration_ms(keep_alive)
        .filter(|ms| *ms >= 1000)
        .map(|ms| Duration::from_millis(ms as u64))
        .ok_or_else(|| {
            bad(
                "keep-alive",
                format!("'{keep_alive}' is not a duration of 1 s or more"),
            )
        })?;
    Ok(MqttConfig {
        shown: format!(
            "{}://{host}:{port}",
            if tls.is_some() { "mqtts" } else { "mqtt" }
        ),
        host,
        port,
        tls,
        credentials,
        topics,
        qos: if o.get("qos") == Some("0") {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        },
        client_id: o.get("client-id").map(str::to_string),
        keep_alive,
        format: o.get("format").unwrap_or("json").to_string(),
        retain: o.get("retain") == Some("true"),
    })
}

impl MqttConfig {
    pub(crate) fn options(&self, client_id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, self.host.clone(), self.port);
        options.set_keep_alive(self.keep_alive);
        options.set_max_packet_size(64 << 20, 64 << 20);
        if let Some((user, pass)) = &self.credentials {
            options.set_credentials(user.clone(), pass.clone());
        }
        if let Some(tls) = &self.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        options
    }
}

/// Where a broker URL points.
struct Endpoint {
    host: String,
    port: u16,
    tls: bool,
    credentials: Option<(String, String)>,
}

/// `mqtt[s]://[user[:password]@]host[:port]` (also `tcp://` and `ssl://`).
fn endpoint(url: &str) -> Result<Endpoint, String> {
    let (rest, tls) = if let Some(r) = url.strip_prefix("mqtt://").or(url.strip_prefix("tcp://")) {
        (r, false)
    } else if let Some(r) = url.strip_prefix("mqtts://").or(url.strip_prefix("ssl://")) {
        (r, true)
    } else {
        // The URL may carry a password: show only its scheme.
        let why = match url.split_once("://") {
            Some((scheme, _)) => format!("'{scheme}://' is not an MQTT scheme"),
            None => "it has no scheme".to_string(),
        };
        return Err(format!(
            "expected mqtt://host[:port] or mqtts://host[:port]: {why}"
        ));
    };
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse::<u16>()
                .map_err(|_| format!("'{p}' is not a port"))?,
        ),
        None => (hostport.to_string(), if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    let credentials = userinfo.map(|u| match u.split_once(':') {
        Some((user, pass)) => (user.to_string(), pass.to_string()),
        None => (u.to_string(), String::new()),
    });
    Ok(Endpoint {
        host,
        port,
        tls,
        credentials,
    })
}

/// Client options for a broker URL (`mqtt://` or `mqtts://`, checked against the
/// system's CAs or `ca_file`), for tools that publish outside a pipeline
/// (`runnel camera-sim --mqtt`). Returns the options and the URL as shown in messages.
///
/// # Errors
/// The URL is malformed or the CA file cannot be read.
pub fn client_options(
    url: &str,
    client_id: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<(MqttOptions, String), String> {
    let e = endpoint(url)?;
    let files = runnel_common::tls::ClientFiles {
        ca: ca_file.map(std::path::Path::to_path_buf),
        ..Default::default()
    };
    let config = MqttConfig {
        shown: format!(
            "{}://{}:{}",
            if e.tls { "mqtts" } else { "mqtt" },
            e.host,
            e.port
        ),
        tls: if e.tls {
            Some(runnel_common::tls::client_config(&files, "--mqtt")?)
        } else {
            None
        },
        host: e.host,
        port: e.port,
        credentials: e.credentials,
        topics: Vec::new(),
        qos: QoS::AtLeastOnce,
        client_id: None,
        keep_alive: Duration::from_secs(30),
        format: "raw".into(),
        retain: false,
    };
    Ok((config.options(client_id), config.shown))
}

pub(crate) use crate::source::records::safe_id as client_id;

fn validate(spec: &TableSpec) -> Result<(), ConnectorError> {
    let config = parse(spec)?;
    for m in &spec.metadata {
        let dt = spec.schema.field(m.column).data_type();
        let ok = match m.key.as_str() {
            "topic" => *dt == DataType::Utf8,
            "qos" => matches!(dt, DataType::Int32 | DataType::Int64),
            "retain" => *dt == DataType::Boolean,
            "timestamp" => matches!(dt, DataType::Timestamp(..)),
            _ => false,
        };
        if !ok {
            return Err(ConnectorError::Type {
                table: spec.name.clone(),
                column: spec.schema.field(m.column).name().clone(),
                data_type: runnel_common::types::sql_name(dt),
                reason: format!(
                    "cannot hold MQTT metadata '{}' (topic: STRING, qos: INT, retain: \
                     BOOLEAN, timestamp: TIMESTAMP_LTZ(3))",
                    m.key
                ),
            });
        }
    }
    if config.format == "raw" {
        crate::source::records::check_raw_layout(spec, "MQTT")?;
    }
    Ok(())
}

/// The broker answers a connection (and, for a sink, the topic has no wildcard).
fn check(spec: TableSpec, role: Role, _: CheckContext) -> CheckFuture {
    Box::pin(async move {
        let config = parse(&spec)?;
        if role == Role::Sink && config.topics.iter().any(|t| t.contains(['+', '#'])) {
            return Err(ConnectorError::Other(format!(
                "table '{}': option 'topic': a sink publishes to one topic, without + or # \
                 wildcards",
                spec.name
            )));
        }
        let id = client_id(&format!("runnel-check-{}", std::process::id()));
        let (client, mut eventloop) = AsyncClient::new(config.options(&id), 10);
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await;
        let _ = client.disconnect().await;
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ConnectorError::Other(format!(
                "table '{}': cannot connect to the MQTT broker at {}: {e}",
                spec.name, config.shown
            ))),
            Err(_) => Err(ConnectorError::Other(format!(
                "table '{}': the MQTT broker at {} did not answer within 10 s",
                spec.name, config.shown
            ))),
        }
    })
}

pub(crate) use crate::source::records::value_columns;

/// One subtask of the source. Subtask 0 holds the subscription.
struct MqttSource {
    table: String,
    schema: SchemaRef,
    /// Per column: the metadata key it is filled from, or its index among value columns.
    layout: Vec<Column>,
    decoder: RecordDecoder,
    batch_size: usize,
    messages: Option<mpsc::Receiver<Publish>>,
    client: Option<AsyncClient>,
    /// Acknowledge after the covering checkpoint (else on receipt).
    manual_acks: bool,
    /// Messages returned since the last barrier, waiting for their checkpoint.
    acks: crate::source::records::AckBook<Publish>,
    metrics: runnel_common::metrics::ConnectorMetrics,
    seq: u64,
}

#[derive(Clone, Copy)]
enum Column {
    Value(usize),
    Topic,
    Qos,
    Retain,
    Received,
}

#[async_trait]
impl Source for MqttSource {
    async fn poll(&mut self) -> Result<SourcePoll, ConnectorError> {
        let Some(rx) = self.messages.as_mut() else {
            // Another subtask holds the subscription.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Ok(SourcePoll::Pending);
        };
        let Some(got) =
            crate::source::records::recv_batch(rx, self.batch_size, Duration::from_millis(50))
                .await
        else {
            return Err(ConnectorError::Other(format!(
                "table '{}': the MQTT connection task ended",
                self.table
            )));
        };
        if got.is_empty() {
            return Ok(SourcePoll::Pending);
        }
        let now = runnel_common::time::now_ms();
        let records: Vec<StoredRecord> = got
            .iter()
            .map(|p| {
                self.seq += 1;
                StoredRecord {
                    offset: self.seq,
                    timestamp: now,
                    event_time: None,
                    key: None,
                    value: p.payload.to_vec(),
                    headers: Vec::new(),
                }
            })
            .collect();
        let reads: Vec<(u32, &StoredRecord)> = records.iter().map(|r| (0, r)).collect();
        // Dead letters name the first message's topic (a batch may span several).
        let (decoded, kept) = self.decoder.decode_kept(&got[0].topic, &reads).await?;
        self.metrics
            .bytes
            .add(got.iter().map(|p| p.payload.len() as u64).sum());
        let kept_msgs: Vec<&Publish> = got
            .iter()
            .zip(&kept)
            .filter(|(_, k)| **k)
            .map(|(p, _)| p)
            .collect();
        let batch = match decoded {
            Some(values) if values.num_rows() > 0 => {
                let columns: Vec<ArrayRef> = self
                    .layout
                    .iter()
                    .map(|c| match c {
                        Column::Value(i) => values.column(*i).clone(),
                        Column::Topic => Arc::new(StringArray::from_iter_values(
                            kept_msgs.iter().map(|p| p.topic.as_str()),
                        )) as ArrayRef,
                        Column::Qos => Arc::new(Int32Array::from_iter_values(
                            kept_msgs.iter().map(|p| p.qos as i32),
                        )),
                        Column::Retain => Arc::new(BooleanArray::from(
                            kept_msgs.iter().map(|p| p.retain).collect::<Vec<_>>(),
                        )),
                        Column::Received => {
                            Arc::new(TimestampMillisecondArray::from(vec![now; kept_msgs.len()]))
                        }
                    })
                    .collect();
                Some(crate::source::records::assemble(&self.schema, columns)?)
            }
            _ => None,
        };
        // Every message is acknowledged (dead letters included) once its checkpoint is
        // complete, or now without checkpoints.
        for mut p in got {
            p.payload = bytes::Bytes::new();
            if self.manual_acks {
                self.acks.hold([p]);
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
        let Some(client) = &self.client else {
            return Ok(());
        };
        for p in self.acks.complete(checkpoint) {
            if p.qos != QoS::AtMostOnce {
                // Queued for the connection task; after a reconnect the broker redelivers
                // what was not acknowledged, and the duplicate is acknowledged again.
                client.ack(&p).await.map_err(|e| {
                    ConnectorError::Other(format!(
                        "table '{}': acknowledging an MQTT message: {e}",
                        self.table
                    ))
                })?;
            }
        }
        Ok(())
    }
}

/// Runs the connection: forwards messages, resubscribes when the broker lost the
/// session, reconnects with backoff and reports outages.
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topics: Vec<(String, QoS)>,
    tx: mpsc::Sender<Publish>,
    metrics: runnel_common::metrics::ConnectorMetrics,
    table: String,
    shown: String,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if tx.send(p).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Duration::from_secs(1);
                metrics.clear_problem();
                if !ack.session_present {
                    let filters = topics
                        .iter()
                        .map(|(t, q)| rumqttc::SubscribeFilter::new(t.clone(), *q));
                    if let Err(e) = client.subscribe_many(filters).await {
                        tracing::warn!(table = %table, "subscribing at {shown}: {e}");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    let problem = format!("the MQTT broker at {shown} refused a subscription");
                    tracing::warn!(table = %table, "{problem}");
                    metrics.set_problem(problem);
                }
            }
            Ok(_) => {}
            Err(e) => {
                if tx.is_closed() {
                    return;
                }
                let problem = format!(
                    "MQTT broker at {shown} unreachable ({e}); reconnecting in {backoff:?}"
                );
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
    let positions = crate::source::records::value_positions(spec);
    let layout: Vec<Column> = (0..spec.schema.fields().len())
        .map(|i| match spec.metadata_of(i).map(|m| m.key.as_str()) {
            Some("topic") => Column::Topic,
            Some("qos") => Column::Qos,
            Some("retain") => Column::Retain,
            Some("timestamp") => Column::Received,
            _ => Column::Value(positions[i].unwrap_or(0)),
        })
        .collect();
    let mut out: Vec<Box<dyn Source>> = Vec::with_capacity(contexts.len());
    for ctx in contexts {
        let decoder = crate::source::records::payload_decoder(spec, &config.format, &ctx)?;
        let (messages, client) = if ctx.subtask == 0 {
            let base = config.client_id.clone().unwrap_or_else(|| {
                format!(
                    "runnel-{}-{}",
                    ctx.data_dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    spec.name
                )
            });
            let mut options = config.options(&client_id(&base));
            // A persistent session with manual acks when checkpoints cover the messages.
            options.set_clean_session(!ctx.checkpointing);
            options.set_manual_acks(ctx.checkpointing);
            let (client, eventloop) = AsyncClient::new(options, 1024);
            let (tx, rx) = mpsc::channel(4096);
            let topics = config
                .topics
                .iter()
                .map(|t| (t.clone(), config.qos))
                .collect();
            tokio::spawn(drive(
                eventloop,
                client.clone(),
                topics,
                tx,
                ctx.metrics.clone(),
                spec.name.clone(),
                config.shown.clone(),
            ));
            (Some(rx), Some(client))
        } else {
            (None, None)
        };
        out.push(Box::new(MqttSource {
            table: spec.name.clone(),
            schema: spec.schema.clone(),
            layout: layout.clone(),
            decoder,
            batch_size: ctx.batch_size.max(1),
            messages,
            client,
            manual_acks: ctx.checkpointing,
            acks: Default::default(),
            metrics: ctx.metrics.clone(),
            seq: 0,
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_tls_and_credentials() {
        let e = endpoint("mqtt://u:p@broker:1884/").expect("mqtt");
        assert_eq!((e.host.as_str(), e.port, e.tls), ("broker", 1884, false));
        assert_eq!(e.credentials, Some(("u".into(), "p".into())));
        let e = endpoint("mqtts://broker").expect("mqtts");
        assert_eq!((e.port, e.tls), (8883, true));
        assert_eq!(endpoint("ssl://h:1").map(|e| e.tls), Ok(true));
        assert_eq!(endpoint("mqtt://h").map(|e| e.port), Ok(1883));
        let e = endpoint("http://user:secret@h").err().unwrap_or_default();
        assert!(e.contains("'http://' is not an MQTT scheme"), "{e}");
        assert!(!e.contains("secret"), "the password was shown: {e}");
        assert!(endpoint("mqtt://h:x").is_err());
        assert!(endpoint("mqtt://:1").is_err());
    }
}
