//! A distributed pipeline member: the Kafka Streams model for SQL pipelines.
//!
//! With `SET 'execution.mode' = 'distributed'`, every process started with the script is
//! a member of the Kafka consumer group `runnel-<pipeline>`; the group's coordinator
//! decides who is in and the range assignor divides the input partitions
//! ([`runnel_connectors::group`]). Work is organised in tasks, one per input partition:
//! a task runs the whole dataflow at parallelism 1 over partition `p` of every input topic
//! (`task-0-<p>`), with its own checkpoints in `<state.checkpoints.dir>/<pipeline>/
//! task-0-<p>/` and its own Kafka transactional ids. When the group gives this member a
//! partition, its task claims the checkpoint directory (writing its owner token),
//! restores the newest checkpoint there and resumes from the offsets recorded in it; when
//! the partition moves away the task is dropped, and its next owner redoes the work since
//! its last checkpoint.
//!
//! Fencing: the new owner's claim makes the old owner's next checkpoint fail to publish
//! (the coordinator checks the owner file before every manifest), and its Kafka sinks
//! start the task's transactional ids, which aborts what the old owner left open and
//! fences its producers; a task fenced this way is not restarted until a later
//! assignment gives its partition back.
//!
//! Not yet: plans that need rows by another key than the input's partitioning (a
//! repartition topic between sub-plans); such a script is refused with the operator
//! named.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_connectors::TaskScope;
use runnel_connectors::dead_letters::DeadLetters;
use runnel_connectors::group::{self, Assignment, GroupConfig, Membership};
use runnel_engine::RunConfig;
use runnel_engine::checkpoint::{CheckpointConfig, CheckpointDir};
use runnel_sql::{NodeSpec, Partitioning};

use crate::checkpointing;
use crate::{Prepared, Resources, RuntimeError};

/// Sinks whose output stays correct when several tasks write it.
const DISTRIBUTED_SINKS: &[&str] = &["kafka", "upsert-kafka", "print", "blackhole"];

/// One task's state, as shown in the status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskStatus {
    /// `task-0-<partition>`.
    pub task: String,
    /// The input partition.
    pub partition: i32,
    /// `running`, `finished`, `fenced` or `failed: …`.
    pub state: String,
    /// The checkpoint it resumed from.
    pub restored_from: Option<u64>,
    /// The newest checkpoint it completed.
    pub last_checkpoint: Option<u64>,
    /// Seconds since that checkpoint (or since the task started).
    pub checkpoint_age_s: f64,
    /// Rows its sources read.
    pub rows_in: u64,
}

/// What a member shows: who it is, the group, its tasks.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MemberStatus {
    /// This member's worker id.
    pub worker: String,
    /// The consumer group.
    pub group: String,
    /// The group's members and their partitions (as the brokers describe the group).
    pub members: Vec<(String, Vec<i32>)>,
    /// This member's tasks.
    pub tasks: Vec<TaskStatus>,
}

/// A running task.
struct Task {
    scope: TaskScope,
    /// The assignment that started it.
    epoch: u64,
    started: Instant,
    join: tokio::task::JoinHandle<Result<(), runnel_engine::EngineError>>,
    metrics: runnel_engine::PipelineMetrics,
    checkpoints: runnel_engine::checkpoint::SharedStats,
    restored_from: Option<u64>,
}

/// This process's membership in a distributed pipeline.
pub struct Member {
    prepared: Prepared,
    resources: Resources,
    worker: String,
    group: String,
    base: CheckpointDir,
    interval: Duration,
    membership: Membership,
    tasks: BTreeMap<i32, Task>,
    /// Partitions whose task was fenced, with the assignment it was fenced under.
    fenced: BTreeMap<i32, u64>,
    status: Arc<Mutex<MemberStatus>>,
}

