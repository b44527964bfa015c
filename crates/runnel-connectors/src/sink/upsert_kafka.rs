//! `upsert-kafka`: a compacted-topic changelog, with Flink's options. The record key is
//! the table's `PRIMARY KEY (…) NOT ENFORCED` in `key.format`.
//!
//! As a sink it takes an updating result: an insert or an update's new value is written
//! as the row in `value.format`, a retraction (a deletion, or an update's old value — a
//! filter may drop the new one) as a tombstone (the key with no value), as Flink's upsert
//! sink does. Delivery is the `kafka` sink's (at-least-once by default; `exactly-once`
//! with checkpoints).
//!
//! As a source it reads the topic from its start as a changelog: a record with a value
//! is the new row of its key, a tombstone (no or an empty value) deletes the key. The
//! plan follows the source with a normalize step keyed by the primary key (Flink's
//! ChangelogNormalize) that keeps each key's last row, so downstream operators see
//! `+I` for a new key, `-U`/`+U` for a change and `-D` with the deleted row.

use runnel_common::TableSpec;

use crate::descriptor::{
    self, CheckContext, CheckFuture, Connector, Guarantee, OptionDef, OptionType, Role,
};
use crate::source::kafka::{
    BOOTSTRAP_SERVERS, DEAD_LETTER_PATH, IDLE_TIMEOUT, KafkaConfig, KafkaFormat, PROPERTIES,
    SCAN_BOUNDED, Startup,
};
use crate::{ConnectorError, Sink, SinkContext, Source, SourceContext};

/// `connector = 'upsert-kafka'`.
pub const CONNECTOR: Connector = Connector {
    name: "upsert-kafka",
    doc: "a compacted Kafka topic as a changelog keyed by the PRIMARY KEY: upserts and tombstones",
    options: &[
        OptionDef::new("topic", OptionType::Text, "the topic").required(),
        BOOTSTRAP_SERVERS,
        PROPERTIES,
        OptionDef::new(
            "key.format",
            OptionType::Choice(&["json", "csv", "raw"]),
            "encoding of the key (the primary key columns)",
        )
        .required(),
        OptionDef::new(
            "value.format",
            OptionType::Choice(&["json", "csv", "raw"]),
            "encoding of the value",
        )
        .required(),
        OptionDef::new(
            "value.fields-include",
            OptionType::Choice(&["ALL", "EXCEPT_KEY"]),
            "whether the key columns are also in the value",
        )
        .default("ALL"),
        SCAN_BOUNDED,
        IDLE_TIMEOUT,
        DEAD_LETTER_PATH,
        OptionDef::new(
            "sink.delivery-guarantee",
            OptionType::Choice(&["none", "at-least-once", "exactly-once"]),
            "as for the kafka sink",
        )
        .default("at-least-once")
        .sink_only(),
        OptionDef::new(
            "sink.transactional-id-prefix",
            OptionType::Text,
            "prefix of the transactional ids of an exactly-once sink",
        )
        .sink_only(),
        OptionDef::new(
            "sink.parallelism",
            OptionType::Int { min: 1, max: 1024 },
            "accepted for Flink scripts; the pipeline's parallelism is used",
        )
        .sink_only(),
        OptionDef::new(
            "sink.buffer-flush.max-rows",
            OptionType::Int {
                min: 0,
                max: u64::MAX,
            },
            "accepted for Flink scripts; the client batches by itself",
        )
        .sink_only(),
        OptionDef::new(
            "sink.buffer-flush.interval",
            OptionType::Text,
            "accepted for Flink scripts; the client batches by itself",
        )
        .sink_only(),
    ],
    source: Some(build_source),
    sink: Some(build),
    unbounded: crate::source::kafka::never_ends,
    guarantee: Guarantee::ExactlyOnce,
    updates: descriptor::takes_updates,
    needs: &[],
    validate,
    check,
    metadata: &["timestamp", "partition", "offset", "headers", "topic"],
    upserts: true,
    lookup: None,
};

/// The `kafka` configuration of an upsert table: key = the primary key.
fn config(spec: &TableSpec) -> Result<KafkaConfig, ConnectorError> {
    CONNECTOR.check_options(spec)?;
    if spec.primary_key.is_empty() {
        return Err(ConnectorError::Other(format!(
            "table '{}': an upsert-kafka table needs PRIMARY KEY (…) NOT ENFORCED: its columns \
             are the record key",
            spec.name
        )));
    }
    let mut config = KafkaConfig::from_options(spec)?;
    let key_format = match spec.options.get("key.format") {
        Some("csv") => KafkaFormat::Csv,
        Some("raw") => KafkaFormat::Raw,
        _ => KafkaFormat::Json,
    };
    config.key = Some((key_format, spec.primary_key.clone()));
    config.upsert = true;
    // A changelog is read whole: from the start (Flink's upsert-kafka has no startup mode).
    config.startup = Startup::Earliest;
    crate::source::kafka::key_format(spec, key_format, &spec.primary_key)?;
    Ok(config)
}

fn validate(spec: &TableSpec) -> Result<(), ConnectorError> {
    config(spec).map(|_| ())
}

fn check(spec: TableSpec, role: Role, _ctx: CheckContext) -> CheckFuture {
    Box::pin(async move { crate::source::kafka::check_with(config(&spec)?, &spec, role).await })
}

fn build_source(
    spec: &TableSpec,
    contexts: Vec<SourceContext>,
) -> Result<Vec<Box<dyn Source>>, ConnectorError> {
    crate::source::kafka::build_with(spec, contexts, config(spec)?)
}

fn build(
    spec: &TableSpec,
    contexts: Vec<SinkContext>,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
    crate::sink::kafka::build_with(spec, contexts, config(spec)?)
}
