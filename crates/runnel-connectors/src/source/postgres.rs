//! Reading PostgreSQL (the `postgres` / `jdbc` connector's source side; its descriptor
//! and sink live in `sink/postgres.rs`):
//!
//! - **A bounded scan** of the table, or of `scan.query`'s rows, for backfills and
//!   dimension data. Rows are read in the DDL's column order and types (each column is
//!   cast by the server, so an `integer` column fills a `BIGINT` one); with a `PRIMARY
//!   KEY` the scan is ordered by it, so a restore resumes after the rows already read.
//! - **Look-ups** for lookup joins (`JOIN dim FOR SYSTEM_TIME AS OF s.proc_time`): one
//!   query per batch of distinct keys not in the cache (`WHERE (k…) IN (SELECT … FROM
//!   unnest($1, …))`, the keys passed as text arrays cast to the columns' own types, so
//!   the table's index is used), a cache of `lookup.cache.max-rows` rows (oldest key
//!   evicted first) whose entries are used for `lookup.cache.ttl`, missing keys cached
//!   too unless `lookup.cache.caching-missing-key` is off, and `lookup.max-retries`
//!   reconnecting retries; a look-up that still fails fails the batch, whose rows the
//!   lookup join sends to the dead letters.
//!
//! Look-ups are synchronous for the join operator: each batch's query runs on the
//! connectors' I/O runtime while the operator's thread waits for it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Date32Array, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Int32Type, Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use futures::StreamExt as _;
use runnel_common::TableSpec;
use tokio_postgres::{Client, Row};

use crate::lookup::{LookupTable, Matches};
use crate::sink::postgres::{
    CONNECTOR, PgConfig, bad_option, column_ident, is_connection_error, pg_message, table_columns,
};
use crate::{ConnectorError, Source, SourceContext, SourcePoll};

/// The server-side expression that yields column `name` of DDL type `dt` in the form
/// [`column`] decodes.
fn select_expr(name: &str, dt: &DataType) -> Result<String, String> {
    let c = column_ident(name);
    Ok(match dt {
        DataType::Boolean => format!("{c}::boolean"),
        DataType::Int8 | DataType::Int16 => format!("{c}::smallint"),
        DataType::Int32 => format!("{c}::integer"),
        DataType::Int64 => format!("{c}::bigint"),
        DataType::Float32 => format!("{c}::real"),
        DataType::Float64 => format!("{c}::double precision"),
        DataType::Decimal128(..) | DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            format!("{c}::text")
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => format!("{c}::bytea"),
        DataType::Timestamp(..) => {
            format!("floor(extract(epoch from {c}::timestamp) * 1000)::bigint")
        }
        DataType::Date32 => format!("({c}::date - date '1970-01-01')"),
        other => {
            return Err(format!(
                "has type {}, which the postgres connector cannot read yet",
                runnel_common::types::sql_name(other)
            ));
        }
    } + &format!(" AS {c}"))
}

