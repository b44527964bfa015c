//! A pipeline from script to running dataflow: [`prepare`] → [`Prepared`] →
//! [`Prepared::start`] → [`Running`].
//!
//! Preparing parses the script once, types its `SET` settings ([`settings`]), plans it
//! with the connector registry checking every `CREATE TABLE` (so a bad option is an error
//! with its line and column) and with [`functions`] supplying `classify` when a query
//! calls it. [`Prepared::check`] runs every connector's health check and probes the
//! checkpoint location without running anything; [`Prepared::start`] does the same, then
//! resumes from the newest checkpoint and starts the engine. The binary and the server
//! only read arguments, call these, and print.
//!
//! ```no_run
//! # async fn example() -> Result<(), runnel_runtime::RuntimeError> {
//! use runnel_runtime::{PrepareOptions, Resources, prepare};
//! let sql = std::fs::read_to_string("pipeline.sql").unwrap_or_default();
//! let options = PrepareOptions::new("pipeline.sql", "runnel-data");
//! let prepared = prepare(&sql, &options)?;
//! let mut running = prepared.start(Resources::new(&options.data_dir)).await?;
//! let result = running.join().await;
//! eprint!("{}", running.summary(false));
//! result
//! # }
//! ```
#![warn(missing_docs)]

mod checkpointing;
pub mod distributed;
pub mod error;
pub mod functions;
pub mod host;
pub mod resources;
pub mod settings;
pub mod status;
pub mod summary;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub use error::RuntimeError;
pub use resources::Resources;
use runnel_common::TableSpec;
use runnel_connectors::dead_letters::{DeadLetters, Target};
use runnel_connectors::descriptor::{CheckContext, Resource, Role};
use runnel_connectors::{ConnectorError, registry};
use runnel_engine::RunConfig;
use runnel_sql::{NodeSpec, PipelineGraph, Planner, TableCheck};
pub use settings::Settings;

use crate::functions::{Rejects, VisionFunctions};
use crate::status::{PipelineHandle, RunState};

/// How to prepare a script.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Where the script came from (a path, or a name such as `examples/camera.sql`): names
    /// it in errors and, without `SET 'pipeline.name'`, names the pipeline.
    pub origin: String,
    /// The data directory (log, checkpoints, dead letters).
    pub data_dir: PathBuf,
    /// Subtasks per operator; overrides `SET 'parallelism.default'`.
    pub parallelism: Option<usize>,
    /// Ignore earlier checkpoints and start over.
    pub from_scratch: bool,
    /// Resume from this savepoint (see [`Running::savepoint`]) instead of the newest
    /// checkpoint.
    pub savepoint: Option<String>,
}

impl PrepareOptions {
    /// Options for the script at `origin` with data in `data_dir`.
    pub fn new(origin: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        PrepareOptions {
            origin: origin.into(),
            data_dir: data_dir.into(),
            parallelism: None,
            from_scratch: false,
            savepoint: None,
        }
    }
}

/// A planned pipeline, ready to check or start.
pub struct Prepared {
    /// The dataflow.
    pub graph: PipelineGraph,
    /// The script's settings.
    pub settings: Settings,
    /// The pipeline's name.
    pub name: String,
    /// Subtasks per operator.
    pub parallelism: usize,
    options: PrepareOptions,
    vision: Arc<VisionFunctions>,
    rejects: Rejects,
    /// An ad-hoc query (`runnel query`): no checkpoints, its rows collected.
    ad_hoc: bool,
}

/// `runnel query`'s resolver: unknown table names are looked up among what runnel
/// stored (log topics, Delta tables, Parquet files).
struct StoredTables {
    log: Option<Arc<runnel_log::Log>>,
    data_dir: PathBuf,
}

