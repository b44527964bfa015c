//! What a connector is, in one value: its name, every `WITH (…)` option with type,
//! default and doc, what it can be used as, whether it ends, what it promises, what
//! shared resources it needs, and its health check.
//!
//! The registry is a list of these ([`crate::registry::connectors`]). The planner asks
//! [`Connector::validate`] about each `CREATE TABLE` (so a typo is reported with its line
//! and column), `runnel connectors` prints them, and the runtime runs
//! [`Connector::check`] for every table before any data flows.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use runnel_common::options::did_you_mean;
use runnel_common::{OptionError, TableSpec};

use crate::{ConnectorError, Sink, SinkContext, Source, SourceContext};

/// Builds the subtasks of a source table, one per context.
pub type SourceBuild =
    fn(&TableSpec, Vec<SourceContext>) -> Result<Vec<Box<dyn Source>>, ConnectorError>;
/// Builds the subtasks of a sink table, one per context.
pub type SinkBuild = fn(&TableSpec, Vec<SinkContext>) -> Result<Vec<Box<dyn Sink>>, ConnectorError>;
/// Builds the look-up side of a lookup join on a table, keyed by its columns `keys`.
pub type LookupBuild = fn(
    &TableSpec,
    Vec<usize>,
)
    -> Result<std::sync::Arc<dyn crate::lookup::LookupTable>, ConnectorError>;
/// A health check's result, computed off the planner (it may touch disks or networks).
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<(), ConnectorError>> + Send>>;
/// Runs a table's health check.
pub type CheckFn = fn(TableSpec, Role, CheckContext) -> CheckFuture;

/// How a table is used by a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read from.
    Source,
    /// Written to.
    Sink,
    /// Either (an option that applies to both).
    Both,
}

impl Role {
    fn covers(self, other: Role) -> bool {
        self == Role::Both || other == Role::Both || self == other
    }

    fn label(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Sink => "sink",
            Role::Both => "source, sink",
        }
    }
}

/// What a sink promises about rows it wrote when the pipeline restarts from a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// Rows since the last checkpoint may be written again.
    AtLeastOnce,
    /// Every row is visible exactly once (rows become visible when their checkpoint completes).
    ExactlyOnce,
}

/// A resource of the run a connector needs; the runtime provides it before building.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// The embedded durable log.
    Log,
    /// The results hub the web page reads (`dashboard`).
    ResultsHub,
}

/// The type of an option's value, checked at planning time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionType {
    /// Any text.
    Text,
    /// A file or directory path.
    Path,
    /// `true` or `false`.
    Bool,
    /// A whole number in `min..=max`.
    Int {
        /// Smallest valid value.
        min: u64,
        /// Largest valid value.
        max: u64,
    },
    /// One of these words.
    Choice(&'static [&'static str]),
    /// The name of one of the table's columns.
    Column,
}

impl OptionType {
    /// Short name for tables and errors.
    pub fn describe(&self) -> String {
        match self {
            OptionType::Text => "text".into(),
            OptionType::Path => "path".into(),
            OptionType::Bool => "true|false".into(),
            OptionType::Int { min, max } if *max == u64::MAX => format!("integer >= {min}"),
            OptionType::Int { min, max } => format!("integer {min}..{max}"),
            OptionType::Choice(c) => c.join("|"),
            OptionType::Column => "column".into(),
        }
    }

    /// Why `value` is not valid for this type, if it is not.
    fn reject(&self, value: &str, spec: &TableSpec) -> Option<String> {
        match self {
            OptionType::Text | OptionType::Path => None,
            OptionType::Bool => (!matches!(value, "true" | "false"))
                .then(|| "expected 'true' or 'false'".to_string()),
            OptionType::Int { min, max } => match value.trim().parse::<u64>() {
                Ok(n) if (*min..=*max).contains(&n) => None,
                _ if *max == u64::MAX => Some(format!("expected a whole number >= {min}")),
                _ => Some(format!("expected a whole number from {min} to {max}")),
            },
            OptionType::Choice(choices) => (!choices.contains(&value)).then(|| {
                format!(
                    "expected one of {}{}",
                    choices.join(", "),
                    did_you_mean(value, choices.iter().copied())
                )
            }),
            OptionType::Column => spec.schema.field_with_name(value).is_err().then(|| {
                let names: Vec<&str> = spec
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                format!(
                    "not a column of the table{}; columns: {}",
                    did_you_mean(value, names.iter().copied()),
                    names.join(", ")
                )
            }),
        }
    }
}

