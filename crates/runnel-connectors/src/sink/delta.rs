//! `delta`: a Delta Lake table, through `deltalake` (its kernel and Parquet writer, no
//! DataFusion).
//!
//! Written: the table is created from the DDL (with its `PARTITIONED BY` columns) when
//! its directory holds no `_delta_log`; an existing table's columns, types and partition
//! columns must match the DDL, or the health check fails naming the column. Exactly once
//! on the transactional-sink mechanism ([`crate::txn`]): a subtask stages its rows (as
//! Arrow IPC) until the checkpoint covering them completes, then appends them as Parquet
//! files in one Delta commit that carries an application transaction (`txn` action: app
//! id `runnel/<pipeline>/<table>/<task>/<subtask>`, version = the checkpoint id). A replay
//! after a crash finds the version already committed and commits nothing; concurrent
//! writers (the sink's other subtasks, other pipelines) are settled by Delta's optimistic
//! commit with retries. A fresh run (no checkpoint to resume) first resets its app ids'
//! versions, so its checkpoint ids, which start again at 1, are not taken as replays.
//! `TIMESTAMP(3)` and `TIMESTAMP_LTZ(3)` are Delta `timestamp` (UTC, microseconds).
//!
//! Read: the files of the newest snapshot (or of `'version'`), Parquet read as the
//! `filesystem` source reads it, with partition columns from the log's partition values.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{StructType, Transaction};
use deltalake::operations::create::CreateBuilder;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableBuilder};
use runnel_common::TableSpec;
use runnel_common::metrics::ConnectorMetrics;

use crate::descriptor::{
    self, CheckContext, CheckFuture, Connector, Guarantee, OptionDef, OptionType, Role,
};
use crate::source::file::{FileFormat, FileSourceConfig};
use crate::txn::{self, Apply, FINAL, Staging, Txn};
use crate::{ConnectorError, Sink, SinkContext, Source, SourceContext};

const NAME: &str = "delta";

/// `connector = 'delta'`.
pub const CONNECTOR: Connector = Connector {
    name: NAME,
    doc: "a Delta Lake table: appended exactly once (one Delta commit per checkpoint, with an \
          application transaction), created from the DDL when missing; read as a snapshot",
    options: crate::descriptor::with_s3_options![
        OptionDef::new(
            "path",
            OptionType::Path,
            "the table's directory (a local path, file:// URI, or s3://bucket/prefix to write)",
        )
        .required(),
        OptionDef::new(
            "version",
            OptionType::Text,
            "read this version of the table instead of the newest",
        )
        .source_only(),
        OptionDef::new(
            "sink.rolling-policy.file-size",
            OptionType::Text,
            "target size of a Parquet data file",
        )
        .default("128MB")
        .sink_only(),
    ],
    source: Some(build_source),
    sink: Some(build),
    unbounded: descriptor::never_unbounded,
    guarantee: Guarantee::ExactlyOnce,
    updates: descriptor::append_only,
    needs: &[],
    validate,
    check,
    metadata: &[],
    upserts: false,
    lookup: None,
};

/// Commit attempts before a conflict with concurrent writers fails the checkpoint.
const COMMIT_RETRIES: usize = 30;

fn delta_error(spec_name: &str, what: &str, e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Other(format!("table '{spec_name}': {what}: {e}"))
}

/// The table's directory.
fn table_dir(spec: &TableSpec) -> Result<PathBuf, ConnectorError> {
    crate::sink::filesystem::local_path_of(spec, NAME)
}

/// The `s3://…` path of the table, if it has one.
fn s3_path(spec: &TableSpec) -> Option<&str> {
    spec.options.get("path").filter(|p| p.starts_with("s3://"))
}

/// Where the table lives: a local directory, or `s3://bucket/prefix` with the client
/// that reaches it (Delta commits then rely on S3's conditional put, `If-None-Match`).
#[derive(Clone)]
struct Location {
    url: url::Url,
    store: Option<Arc<dyn deltalake::ObjectStore>>,
    /// The directory, when local.
    dir: Option<PathBuf>,
}

