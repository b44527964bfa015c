//! Many pipelines in one process, as `runnel serve` hosts them: each submitted as a SQL
//! script, kept in `<data dir>/pipelines/<name>/pipeline.json`, run on its own task,
//! stopped with a savepoint and resumed from its newest checkpoint or a named savepoint.
//!
//! A pipeline that fails is marked failed; the others and the host go on. What was
//! running when the process stopped is started again by [`Host::open`], from its
//! newest checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use runnel_engine::checkpoint::CheckpointInfo;
use serde::{Deserialize, Serialize};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot};

use crate::status::{PipelineHandle, PipelineStatus, RunState};
use crate::{PrepareOptions, Prepared, Resources, RuntimeError, checkpointing};

/// Where definitions live inside the data directory.
const PIPELINES_DIR: &str = "pipelines";
/// The definition file of one pipeline.
const DEFINITION: &str = "pipeline.json";

/// What is kept of a submitted pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Definition {
    /// Its name (`SET 'pipeline.name'`, or the name it was submitted under).
    pub name: String,
    /// The script.
    pub sql: String,
    /// Whether it should run: `running` or `stopped`. A pipeline that was running when
    /// the host stopped is started again when it opens.
    pub desired: String,
    /// The savepoint taken when it was last stopped.
    #[serde(default)]
    pub savepoint: Option<String>,
    /// When it was submitted (ms since the epoch).
    pub created_ms: i64,
}

/// A hosted pipeline as the API lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hosted {
    /// Its name.
    pub name: String,
    /// `starting`, `running`, `stopping`, `stopped`, `finished` or `failed`.
    pub state: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The savepoint taken at its last stop.
    pub savepoint: Option<String>,
    /// Every savepoint it has.
    pub savepoints: Vec<String>,
    /// When it was submitted (ms since the epoch).
    pub created_ms: i64,
    /// The script.
    pub sql: String,
}

/// Why the host refused a request; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The script does not plan, or a table fails its health check (400).
    #[error("{0}")]
    Invalid(RuntimeError),
    /// No pipeline of that name (404).
    #[error("no pipeline named '{name}'; pipelines: {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names there are.
        known: String,
    },
    /// The request does not fit the pipeline's state (409).
    #[error("{0}")]
    Conflict(String),
    /// Something failed on the host's side (500).
    #[error("{0}")]
    Failed(String),
}

/// What a running pipeline's task is asked to do.
enum Command {
    /// Take savepoint `name` (when the pipeline checkpoints), then stop.
    Stop {
        savepoint: Option<String>,
        reply: oneshot::Sender<Result<Option<CheckpointInfo>, String>>,
    },
}

/// One hosted pipeline.
struct Slot {
    definition: Definition,
    /// Its status: live while it runs, the last one once it stopped.
    handle: PipelineHandle,
    state: RunState,
    /// Where its checkpoints are.
    checkpoints: Option<runnel_engine::checkpoint::CheckpointDir>,
    /// Set while it runs.
    commands: Option<mpsc::UnboundedSender<Command>>,
}

/// The pipelines of one process. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

struct Inner {
    resources: Resources,
    slots: Mutex<BTreeMap<String, Slot>>,
    queries: Mutex<BTreeMap<u64, QuerySlot>>,
    next_query: std::sync::atomic::AtomicU64,
}

/// A temporary query (a bare `SELECT`) running on the host.
struct QuerySlot {
    reader: crate::QueryReader,
    state: RunState,
    /// Stops it (dropped: it runs to its end).
    stop: Option<oneshot::Sender<()>>,
    /// Last read: a query nobody reads for [`QUERY_IDLE`] is stopped and forgotten.
    read: std::time::Instant,
}

/// A temporary query not read for this long is stopped and forgotten.
pub const QUERY_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
/// Most temporary queries at once.
pub const MAX_QUERIES: usize = 16;