/// One `WITH (…)` option of a connector.
#[derive(Debug, Clone, Copy)]
pub struct OptionDef {
    /// The key, as written in `WITH (…)`.
    pub key: &'static str,
    /// Its value's type.
    pub ty: OptionType,
    /// The default, as the user would read it (`None`: no value, or required).
    pub default: Option<&'static str>,
    /// The table cannot be used without it.
    pub required: bool,
    /// Used when the table is read, written, or both.
    pub role: Role,
    /// One line: what it is for.
    pub doc: &'static str,
}

impl OptionDef {
    /// An optional option used both ways, with no default.
    pub const fn new(key: &'static str, ty: OptionType, doc: &'static str) -> Self {
        OptionDef {
            key,
            ty,
            default: None,
            required: false,
            role: Role::Both,
            doc,
        }
    }

    /// The same, required.
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// The same, with a default.
    pub const fn default(mut self, default: &'static str) -> Self {
        self.default = Some(default);
        self
    }

    /// The same, only read by sources.
    pub const fn source_only(mut self) -> Self {
        self.role = Role::Source;
        self
    }

    /// The same, only read by sinks.
    pub const fn sink_only(mut self) -> Self {
        self.role = Role::Sink;
        self
    }
}

/// What a health check may use.
#[derive(Debug, Clone)]
pub struct CheckContext {
    /// The pipeline's data directory.
    pub data_dir: PathBuf,
    /// The embedded log, when the pipeline has one.
    pub log: Option<Arc<runnel_log::Log>>,
}

/// One connector: the single source of truth about it.
#[derive(Clone, Copy)]
pub struct Connector {
    /// The `connector = '…'` value.
    pub name: &'static str,
    /// One line: what it connects to.
    pub doc: &'static str,
    /// Every option besides `connector`.
    pub options: &'static [OptionDef],
    /// Builds it as a source, if it can be one.
    pub source: Option<SourceBuild>,
    /// Builds it as a sink, if it can be one.
    pub sink: Option<SinkBuild>,
    /// Whether a source table of it never ends (given its options).
    pub unbounded: fn(&TableSpec) -> bool,
    /// What it promises as a sink in a checkpointed pipeline.
    pub guarantee: Guarantee,
    /// Whether a sink table of it (given its options) takes an updating result: rows
    /// with a row kind (`+I`, `-U`, `+U`, `-D`). Append-only sinks refuse one at planning.
    pub updates: fn(&TableSpec) -> bool,
    /// Shared resources it needs.
    pub needs: &'static [Resource],
    /// Checks beyond the option types (columns the format needs, value combinations);
    /// run at planning time, so it must not touch disks or networks.
    pub validate: fn(&TableSpec) -> Result<(), ConnectorError>,
    /// The health check run before data flows (a missing file, an unreachable broker).
    pub check: CheckFn,
    /// The keys of `METADATA [FROM 'key']` columns it fills (none: such columns are refused).
    pub metadata: &'static [&'static str],
    /// As a source, its rows are upserts keyed by the table's PRIMARY KEY (a new value
    /// per key, or a deletion carrying only the key), which the plan turns into a
    /// changelog (`upsert-kafka`).
    pub upserts: bool,
    /// Answers look-ups by key itself (a database queried per batch of keys); `None`: a
    /// bounded table of it is read in full and indexed when a lookup join starts.
    pub lookup: Option<LookupBuild>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A source that never ends whatever its options.
pub fn always_unbounded(_: &TableSpec) -> bool {
    true
}

/// A source (or a sink-only connector) that ends.
pub fn never_unbounded(_: &TableSpec) -> bool {
    false
}

/// A sink that takes changelogs whatever its options.
pub fn takes_updates(_: &TableSpec) -> bool {
    true
}

/// An append-only sink (or a source-only connector).
pub fn append_only(_: &TableSpec) -> bool {
    false
}

/// A sink that writes a changelog's row kind as an `op` field with `format = 'json'`
/// (the default) and is append-only with other formats.
pub fn updates_with_json(spec: &TableSpec) -> bool {
    spec.options.get("format").is_none_or(|f| f == "json")
}

/// No checks beyond the option types.
pub fn no_validation(_: &TableSpec) -> Result<(), ConnectorError> {
    Ok(())
}

