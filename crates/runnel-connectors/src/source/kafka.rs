//! `kafka` connector (source side, and the descriptor shared with the sink): Flink's Kafka
//! table options, unchanged.
//!
//! A source subtask reads its share of the topic's partitions — all partitions of the
//! `topic` (or of every topic matching `topic-pattern`), sorted, the `i`-th going to subtask
//! `i % parallelism` — through an assigned (not subscribed) consumer, so that positions come
//! from checkpoints: `position()` is `{"<topic>/<partition>": next offset}` and `seek`
//! restores it. Without a checkpoint, `scan.startup.mode` says where to start. The consumed
//! offsets are also committed to `properties.group.id` (so lag shows in Kafka's tools) when
//! a checkpoint is taken, or every few seconds without checkpoints.
//!
//! Values are decoded by `format` (`json`, `csv` — one line, columns in declaration order —
//! or `raw`: one BYTES/STRING column takes the value whole); `METADATA` columns
//! (`timestamp`, `partition`, `offset`, `headers`, `topic`, `key`) are filled from the
//! record. A record that does not decode goes to the dead letters (`dead-letter.path`,
//! default `<data-dir>/dead-letters/<table>.jsonl`) with its topic, partition and offset;
//! the pipeline goes on. `scan.bounded.mode = 'latest-offset'` stops once every
//! partition has been read up to the high watermark its last fetch reported (the end at
//! start, or later if producers are still writing). A broker that goes away is retried by the client; the source reports it
//! and waits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::DataType;
use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use runnel_common::TableSpec;
use runnel_common::metrics::ConnectorMetrics;
use runnel_common::types::sql_name;
use runnel_log::StoredRecord;

use crate::dead_letters::Target;
use crate::descriptor::{
    CheckContext, CheckFuture, Connector, Guarantee, OptionDef, OptionType, Role,
};
use crate::format::csv::CsvDecoder;
use crate::format::json::JsonDecoder;
use crate::source::records::{Meta, Read, RecordDecoder, ValueFormat};
use crate::{ConnectorError, Source, SourceContext, SourcePoll};

/// `connector = 'kafka'`: a Kafka topic, read and written with Flink's option names.
pub const CONNECTOR: Connector = Connector {
    name: "kafka",
    doc: "a Kafka topic (any Kafka-protocol broker), with Flink's Kafka connector options",
    options: OPTIONS,
    source: Some(build),
    sink: Some(crate::sink::kafka::build),
    unbounded: never_ends,
    guarantee: Guarantee::ExactlyOnce,
    updates: crate::descriptor::append_only,
    needs: &[],
    validate,
    check,
    metadata: &[
        "timestamp",
        "partition",
        "offset",
        "headers",
        "topic",
        "key",
    ],
    upserts: false,
    lookup: None,
};

/// Shared by `kafka` and `upsert-kafka`.
pub(crate) const SCAN_BOUNDED: OptionDef = OptionDef::new(
    "scan.bounded.mode",
    OptionType::Choice(&["unbounded", "latest-offset"]),
    "'latest-offset': stop once every partition's end is reached",
)
.default("unbounded")
.source_only();

/// Shared by `kafka` and `upsert-kafka`.
pub(crate) const IDLE_TIMEOUT: OptionDef = OptionDef::new(
    "source.idle-timeout",
    OptionType::Text,
    "a partition without data this long stops holding event time back (e.g. '5 s')",
)
.default("the pipeline's, 5 s")
.source_only();

/// Shared by `kafka` and `upsert-kafka`.
pub(crate) const DEAD_LETTER_PATH: OptionDef = OptionDef::new(
    "dead-letter.path",
    OptionType::Path,
    "JSON-lines file of records that cannot be read",
)
.default("<data-dir>/dead-letters/<table>.jsonl")
.source_only();

/// `properties.bootstrap.servers`, required by every Kafka table.
pub(crate) const BOOTSTRAP_SERVERS: OptionDef = OptionDef::new(
    "properties.bootstrap.servers",
    OptionType::Text,
    "the brokers, host:port[,host:port…]",
)
.required();

/// `properties.*`: passed through to the client.
pub(crate) const PROPERTIES: OptionDef = OptionDef::new(
    "properties.*",
    OptionType::Text,
    "any other Kafka client setting, passed through (security.protocol, sasl.*, ssl.* …)",
);

const OPTIONS: &[OptionDef] = &[
    OptionDef::new(
        "topic",
        OptionType::Text,
        "the topic (a source may list several, separated by ';')",
    ),
    OptionDef::new(
        "topic-pattern",
        OptionType::Text,
        "a regular expression: read every topic whose whole name matches",
    )
    .source_only(),
    BOOTSTRAP_SERVERS,
    OptionDef::new(
        "properties.group.id",
        OptionType::Text,
        "consumer group the read offsets are committed to",
    )
    .default("runnel-<table>")
    .source_only(),
    PROPERTIES,
    OptionDef::new(
        "format",
        OptionType::Choice(&["json", "csv", "raw"]),
        "value encoding",
    )
    .default("json"),
    OptionDef::new(
        "value.format",
        OptionType::Choice(&["json", "csv", "raw"]),
        "the same as format",
    ),
    OptionDef::new(
        "key.format",
        OptionType::Choice(&["json", "csv", "raw"]),
        "key encoding of the key.fields",
    ),
    OptionDef::new(
        "key.fields",
        OptionType::Text,
        "columns that make the record key, separated by ';'",
    ),
    OptionDef::new(
        "value.fields-include",
        OptionType::Choice(&["ALL", "EXCEPT_KEY"]),
        "whether the key.fields are also in the value",
    )
    .default("ALL"),
    OptionDef::new(
        "scan.startup.mode",
        OptionType::Choice(&[
            "earliest-offset",
            "latest-offset",
            "group-offsets",
            "timestamp",
            "specific-offsets",
        ]),
        "where reading starts without a checkpoint",
    )
    .default("group-offsets")
    .source_only(),
    OptionDef::new(
        "scan.startup.timestamp-millis",
        OptionType::Int {
            min: 0,
            max: i64::MAX as u64,
        },
        "with scan.startup.mode = 'timestamp': the first record time to read",
    )
    .source_only(),
    OptionDef::new(
        "scan.startup.specific-offsets",
        OptionType::Text,
        "with 'specific-offsets': partition:0,offset:42;partition:1,offset:300",
    )
    .source_only(),
    SCAN_BOUNDED,
    OptionDef::new(
        "scan.topic-partition-discovery.interval",
        OptionType::Text,
        "accepted for Flink scripts; partitions are read as found at start",
    )
    .source_only(),
    IDLE_TIMEOUT,
    DEAD_LETTER_PATH,
    OptionDef::new(
        "sink.partitioner",
        OptionType::Choice(&["default", "fixed", "round-robin"]),
        "default: by key hash (round robin without a key); fixed: subtask i writes partition i",
    )
    .default("default")
    .sink_only(),
    OptionDef::new(
        "sink.delivery-guarantee",
        OptionType::Choice(&["none", "at-least-once", "exactly-once"]),
        "exactly-once: each checkpoint's rows in one Kafka transaction (needs checkpoints)",
    )
    .default("at-least-once")
    .sink_only(),
    OptionDef::new(
        "sink.transactional-id-prefix",
        OptionType::Text,
        "prefix of the transactional ids of an exactly-once sink",
    )
    .default("runnel-<pipeline data dir>-<table>")
    .sink_only(),
    OptionDef::new(
        "sink.parallelism",
        OptionType::Int { min: 1, max: 1024 },
        "accepted for Flink scripts; the pipeline's parallelism is used",
    )
    .sink_only(),
];