/// A temporary query's rows as a shell or page shows them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryView {
    /// Its id.
    pub id: u64,
    /// `running`, `finished` or `failed`.
    pub state: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Column names.
    pub columns: Vec<String>,
    /// Whether each column is numeric (shown right-aligned).
    pub numeric: Vec<bool>,
    /// The first rows, as display text.
    pub rows: Vec<Vec<String>>,
    /// How many rows there are in all.
    pub total: usize,
}

impl Host {
    /// A host over `resources` (the data directory, the shared log and dashboards): reads
    /// every definition in `<data dir>/pipelines/` and starts those that were running.
    /// A pipeline that cannot start is listed as failed, with the reason.
    pub async fn open(resources: Resources) -> Host {
        let host = Host {
            inner: Arc::new(Inner {
                resources,
                slots: Mutex::new(BTreeMap::new()),
                queries: Mutex::new(BTreeMap::new()),
                next_query: std::sync::atomic::AtomicU64::new(1),
            }),
        };
        for definition in host.stored() {
            let name = definition.name.clone();
            let run = definition.desired == "running";
            let result = if run {
                eprintln!("runnel: resuming pipeline {name}");
                host.launch(definition, None).await
            } else {
                host.keep_stopped(definition).await
            };
            if let Err(e) = result {
                eprintln!("runnel: pipeline {name} could not be resumed: {e}");
            }
        }
        host
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.resources.data_dir
    }

    /// The log the pipelines share, when open.
    pub fn log(&self) -> Option<Arc<runnel_log::Log>> {
        self.inner.resources.log.clone()
    }

    /// The pipelines; never held across an `.await`.
    fn slots(&self) -> MutexGuard<'_, BTreeMap<String, Slot>> {
        self.inner.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dir(&self) -> PathBuf {
        self.inner.resources.data_dir.join(PIPELINES_DIR)
    }

