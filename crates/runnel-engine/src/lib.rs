//! The dataflow runtime: runs a [`PipelineGraph`] as parallel subtasks.
//!
//! Every node runs as `parallelism` subtasks (tokio tasks). Rows move as
//! Arrow `RecordBatch`es over bounded channels, forward or hash-partitioned
//! by key; watermarks, checkpoint barriers and end-of-stream travel in the
//! same channels ([`runnel_common::Message`]). Stateful work lives behind the
//! [`Operator`] trait, whose `snapshot`/`restore` hooks checkpoints use.
//!
//! Data enters through connector sources (built by the connector registry
//! from each table's `WITH (…)` options) and leaves through connector sinks.
#![warn(missing_docs)]

pub mod channel;
pub mod checkpoint;
pub mod error;
pub mod eval;
pub mod input;
pub mod metrics;
pub mod operator;
pub mod operators;
pub mod profile;
pub mod subtask;
pub mod watermark;

use std::path::PathBuf;
use std::time::Duration;

pub use error::EngineError;
pub use metrics::{NodeMetrics, PipelineMetrics};
pub use operator::{Operator, Output, StateReader, StateWriter};
use runnel_connectors::{SinkContext, SourceContext, registry};
use runnel_sql::{NodeSpec, Partitioning, PipelineGraph};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::channel::{Outputs, Route, Rx, Tx};
use crate::input::Inputs;
use crate::subtask::SourceTiming;

/// How to run a pipeline.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Subtasks per node.
    pub parallelism: usize,
    /// Where connectors keep files (dead letters, log, checkpoints).
    pub data_dir: PathBuf,
    /// Preferred rows per source batch.
    pub batch_size: usize,
    /// A source subtask without data for this long is idle (watermarks skip it).
    pub idle_timeout: Duration,
    /// Messages each subtask queue holds before senders wait.
    pub channel_capacity: usize,
    /// The embedded durable log for `log` tables (opened by the caller).
    pub log: Option<std::sync::Arc<runnel_log::Log>>,
    /// Where `dashboard` tables put their rows for the web page.
    pub dashboards: std::sync::Arc<runnel_connectors::sink::dashboard::Dashboards>,
    /// Checkpointing, if on.
    pub checkpoint: Option<checkpoint::CheckpointConfig>,
    /// Where sources put records they cannot read, and operators rows whose
    /// expressions fail.
    pub dead_letters: std::sync::Arc<runnel_connectors::dead_letters::DeadLetters>,
    /// What an operator does with a row whose expression fails.
    pub on_error: eval::OnError,
    /// In a distributed run: the task this engine runs (sources read only its partition,
    /// sinks name what they commit after it).
    pub task: Option<runnel_connectors::TaskScope>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            parallelism: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            data_dir: PathBuf::from("runnel-data"),
            batch_size: 8192,
            idle_timeout: Duration::from_secs(5),
            channel_capacity: 16,
            log: None,
            dashboards: Default::default(),
            checkpoint: None,
            dead_letters: Default::default(),
            on_error: eval::OnError::default(),
            task: None,
        }
    }
}

/// A started pipeline.
pub struct RunningPipeline {
    tasks: JoinSet<Result<(), EngineError>>,
    metrics: PipelineMetrics,
    checkpoints: checkpoint::SharedStats,
    requests: Option<tokio::sync::mpsc::UnboundedSender<checkpoint::CheckpointRequest>>,
}

impl RunningPipeline {
    /// Live counters, indexed like the graph's nodes.
    pub fn metrics(&self) -> PipelineMetrics {
        self.metrics.clone()
    }

    /// The last completed and the failed checkpoints.
    pub fn checkpoints(&self) -> checkpoint::SharedStats {
        self.checkpoints.clone()
    }