impl runnel_sql::TableResolver for StoredTables {
    fn resolve(&self, name: &str) -> Result<Option<TableSpec>, String> {
        match runnel_connectors::infer::stored(self.log.as_deref(), name)? {
            Some(spec) => Ok(Some(spec)),
            None => Err(format!(
                "no such table: the script does not declare it, {}, and no Delta table or \
                 Parquet file is at that path",
                match &self.log {
                    Some(_) => format!("the log in {} has no such topic", self.data_dir.display()),
                    None => format!("there is no log in {}", self.data_dir.display()),
                }
            )),
        }
    }
}

/// The registry, asked about every `CREATE TABLE` while planning.
struct ConnectorCheck;

impl TableCheck for ConnectorCheck {
    fn check(&self, spec: &TableSpec) -> Result<(), (Option<String>, String)> {
        let strip = |(key, message): (Option<String>, String)| {
            let own = format!("table '{}': ", spec.name);
            let message = message
                .strip_prefix(&own)
                .map_or(message.clone(), str::to_string);
            (key, message)
        };
        let connector = registry::lookup(spec).map_err(explain).map_err(strip)?;
        connector.validate(spec).map_err(explain).map_err(strip)
    }

    fn accepts_updates(&self, spec: &TableSpec) -> bool {
        registry::lookup(spec).is_ok_and(|c| (c.updates)(spec))
    }

    fn reads_upserts(&self, spec: &TableSpec) -> bool {
        registry::lookup(spec).is_ok_and(|c| c.upserts)
    }
}

/// A connector error as the planner reports it: the option key and a message without
/// the table's name (the planner puts it in front).
fn explain(e: ConnectorError) -> (Option<String>, String) {
    let key = e.option_key().map(str::to_string);
    let message = match e {
        ConnectorError::Option { source, .. } => source.to_string(),
        ConnectorError::UnknownConnector { name, known, .. } => {
            format!("unknown connector '{name}'; known connectors: {known}")
        }
        other => other.to_string(),
    };
    (key, message)
}

/// Parses `sql` once, types its settings and plans it.
///
/// # Errors
/// Syntax and planning errors, unknown or bad settings and connector options (each with
/// line and column), a function whose model does not load, parallelism 0.
pub fn prepare(sql: &str, options: &PrepareOptions) -> Result<Prepared, RuntimeError> {
    prepare_on_thread(sql, options, None)
}

/// Like [`prepare`] for an ad-hoc query script: its one bare `SELECT` goes to an implicit
/// `collect` table (read it with [`Running::query_result`] once the run ends), a table
/// the script does not declare is looked up among the topics of `log`, Delta tables and
/// Parquet files, and nothing is checkpointed.
///
/// # Errors
/// As [`prepare`]; a script without a `SELECT`.
pub fn prepare_query(
    sql: &str,
    options: &PrepareOptions,
    log: Option<Arc<runnel_log::Log>>,
) -> Result<Prepared, RuntimeError> {
    let tables = StoredTables {
        log,
        data_dir: options.data_dir.clone(),
    };
    let prepared = prepare_on_thread(sql, options, Some(tables))?;
    if prepared.graph.query.is_none() {
        return Err(RuntimeError::Sql(runnel_sql::SqlError::at(
            1,
            "a query script ends with a SELECT …; this one has none (to run INSERT INTO \
             statements, use `runnel run`)",
        )));
    }
    Ok(prepared)
}

fn prepare_on_thread(
    sql: &str,
    options: &PrepareOptions,
    tables: Option<StoredTables>,
) -> Result<Prepared, RuntimeError> {
    // Parsing and planning recurse over the query (DataFusion's tree rewrites): on a
    // thread of their own with a large stack, a deep but allowed expression never
    // overflows the caller's.
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("runnel-planner".into())
            .stack_size(PLANNER_STACK_BYTES)
            .spawn_scoped(scope, || prepare_here(sql, options, tables))
            .map_err(|e| RuntimeError::Internal(format!("starting the planner thread: {e}")))?
            .join()
            .map_err(|_| RuntimeError::Internal("the planner panicked".into()))?
    })
}