impl Location {
    /// The table's location; a local directory is created if missing.
    fn of(spec: &TableSpec) -> Result<Location, ConnectorError> {
        let Some(path) = s3_path(spec) else {
            let dir = table_dir(spec)?;
            return Ok(Location {
                url: table_url(spec, &dir)?,
                store: None,
                dir: Some(dir),
            });
        };
        let options = runnel_common::s3::S3Options::from_keys(|k| spec.options.get(k));
        let (store, _) = runnel_common::s3::store(path, &options)
            .map_err(|e| ConnectorError::Other(format!("table '{}': {e}", spec.name)))?;
        let url = url::Url::parse(&format!("{}/", path.trim_end_matches('/'))).map_err(|e| {
            ConnectorError::Other(format!("table '{}': path '{path}': {e}", spec.name))
        })?;
        register_s3_log_stores();
        Ok(Location {
            url,
            store: Some(store),
            dir: None,
        })
    }

    fn shown(&self) -> String {
        match &self.dir {
            Some(d) => d.display().to_string(),
            None => self.url.as_str().trim_end_matches('/').to_string(),
        }
    }

    /// Whether a Delta table is there (its `_delta_log` has an entry).
    async fn exists(&self) -> Result<bool, String> {
        match (&self.dir, &self.store) {
            (Some(dir), _) => Ok(exists(dir)),
            (None, Some(store)) => {
                let (_, prefix) =
                    runnel_common::s3::split_url(self.url.as_str().trim_end_matches('/'))?;
                let log = if prefix.is_empty() {
                    "_delta_log".to_string()
                } else {
                    format!("{prefix}/_delta_log")
                };
                let listed = store
                    .list_with_delimiter(Some(&deltalake::Path::from(log)))
                    .await
                    .map_err(|e| format!("listing {}: {e}", self.shown()))?;
                Ok(!listed.objects.is_empty())
            }
            (None, None) => Ok(false),
        }
    }

    /// The log store of the table (for creating it).
    fn log_store(&self) -> Result<deltalake::logstore::LogStoreRef, String> {
        let Some(store) = &self.store else {
            return Err("not an object store".into());
        };
        deltalake::logstore::logstore_with(store.clone(), &self.url, Default::default())
            .map_err(|e| e.to_string())
    }
}

/// `s3://` tables commit through Delta's default log store on the client runnel builds
/// (object_store's S3 with `If-None-Match` puts), so no DynamoDB lock is needed.
fn register_s3_log_stores() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[derive(Debug)]
        struct S3LogStores;
        impl deltalake::logstore::LogStoreFactory for S3LogStores {
            fn with_options(
                &self,
                prefixed_store: deltalake::logstore::ObjectStoreRef,
                root_store: deltalake::logstore::ObjectStoreRef,
                location: &url::Url,
                options: &deltalake::logstore::StorageConfig,
            ) -> deltalake::DeltaResult<Arc<dyn deltalake::logstore::LogStore>> {
                Ok(deltalake::logstore::default_logstore(
                    prefixed_store,
                    root_store,
                    location,
                    options,
                ))
            }
        }
        if let Ok(scheme) = url::Url::parse("s3://") {
            deltalake::logstore::logstore_factories().insert(scheme, Arc::new(S3LogStores));
        }
    });
}

/// `file://` URL of the table's directory (created if missing).
fn table_url(spec: &TableSpec, dir: &Path) -> Result<url::Url, ConnectorError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        ConnectorError::io(
            format!("table '{}': creating '{}'", spec.name, dir.display()),
            e,
        )
    })?;
    let abs = dir.canonicalize().map_err(|e| {
        ConnectorError::io(format!("table '{}': '{}'", spec.name, dir.display()), e)
    })?;
    url::Url::from_directory_path(&abs).map_err(|()| {
        ConnectorError::Other(format!(
            "table '{}': '{}' is not a usable directory path",
            spec.name,
            abs.display()
        ))
    })
}

/// The schema rows are written in: times as Delta's `timestamp` (UTC, microseconds).
fn delta_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Timestamp(_, _) => f.as_ref().clone().with_data_type(
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                ),
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<Field>>(),
    ))
}