    /// Takes a checkpoint now (after the one in flight, if any) and answers with it once
    /// it is complete.
    ///
    /// # Errors
    /// The pipeline does not checkpoint, has ended, or the checkpoint failed.
    pub async fn checkpoint_now(&self) -> Result<checkpoint::CheckpointInfo, String> {
        let Some(requests) = &self.requests else {
            return Err(
                "the pipeline does not checkpoint (its sources all end; SET \
                        'execution.checkpointing.interval' to checkpoint it)"
                    .into(),
            );
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        requests
            .send(tx)
            .map_err(|_| "the pipeline has ended".to_string())?;
        rx.await
            .map_err(|_| "the pipeline ended before the checkpoint completed".to_string())?
    }

    /// Waits until every subtask finished; the first error stops all others.
    pub async fn wait(mut self) -> Result<(), EngineError> {
        self.join().await
    }

    /// Like [`RunningPipeline::wait`] without giving up the handle, so a caller can
    /// `select!` it against a shutdown signal and then [`RunningPipeline::abort`].
    pub async fn join(&mut self) -> Result<(), EngineError> {
        while let Some(res) = self.tasks.join_next().await {
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.tasks.abort_all();
                    return Err(e);
                }
                Err(join) if join.is_cancelled() => {}
                Err(join) => {
                    self.tasks.abort_all();
                    return Err(EngineError::Internal(format!("a subtask panicked: {join}")));
                }
            }
        }
        Ok(())
    }

    /// Stops every subtask now (Ctrl-C); sinks are not finished.
    pub fn abort(&mut self) {
        self.tasks.abort_all();
    }
}

/// Whether the script asks for a live profile of its sources
/// (`SET 'quality.profile' = 'on'`).
pub fn profiling(graph: &PipelineGraph) -> bool {
    graph.settings.get("quality.profile").is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "on" | "true" | "yes" | "1"
        )
    })
}

/// Builds every connector and operator of `graph` and starts its subtasks on
/// the current tokio runtime. Connector and operator errors (bad options,
/// missing files) are reported here, before any data flows.
pub fn start(graph: &PipelineGraph, config: &RunConfig) -> Result<RunningPipeline, EngineError> {
    let p = config.parallelism.max(1);
    let node_metrics: Vec<NodeMetrics> = graph
        .nodes
        .iter()
        .map(|node| {
            let m = NodeMetrics::default();
            // No watermark until one arrives (the admin API shows none, not 1970).
            m.watermark.set(i64::MIN);
            if matches!(node.spec, NodeSpec::Source(..)) && profiling(graph) {
                m.profile.enable(&node.schema);
            }
            m
        })
        .collect();
    let mut wiring = Wiring::new(graph, p, config.channel_capacity)?;
    let stats: checkpoint::SharedStats = Default::default();
    let (coordinator, parts) = checkpointing(graph, p, config, &stats);
    // Build every connector and operator before spawning anything: a bad
    // option or missing file must fail the start, not a half-running pipeline.
    let mut pending: Vec<Task> = Vec::new();
    for node in &graph.nodes {
        let m = &node_metrics[node.id];
        let built = match &node.spec {
            NodeSpec::Source(spec, event_time) => {
                source_tasks(spec, event_time, node, m, &wiring, &parts, config)?
            }
            NodeSpec::Sink(spec) => sink_tasks(spec, node, m, &mut wiring, &parts, config)?,
            _ => operator_tasks(graph, node, m, config, &mut wiring, &parts)?,
        };
        pending.extend(built);
    }
    drop(wiring);
    let mut tasks = JoinSet::new();
    for task in pending {
        tasks.spawn(task);
    }
    // The subtasks hold the only report senders: when they are all done, so is it.
    drop(parts);
    let mut requests = None;
    if let Some(mut c) = coordinator {
        requests = Some(c.requests());
        tasks.spawn(c.run());
    }
    Ok(RunningPipeline {
        tasks,
        metrics: PipelineMetrics {
            nodes: std::sync::Arc::new(node_metrics),
        },
        checkpoints: stats,
        requests,
    })
}

/// A subtask's future, built but not yet spawned.
type Task = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), EngineError>> + Send>>;