/// Stack of the planning thread.
const PLANNER_STACK_BYTES: usize = 256 << 20;

fn prepare_here(
    sql: &str,
    options: &PrepareOptions,
    tables: Option<StoredTables>,
) -> Result<Prepared, RuntimeError> {
    let statements = runnel_sql::parse_script(sql)?;
    let settings = Settings::from_statements(&statements)?;
    let rejects = Rejects::default();
    let vision = Arc::new(VisionFunctions::new(
        settings.vision.clone(),
        rejects.clone(),
    ));
    let mut planner = Planner::new().with_table_check(Arc::new(ConnectorCheck));
    let ad_hoc = tables.is_some();
    if let Some(tables) = tables {
        planner = planner.for_queries(
            runnel_connectors::sink::collect::CONNECTOR.name,
            Arc::new(tables),
        );
    }
    planner.add_function_provider(vision.clone());
    let mut graph = planner.plan_statements(statements)?;
    s3_defaults(&mut graph, &settings);
    let parallelism = options
        .parallelism
        .or(settings.parallelism)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
    if parallelism == 0 {
        return Err(RuntimeError::Internal(
            "parallelism must be at least 1".into(),
        ));
    }
    let name = settings.pipeline_name.clone().unwrap_or_else(|| {
        Path::new(&options.origin)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".into())
    });
    Ok(Prepared {
        graph,
        settings,
        name,
        parallelism,
        options: options.clone(),
        vision,
        rejects,
        ad_hoc,
    })
}

/// Gives every table with an `s3://` path the pipeline's `SET 's3.…'` settings it does
/// not set itself, so sinks reach the store the way checkpoints do.
fn s3_defaults(graph: &mut PipelineGraph, settings: &Settings) {
    let s3 = &settings.s3;
    for node in &mut graph.nodes {
        let spec = match &mut node.spec {
            NodeSpec::Source(t, _) | NodeSpec::Sink(t) => t,
            _ => continue,
        };
        if !spec
            .options
            .get("path")
            .is_some_and(|p| p.starts_with("s3://"))
        {
            continue;
        }
        for (key, value) in s3.to_keys() {
            if spec.options.get(key).is_none() {
                spec.options.set(key, value);
            }
        }
    }
}

/// One line of `runnel check`'s report: what was checked and how it went.
#[derive(Debug)]
pub struct CheckResult {
    /// `table 'x' (file source)` or `checkpoints`.
    pub what: String,
    /// `Ok(detail)` or the problem.
    pub result: Result<String, RuntimeError>,
}

impl Prepared {
    /// The planned dataflow as text.
    pub fn explain(&self) -> String {
        self.graph.explain()
    }

    /// Where the script came from.
    pub fn origin(&self) -> &str {
        &self.options.origin
    }

    /// The tables the pipeline reads and writes, with how.
    pub fn tables(&self) -> impl Iterator<Item = (&TableSpec, Role)> {
        self.graph.nodes.iter().filter_map(|n| match &n.spec {
            NodeSpec::Source(t, _) => Some((t, Role::Source)),
            NodeSpec::Sink(t) => Some((t, Role::Sink)),
            NodeSpec::LookupJoin(l) => Some((&l.table, Role::Source)),
            _ => None,
        })
    }

    /// Whether some table's connector needs `resource`.
    pub fn needs(&self, resource: Resource) -> bool {
        self.tables().any(|(t, _)| {
            registry::lookup(t).is_ok_and(|c| c.needs.contains(&resource))
                || (resource == Resource::Log
                    && t.connector() == "dashboard"
                    && t.options.get("image.topic").is_some())
        })
    }

    /// Whether some source never ends.
    pub fn unbounded(&self) -> bool {
        self.tables()
            .any(|(t, role)| role == Role::Source && registry::source_never_ends(t))
    }

