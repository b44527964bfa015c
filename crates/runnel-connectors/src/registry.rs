//! Every connector runnel knows, as a list of descriptors: one line per connector,
//! alphabetical. A connector's options, build functions, boundedness, guarantee and
//! health check all live in its [`Connector`] value, in its own file.

use runnel_common::TableSpec;

use crate::descriptor::Connector;
use crate::{ConnectorError, Sink, SinkContext, Source, SourceContext, sink, source};

/// Every connector runnel knows, alphabetical.
pub fn connectors() -> Vec<Connector> {
    vec![
        sink::blackhole::CONNECTOR,
        #[cfg(feature = "camera")]
        source::camera::CONNECTOR,
        sink::dashboard::CONNECTOR,
        #[cfg(feature = "delta")]
        sink::delta::CONNECTOR,
        source::file::CONNECTOR,
        sink::filesystem::CONNECTOR,
        #[cfg(feature = "postgres")]
        sink::postgres::JDBC,
        #[cfg(feature = "kafka")]
        source::kafka::CONNECTOR,
        source::log::CONNECTOR,
        #[cfg(feature = "mqtt")]
        source::mqtt::CONNECTOR,
        #[cfg(feature = "nats")]
        source::nats::CONNECTOR,
        source::nexmark::CONNECTOR,
        #[cfg(feature = "postgres")]
        sink::postgres::CONNECTOR,
        sink::print::CONNECTOR,
        #[cfg(feature = "kafka")]
        sink::upsert_kafka::CONNECTOR,
    ]
}

/// Connectors that exist but are not offered: `collect`, the implicit sink of a bare
/// `SELECT` in `runnel query`.
const HIDDEN: &[Connector] = &[sink::collect::CONNECTOR];

/// The connector of `spec` (its `connector = '…'` option).
///
/// # Errors
/// [`ConnectorError::UnknownConnector`] listing the known names (and the closest one).
pub fn lookup(spec: &TableSpec) -> Result<Connector, ConnectorError> {
    let name = spec.connector();
    let all = connectors();
    all.iter()
        .chain(HIDDEN)
        .find(|c| c.name == name)
        .copied()
        .ok_or_else(|| ConnectorError::UnknownConnector {
            table: spec.name.clone(),
            name: name.to_string(),
            known: format!(
                "{}{}",
                all.iter().map(|c| c.name).collect::<Vec<_>>().join(", "),
                runnel_common::options::did_you_mean(name, all.iter().map(|c| c.name))
            ),
        })
}

/// Whether a source table never reaches an end (a `log` topic that is not bounded, a
/// `nexmark` generator without an event count). Files end.
pub fn source_never_ends(spec: &TableSpec) -> bool {
    lookup(spec).is_ok_and(|c| c.never_ends(spec))
}

/// Builds one source instance per context for `spec`.
pub fn build_sources(
    spec: &TableSpec,
    contexts: Vec<SourceContext>,
) -> Result<Vec<Box<dyn Source>>, ConnectorError> {
    let connector = lookup(spec)?;
    let build = connector
        .source
        .ok_or_else(|| ConnectorError::Unsupported {
            table: spec.name.clone(),
            connector: connector.name.to_string(),
            reason: "can only be written to (it is a sink), not read from".into(),
        })?;
    build(spec, contexts)
}

/// Builds one sink instance per context for `spec`.
pub fn build_sinks(
    spec: &TableSpec,
    contexts: Vec<SinkContext>,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
    let connector = lookup(spec)?;
    let build = connector.sink.ok_or_else(|| ConnectorError::Unsupported {
        table: spec.name.clone(),
        connector: connector.name.to_string(),
        reason: "can only be read from (it is a source), not written to".into(),
    })?;
    build(spec, contexts)
}

/// The look-up side of a lookup join on `spec`, keyed by its columns `keys`. A bounded
/// table is read in full through its source (with `context`) when the join starts.
///
/// # Errors
/// The table is a sink only, or never ends.
pub fn lookup_table(
    spec: &TableSpec,
    keys: Vec<usize>,
    context: SourceContext,
) -> Result<std::sync::Arc<dyn crate::lookup::LookupTable>, ConnectorError> {
    let connector = lookup(spec)?;
    let unsupported = |reason: &str| ConnectorError::Unsupported {
        table: spec.name.clone(),
        connector: connector.name.to_string(),
        reason: reason.to_string(),
    };
    if let Some(build) = connector.lookup {
        return build(spec, keys);
    }
    if connector.source.is_none() {
        return Err(unsupported(
            "can only be written to, so it cannot be looked up (FOR SYSTEM_TIME AS OF)",
        ));
    }
    if connector.never_ends(spec) {
        return Err(unsupported(
            "never ends, so it cannot be loaded for look-ups: a lookup join (FOR SYSTEM_TIME \
             AS OF) reads a bounded table, such as a file",
        ));
    }
    Ok(std::sync::Arc::new(crate::lookup::ScannedTable::new(
        spec.clone(),
        keys,
        context,
    )))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};
    use runnel_common::Options;

    use super::*;

    /// Every connector rejects an unknown option by name (with the closest real one),
    /// documents every option, and can be used as something.
    #[test]
    fn every_connector_names_unknown_options_and_documents_its_own() {
        let names: Vec<&str> = connectors().iter().map(|c| c.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "the registry is alphabetical");
        for c in connectors() {
            assert!(c.is_source() || c.is_sink(), "{}", c.name);
            assert!(!c.doc.is_empty(), "{}", c.name);
            for o in c.options {
                assert!(!o.doc.is_empty(), "{}.{}", c.name, o.key);
            }
            let mut opts = vec![("connector".to_string(), c.name.to_string())];
            opts.extend(c.options.iter().filter(|o| o.required).map(|o| {
                let value = match (o.default, o.ty) {
                    (Some(d), _) => d,
                    (None, crate::descriptor::OptionType::Choice(c)) => c[0],
                    (None, _) => "x",
                };
                (o.key.to_string(), value.to_string())
            }));
            opts.push(("no-such-option".into(), "1".into()));
            let spec = TableSpec {
                line: 1,
                name: "t".into(),
                schema: Arc::new(Schema::new(vec![Field::new("v", DataType::Utf8, true)])),
                watermark: None,
                metadata: Vec::new(),
                primary_key: Vec::new(),
                partition_keys: Vec::new(),
                options: Options::new(opts),
            };
            let err = c.validate(&spec).expect_err(c.name).to_string();
            assert!(
                err.contains("unknown option 'no-such-option'"),
                "{}: {err}",
                c.name
            );
        }
    }
}
