//! `postgres` (and Flink's `jdbc` with a `jdbc:postgresql://` URL): rows into a
//! PostgreSQL table.
//!
//! - **Append** (no `PRIMARY KEY`): rows go in with binary `COPY … FROM STDIN`.
//! - **Upsert** (`PRIMARY KEY (…) NOT ENFORCED`, also for updating queries): rows are
//!   copied into a temporary table, then the last change of each key is applied: an
//!   insert or an update's new value as `INSERT … ON CONFLICT (key) DO UPDATE`, a
//!   retraction (a deletion, or an update's old value without a new one) as a `DELETE`.
//! - **Exactly once** (with checkpoints), on the shared transactional-sink mechanism
//!   ([`crate::txn`]): a checkpoint's rows are staged as the `COPY` payload itself, and
//!   applied in one Postgres transaction that also moves this sink's row in the
//!   bookkeeping table `runnel_sink_commits` (sink id → newest applied checkpoint) under
//!   a row lock; a batch whose checkpoint is already recorded is skipped, so a replay
//!   after a crash applies nothing twice, and two members applying the same task's batch
//!   (a zombie) are serialised by the lock.
//! - **At least once** (without checkpoints): rows are written every
//!   `sink.buffer-flush.max-rows` rows or `sink.buffer-flush.interval`, and at the end.
//!
//! The health check connects, creates the table from the DDL when it is missing and
//! `sink.create-table` is on, and checks every column's type against the table's (and
//! that the primary key has a unique index for `ON CONFLICT`), naming what differs.
//! Each column is encoded in the binary form of the Postgres column's own type; only
//! widening is allowed (`INT` into `bigint`, `FLOAT` into `double precision`), never a
//! narrowing that could fail mid-run.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType,
};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;
use futures::SinkExt as _;
use runnel_common::TableSpec;
use runnel_common::changelog::{self, RowKind};
use runnel_common::metrics::ConnectorMetrics;
use runnel_common::time::parse_duration_ms;
use tokio_postgres::{Client, NoTls};

use crate::descriptor::{
    self, CheckContext, CheckFuture, Connector, Guarantee, OptionDef, OptionType, Role,
};
use crate::sink::log_txn;
use crate::txn::{self, Apply, FINAL, Staging, Txn};
use crate::{ConnectorError, Sink, SinkContext};

const NAME: &str = "postgres";

/// The bookkeeping table of exactly-once sinks (in the connection's default schema).
const COMMITS_TABLE: &str = "runnel_sink_commits";

const OPTIONS: &[OptionDef] = &[
    OptionDef::new(
        "url",
        OptionType::Text,
        "postgres://user:password@host:port/database, or Flink's \
         jdbc:postgresql://host:port/database?user=…&password=…",
    )
    .required(),
    OptionDef::new(
        "table-name",
        OptionType::Text,
        "the table, optionally schema.table (unquoted names fold to lower case, as in \
         Postgres); required except for a source with 'scan.query'",
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
        "sink.create-table",
        OptionType::Bool,
        "create the table from the DDL (with its primary key) when it does not exist",
    )
    .default("false")
    .sink_only(),
    OptionDef::new(
        "sink.buffer-flush.max-rows",
        OptionType::Int {
            min: 1,
            max: u64::MAX,
        },
        "without checkpoints: rows buffered before they are written",
    )
    .default("5000")
    .sink_only(),
    OptionDef::new(
        "sink.buffer-flush.interval",
        OptionType::Text,
        "without checkpoints: buffered rows are written at least this often",
    )
    .default("1 s")
    .sink_only(),
    OptionDef::new(
        "sink.max-retries",
        OptionType::Int { min: 0, max: 100 },
        "a write that fails because the connection broke is retried this many times \
         (reconnecting, after 1, 2, 4 … s)",
    )
    .default("3")
    .sink_only(),
    OptionDef::new(
        "scan.query",
        OptionType::Text,
        "a bounded source reads this query's rows instead of the table (its columns named \
         as the DDL's)",
    )
    .source_only(),
    OptionDef::new(
        "scan.fetch-size",
        OptionType::Int {
            min: 1,
            max: u64::MAX,
        },
        "rows per batch a bounded source emits (default: the pipeline's batch size)",
    )
    .source_only(),
    OptionDef::new(
        "lookup.cache.max-rows",
        OptionType::Int {
            min: 0,
            max: u64::MAX,
        },
        "look-ups: rows kept in the cache, oldest evicted first (unset: no cache)",
    )
    .source_only(),
    OptionDef::new(
        "lookup.cache.ttl",
        OptionType::Text,
        "look-ups: how long a cached key's rows are used before they are asked again \
         (unset: until evicted)",
    )
    .source_only(),
    OptionDef::new(
        "lookup.cache.caching-missing-key",
        OptionType::Bool,
        "look-ups: also cache that a key has no row",
    )
    .default("true")
    .source_only(),
    OptionDef::new(
        "lookup.cache",
        OptionType::Choice(&["NONE", "PARTIAL", "none", "partial"]),
        "look-ups (Flink 1.16+): PARTIAL caches per lookup.partial-cache.*",
    )
    .source_only(),
    OptionDef::new(
        "lookup.partial-cache.max-rows",
        OptionType::Int {
            min: 0,
            max: u64::MAX,
        },
        "look-ups (Flink 1.16+): as lookup.cache.max-rows",
    )
    .source_only(),
    OptionDef::new(
        "lookup.partial-cache.expire-after-write",
        OptionType::Text,
        "look-ups (Flink 1.16+): as lookup.cache.ttl",
    )
    .source_only(),
    OptionDef::new(
        "lookup.partial-cache.cache-missing-key",
        OptionType::Bool,
        "look-ups (Flink 1.16+): as lookup.cache.caching-missing-key",
    )
    .source_only(),
    OptionDef::new(
        "lookup.max-retries",
        OptionType::Int { min: 0, max: 100 },
        "look-ups: a failed query is retried this many times (reconnecting); then the \
         stream rows that asked go to the dead letters",
    )
    .default("3")
    .source_only(),
    OptionDef::new(
        "connection.max-retry-timeout",
        OptionType::Text,
        "how long connecting may take (Flink's option)",
    )
    .default("10 s"),
];