/// Checks that `prepared` can run distributed and names what stands in the way.
///
/// # Errors
/// A source other than Kafka, a `topic-pattern`, an operator that needs rows by another
/// key, a sink whose output would collide across tasks, checkpointing off.
pub fn check(prepared: &Prepared) -> Result<Vec<String>, RuntimeError> {
    let refuse = |message: String| RuntimeError::Distributed(message);
    let mut topics = BTreeSet::new();
    for node in &prepared.graph.nodes {
        match &node.spec {
            NodeSpec::Source(t, _) => {
                let c = t.connector();
                if c != "kafka" && c != "upsert-kafka" {
                    return Err(refuse(format!(
                        "table '{}' (line {}) is a '{c}' source: a distributed pipeline reads \
                         Kafka topics only, whose partitions the members divide",
                        t.name, t.line
                    )));
                }
                if t.options.get("topic-pattern").is_some() {
                    return Err(refuse(format!(
                        "table '{}' (line {}) reads a topic-pattern: a distributed pipeline \
                         names its topics ('topic' = 'a;b')",
                        t.name, t.line
                    )));
                }
                for topic in t.options.get("topic").unwrap_or_default().split(';') {
                    if !topic.trim().is_empty() {
                        topics.insert(topic.trim().to_string());
                    }
                }
            }
            NodeSpec::Sink(t) => {
                let c = t.connector();
                if !DISTRIBUTED_SINKS.contains(&c) {
                    return Err(refuse(format!(
                        "table '{}' (line {}) is a '{c}' sink, which distributed mode does not \
                         write yet (its files would collide across tasks); it writes {}",
                        t.name,
                        t.line,
                        DISTRIBUTED_SINKS.join(", ")
                    )));
                }
            }
            _ => {}
        }
        for input in &node.inputs {
            if let Partitioning::Hash(_) = input.partitioning {
                return Err(refuse(format!(
                    "{} needs its rows by key, which in distributed mode takes a repartition \
                     topic between tasks; runnel does not build those yet. Run it as one \
                     process (without SET 'execution.mode' = 'distributed'), or distribute \
                     only the per-record part of the pipeline",
                    node.label
                )));
            }
        }
    }
    if checkpointing::interval(prepared).is_none() {
        return Err(refuse(
            "a distributed pipeline checkpoints (each task's state and offsets move with \
             it): remove SET 'execution.checkpointing.interval' = 'off'"
                .into(),
        ));
    }
    Ok(topics.into_iter().collect())
}

/// The default worker id: host name and process id.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    format!("{host}-{}", std::process::id())
}

impl Member {
    /// Checks the tables, joins the group and returns; tasks start as partitions arrive.
    ///
    /// # Errors
    /// See [`check`]; a failed health check; an unusable checkpoint location; the group
    /// cannot be joined.
    pub async fn start(
        prepared: Prepared,
        resources: Resources,
        worker: String,
    ) -> Result<Member, RuntimeError> {
        let topics = check(&prepared)?;
        for c in prepared.check_tables(&resources).await {
            c.result?;
        }
        let Some(source) = prepared.graph.nodes.iter().find_map(|n| match &n.spec {
            NodeSpec::Source(t, _) => Some(t.clone()),
            _ => None,
        }) else {
            return Err(RuntimeError::Distributed(
                "the pipeline reads no table".into(),
            ));
        };
        let base = checkpointing::pipeline_dir(&prepared)?;
        let interval = checkpointing::interval(&prepared).unwrap_or(Duration::from_secs(10));
        let group = format!("runnel-{}", checkpointing::safe_name(&prepared.name));
        let membership = group::join(GroupConfig {
            table: source,
            group: group.clone(),
            instance: worker.clone(),
            topics: topics.clone(),
            session_timeout: prepared.settings.session_timeout,
        })
        .map_err(|e| RuntimeError::Distributed(e.to_string()))?;
        eprintln!(
            "runnel: {} runs distributed: worker {worker} joined group {group} (topics {}; \
             checkpoints in {base})",
            prepared.name,
            topics.join(", ")
        );
        let status = Arc::new(Mutex::new(MemberStatus {
            worker: worker.clone(),
            group: group.clone(),
            ..MemberStatus::default()
        }));
        let mut prepared = prepared;
        task_graph(&mut prepared);
        Ok(Member {
            prepared,
            resources,
            worker,
            group,
            base,
            interval,
            membership,
            tasks: BTreeMap::new(),
            fenced: BTreeMap::new(),
            status,
        })
    }

    /// The status the API and the page read.
    pub fn status(&self) -> Arc<Mutex<MemberStatus>> {
        self.status.clone()
    }

