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
//! Repartitioning: where the plan needs rows by another key than the input's
//! partitioning (a `GROUP BY`, a join key, a window keyed differently), the dataflow is
//! cut into sub-plans at those edges. The upstream sub-plan's tasks write the rows to an
//! internal topic `<pipeline>-<node>-<operator>-repartition` (created with as many
//! partitions as the input has, deleted by `runnel pipeline reset`), each row to the
//! partition of a stable hash of its key, exactly once through the Kafka sink's
//! transactions; the downstream sub-plan's tasks (`task-<s>-<p>`) read partition `p` of
//! it like any input. Watermarks cross with the rows: each writing task appends
//! `<task>=<watermark>` control records to every partition, in order with the rows they
//! cover, and a reading task's watermark is the smallest over the writers still advancing
//! (a writer silent for the idle timeout stops holding event time back).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_common::{Options, TableSpec};
use runnel_connectors::TaskScope;
use runnel_connectors::dead_letters::DeadLetters;
use runnel_connectors::group::{self, Assignment, GroupConfig, Membership};
use runnel_engine::RunConfig;
use runnel_engine::checkpoint::{CheckpointConfig, CheckpointDir};
use runnel_sql::{Input, Node, NodeSpec, Partitioning, PipelineGraph};

use crate::checkpointing;
use crate::{Prepared, Resources, RuntimeError};

/// Sinks whose output stays correct when several tasks write it.
const DISTRIBUTED_SINKS: &[&str] = &[
    "kafka",
    "upsert-kafka",
    "file",
    "filesystem",
    "print",
    "blackhole",
];

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
    /// Records its sources are behind the end of their partitions (as of the last
    /// checkpoint).
    pub lag: i64,
    /// The smallest watermark of its sources (ms since the epoch), once every source has
    /// one.
    pub watermark_ms: Option<i64>,
}

/// What a member shows: who it is, the group, its tasks.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MemberStatus {
    /// This member's worker id.
    pub worker: String,
    /// The consumer group.
    pub group: String,
    /// The group's members and their `topic/partition`s (as the brokers describe the
    /// group).
    pub members: Vec<(String, Vec<String>)>,
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
    /// Failures in a row before this start.
    failures: u32,
}

/// Longest wait before a failed task starts again.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// This process's membership in a distributed pipeline.
pub struct Member {
    prepared: Prepared,
    plans: Vec<SubPlan>,
    /// Which sub-plan reads a topic.
    topic_plan: HashMap<String, u32>,
    resources: Resources,
    worker: String,
    group: String,
    base: CheckpointDir,
    interval: Duration,
    membership: Membership,
    tasks: BTreeMap<TaskScope, Task>,
    /// Tasks that were fenced, with the assignment they were fenced under.
    fenced: BTreeMap<TaskScope, u64>,
    /// Tasks that failed and start again: when, and how many failures in a row.
    retry: BTreeMap<TaskScope, (Instant, u32)>,
    /// The tasks the group gave this member, with the assignment's epoch.
    owned: (BTreeSet<TaskScope>, u64),
    status: Arc<Mutex<MemberStatus>>,
    /// Partitions per input (and repartition) topic: the tasks of a sub-plan.
    partitions: i32,
    /// How this member joined (to ask the coordinator for a rebalance).
    group_config: GroupConfig,
    /// Watching for tasks no member present owns (see [`Member::adopt_orphans`]).
    orphans: Orphans,
}

/// What [`Member::adopt_orphans`] remembers between looks.
struct Orphans {
    /// When the owners were last read.
    looked: Instant,
    /// Tasks without an owner in the group, since when.
    seen: Option<(BTreeSet<TaskScope>, Instant)>,
    /// When this member last asked for a rebalance.
    asked: Option<Instant>,
    /// Each task's owner, from its directory's owner file, by worker.
    owners: BTreeMap<String, Vec<String>>,
    /// Each task's owner file and newest complete checkpoint, and since when both stayed
    /// the same: a task that stops advancing for longer than [`Member::stall_limit`] has
    /// an owner that is gone, whatever the group's member list says.
    progress: BTreeMap<TaskScope, (String, Option<u64>, Instant)>,
    /// This member's id in the group, as last described (a description that leaves this
    /// member out does not take away the id to leave with).
    own_id: Option<String>,
}

/// How often the task owners are read.
const ORPHAN_LOOK: Duration = Duration::from_secs(3);