/// `connector = 'postgres'`.
pub const CONNECTOR: Connector = Connector {
    name: NAME,
    doc: "a PostgreSQL table: written with binary COPY appends, or upserts and deletes by \
          the PRIMARY KEY, exactly once with checkpoints; read as a bounded scan (or \
          'scan.query'); looked up per batch of keys with a cache (FOR SYSTEM_TIME AS OF)",
    options: OPTIONS,
    source: Some(crate::source::postgres::build_source),
    sink: Some(build),
    unbounded: descriptor::never_unbounded,
    guarantee: Guarantee::ExactlyOnce,
    updates: has_primary_key,
    needs: &[],
    validate,
    check,
    metadata: &[],
    upserts: false,
    lookup: Some(crate::source::postgres::build_lookup),
};

/// `connector = 'jdbc'` (Flink's JDBC connector) with a `jdbc:postgresql://` URL.
pub const JDBC: Connector = Connector {
    name: "jdbc",
    doc: "Flink's JDBC connector, for PostgreSQL (jdbc:postgresql://…): as 'postgres'",
    ..CONNECTOR
};

fn has_primary_key(spec: &TableSpec) -> bool {
    !spec.primary_key.is_empty()
}

/// A table's settings.
#[derive(Clone)]
pub(crate) struct PgConfig {
    config: tokio_postgres::Config,
    /// `postgresql://host:port/database`, for messages (never the password).
    pub(crate) shown: String,
    /// The table, quoted: `"schema"."table"` or `"table"` (empty with only `scan.query`).
    pub(crate) target: String,
    /// The table (or the query) as given, for messages.
    pub(crate) target_shown: String,
    /// `scan.query`: what a source reads instead of the table.
    pub(crate) query: Option<String>,
    create: bool,
    flush_rows: usize,
    flush_interval: Duration,
    max_retries: u32,
    connect_timeout: Duration,
    /// Look-ups: rows cached (0: no cache), how long a cached key stays, retries.
    pub(crate) cache_rows: usize,
    pub(crate) cache_ttl: Option<Duration>,
    pub(crate) cache_missing: bool,
    pub(crate) lookup_retries: u32,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &self.shown)
            .field("table", &self.target_shown)
            .finish_non_exhaustive()
    }
}

pub(crate) fn bad_option(spec: &TableSpec, key: &str, message: String) -> ConnectorError {
    ConnectorError::Other(format!("table '{}': option '{key}': {message}", spec.name))
}

/// Quotes one identifier: as written in double quotes, else folded to lower case.
fn ident(part: &str) -> String {
    let name = match part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => part.to_lowercase(),
    };
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A column name of the DDL as Postgres sees it (folded to lower case) and quoted.
pub(crate) fn column_ident(name: &str) -> String {
    format!("\"{}\"", name.to_lowercase().replace('"', "\"\""))
}

impl PgConfig {
    pub(crate) fn parse(spec: &TableSpec) -> Result<PgConfig, ConnectorError> {
        let o = &spec.options;
        let url = o.get("url").unwrap_or_default().trim();
        let url_text = match url.strip_prefix("jdbc:") {
            Some(rest) if rest.starts_with("postgresql:") => rest.to_string(),
            Some(_) => {
                return Err(bad_option(
                    spec,
                    "url",
                    "only PostgreSQL JDBC URLs (jdbc:postgresql://host:port/database) are \
                     supported"
                        .into(),
                ));
            }
            None => url.to_string(),
        };
        if !(url_text.starts_with("postgres://") || url_text.starts_with("postgresql://")) {
            return Err(bad_option(
                spec,
                "url",
                "expected postgres://user@host:port/database (or jdbc:postgresql://…)".into(),
            ));
        }
        let mut config: tokio_postgres::Config = url_text
            .parse()
            .map_err(|e| bad_option(spec, "url", format!("not a PostgreSQL URL: {e}")))?;
        if let Some(u) = o.get("username") {
            config.user(u);
        }
        if let Some(p) = o.get("password") {
            config.password(p);
        }
        if config.get_user().is_none() {
            config.user(std::env::var("USER").unwrap_or_else(|_| "postgres".into()));
        }
        let host = config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let db = config
            .get_dbname()
            .map(str::to_string)
            .or_else(|| config.get_user().map(str::to_string))
            .unwrap_or_default();
        let shown = format!("postgresql://{host}:{port}/{db}");
        let table = o.get("table-name").unwrap_or_default().trim();
        let query = o
            .get("scan.query")
            .map(|q| q.trim().trim_end_matches(';').to_string())
            .filter(|q| !q.is_empty());
        if table.is_empty() && query.is_none() {
            return Err(bad_option(
                spec,
                "table-name",
                "is required (or, to read a query's rows, 'scan.query')".into(),
            ));
        }
        let target = if table.is_empty() {
            String::new()
        } else {
            table.split('.').map(ident).collect::<Vec<_>>().join(".")
        };
        let duration = |key: &str, default: &str| -> Result<Duration, ConnectorError> {
            let text = o.get(key).unwrap_or(default);
            parse_duration_ms(text)
                .filter(|ms| *ms >= 0)
                .map(|ms| Duration::from_millis(ms as u64))
                .ok_or_else(|| bad_option(spec, key, format!("'{text}' is not a duration")))
        };
        let number = |key: &str, default: u64| -> Result<u64, ConnectorError> {
            match o.get(key) {
                None => Ok(default),
                Some(t) => t
                    .trim()
                    .parse()
                    .map_err(|_| bad_option(spec, key, format!("'{t}' is not a number"))),
            }
        };
        let connect_timeout = duration("connection.max-retry-timeout", "10 s")?;
        config.connect_timeout(connect_timeout);
        config.application_name("runnel");
        // Values read back as text are in one form whatever the server's settings.
        config.options("-c TimeZone=UTC -c DateStyle=ISO,YMD -c extra_float_digits=3");
        let cache_rows = match (
            o.get("lookup.cache"),
            o.get("lookup.partial-cache.max-rows"),
            o.get("lookup.cache.max-rows"),
        ) {
            (Some(c), _, _) if c.eq_ignore_ascii_case("none") => 0,
            (_, Some(_), _) => number("lookup.partial-cache.max-rows", 0)?,
            (_, None, Some(_)) => number("lookup.cache.max-rows", 0)?,
            _ => 0,
        } as usize;
        let ttl_key = if o.get("lookup.partial-cache.expire-after-write").is_some() {
            "lookup.partial-cache.expire-after-write"
        } else {
            "lookup.cache.ttl"
        };
        let cache_ttl = match o.get(ttl_key) {
            Some(_) => Some(duration(ttl_key, "0 s")?),
            None => None,
        };
        let cache_missing = o
            .get("lookup.partial-cache.cache-missing-key")
            .or(o.get("lookup.cache.caching-missing-key"))
            .is_none_or(|v| v.eq_ignore_ascii_case("true"));
        Ok(PgConfig {
            config,
            shown,
            target,
            target_shown: if table.is_empty() {
                "(scan.query)".to_string()
            } else {
                table.to_string()
            },
            query,
            cache_rows,
            cache_ttl,
            cache_missing,
            lookup_retries: number("lookup.max-retries", 3)? as u32,
            create: o.get("sink.create-table") == Some("true"),
            flush_rows: number("sink.buffer-flush.max-rows", 5000)?.max(1) as usize,
            flush_interval: duration("sink.buffer-flush.interval", "1 s")?,
            max_retries: number("sink.max-retries", 3)? as u32,
            connect_timeout,
        })
    }

