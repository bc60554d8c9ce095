//! Wiring channels, starting components, and draining on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::time::Duration;

use tb_connectors::{ConnectorContext, OutputSender, RunningConnector, Unconnected};
use tb_event::EventBatch;
use tb_pipeline::{OutputPorts, Outputs, Pipeline, PipelineCounts};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::graph::{Body, Node, Topology};
use crate::metrics::{MetricsRegistry, PipelineMetrics};
use crate::view::{
    ComponentMetrics, ComponentType, ComponentView, EdgeView, RuntimeHandle, Status,
};

/// Batches a component's input queue holds before its senders wait. With batches of up to a
/// few thousand events this bounds each queue to a few megabytes.
pub const INPUT_QUEUE_BATCHES: usize = 8;

/// Most events a pipeline sends downstream in one batch.
pub const MAX_BATCH_EVENTS: usize = 4096;

/// A component that could not start: a port in use, a missing file, an unwritable directory.
#[derive(Debug, thiserror::Error)]
#[error("{component}: {message}")]
pub struct StartError {
    /// The component (or `data_dir`).
    pub component: String,
    /// The cause, in one line.
    pub message: String,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every component finished by itself (stdin at EOF, a file read, a generator's count).
    Finished,
    /// Shutdown was asked for, and everything in flight was drained.
    Drained,
    /// The grace period expired with work still in flight; that work was not confirmed.
    GraceExpired,
}

/// A started topology.
pub struct RunningTopology {
    handle: RuntimeHandle,
    tasks: TaskTracker,
    intake: CancellationToken,
    grace: Duration,
}

struct Wiring {
    receivers: Vec<Option<mpsc::Receiver<EventBatch>>>,
    subscribers: Vec<Vec<Vec<mpsc::Sender<EventBatch>>>>,
    queues: Vec<(String, mpsc::WeakSender<EventBatch>)>,
}

fn wire(nodes: &[Node]) -> Wiring {
    let mut receivers = Vec::with_capacity(nodes.len());
    let mut subscribers: Vec<Vec<Vec<mpsc::Sender<EventBatch>>>> = nodes
        .iter()
        .map(|node| node.ports.iter().map(|_| Vec::new()).collect())
        .collect();
    let mut queues = Vec::new();
    for node in nodes {
        if node.inputs.is_empty() {
            receivers.push(None);
            continue;
        }
        let (sender, receiver) = mpsc::channel(INPUT_QUEUE_BATCHES);
        queues.push((node.id.to_string(), sender.downgrade()));
        let mut inputs = node.inputs.clone();
        inputs.sort_unstable();
        inputs.dedup();
        for (from, port) in inputs {
            subscribers[from][port].push(sender.clone());
        }
        receivers.push(Some(receiver));
    }
    Wiring {
        receivers,
        subscribers,
        queues,
    }
}

impl Topology {
    /// Wires channels, starts every connector, and spawns every component.
    ///
    /// # Errors
    ///
    /// The first component that cannot start; nothing keeps running then.
    pub async fn start(self) -> Result<RunningTopology, StartError> {
        let data_dir = self.config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|error| StartError {
            component: "data_dir".to_owned(),
            message: format!("cannot create {}: {error}", data_dir.display()),
        })?;
        let metrics = MetricsRegistry::new();
        let edges = self
            .edges()
            .into_iter()
            .map(|(from, to)| EdgeView { from, to })
            .collect();
        let Wiring {
            mut receivers,
            mut subscribers,
            queues,
        } = wire(&self.nodes);
        let intake = CancellationToken::new();
        let mut views = Vec::new();
        let mut connectors: Vec<(ComponentView, RunningConnector)> = Vec::new();
        let mut pipelines = Vec::new();
        for (index, node) in self.nodes.into_iter().enumerate() {
            let ports: Vec<Vec<mpsc::Sender<EventBatch>>> = std::mem::take(&mut subscribers[index]);
            let input = receivers[index].take();
            let id = node.id.clone();
            match node.body {
                Body::Connector {
                    kind, connector, ..
                } => {
                    let connector_metrics = metrics.connector(id.as_str());
                    let view = component_view(
                        id.as_str(),
                        ComponentType::Connector,
                        kind,
                        ComponentMetrics::Connector(connector_metrics.clone()),
                    );
                    let mut ports = ports.into_iter();
                    let context = ConnectorContext {
                        id: id.clone(),
                        output: OutputSender::new(
                            ports.next().unwrap_or_default(),
                            Unconnected::Complete,
                        ),
                        errors: OutputSender::new(
                            ports.next().unwrap_or_default(),
                            Unconnected::Complete,
                        ),
                        input,
                        intake: intake.child_token(),
                        metrics: connector_metrics,
                        data_dir: data_dir.clone(),
                    };
                    let running = connector.start(context).await.map_err(|error| StartError {
                        component: format!("connector {id}"),
                        message: error.to_string(),
                    })?;
                    views.push(view.clone());
                    connectors.push((view, running));
                }
                Body::Pipeline(pipeline) => {
                    let pipeline_metrics = metrics.pipeline(id.as_str());
                    let view = component_view(
                        id.as_str(),
                        ComponentType::Pipeline,
                        "pipeline".to_owned(),
                        ComponentMetrics::Pipeline(pipeline_metrics.clone()),
                    );
                    let errors_port = pipeline.ports().errors();
                    let senders = ports
                        .into_iter()
                        .enumerate()
                        .map(|(port, subscribers)| {
                            let unconnected = if port == errors_port {
                                Unconnected::Fail
                            } else {
                                Unconnected::Complete
                            };
                            OutputSender::new(subscribers, unconnected)
                        })
                        .collect();
                    views.push(view.clone());
                    pipelines.push((view, pipeline, input, senders, pipeline_metrics));
                }
            }
        }
        let tasks = TaskTracker::new();
        for (view, pipeline, input, senders, pipeline_metrics) in pipelines {
            view.set_status(Status::Running);
            let Some(input) = input else {
                view.set_status(Status::Finished);
                continue;
            };
            tasks.spawn(async move {
                run_pipeline(pipeline, input, senders, pipeline_metrics).await;
                view.set_status(Status::Finished);
            });
        }
        for (view, running) in connectors {
            view.set_status(Status::Running);
            tasks.spawn(async move {
                match running.await {
                    Ok(()) => view.set_status(Status::Finished),
                    Err(error) => {
                        tracing::error!(connector = %view.id, %error, "Connector stopped with an error.");
                        view.set_status(Status::Failed);
                    }
                }
            });
        }
        tasks.close();
        Ok(RunningTopology {
            handle: RuntimeHandle::new(views, edges, metrics, queues),
            tasks,
            intake,
            grace: self.config.shutdown_grace,
        })
    }
}