/// How often a member prints a line on its tasks' progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// How long tasks stay without an owner present before a rebalance is asked for: longer
/// than a new owner takes to claim a task it was given.
const ORPHAN_GRACE: Duration = Duration::from_secs(6);

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

/// One sub-plan of a distributed pipeline: the part of the dataflow between repartition
/// topics. Task `(id, p)` runs it over partition `p` of its topics.
#[derive(Debug, Clone)]
pub struct SubPlan {
    /// 0 reads the pipeline's input topics; later ones read repartition topics.
    pub id: u32,
    /// The dataflow a task of this sub-plan runs.
    pub graph: PipelineGraph,
    /// The topics it reads.
    pub topics: Vec<String>,
}

/// Cuts the dataflow at its key-changing (hash) edges into sub-plans joined by repartition
/// topics, for a pipeline whose input topics have `partitions` partitions.
///
/// # Errors
/// An edge that keeps its partitioning across a cut, an updating stream crossing a cut,
/// columns a repartition topic cannot carry.
pub fn split(
    prepared: &Prepared,
    source: &TableSpec,
    input_topics: &[String],
    partitions: i32,
) -> Result<Vec<SubPlan>, RuntimeError> {
    // A primary-key sink's keyed shuffle is not cut into a repartition topic: a task
    // writes the keys of its own input partitions (as before the shuffle existed), so a
    // key's changes stay in order only when the input is partitioned by that key.
    let mut keyed = prepared.graph.clone();
    for node in &mut keyed.nodes {
        if matches!(node.spec, NodeSpec::Sink(_)) {
            for i in &mut node.inputs {
                i.partitioning = Partitioning::Forward;
            }
        }
    }
    let graph = &keyed;
    let refuse = |m: String| RuntimeError::Distributed(m);
    // Each node's sub-plan: one past its upstream's across a hash edge.
    let mut of = vec![0u32; graph.nodes.len()];
    for node in &graph.nodes {
        let s = node
            .inputs
            .iter()
            .map(|i| match i.partitioning {
                Partitioning::Forward => of[i.node],
                Partitioning::Hash(_) => of[i.node] + 1,
            })
            .max()
            .unwrap_or(0);
        for i in &node.inputs {
            if matches!(i.partitioning, Partitioning::Forward) && of[i.node] != s {
                return Err(refuse(format!(
                    "{} reads {} unchanged but also needs rows by key from elsewhere; \
                     distributed mode cannot split that yet",
                    node.label, graph.nodes[i.node].label
                )));
            }
        }
        of[node.id] = s;
    }
    let last = of.iter().copied().max().unwrap_or(0);
    let name = checkpointing::safe_name(&prepared.name);
    // Connection options of the repartition topics: the first input's.
    let connection: Vec<(String, String)> = source
        .options
        .iter()
        .filter(|(k, _)| {
            k.starts_with("properties.")
                && *k != "properties.group.id"
                && *k != "properties.isolation.level"
        })
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let idle_ms = prepared.settings.idle_timeout.as_millis();
    // The repartition topic of each cut edge (downstream node, input index).
    let mut cut: HashMap<(usize, usize), String> = HashMap::new();
    for node in &graph.nodes {
        for (k, i) in node.inputs.iter().enumerate() {
            if let Partitioning::Hash(_) = i.partitioning {
                let kind: String = node
                    .label
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .find(|w| !w.is_empty())
                    .unwrap_or("op")
                    .to_ascii_lowercase();
                let suffix = if k == 0 {
                    String::new()
                } else {
                    format!("-{k}")
                };
                cut.insert(
                    (node.id, k),
                    format!("runnel-{name}-{}-{kind}{suffix}-repartition", node.id),
                );
            }
        }
    }
    let mut plans = Vec::new();
    for id in 0..=last {
        let mut g = PipelineGraph {
            nodes: Vec::new(),
            settings: graph.settings.clone(),
            query: None,
        };
        let mut topics: Vec<String> = if id == 0 {
            input_topics.to_vec()
        } else {
            Vec::new()
        };
        let mut map: HashMap<usize, usize> = HashMap::new();
        for node in graph.nodes.iter().filter(|n| of[n.id] == id) {
            let mut inputs = Vec::with_capacity(node.inputs.len());
            for (k, i) in node.inputs.iter().enumerate() {
                let from = match (&i.partitioning, cut.get(&(node.id, k))) {
                    (Partitioning::Hash(_), Some(topic)) => {
                        let up = &graph.nodes[i.node];
                        let spec = internal_table(
                            topic,
                            up,
                            source.line,
                            &connection,
                            [
                                (
                                    runnel_connectors::sink::kafka::CHANGELOG,
                                    up.updating.is_some().to_string(),
                                ),
                                ("scan.startup.mode", "earliest-offset".to_string()),
                                ("properties.isolation.level", "read_committed".to_string()),
                                ("source.idle-timeout", format!("{idle_ms} ms")),
                                (
                                    runnel_connectors::source::kafka::WATERMARK_WRITERS,
                                    partitions.to_string(),
                                ),
                            ],
                        );
                        topics.push(topic.clone());
                        let reader = Node {
                            id: g.nodes.len(),
                            label: format!("repartition source {topic}"),
                            spec: NodeSpec::Source(spec, None),
                            schema: up.schema.clone(),
                            inputs: Vec::new(),
                            event_time: up.event_time,
                            window: up.window,
                            updating: up.updating.clone(),
                        };
                        g.nodes.push(reader);
                        g.nodes.len() - 1
                    }
                    _ => *map.get(&i.node).ok_or_else(|| {
                        RuntimeError::Internal(format!(
                            "{}: input {} is in another sub-plan",
                            node.label, i.node
                        ))
                    })?,
                };
                inputs.push(Input {
                    node: from,
                    partitioning: Partitioning::Forward,
                });
            }
            let mut n = node.clone();
            n.id = g.nodes.len();
            n.inputs = inputs;
            map.insert(node.id, n.id);
            g.nodes.push(n);
        }
        // Writers of the repartition topics this sub-plan feeds, after every node.
        for node in &graph.nodes {
            for (k, i) in node.inputs.iter().enumerate() {
                let (Partitioning::Hash(keys), Some(topic)) =
                    (&i.partitioning, cut.get(&(node.id, k)))
                else {
                    continue;
                };
                if of[i.node] != id {
                    continue;
                }
                let up = &graph.nodes[i.node];
                let key_fields: Vec<&str> = keys
                    .iter()
                    .map(|c| up.schema.field(*c).name().as_str())
                    .collect();
                let spec = internal_table(
                    topic,
                    up,
                    source.line,
                    &connection,
                    [
                        (
                            runnel_connectors::sink::kafka::CHANGELOG,
                            up.updating.is_some().to_string(),
                        ),
                        ("key.format", "json".to_string()),
                        ("key.fields", key_fields.join(";")),
                        ("sink.delivery-guarantee", "exactly-once".to_string()),
                        (
                            runnel_connectors::sink::kafka::PARTITION_BY_KEY,
                            "true".to_string(),
                        ),
                        (
                            runnel_connectors::sink::kafka::WATERMARK_WRITER,
                            "true".to_string(),
                        ),
                    ],
                );
                let from = *map.get(&i.node).ok_or_else(|| {
                    RuntimeError::Internal(format!("{}: writer input missing", up.label))
                })?;
                let writer = Node {
                    id: g.nodes.len(),
                    label: format!("repartition sink {topic}"),
                    spec: NodeSpec::Sink(spec),
                    schema: up.schema.clone(),
                    inputs: vec![Input {
                        node: from,
                        partitioning: Partitioning::Forward,
                    }],
                    event_time: up.event_time,
                    window: up.window,
                    updating: up.updating.clone(),
                };
                g.nodes.push(writer);
            }
        }
        plans.push(SubPlan {
            id,
            graph: g,
            topics,
        });
    }
    Ok(plans)
}

