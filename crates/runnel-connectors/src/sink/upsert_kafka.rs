//! `upsert-kafka` (sink): an updating result as a compacted-topic changelog, with Flink's
//! options. The record key is the table's `PRIMARY KEY (…) NOT ENFORCED` in `key.format`;
//! an insert or an update's new value is written as the row in `value.format`, a
//! retraction (a deletion, or an update's old value — a filter may drop the new one) as a
//! tombstone (the key with no value), as Flink's upsert sink does. Delivery is
//! the `kafka` sink's (at-least-once by default; `exactly-once` with checkpoints). Reading
//! such a topic back as a changelog is not supported yet.

use runnel_common::TableSpec;

use crate::descriptor::{self, Connector, Guarantee, OptionDef, OptionType};
use crate::source::kafka::{BOOTSTRAP_SERVERS, KafkaConfig, KafkaFormat, PROPERTIES};
use crate::{ConnectorError, Sink, SinkContext};

/// `connector = 'upsert-kafka'`.
pub const CONNECTOR: Connector = Connector {
    name: "upsert-kafka",
    doc: "an updating result written to a Kafka topic as upserts and tombstones, keyed by the PRIMARY KEY",
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
        OptionDef::new(
            "sink.delivery-guarantee",
            OptionType::Choice(&["none", "at-least-once", "exactly-once"]),
            "as for the kafka sink",
        )
        .default("at-least-once"),
        OptionDef::new(
            "sink.transactional-id-prefix",
            OptionType::Text,
            "prefix of the transactional ids of an exactly-once sink",
        ),
        OptionDef::new(
            "sink.parallelism",
            OptionType::Int { min: 1, max: 1024 },
            "accepted for Flink scripts; the pipeline's parallelism is used",
        ),
        OptionDef::new(
            "sink.buffer-flush.max-rows",
            OptionType::Int {
                min: 0,
                max: u64::MAX,
            },
            "accepted for Flink scripts; the client batches by itself",
        ),
        OptionDef::new(
            "sink.buffer-flush.interval",
            OptionType::Text,
            "accepted for Flink scripts; the client batches by itself",
        ),
    ],
    source: None,
    sink: Some(build),
    unbounded: descriptor::never_unbounded,
    guarantee: Guarantee::ExactlyOnce,
    updates: descriptor::takes_updates,
    needs: &[],
    validate,
    check: descriptor::no_check,
    metadata: &["timestamp", "headers"],
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
    Ok(config)
}

fn validate(spec: &TableSpec) -> Result<(), ConnectorError> {
    config(spec).map(|_| ())
}

fn build(
    spec: &TableSpec,
    contexts: Vec<SinkContext>,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
    crate::sink::kafka::build_with(spec, contexts, config(spec)?)
}