/// The queues between subtasks: one per subtask, with channel numbers per input edge.
struct Wiring<'g> {
    graph: &'g PipelineGraph,
    parallelism: usize,
    txs: Vec<Vec<Tx>>,
    rxs: Vec<Vec<Option<Rx>>>,
    /// Per node, per input edge: the first channel number of that edge.
    offsets: Vec<Vec<usize>>,
    /// Per node, per channel number: which input edge it belongs to.
    channel_input: Vec<Vec<usize>>,
}

impl<'g> Wiring<'g> {
    fn new(graph: &'g PipelineGraph, p: usize, capacity: usize) -> Result<Self, EngineError> {
        let mut w = Wiring {
            graph,
            parallelism: p,
            txs: Vec::new(),
            rxs: Vec::new(),
            offsets: Vec::new(),
            channel_input: Vec::new(),
        };
        for node in &graph.nodes {
            let (t, r): (Vec<_>, Vec<_>) = (0..p)
                .map(|_| mpsc::channel(capacity))
                .map(|(t, r)| (t, Some(r)))
                .unzip();
            w.txs.push(t);
            w.rxs.push(r);
            let mut offs = Vec::new();
            let mut chan = Vec::new();
            for (k, input) in node.inputs.iter().enumerate() {
                if input.node >= node.id {
                    return Err(EngineError::Invalid(format!(
                        "{} reads from a later node",
                        node.label
                    )));
                }
                offs.push(chan.len());
                let width = match input.partitioning {
                    Partitioning::Forward => 1,
                    Partitioning::Hash(_) => p,
                };
                chan.extend(std::iter::repeat_n(k, width));
            }
            w.offsets.push(offs);
            w.channel_input.push(chan);
        }
        Ok(w)
    }

    /// Where subtask `s` of node `id` sends its output: one route per consuming edge.
    fn outputs(&self, id: usize, s: usize, metrics: &NodeMetrics) -> Outputs {
        let p = self.parallelism;
        let mut routes = Vec::new();
        for (c, k) in self.graph.consumers(id) {
            let input = &self.graph.nodes[c].inputs[k];
            let base = self.offsets[c][k];
            let route = match &input.partitioning {
                Partitioning::Forward => Route {
                    targets: vec![(self.txs[c][s].clone(), base)],
                    hash_keys: None,
                },
                Partitioning::Hash(keys) => Route {
                    targets: (0..p).map(|t| (self.txs[c][t].clone(), base + s)).collect(),
                    hash_keys: Some(keys.clone()),
                },
            };
            routes.push(route);
        }
        Outputs::new(routes, metrics.blocked_ns.clone())
    }

    /// The input side of subtask `s` of node `id` (taken once).
    fn inputs(&mut self, id: usize, s: usize) -> Result<Inputs, EngineError> {
        let rx = self.rxs[id][s]
            .take()
            .ok_or_else(|| EngineError::Internal("queue taken twice".into()))?;
        Ok(Inputs {
            rx,
            channel_input: self.channel_input[id].clone(),
        })
    }
}

/// How subtasks take part in checkpoints (all `None` when checkpointing is off).
struct Parts {
    sources: Option<checkpoint::Participant>,
    sinks: Option<checkpoint::Participant>,
    restored: Option<std::sync::Arc<checkpoint::Restored>>,
    sink_mode: Option<runnel_connectors::CheckpointMode>,
}

impl Parts {
    fn handle(&self, node: usize, subtask: usize, sink: bool) -> Option<subtask::CheckpointHandle> {
        let part = if sink { &self.sinks } else { &self.sources };
        part.as_ref().map(|participant| subtask::CheckpointHandle {
            node,
            subtask,
            participant: participant.clone(),
            restored: self.restored.clone(),
        })
    }
}