/// `SELECT <the DDL's columns> FROM <table or (query)>`.
fn select_list(spec: &TableSpec) -> Result<String, ConnectorError> {
    spec.schema
        .fields()
        .iter()
        .map(|f| {
            select_expr(f.name(), f.data_type()).map_err(|why| ConnectorError::Type {
                table: spec.name.clone(),
                column: f.name().clone(),
                data_type: runnel_common::types::sql_name(f.data_type()),
                reason: why,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|cols| cols.join(", "))
}

fn from_clause(config: &PgConfig) -> String {
    match &config.query {
        Some(q) => format!("({q}) AS runnel_query"),
        None => config.target.clone(),
    }
}

/// Rows (laid out by [`select_list`]) into a batch of `schema`.
fn decode(schema: &SchemaRef, rows: &[Row]) -> Result<RecordBatch, ConnectorError> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, f) in schema.fields().iter().enumerate() {
        let get_err = |e: tokio_postgres::Error| {
            ConnectorError::Other(format!("reading column '{}': {}", f.name(), pg_message(&e)))
        };
        macro_rules! build {
            ($builder:ty, $t:ty) => {{
                let mut b = <$builder>::with_capacity(rows.len());
                for r in rows {
                    b.append_option(r.try_get::<_, Option<$t>>(i).map_err(get_err)?);
                }
                Arc::new(b.finish()) as ArrayRef
            }};
        }
        let raw: ArrayRef = match f.data_type() {
            DataType::Boolean => build!(BooleanBuilder, bool),
            DataType::Int8 | DataType::Int16 => build!(Int16Builder, i16),
            DataType::Int32 | DataType::Date32 => build!(Int32Builder, i32),
            DataType::Int64 | DataType::Timestamp(..) => build!(Int64Builder, i64),
            DataType::Float32 => build!(Float32Builder, f32),
            DataType::Float64 => build!(Float64Builder, f64),
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                let mut b = BinaryBuilder::with_capacity(rows.len(), 0);
                for r in rows {
                    b.append_option(r.try_get::<_, Option<Vec<u8>>>(i).map_err(get_err)?);
                }
                Arc::new(b.finish())
            }
            _ => {
                let mut b = StringBuilder::with_capacity(rows.len(), 0);
                for r in rows {
                    b.append_option(r.try_get::<_, Option<String>>(i).map_err(get_err)?);
                }
                Arc::new(b.finish())
            }
        };
        let column = match f.data_type() {
            // Milliseconds and days since the epoch, as the types store them.
            DataType::Timestamp(_, tz) => {
                let ms = raw.as_primitive::<Int64Type>();
                let ts = TimestampMillisecondArray::new(ms.values().clone(), ms.nulls().cloned())
                    .with_timezone_opt(tz.clone());
                let ts: ArrayRef = Arc::new(ts);
                if ts.data_type() == f.data_type() {
                    ts
                } else {
                    cast(&ts, f.data_type())?
                }
            }
            DataType::Date32 => {
                let days = raw.as_primitive::<Int32Type>();
                Arc::new(Date32Array::new(
                    days.values().clone(),
                    days.nulls().cloned(),
                ))
            }
            dt if raw.data_type() == dt => raw,
            dt => cast(&raw, dt)
                .map_err(|e| ConnectorError::Other(format!("column '{}': {e}", f.name())))?,
        };
        columns.push(column);
    }
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
    )
    .map_err(ConnectorError::from)
}