    /// Connects; the connection task runs on `spawn`'s runtime.
    pub(crate) async fn connect(&self, on_io_runtime: bool) -> Result<Client, ConnectorError> {
        let (client, connection) =
            tokio::time::timeout(self.connect_timeout, self.config.connect(NoTls))
                .await
                .map_err(|_| {
                    ConnectorError::Other(format!(
                        "cannot reach PostgreSQL at {}: no answer within {:?}",
                        self.shown, self.connect_timeout
                    ))
                })?
                .map_err(|e| {
                    ConnectorError::Other(format!(
                        "cannot connect to PostgreSQL at {}: {}",
                        self.shown,
                        pg_message(&e)
                    ))
                })?;
        let shown = self.shown.clone();
        let task = async move {
            if let Err(e) = connection.await {
                tracing::debug!(url = %shown, "PostgreSQL connection ended: {e}");
            }
        };
        if on_io_runtime {
            crate::io_runtime::spawn(task)?;
        } else {
            tokio::spawn(task);
        }
        Ok(client)
    }
}

/// A Postgres error with the server's detail (the `Display` of a `DbError` alone only
/// says "db error").
pub(crate) fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                let _ = write!(m, " ({d})");
            }
            if let Some(c) = db.column() {
                let _ = write!(m, " [column {c}]");
            }
            m
        }
        None => {
            let mut m = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let _ = write!(m, ": {s}");
                source = s.source();
            }
            m
        }
    }
}

/// Whether a failed statement is worth retrying on a new connection.
pub(crate) fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || e.as_db_error().is_none_or(|db| {
            // Class 08 (connection exception), 57P01 (admin shutdown), 40001/40P01
            // (serialization failure, deadlock): the transaction can be run again.
            let code = db.code().code();
            code.starts_with("08") || code == "57P01" || code == "40001" || code == "40P01"
        })
}

// ---------------------------------------------------------------------------------------
// Types: how a DDL column is written into a Postgres column.

/// The binary encoding of one column (the Postgres column's type decides it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Jsonb,
    Bytea,
    Timestamp,
    Date,
}

impl Enc {
    /// The Arrow type a column is cast to before it is encoded this way.
    fn arrow(self, declared: &DataType) -> DataType {
        match self {
            Enc::Bool => DataType::Boolean,
            Enc::Int2 => DataType::Int16,
            Enc::Int4 => DataType::Int32,
            Enc::Int8 => DataType::Int64,
            Enc::Float4 => DataType::Float32,
            Enc::Float8 => DataType::Float64,
            Enc::Numeric => declared.clone(),
            Enc::Text | Enc::Jsonb => DataType::Utf8,
            Enc::Bytea => DataType::Binary,
            Enc::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Enc::Date => DataType::Date32,
        }
    }
}

/// The Postgres type `CREATE TABLE` gives a DDL column.
fn pg_type_for(dt: &DataType) -> Option<String> {
    Some(match dt {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) => format!("numeric({p}, {s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::Timestamp(_, None) => "timestamp(3)".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz(3)".into(),
        DataType::Date32 => "date".into(),
        _ => return None,
    })
}

/// How a DDL column of type `dt` fills a Postgres column of type `pg` (the `typname`:
/// `int8`, `text`, …), or `None` when it cannot without losing values.
fn encoding(dt: &DataType, pg: &str) -> Option<Enc> {
    use DataType as D;
    Some(match (dt, pg) {
        (D::Boolean, "bool") => Enc::Bool,
        (D::Int8 | D::Int16, "int2") => Enc::Int2,
        (D::Int8 | D::Int16 | D::Int32, "int4") => Enc::Int4,
        (D::Int8 | D::Int16 | D::Int32 | D::Int64, "int8") => Enc::Int8,
        (D::Float32, "float4") => Enc::Float4,
        (D::Float32 | D::Float64, "float8") => Enc::Float8,
        (D::Decimal128(..), "numeric") => Enc::Numeric,
        (D::Utf8 | D::LargeUtf8 | D::Utf8View, "text" | "varchar" | "bpchar" | "name" | "json") => {
            Enc::Text
        }
        (D::Utf8 | D::LargeUtf8 | D::Utf8View, "jsonb") => Enc::Jsonb,
        (D::Binary | D::LargeBinary | D::BinaryView, "bytea") => Enc::Bytea,
        (D::Timestamp(..), "timestamp" | "timestamptz") => Enc::Timestamp,
        (D::Date32, "date") => Enc::Date,
        _ => return None,
    })
}

fn validate(spec: &TableSpec) -> Result<(), ConnectorError> {
    PgConfig::parse(spec)?;
    for f in spec.schema.fields() {
        if pg_type_for(f.data_type()).is_none() {
            return Err(ConnectorError::Type {
                table: spec.name.clone(),
                column: f.name().clone(),
                data_type: runnel_common::types::sql_name(f.data_type()),
                reason: "the postgres sink cannot write yet (it writes BOOLEAN, TINYINT … \
                         BIGINT, FLOAT, DOUBLE, DECIMAL, STRING, BYTES, TIMESTAMP, \
                         TIMESTAMP_LTZ and DATE)"
                    .into(),
            });
        }
    }
    Ok(())
}

/// One column of the Postgres table.
#[derive(Debug, Clone)]
pub(crate) struct PgColumn {
    pub(crate) name: String,
    pub(crate) typname: String,
    /// `format_type` of the column (`character varying(20)`).
    pub(crate) shown: String,
}