fn component_view(
    id: &str,
    component_type: ComponentType,
    kind: String,
    metrics: ComponentMetrics,
) -> ComponentView {
    ComponentView {
        id: id.to_owned(),
        component_type,
        kind,
        metrics,
        status: Arc::new(AtomicU8::new(Status::Starting as u8)),
    }
}

/// Runs batches through `pipeline` until its input closes, firing its steps' timers when
/// they are due and flushing it at the end, sending each port's events on.
///
/// The pipeline runs whole on this task: a `partition` step then simply passes events on
/// (running lanes on tasks of their own is the runtime's next step), and every batch is
/// given as input 0 because the inputs arrive merged on one channel.
async fn run_pipeline(
    mut pipeline: Pipeline,
    mut input: mpsc::Receiver<EventBatch>,
    senders: Vec<OutputSender>,
    metrics: PipelineMetrics,
) {
    let mut outputs = Outputs::for_pipeline(&pipeline);
    // Owned copies, so the sends below do not hold the pipeline across an await.
    let ports = pipeline.ports().clone();
    let id = pipeline.id().to_owned();
    loop {
        let deadline = pipeline.next_deadline();
        // `recv` is cancel-safe, and a timer that loses the race is asked for again.
        let counts = tokio::select! {
            batch = input.recv() => match batch {
                Some(batch) => pipeline.process(batch, 0, &mut outputs),
                None => break,
            },
            () = sleep_until_deadline(deadline) => {
                pipeline.on_timer(std::time::Instant::now(), &mut outputs)
            }
        };
        send_pipeline_outputs(&id, &ports, counts, &mut outputs, &senders, &metrics).await;
    }
    let counts = pipeline.flush(&mut outputs);
    send_pipeline_outputs(&id, &ports, counts, &mut outputs, &senders, &metrics).await;
}