/// The health check of a table read or looked up: the SELECT is prepared (so a missing
/// table or column, or a value that cannot be cast, is named before data flows).
pub(crate) async fn check_source(spec: &TableSpec) -> Result<(), ConnectorError> {
    let config = PgConfig::parse(spec)?;
    let client = config
        .connect(false)
        .await
        .map_err(|e| ConnectorError::Other(format!("table '{}': {e}", spec.name)))?;
    let sql = format!(
        "SELECT {} FROM {}",
        select_list(spec)?,
        from_clause(&config)
    );
    client.prepare(&sql).await.map_err(|e| {
        ConnectorError::Other(format!(
            "table '{}': reading {} at {}: {}",
            spec.name,
            config.target_shown,
            config.shown,
            pg_message(&e)
        ))
    })?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The bounded scan.

/// A bounded read of the table (subtask 0 reads it all; the others end at once).
struct PgScan {
    table: String,
    config: PgConfig,
    schema: SchemaRef,
    sql: String,
    batch_size: usize,
    metrics: runnel_common::metrics::ConnectorMetrics,
    /// Rows emitted so far (the position).
    read: u64,
    /// Rows to skip after a restore.
    skip: u64,
    stream: Option<std::pin::Pin<Box<tokio_postgres::RowStream>>>,
    /// Kept alive while the stream reads.
    client: Option<Client>,
    done: bool,
}

#[async_trait]
impl Source for PgScan {
    async fn poll(&mut self) -> Result<SourcePoll, ConnectorError> {
        if self.done {
            return Ok(SourcePoll::End);
        }
        let fail = |e: tokio_postgres::Error, table: &str, config: &PgConfig| {
            ConnectorError::Other(format!(
                "table '{table}': reading {} at {}: {}",
                config.target_shown,
                config.shown,
                pg_message(&e)
            ))
        };
        if self.stream.is_none() {
            let client = self
                .config
                .connect(true)
                .await
                .map_err(|e| ConnectorError::Other(format!("table '{}': {e}", self.table)))?;
            let stream = client
                .query_raw(&self.sql, std::iter::empty::<i32>())
                .await
                .map_err(|e| fail(e, &self.table, &self.config))?;
            self.stream = Some(Box::pin(stream));
            self.client = Some(client);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(SourcePoll::End);
        };
        let mut rows = Vec::with_capacity(self.batch_size);
        let deadline = Instant::now() + Duration::from_millis(100);
        while rows.len() < self.batch_size && Instant::now() < deadline {
            match tokio::time::timeout_at(deadline.into(), stream.next()).await {
                Err(_) => break,
                Ok(None) => {
                    self.done = true;
                    break;
                }
                Ok(Some(row)) => {
                    let row = row.map_err(|e| fail(e, &self.table, &self.config))?;
                    if self.skip > 0 {
                        self.skip -= 1;
                        continue;
                    }
                    rows.push(row);
                }
            }
        }
        if self.done {
            self.stream = None;
            self.client = None;
        }
        if rows.is_empty() {
            return Ok(if self.done {
                SourcePoll::End
            } else {
                SourcePoll::Pending
            });
        }
        let batch = decode(&self.schema, &rows)
            .map_err(|e| ConnectorError::Other(format!("table '{}': {e}", self.table)))?;
        self.read += rows.len() as u64;
        self.metrics.rows.add(rows.len() as u64);
        Ok(SourcePoll::Batch(batch))
    }

    fn position(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "rows": self.read + self.skip }))
    }

    async fn seek(&mut self, position: &serde_json::Value) -> Result<(), ConnectorError> {
        let rows = position.get("rows").and_then(serde_json::Value::as_u64);
        let Some(rows) = rows else {
            return Err(ConnectorError::Other(format!(
                "table '{}': cannot resume the postgres scan from position {position}",
                self.table
            )));
        };
        self.stream = None;
        self.client = None;
        self.done = false;
        self.read = 0;
        self.skip = rows;
        Ok(())
    }
}