    /// Runs every table's health check and probes the checkpoint location, without
    /// running the pipeline. Every check runs; each gets a line.
    pub async fn check(&self, resources: &Resources) -> Vec<CheckResult> {
        let mut out = self.check_tables(resources).await;
        let result = checkpointing::config(self, self.options.from_scratch)
            .await
            .map(|c| match c {
                None => "off".to_string(),
                Some(c) => match &c.restore {
                    Some(r) => format!("{}: would resume from checkpoint {}", c.dir, r.manifest.id),
                    None => format!("{}: no checkpoint yet, would start fresh", c.dir),
                },
            });
        out.push(CheckResult {
            what: "checkpoints".into(),
            result,
        });
        out
    }

    /// Every table's health check, one result each.
    async fn check_tables(&self, resources: &Resources) -> Vec<CheckResult> {
        let mut out = Vec::new();
        let ctx = CheckContext {
            data_dir: resources.data_dir.clone(),
            log: resources.log.clone(),
        };
        for (spec, role) in self.tables() {
            let connector = spec.connector().to_string();
            let what = format!(
                "table '{}' ({connector} {})",
                spec.name,
                if role == Role::Source {
                    "source"
                } else {
                    "sink"
                }
            );
            let result = match registry::lookup(spec) {
                Ok(c) => c
                    .check(spec, role, ctx.clone())
                    .await
                    .map(|()| "ok".to_string()),
                Err(e) => Err(e),
            }
            .map_err(|error| RuntimeError::Connector {
                table: spec.name.clone(),
                connector,
                error: Box::new(error),
            });
            out.push(CheckResult { what, result });
        }
        out
    }

    /// Checks every table (the first failure stops the start, before any data flows),
    /// resumes from the newest checkpoint unless told to start over, and starts the
    /// engine on the current tokio runtime.
    ///
    /// # Errors
    /// A failed health check, an unusable checkpoint location, an engine that cannot
    /// build an operator or connector.
    pub async fn start(self, resources: Resources) -> Result<Running, RuntimeError> {
        for c in self.check_tables(&resources).await {
            c.result?;
        }
        // Probes the location and loads the state to resume from, once.
        let checkpoint = checkpointing::config(&self, self.options.from_scratch).await?;
        if let Some(r) = checkpoint.as_ref().and_then(|c| c.restore.as_ref()) {
            eprintln!(
                "runnel: resuming {} from checkpoint {} ({})",
                self.name,
                r.manifest.id,
                checkpoint
                    .as_ref()
                    .map(|c| c.dir.to_string())
                    .unwrap_or_default()
            );
        }
        let dead_letters = DeadLetters::new(
            self.settings.dead_letters.clone(),
            resources.log.clone(),
            checkpoint.as_ref().is_none_or(|c| c.restore.is_none()),
        );
        // One writer for the image functions, named after the first one used
        // (`classify.jsonl`, or `detect.jsonl`); each letter names its function.
        if let Some(&function) = self.vision.used_names().first() {
            self.rejects.bind(
                dead_letters.writer(
                    function,
                    None,
                    Target::File(
                        resources
                            .data_dir
                            .join("dead-letters")
                            .join(format!("{function}.jsonl")),
                    ),
                    &self.rejects.metrics,
                ),
            );
        }
        let dead_letters_service = dead_letters.clone();
        let config = RunConfig {
            parallelism: self.parallelism,
            data_dir: resources.data_dir.clone(),
            batch_size: self.settings.batch_size,
            idle_timeout: self.settings.idle_timeout,
            log: resources.log.clone(),
            dashboards: resources.hub.clone(),
            checkpoint,
            dead_letters,
            on_error: self.settings.on_error,
            ..RunConfig::default()
        };
        let started = Instant::now();
        let pipeline = runnel_engine::start(&self.graph, &config)?;
        let state = RunState::default();
        state.set("running");
        let checkpointing = config.checkpoint.is_some();
        let handle = status::handle(
            &self.name,
            &self.graph,
            self.parallelism,
            status::Readings {
                metrics: pipeline.metrics(),
                state: state.clone(),
                classify_rejects: self
                    .vision
                    .used()
                    .then(|| self.rejects.metrics.dead_letters.clone()),
                checkpoints: checkpointing.then(|| pipeline.checkpoints()),
                dead_letters: Some(dead_letters_service),
            },
        );
        Ok(Running {
            pipeline,
            hub: resources.hub.clone(),
            handle,
            state,
            started,
            checkpointing,
            prepared: self,
            outcome: None,
        })
    }
}