/// How values (and keys) are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaFormat {
    /// A JSON object.
    Json,
    /// One CSV line, columns in declaration order.
    Csv,
    /// The bytes as they are, in one BYTES or STRING column.
    Raw,
}

impl KafkaFormat {
    fn parse(v: Option<&str>) -> Self {
        match v {
            Some("csv") => KafkaFormat::Csv,
            Some("raw") => KafkaFormat::Raw,
            _ => KafkaFormat::Json,
        }
    }
}

/// Where a source starts without a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// The first retained record.
    Earliest,
    /// Records produced after the start.
    Latest,
    /// The group's committed offsets (else the earliest).
    GroupOffsets,
    /// The first record at or after this time (ms).
    Timestamp(i64),
    /// Given offsets per partition (others: earliest).
    Specific(BTreeMap<i32, i64>),
}

/// The options of a `kafka` table.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Topics named by `topic` (';'-separated).
    pub topics: Vec<String>,
    /// `topic-pattern`, anchored.
    pub pattern: Option<regex::Regex>,
    /// `properties.bootstrap.servers`.
    pub bootstrap: String,
    /// `properties.group.id` (default `runnel-<table>`).
    pub group: String,
    /// Every `properties.*` but the two above, without the prefix.
    pub properties: Vec<(String, String)>,
    /// Value format.
    pub format: KafkaFormat,
    /// Key format and the key columns.
    pub key: Option<(KafkaFormat, Vec<usize>)>,
    /// `value.fields-include = 'EXCEPT_KEY'`.
    pub value_except_key: bool,
    /// Where to start.
    pub startup: Startup,
    /// `scan.bounded.mode = 'latest-offset'`.
    pub bounded: bool,
    /// `source.idle-timeout`: a partition silent this long stops holding event time back.
    pub idle_timeout: Option<Duration>,
    /// `upsert-kafka`: keyed by the primary key, deletions as tombstones.
    pub upsert: bool,
}

impl KafkaConfig {
    /// Reads and checks the options (no network).
    ///
    /// # Errors
    /// A missing or malformed option, naming it.
    pub fn try_new(spec: &TableSpec) -> Result<Self, ConnectorError> {
        CONNECTOR.check_options(spec)?;
        Self::from_options(spec)
    }

    /// Reads the options, already checked against the connector's list.
    ///
    /// # Errors
    /// A malformed option, naming it.
    pub fn from_options(spec: &TableSpec) -> Result<Self, ConnectorError> {
        let o = &spec.options;
        let bad = |key: &str, reason: String| {
            ConnectorError::Other(format!("table '{}': option '{key}': {reason}", spec.name))
        };
        let topics: Vec<String> = o
            .get("topic")
            .map(|t| {
                t.split(';')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let pattern = o
            .get("topic-pattern")
            .map(|p| {
                regex::Regex::new(&format!("^(?:{p})$"))
                    .map_err(|e| bad("topic-pattern", format!("not a regular expression: {e}")))
            })
            .transpose()?;
        if topics.is_empty() && pattern.is_none() {
            return Err(ConnectorError::Other(format!(
                "table '{}': a kafka table needs 'topic' (or, to read, 'topic-pattern')",
                spec.name
            )));
        }
        if !topics.is_empty() && pattern.is_some() {
            return Err(bad(
                "topic-pattern",
                "give either 'topic' or 'topic-pattern', not both".into(),
            ));
        }
        let bootstrap = o
            .get("properties.bootstrap.servers")
            .unwrap_or_default()
            .to_string();
        let group = o
            .get("properties.group.id")
            .map_or_else(|| format!("runnel-{}", spec.name), str::to_string);
        let properties = o
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("properties.")?, v)))
            .filter(|(k, _)| !matches!(*k, "bootstrap.servers" | "group.id"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let format = KafkaFormat::parse(o.get("value.format").or(o.get("format")));
        let key = match o.get("key.fields") {
            None => None,
            Some(fields) => {
                let mut cols = Vec::new();
                for name in fields.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    let i = spec.schema.index_of(name).map_err(|_| {
                        bad(
                            "key.fields",
                            format!("'{name}' is not a column of the table"),
                        )
                    })?;
                    cols.push(i);
                }
                Some((KafkaFormat::parse(o.get("key.format")), cols))
            }
        };
        let startup = match o.get("scan.startup.mode").unwrap_or("group-offsets") {
            "earliest-offset" => Startup::Earliest,
            "latest-offset" => Startup::Latest,
            "timestamp" => {
                let ms = o
                    .get("scan.startup.timestamp-millis")
                    .and_then(|v| v.trim().parse::<i64>().ok())
                    .ok_or_else(|| {
                        bad(
                            "scan.startup.timestamp-millis",
                            "scan.startup.mode = 'timestamp' needs it (ms since 1970)".into(),
                        )
                    })?;
                Startup::Timestamp(ms)
            }
            "specific-offsets" => {
                let text = o.get("scan.startup.specific-offsets").ok_or_else(|| {
                    bad(
                        "scan.startup.specific-offsets",
                        "scan.startup.mode = 'specific-offsets' needs it, e.g. \
                         'partition:0,offset:42;partition:1,offset:300'"
                            .into(),
                    )
                })?;
                Startup::Specific(
                    parse_specific_offsets(text)
                        .map_err(|reason| bad("scan.startup.specific-offsets", reason))?,
                )
            }
            _ => Startup::GroupOffsets,
        };
        let config = KafkaConfig {
            topics,
            pattern,
            bootstrap,
            group,
            properties,
            format,
            key,
            value_except_key: o.get("value.fields-include") == Some("EXCEPT_KEY"),
            startup,
            bounded: o.get("scan.bounded.mode") == Some("latest-offset"),
            idle_timeout: o
                .get("source.idle-timeout")
                .map(|v| {
                    runnel_common::time::parse_duration_ms(v)
                        .filter(|ms| *ms > 0)
                        .map(|ms| Duration::from_millis(ms as u64))
                        .ok_or_else(|| {
                            bad(
                                "source.idle-timeout",
                                format!("'{v}' is not a duration such as '5 s' or '500 ms'"),
                            )
                        })
                })
                .transpose()?,
            upsert: false,
        };
        Ok(config)
    }