/// The target table's columns (`None`: no such table).
pub(crate) async fn table_columns(
    client: &Client,
    target: &str,
) -> Result<Option<Vec<PgColumn>>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.attname::text, t.typname::text, format_type(a.atttypid, a.atttypmod), \
                    to_regclass($1) IS NOT NULL \
             FROM (SELECT to_regclass($1) AS rel) r \
             LEFT JOIN pg_attribute a ON a.attrelid = r.rel AND a.attnum > 0 \
                                     AND NOT a.attisdropped \
             LEFT JOIN pg_type t ON t.oid = a.atttypid \
             ORDER BY a.attnum",
            &[&target],
        )
        .await?;
    let exists = rows.first().is_some_and(|r| r.get::<_, bool>(3));
    if !exists {
        return Ok(None);
    }
    Ok(Some(
        rows.iter()
            .filter_map(|r| {
                Some(PgColumn {
                    name: r.get::<_, Option<String>>(0)?,
                    typname: r.get::<_, Option<String>>(1)?,
                    shown: r.get::<_, Option<String>>(2)?,
                })
            })
            .collect(),
    ))
}

/// Whether the table has a unique index (or primary key) on exactly `columns`.
async fn has_unique_index(
    client: &Client,
    target: &str,
    columns: &[String],
) -> Result<bool, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT array_agg(a.attname::text ORDER BY a.attname) \
             FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL \
             GROUP BY i.indexrelid",
            &[&target],
        )
        .await?;
    let mut want: Vec<String> = columns.to_vec();
    want.sort();
    Ok(rows.iter().any(|r| r.get::<_, Vec<String>>(0) == want))
}