/// The bounded scan: one reader (subtask 0).
pub(crate) fn build_source(
    spec: &TableSpec,
    contexts: Vec<SourceContext>,
) -> Result<Vec<Box<dyn Source>>, ConnectorError> {
    CONNECTOR.check_options(spec)?;
    let config = PgConfig::parse(spec)?;
    let order = if spec.primary_key.is_empty() {
        String::new()
    } else {
        format!(
            " ORDER BY {}",
            spec.primary_key
                .iter()
                .map(|&i| column_ident(spec.schema.field(i).name()))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let sql = format!(
        "SELECT {} FROM {}{order}",
        select_list(spec)?,
        from_clause(&config)
    );
    let fetch = spec
        .options
        .get("scan.fetch-size")
        .and_then(|v| v.trim().parse::<usize>().ok());
    Ok(contexts
        .into_iter()
        .map(|ctx| {
            Box::new(PgScan {
                table: spec.name.clone(),
                config: config.clone(),
                schema: spec.schema.clone(),
                sql: sql.clone(),
                batch_size: fetch.unwrap_or(ctx.batch_size).max(1),
                metrics: ctx.metrics.clone(),
                read: 0,
                skip: 0,
                stream: None,
                client: None,
                done: ctx.subtask != 0,
            }) as Box<dyn Source>
        })
        .collect())
}

// ---------------------------------------------------------------------------------------
// Look-ups.

/// A cached key: its rows (possibly none) and when they were read.
struct Entry {
    at: Instant,
    rows: RecordBatch,
}

#[derive(Default)]
struct Cache {
    map: HashMap<Box<[u8]>, Entry>,
    /// Keys in the order they were cached (oldest first), for eviction.
    order: VecDeque<Box<[u8]>>,
    rows: usize,
}

/// Look-ups by key against the table.
pub struct PgLookup {
    spec: TableSpec,
    config: PgConfig,
    /// The looked-up columns (indexes into the table's schema).
    keys: Vec<usize>,
    /// `SELECT … FROM table WHERE (keys) IN (SELECT … FROM unnest($1::text[], …))`,
    /// prepared once the key columns' types are known.
    sql: tokio::sync::OnceCell<String>,
    converter: Mutex<RowConverter>,
    client: tokio::sync::Mutex<Option<Client>>,
    cache: Mutex<Cache>,
    /// Keys answered from the cache, keys asked of the server, queries sent.
    hits: AtomicU64,
    asked: AtomicU64,
    queries: AtomicU64,
}

impl Drop for PgLookup {
    fn drop(&mut self) {
        tracing::info!(table = %self.spec.name,
            cached = self.hits.load(Ordering::Relaxed),
            asked = self.asked.load(Ordering::Relaxed),
            queries = self.queries.load(Ordering::Relaxed),
            "look-ups: keys answered from the cache, keys asked of PostgreSQL, queries");
    }
}

impl std::fmt::Debug for PgLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLookup")
            .field("table", &self.spec.name)
            .finish_non_exhaustive()
    }
}

/// The look-up side of a lookup join on a postgres table.
pub(crate) fn build_lookup(
    spec: &TableSpec,
    keys: Vec<usize>,
) -> Result<Arc<dyn LookupTable>, ConnectorError> {
    CONNECTOR.check_options(spec)?;
    let config = PgConfig::parse(spec)?;
    if config.target.is_empty() {
        return Err(bad_option(
            spec,
            "table-name",
            "is required to look rows up (FOR SYSTEM_TIME AS OF); 'scan.query' only scans".into(),
        ));
    }
    select_list(spec)?;
    let fields = keys
        .iter()
        .map(|&k| SortField::new(spec.schema.field(k).data_type().clone()))
        .collect();
    Ok(Arc::new(PgLookupTable(Arc::new(PgLookup {
        spec: spec.clone(),
        config,
        keys,
        sql: tokio::sync::OnceCell::new(),
        converter: Mutex::new(RowConverter::new(fields)?),
        client: tokio::sync::Mutex::new(None),
        cache: Mutex::new(Cache::default()),
        hits: AtomicU64::new(0),
        asked: AtomicU64::new(0),
        queries: AtomicU64::new(0),
    }))))
}

impl PgLookup {
    fn fail(&self, message: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Other(format!(
            "table '{}': looking up rows in {} at {}: {message}",
            self.spec.name, self.config.target_shown, self.config.shown
        ))
    }

    /// The look-up statement, built from the key columns' types in the table.
    async fn statement(&self, client: &Client) -> Result<String, ConnectorError> {
        self.sql
            .get_or_try_init(|| async {
                let columns = table_columns(client, &self.config.target)
                    .await
                    .map_err(|e| self.fail(pg_message(&e)))?
                    .ok_or_else(|| self.fail("the table does not exist"))?;
                let mut casts = Vec::new();
                let mut names = Vec::new();
                for (n, &k) in self.keys.iter().enumerate() {
                    let name = self.spec.schema.field(k).name();
                    let col = columns
                        .iter()
                        .find(|c| c.name == *name || c.name == name.to_lowercase())
                        .ok_or_else(|| {
                            self.fail(format!("the key column '{name}' is not in the table"))
                        })?;
                    casts.push(format!("u.k{n}::{}", col.shown));
                    names.push(column_ident(name));
                }
                let params: Vec<String> = (1..=self.keys.len())
                    .map(|i| format!("${i}::text[]"))
                    .collect();
                let aliases: Vec<String> = (0..self.keys.len()).map(|n| format!("k{n}")).collect();
                Ok(format!(
                    "SELECT {} FROM {} WHERE ({}) IN (SELECT {} FROM unnest({}) AS u({}))",
                    select_list(&self.spec)?,
                    self.config.target,
                    names.join(", "),
                    casts.join(", "),
                    params.join(", "),
                    aliases.join(", ")
                ))
            })
            .await
            .cloned()
    }