/// A health check with nothing to check.
pub fn no_check(_: TableSpec, _: Role, _: CheckContext) -> CheckFuture {
    Box::pin(async { Ok(()) })
}

impl Connector {
    /// Whether it can be read from.
    pub fn is_source(&self) -> bool {
        self.source.is_some()
    }

    /// Whether it can be written to.
    pub fn is_sink(&self) -> bool {
        self.sink.is_some()
    }

    /// The option called `key`; an option whose key ends in `.*` (`properties.*`) stands
    /// for every key with that prefix.
    pub fn option(&self, key: &str) -> Option<&OptionDef> {
        self.options.iter().find(|o| {
            o.key == key
                || o.key
                    .strip_suffix('*')
                    .is_some_and(|prefix| key.len() > prefix.len() && key.starts_with(prefix))
        })
    }

    /// Checks `spec`'s options ([`Connector::check_options`]), then the connector's own
    /// checks.
    ///
    /// # Errors
    /// [`ConnectorError::Option`] naming the key, or the connector's own error.
    pub fn validate(&self, spec: &TableSpec) -> Result<(), ConnectorError> {
        self.check_options(spec)?;
        for m in &spec.metadata {
            if !self.metadata.contains(&m.key.as_str()) {
                let column = spec.schema.field(m.column).name().clone();
                return Err(ConnectorError::Other(format!(
                    "table '{}': column '{column}' is METADATA FROM '{}', which the {} \
                     connector does not provide; {}",
                    spec.name,
                    m.key,
                    self.name,
                    if self.metadata.is_empty() {
                        "it has no metadata columns".to_string()
                    } else {
                        format!("its metadata keys: {}", self.metadata.join(", "))
                    }
                )));
            }
        }
        (self.validate)(spec)
    }

    /// Checks `spec`'s options: every key known (a typo gets "did you mean"), required keys
    /// present, values of the right type.
    ///
    /// # Errors
    /// [`ConnectorError::Option`] naming the key.
    pub fn check_options(&self, spec: &TableSpec) -> Result<(), ConnectorError> {
        let err = |source| ConnectorError::Option {
            table: spec.name.clone(),
            source,
        };
        for (key, value) in spec.options.iter() {
            // Set by runnel itself (a distributed run's repartition topics), never written
            // in a script.
            // `quality.*` (a table's validation rules) holds for every table; the planner
            // checks it.
            if key == "connector"
                || key.starts_with("quality.")
                || (key.starts_with("runnel.internal.") && spec.options.position(key).is_none())
            {
                continue;
            }
            let Some(def) = self.option(key) else {
                let keys: Vec<&str> = self.options.iter().map(|o| o.key).collect();
                return Err(err(OptionError::Unknown {
                    connector: self.name.to_string(),
                    key: key.to_string(),
                    known: if keys.is_empty() {
                        "none besides 'connector'".into()
                    } else {
                        keys.join(", ")
                    },
                }));
            };
            if let Some(reason) = def.ty.reject(value, spec) {
                return Err(err(OptionError::Invalid {
                    connector: self.name.to_string(),
                    key: key.to_string(),
                    value: value.to_string(),
                    reason,
                }));
            }
        }
        for def in self.options.iter().filter(|d| d.required) {
            if spec.options.get(def.key).is_none() {
                return Err(err(OptionError::Missing {
                    connector: self.name.to_string(),
                    key: def.key.to_string(),
                }));
            }
        }
        Ok(())
    }

    /// Whether `spec`, read as a source, never ends.
    pub fn never_ends(&self, spec: &TableSpec) -> bool {
        self.is_source() && (self.unbounded)(spec)
    }

    /// Runs the health check of `spec` used as `role`.
    pub fn check(&self, spec: &TableSpec, role: Role, ctx: CheckContext) -> CheckFuture {
        (self.check)(spec.clone(), role, ctx)
    }

    /// "source", "sink" or "source, sink".
    pub fn roles(&self) -> &'static str {
        match (self.is_source(), self.is_sink()) {
            (true, true) => Role::Both.label(),
            (true, false) => Role::Source.label(),
            _ => Role::Sink.label(),
        }
    }

    /// Options that apply to `role`.
    pub fn options_for(&self, role: Role) -> impl Iterator<Item = &OptionDef> {
        self.options.iter().filter(move |o| o.role.covers(role))
    }
}