    /// A client configuration with the brokers and every passed-through property.
    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        // librdkafka's logs go to tracing at warn level and above only.
        c.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// The columns of the value: all, or all but the key's with `EXCEPT_KEY`, never the
    /// metadata columns.
    pub fn value_columns(&self, spec: &TableSpec) -> Vec<usize> {
        (0..spec.schema.fields().len())
            .filter(|i| spec.metadata_of(*i).is_none())
            .filter(|i| {
                !(self.value_except_key
                    && self.key.as_ref().is_some_and(|(_, cols)| cols.contains(i)))
            })
            .collect()
    }
}

/// The client's context: librdkafka's logs and errors, at most one warning every 30 s
/// per client (a broker that is down makes it report every connection attempt), the rest
/// at debug level.
pub struct Quiet {
    table: String,
    bootstrap: String,
    last: std::sync::Mutex<Option<Instant>>,
    /// Where client trouble is reported for the page (see [`Quiet::reporting`]).
    metrics: Option<ConnectorMetrics>,
}

/// Client warnings are shown at most this often.
const QUIET_PERIOD: Duration = Duration::from_secs(30);

impl Quiet {
    /// A context for `table`'s clients of `bootstrap`.
    pub fn new(config: &KafkaConfig, table: &str) -> Self {
        Quiet {
            table: table.to_string(),
            bootstrap: config.bootstrap.clone(),
            last: std::sync::Mutex::new(None),
            metrics: None,
        }
    }

    /// Also notes client trouble as the connector's problem (cleared by the connector
    /// when records flow again).
    pub fn reporting(mut self, metrics: &ConnectorMetrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    fn say(&self, message: &str) {
        if let Some(m) = &self.metrics {
            m.set_problem(format!("Kafka at {}: {message}", self.bootstrap));
        }
        metrics::counter!("runnel_kafka_client_errors_total", "table" => self.table.clone())
            .increment(1);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= QUIET_PERIOD) {
            *last = Some(Instant::now());
            tracing::warn!(table = %self.table, bootstrap = %self.bootstrap,
                "Kafka client: {message} (the client retries; further client messages in the \
                 next {} s are at debug level)", QUIET_PERIOD.as_secs());
        } else {
            tracing::debug!(table = %self.table, "Kafka client: {message}");
        }
    }
}

impl rdkafka::ClientContext for Quiet {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => {
                self.say(&format!("{fac}: {message}"));
            }
            _ => tracing::debug!(table = %self.table, "Kafka client {fac}: {message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.say(&format!("{error}: {reason}"));
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

impl rdkafka::producer::ProducerContext for Quiet {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// `partition:0,offset:42;partition:1,offset:300` → {0: 42, 1: 300}.
fn parse_specific_offsets(text: &str) -> Result<BTreeMap<i32, i64>, String> {
    let mut out = BTreeMap::new();
    for part in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let mut partition = None;
        let mut offset = None;
        for kv in part.split(',') {
            match kv.split_once(':').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("partition", v)) => partition = v.parse::<i32>().ok(),
                Some(("offset", v)) => offset = v.parse::<i64>().ok(),
                _ => {}
            }
        }
        match (partition, offset) {
            (Some(p), Some(o)) if p >= 0 && o >= 0 => {
                out.insert(p, o);
            }
            _ => {
                return Err(format!(
                    "'{part}' is not 'partition:<n>,offset:<n>' (entries separated by ';')"
                ));
            }
        }
    }
    Ok(out)
}

fn validate(spec: &TableSpec) -> Result<(), ConnectorError> {
    let config = KafkaConfig::try_new(spec)?;
    value_format(spec, &config).map(|_| ())
}

/// Whether the table reads forever (not `scan.bounded.mode = 'latest-offset'`).
pub fn never_ends(spec: &TableSpec) -> bool {
    spec.options.get("scan.bounded.mode") != Some("latest-offset")
}

/// The columns' metadata (from `METADATA` columns), checked against their types.
fn metadata_columns(spec: &TableSpec) -> Result<Vec<Option<Meta>>, ConnectorError> {
    (0..spec.schema.fields().len())
        .map(|i| {
            let Some(m) = spec.metadata_of(i) else {
                return Ok(None);
            };
            let meta = match m.key.as_str() {
                "timestamp" => Meta::IngestTime,
                "partition" => Meta::Partition,
                "offset" => Meta::Offset,
                "headers" => Meta::Headers,
                "topic" => Meta::Topic,
                _ => Meta::Key,
            };
            let f = spec.schema.field(i);
            if !meta.accepts(f.data_type()) {
                return Err(ConnectorError::Type {
                    table: spec.name.clone(),
                    column: f.name().clone(),
                    data_type: sql_name(f.data_type()),
                    reason: format!(
                        "METADATA FROM '{}' needs {}",
                        m.key,
                        match meta {
                            Meta::IngestTime => "TIMESTAMP_LTZ(3), TIMESTAMP(3) or BIGINT",
                            Meta::Partition => "INT or BIGINT",
                            Meta::Offset => "BIGINT",
                            Meta::Headers => "STRING (a JSON object of the headers)",
                            Meta::Topic => "STRING",
                            _ => "STRING or BYTES",
                        }
                    ),
                });
            }
            Ok(Some(meta))
        })
        .collect()
}

/// How the value becomes the non-metadata columns, checked against the schema.
fn value_format(spec: &TableSpec, config: &KafkaConfig) -> Result<ValueFormat, ConnectorError> {
    // With `value.fields-include = 'EXCEPT_KEY'` the key columns come from the key.
    let physical = config.value_columns(spec);
    let sub = Arc::new(
        spec.schema
            .project(&physical)
            .map_err(|e| ConnectorError::Other(format!("table '{}': {e}", spec.name)))?,
    );
    // Metadata columns are filled from the record afterwards: the value decoders see them
    // as STRING placeholders, so their types (a MAP of headers) need no text form.
    let placeholders: arrow::datatypes::Fields = spec
        .schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| match spec.metadata_of(i) {
            Some(_) => Arc::new(arrow::datatypes::Field::new(f.name(), DataType::Utf8, true)),
            None => f.clone(),
        })
        .collect();
    let decode_schema = Arc::new(arrow::datatypes::Schema::new(placeholders));
    Ok(match config.format {
        KafkaFormat::Json => ValueFormat::Json(JsonDecoder::try_new(decode_schema)?),
        KafkaFormat::Csv => {
            crate::format::check_schema(&spec.name, &sub)?;
            let header = csv::ByteRecord::from(
                sub.fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>(),
            );
            ValueFormat::Csv(CsvDecoder::try_new(decode_schema, &header)?)
        }
        KafkaFormat::Raw => {
            if physical.len() != 1
                || !matches!(
                    spec.schema.field(physical[0]).data_type(),
                    DataType::Binary | DataType::Utf8
                )
            {
                return Err(ConnectorError::Other(format!(
                    "table '{}': format = 'raw' takes the whole value into one BYTES or STRING \
                     column; the value has {} columns (besides METADATA ones and, with \
                     'value.fields-include' = 'EXCEPT_KEY', the key.fields)",
                    spec.name,
                    physical.len()
                )));
            }
            ValueFormat::Raw
        }
    })
}