    /// The rows for the keys in `texts` (one text array per key column), retried on a
    /// new connection as configured.
    async fn query(&self, texts: Vec<Vec<Option<String>>>) -> Result<RecordBatch, ConnectorError> {
        let mut attempt = 0u32;
        loop {
            let result = self.query_once(&texts).await;
            match result {
                Ok(batch) => return Ok(batch),
                Err((retry, message)) if retry && attempt < self.config.lookup_retries => {
                    attempt += 1;
                    tracing::warn!(table = %self.spec.name,
                        "look-up failed ({message}); retry {attempt} of {}",
                        self.config.lookup_retries);
                    tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
                }
                Err((_, message)) => return Err(self.fail(message)),
            }
        }
    }

    async fn query_once(
        &self,
        texts: &[Vec<Option<String>>],
    ) -> Result<RecordBatch, (bool, String)> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            let client = self
                .config
                .connect(true)
                .await
                .map_err(|e| (true, e.to_string()))?;
            *guard = Some(client);
        }
        let Some(client) = guard.as_ref() else {
            return Err((true, "no connection".into()));
        };
        let sql = self
            .statement(client)
            .await
            .map_err(|e| (false, e.to_string()))?;
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = texts
            .iter()
            .map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows = match client.query(&sql, &params).await {
            Ok(rows) => rows,
            Err(e) => {
                let retry = is_connection_error(&e);
                if retry {
                    *guard = None;
                }
                return Err((retry, pg_message(&e)));
            }
        };
        decode(&self.spec.schema, &rows).map_err(|e| (false, e.to_string()))
    }
}

/// [`PgLookup`] as the join sees it (shared with the query tasks it starts).
struct PgLookupTable(Arc<PgLookup>);

#[async_trait]
impl LookupTable for PgLookupTable {
    async fn open(&self) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn lookup(&self, keys: &[ArrayRef]) -> Result<Matches, ConnectorError> {
        self.0.lookup(keys)
    }
}