/// The connectors and their options as a Markdown table (what the README lists and
/// `runnel connectors --markdown` prints).
pub fn markdown(connectors: &[Connector]) -> String {
    let mut s = String::from(
        "| connector | use | guarantee (sink) | option | type | default | what it is for |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for c in connectors {
        let guarantee = if c.is_sink() {
            match c.guarantee {
                Guarantee::AtLeastOnce => "at-least-once",
                Guarantee::ExactlyOnce => "exactly-once",
            }
        } else {
            ""
        };
        s.push_str(&format!(
            "| `{}` | {} | {} | | | | {} |\n",
            c.name,
            c.roles(),
            guarantee,
            c.doc
        ));
        for o in c.options {
            let default = match (o.required, o.default) {
                (true, _) => "required".to_string(),
                (false, Some(d)) => format!("`{d}`"),
                (false, None) => String::new(),
            };
            let only = match o.role {
                Role::Both => "",
                Role::Source => " (source)",
                Role::Sink => " (sink)",
            };
            s.push_str(&format!(
                "| | | | `{}` | {} | {} | {}{} |\n",
                o.key,
                o.ty.describe().replace('|', "\\|"),
                default,
                o.doc,
                only
            ));
        }
    }
    s
}

/// A connector's options followed by the `s3.*` options a table with an `s3://` path
/// takes (the pipeline's `SET 's3.…'` settings fill in those it leaves out).
macro_rules! with_s3_options {
    ($($own:expr),* $(,)?) => {
        &[
            $($own,)*
            $crate::descriptor::OptionDef::new(
                "s3.endpoint",
                $crate::descriptor::OptionType::Text,
                "S3-compatible endpoint for an s3:// path (default: SET 's3.endpoint', else AWS)",
            ),
            $crate::descriptor::OptionDef::new(
                "s3.region",
                $crate::descriptor::OptionType::Text,
                "S3 region (default: SET 's3.region')",
            ),
            $crate::descriptor::OptionDef::new(
                "s3.access-key",
                $crate::descriptor::OptionType::Text,
                "S3 access key id (default: SET 's3.access-key', AWS_ACCESS_KEY_ID)",
            ),
            $crate::descriptor::OptionDef::new(
                "s3.secret-key",
                $crate::descriptor::OptionType::Text,
                "S3 secret key (default: SET 's3.secret-key', AWS_SECRET_ACCESS_KEY)",
            ),
            $crate::descriptor::OptionDef::new(
                "s3.allow-http",
                $crate::descriptor::OptionType::Bool,
                "allow a plain-HTTP S3 endpoint",
            ),
        ]
    };
}
pub(crate) use with_s3_options;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};
    use runnel_common::Options;

    use super::*;

    const OPTS: &[OptionDef] = &[
        OptionDef::new("path", OptionType::Path, "where").required(),
        OptionDef::new("format", OptionType::Choice(&["json", "csv"]), "how").default("json"),
        OptionDef::new("key", OptionType::Column, "which column"),
    ];

    fn conn() -> Connector {
        Connector {
            name: "t",
            doc: "test",
            options: OPTS,
            source: None,
            sink: None,
            unbounded: never_unbounded,
            guarantee: Guarantee::AtLeastOnce,
            updates: takes_updates,
            needs: &[],
            validate: no_validation,
            check: no_check,
            metadata: &[],
            upserts: false,
            lookup: None,
        }
    }

    fn spec(opts: &[(&str, &str)]) -> TableSpec {
        TableSpec {
            line: 1,
            name: "tbl".into(),
            schema: Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
            watermark: None,
            metadata: Vec::new(),
            primary_key: Vec::new(),
            partition_keys: Vec::new(),
            options: Options::new(opts.iter().map(|(k, v)| (k.to_string(), v.to_string()))),
        }
    }

    #[test]
    fn typos_types_and_missing_keys_are_named() {
        let c = conn();
        assert!(c.validate(&spec(&[("path", "x")])).is_ok());
        let e = c.validate(&spec(&[("pth", "x")])).unwrap_err().to_string();
        assert!(
            e.contains("unknown option 'pth'") && e.contains("did you mean 'path'"),
            "{e}"
        );
        let e = c
            .validate(&spec(&[("path", "x"), ("format", "jsn")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expected one of json, csv; did you mean 'json'?"),
            "{e}"
        );
        let e = c
            .validate(&spec(&[("format", "csv")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs option 'path'"), "{e}");
        let e = c
            .validate(&spec(&[("path", "x"), ("key", "idd")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean 'id'"), "{e}");
    }
}
