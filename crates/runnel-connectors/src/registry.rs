//! Connector name → build function. One line per connector, alphabetical.
//!
//! Each build function validates the table's options (unknown keys are an
//! error naming the valid ones) and returns one instance per subtask.

use runnel_common::TableSpec;

use crate::{ConnectorError, Sink, SinkContext, Source, SourceContext, sink, source};

/// Builds the subtasks of a source table, one per context.
pub type SourceBuild =
    fn(&TableSpec, Vec<SourceContext>) -> Result<Vec<Box<dyn Source>>, ConnectorError>;
/// Builds the subtasks of a sink table, one per context.
pub type SinkBuild = fn(&TableSpec, Vec<SinkContext>) -> Result<Vec<Box<dyn Sink>>, ConnectorError>;

/// One connector: its name and what it can be used as.
pub struct Entry {
    /// The `connector = '…'` value.
    pub name: &'static str,
    /// Builds it as a source, if it can be one.
    pub source: Option<SourceBuild>,
    /// Builds it as a sink, if it can be one.
    pub sink: Option<SinkBuild>,
}

/// Every connector runnel knows, alphabetical.
pub fn connectors() -> Vec<Entry> {
    vec![
        Entry {
            name: "blackhole",
            source: None,
            sink: Some(sink::blackhole::build),
        },
        Entry {
            name: "dashboard",
            source: None,
            sink: Some(sink::dashboard::build),
        },
        Entry {
            name: "file",
            source: Some(source::file::build),
            sink: Some(sink::file::build),
        },
        Entry {
            name: "log",
            source: Some(source::log::build),
            sink: Some(sink::log::build),
        },
        Entry {
            name: "nexmark",
            source: Some(source::nexmark::build),
            sink: None,
        },
        Entry {
            name: "print",
            source: None,
            sink: Some(sink::print::build),
        },
    ]
}

fn lookup(spec: &TableSpec) -> Result<Entry, ConnectorError> {
    let name = spec.connector();
    connectors()
        .into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| ConnectorError::UnknownConnector {
            table: spec.name.clone(),
            name: name.to_string(),
            known: connectors()
                .iter()
                .map(|e| e.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Whether a source table never reaches an end (a `log` topic that is not bounded, a
/// `nexmark` generator without an event count). Files end.
pub fn source_never_ends(spec: &TableSpec) -> bool {
    match spec.connector() {
        "log" => source::log::never_ends(spec),
        "nexmark" => source::nexmark::never_ends(spec),
        _ => false,
    }
}

/// Builds one source instance per context for `spec`.
pub fn build_sources(
    spec: &TableSpec,
    contexts: Vec<SourceContext>,
) -> Result<Vec<Box<dyn Source>>, ConnectorError> {
    let entry = lookup(spec)?;
    let build = entry.source.ok_or_else(|| ConnectorError::Unsupported {
        table: spec.name.clone(),
        connector: entry.name.to_string(),
        reason: "can only be written to (it is a sink), not read from".into(),
    })?;
    build(spec, contexts)
}

/// Builds one sink instance per context for `spec`.
pub fn build_sinks(
    spec: &TableSpec,
    contexts: Vec<SinkContext>,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
    let entry = lookup(spec)?;
    let build = entry.sink.ok_or_else(|| ConnectorError::Unsupported {
        table: spec.name.clone(),
        connector: entry.name.to_string(),
        reason: "can only be read from (it is a source), not written to".into(),
    })?;
    build(spec, contexts)
}