    /// Runs tasks as the group assigns partitions, until `stop` completes (Ctrl-C,
    /// SIGTERM) or a task fails for another reason than losing its partition.
    ///
    /// # Errors
    /// A task's error; the group client stopped.
    pub async fn run_until(
        &mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), RuntimeError> {
        tokio::pin!(stop);
        let mut assignment = self.membership.assignment.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let result = loop {
            tokio::select! {
                () = &mut stop => break Ok(()),
                changed = assignment.changed() => {
                    if changed.is_err() {
                        break Err(RuntimeError::Distributed("the group client stopped".into()));
                    }
                    let a = assignment.borrow_and_update().clone();
                    if let Err(e) = self.reconcile(&a).await {
                        break Err(e);
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = self.reap().await {
                        break Err(e);
                    }
                    self.refresh_status();
                }
            }
        };
        // The summary shows the tasks as they stood.
        self.refresh_status();
        for (_, t) in std::mem::take(&mut self.tasks) {
            t.join.abort();
        }
        result
    }

    /// Starts the tasks of newly assigned partitions and drops those that moved away.
    async fn reconcile(&mut self, a: &Assignment) -> Result<(), RuntimeError> {
        let gone: Vec<i32> = self
            .tasks
            .keys()
            .filter(|p| !a.partitions.contains(p))
            .copied()
            .collect();
        for p in gone {
            if let Some(t) = self.tasks.remove(&p) {
                t.join.abort();
                eprintln!(
                    "runnel: {}: partition {p} moved to another member; task dropped (its \
                     next owner resumes from its last checkpoint)",
                    t.scope
                );
            }
        }
        eprintln!(
            "runnel: worker {} owns partitions {:?} of group {}",
            self.worker, a.partitions, self.group
        );
        for &p in &a.partitions {
            if self.tasks.contains_key(&p) || self.fenced.get(&p) == Some(&a.epoch) {
                continue;
            }
            let task = self.start_task(p, a.epoch).await?;
            self.tasks.insert(p, task);
        }
        Ok(())
    }

    /// Claims task `p`'s checkpoints, restores the newest and starts it.
    async fn start_task(&mut self, p: i32, epoch: u64) -> Result<Task, RuntimeError> {
        let scope = TaskScope {
            subplan: 0,
            partition: p,
        };
        let err = |e: runnel_engine::checkpoint::CheckpointError| RuntimeError::Checkpoint {
            location: self.base.to_string(),
            message: e.to_string(),
        };
        let dir = self.base.join(&scope.to_string()).map_err(err)?;
        let token = format!(
            "{} assignment {epoch} at {}",
            self.worker,
            runnel_common::time::format_timestamp(runnel_common::time::now_ms())
        );
        dir.claim(&token).await.map_err(err)?;
        let fingerprint = checkpointing::fingerprint(&self.prepared);
        let restore = if self.prepared.options.from_scratch {
            None
        } else {
            runnel_engine::checkpoint::load_latest(&dir, &fingerprint, &self.prepared.name)
                .await?
                .map(Arc::new)
        };
        let restored_from = restore.as_ref().map(|r| r.manifest.id);
        let data_dir = match dir.local_path() {
            // Shared with the task's next owner: sealed sink batches survive this member.
            Some(d) => d.join("data"),
            None => self
                .resources
                .data_dir
                .join("tasks")
                .join(checkpointing::safe_name(&self.prepared.name))
                .join(scope.to_string()),
        };
        std::fs::create_dir_all(&data_dir).map_err(|e| RuntimeError::Checkpoint {
            location: data_dir.display().to_string(),
            message: e.to_string(),
        })?;
        let settings = &self.prepared.settings;
        let config = RunConfig {
            parallelism: 1,
            data_dir: data_dir.clone(),
            batch_size: settings.batch_size,
            idle_timeout: settings.idle_timeout,
            log: self.resources.log.clone(),
            dashboards: self.resources.hub.clone(),
            checkpoint: Some(CheckpointConfig {
                interval: self.interval,
                dir,
                retain: settings.checkpoints_retained,
                pipeline: self.prepared.name.clone(),
                fingerprint,
                restore,
                owner: Some(token),
            }),
            dead_letters: DeadLetters::new(
                settings.dead_letters.clone(),
                self.resources.log.clone(),
                restored_from.is_none(),
            ),
            on_error: settings.on_error,
            task: Some(scope),
            ..RunConfig::default()
        };
        let pipeline = runnel_engine::start(&self.prepared.graph, &config)?;
        match restored_from {
            Some(id) => eprintln!("runnel: {scope}: resumed from checkpoint {id}"),
            None => eprintln!("runnel: {scope}: started (no checkpoint yet)"),
        }
        let metrics = pipeline.metrics();
        let checkpoints = pipeline.checkpoints();
        Ok(Task {
            scope,
            epoch,
            started: Instant::now(),
            join: tokio::spawn(pipeline.wait()),
            metrics,
            checkpoints,
            restored_from,
        })
    }

    /// Collects tasks that ended: a fenced one waits for a new assignment, a failed one
    /// stops the member.
    async fn reap(&mut self) -> Result<(), RuntimeError> {
        let done: Vec<i32> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.join.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for p in done {
            let Some(t) = self.tasks.remove(&p) else {
                continue;
            };
            match t.join.await {
                Ok(Ok(())) => eprintln!("runnel: {}: its input ended; task finished", t.scope),
                Ok(Err(runnel_engine::EngineError::Fenced(why))) => {
                    eprintln!("runnel: {}: taken over by another member: {why}", t.scope);
                    self.fenced.insert(p, t.epoch);
                }
                Ok(Err(e)) if is_fencing(&e) => {
                    eprintln!("runnel: {}: taken over by another member: {e}", t.scope);
                    self.fenced.insert(p, t.epoch);
                }
                Ok(Err(e)) => return Err(RuntimeError::Engine(e)),
                Err(e) if e.is_cancelled() => {}
                Err(e) => {
                    return Err(RuntimeError::Internal(format!("{} panicked: {e}", t.scope)));
                }
            }
        }
        Ok(())
    }

    fn refresh_status(&self) {
        let members = self
            .membership
            .members
            .lock()
            .map(|m| {
                m.iter()
                    .map(|m| (m.worker.clone(), m.partitions.iter().copied().collect()))
                    .collect()
            })
            .unwrap_or_default();
        let tasks = self
            .tasks
            .values()
            .map(|t| {
                let last = t.checkpoints.lock().ok().and_then(|c| c.last.clone());
                let age = match &last {
                    Some(c) => (runnel_common::time::now_ms() - c.time_ms).max(0) as f64 / 1000.0,
                    None => t.started.elapsed().as_secs_f64(),
                };
                let rows_in = self
                    .prepared
                    .graph
                    .nodes
                    .iter()
                    .filter(|n| matches!(n.spec, NodeSpec::Source(..)))
                    .map(|n| t.metrics.nodes[n.id].rows_out.get())
                    .sum();
                TaskStatus {
                    task: t.scope.to_string(),
                    partition: t.scope.partition,
                    state: "running".into(),
                    restored_from: t.restored_from,
                    last_checkpoint: last.map(|c| c.id),
                    checkpoint_age_s: age,
                    rows_in,
                }
            })
            .collect();
        if let Ok(mut s) = self.status.lock() {
            s.members = members;
            s.tasks = tasks;
        }
    }

    /// A one-screen summary of this member's share.
    pub fn summary(&self) -> String {
        let Ok(s) = self.status.lock() else {
            return String::new();
        };
        let mut out = format!(
            "runnel: worker {} of group {} stopped; its tasks:\n",
            s.worker, s.group
        );
        for t in &s.tasks {
            out.push_str(&format!(
                "  {:<12} {:>12} rows read, last checkpoint {}\n",
                t.task,
                t.rows_in,
                t.last_checkpoint
                    .map_or_else(|| "none".to_string(), |c| c.to_string())
            ));
        }
        out
    }
}

/// Whether a task's error says another member took its Kafka transactional id.
fn is_fencing(e: &runnel_engine::EngineError) -> bool {
    let text = e.to_string();
    text.contains("fenced") || text.contains("Fenced")
}

/// The dataflow every task runs: Kafka sinks get transactional ids named after the
/// pipeline (the task is appended by the sink), the same on every member.
fn task_graph(prepared: &mut Prepared) {
    let name = checkpointing::safe_name(&prepared.name);
    for node in &mut prepared.graph.nodes {
        if let NodeSpec::Sink(t) = &mut node.spec
            && (t.connector() == "kafka" || t.connector() == "upsert-kafka")
            && t.options.get("sink.transactional-id-prefix").is_none()
        {
            let id = format!("runnel-{name}-{}", checkpointing::safe_name(&t.name));
            t.options.set("sink.transactional-id-prefix", id);
        }
    }
}