/// The coordinator (when checkpointing) and the participants' handles.
fn checkpointing(
    graph: &PipelineGraph,
    p: usize,
    config: &RunConfig,
    stats: &checkpoint::SharedStats,
) -> (Option<checkpoint::Coordinator>, Parts) {
    let Some(cc) = &config.checkpoint else {
        let none = Parts {
            sources: None,
            sinks: None,
            restored: None,
            sink_mode: None,
        };
        return (None, none);
    };
    if let Ok(mut st) = stats.lock() {
        st.restored_from = cc.restore.as_ref().map(|r| r.manifest.id);
    }
    let all = |pred: fn(&NodeSpec) -> bool| -> Vec<(usize, usize)> {
        graph
            .nodes
            .iter()
            .filter(|n| pred(&n.spec))
            .flat_map(|n| (0..p).map(move |s| (n.id, s)))
            .collect()
    };
    let expected = all(|_| true);
    let sources = all(|s| matches!(s, NodeSpec::Source(..)));
    let (c, src, snk) = checkpoint::Coordinator::new(cc.clone(), expected, sources, stats.clone());
    let parts = Parts {
        sources: Some(src),
        sinks: Some(snk),
        restored: cc.restore.clone(),
        sink_mode: Some(runnel_connectors::CheckpointMode {
            restored: cc.restore.as_ref().map(|r| r.manifest.id),
            attempt: cc.owner.as_deref().map(runnel_connectors::txn::attempt_of),
            restored_attempt: cc
                .restore
                .as_ref()
                .and_then(|r| r.manifest.owner.as_deref())
                .map(runnel_connectors::txn::attempt_of),
        }),
    };
    (Some(c), parts)
}

fn connector_error(table: &str) -> impl FnOnce(runnel_connectors::ConnectorError) -> EngineError {
    let table = table.to_string();
    move |e| EngineError::Connector {
        table,
        error: Box::new(e),
    }
}

fn source_tasks(
    spec: &runnel_common::TableSpec,
    event_time: &Option<std::sync::Arc<dyn datafusion_physical_expr::PhysicalExpr>>,
    node: &runnel_sql::Node,
    m: &NodeMetrics,
    wiring: &Wiring<'_>,
    parts: &Parts,
    config: &RunConfig,
) -> Result<Vec<Task>, EngineError> {
    let p = wiring.parallelism;
    let contexts = (0..p)
        .map(|s| SourceContext {
            subtask: s,
            parallelism: p,
            metrics: m.connector.clone(),
            data_dir: config.data_dir.clone(),
            batch_size: config.batch_size,
            log: config.log.clone(),
            checkpointing: config.checkpoint.is_some(),
            dead_letters: config.dead_letters.clone(),
            task: config.task,
        })
        .collect();
    let sources = registry::build_sources(spec, contexts).map_err(connector_error(&spec.name))?;
    let timing = SourceTiming {
        watermark: spec.watermark.clone(),
        event_time: event_time.clone(),
        idle_timeout: config.idle_timeout,
    };
    Ok(sources
        .into_iter()
        .enumerate()
        .map(|(s, source)| {
            Box::pin(subtask::run_source(
                spec.name.clone(),
                source,
                timing.clone(),
                wiring.outputs(node.id, s, m),
                m.clone(),
                parts.handle(node.id, s, false),
            )) as Task
        })
        .collect())
}

fn sink_tasks(
    spec: &runnel_common::TableSpec,
    node: &runnel_sql::Node,
    m: &NodeMetrics,
    wiring: &mut Wiring<'_>,
    parts: &Parts,
    config: &RunConfig,
) -> Result<Vec<Task>, EngineError> {
    let p = wiring.parallelism;
    let sealed = config
        .checkpoint
        .as_ref()
        .and_then(|c| c.dir.sealed_store(&spec.name));
    let contexts = (0..p)
        .map(|s| SinkContext {
            subtask: s,
            parallelism: p,
            metrics: m.connector.clone(),
            data_dir: config.data_dir.clone(),
            log: config.log.clone(),
            dashboards: config.dashboards.clone(),
            checkpoint: parts.sink_mode,
            task: config.task,
            sealed: sealed.clone(),
            pipeline: config.checkpoint.as_ref().map(|c| c.pipeline.clone()),
        })
        .collect();
    let sinks = registry::build_sinks(spec, contexts).map_err(connector_error(&spec.name))?;
    let mut tasks = Vec::with_capacity(p);
    for (s, sink) in sinks.into_iter().enumerate() {
        tasks.push(Box::pin(subtask::run_sink(
            spec.name.clone(),
            sink,
            spec.schema.clone(),
            wiring.inputs(node.id, s)?,
            m.clone(),
            parts.handle(node.id, s, true),
        )) as Task);
    }
    Ok(tasks)
}