    /// The stored definitions, by name; unreadable ones are reported and skipped.
    fn stored(&self) -> Vec<Definition> {
        let Ok(entries) = std::fs::read_dir(self.dir()) else {
            return Vec::new();
        };
        let mut out: Vec<Definition> = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path().join(DEFINITION);
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Definition>(&b).map_err(|e| e.to_string()))
            {
                Ok(d) => out.push(d),
                Err(e) if path.exists() => {
                    eprintln!(
                        "runnel: warning: skipping pipeline definition {}: {e}",
                        path.display()
                    );
                }
                Err(_) => {}
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Writes `definition` durably (temporary file, fsync, rename).
    fn save(&self, definition: &Definition) -> Result<(), HostError> {
        let dir = self.dir().join(safe(&definition.name));
        let failed = |e: std::io::Error| {
            HostError::Failed(format!("saving pipeline {}: {e}", definition.name))
        };
        std::fs::create_dir_all(&dir).map_err(failed)?;
        let json = serde_json::to_vec_pretty(definition)
            .map_err(|e| HostError::Failed(format!("encoding a definition: {e}")))?;
        write_durably(&dir, DEFINITION, &json).map_err(failed)?;
        std::fs::write(dir.join("pipeline.sql"), &definition.sql).map_err(failed)?;
        Ok(())
    }

    /// Plans `definition`'s script (on a thread of its own: planning blocks).
    async fn prepare(
        &self,
        definition: &Definition,
        savepoint: Option<String>,
    ) -> Result<Prepared, RuntimeError> {
        let mut options = PrepareOptions::new(
            format!("{}.sql", definition.name),
            self.inner.resources.data_dir.clone(),
        );
        options.savepoint = savepoint;
        let sql = definition.sql.clone();
        tokio::task::spawn_blocking(move || crate::prepare(&sql, &options))
            .await
            .map_err(|e| RuntimeError::Internal(format!("the planner task: {e}")))?
    }

    /// Plans, checks and submits a new pipeline, then starts it. `name` names it unless
    /// the script sets `'pipeline.name'` (they must agree when both are given).
    ///
    /// # Errors
    /// [`HostError::Invalid`] for a script that does not plan or a table that fails its
    /// health check, [`HostError::Conflict`] when the name is taken.
    pub async fn submit(&self, sql: &str, name: Option<&str>) -> Result<Hosted, HostError> {
        let probe = Definition {
            name: name.unwrap_or("pipeline").to_string(),
            sql: sql.to_string(),
            desired: "running".into(),
            savepoint: None,
            created_ms: runnel_common::time::now_ms(),
        };
        let prepared = self
            .prepare(&probe, None)
            .await
            .map_err(HostError::Invalid)?;
        let set = prepared.settings.pipeline_name.clone();
        let name = match (name, set) {
            (Some(given), Some(set)) if given != set => {
                return Err(HostError::Conflict(format!(
                    "the script sets 'pipeline.name' = '{set}' but it was submitted as '{given}'; \
                     use one name"
                )));
            }
            (_, Some(set)) => set,
            (Some(given), None) => given.to_string(),
            (None, None) => {
                return Err(HostError::Invalid(RuntimeError::Sql(
                    runnel_sql::SqlError::at(
                        1,
                        "name the pipeline: SET 'pipeline.name' = '…'; in the script, or \
                         submit it with a name",
                    ),
                )));
            }
        };
        if !valid_name(&name) {
            return Err(HostError::Conflict(format!(
                "'{name}' cannot name a pipeline: use 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        if let Some(slot) = self.slots().get(&name) {
            let state = slot.state.get().0;
            return Err(HostError::Conflict(format!(
                "a pipeline named '{name}' exists ({state}); stop and delete it first, or \
                 submit under another name"
            )));
        }
        if prepared.settings.distributed {
            return Err(HostError::Conflict(
                "distributed pipelines run with `runnel run` on each member, not on the server"
                    .into(),
            ));
        }
        let definition = Definition { name, ..probe };
        // The script's name, else the one given, is the prepared pipeline's name too.
        debug_assert_eq!(prepared.name, definition.name);
        // Checkpoints of an earlier pipeline of this name (deleted by hand) would be
        // resumed: a new submission starts from scratch.
        if let Ok(dir) = checkpointing::pipeline_dir(&prepared) {
            let _ = dir.clear().await;
        }
        self.launch_prepared(definition.clone(), prepared).await?;
        self.save(&definition)?;
        self.get(&definition.name).await
    }

    /// Starts a stopped pipeline from its newest checkpoint, or from `savepoint`.
    ///
    /// # Errors
    /// [`HostError::Unknown`], [`HostError::Conflict`] when it runs, [`HostError::Invalid`]
    /// when it no longer plans or starts (a missing savepoint).
    pub async fn start(&self, name: &str, savepoint: Option<String>) -> Result<Hosted, HostError> {
        let mut definition = {
            let slots = self.slots();
            let slot = slots.get(name).ok_or_else(|| self.unknown(name, &slots))?;
            if slot.commands.is_some() {
                return Err(HostError::Conflict(format!(
                    "pipeline '{name}' is {}; stop it first",
                    slot.state.get().0
                )));
            }
            slot.definition.clone()
        };
        definition.desired = "running".into();
        self.launch(definition.clone(), savepoint).await?;
        self.save(&definition)?;
        self.get(name).await
    }

    /// Stops a running pipeline: takes a savepoint (named `savepoint`, or after the time)
    /// when it checkpoints, then stops every subtask.
    ///
    /// # Errors
    /// [`HostError::Unknown`], [`HostError::Conflict`] when it is not running,
    /// [`HostError::Failed`] when the savepoint failed (the pipeline keeps running).
    pub async fn stop(&self, name: &str, savepoint: Option<String>) -> Result<Hosted, HostError> {
        let commands = {
            let slots = self.slots();
            let slot = slots.get(name).ok_or_else(|| self.unknown(name, &slots))?;
            match &slot.commands {
                Some(c) => c.clone(),
                None => {
                    return Err(HostError::Conflict(format!(
                        "pipeline '{name}' is {}, not running",
                        slot.state.get().0
                    )));
                }
            }
        };
        let savepoint = savepoint
            .unwrap_or_else(|| format!("stop-{}", runnel_common::time::now_ms()))
            .to_string();
        if !runnel_engine::checkpoint::savepoint::valid_name(&savepoint) {
            return Err(HostError::Conflict(format!(
                "'{savepoint}' is not a savepoint name: use 1 to 64 letters, digits, '-', '_' \
                 or '.'"
            )));
        }
        let (reply, answer) = oneshot::channel();
        commands
            .send(Command::Stop {
                savepoint: Some(savepoint.clone()),
                reply,
            })
            .map_err(|_| HostError::Conflict(format!("pipeline '{name}' has just ended")))?;
        let taken = answer
            .await
            .map_err(|_| HostError::Conflict(format!("pipeline '{name}' ended while stopping")))?
            .map_err(|e| {
                HostError::Failed(format!(
                    "the savepoint of pipeline '{name}' failed, so it keeps running: {e}"
                ))
            })?;
        let definition = self.slots().get_mut(name).map(|slot| {
            slot.definition.desired = "stopped".into();
            slot.definition.savepoint = taken.map(|_| savepoint);
            slot.definition.clone()
        });
        if let Some(definition) = definition {
            self.save(&definition)?;
        }
        self.get(name).await
    }

    /// Deletes a pipeline that is not running: its definition, checkpoints and savepoints.
    ///
    /// # Errors
    /// [`HostError::Unknown`], [`HostError::Conflict`] when it runs.
    pub async fn delete(&self, name: &str) -> Result<(), HostError> {
        let checkpoints = {
            let mut slots = self.slots();
            let slot = slots.get(name).ok_or_else(|| self.unknown(name, &slots))?;
            if slot.commands.is_some() {
                return Err(HostError::Conflict(format!(
                    "pipeline '{name}' is {}; stop it before deleting it",
                    slot.state.get().0
                )));
            }
            // Gone from the list at once, so that nothing starts it while its files go.
            slots.remove(name).and_then(|s| s.checkpoints)
        };
        if let Some(dir) = &checkpoints
            && let Err(e) = dir.clear().await
        {
            return Err(HostError::Failed(format!(
                "deleting the checkpoints of '{name}' in {dir}: {e}"
            )));
        }
        let dir = self.dir().join(safe(name));
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(HostError::Failed(format!(
                "deleting {}: {e}",
                dir.display()
            )));
        }
        Ok(())
    }

    /// One pipeline as the API shows it.
    ///
    /// # Errors
    /// [`HostError::Unknown`].
    pub async fn get(&self, name: &str) -> Result<Hosted, HostError> {
        let slots = self.slots();
        let slot = slots.get(name).ok_or_else(|| self.unknown(name, &slots))?;
        Ok(hosted(slot))
    }

    /// Every pipeline, by name.
    pub async fn list(&self) -> Vec<Hosted> {
        self.slots().values().map(hosted).collect()
    }

    /// The status handles of every pipeline (for the page and `/metrics`).
    pub fn handles(&self) -> Vec<PipelineHandle> {
        self.slots().values().map(|s| s.handle.clone()).collect()
    }

    /// Stops every running pipeline without a savepoint (the process is exiting; each
    /// resumes from its newest checkpoint at the next start), and every query.
    pub async fn shutdown(&self) {
        for (_, mut q) in std::mem::take(&mut *self.queries()) {
            if let Some(stop) = q.stop.take() {
                let _ = stop.send(());
            }
        }
        let mut replies = Vec::new();
        for slot in self.slots().values() {
            if let Some(c) = &slot.commands {
                let (reply, answer) = oneshot::channel();
                if c.send(Command::Stop {
                    savepoint: None,
                    reply,
                })
                .is_ok()
                {
                    replies.push(answer);
                }
            }
        }
        for r in replies {
            let _ = r.await;
        }
    }

    fn queries(&self) -> MutexGuard<'_, BTreeMap<u64, QuerySlot>> {
        self.inner.queries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a temporary query: the session's `SET` and `CREATE` statements, then one
    /// `SELECT`. Its rows are collected (retractions take rows back) and read with
    /// [`Host::query_view`]; tables the script does not declare are looked up among the
    /// log's topics. Nothing is checkpointed or kept.
    ///
    /// # Errors
    /// [`HostError::Invalid`] for a script that does not plan or start,
    /// [`HostError::Conflict`] past [`MAX_QUERIES`].
    pub async fn query(&self, sql: &str) -> Result<QueryView, HostError> {
        self.expire_queries();
        if self.queries().len() >= MAX_QUERIES {
            return Err(HostError::Conflict(format!(
                "{MAX_QUERIES} queries are running; cancel one first"
            )));
        }
        let mut options = PrepareOptions::new("query", self.inner.resources.data_dir.clone());
        options.from_scratch = true;
        let log = self.inner.resources.log.clone();
        let sql = sql.to_string();
        let prepared =
            tokio::task::spawn_blocking(move || crate::prepare_query(&sql, &options, log))
                .await
                .map_err(|e| HostError::Failed(format!("the planner task: {e}")))?
                .map_err(HostError::Invalid)?;
        // A hub of its own: every query collects into a table of the same name.
        let resources = Resources {
            hub: Arc::default(),
            ..self.inner.resources.clone()
        };
        let mut running = prepared
            .start(resources)
            .await
            .map_err(HostError::Invalid)?;
        let reader = running
            .query_reader()
            .ok_or_else(|| HostError::Failed("the query has no result table".into()))?;
        let state = running.state.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = running
                .run_until(async {
                    let _ = stopped.await;
                })
                .await;
        });
        let id = self
            .inner
            .next_query
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.queries().insert(
            id,
            QuerySlot {
                reader,
                state,
                stop: Some(stop),
                read: std::time::Instant::now(),
            },
        );
        self.query_view(id, 0)
    }

    /// Query `id`'s state and its first `max_rows` rows (all of them with 0).
    ///
    /// # Errors
    /// [`HostError::Unknown`] for a query that is not (or no longer) there.
    pub fn query_view(&self, id: u64, max_rows: usize) -> Result<QueryView, HostError> {
        let (reader, state) = {
            let mut queries = self.queries();
            let q = queries.get_mut(&id).ok_or_else(|| HostError::Unknown {
                name: format!("query {id}"),
                known: "queries are forgotten a minute after they were last read".into(),
            })?;
            q.read = std::time::Instant::now();
            (q.reader.clone(), q.state.clone())
        };
        let (run_state, mut error) = state.get();
        let batch = match reader.rows() {
            Ok(b) => Some(b),
            Err(e) => {
                error.get_or_insert(e.to_string());
                None
            }
        };
        let (columns, numeric, rows, total) = match &batch {
            Some(b) => {
                let (columns, numeric, rows) = cells(b, max_rows);
                (columns, numeric, rows, b.num_rows())
            }
            None => Default::default(),
        };
        Ok(QueryView {
            id,
            state: if error.is_some() && run_state != "failed" {
                "failed".into()
            } else {
                run_state.to_string()
            },
            error,
            columns,
            numeric,
            rows,
            total,
        })
    }

    /// Stops query `id` and forgets it.
    ///
    /// # Errors
    /// [`HostError::Unknown`].
    pub fn cancel_query(&self, id: u64) -> Result<(), HostError> {
        match self.queries().remove(&id) {
            Some(mut q) => {
                if let Some(stop) = q.stop.take() {
                    let _ = stop.send(());
                }
                Ok(())
            }
            None => Err(HostError::Unknown {
                name: format!("query {id}"),
                known: "none".into(),
            }),
        }
    }

    /// Stops and forgets the queries nobody read for [`QUERY_IDLE`].
    fn expire_queries(&self) {
        self.queries().retain(|_, q| {
            let keep = q.read.elapsed() < QUERY_IDLE;
            if !keep && let Some(stop) = q.stop.take() {
                let _ = stop.send(());
            }
            keep
        });
    }

    fn unknown(&self, name: &str, slots: &BTreeMap<String, Slot>) -> HostError {
        HostError::Unknown {
            name: name.to_string(),
            known: if slots.is_empty() {
                "none".into()
            } else {
                slots.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        }
    }

    /// Registers a stopped pipeline (at open) with a status that says so.
    async fn keep_stopped(&self, definition: Definition) -> Result<(), HostError> {
        let state = RunState::default();
        state.set("stopped");
        let prepared = self.prepare(&definition, None).await;
        let checkpoints = prepared
            .as_ref()
            .ok()
            .and_then(|p| checkpointing::pipeline_dir(p).ok());
        if let Err(e) = &prepared {
            state.fail(format!("the script no longer plans: {e}"));
        }
        let handle = idle_handle(&definition.name, state.clone());
        self.slots().insert(
            definition.name.clone(),
            Slot {
                definition,
                handle,
                state,
                checkpoints,
                commands: None,
            },
        );
        Ok(())
    }

    /// Plans and starts `definition` (from `savepoint`, or its newest checkpoint).
    async fn launch(
        &self,
        definition: Definition,
        savepoint: Option<String>,
    ) -> Result<(), HostError> {
        let prepared = match self.prepare(&definition, savepoint).await {
            Ok(p) => p,
            Err(e) => {
                // Listed, failed, so that the user sees why and can delete it.
                let state = RunState::default();
                state.fail(e.to_string());
                let handle = idle_handle(&definition.name, state.clone());
                let mut slots = self.slots();
                if !slots.contains_key(&definition.name) {
                    slots.insert(
                        definition.name.clone(),
                        Slot {
                            definition,
                            handle,
                            state,
                            checkpoints: None,
                            commands: None,
                        },
                    );
                }
                return Err(HostError::Invalid(e));
            }
        };
        self.launch_prepared(definition, prepared).await
    }

    async fn launch_prepared(
        &self,
        definition: Definition,
        prepared: Prepared,
    ) -> Result<(), HostError> {
        let name = definition.name.clone();
        let checkpoints = checkpointing::pipeline_dir(&prepared).ok();
        let running = prepared
            .start(self.inner.resources.clone())
            .await
            .map_err(HostError::Invalid)?;
        let handle = running.handle();
        let state = running.state.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        self.slots().insert(
            name.clone(),
            Slot {
                definition,
                handle,
                state,
                checkpoints,
                commands: Some(tx),
            },
        );
        let host = self.clone();
        tokio::spawn(async move {
            drive(running, rx).await;
            if let Some(slot) = host.slots().get_mut(&name) {
                slot.commands = None;
            }
        });
        Ok(())
    }
}

/// Runs a pipeline until it ends or is told to stop.
async fn drive(mut running: crate::Running, mut commands: mpsc::UnboundedReceiver<Command>) {
    let name = running.name().to_string();
    let mut listening = true;
    loop {
        let command = tokio::select! {
            result = running.join() => {
                match result {
                    Ok(()) => eprintln!("runnel: pipeline {name} finished"),
                    Err(e) => eprintln!("runnel: pipeline {name} failed: {e}"),
                }
                return;
            }
            command = commands.recv(), if listening => command,
        };
        let Some(Command::Stop { savepoint, reply }) = command else {
            listening = false;
            continue;
        };
        // The subtasks run on while the savepoint is taken; should the pipeline fail
        // meanwhile, the savepoint fails and the next turn of the loop reports it.
        let taken = match (&savepoint, running.checkpointing) {
            (Some(sp), true) => match running.savepoint(sp).await {
                Ok(info) => Some(info),
                Err(e) => {
                    let _ = reply.send(Err(e.to_string()));
                    continue;
                }
            },
            _ => None,
        };
        running.stop();
        running.state.set("stopped");
        match &taken {
            Some(info) => eprintln!("runnel: pipeline {name} stopped at checkpoint {}", info.id),
            None => eprintln!("runnel: pipeline {name} stopped"),
        }
        // Its subtasks let go of the log and files before the stop is answered.
        drop(running);
        tokio::task::yield_now().await;
        let _ = reply.send(Ok(taken));
        return;
    }
}

fn hosted(slot: &Slot) -> Hosted {
    let (state, error) = slot.state.get();
    Hosted {
        name: slot.definition.name.clone(),
        state: state.to_string(),
        error,
        savepoint: slot.definition.savepoint.clone(),
        savepoints: slot
            .checkpoints
            .as_ref()
            .map(runnel_engine::checkpoint::savepoint::list)
            .unwrap_or_default(),
        created_ms: slot.definition.created_ms,
        sql: slot.definition.sql.clone(),
    }
}

/// The status of a pipeline that does not run in this process now.
fn idle_handle(name: &str, state: RunState) -> PipelineHandle {
    let name = name.to_string();
    PipelineHandle {
        name: name.clone(),
        status: Arc::new(move || {
            let (run_state, error) = state.get();
            PipelineStatus::bare(&name, run_state, error)
        }),
    }
}

/// Whether `name` can name a hosted pipeline (it becomes a directory name).
pub fn valid_name(name: &str) -> bool {
    runnel_engine::checkpoint::savepoint::valid_name(name)
}

fn safe(name: &str) -> String {
    checkpointing::safe_name(name)
}

fn write_durably(dir: &Path, file: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = dir.join(format!("{file}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(file))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Longest cell of a [`QueryView`] before it is cut with `…`.
const MAX_CELL: usize = 60;

/// Column names, which columns are numeric, and the first `max_rows` rows (0: all) as
/// display text (binary values as their size).
fn cells(
    batch: &arrow::record_batch::RecordBatch,
    max_rows: usize,
) -> (Vec<String>, Vec<bool>, Vec<Vec<String>>) {
    use arrow::array::Array as _;
    use arrow::array::cast::AsArray as _;
    use arrow::datatypes::DataType;
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let schema = batch.schema();
    let n = if max_rows == 0 {
        batch.num_rows()
    } else {
        batch.num_rows().min(max_rows)
    };
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = vec![Vec::with_capacity(schema.fields().len()); n];
    for (i, field) in schema.fields().iter().enumerate() {
        let column = batch.column(i);
        let formatter = ArrayFormatter::try_new(column.as_ref(), &options).ok();
        for (r, row) in rows.iter_mut().enumerate() {
            let text = match field.data_type() {
                DataType::Binary | DataType::LargeBinary => {
                    let len = match field.data_type() {
                        DataType::Binary => column
                            .as_binary_opt::<i32>()
                            .map(|b| b.value_length(r) as usize),
                        _ => column
                            .as_binary_opt::<i64>()
                            .map(|b| b.value_length(r) as usize),
                    };
                    match len {
                        Some(len) if column.is_valid(r) => format!("<{len} bytes>"),
                        _ => "NULL".into(),
                    }
                }
                _ => formatter
                    .as_ref()
                    .map_or_else(|| "?".into(), |f| f.value(r).to_string()),
            };
            row.push(cut(&text, MAX_CELL));
        }
    }
    (
        schema.fields().iter().map(|f| f.name().clone()).collect(),
        schema
            .fields()
            .iter()
            .map(|f| f.data_type().is_numeric())
            .collect(),
        rows,
    )
}

/// `s` on one line, cut to `max` characters with `…` (a table cell).
pub fn cut(s: &str, max: usize) -> String {
    let flat: String = s.chars().map(|c| if c == '\n' { ' ' } else { c }).collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let mut kept: String = flat.chars().take(max - 1).collect();
        kept.push('…');
        kept
    }
}