fn partition_names(spec: &TableSpec) -> Vec<String> {
    spec.partition_keys
        .iter()
        .map(|&i| spec.schema.field(i).name().clone())
        .collect()
}

fn file_size(spec: &TableSpec) -> Result<usize, ConnectorError> {
    Ok(spec
        .options
        .parsed(
            NAME,
            "sink.rolling-policy.file-size",
            "expected a size such as 128MB",
            crate::sink::filesystem::parse_size,
        )
        .map_err(|source| ConnectorError::Option {
            table: spec.name.clone(),
            source,
        })?
        .unwrap_or(128 << 20) as usize)
}

fn validate(spec: &TableSpec) -> Result<(), ConnectorError> {
    match s3_path(spec) {
        Some(path) => {
            runnel_common::s3::split_url(path).map_err(|e| {
                ConnectorError::Other(format!("table '{}': option 'path': {e}", spec.name))
            })?;
        }
        None => {
            table_dir(spec)?;
        }
    }
    file_size(spec)?;
    let schema = delta_schema(&spec.schema);
    let _: StructType = schema.as_ref().try_into_kernel().map_err(|e| {
        ConnectorError::Other(format!(
            "table '{}': a column's type has no Delta Lake equivalent: {e}",
            spec.name
        ))
    })?;
    if let Some(v) = spec.options.get("version")
        && v.trim().parse::<u64>().is_err()
    {
        return Err(ConnectorError::Other(format!(
            "table '{}': option 'version': '{v}' is not a table version (0, 1, …)",
            spec.name
        )));
    }
    Ok(())
}

/// Whether the directory holds a Delta table.
fn exists(dir: &Path) -> bool {
    dir.join("_delta_log").is_dir()
}

async fn load(at: &Location, version: Option<u64>) -> Result<DeltaTable, String> {
    let mut builder = DeltaTableBuilder::from_url(at.url.clone()).map_err(|e| e.to_string())?;
    if let Some(store) = &at.store {
        builder = builder.with_storage_backend(store.clone(), at.url.clone());
    }
    if let Some(v) = version {
        builder = builder.with_version(v);
    }
    builder.load().await.map_err(|e| e.to_string())
}