/// Waits until `deadline`, or forever when there is none.
async fn sleep_until_deadline(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Counts one pipeline call and sends what it put on each port.
async fn send_pipeline_outputs(
    pipeline_id: &str,
    ports: &OutputPorts,
    counts: PipelineCounts,
    outputs: &mut Outputs,
    senders: &[OutputSender],
    metrics: &PipelineMetrics,
) {
    metrics.input.inc_by(counts.input);
    metrics.output.inc_by(counts.output);
    metrics.dropped.inc_by(counts.dropped);
    metrics.errors.inc_by(counts.errors);
    let unmatched = ports.unmatched();
    for (port, events) in outputs.ports.iter_mut().enumerate() {
        if events.is_empty() {
            continue;
        }
        // `_unmatched` holds copies of events that also go on to the main output; when
        // nothing reads it, the copies are simply done.
        let batch = std::mem::take(events);
        if port == unmatched && !senders[port].is_connected() {
            batch
                .into_iter()
                .for_each(|event| event.complete(tb_event::AckStatus::Delivered));
            continue;
        }
        if port == ports.errors() && !senders[port].is_connected() {
            tracing::warn!(
                pipeline = pipeline_id,
                count = batch.len(),
                "Events failed and nothing reads _errors; they are rejected to their sources."
            );
            reject_unread_errors(batch);
            continue;
        }
        // A transform that returns an array can turn one event into very many: send in
        // bounded batches so queue capacities still bound memory. A closed subscriber
        // fails the events, and their sources learn it.
        let mut batch = batch;
        while batch.len() > MAX_BATCH_EVENTS {
            let rest = batch.split_off(MAX_BATCH_EVENTS);
            let _ = senders[port].send(batch).await;
            batch = rest;
        }
        let _ = senders[port].send(batch).await;
    }
}

/// Rejects events bound for a pipeline's `_errors` that nothing reads, giving each source
/// the VRL error as the reason.
fn reject_unread_errors(batch: EventBatch) {
    for event in batch {
        let reason = event
            .value
            .as_object()
            .and_then(|envelope| envelope.get("error"))
            .and_then(tb_event::Value::as_object)
            .and_then(|error| error.get("message"))
            .and_then(|message| {
                message
                    .as_bytes()
                    .map(|text| String::from_utf8_lossy(text).into_owned())
            })
            .unwrap_or_else(|| "a pipeline step failed".to_owned());
        event.complete_with(tb_event::AckStatus::Rejected, reason);
    }
}

impl RunningTopology {
    /// The API's view of this topology.
    pub fn handle(&self) -> RuntimeHandle {
        self.handle.clone()
    }

    /// Runs until every component finishes by itself, or `shutdown` resolves; then stops
    /// intake and drains for at most the grace period.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> RunOutcome {
        tokio::select! {
            () = self.tasks.wait() => return RunOutcome::Finished,
            () = shutdown => {}
        }
        tracing::info!(grace = ?self.grace, "Shutting down: intake stopped, draining in-flight events.");
        self.intake.cancel();
        match tokio::time::timeout(self.grace, self.tasks.wait()).await {
            Ok(()) => RunOutcome::Drained,
            Err(_elapsed) => {
                tracing::warn!(
                    "Grace period expired; events still in flight were not confirmed to their sources."
                );
                RunOutcome::GraceExpired
            }
        }
    }

    /// Whether any component stopped with an error.
    pub fn any_failed(handle: &RuntimeHandle) -> bool {
        handle
            .components()
            .iter()
            .any(|component| component.status() == Status::Failed)
    }
}