/// The DDL columns' encodings against the table, or the first mismatch, named.
fn match_columns(
    spec: &TableSpec,
    config: &PgConfig,
    columns: &[PgColumn],
) -> Result<Vec<Enc>, ConnectorError> {
    let mut out = Vec::with_capacity(spec.schema.fields().len());
    for f in spec.schema.fields() {
        let name = f.name();
        let col = columns
            .iter()
            .find(|c| c.name == *name)
            .or_else(|| columns.iter().find(|c| c.name == name.to_lowercase()));
        let Some(col) = col else {
            return Err(ConnectorError::Other(format!(
                "table '{}': column '{name}' is not in the PostgreSQL table {} at {} \
                 (its columns: {})",
                spec.name,
                config.target_shown,
                config.shown,
                columns
                    .iter()
                    .map(|c| format!("{} {}", c.name, c.shown))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let enc = encoding(f.data_type(), &col.typname).ok_or_else(|| {
            ConnectorError::Other(format!(
                "table '{}': column '{name}' is {} in the DDL but {} in the PostgreSQL table \
                 {} at {}; declare it as {} or change the table",
                spec.name,
                runnel_common::types::sql_name(f.data_type()),
                col.shown,
                config.target_shown,
                config.shown,
                pg_type_for(f.data_type()).unwrap_or_default()
            ))
        })?;
        out.push(enc);
    }
    Ok(out)
}

/// `CREATE TABLE` for the DDL.
fn create_table_sql(spec: &TableSpec, target: &str) -> String {
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {target} (");
    for (i, f) in spec.schema.fields().iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        let not_null = if spec.primary_key.contains(&i) {
            " NOT NULL"
        } else {
            ""
        };
        let _ = write!(
            sql,
            "{} {}{not_null}",
            column_ident(f.name()),
            pg_type_for(f.data_type()).unwrap_or_else(|| "text".into())
        );
    }
    if !spec.primary_key.is_empty() {
        let _ = write!(sql, ", PRIMARY KEY ({})", key_list(spec));
    }
    sql.push(')');
    sql
}

fn key_list(spec: &TableSpec) -> String {
    spec.primary_key
        .iter()
        .map(|&i| column_ident(spec.schema.field(i).name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Connects, creates what is missing, and checks the table against the DDL; returns
/// each column's encoding.
async fn prepare(
    spec: &TableSpec,
    config: &PgConfig,
    client: &Client,
) -> Result<Vec<Enc>, ConnectorError> {
    let fail = |what: &str, e: tokio_postgres::Error| {
        ConnectorError::Other(format!(
            "table '{}': {what} {} at {}: {}",
            spec.name,
            config.target_shown,
            config.shown,
            pg_message(&e)
        ))
    };
    let mut columns = table_columns(client, &config.target)
        .await
        .map_err(|e| fail("reading the columns of", e))?;
    if columns.is_none() && config.create {
        client
            .batch_execute(&create_table_sql(spec, &config.target))
            .await
            .map_err(|e| fail("creating", e))?;
        tracing::info!(table = %spec.name, target = %config.target_shown, url = %config.shown,
            "created the PostgreSQL table from the DDL");
        columns = table_columns(client, &config.target)
            .await
            .map_err(|e| fail("reading the columns of", e))?;
    }
    let Some(columns) = columns else {
        return Err(ConnectorError::Other(format!(
            "table '{}': the PostgreSQL table {} does not exist at {}; create it, or set \
             'sink.create-table' = 'true' to create it from the DDL",
            spec.name, config.target_shown, config.shown
        )));
    };
    let encodings = match_columns(spec, config, &columns)?;
    if !spec.primary_key.is_empty() {
        let keys: Vec<String> = spec
            .primary_key
            .iter()
            .map(|&i| {
                let name = spec.schema.field(i).name();
                columns
                    .iter()
                    .find(|c| c.name == *name)
                    .map_or_else(|| name.to_lowercase(), |c| c.name.clone())
            })
            .collect();
        if !has_unique_index(client, &config.target, &keys)
            .await
            .map_err(|e| fail("reading the indexes of", e))?
        {
            return Err(ConnectorError::Other(format!(
                "table '{}': the PRIMARY KEY ({}) has no primary key or unique index on the \
                 PostgreSQL table {} at {}, which upserts (ON CONFLICT) need; add one, e.g. \
                 ALTER TABLE {} ADD PRIMARY KEY ({})",
                spec.name,
                keys.join(", "),
                config.target_shown,
                config.shown,
                config.target_shown,
                keys.join(", ")
            )));
        }
    }
    // The bookkeeping table; creating it concurrently may race (a unique violation on
    // the catalog), which leaves it created.
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {COMMITS_TABLE} (sink_id text PRIMARY KEY, \
         checkpoint bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
    );
    if let Err(e) = client.batch_execute(&sql).await
        && !e
            .as_db_error()
            .is_some_and(|d| d.code().code() == "23505" || d.code().code() == "42P07")
    {
        return Err(fail("creating the bookkeeping table beside", e));
    }
    Ok(encodings)
}

fn check(spec: TableSpec, role: Role, _: CheckContext) -> CheckFuture {
    Box::pin(async move {
        if role != Role::Sink {
            return crate::source::postgres::check_source(&spec).await;
        }
        let config = PgConfig::parse(&spec)?;
        if config.target.is_empty() {
            return Err(bad_option(
                &spec,
                "table-name",
                "is required for a sink ('scan.query' only reads)".into(),
            ));
        }
        let client = config
            .connect(false)
            .await
            .map_err(|e| ConnectorError::Other(format!("table '{}': {e}", spec.name)))?;
        prepare(&spec, &config, &client).await.map(|_| ())
    })
}

// ---------------------------------------------------------------------------------------
// Binary COPY encoding.

/// Header of a binary COPY stream: signature, flags, header extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Trailer: a field count of -1.
const COPY_TRAILER: &[u8] = &[0xff, 0xff];

/// Microseconds and days between the Unix epoch and Postgres's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;
const PG_EPOCH_DAYS: i32 = 10_957;

/// Appends rows of `batch` as binary COPY tuples. With `kinds`, each tuple also gets a
/// sequence number (from `seq`) and whether it retracts (for upserts).
fn encode_rows(
    batch: &RecordBatch,
    encodings: &[Enc],
    upsert: Option<(&mut i64, &[RowKind])>,
    out: &mut Vec<u8>,
) -> Result<(), ConnectorError> {
    let columns: Vec<ArrayRef> = encodings
        .iter()
        .enumerate()
        .map(|(i, enc)| {
            let col = batch.column(i);
            let want = enc.arrow(col.data_type());
            if *col.data_type() == want {
                Ok(col.clone())
            } else {
                cast(col, &want).map_err(ConnectorError::from)
            }
        })
        .collect::<Result<_, _>>()?;
    let fields = columns.len() as i16 + if upsert.is_some() { 2 } else { 0 };
    let mut upsert = upsert;
    for row in 0..batch.num_rows() {
        out.extend_from_slice(&fields.to_be_bytes());
        for (col, enc) in columns.iter().zip(encodings) {
            encode_value(col, *enc, row, out);
        }
        if let Some((seq, kinds)) = upsert.as_mut() {
            **seq += 1;
            out.extend_from_slice(&8i32.to_be_bytes());
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            out.push(u8::from(kinds[row].is_retract()));
        }
    }
    Ok(())
}

fn encode_value(col: &ArrayRef, enc: Enc, row: usize, out: &mut Vec<u8>) {
    if col.is_null(row) {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return;
    }
    let fixed = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    match enc {
        Enc::Bool => fixed(out, &[u8::from(col.as_boolean().value(row))]),
        Enc::Int2 => fixed(
            out,
            &col.as_primitive::<Int16Type>().value(row).to_be_bytes(),
        ),
        Enc::Int4 => fixed(
            out,
            &col.as_primitive::<Int32Type>().value(row).to_be_bytes(),
        ),
        Enc::Int8 => fixed(
            out,
            &col.as_primitive::<Int64Type>().value(row).to_be_bytes(),
        ),
        Enc::Float4 => fixed(
            out,
            &col.as_primitive::<Float32Type>().value(row).to_be_bytes(),
        ),
        Enc::Float8 => fixed(
            out,
            &col.as_primitive::<Float64Type>().value(row).to_be_bytes(),
        ),
        Enc::Text => fixed(out, col.as_string::<i32>().value(row).as_bytes()),
        Enc::Jsonb => {
            let text = col.as_string::<i32>().value(row).as_bytes();
            out.extend_from_slice(&(text.len() as i32 + 1).to_be_bytes());
            out.push(1);
            out.extend_from_slice(text);
        }
        Enc::Bytea => fixed(out, col.as_binary::<i32>().value(row)),
        Enc::Timestamp => {
            let us = col.as_primitive::<TimestampMicrosecondType>().value(row);
            fixed(out, &(us - PG_EPOCH_US).to_be_bytes());
        }
        Enc::Date => {
            let days = col.as_primitive::<Date32Type>().value(row);
            fixed(out, &(days - PG_EPOCH_DAYS).to_be_bytes());
        }
        Enc::Numeric => {
            let scale = match col.data_type() {
                DataType::Decimal128(_, s) => *s,
                _ => 0,
            };
            let v = col.as_primitive::<Decimal128Type>().value(row);
            let mut buf = Vec::with_capacity(16);
            encode_numeric(v, scale, &mut buf);
            fixed(out, &buf);
        }
    }
}

/// Postgres's binary `numeric`: digit count, weight (of the first base-10000 digit),
/// sign, display scale, then base-10000 digits.
fn encode_numeric(v: i128, scale: i8, out: &mut Vec<u8>) {
    let negative = v < 0;
    let (digits, dscale) = if scale < 0 {
        let mut d = v.unsigned_abs().to_string();
        if d != "0" {
            d.push_str(&"0".repeat(usize::from(scale.unsigned_abs())));
        }
        (d, 0usize)
    } else {
        (v.unsigned_abs().to_string(), scale as usize)
    };
    // Integer and fraction digits, each padded to whole groups of four.
    let digits = format!("{digits:0>width$}", width = dscale + 1);
    let (int_part, frac_part) = digits.split_at(digits.len() - dscale);
    let int_part = format!(
        "{int_part:0>width$}",
        width = int_part.len().div_ceil(4) * 4
    );
    let frac_part = format!(
        "{frac_part:0<width$}",
        width = frac_part.len().div_ceil(4) * 4
    );
    let group = |s: &str| -> Vec<i16> {
        s.as_bytes()
            .chunks(4)
            .map(|c| {
                c.iter()
                    .fold(0i16, |acc, d| acc * 10 + i16::from(d.saturating_sub(b'0')))
            })
            .collect()
    };
    let int_groups = group(&int_part);
    let frac_groups = group(&frac_part);
    let mut all: Vec<i16> = int_groups.iter().chain(&frac_groups).copied().collect();
    let mut weight = int_groups.len() as i16 - 1;
    // Strip leading zero groups (each lowers the weight) and trailing ones.
    let lead = all.iter().take_while(|d| **d == 0).count();
    all.drain(..lead);
    weight -= lead as i16;
    while all.last() == Some(&0) {
        all.pop();
    }
    if all.is_empty() {
        weight = 0;
    }
    out.extend_from_slice(&(all.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    let sign: u16 = if negative && !all.is_empty() {
        0x4000
    } else {
        0
    };
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(dscale as u16).to_be_bytes());
    for d in all {
        out.extend_from_slice(&d.to_be_bytes());
    }
}

// ---------------------------------------------------------------------------------------
// Writing: one transaction per batch of tuples.

/// Writes batches of encoded tuples into the table over one connection (reconnecting
/// when it breaks). Shared by a table's subtasks; one write at a time.
struct Writer {
    config: PgConfig,
    table: String,
    /// Quoted column list of the DDL, in order.
    columns: Vec<String>,
    /// Quoted primary-key columns (empty: append).
    keys: Vec<String>,
    client: tokio::sync::Mutex<Option<Client>>,
    metrics: ConnectorMetrics,
}

impl Writer {
    fn upsert(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The statements that move the staged tuples of an upsert batch into the table.
    fn merge_sql(&self) -> String {
        let cols = self.columns.join(", ");
        let keys = self.keys.join(", ");
        let last = format!(
            "(SELECT DISTINCT ON ({keys}) * FROM runnel_stage ORDER BY {keys}, __runnel_seq DESC)"
        );
        let on = self
            .keys
            .iter()
            .map(|k| format!("t.{k} = l.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let set: Vec<String> = self
            .columns
            .iter()
            .filter(|c| !self.keys.contains(c))
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        let action = if set.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", set.join(", "))
        };
        format!(
            "DELETE FROM {target} t USING {last} l WHERE l.__runnel_del AND {on};
             INSERT INTO {target} ({cols}) SELECT {cols} FROM {last} l WHERE NOT l.__runnel_del \
             ON CONFLICT ({keys}) {action};",
            target = self.config.target
        )
    }

    /// Applies `payload` (binary COPY tuples) in one transaction; with `mark`, only if
    /// the bookkeeping row of that sink id is before that checkpoint, and moves it.
    /// Retries on a new connection when the connection breaks. Returns whether the
    /// payload was applied (`false`: it was already).
    async fn write(
        &self,
        payload: Bytes,
        mark: Option<(&str, i64)>,
    ) -> Result<bool, ConnectorError> {
        let mut attempt = 0u32;
        loop {
            match self.try_write(payload.clone(), mark).await {
                Ok(applied) => {
                    self.metrics.clear_problem();
                    return Ok(applied);
                }
                Err(WriteError::Retry(message)) if attempt < self.config.max_retries => {
                    attempt += 1;
                    let pause = Duration::from_secs(1 << (attempt - 1).min(5));
                    let problem = format!(
                        "writing to PostgreSQL at {} failed ({message}); retry {attempt} of {} \
                         in {pause:?}",
                        self.config.shown, self.config.max_retries
                    );
                    tracing::warn!(table = %self.table, "{problem}");
                    self.metrics.set_problem(problem);
                    tokio::time::sleep(pause).await;
                }
                Err(WriteError::Retry(message) | WriteError::Fail(message)) => {
                    self.metrics.set_problem(message.clone());
                    return Err(ConnectorError::Other(format!(
                        "table '{}': writing to the PostgreSQL table {} at {}: {message}",
                        self.table, self.config.target_shown, self.config.shown
                    )));
                }
            }
        }
    }

    async fn try_write(
        &self,
        payload: Bytes,
        mark: Option<(&str, i64)>,
    ) -> Result<bool, WriteError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            let client = self
                .config
                .connect(true)
                .await
                .map_err(|e| WriteError::Retry(e.to_string()))?;
            *guard = Some(client);
        }
        let Some(client) = guard.as_mut() else {
            return Err(WriteError::Fail(
                "runnel bug (please report): no connection".into(),
            ));
        };
        let result = self.transaction(client, payload, mark).await;
        if let Err(WriteError::Retry(_)) = &result {
            *guard = None;
        }
        result
    }

    async fn transaction(
        &self,
        client: &mut Client,
        payload: Bytes,
        mark: Option<(&str, i64)>,
    ) -> Result<bool, WriteError> {
        let tx = client.transaction().await.map_err(WriteError::from)?;
        if let Some((id, checkpoint)) = mark {
            tx.execute(
                &format!(
                    "INSERT INTO {COMMITS_TABLE} (sink_id, checkpoint) VALUES ($1, -1) \
                     ON CONFLICT (sink_id) DO NOTHING"
                ),
                &[&id],
            )
            .await?;
            let row = tx
                .query_one(
                    &format!(
                        "SELECT checkpoint FROM {COMMITS_TABLE} WHERE sink_id = $1 FOR UPDATE"
                    ),
                    &[&id],
                )
                .await?;
            let done: i64 = row.get(0);
            if done >= checkpoint {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        let cols = self.columns.join(", ");
        let copy = if self.upsert() {
            tx.batch_execute(&format!(
                "CREATE TEMP TABLE runnel_stage ON COMMIT DROP AS \
                 SELECT {cols} FROM {} WITH NO DATA; \
                 ALTER TABLE runnel_stage ADD COLUMN __runnel_seq bigint, \
                 ADD COLUMN __runnel_del boolean;",
                self.config.target
            ))
            .await?;
            "COPY runnel_stage FROM STDIN (FORMAT binary)".to_string()
        } else {
            format!(
                "COPY {} ({cols}) FROM STDIN (FORMAT binary)",
                self.config.target
            )
        };
        let sink = tx.copy_in(&copy).await?;
        futures::pin_mut!(sink);
        sink.send(Bytes::from_static(COPY_HEADER)).await?;
        sink.send(payload).await?;
        sink.send(Bytes::from_static(COPY_TRAILER)).await?;
        sink.as_mut().finish().await?;
        if self.upsert() {
            tx.batch_execute(&self.merge_sql()).await?;
        }
        if let Some((id, checkpoint)) = mark {
            tx.execute(
                &format!(
                    "UPDATE {COMMITS_TABLE} SET checkpoint = $2, updated_at = now() \
                     WHERE sink_id = $1"
                ),
                &[&id, &checkpoint],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The connection, (re)opened if it is missing or closed.
    async fn connected(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, ConnectorError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(self.config.connect(true).await?);
        }
        Ok(guard)
    }

    /// The newest checkpoint recorded for `id` (-1: none).
    async fn recorded(&self, id: &str) -> Result<i64, ConnectorError> {
        let fail = |e: String| {
            ConnectorError::Other(format!(
                "table '{}': reading {COMMITS_TABLE} at {}: {e}",
                self.table, self.config.shown
            ))
        };
        let guard = self.connected().await.map_err(|e| fail(e.to_string()))?;
        let Some(client) = guard.as_ref() else {
            return Err(fail("no connection".into()));
        };
        let rows = client
            .query(
                &format!("SELECT checkpoint FROM {COMMITS_TABLE} WHERE sink_id = $1"),
                &[&id],
            )
            .await
            .map_err(|e| fail(pg_message(&e)))?;
        Ok(rows.first().map_or(-1, |r| r.get(0)))
    }

    /// Lowers the recorded checkpoints of sink ids starting with `prefix` to `to`
    /// (forgets them when `None`): a restart from an earlier checkpoint, or from scratch,
    /// applies its checkpoints again.
    async fn rewind(&self, prefix: &str, to: Option<i64>) -> Result<(), ConnectorError> {
        let fail = |e: String| {
            ConnectorError::Other(format!(
                "table '{}': updating {COMMITS_TABLE} at {}: {e}",
                self.table, self.config.shown
            ))
        };
        let guard = self.connected().await.map_err(|e| fail(e.to_string()))?;
        let Some(client) = guard.as_ref() else {
            return Err(fail("no connection".into()));
        };
        let pattern = format!("{}%", prefix.replace('%', "\\%").replace('_', "\\_"));
        let result = match to {
            Some(to) => {
                client
                    .execute(
                        &format!(
                            "UPDATE {COMMITS_TABLE} SET checkpoint = $2, updated_at = now() \
                             WHERE sink_id LIKE $1 AND checkpoint > $2"
                        ),
                        &[&pattern, &to],
                    )
                    .await
            }
            None => {
                client
                    .execute(
                        &format!("DELETE FROM {COMMITS_TABLE} WHERE sink_id LIKE $1"),
                        &[&pattern],
                    )
                    .await
            }
        };
        result.map(|_| ()).map_err(|e| fail(pg_message(&e)))
    }
}

enum WriteError {
    /// The connection broke (or the server asked for a retry): try again on a new one.
    Retry(String),
    /// The server refused the rows: retrying would not help.
    Fail(String),
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(e: tokio_postgres::Error) -> Self {
        if is_connection_error(&e) {
            WriteError::Retry(pg_message(&e))
        } else {
            WriteError::Fail(pg_message(&e))
        }
    }
}

/// The exactly-once step: a sealed batch is the COPY payload of one checkpoint of one
/// subtask.
struct PgApply {
    writer: Arc<Writer>,
    /// `<pipeline>/<table>/<task>/` — the bookkeeping ids of this table's subtasks.
    id_prefix: String,
}

impl PgApply {
    fn sink_id(&self, subtask: usize) -> String {
        format!("{}{subtask}", self.id_prefix)
    }
}

/// A checkpoint id as Postgres's bigint (the final batch's `u64::MAX` as the largest).
fn mark_of(checkpoint: u64) -> i64 {
    if checkpoint == FINAL {
        i64::MAX
    } else {
        checkpoint.min(i64::MAX as u64) as i64
    }
}

impl Apply for PgApply {
    fn apply(&self, txn: &Txn, sealed: &Path) -> Result<(), ConnectorError> {
        let payload = std::fs::read(sealed)
            .map_err(|e| ConnectorError::io(format!("reading '{}'", sealed.display()), e))?;
        let rows_hint = payload.len();
        let writer = self.writer.clone();
        let id = self.sink_id(txn.subtask);
        let mark = mark_of(txn.checkpoint);
        let applied = crate::io_runtime::wait(async move {
            writer.write(Bytes::from(payload), Some((&id, mark))).await
        })??;
        runnel_common::fault::crash_point("mid-apply", txn.checkpoint);
        if !applied {
            tracing::debug!(table = %self.writer.table, checkpoint = txn.checkpoint,
                bytes = rows_hint, "batch already applied");
        }
        Ok(())
    }

    fn applied(&self, txn: &Txn) -> Result<bool, ConnectorError> {
        let writer = self.writer.clone();
        let id = self.sink_id(txn.subtask);
        let recorded = crate::io_runtime::wait(async move { writer.recorded(&id).await })??;
        Ok(recorded >= mark_of(txn.checkpoint))
    }

    fn discard_after(&self, restored: Option<u64>) -> Result<(), ConnectorError> {
        let writer = self.writer.clone();
        let prefix = self.id_prefix.clone();
        let to = restored.map(mark_of);
        crate::io_runtime::wait(async move { writer.rewind(&prefix, to).await })?
    }
}

/// One subtask.
struct PostgresSink {
    writer: Arc<Writer>,
    encodings: Arc<Vec<Enc>>,
    /// With checkpoints: the staged COPY payload of the current checkpoint.
    staging: Option<Staging>,
    /// Without checkpoints: tuples waiting to be written.
    buffer: Vec<u8>,
    buffered_rows: usize,
    last_flush: Instant,
    seq: i64,
    encoded: Vec<u8>,
}

impl PostgresSink {
    fn encode(&mut self, batch: &RecordBatch) -> Result<usize, ConnectorError> {
        self.encoded.clear();
        let upsert = self.writer.upsert();
        let kinds: Vec<RowKind> = if upsert {
            let ops = changelog::ops(batch);
            (0..batch.num_rows())
                .map(|i| changelog::kind_at(ops, i))
                .collect()
        } else {
            Vec::new()
        };
        let rows = changelog::data(batch);
        let mut encoded = std::mem::take(&mut self.encoded);
        let result = encode_rows(
            &rows,
            &self.encodings,
            upsert.then_some((&mut self.seq, kinds.as_slice())),
            &mut encoded,
        );
        self.encoded = encoded;
        result.map(|()| rows.num_rows())
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        if self.buffered_rows == 0 {
            return Ok(());
        }
        let payload = Bytes::from(std::mem::take(&mut self.buffer));
        self.writer.write(payload, None).await?;
        self.buffered_rows = 0;
        self.last_flush = Instant::now();
        Ok(())
    }
}

#[async_trait]
impl Sink for PostgresSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        let rows = self.encode(&batch)?;
        self.writer.metrics.rows.add(rows as u64);
        self.writer.metrics.bytes.add(self.encoded.len() as u64);
        match self.staging.as_mut() {
            Some(staging) => staging.write(&self.encoded),
            None => {
                self.buffer.extend_from_slice(&self.encoded);
                self.buffered_rows += rows;
                if self.buffered_rows >= self.writer.config.flush_rows
                    || self.last_flush.elapsed() >= self.writer.config.flush_interval
                {
                    self.flush().await?;
                }
                Ok(())
            }
        }
    }

    async fn watermark(&mut self, _watermark: i64) -> Result<(), ConnectorError> {
        if self.staging.is_none() && self.last_flush.elapsed() >= self.writer.config.flush_interval
        {
            self.flush().await?;
        }
        Ok(())
    }

    async fn pre_commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        match self.staging.as_mut() {
            Some(s) => s.seal(checkpoint),
            None => Ok(()),
        }
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        let Some(staging) = self.staging.take() else {
            return Ok(());
        };
        let (staging, result) =
            crate::sink::log::blocking_with(staging, move |s| s.commit(checkpoint)).await?;
        self.staging = Some(staging);
        result
    }

    async fn finish(&mut self) -> Result<(), ConnectorError> {
        match self.staging.take() {
            Some(staging) => {
                crate::sink::log::blocking_with(staging, Staging::finish)
                    .await?
                    .1
            }
            None => self.flush().await,
        }
    }
}

/// Builds the subtasks. The table was checked (and created) by the health check; this
/// reads its columns again to pick each column's encoding.
fn build(
    spec: &TableSpec,
    contexts: Vec<SinkContext>,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
    CONNECTOR.check_options(spec)?;
    let config = PgConfig::parse(spec)?;
    if config.target.is_empty() {
        return Err(bad_option(
            spec,
            "table-name",
            "is required for a sink ('scan.query' only reads)".into(),
        ));
    }
    let Some(first) = contexts.first() else {
        return Ok(Vec::new());
    };
    let encodings = {
        let (owned, config) = (spec.clone(), config.clone());
        crate::io_runtime::wait(async move {
            let client = config.connect(true).await?;
            prepare(&owned, &config, &client).await
        })?
        .map_err(|e| match e {
            ConnectorError::Other(m) if !m.starts_with("table '") => {
                ConnectorError::Other(format!("table '{}': {m}", spec.name))
            }
            e => e,
        })?
    };
    let keys: Vec<String> = spec
        .primary_key
        .iter()
        .map(|&i| column_ident(spec.schema.field(i).name()))
        .collect();
    let writer = Arc::new(Writer {
        table: spec.name.clone(),
        columns: spec
            .schema
            .fields()
            .iter()
            .map(|f| column_ident(f.name()))
            .collect(),
        keys,
        client: tokio::sync::Mutex::new(None),
        metrics: first.metrics.clone(),
        config,
    });
    let encodings = Arc::new(encodings);
    let staging = match first.checkpoint {
        None => None,
        Some(mode) => {
            let (stage_dir, safe) = log_txn::staging_dir(&first.data_dir, &spec.name);
            let apply = Arc::new(PgApply {
                writer: writer.clone(),
                id_prefix: txn::commit_prefix(first, &safe),
            });
            txn::recover_with(
                &stage_dir,
                "",
                apply.as_ref(),
                mode,
                first.sealed.as_deref(),
            )?;
            Some((stage_dir, apply))
        }
    };
    Ok(contexts
        .into_iter()
        .map(|ctx| {
            Box::new(PostgresSink {
                writer: writer.clone(),
                encodings: encodings.clone(),
                staging: staging.as_ref().map(|(dir, apply)| {
                    Staging::new(
                        dir.clone(),
                        "",
                        ctx.subtask,
                        Vec::new(),
                        apply.clone() as Arc<dyn Apply>,
                    )
                    .with_mirror(ctx.sealed.clone())
                    .with_attempt(ctx.checkpoint.and_then(|m| m.attempt))
                }),
                buffer: Vec::new(),
                buffered_rows: 0,
                last_flush: Instant::now(),
                seq: 0,
                encoded: Vec::new(),
            }) as Box<dyn Sink>
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(v: i128, scale: i8) -> (i16, i16, u16, u16, Vec<i16>) {
        let mut out = Vec::new();
        encode_numeric(v, scale, &mut out);
        let n = i16::from_be_bytes([out[0], out[1]]);
        let w = i16::from_be_bytes([out[2], out[3]]);
        let s = u16::from_be_bytes([out[4], out[5]]);
        let d = u16::from_be_bytes([out[6], out[7]]);
        let digits = out[8..]
            .chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect();
        (n, w, s, d, digits)
    }

    #[test]
    fn numerics_encode_as_postgres_does() {
        // 12345.678 → digits 1 2345 6780, weight 1, dscale 3.
        assert_eq!(numeric(12_345_678, 3), (3, 1, 0, 3, vec![1, 2345, 6780]));
        // -0.0012 → digit 12, weight -1 (0.0012 = 12 * 10000^-1).
        assert_eq!(numeric(-12, 4), (1, -1, 0x4000, 4, vec![12]));
        // 0 with scale 2.
        assert_eq!(numeric(0, 2), (0, 0, 0, 2, vec![]));
        // 10000 → digit 1, weight 1, trailing zero group stripped.
        assert_eq!(numeric(10_000, 0), (1, 1, 0, 0, vec![1]));
        // 5 * 10^2 with scale -2 = 500.
        assert_eq!(numeric(5, -2), (1, 0, 0, 0, vec![500]));
        // The largest Decimal128(38, 10).
        let (n, w, _, d, _) = numeric("9".repeat(38).parse::<i128>().unwrap(), 10);
        assert_eq!((n, w, d), (10, 6, 10));
    }

    #[test]
    fn identifiers_fold_like_postgres_unless_quoted() {
        assert_eq!(ident("Orders"), "\"orders\"");
        assert_eq!(ident("\"Orders\""), "\"Orders\"");
        assert_eq!(column_ident("userId"), "\"userid\"");
    }

    #[test]
    fn only_lossless_encodings_are_accepted() {
        assert_eq!(encoding(&DataType::Int32, "int8"), Some(Enc::Int8));
        assert_eq!(encoding(&DataType::Int64, "int4"), None);
        assert_eq!(encoding(&DataType::Float64, "float4"), None);
        assert_eq!(encoding(&DataType::Utf8, "jsonb"), Some(Enc::Jsonb));
    }
}