/// How long the health check waits for the brokers.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Reaches the brokers and, for a source or a named topic, finds the topics.
fn check(spec: TableSpec, role: Role, _ctx: CheckContext) -> CheckFuture {
    Box::pin(async move { check_with(KafkaConfig::try_new(&spec)?, &spec, role).await })
}

/// The health check of a Kafka table with its configuration read (`kafka`, `upsert-kafka`).
///
/// # Errors
/// The brokers cannot be reached (the message names them), or a source's topic is missing.
pub(crate) async fn check_with(
    config: KafkaConfig,
    spec: &TableSpec,
    role: Role,
) -> Result<(), ConnectorError> {
    {
        let table = spec.name.clone();
        crate::source::log::blocking("checking the Kafka brokers", move || {
            let consumer: rdkafka::consumer::BaseConsumer<Quiet> = config
                .client()
                .set("group.id", &config.group)
                .create_with_context(Quiet::new(&config, &table))
                .map_err(|e| {
                    ConnectorError::Other(format!("table '{table}': Kafka client settings: {e}"))
                })?;
            let topic = (config.topics.len() == 1).then(|| config.topics[0].as_str());
            let metadata = consumer.fetch_metadata(topic, CHECK_TIMEOUT).map_err(|e| {
                ConnectorError::Other(format!(
                    "table '{table}': cannot reach Kafka at {} within {} s: {e}",
                    config.bootstrap,
                    CHECK_TIMEOUT.as_secs()
                ))
            })?;
            if role != Role::Sink {
                let found = matching_topics(&config, &metadata);
                if found.is_empty() {
                    return Err(ConnectorError::Other(format!(
                        "table '{table}': no topic {} on the Kafka brokers at {}",
                        describe_topics(&config),
                        config.bootstrap
                    )));
                }
            }
            Ok(())
        })
        .await
    }
}

fn describe_topics(config: &KafkaConfig) -> String {
    match &config.pattern {
        Some(p) => format!("matches topic-pattern {}", p.as_str()),
        None => format!("named {}", config.topics.join(", ")),
    }
}

/// (topic, partition count) of the topics this table reads, sorted by name.
fn matching_topics(
    config: &KafkaConfig,
    metadata: &rdkafka::metadata::Metadata,
) -> Vec<(String, i32)> {
    let mut out: Vec<(String, i32)> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .filter(|t| match &config.pattern {
            Some(p) => p.is_match(t.name()) && !t.name().starts_with("__"),
            None => config.topics.iter().any(|n| n == t.name()),
        })
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect();
    out.sort();
    out
}

/// Builds one source subtask per context; they connect on their first poll.
///
/// # Errors
/// Bad options or columns.
pub fn build(
    spec: &TableSpec,
    contexts: Vec<SourceContext>,
) -> Result<Vec<Box<dyn Source>>, ConnectorError> {
    build_with(spec, contexts, KafkaConfig::try_new(spec)?)
}

/// [`build`] with the configuration read (`kafka`, `upsert-kafka`).
///
/// # Errors
/// Bad columns.
pub(crate) fn build_with(
    spec: &TableSpec,
    contexts: Vec<SourceContext>,
    config: KafkaConfig,
) -> Result<Vec<Box<dyn Source>>, ConnectorError> {
    let Some(first) = contexts.first() else {
        return Ok(Vec::new());
    };
    let columns = metadata_columns(spec)?;
    let dead = first.dead_letters.writer(
        &spec.name,
        crate::dead_letters::own_target(spec),
        Target::File(
            first
                .data_dir
                .join("dead-letters")
                .join(format!("{}.jsonl", spec.name)),
        ),
        &first.metrics,
    );
    let mut out: Vec<Box<dyn Source>> = Vec::with_capacity(contexts.len());
    for ctx in contexts {
        // Key columns come from the record key for upserts and with EXCEPT_KEY.
        let keys = match &config.key {
            Some((format, cols)) if config.upsert || config.value_except_key => {
                let (schema, format) = key_format(spec, *format, cols)?;
                Some(KeyColumns {
                    columns: cols.clone(),
                    decode: RecordDecoder::new(
                        spec.name.clone(),
                        schema,
                        vec![None; cols.len()],
                        true,
                        format,
                        dead.clone(),
                    ),
                })
            }
            _ => None,
        };
        out.push(Box::new(KafkaSource {
            keys,
            changelog: spec.options.get(crate::sink::kafka::CHANGELOG) == Some("true"),
            table: spec.name.clone(),
            config: config.clone(),
            subtask: ctx.subtask,
            parallelism: ctx.parallelism.max(1),
            task: ctx.task,
            upstream: spec
                .options
                .get(WATERMARK_WRITERS)
                .and_then(|n| n.parse().ok())
                .map(|writers| Upstream {
                    writers,
                    marks: BTreeMap::new(),
                }),
            decode: RecordDecoder::new(
                spec.name.clone(),
                spec.schema.clone(),
                columns.clone(),
                true,
                value_format(spec, &config)?,
                dead.clone(),
            ),
            batch_size: if ctx.batch_size == 0 {
                1024
            } else {
                ctx.batch_size
            },
            metrics: ctx.metrics,
            checkpointing: ctx.checkpointing,
            consumer: None,
            owned: BTreeMap::new(),
            restored: None,
            last_commit: Instant::now(),
            last_error: None,
            last_splits: Vec::new(),
            idle_timeout: config.idle_timeout,
            idle_since: None,
            stall_reported: false,
        }));
    }
    Ok(out)
}

/// A partition this subtask reads.
#[derive(Debug, Clone)]
struct Owned {
    /// Next offset to read.
    next: i64,
    /// A bounded read has caught up with the partition's end.
    done: bool,
}

/// How record keys become the key columns (`key.fields`, or an upsert table's PRIMARY
/// KEY).
struct KeyColumns {
    /// The key columns, in key order.
    columns: Vec<usize>,
    /// Decodes a key (handed over as a record value) into those columns.
    decode: RecordDecoder,
}