/// A started pipeline: its status handle, waiting, stopping and the summary.
pub struct Running {
    pipeline: runnel_engine::RunningPipeline,
    hub: Arc<runnel_connectors::sink::dashboard::Dashboards>,
    handle: PipelineHandle,
    state: RunState,
    started: Instant,
    checkpointing: bool,
    prepared: Prepared,
    /// `Some(interrupted)` once it ended.
    outcome: Option<(bool, bool)>,
}

impl Running {
    /// The handle the admin API and the page read the status from.
    pub fn handle(&self) -> PipelineHandle {
        self.handle.clone()
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.prepared.name
    }

    /// An ad-hoc query's rows as they stand (its final result once the run ended),
    /// ordered and limited as its `ORDER BY` and `LIMIT` say; `None` for a pipeline.
    ///
    /// # Errors
    /// The rows cannot be read back or sorted.
    pub fn query_result(&self) -> Option<Result<arrow::record_batch::RecordBatch, RuntimeError>> {
        Some(self.query_reader()?.rows())
    }

    /// What reads an ad-hoc query's rows while it runs (`None` for a pipeline).
    pub fn query_reader(&self) -> Option<QueryReader> {
        let query = self.prepared.graph.query.clone()?;
        let schema = self
            .prepared
            .tables()
            .find(|(t, _)| t.name == query.table)
            .map(|(t, _)| t.schema.clone())?;
        Some(QueryReader {
            hub: self.hub.clone(),
            query,
            schema,
        })
    }

    /// Live counters, indexed like the graph's nodes.
    pub fn metrics(&self) -> runnel_engine::PipelineMetrics {
        self.pipeline.metrics()
    }

    /// The checkpoints taken so far, when the pipeline checkpoints.
    pub fn checkpoint_stats(&self) -> Option<runnel_engine::checkpoint::CheckpointStats> {
        if !self.checkpointing {
            return None;
        }
        self.pipeline.checkpoints().lock().ok().map(|c| c.clone())
    }