/// The existing table's columns and partitioning against the DDL's.
fn check_existing(spec: &TableSpec, table: &DeltaTable) -> Result<(), ConnectorError> {
    let snapshot = table
        .snapshot()
        .map_err(|e| delta_error(&spec.name, "reading the Delta table", e))?;
    let metadata = snapshot.metadata();
    let structure = metadata
        .parse_schema()
        .map_err(|e| delta_error(&spec.name, "reading the Delta table's schema", e))?;
    let existing: Schema = (&structure)
        .try_into_arrow()
        .map_err(|e| delta_error(&spec.name, "reading the Delta table's schema", e))?;
    let wanted = delta_schema(&spec.schema);
    for f in wanted.fields() {
        let Some(have) = existing.fields().iter().find(|g| g.name() == f.name()) else {
            return Err(ConnectorError::Type {
                table: spec.name.clone(),
                column: f.name().clone(),
                data_type: runnel_common::types::sql_name(f.data_type()),
                reason: format!(
                    "is not a column of the existing Delta table (its columns: {})",
                    existing
                        .fields()
                        .iter()
                        .map(|g| g.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        if have.data_type() != f.data_type() {
            return Err(ConnectorError::Type {
                table: spec.name.clone(),
                column: f.name().clone(),
                data_type: runnel_common::types::sql_name(f.data_type()),
                reason: format!(
                    "does not match the existing Delta table's column, of type {}",
                    have.data_type()
                ),
            });
        }
    }
    if let Some(extra) = existing
        .fields()
        .iter()
        .find(|g| wanted.fields().iter().all(|f| f.name() != g.name()))
    {
        return Err(ConnectorError::Other(format!(
            "table '{}': the existing Delta table has a column '{}' the DDL lacks; declare it",
            spec.name,
            extra.name()
        )));
    }
    let partitions: Vec<String> = metadata.partition_columns().to_vec();
    if partitions != partition_names(spec) {
        return Err(ConnectorError::Other(format!(
            "table '{}': the existing Delta table is partitioned by ({}), the DDL by ({})",
            spec.name,
            partitions.join(", "),
            partition_names(spec).join(", ")
        )));
    }
    Ok(())
}

/// Opens the table, creating it from the DDL when missing; checks an existing one.
async fn open_or_create(spec: TableSpec, at: Location) -> Result<DeltaTable, ConnectorError> {
    let shown = at.shown();
    if at
        .exists()
        .await
        .map_err(|e| delta_error(&spec.name, "reaching the table", e))?
    {
        let table = load(&at, None)
            .await
            .map_err(|e| delta_error(&spec.name, &format!("opening '{shown}'"), e))?;
        check_existing(&spec, &table)?;
        return Ok(table);
    }
    let structure: StructType = delta_schema(&spec.schema)
        .as_ref()
        .try_into_kernel()
        .map_err(|e| delta_error(&spec.name, "the Delta schema", e))?;
    let mut create = CreateBuilder::new()
        .with_location(at.url.as_str())
        .with_columns(structure.fields().cloned())
        .with_partition_columns(partition_names(&spec));
    if at.store.is_some() {
        let log_store = at
            .log_store()
            .map_err(|e| delta_error(&spec.name, &format!("reaching '{shown}'"), e))?;
        create = create.with_log_store(log_store);
    }
    create.await.map_err(|e| {
        delta_error(
            &spec.name,
            &format!("creating the Delta table '{shown}'"),
            e,
        )
    })
}

/// A sink's directory must hold a matching table or none; a source's must hold one.
fn check(spec: TableSpec, role: Role, _: CheckContext) -> CheckFuture {
    Box::pin(async move {
        if s3_path(&spec).is_some() {
            let at = Location::of(&spec)?;
            if role == Role::Sink {
                return open_or_create(spec, at).await.map(|_| ());
            }
            let table = load(&at, None)
                .await
                .map_err(|e| delta_error(&spec.name, &format!("opening '{}'", at.shown()), e))?;
            return check_existing(&spec, &table);
        }
        let dir = table_dir(&spec)?;
        match role {
            Role::Source | Role::Both => {
                if !exists(&dir) {
                    return Err(ConnectorError::Other(format!(
                        "table '{}': '{}' is not a Delta table (it has no _delta_log)",
                        spec.name,
                        dir.display()
                    )));
                }
                let at = Location::of(&spec)?;
                let table = load(&at, None).await.map_err(|e| {
                    delta_error(&spec.name, &format!("opening '{}'", dir.display()), e)
                })?;
                check_existing(&spec, &table)
            }
            Role::Sink => {
                let at = Location::of(&spec)?;
                open_or_create(spec, at).await.map(|_| ())
            }
        }
    })
}

/// The app id of a subtask's commits.
fn app_id(prefix: &str, subtask: usize) -> String {
    format!("{prefix}{subtask}")
}

/// Appends a sealed batch in one Delta commit with its application transaction.
struct DeltaApply {
    table: String,
    at: Location,
    schema: SchemaRef,
    /// `runnel/<pipeline>/<table>/<task>/`.
    app_prefix: String,
    file_size: usize,
}

/// The batches of a sealed file: frames of `[u64 length][Arrow IPC stream]`.
fn read_sealed(sealed: &Path) -> Result<Vec<RecordBatch>, ConnectorError> {
    let ctx = || format!("reading sealed rows '{}'", sealed.display());
    let f = File::open(sealed).map_err(|e| ConnectorError::io(ctx(), e))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut out = Vec::new();
    let mut len8 = [0u8; 8];
    let mut data = Vec::new();
    loop {
        match r.read_exact(&mut len8) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(ConnectorError::io(ctx(), e)),
        }
        data.resize(u64::from_le_bytes(len8) as usize, 0);
        r.read_exact(&mut data)
            .map_err(|e| ConnectorError::io(ctx(), e))?;
        for batch in arrow::ipc::reader::StreamReader::try_new(data.as_slice(), None)? {
            out.push(batch?);
        }
    }
    Ok(out)
}

impl DeltaApply {
    fn version(checkpoint: u64) -> i64 {
        if checkpoint == FINAL {
            i64::MAX
        } else {
            i64::try_from(checkpoint).unwrap_or(i64::MAX - 1)
        }
    }
}

impl Apply for DeltaApply {
    fn apply(&self, txn: &Txn, sealed: &Path) -> Result<(), ConnectorError> {
        let batches = read_sealed(sealed)?;
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok(());
        }
        let app = app_id(&self.app_prefix, txn.subtask);
        let version = Self::version(txn.checkpoint);
        let (at, file_size, name) = (self.at.clone(), self.file_size, self.table.clone());
        let schema = self.schema.clone();
        crate::io_runtime::wait(async move {
            let fail = |what: &str, e: &dyn std::fmt::Display| {
                ConnectorError::Other(format!("table '{name}': {what}: {e}"))
            };
            let mut table = load(&at, None)
                .await
                .map_err(|e| fail("opening the Delta table", &e))?;
            let state = table
                .snapshot()
                .map_err(|e| fail("reading the Delta table", &e))?;
            let done = state
                .transaction_version(table.log_store().as_ref(), &app)
                .await
                .map_err(|e| fail("reading the Delta table's transactions", &e))?;
            if done.is_some_and(|v| v >= version) {
                return Ok(());
            }
            let mut writer = RecordBatchWriter::for_table(&table)
                .map_err(|e| fail("writing the Delta table", &e))?
                .with_writer_properties(crate::format::parquet::writer_properties())
                .with_target_file_size(file_size as u64)
                .with_commit_properties(
                    CommitProperties::default()
                        .with_application_transaction(Transaction::new(&app, version))
                        .with_max_retries(COMMIT_RETRIES),
                );
            for batch in batches {
                let batch = crate::format::parquet::to_file_batch(&batch, &schema)?;
                writer
                    .write(batch)
                    .await
                    .map_err(|e| fail("writing Parquet data files", &e))?;
            }
            writer
                .flush_and_commit(&mut table)
                .await
                .map_err(|e| fail("committing to the Delta log", &e))?;
            Ok(())
        })?
    }
}

/// Resets the app ids of `subtasks` to version 0 in one commit (a fresh run).
fn reset_app_ids(
    spec: &TableSpec,
    at: &Location,
    prefix: &str,
    subtasks: usize,
) -> Result<(), ConnectorError> {
    let (at, prefix, name) = (at.clone(), prefix.to_string(), spec.name.clone());
    crate::io_runtime::wait(async move {
        let fail = |e: &dyn std::fmt::Display| {
            ConnectorError::Other(format!(
                "table '{name}': resetting its Delta transactions: {e}"
            ))
        };
        let table = load(&at, None).await.map_err(|e| fail(&e))?;
        let state = table.snapshot().map_err(|e| fail(&e))?;
        let mut reset = Vec::new();
        for s in 0..subtasks {
            let app = app_id(&prefix, s);
            let v = state
                .transaction_version(table.log_store().as_ref(), &app)
                .await
                .map_err(|e| fail(&e))?;
            if v.is_some_and(|v| v != 0) {
                reset.push(Transaction::new(&app, 0));
            }
        }
        if reset.is_empty() {
            return Ok(());
        }
        let operation = deltalake::protocol::DeltaOperation::Write {
            mode: deltalake::protocol::SaveMode::Append,
            partition_by: None,
            predicate: None,
        };
        deltalake::kernel::transaction::CommitBuilder::from(
            CommitProperties::default()
                .with_application_transactions(reset)
                .with_max_retries(COMMIT_RETRIES),
        )
        .with_actions(Vec::new())
        .build(Some(state), table.log_store(), operation)
        .await
        .map_err(|e| fail(&e))?;
        Ok(())
    })?
}

/// Builds the subtasks: the table exists (made by the health check, or here).
fn build(
    spec: &TableSpec,
    contexts: Vec<SinkContext>,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
    CONNECTOR.check_options(spec)?;
    validate(spec)?;
    let Some(first) = contexts.first() else {
        return Ok(Vec::new());
    };
    let at = Location::of(spec)?;
    {
        let (owned, at) = (spec.clone(), at.clone());
        crate::io_runtime::wait(async move { open_or_create(owned, at).await.map(|_| ()) })??;
    }
    let (stage_dir, safe) = crate::sink::log_txn::staging_dir(&first.data_dir, &spec.name);
    let app_prefix = format!("runnel/{}", txn::commit_prefix(first, &safe));
    let apply = Arc::new(DeltaApply {
        table: spec.name.clone(),
        at: at.clone(),
        schema: delta_schema(&spec.schema),
        app_prefix: app_prefix.clone(),
        file_size: file_size(spec)?,
    });
    let restored = first.checkpoint.and_then(|m| m.restored);
    txn::recover_with(
        &stage_dir,
        "",
        apply.as_ref(),
        first.checkpoint.unwrap_or_default(),
        first.sealed.as_deref(),
    )?;
    if restored.is_none() {
        reset_app_ids(
            spec,
            &at,
            &app_prefix,
            first.parallelism.max(contexts.len()),
        )?;
    }
    Ok(contexts
        .into_iter()
        .map(|c| {
            Box::new(DeltaSink {
                checkpointing: c.checkpoint.is_some(),
                staging: Staging::new(
                    stage_dir.clone(),
                    "",
                    c.subtask,
                    Vec::new(),
                    apply.clone() as Arc<dyn Apply>,
                )
                .with_mirror(c.sealed.clone())
                .with_attempt(c.checkpoint.and_then(|m| m.attempt)),
                staged: 0,
                file_size: apply.file_size as u64,
                local_id: 0,
                metrics: c.metrics,
            }) as Box<dyn Sink>
        })
        .collect())
}

/// One sink subtask.
struct DeltaSink {
    checkpointing: bool,
    staging: Staging,
    /// Bytes staged since the last seal.
    staged: u64,
    file_size: u64,
    /// Commit ids of a run without checkpoints.
    local_id: u64,
    metrics: ConnectorMetrics,
}

impl DeltaSink {
    /// Without checkpoints: commits what is staged now.
    fn roll(&mut self) -> Result<(), ConnectorError> {
        self.local_id += 1;
        self.staging.seal(self.local_id)?;
        self.staging.commit(self.local_id)?;
        self.staged = 0;
        Ok(())
    }
}

#[async_trait]
impl Sink for DeltaSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut ipc = Vec::new();
        {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema())?;
            w.write(&batch)?;
            w.finish()?;
        }
        self.staging.write(&(ipc.len() as u64).to_le_bytes())?;
        self.staging.write(&ipc)?;
        self.staged += ipc.len() as u64;
        self.metrics.rows.add(batch.num_rows() as u64);
        self.metrics.bytes.add(ipc.len() as u64);
        if !self.checkpointing && self.staged >= self.file_size {
            self.roll()?;
        }
        Ok(())
    }

    async fn pre_commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        self.staging.seal(checkpoint)?;
        self.staged = 0;
        Ok(())
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        self.staging.commit(checkpoint)
    }

    async fn finish(&mut self) -> Result<(), ConnectorError> {
        if self.checkpointing {
            self.staging.finish()
        } else {
            self.roll()
        }
    }
}

