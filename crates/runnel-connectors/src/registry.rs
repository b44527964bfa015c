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
        sink::dashboard::CONNECTOR,
        source::file::CONNECTOR,
        source::log::CONNECTOR,
        source::nexmark::CONNECTOR,
        sink::print::CONNECTOR,
    ]
}

/// The connector of `spec` (its `connector = '…'` option).
///
/// # Errors
/// [`ConnectorError::UnknownConnector`] listing the known names (and the closest one).
pub fn lookup(spec: &TableSpec) -> Result<Connector, ConnectorError> {
    let name = spec.connector();
    let all = connectors();
    all.iter()
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