    /// Takes a checkpoint now and keeps it as savepoint `name`, out of reach of
    /// retention; [`PrepareOptions::savepoint`] resumes from it.
    ///
    /// # Errors
    /// The pipeline does not checkpoint or has ended, the checkpoint failed, or the copy
    /// could not be written.
    pub async fn savepoint(
        &self,
        name: &str,
    ) -> Result<runnel_engine::checkpoint::CheckpointInfo, RuntimeError> {
        let dir = checkpointing::pipeline_dir(&self.prepared)?;
        let location = |message: String| RuntimeError::Checkpoint {
            location: dir.to_string(),
            message,
        };
        if !runnel_engine::checkpoint::savepoint::valid_name(name) {
            return Err(location(format!(
                "'{name}' is not a savepoint name: use 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        let info = self.pipeline.checkpoint_now().await.map_err(location)?;
        runnel_engine::checkpoint::savepoint::save(&dir, info.id, name)
            .await
            .map_err(|e| location(e.to_string()))?;
        Ok(info)
    }

    /// Stops every subtask now (sinks are not finished; the next start resumes from the
    /// last checkpoint).
    pub fn stop(&mut self) {
        self.pipeline.abort();
        self.state.set("finished");
        self.outcome = Some((true, true));
    }

    /// Waits until every subtask finished; the first error stops all others.
    ///
    /// # Errors
    /// The engine's error.
    pub async fn join(&mut self) -> Result<(), RuntimeError> {
        let result = self.pipeline.join().await.map_err(RuntimeError::from);
        match &result {
            Ok(()) => self.state.set("finished"),
            Err(e) => self.state.fail(e.to_string()),
        }
        self.outcome = Some((result.is_ok(), false));
        result
    }

    /// Runs until the pipeline ends or `stop` completes (Ctrl-C, SIGTERM, a deadline);
    /// on `stop` every subtask is aborted (sinks are not finished; the next start
    /// resumes from the last checkpoint).
    ///
    /// # Errors
    /// The engine's error.
    pub async fn run_until(
        &mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), RuntimeError> {
        tokio::select! {
            r = self.join() => r,
            () = stop => {
                self.stop();
                Ok(())
            }
        }
    }

    /// The one-screen summary: rows per table, dead letters, late rows, checkpoints.
    pub fn summary(&self, _verbose: bool) -> String {
        let (ok, interrupted) = self.outcome.unwrap_or((true, false));
        let metrics = self.pipeline.metrics();
        let mut report = summary::render(
            self.prepared.origin(),
            &self.prepared.graph,
            &metrics,
            self.started.elapsed(),
            ok,
        );
        if interrupted {
            report = report.replacen(" finished in ", " stopped (interrupted) after ", 1);
        }
        if self.checkpointing
            && let Ok(c) = self.pipeline.checkpoints().lock()
        {
            summary::checkpoints(&mut report, &c);
        }
        let n = self.prepared.rejects.metrics.dead_letters.get();
        if n > 0 {
            report.push_str(&format!(
                "  function {:<18} {:>12} dead-lettered -> {}\n",
                self.prepared.vision.used_names().join(", "),
                summary::group(n),
                self.prepared.rejects.target().unwrap_or_default()
            ));
        }
        report
    }
}

/// Reads an ad-hoc query's rows as they stand, while it runs and after.
#[derive(Clone)]
pub struct QueryReader {
    hub: Arc<runnel_connectors::sink::dashboard::Dashboards>,
    query: runnel_sql::QueryResult,
    schema: arrow::datatypes::SchemaRef,
}

impl QueryReader {
    /// The rows collected so far (inserts added, retractions taken back), ordered and
    /// limited as the query's `ORDER BY` and `LIMIT` say.
    ///
    /// # Errors
    /// The rows cannot be read back or sorted.
    pub fn rows(&self) -> Result<arrow::record_batch::RecordBatch, RuntimeError> {
        use arrow::compute::{SortColumn, SortOptions, lexsort_to_indices, take_record_batch};
        let internal =
            |e: &dyn std::fmt::Display| RuntimeError::Internal(format!("the query's result: {e}"));
        let query = &self.query;
        let batch = match self.hub.collected(&query.table) {
            Some(c) => c.batch().map_err(|e| internal(&e))?,
            None => arrow::record_batch::RecordBatch::new_empty(self.schema.clone()),
        };
        let batch = if query.order_by.is_empty() || batch.num_rows() < 2 {
            batch
        } else {
            let columns: Vec<SortColumn> = query
                .order_by
                .iter()
                .map(|&(c, descending, nulls_first)| SortColumn {
                    values: batch.column(c).clone(),
                    options: Some(SortOptions {
                        descending,
                        nulls_first,
                    }),
                })
                .collect();
            let order = lexsort_to_indices(&columns, None).map_err(|e| internal(&e))?;
            take_record_batch(&batch, &order).map_err(|e| internal(&e))?
        };
        let offset = query.offset.min(batch.num_rows());
        let len = query
            .limit
            .unwrap_or(usize::MAX)
            .min(batch.num_rows() - offset);
        Ok(batch.slice(offset, len))
    }
}
