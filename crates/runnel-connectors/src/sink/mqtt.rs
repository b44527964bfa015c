//! `mqtt` as a sink: each row published to the table's topic (its descriptor and
//! options are in `source/mqtt.rs`), encoded by `format`, at the table's QoS and
//! `retain`. At least once: a checkpoint (and the end of the input) completes only when
//! the broker has acknowledged every QoS 1 message published before it; a lost
//! connection is re-established with backoff while publishes wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};
use runnel_common::TableSpec;
use runnel_common::metrics::ConnectorMetrics;

use crate::format::csv::CsvEncoder;
use crate::format::json::JsonEncoder;
use crate::source::mqtt::{CONNECTOR, MqttConfig, client_id, parse, value_columns};
use crate::{ConnectorError, Sink, SinkContext};

/// Publishes sent and acknowledged, counted by the connection task.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    acked: AtomicU64,
}

struct MqttSink {
    table: String,
    config: MqttConfig,
    client: AsyncClient,
    counts: Arc<Counts>,
    /// Publishes handed to the client so far (QoS 1 only).
    queued: u64,
    values: Vec<usize>,
    metrics: ConnectorMetrics,
    buf: Vec<u8>,
}

impl MqttSink {
    /// Waits until the broker acknowledged every QoS 1 message queued so far.
    async fn flushed(&mut self) -> Result<(), ConnectorError> {
        if self.config.qos == QoS::AtMostOnce {
            return Ok(());
        }
        let started = Instant::now();
        let mut warned = false;
        while self.counts.acked.load(Ordering::Acquire) < self.queued {
            if !warned && started.elapsed() > Duration::from_secs(10) {
                warned = true;
                tracing::warn!(table = %self.table, url = %self.config.shown,
                    "waiting for the MQTT broker to acknowledge published messages");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for MqttSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        let rows = batch.project(&self.values)?;
        let topic = self.config.topics[0].clone();
        let mut bytes = 0u64;
        let format = self.config.format.clone();
        match format.as_str() {
            "raw" => {
                let col = rows.column(0);
                for i in 0..rows.num_rows() {
                    let payload: Vec<u8> = if col.is_null(i) {
                        Vec::new()
                    } else if *col.data_type() == DataType::Binary {
                        col.as_binary::<i32>().value(i).to_vec()
                    } else {
                        col.as_string::<i32>().value(i).as_bytes().to_vec()
                    };
                    bytes += payload.len() as u64;
                    self.publish(topic.clone(), payload).await?;
                }
            }
            format => {
                self.buf.clear();
                if format == "csv" {
                    CsvEncoder.encode(&rows, &mut self.buf)?;
                } else {
                    JsonEncoder.encode(&rows, &mut self.buf)?;
                }
                let text = std::mem::take(&mut self.buf);
                for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    bytes += line.len() as u64;
                    self.publish(topic.clone(), line.to_vec()).await?;
                }
                self.buf = text;
            }
        }
        self.metrics.rows.add(batch.num_rows() as u64);
        self.metrics.bytes.add(bytes);
        Ok(())
    }

    async fn pre_commit(&mut self, _checkpoint: u64) -> Result<(), ConnectorError> {
        self.flushed().await
    }

    async fn finish(&mut self) -> Result<(), ConnectorError> {
        self.flushed().await?;
        let _ = self.client.disconnect().await;
        Ok(())
    }
}

impl MqttSink {
    async fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), ConnectorError> {
        self.client
            .publish(topic, self.config.qos, self.config.retain, payload)
            .await
            .map_err(|e| {
                ConnectorError::Other(format!(
                    "table '{}': publishing to the MQTT broker at {}: {e}",
                    self.table, self.config.shown
                ))
            })?;
        if self.config.qos != QoS::AtMostOnce {
            self.queued += 1;
        }
        Ok(())
    }
}

/// The connection task of a sink: counts acknowledgements, reconnects with backoff.
async fn drive(
    mut eventloop: EventLoop,
    counts: Arc<Counts>,
    metrics: ConnectorMetrics,
    table: String,
    shown: String,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                counts.acked.fetch_add(1, Ordering::Release);
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                counts.sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_secs(1);
                metrics.clear_problem();
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
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

/// One publishing client per subtask.
pub(crate) fn build(
    spec: &TableSpec,
    contexts: Vec<SinkContext>,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
    CONNECTOR.check_options(spec)?;
    let config = parse(spec)?;
    if config.topics.len() != 1 || config.topics[0].contains(['+', '#']) {
        return Err(ConnectorError::Other(format!(
            "table '{}': option 'topic': a sink publishes to one topic, without + or # \
             wildcards",
            spec.name
        )));
    }
    let values = value_columns(spec);
    Ok(contexts
        .into_iter()
        .map(|ctx| {
            let base = config.client_id.clone().unwrap_or_else(|| {
                format!(
                    "runnel-{}-{}-sink",
                    ctx.pipeline.as_deref().unwrap_or("run"),
                    spec.name
                )
            });
            let id = client_id(&format!("{base}-{}", ctx.subtask));
            // Sessions of a sink hold nothing worth keeping.
            let mut options = config.options(&id);
            options.set_clean_session(true);
            let (client, eventloop) = AsyncClient::new(options, 1024);
            let counts = Arc::new(Counts::default());
            tokio::spawn(drive(
                eventloop,
                counts.clone(),
                ctx.metrics.clone(),
                spec.name.clone(),
                config.shown.clone(),
            ));
            Box::new(MqttSink {
                table: spec.name.clone(),
                config: config.clone(),
                client,
                counts,
                queued: 0,
                values: values.clone(),
                metrics: ctx.metrics,
                buf: Vec::new(),
            }) as Box<dyn Sink>
        })
        .collect())
}