fn operator_tasks(
    graph: &PipelineGraph,
    node: &runnel_sql::Node,
    m: &NodeMetrics,
    config: &RunConfig,
    wiring: &mut Wiring<'_>,
    parts: &Parts,
) -> Result<Vec<Task>, EngineError> {
    // Rows whose expressions fail: one dead-letter writer per operator, counted as the
    // node's dead letters.
    let operator = format!("{} #{}", node.label, node.id);
    let writer = (config.on_error == eval::OnError::DeadLetter).then(|| {
        config.dead_letters.writer(
            &operator,
            None,
            runnel_connectors::dead_letters::Target::File(
                config
                    .data_dir
                    .join("dead-letters")
                    .join("expressions.jsonl"),
            ),
            &m.connector,
        )
    });
    let errors = eval::RowErrors::new(&operator, config.on_error, writer);
    let input_schemas: Vec<_> = node
        .inputs
        .iter()
        .map(|i| graph.nodes[i.node].schema.clone())
        .collect();
    // A lookup join's table is shared by its subtasks, each of which waits for it to
    // load before taking rows.
    let lookup = match &node.spec {
        NodeSpec::LookupJoin(spec) => Some((
            spec,
            registry::lookup_table(
                &spec.table,
                spec.table_keys.clone(),
                SourceContext {
                    subtask: 0,
                    parallelism: 1,
                    // The table's own counts: its rejected records are not the join's
                    // failed expressions (the source warns about them, naming the file).
                    metrics: runnel_common::metrics::ConnectorMetrics::default(),
                    data_dir: config.data_dir.clone(),
                    batch_size: config.batch_size,
                    log: config.log.clone(),
                    checkpointing: false,
                    dead_letters: config.dead_letters.clone(),
                    // A looked-up table is read whole by every task.
                    task: None,
                },
            )
            .map_err(connector_error(&spec.table.name))?,
        )),
        _ => None,
    };
    let mut tasks = Vec::with_capacity(wiring.parallelism);
    for s in 0..wiring.parallelism {
        let op: Box<dyn operator::Operator> = match &lookup {
            Some((spec, table)) => Box::new(operators::lookup_join::LookupJoin::new(
                spec,
                table.clone(),
                &node.schema,
                errors.clone(),
            )),
            None => match &node.spec {
                NodeSpec::Quality(spec) => {
                    // Violations go where the table's other dead letters go.
                    let table = &spec.table;
                    let writer = config.dead_letters.writer(
                        &table.name,
                        runnel_connectors::dead_letters::own_target(table),
                        runnel_connectors::dead_letters::Target::File(
                            config
                                .data_dir
                                .join("dead-letters")
                                .join(format!("{}.jsonl", table.name)),
                        ),
                        &m.connector,
                    );
                    if let Ok(mut p) = m.connector.dead_letter_path.lock() {
                        *p = Some(writer.target().to_string());
                    }
                    Box::new(operators::quality::Quality::new(
                        &operator,
                        spec,
                        &m.rules,
                        Some(writer),
                    ))
                }
                _ => operators::build(node, &input_schemas, m, &errors)?,
            },
        };
        let batch_latency = ::metrics::histogram!(
            "runnel_operator_batch_duration_seconds",
            "node" => node.id.to_string(),
            "operator" => node.label.clone(),
        );
        let run = subtask::run_operator(
            op,
            wiring.inputs(node.id, s)?,
            wiring.outputs(node.id, s, m),
            m.clone(),
            batch_latency,
            parts.handle(node.id, s, false),
        );
        match &lookup {
            Some((spec, table)) => {
                let (table, name) = (table.clone(), spec.table.name.clone());
                tasks.push(Box::pin(async move {
                    table.open().await.map_err(connector_error(&name))?;
                    run.await
                }) as Task);
            }
            None => tasks.push(Box::pin(run) as Task),
        }
    }
    Ok(tasks)
}