/// The schema and decoder of a record key holding columns `cols` in `format`.
///
/// # Errors
/// `raw` with other than one BYTES/STRING column; columns a format cannot hold.
pub(crate) fn key_format(
    spec: &TableSpec,
    format: KafkaFormat,
    cols: &[usize],
) -> Result<(arrow::datatypes::SchemaRef, ValueFormat), ConnectorError> {
    let schema = Arc::new(
        spec.schema
            .project(cols)
            .map_err(|e| ConnectorError::Other(format!("table '{}': {e}", spec.name)))?,
    );
    let decoder = match format {
        KafkaFormat::Json => ValueFormat::Json(JsonDecoder::try_new(schema.clone())?),
        KafkaFormat::Csv => {
            crate::format::check_schema(&spec.name, &schema)?;
            let header = csv::ByteRecord::from(
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>(),
            );
            ValueFormat::Csv(CsvDecoder::try_new(schema.clone(), &header)?)
        }
        KafkaFormat::Raw => {
            if cols.len() != 1
                || !matches!(
                    schema.field(0).data_type(),
                    DataType::Binary | DataType::Utf8
                )
            {
                return Err(ConnectorError::Other(format!(
                    "table '{}': key.format = 'raw' takes the whole key into one BYTES or \
                     STRING column; the key has {} column(s) ({})",
                    spec.name,
                    cols.len(),
                    schema
                        .fields()
                        .iter()
                        .map(|f| format!("{} {}", f.name(), sql_name(f.data_type())))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            ValueFormat::Raw
        }
    };
    Ok((schema, decoder))
}

/// Records of one partition as rows with their key columns from the key, in record
/// order; a record whose key or value does not decode goes to the dead letters.
///
/// With `upsert`, the rows are a changelog: a record with a value is `+U`, one without
/// (a tombstone) `-D` of its key (the other columns NULL; the normalize step after the
/// source fills in the deleted row).
async fn keyed_rows(
    values: &mut RecordDecoder,
    keys: &mut KeyColumns,
    upsert: bool,
    schema: &arrow::datatypes::SchemaRef,
    topic: &str,
    partition: u32,
    records: &[StoredRecord],
) -> Result<Option<arrow::record_batch::RecordBatch>, ConnectorError> {
    use arrow::array::{Array, ArrayRef, UInt32Array, new_null_array};
    use runnel_common::changelog::{self, RowKind};
    let as_keys: Vec<StoredRecord> = records
        .iter()
        .map(|r| StoredRecord {
            offset: r.offset,
            timestamp: r.timestamp,
            event_time: r.event_time,
            key: None,
            value: r.key.clone().unwrap_or_default(),
            headers: Vec::new(),
        })
        .collect();
    let reads: Vec<Read<'_>> = as_keys.iter().map(|r| (partition, r)).collect();
    let (key_batch, key_kept) = keys.decode.decode_kept(topic, &reads).await?;
    let Some(key_batch) = key_batch else {
        return Ok(None);
    };
    let tombstone = |r: &StoredRecord| upsert && r.value.is_empty();
    let value_reads: Vec<Read<'_>> = records
        .iter()
        .zip(&key_kept)
        .filter(|(r, k)| **k && !tombstone(r))
        .map(|(r, _)| (partition, r))
        .collect();
    let (value_batch, value_kept) = values.decode_kept(topic, &value_reads).await?;
    // Per output row: its key row, and where its other columns come from for
    // `interleave`: (0, value row), or (1, 0) — NULL — for a deletion.
    let mut key_rows: Vec<u32> = Vec::new();
    let mut picks: Vec<(usize, usize)> = Vec::new();
    let mut kinds: Vec<RowKind> = Vec::new();
    let (mut k, mut v, mut vr) = (0u32, 0usize, 0usize);
    for (r, kept) in records.iter().zip(&key_kept) {
        if !kept {
            continue;
        }
        if tombstone(r) {
            key_rows.push(k);
            picks.push((1, 0));
            kinds.push(RowKind::Delete);
        } else {
            if value_kept.get(vr).copied().unwrap_or(false) {
                key_rows.push(k);
                picks.push((0, v));
                kinds.push(RowKind::UpdateAfter);
                v += 1;
            }
            vr += 1;
        }
        k += 1;
    }
    if kinds.is_empty() {
        return Ok(None);
    }
    let key_take = UInt32Array::from(key_rows);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (c, field) in schema.fields().iter().enumerate() {
        if let Some(j) = keys.columns.iter().position(|&kc| kc == c) {
            columns.push(arrow::compute::take(key_batch.column(j), &key_take, None)?);
            continue;
        }
        let nulls = new_null_array(field.data_type(), 1);
        let from: Vec<&dyn Array> = match &value_batch {
            Some(b) => vec![b.column(c).as_ref(), nulls.as_ref()],
            None => vec![nulls.as_ref(), nulls.as_ref()],
        };
        columns.push(arrow::compute::interleave(&from, &picks)?);
    }
    if upsert {
        Ok(Some(changelog::with_kinds(schema, columns, &kinds)?))
    } else {
        Ok(Some(arrow::record_batch::RecordBatch::try_new(
            schema.clone(),
            columns,
        )?))
    }
}

/// Records of a repartition topic that carries an updating stream: rows with their kinds
/// from each record's [`CHANGELOG_HEADER`](crate::sink::kafka::CHANGELOG_HEADER) (none:
/// an insert). A record whose value does not decode goes to the dead letters.
async fn changelog_rows(
    values: &mut RecordDecoder,
    topic: &str,
    reads: &[Read<'_>],
) -> Result<Option<arrow::record_batch::RecordBatch>, ConnectorError> {
    use runnel_common::changelog::{self, RowKind};
    let (batch, kept) = values.decode_kept(topic, reads).await?;
    let Some(batch) = batch else {
        return Ok(None);
    };
    let kinds: Vec<RowKind> = reads
        .iter()
        .zip(&kept)
        .filter(|(_, k)| **k)
        .map(|((_, r), _)| {
            r.headers
                .iter()
                .find(|(k, _)| k == crate::sink::kafka::CHANGELOG_HEADER)
                .and_then(|(_, v)| RowKind::parse(std::str::from_utf8(v).ok()?))
                .unwrap_or(RowKind::Insert)
        })
        .collect();
    if kinds.len() != batch.num_rows() {
        return Err(ConnectorError::Other(format!(
            "runnel bug (please report): {} row kinds for {} rows of '{topic}'",
            kinds.len(),
            batch.num_rows()
        )));
    }
    let columns = batch.columns().to_vec();
    Ok(Some(changelog::with_kinds(
        &batch.schema(),
        columns,
        &kinds,
    )?))
}

/// One subtask of the Kafka source.
pub struct KafkaSource {
    /// Key columns from the record key (upserts, EXCEPT_KEY).
    keys: Option<KeyColumns>,
    table: String,
    config: KafkaConfig,
    subtask: usize,
    parallelism: usize,
    /// A distributed run's task: only its partition of each topic is read.
    task: Option<crate::TaskScope>,
    /// A repartition topic: its writers' watermarks.
    upstream: Option<Upstream>,
    decode: RecordDecoder,
    batch_size: usize,
    metrics: ConnectorMetrics,
    checkpointing: bool,
    consumer: Option<Arc<StreamConsumer<Quiet>>>,
    /// (topic, partition) → where it is.
    owned: BTreeMap<(String, i32), Owned>,
    /// Positions from a checkpoint, applied when connecting.
    restored: Option<BTreeMap<(String, i32), i64>>,
    last_commit: Instant,
    /// The last client error reported, and when (reported at most every 10 s).
    last_error: Option<Instant>,
    /// Rows per partition of the last batch.
    last_splits: Vec<(String, usize)>,
    /// `source.idle-timeout`.
    idle_timeout: Option<Duration>,
    /// A bounded read: since when polls have found nothing.
    idle_since: Option<Instant>,
    /// A bounded read that stays idle short of its end was reported once.
    stall_reported: bool,
    /// A repartition topic carrying an updating stream (see [`changelog_rows`]).
    changelog: bool,
}

/// Position keys holding a repartition writer's watermark.
const MARK_PREFIX: &str = "~watermark/";

/// Internal option (set by runnel on a repartition topic's reader): how many tasks write
/// the topic, each with its own watermark control records.
pub const WATERMARK_WRITERS: &str = "runnel.internal.watermark-writers";

/// The writers of a repartition topic and their watermarks.
#[derive(Debug)]
struct Upstream {
    /// How many tasks write the topic.
    writers: usize,
    /// Writer → its watermark and whether its input is idle. A writer that is silent
    /// (its member died, its task is moving) holds event time back: its rows are still
    /// to come. Only a writer that said its input is idle does not.
    marks: BTreeMap<String, (i64, bool)>,
}

impl Upstream {
    /// Notes a control record's `<writer>=<ms>` or `<writer>=idle`.
    fn note(&mut self, value: &[u8]) {
        let text = String::from_utf8_lossy(value);
        let Some((writer, mark)) = text.rsplit_once('=') else {
            return;
        };
        let e = self
            .marks
            .entry(writer.to_string())
            .or_insert((i64::MIN, false));
        if mark == "idle" {
            e.1 = true;
        } else if let Ok(ms) = mark.parse::<i64>() {
            *e = (e.0.max(ms), false);
        }
    }

    /// The smallest watermark of the writers that are not idle; none yet (but never
    /// idle: only the writers say when their input is) until every writer was heard from.
    fn watermark(&self) -> Option<runnel_common::Watermark> {
        if self.marks.len() < self.writers || self.marks.is_empty() {
            return Some(runnel_common::Watermark::At(runnel_common::time::TS_MIN));
        }
        let live = self
            .marks
            .values()
            .filter(|(_, idle)| !idle)
            .map(|(ms, _)| *ms)
            .min();
        Some(match live {
            Some(ms) => runnel_common::Watermark::At(ms),
            None => runnel_common::Watermark::Idle,
        })
    }
}

/// A bounded read idle this long short of its end says where each partition stands.
const STALL_REPORT: Duration = Duration::from_secs(20);

/// Longest wait for records in one poll.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// Offsets go to the group at most this often without checkpoints.
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);

impl KafkaSource {
    /// Connects, finds the partitions, picks this subtask's share and where each starts.
    async fn connect(&mut self) -> Result<(), ConnectorError> {
        let config = self.config.clone();
        let table = self.table.clone();
        let (subtask, parallelism) = (self.subtask, self.parallelism);
        let task = self.task;
        let restored = self.restored.clone();
        let metrics = self.metrics.clone();
        let (consumer, owned) = crate::source::log::blocking("connecting to Kafka", move || {
            let consumer: StreamConsumer<Quiet> = config
                .client()
                .set("group.id", &config.group)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                // A bounded read ends a partition where the client reaches its end (the
                // last stable offset for read_committed readers).
                .set(
                    "enable.partition.eof",
                    if config.bounded { "true" } else { "false" },
                )
                .create_with_context(Quiet::new(&config, &table).reporting(&metrics))
                .map_err(|e| {
                    ConnectorError::Other(format!("table '{table}': Kafka client settings: {e}"))
                })?;
            let topic = (config.topics.len() == 1).then(|| config.topics[0].as_str());
            let metadata = consumer.fetch_metadata(topic, CHECK_TIMEOUT).map_err(|e| {
                ConnectorError::Other(format!(
                    "table '{table}': cannot reach Kafka at {}: {e}",
                    config.bootstrap
                ))
            })?;
            let topics = matching_topics(&config, &metadata);
            if topics.is_empty() {
                return Err(ConnectorError::Other(format!(
                    "table '{table}': no topic {} on the Kafka brokers at {}",
                    describe_topics(&config),
                    config.bootstrap
                )));
            }
            let all: Vec<(String, i32)> = topics
                .iter()
                .flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p)))
                .filter(|(_, p)| task.is_none_or(|t| t.partition == *p))
                .collect();
            if let Some(task) = task
                && all.is_empty()
            {
                return Err(ConnectorError::Other(format!(
                    "table '{table}': {task} reads partition {} of {}, which has no such \
                     partition",
                    task.partition,
                    describe_topics(&config)
                )));
            }
            let mine: Vec<(String, i32)> = all
                .into_iter()
                .enumerate()
                .filter(|(i, _)| i % parallelism == subtask)
                .map(|(_, tp)| tp)
                .collect();
            let mut owned = BTreeMap::new();
            let mut tpl = TopicPartitionList::new();
            let starts = start_offsets(&consumer, &config, &mine, restored.as_ref(), &table)?;
            for ((t, p), start) in mine.iter().zip(starts) {
                // Symbolic starts become offsets now, so that a checkpoint taken before
                // the first record still says exactly where to resume.
                let (low, high) = consumer
                    .fetch_watermarks(t, *p, CHECK_TIMEOUT)
                    .map_err(|e| {
                        ConnectorError::Other(format!("table '{table}': offsets of {t}/{p}: {e}"))
                    })?;
                let next = match start {
                    Offset::Offset(n) => n.max(low),
                    Offset::End => high,
                    _ => low,
                };
                tpl.add_partition_offset(t, *p, Offset::Offset(next))
                    .map_err(|e| {
                        ConnectorError::Other(format!("table '{table}': assigning {t}/{p}: {e}"))
                    })?;
                owned.insert((t.clone(), *p), Owned { next, done: false });
            }
            consumer.assign(&tpl).map_err(|e| {
                ConnectorError::Other(format!("table '{table}': assigning partitions: {e}"))
            })?;
            Ok((Arc::new(consumer), owned))
        })
        .await?;
        self.consumer = Some(consumer);
        self.owned = owned;
        Ok(())
    }

    /// Commits the read positions to the group, asynchronously: they are for Kafka's tools
    /// (lag) and for `group-offsets` starts; checkpoints hold the positions that count.
    fn commit(&self) {
        let Some(consumer) = &self.consumer else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &self.owned {
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(o.next));
        }
        if tpl.count() > 0
            && let Err(e) = consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::debug!(table = %self.table, error = %e, "committing offsets to the group");
        }
    }

    /// The client reached the end of partition `p` (reported only to bounded reads;
    /// librdkafka names no topic: with several topics the high watermark decides instead).
    fn reached_end(&mut self, p: i32) {
        if self.config.pattern.is_some() || self.config.topics.len() != 1 {
            return;
        }
        for ((_, q), o) in &mut self.owned {
            if *q == p {
                o.done = true;
            }
        }
    }

    /// Says where each partition of a bounded read that does not end stands.
    async fn report_stall(
        &self,
        consumer: &Arc<StreamConsumer<Quiet>>,
        positions: Option<&TopicPartitionList>,
    ) {
        for ((t, p), o) in self.owned.iter().filter(|(_, o)| !o.done) {
            let position = positions
                .and_then(|l| l.find_partition(t, *p))
                .map(|e| format!("{:?}", e.offset()));
            let cached = cached_high_watermark(consumer, t, *p);
            let c = consumer.clone();
            let (topic, partition) = (t.clone(), *p);
            let listed = crate::source::log::blocking("asking Kafka for offsets", move || {
                c.fetch_watermarks(&topic, partition, CHECK_TIMEOUT)
                    .map_err(|e| ConnectorError::Other(e.to_string()))
            })
            .await;
            tracing::warn!(table = %self.table, topic = %t, partition = p, next = o.next,
                position = ?position, fetched_high_watermark = ?cached, listed = ?listed,
                "a bounded read has been idle for {} s short of the partition's end",
                STALL_REPORT.as_secs());
        }
    }

    fn report(&mut self, e: &rdkafka::error::KafkaError) {
        if self
            .last_error
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            self.last_error = Some(Instant::now());
            tracing::warn!(table = %self.table, bootstrap = %self.config.bootstrap, error = %e,
                "Kafka read failed; the client retries");
        }
        self.metrics
            .set_problem(format!("Kafka at {}: {e}", self.config.bootstrap));
    }
}