/// Reads the snapshot's files like the `filesystem` source reads Parquet.
fn build_source(
    spec: &TableSpec,
    contexts: Vec<SourceContext>,
) -> Result<Vec<Box<dyn Source>>, ConnectorError> {
    CONNECTOR.check_options(spec)?;
    validate(spec)?;
    let remote = match s3_path(spec) {
        Some(_) => Some(crate::sink::filesystem::Remote::new(spec)?),
        None => None,
    };
    // An s3:// table is read from a local copy of the snapshot's files.
    let dir = match &remote {
        Some(_) => crate::sink::filesystem::s3_copy_dir(
            &contexts
                .first()
                .map(|c| c.data_dir.clone())
                .unwrap_or_default(),
            spec,
        ),
        None => table_dir(spec)?,
    };
    if remote.is_none() && !exists(&dir) {
        return Err(ConnectorError::Other(format!(
            "table '{}': '{}' is not a Delta table (it has no _delta_log)",
            spec.name,
            dir.display()
        )));
    }
    let at = Location::of(spec)?;
    let version = spec
        .options
        .get("version")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let names = partition_names(spec);
    let (name, root) = (spec.name.clone(), dir.clone());
    let files = crate::io_runtime::wait(async move {
        let table = load(&at, version).await.map_err(|e| {
            ConnectorError::Other(format!("table '{name}': opening the Delta table: {e}"))
        })?;
        let state = table.snapshot().map_err(|e| {
            ConnectorError::Other(format!("table '{name}': reading the Delta table: {e}"))
        })?;
        let mut files: Vec<(PathBuf, Vec<Option<String>>)> = state
            .log_data()
            .iter()
            .map(|f| {
                let values: HashMap<String, Option<String>> = f.partition_values_map();
                (
                    root.join(f.path().as_ref()),
                    names
                        .iter()
                        .map(|n| values.get(n).cloned().flatten())
                        .collect(),
                )
            })
            .collect();
        files.sort();
        Ok::<_, ConnectorError>(files)
    })??;
    if let Some(remote) = &remote {
        let rels: Vec<String> = files
            .iter()
            .filter_map(|(p, _)| p.strip_prefix(&dir).ok())
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .collect();
        remote.download(&rels, &dir)?;
    }
    let config = FileSourceConfig {
        dead_letter_path: PathBuf::from(format!(
            "{}.dead-letter.jsonl",
            dir.display().to_string().trim_end_matches(['/', '\\'])
        )),
        path: dir,
        format: FileFormat::Parquet,
        csv_header: false,
        partitioned: (!spec.partition_keys.is_empty()).then(|| crate::source::file::Partitioned {
            columns: spec.partition_keys.clone(),
            default_name: String::new(),
            unescape: str::to_string,
        }),
        files: Some(files),
    };
    crate::source::file::build_with(spec, contexts, config)
}