/// The table of a repartition topic carrying `up`'s rows as JSON: `connection` (the
/// brokers), then `extra` (the reader's or the writer's options).
fn internal_table<const N: usize>(
    topic: &str,
    up: &Node,
    line: u64,
    connection: &[(String, String)],
    extra: [(&str, String); N],
) -> TableSpec {
    let mut options: Vec<(String, String)> = connection.to_vec();
    options.push(("connector".into(), "kafka".into()));
    options.push(("topic".into(), topic.to_string()));
    options.push(("format".into(), "json".into()));
    options.extend(extra.map(|(k, v)| (k.to_string(), v)));
    TableSpec {
        name: topic.to_string(),
        schema: distinct_names(&up.schema),
        watermark: None,
        options: Options::new(options),
        line,
        metadata: Vec::new(),
        primary_key: Vec::new(),
        partition_keys: Vec::new(),
    }
}

/// `schema` with distinct column names, as the fields of a repartition topic's JSON rows:
/// a join's output may have two `date_time`s; the second becomes `date_time$2` (the
/// operators downstream address columns by position, not by name).
fn distinct_names(schema: &arrow::datatypes::SchemaRef) -> arrow::datatypes::SchemaRef {
    let mut seen = BTreeSet::new();
    let fields: Vec<arrow::datatypes::Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let mut name = f.name().clone();
            let mut n = 1;
            while !seen.insert(name.clone()) {
                n += 1;
                name = format!("{}${n}", f.name());
            }
            f.as_ref().clone().with_name(name)
        })
        .collect();
    std::sync::Arc::new(arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

/// Starts a distributed pipeline over: deletes its repartition topics and every task's
/// checkpoints (stop every member first). Returns what was deleted, one line each.
///
/// # Errors
/// See [`check`]; the brokers or the checkpoint location refused.
pub async fn reset(prepared: &Prepared) -> Result<Vec<String>, RuntimeError> {
    let topics = check(prepared)?;
    let Some(source) = prepared.graph.nodes.iter().find_map(|n| match &n.spec {
        NodeSpec::Source(t, _) => Some(t.clone()),
        _ => None,
    }) else {
        return Ok(Vec::new());
    };
    let internal: Vec<String> = split(prepared, &source, &topics, 1)?
        .into_iter()
        .skip(1)
        .flat_map(|p| p.topics)
        .collect();
    let mut done = Vec::new();
    if !internal.is_empty() {
        let (s, t) = (source.clone(), internal.clone());
        tokio::task::spawn_blocking(move || group::delete_topics(&s, &t))
            .await
            .map_err(|e| RuntimeError::Internal(format!("deleting topics: {e}")))?
            .map_err(|e| RuntimeError::Distributed(e.to_string()))?;
        done.extend(internal.iter().map(|t| format!("topic {t}")));
    }
    let dir = checkpointing::pipeline_dir(prepared)?;
    dir.clear().await.map_err(|e| RuntimeError::Checkpoint {
        location: dir.to_string(),
        message: e.to_string(),
    })?;
    done.push(format!("checkpoints in {dir}"));
    Ok(done)
}

/// The sub-plans a distributed pipeline runs as, as text (`runnel run --explain`).
///
/// # Errors
/// See [`check`] and [`split`].
pub fn explain(prepared: &Prepared) -> Result<String, RuntimeError> {
    let topics = check(prepared)?;
    let Some(source) = prepared.graph.nodes.iter().find_map(|n| match &n.spec {
        NodeSpec::Source(t, _) => Some(t.clone()),
        _ => None,
    }) else {
        return Ok(prepared.explain());
    };
    let mut out = String::new();
    for plan in split(prepared, &source, &topics, 1)? {
        out.push_str(&format!(
            "sub-plan {} (task-{}-<p> reads partition p of {}):\n",
            plan.id,
            plan.id,
            plan.topics.join(", ")
        ));
        for line in plan.graph.explain().lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    Ok(out)
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
        let Some(source) = prepared.graph.nodes.iter().find_map(|n| match &n.spec {
            NodeSpec::Source(t, _) => Some(t.clone()),
            _ => None,
        }) else {
            return Err(RuntimeError::Distributed(
                "the pipeline reads no table".into(),
            ));
        };
        // What cannot be split is refused before any broker is asked.
        split(&prepared, &source, &topics, 1)?;
        for c in prepared.check_tables(&resources).await {
            c.result?;
        }
        let base = checkpointing::pipeline_dir(&prepared)?;
        let interval = checkpointing::interval(&prepared).unwrap_or(Duration::from_secs(10));
        let group = format!("runnel-{}", checkpointing::safe_name(&prepared.name));
        let distributed =
            |e: runnel_connectors::ConnectorError| RuntimeError::Distributed(e.to_string());
        let counts = {
            let (source, topics) = (source.clone(), topics.clone());
            tokio::task::spawn_blocking(move || group::partition_counts(&source, &topics))
                .await
                .map_err(|e| RuntimeError::Internal(format!("topic lookup: {e}")))?
                .map_err(distributed)?
        };
        let Some(&partitions) = counts.values().max() else {
            return Err(RuntimeError::Distributed(format!(
                "none of the input topics {} exists",
                topics.join(", ")
            )));
        };
        let mut plans = split(&prepared, &source, &topics, partitions)?;
        let internal: Vec<String> = plans
            .iter()
            .skip(1)
            .flat_map(|p| p.topics.clone())
            .collect();
        if !internal.is_empty() {
            let (source, internal) = (source.clone(), internal.clone());
            tokio::task::spawn_blocking(move || {
                group::create_topics(&source, &internal, partitions)
            })
            .await
            .map_err(|e| RuntimeError::Internal(format!("creating topics: {e}")))?
            .map_err(distributed)?;
        }
        for plan in &mut plans {
            task_graph(&prepared.name, &mut plan.graph);
        }
        let all: Vec<String> = plans.iter().flat_map(|p| p.topics.clone()).collect();
        let group_config = GroupConfig {
            table: source,
            group: group.clone(),
            instance: worker.clone(),
            topics: all.clone(),
            session_timeout: prepared.settings.session_timeout,
        };
        let membership = group::join(group_config.clone()).map_err(distributed)?;
        eprintln!(
            "runnel: {} runs distributed in {} sub-plan(s): worker {worker} joined group \
             {group} (topics {}; checkpoints in {base})",
            prepared.name,
            plans.len(),
            all.join(", ")
        );
        let status = Arc::new(Mutex::new(MemberStatus {
            worker: worker.clone(),
            group: group.clone(),
            ..MemberStatus::default()
        }));
        let topic_plan = plans
            .iter()
            .flat_map(|p| p.topics.iter().map(move |t| (t.clone(), p.id)))
            .collect();
        Ok(Member {
            prepared,
            plans,
            topic_plan,
            resources,
            worker,
            group,
            base,
            interval,
            membership,
            tasks: BTreeMap::new(),
            fenced: BTreeMap::new(),
            retry: BTreeMap::new(),
            owned: (BTreeSet::new(), 0),
            status,
            partitions,
            group_config,
            orphans: Orphans {
                looked: Instant::now(),
                seen: None,
                asked: None,
                owners: BTreeMap::new(),
                progress: BTreeMap::new(),
                own_id: None,
            },
        })
    }

    /// The status the API and the page read.
    pub fn status(&self) -> Arc<Mutex<MemberStatus>> {
        self.status.clone()
    }

    /// What the admin API reports on this member (`GET /api/pipelines/{name}`: the
    /// member's view under `distributed`).
    pub fn handle(&self) -> crate::status::PipelineHandle {
        let status = self.status.clone();
        let name = self.prepared.name.clone();
        let started = Instant::now();
        let started_ms = runnel_common::time::now_ms();
        crate::status::PipelineHandle {
            name: name.clone(),
            status: Arc::new(move || {
                let member = status.lock().map(|s| s.clone()).unwrap_or_default();
                crate::status::PipelineStatus {
                    started_ms,
                    uptime_s: started.elapsed().as_secs_f64(),
                    parallelism: 1,
                    distributed: serde_json::to_value(member).ok(),
                    ..crate::status::PipelineStatus::bare(&name, "running", None)
                }
            }),
        }
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
        let mut progress = Instant::now();
        let result = loop {
            tokio::select! {
                () = &mut stop => break Ok(()),
                changed = assignment.changed() => {
                    if changed.is_err() {
                        break Err(RuntimeError::Distributed("the group client stopped".into()));
                    }
                    let a = assignment.borrow_and_update().clone();
                    self.reconcile(&a).await;
                }
                _ = tick.tick() => {
                    if let Err(e) = self.reap().await {
                        break Err(e);
                    }
                    self.restart_due().await;
                    self.adopt_orphans().await;
                    self.refresh_status();
                    if progress.elapsed() >= PROGRESS_EVERY {
                        progress = Instant::now();
                        if let Some(line) = self.progress_line() {
                            eprintln!("{line}");
                        }
                    }
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
    async fn reconcile(&mut self, a: &Assignment) {
        let owned: BTreeSet<TaskScope> = a
            .partitions
            .iter()
            .filter_map(|(t, p)| {
                Some(TaskScope {
                    subplan: *self.topic_plan.get(t)?,
                    partition: *p,
                })
            })
            .collect();
        let gone: Vec<TaskScope> = self
            .tasks
            .keys()
            .filter(|s| !owned.contains(s))
            .copied()
            .collect();
        for scope in gone {
            if let Some(t) = self.tasks.remove(&scope) {
                t.join.abort();
                eprintln!(
                    "runnel: {scope}: moved to another member; task dropped (its next owner \
                     resumes from its last checkpoint)"
                );
            }
        }
        let shown: Vec<String> = owned.iter().map(ToString::to_string).collect();
        eprintln!(
            "runnel: worker {} owns {} of group {}",
            self.worker,
            if shown.is_empty() {
                "no tasks".to_string()
            } else {
                shown.join(", ")
            },
            self.group
        );
        self.retry.retain(|s, _| owned.contains(s));
        self.owned = (owned.clone(), a.epoch);
        for scope in owned {
            if self.tasks.contains_key(&scope) || self.fenced.get(&scope) == Some(&a.epoch) {
                continue;
            }
            self.try_start(scope, a.epoch, 0).await;
        }
    }

    /// Starts a task; when that fails (the brokers or the checkpoint store out of reach),
    /// it is tried again later.
    async fn try_start(&mut self, scope: TaskScope, epoch: u64, failures: u32) {
        match self.start_task(scope, epoch, failures).await {
            Ok(task) => {
                self.tasks.insert(scope, task);
            }
            Err(e) => self.fail_later(scope, failures + 1, &e.to_string()),
        }
    }

    /// Notes a task's failure and when it starts again: after 1 s, doubling to 30 s.
    fn fail_later(&mut self, scope: TaskScope, failures: u32, why: &str) {
        let wait = Duration::from_secs(1 << failures.saturating_sub(1).min(5)).min(RETRY_MAX);
        eprintln!(
            "runnel: {scope}: failed ({why}); starting it again in {} s from its last \
             checkpoint",
            wait.as_secs()
        );
        self.retry.insert(scope, (Instant::now() + wait, failures));
    }

    /// Starts again the failed tasks whose time came, if this member still owns them.
    async fn restart_due(&mut self) {
        let (owned, epoch) = self.owned.clone();
        let due: Vec<(TaskScope, u32)> = self
            .retry
            .iter()
            .filter(|(_, (at, _))| *at <= Instant::now())
            .map(|(s, (_, n))| (*s, *n))
            .collect();
        for (scope, failures) in due {
            self.retry.remove(&scope);
            if owned.contains(&scope) && !self.tasks.contains_key(&scope) {
                self.try_start(scope, epoch, failures).await;
            }
        }
    }

    /// Claims task `p`'s checkpoints, restores the newest and starts it.
    async fn start_task(
        &mut self,
        scope: TaskScope,
        epoch: u64,
        failures: u32,
    ) -> Result<Task, RuntimeError> {
        let Some(plan) = self.plans.get(scope.subplan as usize) else {
            return Err(RuntimeError::Internal(format!("{scope}: no such sub-plan")));
        };
        let graph = plan.graph.clone();
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
        let fingerprint = fingerprint(&graph);
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
        let pipeline = runnel_engine::start(&graph, &config)?;
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
            failures,
        })
    }

    /// Collects tasks that ended: a fenced one waits for a new assignment, a failed one
    /// starts again from its last checkpoint after a pause (as Flink's fixed-delay
    /// restarts: a member outlives a broker or store that is out of reach for a while).
    async fn reap(&mut self) -> Result<(), RuntimeError> {
        let done: Vec<TaskScope> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.join.is_finished())
            .map(|(s, _)| *s)
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
                Ok(Err(e)) => {
                    // A task that ran a while starts its count of failures afresh.
                    let before = if t.started.elapsed() > RETRY_MAX {
                        0
                    } else {
                        t.failures
                    };
                    self.fail_later(p, before + 1, &e.to_string());
                }
                Err(e) if e.is_cancelled() => {}
                Err(e) => {
                    return Err(RuntimeError::Internal(format!("{} panicked: {e}", t.scope)));
                }
            }
        }
        Ok(())
    }

    /// Finds tasks that no live member owns, and when the same ones stay so for a few
    /// seconds ([`ORPHAN_GRACE`]), asks the coordinator for a rebalance
    /// ([`group::request_rebalance`]: a broker that dropped a dead member without
    /// reassigning its partitions, or that still lists it). A task's owner is the worker
    /// its directory's owner file names (written when a member starts the task); a task
    /// never started has none. An owner is gone when the group's coordinator no longer
    /// lists it, or when its tasks' checkpoints stop advancing for longer than
    /// [`Member::stall_limit`]. Only the live member first in worker order asks, and at
    /// most once per two session timeouts.
    async fn adopt_orphans(&mut self) {
        if self.orphans.looked.elapsed() < ORPHAN_LOOK || self.owned.1 == 0 {
            return;
        }
        self.orphans.looked = Instant::now();
        let stall_limit = self.stall_limit();
        let (present, own_id): (BTreeSet<String>, Option<String>) = self
            .membership
            .members
            .lock()
            .map(|m| {
                let own = m.iter().find(|m| m.worker == self.worker);
                (
                    m.iter().map(|m| m.worker.clone()).collect(),
                    own.map(|m| m.member_id.clone()),
                )
            })
            .unwrap_or_default();
        let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut progress = BTreeMap::new();
        let mut orphans = BTreeSet::new();
        let mut stalled = BTreeSet::new();
        for plan in &self.plans {
            for partition in 0..self.partitions {
                let scope = TaskScope {
                    subplan: plan.id,
                    partition,
                };
                let Ok(dir) = self.base.join(&scope.to_string()) else {
                    return;
                };
                // A store out of reach decides nothing.
                let (Ok(owner), Ok(newest)) = (dir.owner().await, dir.newest_complete().await)
                else {
                    return;
                };
                let token = owner.unwrap_or_default();
                let worker = token
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let since = match self.orphans.progress.get(&scope) {
                    Some((t, n, since)) if *t == token && *n == newest => *since,
                    _ => Instant::now(),
                };
                let owned = owners.entry(worker.clone()).or_default();
                owned.extend(plan.topics.iter().map(|t| format!("{t}/{partition}")));
                if !worker.is_empty() && worker != self.worker && since.elapsed() > stall_limit {
                    stalled.insert(worker.clone());
                    orphans.insert(scope);
                } else if !present.contains(&worker) {
                    orphans.insert(scope);
                }
                progress.insert(scope, (token, newest, since));
            }
        }
        let o = &mut self.orphans;
        o.owners = owners;
        o.progress = progress;
        if own_id.is_some() {
            o.own_id = own_id;
        }
        let first_live = present
            .iter()
            .chain([&self.worker])
            .find(|w| !stalled.contains(*w));
        let Some(own_id) = o
            .own_id
            .clone()
            .filter(|_| first_live == Some(&self.worker))
        else {
            o.seen = None;
            return;
        };
        if orphans.is_empty() {
            o.seen = None;
            return;
        }
        let since = match &o.seen {
            Some((same, since)) if *same == orphans => *since,
            _ => {
                o.seen = Some((orphans, Instant::now()));
                return;
            }
        };
        let timeout = self.prepared.settings.session_timeout;
        if since.elapsed() < ORPHAN_GRACE || o.asked.is_some_and(|t| t.elapsed() < 2 * timeout) {
            return;
        }
        o.asked = Some(Instant::now());
        o.seen = None;
        let names: Vec<String> = orphans.iter().map(ToString::to_string).collect();
        let stalled = if stalled.is_empty() {
            String::new()
        } else {
            format!(
                "; the checkpoints of {}'s tasks stopped advancing over {:.0} s ago",
                stalled.into_iter().collect::<Vec<_>>().join(", "),
                stall_limit.as_secs_f64()
            )
        };
        eprintln!(
            "runnel: {} have no live owner among the group's members ({}) since {:.0} s{stalled}: \
             leaving and joining the group again to make its coordinator rebalance",
            names.join(", "),
            present.iter().cloned().collect::<Vec<_>>().join(", "),
            since.elapsed().as_secs_f64()
        );
        let config = self.group_config.clone();
        let rebalance = move || group::request_rebalance(&config, &own_id);
        match tokio::task::spawn_blocking(rebalance).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(group = %self.group, "asking for a rebalance: {e}"),
            Err(e) => tracing::warn!(group = %self.group, "asking for a rebalance: {e}"),
        }
    }

    /// How long a task's owner file and checkpoints may stay the same before its owner
    /// counts as gone: two session timeouts (a restore after a takeover, a slow store)
    /// and three checkpoint intervals.
    fn stall_limit(&self) -> Duration {
        2 * self.prepared.settings.session_timeout + 3 * self.interval
    }

    fn refresh_status(&self) {
        let members = self
            .membership
            .members
            .lock()
            .map(|m| {
                m.iter()
                    .map(|m| {
                        let parts: Vec<String> = m
                            .partitions
                            .iter()
                            .map(|(t, p)| format!("{t}/{p}"))
                            .collect();
                        // Brokers that describe no assignments (tansu): the task owners.
                        let parts = match self.orphans.owners.get(&m.worker) {
                            Some(owned) if parts.is_empty() => owned.clone(),
                            _ => parts,
                        };
                        (m.worker.clone(), parts)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let tasks: Vec<TaskStatus> = self
            .tasks
            .values()
            .map(|t| {
                let last = t.checkpoints.lock().ok().and_then(|c| c.last.clone());
                let age = match &last {
                    Some(c) => (runnel_common::time::now_ms() - c.time_ms).max(0) as f64 / 1000.0,
                    None => t.started.elapsed().as_secs_f64(),
                };
                // The task's sources: what it read, how far behind it is, its event time.
                let sources: Vec<&runnel_engine::NodeMetrics> = self.plans
                    [t.scope.subplan as usize]
                    .graph
                    .nodes
                    .iter()
                    .filter(|n| matches!(n.spec, NodeSpec::Source(..)))
                    .map(|n| &t.metrics.nodes[n.id])
                    .collect();
                let rows_in = sources.iter().map(|m| m.rows_out.get()).sum();
                let lag = sources.iter().map(|m| m.connector.lag.get()).sum();
                let watermark_ms = sources
                    .iter()
                    .map(|m| m.watermark.get())
                    .min()
                    .filter(|&w| w > i64::MIN);
                let labels = [
                    ("pipeline", self.prepared.name.clone()),
                    ("task", t.scope.to_string()),
                ];
                metrics::gauge!("runnel_task_lag_records", &labels).set(lag as f64);
                metrics::gauge!("runnel_task_checkpoint_age_seconds", &labels).set(age);
                metrics::gauge!("runnel_task_rows_read", &labels).set(rows_in as f64);
                TaskStatus {
                    lag,
                    task: t.scope.to_string(),
                    partition: t.scope.partition,
                    state: "running".into(),
                    restored_from: t.restored_from,
                    last_checkpoint: last.map(|c| c.id),
                    checkpoint_age_s: age,
                    rows_in,
                    watermark_ms,
                }
            })
            .collect();
        metrics::gauge!("runnel_member_tasks", "pipeline" => self.prepared.name.clone(),
            "worker" => self.worker.clone())
        .set(tasks.len() as f64);
        if let Ok(mut s) = self.status.lock() {
            s.members = members;
            s.tasks = tasks;
        }
    }

    /// One line on the progress of this member's tasks (printed every
    /// [`PROGRESS_EVERY`]): per task its newest checkpoint, rows read, watermark and lag.
    fn progress_line(&self) -> Option<String> {
        let s = self.status.lock().ok()?;
        if s.tasks.is_empty() {
            return None;
        }
        let tasks: Vec<String> = s
            .tasks
            .iter()
            .map(|t| {
                format!(
                    "{} checkpoint {} ({:.0} s ago), {} rows read, watermark {}, lag {}",
                    t.task,
                    t.last_checkpoint
                        .map_or_else(|| "none".to_string(), |c| c.to_string()),
                    t.checkpoint_age_s,
                    t.rows_in,
                    match t.watermark_ms {
                        None => "none".to_string(),
                        Some(i64::MAX) => "end".to_string(),
                        Some(ms) => runnel_common::time::format_timestamp(ms),
                    },
                    t.lag
                )
            })
            .collect();
        Some(format!("runnel: worker {}: {}", s.worker, tasks.join("; ")))
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

/// FNV-1a over a sub-plan's dataflow: a task restores only its own sub-plan's
/// checkpoints.
fn fingerprint(graph: &PipelineGraph) -> String {
    checkpointing::fnv_hex(&format!("{}\ndistributed task", graph.explain()))
}

/// The dataflow every task runs: Kafka sinks get transactional ids named after the
/// pipeline (the task is appended by the sink), the same on every member.
fn task_graph(pipeline: &str, graph: &mut PipelineGraph) {
    let name = checkpointing::safe_name(pipeline);
    for node in &mut graph.nodes {
        if let NodeSpec::Sink(t) = &mut node.spec
            && (t.connector() == "kafka" || t.connector() == "upsert-kafka")
            && t.options.get("sink.transactional-id-prefix").is_none()
        {
            let id = format!("runnel-{name}-{}", checkpointing::safe_name(&t.name));
            t.options.set("sink.transactional-id-prefix", id);
        }
    }
}