/// The high watermark the last fetch of `topic`/`partition` reported, without asking the
/// broker (`None` before the first fetch). Kafka's ListOffsets answer would do at start,
/// but fetch responses are what some Kafka-protocol brokers keep exact.
fn cached_high_watermark(
    consumer: &StreamConsumer<Quiet>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives; the topic is a
    // NUL-terminated string; librdkafka only writes the two out-parameters.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// Where each partition starts: a restored position, else the startup mode.
fn start_offsets(
    consumer: &StreamConsumer<Quiet>,
    config: &KafkaConfig,
    parts: &[(String, i32)],
    restored: Option<&BTreeMap<(String, i32), i64>>,
    table: &str,
) -> Result<Vec<Offset>, ConnectorError> {
    let fail = |what: &str, e: rdkafka::error::KafkaError| {
        ConnectorError::Other(format!("table '{table}': {what}: {e}"))
    };
    if let Some(r) = restored {
        // Partitions not in the checkpoint are new since: read them from the start.
        return Ok(parts
            .iter()
            .map(|tp| r.get(tp).map_or(Offset::Beginning, |n| Offset::Offset(*n)))
            .collect());
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition(t, *p);
    }
    Ok(match &config.startup {
        Startup::Earliest => vec![Offset::Beginning; parts.len()],
        Startup::Latest => vec![Offset::End; parts.len()],
        Startup::Specific(map) => parts
            .iter()
            .map(|(_, p)| map.get(p).map_or(Offset::Beginning, |n| Offset::Offset(*n)))
            .collect(),
        Startup::GroupOffsets => {
            let committed = consumer
                .committed_offsets(tpl, CHECK_TIMEOUT)
                .map_err(|e| fail("reading the group's committed offsets", e))?;
            found_offsets(&committed, parts, Offset::Beginning)
        }
        Startup::Timestamp(ms) => {
            let mut query = TopicPartitionList::new();
            for (t, p) in parts {
                query
                    .add_partition_offset(t, *p, Offset::Offset(*ms))
                    .map_err(|e| fail("asking for offsets by time", e))?;
            }
            let found = consumer
                .offsets_for_times(query, CHECK_TIMEOUT)
                .map_err(|e| fail("asking for offsets by time", e))?;
            found_offsets(&found, parts, Offset::End)
        }
    })
}

/// The offset `list` gives each of `parts`, or `otherwise` where it gives none.
fn found_offsets(
    list: &TopicPartitionList,
    parts: &[(String, i32)],
    otherwise: Offset,
) -> Vec<Offset> {
    parts
        .iter()
        .map(
            |(t, p)| match list.find_partition(t, *p).map(|e| e.offset()) {
                Some(Offset::Offset(n)) => Offset::Offset(n),
                _ => otherwise,
            },
        )
        .collect()
}

#[async_trait]
impl Source for KafkaSource {
    async fn poll(&mut self) -> Result<SourcePoll, ConnectorError> {
        if self.consumer.is_none() {
            self.connect().await?;
        }
        if !self.checkpointing && self.last_commit.elapsed() >= COMMIT_INTERVAL {
            self.last_commit = Instant::now();
            self.commit();
        }
        if self.owned.values().all(|o| o.done) {
            if self.config.bounded {
                self.commit();
                return Ok(SourcePoll::End);
            }
            if self.owned.is_empty() {
                // More subtasks than partitions: this one idles.
                tokio::time::sleep(POLL_WAIT).await;
                return Ok(SourcePoll::Pending);
            }
        }
        let Some(consumer) = self.consumer.clone() else {
            return Ok(SourcePoll::Pending);
        };
        let deadline = tokio::time::Instant::now() + POLL_WAIT;
        let mut got: Vec<(String, i32, StoredRecord)> = Vec::new();
        let mut bytes = 0u64;
        while got.len() < self.batch_size {
            // Wait for the first record; after it, take only what is already here, so a
            // slow trickle is not held back to fill a batch.
            let next = if got.is_empty() {
                tokio::time::timeout_at(deadline, consumer.recv())
                    .await
                    .ok()
            } else {
                futures::FutureExt::now_or_never(consumer.recv())
            };
            let m = match next {
                None => break,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    self.reached_end(p);
                    continue;
                }
                Some(Err(e)) => {
                    self.report(&e);
                    break;
                }
                Some(Ok(m)) => m,
            };
            let key = (m.topic().to_string(), m.partition());
            let Some(o) = self.owned.get_mut(&key) else {
                continue;
            };
            o.next = m.offset() + 1;
            if let Some(up) = self.upstream.as_mut()
                && let Some(mark) = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == crate::sink::kafka::WATERMARK_HEADER)
                        .and_then(|h| h.value)
                })
            {
                up.note(mark);
                continue;
            }
            let value = m.payload().unwrap_or_default().to_vec();
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            bytes += value.len() as u64;
            got.push((
                key.0,
                key.1,
                StoredRecord {
                    offset: m.offset().max(0) as u64,
                    timestamp: m.timestamp().to_millis().unwrap_or(0),
                    event_time: None,
                    key: m.key().map(<[u8]>::to_vec),
                    value,
                    headers,
                },
            ));
        }
        if got.is_empty() {
            if self.config.bounded {
                // Idle for a whole poll: every fetched record was handed out. A partition
                // whose position reached the high watermark of the last fetch is done.
                // The consumer's own position also steps over transaction markers, which
                // are never handed out (a read_committed reader ends past the last one).
                let positions = consumer.position().ok();
                for ((t, p), o) in &mut self.owned {
                    let at = positions
                        .as_ref()
                        .and_then(|l| l.find_partition(t, *p))
                        .and_then(|e| match e.offset() {
                            Offset::Offset(n) => Some(n),
                            _ => None,
                        })
                        .map_or(o.next, |n| n.max(o.next));
                    if let Some(high) = cached_high_watermark(&consumer, t, *p)
                        && at >= high
                    {
                        o.done = true;
                    }
                }
                let since = *self.idle_since.get_or_insert_with(Instant::now);
                if !self.stall_reported
                    && since.elapsed() >= STALL_REPORT
                    && self.owned.values().any(|o| !o.done)
                {
                    self.stall_reported = true;
                    self.report_stall(&consumer, positions.as_ref()).await;
                }
            }
            return Ok(SourcePoll::Pending);
        }
        self.idle_since = None;
        self.metrics.bytes.add(bytes);
        self.metrics.clear_problem();
        // One decode per partition, so that each partition's rows are contiguous and
        // counted for its own watermark (and dead letters name the topic).
        let mut groups: BTreeMap<(String, i32), Vec<StoredRecord>> = BTreeMap::new();
        for (t, p, r) in got {
            groups.entry((t, p)).or_default().push(r);
        }
        let mut batches = Vec::new();
        self.last_splits.clear();
        for ((topic, p), records) in &groups {
            let decoded = match &mut self.keys {
                Some(keys) => {
                    let schema = self.decode.schema().clone();
                    let upsert = self.config.upsert;
                    keyed_rows(
                        &mut self.decode,
                        keys,
                        upsert,
                        &schema,
                        topic,
                        *p as u32,
                        records,
                    )
                    .await?
                }
                None if self.changelog => {
                    let reads: Vec<Read<'_>> = records.iter().map(|r| (*p as u32, r)).collect();
                    changelog_rows(&mut self.decode, topic, &reads).await?
                }
                None => {
                    let reads: Vec<Read<'_>> = records.iter().map(|r| (*p as u32, r)).collect();
                    self.decode.decode(topic, &reads).await?
                }
            };
            if let Some(b) = decoded {
                self.last_splits
                    .push((format!("{topic}/{p}"), b.num_rows()));
                batches.push(b);
            }
        }
        let batch = match batches.len() {
            0 => return Ok(SourcePoll::Pending),
            1 => batches.remove(0),
            _ => arrow::compute::concat_batches(&batches[0].schema(), &batches)?,
        };
        self.metrics.rows.add(batch.num_rows() as u64);
        Ok(SourcePoll::Batch(batch))
    }

    fn splits(&self) -> Vec<String> {
        self.owned.keys().map(|(t, p)| format!("{t}/{p}")).collect()
    }

    fn batch_splits(&mut self) -> Vec<(String, usize)> {
        std::mem::take(&mut self.last_splits)
    }

    fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    fn watermark(&mut self) -> Option<runnel_common::Watermark> {
        self.upstream.as_ref().and_then(Upstream::watermark)
    }

    fn position(&self) -> Option<serde_json::Value> {
        // Asked at each checkpoint: a good moment to show progress to the group too, and
        // to note how far behind the input's end the source is.
        self.commit();
        if let Some(consumer) = &self.consumer {
            let lag: i64 = self
                .owned
                .iter()
                .filter_map(|((t, p), o)| {
                    cached_high_watermark(consumer, t, *p).map(|h| (h - o.next).max(0))
                })
                .sum();
            self.metrics.lag.set(lag);
        }
        let mut map: serde_json::Map<String, serde_json::Value> = self
            .owned
            .iter()
            .map(|((t, p), o)| (format!("{t}/{p}"), o.next.into()))
            .collect();
        // Not connected yet after a restore: the restored positions still stand.
        if self.consumer.is_none()
            && let Some(r) = &self.restored
        {
            map = r
                .iter()
                .map(|((t, p), n)| (format!("{t}/{p}"), (*n).into()))
                .collect();
        }
        if let Some(up) = &self.upstream {
            for (writer, (ms, idle)) in &up.marks {
                map.insert(
                    format!("{MARK_PREFIX}{writer}"),
                    serde_json::json!({ "watermark": ms, "idle": idle }),
                );
            }
        }
        Some(serde_json::Value::Object(map))
    }

    async fn seek(&mut self, position: &serde_json::Value) -> Result<(), ConnectorError> {
        let Some(map) = position.as_object() else {
            return Err(ConnectorError::Other(format!(
                "table '{}': cannot resume the kafka source from position {position}; \
                 expected {{\"<topic>/<partition>\": <offset>, …}}",
                self.table
            )));
        };
        let restored: BTreeMap<(String, i32), i64> = map
            .iter()
            .filter_map(|(k, v)| {
                let (t, p) = k.rsplit_once('/')?;
                Some(((t.to_string(), p.parse().ok()?), v.as_i64()?))
            })
            .collect();
        self.restored = Some(restored);
        if let Some(up) = self.upstream.as_mut() {
            // The writers' watermarks as they stood: restored windows fire as before.
            up.marks = map
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        k.strip_prefix(MARK_PREFIX)?.to_string(),
                        (v.get("watermark")?.as_i64()?, v.get("idle")?.as_bool()?),
                    ))
                })
                .collect();
        }
        self.consumer = None;
        Ok(())
    }
}