/// The Delta table at path `name`, its columns and partitioning read from its log
/// (`runnel query`'s shorthand); `None` when `name` is no Delta table.
///
/// # Errors
/// The table's log or schema cannot be read.
pub fn infer(name: &str) -> crate::infer::InferResult {
    let dir = PathBuf::from(name);
    if !exists(&dir) {
        return Ok(None);
    }
    let abs = dir
        .canonicalize()
        .map_err(|e| format!("reading '{name}': {e}"))?;
    let url = url::Url::from_directory_path(&abs)
        .map_err(|()| format!("'{}' is not a usable directory path", abs.display()))?;
    let at = Location {
        url,
        store: None,
        dir: Some(dir),
    };
    let (schema, partitions) = crate::io_runtime::wait(async move {
        let table = load(&at, None).await?;
        let snapshot = table.snapshot().map_err(|e| e.to_string())?;
        let metadata = snapshot.metadata();
        let structure = metadata.parse_schema().map_err(|e| e.to_string())?;
        let schema: Schema = (&structure).try_into_arrow().map_err(|e| e.to_string())?;
        Ok::<_, String>((schema, metadata.partition_columns().to_vec()))
    })
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("reading the Delta table '{name}': {e}"))?;
    let fields = crate::infer::sql_fields(schema.fields())?;
    let keys = partitions
        .iter()
        .map(|p| {
            fields
                .iter()
                .position(|f| f.name() == p)
                .ok_or_else(|| format!("partition column '{p}' is not a column of '{name}'"))
        })
        .collect::<Result<Vec<usize>, String>>()?;
    Ok(Some(TableSpec {
        name: name.to_string(),
        schema: Arc::new(Schema::new(fields)),
        watermark: None,
        options: runnel_common::Options::new([
            ("connector".to_string(), NAME.to_string()),
            ("path".to_string(), name.to_string()),
        ]),
        line: 0,
        metadata: Vec::new(),
        primary_key: Vec::new(),
        partition_keys: keys,
    }))
}
