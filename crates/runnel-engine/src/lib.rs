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
pub mod metrics;
pub mod operator;
pub mod operators;
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
use crate::subtask::{Inputs, SourceTiming};

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
        }
    }
}

/// A started pipeline.
pub struct RunningPipeline {
    tasks: JoinSet<Result<(), EngineError>>,
    metrics: PipelineMetrics,
    checkpoints: checkpoint::SharedStats,
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

/// Builds every connector and operator of `graph` and starts its subtasks on
/// the current tokio runtime. Connector and operator errors (bad options,
/// missing files) are reported here, before any data flows.
pub fn start(graph: &PipelineGraph, config: &RunConfig) -> Result<RunningPipeline, EngineError> {
    let p = config.parallelism.max(1);
    let nodes = &graph.nodes;
    let node_metrics: Vec<NodeMetrics> = nodes
        .iter()
        .map(|_| {
            let m = NodeMetrics::default();
            // No watermark until one arrives (the admin API shows none, not 1970).
            m.watermark.set(i64::MIN);
            m
        })
        .collect();

    // One queue per subtask; channel numbers per input edge.
    let mut txs: Vec<Vec<Tx>> = Vec::new();
    let mut rxs: Vec<Vec<Option<Rx>>> = Vec::new();
    let mut offsets: Vec<Vec<usize>> = Vec::new();
    let mut channel_input: Vec<Vec<usize>> = Vec::new();
    for node in nodes {
        let (t, r): (Vec<_>, Vec<_>) = (0..p)
            .map(|_| mpsc::channel(config.channel_capacity))
            .map(|(t, r)| (t, Some(r)))
            .unzip();
        txs.push(t);
        rxs.push(r);
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
        offsets.push(offs);
        channel_input.push(chan);
    }

    let outputs_for = |id: usize, s: usize, metrics: &NodeMetrics| {
        let mut routes = Vec::new();
        for (c, k) in graph.consumers(id) {
            let input = &nodes[c].inputs[k];
            let base = offsets[c][k];
            let route = match &input.partitioning {
                Partitioning::Forward => Route {
                    targets: vec![(txs[c][s].clone(), base)],
                    hash_keys: None,
                },
                Partitioning::Hash(keys) => Route {
                    targets: (0..p).map(|t| (txs[c][t].clone(), base + s)).collect(),
                    hash_keys: Some(keys.clone()),
                },
            };
            routes.push(route);
        }
        Outputs::new(routes, metrics.blocked_ns.clone())
    };

    let stats: checkpoint::SharedStats = Default::default();
    let mut coordinator = None;
    let (mut source_part, mut sink_part) = (None, None);
    if let Some(cc) = &config.checkpoint {
        if let Ok(mut st) = stats.lock() {
            st.restored_from = cc.restore.as_ref().map(|r| r.manifest.id);
        }
        let expected = nodes
            .iter()
            .flat_map(|n| (0..p).map(move |s| (n.id, s)))
            .collect();
        let of = |pred: fn(&NodeSpec) -> bool| -> Vec<(usize, usize)> {
            nodes
                .iter()
                .filter(|n| pred(&n.spec))
                .flat_map(|n| (0..p).map(move |s| (n.id, s)))
                .collect()
        };
        let sources = of(|s| matches!(s, NodeSpec::Source(_)));
        let (c, src, snk) =
            checkpoint::Coordinator::new(cc.clone(), expected, sources, stats.clone());
        coordinator = Some(c);
        source_part = Some(src);
        sink_part = Some(snk);
    }
    let restored = config.checkpoint.as_ref().and_then(|c| c.restore.clone());
    let handle = |node: usize, subtask: usize, part: &Option<checkpoint::Participant>| {
        part.as_ref().map(|participant| subtask::CheckpointHandle {
            node,
            subtask,
            participant: participant.clone(),
            restored: restored.clone(),
        })
    };
    let sink_mode = config
        .checkpoint
        .as_ref()
        .map(|c| runnel_connectors::CheckpointMode {
            restored: c.restore.as_ref().map(|r| r.manifest.id),
        });

    // Build every connector and operator before spawning anything: a bad
    // option or missing file must fail the start, not a half-running pipeline.
    type Task =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), EngineError>> + Send>>;
    let mut pending: Vec<Task> = Vec::new();
    for node in nodes {
        let m = node_metrics[node.id].clone();
        match &node.spec {
            NodeSpec::Source(spec) => {
                let contexts = (0..p)
                    .map(|s| SourceContext {
                        subtask: s,
                        parallelism: p,
                        metrics: m.connector.clone(),
                        data_dir: config.data_dir.clone(),
                        batch_size: config.batch_size,
                        log: config.log.clone(),
                        checkpointing: config.checkpoint.is_some(),
                    })
                    .collect();
                let sources = registry::build_sources(spec, contexts).map_err(|e| {
                    EngineError::Connector {
                        table: spec.name.clone(),
                        error: Box::new(e),
                    }
                })?;
                let timing = SourceTiming {
                    watermark: spec.watermark.clone(),
                    idle_timeout: config.idle_timeout,
                };
                for (s, source) in sources.into_iter().enumerate() {
                    let outputs = outputs_for(node.id, s, &m);
                    pending.push(Box::pin(subtask::run_source(
                        spec.name.clone(),
                        source,
                        timing.clone(),
                        outputs,
                        m.clone(),
                        handle(node.id, s, &source_part),
                    )));
                }
            }
            NodeSpec::Sink(spec) => {
                let contexts = (0..p)
                    .map(|s| SinkContext {
                        subtask: s,
                        parallelism: p,
                        metrics: m.connector.clone(),
                        data_dir: config.data_dir.clone(),
                        log: config.log.clone(),
                        dashboards: config.dashboards.clone(),
                        checkpoint: sink_mode,
                    })
                    .collect();
                let sinks =
                    registry::build_sinks(spec, contexts).map_err(|e| EngineError::Connector {
                        table: spec.name.clone(),
                        error: Box::new(e),
                    })?;
                for (s, sink) in sinks.into_iter().enumerate() {
                    let rx = rxs[node.id][s]
                        .take()
                        .ok_or_else(|| EngineError::Internal("queue taken twice".into()))?;
                    let inputs = Inputs {
                        rx,
                        channel_input: channel_input[node.id].clone(),
                    };
                    pending.push(Box::pin(subtask::run_sink(
                        spec.name.clone(),
                        sink,
                        spec.schema.clone(),
                        inputs,
                        m.clone(),
                        handle(node.id, s, &sink_part),
                    )));
                }
            }
            _ => {
                let input_schemas: Vec<_> = node
                    .inputs
                    .iter()
                    .map(|i| nodes[i.node].schema.clone())
                    .collect();
                for (s, queue) in rxs[node.id].iter_mut().enumerate() {
                    let op = operators::build(node, &input_schemas, &m)?;
                    let rx = queue
                        .take()
                        .ok_or_else(|| EngineError::Internal("queue taken twice".into()))?;
                    let inputs = Inputs {
                        rx,
                        channel_input: channel_input[node.id].clone(),
                    };
                    let outputs = outputs_for(node.id, s, &m);
                    let batch_latency = ::metrics::histogram!(
                        "runnel_operator_batch_duration_seconds",
                        "node" => node.id.to_string(),
                        "operator" => node.label.clone(),
                    );
                    pending.push(Box::pin(subtask::run_operator(
                        op,
                        inputs,
                        outputs,
                        m.clone(),
                        batch_latency,
                        handle(node.id, s, &source_part),
                    )));
                }
            }
        }
    }
    drop(txs);
    let mut tasks = JoinSet::new();
    for task in pending {
        tasks.spawn(task);
    }
    // The subtasks hold the only report senders: when they are all done, so is it.
    drop((source_part, sink_part));
    if let Some(c) = coordinator {
        tasks.spawn(c.run());
    }
    Ok(RunningPipeline {
        tasks,
        metrics: PipelineMetrics {
            nodes: std::sync::Arc::new(node_metrics),
        },
        checkpoints: stats,
    })
}