impl PgLookup {
    fn lookup(self: &Arc<Self>, keys: &[ArrayRef]) -> Result<Matches, ConnectorError> {
        let converter = self
            .converter
            .lock()
            .map_err(|_| self.fail("the key converter is poisoned"))?;
        let encoded = converter.convert_columns(keys)?;
        let now = Instant::now();
        let ttl = self.config.cache_ttl;
        // Per probe row: the key it asks for (None: a NULL key, matching nothing).
        let mut wanted: Vec<Option<Box<[u8]>>> = Vec::with_capacity(encoded.num_rows());
        let mut found: HashMap<Box<[u8]>, RecordBatch> = HashMap::new();
        let mut missing: Vec<(Box<[u8]>, usize)> = Vec::new();
        let mut asked: std::collections::HashSet<Box<[u8]>> = std::collections::HashSet::new();
        {
            let cache = self
                .cache
                .lock()
                .map_err(|_| self.fail("the cache is poisoned"))?;
            for (i, row) in encoded.iter().enumerate() {
                if keys.iter().any(|c| c.is_null(i)) {
                    wanted.push(None);
                    continue;
                }
                let key: Box<[u8]> = row.as_ref().into();
                if !found.contains_key(&key) && !asked.contains(&key) {
                    match cache.map.get(&key) {
                        Some(e) if ttl.is_none_or(|t| now.duration_since(e.at) < t) => {
                            self.hits.fetch_add(1, Ordering::Relaxed);
                            found.insert(key.clone(), e.rows.clone());
                        }
                        _ => {
                            asked.insert(key.clone());
                            missing.push((key.clone(), i));
                        }
                    }
                }
                wanted.push(Some(key));
            }
        }
        if !missing.is_empty() {
            // The distinct missing keys as text, one array per key column.
            let mut texts: Vec<Vec<Option<String>>> = Vec::with_capacity(keys.len());
            let idx = UInt32Array::from(missing.iter().map(|(_, i)| *i as u32).collect::<Vec<_>>());
            for column in keys {
                let picked = arrow::compute::take(column.as_ref(), &idx, None)?;
                let text = cast(&picked, &DataType::Utf8)
                    .map_err(|e| self.fail(format!("a key cannot be sent as text: {e}")))?;
                let text = text.as_any().downcast_ref::<arrow::array::StringArray>();
                texts.push(
                    (0..missing.len())
                        .map(|j| text.and_then(|t| t.is_valid(j).then(|| t.value(j).to_string())))
                        .collect(),
                );
            }
            self.asked
                .fetch_add(missing.len() as u64, Ordering::Relaxed);
            self.queries.fetch_add(1, Ordering::Relaxed);
            let this = self.clone();
            let batch = crate::io_runtime::wait(async move { this.query(texts).await })??;
            // Group the answer by key.
            let key_columns: Vec<ArrayRef> =
                self.keys.iter().map(|&k| batch.column(k).clone()).collect();
            let answer_keys = converter.convert_columns(&key_columns)?;
            let mut by_key: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
            for (j, row) in answer_keys.iter().enumerate() {
                by_key
                    .entry(row.as_ref().into())
                    .or_default()
                    .push(j as u32);
            }
            let mut cache = self
                .cache
                .lock()
                .map_err(|_| self.fail("the cache is poisoned"))?;
            for (key, _) in missing {
                let idx = by_key.remove(&key).unwrap_or_default();
                let rows = arrow::compute::take_record_batch(&batch, &UInt32Array::from(idx))?;
                if self.config.cache_rows > 0 && (rows.num_rows() > 0 || self.config.cache_missing)
                {
                    insert(
                        &mut cache,
                        key.clone(),
                        rows.clone(),
                        now,
                        self.config.cache_rows,
                    );
                }
                found.insert(key, rows);
            }
        }
        let mut probe = Vec::new();
        let mut parts = Vec::new();
        for (i, key) in wanted.iter().enumerate() {
            if let Some(rows) = key.as_ref().and_then(|k| found.get(k))
                && rows.num_rows() > 0
            {
                probe.extend(std::iter::repeat_n(i as u32, rows.num_rows()));
                parts.push(rows.clone());
            }
        }
        let rows = concat_batches(&self.spec.schema, &parts)?;
        Ok(Matches {
            probe: UInt32Array::from(probe),
            rows,
        })
    }
}

/// Caches `rows` for `key`, evicting the oldest keys beyond `max_rows` rows (a key
/// without rows counts as one).
fn insert(cache: &mut Cache, key: Box<[u8]>, rows: RecordBatch, at: Instant, max_rows: usize) {
    let size = rows.num_rows().max(1);
    if let Some(old) = cache.map.insert(key.clone(), Entry { at, rows }) {
        cache.rows -= old.rows.num_rows().max(1);
        cache.order.retain(|k| *k != key);
    }
    cache.rows += size;
    cache.order.push_back(key);
    while cache.rows > max_rows {
        let Some(oldest) = cache.order.pop_front() else {
            break;
        };
        if let Some(e) = cache.map.remove(&oldest) {
            cache.rows -= e.rows.num_rows().max(1);
        }
    }
}
