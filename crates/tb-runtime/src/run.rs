//! The running engine: one record per component, wiring by output names, starting, and
//! reconciling to a new config without restarting what did not change.
//!
//! Each component's input queue belongs to its record and outlives its runs; each output
//! port is a live fan-out whose subscribers the engine changes by name. Queues close by
//! the closure of their senders: when every component feeding one has ended (its supervisor
//! dropped its outputs) or no longer feeds it, the reader drains and ends. Shutdown and the
//! removal of a component both rest on that.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use tb_connectors::{ComponentStatus, FanoutControl, OutputSender, StatusCell, Unconnected};
use tb_connectors::{InputBatch, Subscription};
use tb_event::ComponentId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ComponentClass, ComponentSpec, Config};
use crate::graph::{Body, Node, Topology};
use crate::metrics::MetricsRegistry;
use crate::reload::{ReloadRequest, ReloadSummary, masked_config};
use crate::supervise::{Blueprint, Builders, Delivery, InputSlot, Run, Unit, supervise};
use crate::view::{
    ComponentMetrics, ComponentType, ComponentView, EdgeView, RuntimeHandle, TopologyView,
};

/// Batches a component's input queue holds before its senders wait. With batches of up to a
/// few thousand events this bounds each queue to a few megabytes.
pub const INPUT_QUEUE_BATCHES: usize = 8;

pub use crate::pipeline_task::MAX_BATCH_EVENTS;

/// How long creating a component waits for its input queue, which a replaced component's
/// old run may still hold.
const QUEUE_HANDOVER_LIMIT: Duration = Duration::from_secs(5);

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
    /// A second signal came during the drain: the process stops at once; work in flight is
    /// abandoned unconfirmed.
    Abandoned,
}

/// One component the engine owns.
pub(crate) struct Record {
    pub(crate) spec: ComponentSpec,
    pub(crate) view: ComponentView,
    intake: CancellationToken,
    stop_input: CancellationToken,
    input: Option<Arc<InputSlot>>,
    /// Output port names (`""` is the main port), and the live fan-out of each.
    ports: Vec<(String, FanoutControl)>,
    supervisor: Option<JoinHandle<()>>,
}

/// The engine's state: what runs, and what it was built from.
pub(crate) struct Engine {
    pub(crate) config: Config,
    pub(crate) records: IndexMap<String, Record>,
    pub(crate) builders: Builders,
    metrics: MetricsRegistry,
    intake: CancellationToken,
    tasks: TaskTracker,
    pub(crate) handle: RuntimeHandle,
    /// The job store, opened when the first destination is configured.
    store: Option<tb_store::Store>,
}

/// A started topology.
pub struct RunningTopology {
    pub(crate) engine: Arc<tokio::sync::Mutex<Engine>>,
    handle: RuntimeHandle,
    tasks: TaskTracker,
    intake: CancellationToken,
    grace: Duration,
    reloads: Option<mpsc::Receiver<ReloadRequest>>,
}

/// `id` for the main port, `id.port` for the others.
fn output_name(id: &str, port: &str) -> String {
    if port.is_empty() {
        id.to_owned()
    } else {
        format!("{id}.{port}")
    }
}

/// The components (in `specs`) that read `output`, each with the position of `output` in
/// its `inputs`.
fn readers_of<'a>(
    specs: impl Iterator<Item = &'a ComponentSpec>,
    output: &str,
) -> Vec<(String, usize)> {
    specs
        .filter_map(|spec| {
            let input = spec.inputs.iter().position(|input| input == output)?;
            Some((spec.id.clone(), input))
        })
        .collect()
}

/// Subscriptions of the readers of `output` whose queues are in `queues`.
fn subscriptions<'a>(
    specs: impl Iterator<Item = &'a ComponentSpec>,
    output: &str,
    queues: &Queues,
) -> Vec<Subscription> {
    readers_of(specs, output)
        .into_iter()
        .filter_map(|(reader, input)| {
            let sender = queues.sender(&reader)?;
            Some(Subscription {
                reader,
                input,
                sender,
            })
        })
        .collect()
}

/// A component made ready to run: its supervisor's unit, and its record.
struct NewComponent {
    unit: Unit,
    first: Option<Run>,
    record: Record,
}

/// Why a component's first run did not start.
struct FirstRunFailed {
    component: NewComponent,
    error: StartError,
}

/// Queues for components, by id: reused from the running engine or made new. Each keeps a
/// strong sender here until every new feeder has one: a queue whose only feeder is being
/// replaced must not close in between.
#[derive(Default)]
struct Queues {
    slots: HashMap<String, Arc<InputSlot>>,
    held: HashMap<String, mpsc::Sender<InputBatch>>,
}

impl Queues {
    fn make(&mut self, id: &str) {
        let (slot, sender) = InputSlot::new(INPUT_QUEUE_BATCHES);
        self.held.insert(id.to_owned(), sender);
        self.slots.insert(id.to_owned(), slot);
    }

    /// Reuses a running component's queue, holding it open if it still is.
    fn reuse(&mut self, id: &str, slot: &Arc<InputSlot>) {
        if let Some(sender) = slot.sender() {
            self.held.insert(id.to_owned(), sender);
        }
        self.slots.insert(id.to_owned(), slot.clone());
    }

    fn sender(&self, id: &str) -> Option<mpsc::Sender<InputBatch>> {
        self.held.get(id).cloned()
    }
}

impl Engine {
    /// The API's view of `spec` and what its supervisor builds it from, sharing its metrics.
    fn view_and_blueprint(
        &self,
        spec: &ComponentSpec,
        input: Option<Arc<InputSlot>>,
    ) -> (ComponentView, Blueprint) {
        let (component_type, kind, metrics, blueprint) = match &spec.class {
            ComponentClass::Connector { kind, settings } => {
                let metrics = self
                    .metrics
                    .connector_with(&spec.id, self.latency_of(kind, spec));
                let blueprint = Blueprint::Connector {
                    kind: kind.clone(),
                    settings: settings.clone(),
                    metrics: metrics.clone(),
                };
                let metrics = ComponentMetrics::Connector(metrics);
                (ComponentType::Connector, kind.clone(), metrics, blueprint)
            }
            ComponentClass::Destination(config) => {
                let breaker = tb_delivery::Breaker::new(config.circuit_breaker.clone());
                let metrics = ComponentMetrics::Destination {
                    actions: config.actions.keys().cloned().collect(),
                    breaker: breaker.clone(),
                };
                let delivery = Delivery {
                    store: self
                        .store
                        .clone()
                        .expect("the store is opened before any destination is created"),
                    metrics: self.metrics.delivery(),
                    breaker,
                };
                let blueprint = Blueprint::Destination {
                    config: config.clone(),
                    delivery,
                };
                (
                    ComponentType::Destination,
                    config.kind.clone(),
                    metrics,
                    blueprint,
                )
            }
            ComponentClass::Pipeline(config) => {
                let metrics = self.metrics.pipeline(&spec.id);
                let blueprint = Blueprint::Pipeline {
                    config: config.clone(),
                    metrics: metrics.clone(),
                };
                let metrics = ComponentMetrics::Pipeline(metrics);
                (
                    ComponentType::Pipeline,
                    "pipeline".to_owned(),
                    metrics,
                    blueprint,
                )
            }
        };
        let view = ComponentView {
            id: spec.id.clone(),
            component_type,
            kind,
            metrics,
            restarts: self.metrics.restarts(&spec.id),
            status: StatusCell::new(),
            input,
        };
        (view, blueprint)
    }

    /// Makes a component's record and its first run: output senders to every reader named
    /// in `specs`, its queue from `queues`.
    async fn create(
        &self,
        node: Node,
        spec: &ComponentSpec,
        specs: &IndexMap<String, ComponentSpec>,
        queues: &Queues,
    ) -> Result<NewComponent, Box<FirstRunFailed>> {
        let input = queues.slots.get(&spec.id).cloned();
        let (view, blueprint) = self.view_and_blueprint(spec, input.clone());
        let errors_port = match &node.body {
            Body::Pipeline(pipeline) => Some(pipeline.ports().errors()),
            Body::Connector { .. } | Body::Destination(_) => None,
        };
        let mut outputs = Vec::new();
        let mut ports = Vec::new();
        for (index, port) in node.ports.iter().enumerate() {
            let subscribers = subscriptions(specs.values(), &output_name(&spec.id, port), queues);
            let unconnected = if Some(index) == errors_port {
                Unconnected::Fail
            } else {
                Unconnected::Complete
            };
            let sender = OutputSender::new(subscribers, unconnected);
            ports.push((port.clone(), sender.control()));
            outputs.push(sender);
        }
        let intake = self.intake.child_token();
        let stop_input = CancellationToken::new();
        let unit = Unit {
            id: ComponentId::new(&spec.id),
            blueprint,
            builders: self.builders.clone(),
            data_dir: self.config.data_dir.clone(),
            status: view.status.clone(),
            restarts: view.restarts.clone(),
            intake: intake.clone(),
            stop_input: stop_input.clone(),
            input: input.clone(),
            outputs,
        };
        // The engine is locked while it creates a component: a replaced component's old run
        // that never lets go of the queue must not hold every reload up. Past the limit, the
        // supervisor goes on trying on its own.
        let first = match unit.take_input(Some(QUEUE_HANDOVER_LIMIT)).await {
            Ok(input) => match node.body {
                Body::Connector { connector, .. } => unit.start_connector(connector, input).await,
                Body::Pipeline(pipeline) => Ok(unit.pipeline_run(pipeline, input)),
                Body::Destination(destination) => unit.destination_run(*destination, input),
            },
            Err(error) => Err(error),
        }
        .map_err(|error| StartError {
            component: format!("{} {}", spec.section().trim_end_matches('s'), spec.id),
            message: error.to_string(),
        });
        let record = Record {
            spec: spec.clone(),
            view,
            intake,
            stop_input,
            input,
            ports,
            supervisor: None,
        };
        match first {
            Ok(first) => Ok(NewComponent {
                unit,
                first: Some(first),
                record,
            }),
            Err(error) => Err(Box::new(FirstRunFailed {
                component: NewComponent {
                    unit,
                    first: None,
                    record,
                },
                error,
            })),
        }
    }

    /// Opens the job store when `config` has a destination and it is not open yet.
    async fn open_store_if_needed(&mut self, config: &Config) -> Result<(), StartError> {
        let has_destination = config
            .components
            .values()
            .any(|spec| matches!(spec.class, ComponentClass::Destination(_)));
        if self.store.is_some() || !has_destination {
            return Ok(());
        }
        let failed = |message: String| StartError {
            component: "store".to_owned(),
            message,
        };
        let location =
            tb_store::StoreLocation::parse(config.store.url.as_deref(), &config.data_dir)
                .map_err(failed)?;
        let store = tb_store::Store::open(&location, config.store.durability)
            .await
            .map_err(|error| failed(error.to_string()))?;
        self.handle.set_store(store.clone());
        self.store = Some(store);
        Ok(())
    }

    fn spawn(&mut self, created: NewComponent) {
        let NewComponent {
            unit,
            first,
            mut record,
        } = created;
        record.supervisor = Some(self.tasks.spawn(supervise(unit, first)));
        self.records.insert(record.spec.id.clone(), record);
    }

    /// Sources get an exported latency histogram; sinks, which measure none, do not.
    fn latency_of(&self, kind: &str, spec: &ComponentSpec) -> crate::metrics::Latency {
        let produces = self
            .builders
            .iter()
            .find(|builder| builder.kind() == kind)
            .is_none_or(|builder| builder.roles(!spec.inputs.is_empty()).produces);
        if produces {
            crate::metrics::Latency::Registered
        } else {
            crate::metrics::Latency::Unregistered
        }
    }

    /// Whether shutdown has begun: no reload is taken then.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.intake.is_cancelled()
    }

    /// The view the API serves, made from the records.
    pub(crate) fn view(&self) -> TopologyView {
        let components = self
            .records
            .values()
            .map(|record| record.view.clone())
            .collect();
        let edges = self
            .records
            .values()
            .flat_map(|record| {
                record.spec.inputs.iter().map(|input| EdgeView {
                    from: input.clone(),
                    to: record.spec.id.clone(),
                })
            })
            .collect();
        TopologyView {
            components,
            edges,
            config: masked_config(&self.config),
        }
    }

    /// Reconciles the running engine to `topology`: untouched components keep running;
    /// changed ones stop intake, drain, and are replaced (keeping their input queue);
    /// removed ones drain and stop; new ones start. Edges change on the live outputs, new
    /// edges before old ones go, so no queue closes while it still has a feeder.
    pub(crate) async fn reconcile(&mut self, topology: Topology) -> ReloadSummary {
        let started = Instant::now();
        // While the reload runs, the engine is not "finished" even if no component runs for
        // a moment (one replaced component in a topology of one).
        let _busy = self.tasks.token();
        let Topology { config, nodes, .. } = topology;
        let mut summary = ReloadSummary::default();
        if let Err(error) = self.open_store_if_needed(&config).await {
            // Destinations cannot run without their store: nothing of this config is applied.
            tracing::error!(%error, "The job store could not be opened; the reload is not applied.");
            return summary;
        }
        let mut queues = Queues::default();
        // Classify, and give each component that will read a queue.
        let mut replaced = Vec::new();
        for spec in config.components.values() {
            match self.records.get(&spec.id) {
                Some(record) if record.spec.raw == spec.raw => {
                    summary.unchanged.push(spec.id.clone());
                    if let Some(slot) = &record.input {
                        queues.reuse(&spec.id, slot);
                    }
                }
                Some(record) => {
                    summary.changed.push(spec.id.clone());
                    replaced.push(spec.id.clone());
                    match (&record.input, spec.inputs.is_empty()) {
                        (Some(slot), false) => queues.reuse(&spec.id, slot),
                        (_, false) => {
                            queues.make(&spec.id);
                        }
                        (_, true) => {}
                    }
                }
                None => {
                    summary.added.push(spec.id.clone());
                    if !spec.inputs.is_empty() {
                        queues.make(&spec.id);
                    }
                }
            }
        }
        let removed: Vec<String> = self
            .records
            .keys()
            .filter(|id| !config.components.contains_key(*id))
            .cloned()
            .collect();
        summary.removed = removed.clone();
        // New edges from untouched components, before anything is taken away.
        for id in &summary.unchanged {
            let record = &self.records[id];
            for (port, control) in &record.ports {
                // Adding replaces a reader already there: its input index may have moved.
                for subscription in
                    subscriptions(config.components.values(), &output_name(id, port), &queues)
                {
                    control.add(subscription);
                }
            }
        }
        // Changed components: stop the old run (intake and queue), wait for it to drain, then
        // start the new one on the same queue.
        for id in &replaced {
            self.stop_and_wait(id, true).await;
        }
        let mut nodes_by_id: HashMap<String, Node> = nodes
            .into_iter()
            .map(|node| (node.id.to_string(), node))
            .collect();
        let old_config = std::mem::replace(&mut self.config, config);
        for id in summary.changed.iter().chain(summary.added.iter()) {
            let (Some(node), Some(spec)) = (nodes_by_id.remove(id), self.config.components.get(id))
            else {
                continue;
            };
            let spec = spec.clone();
            match self
                .create(node, &spec, &self.config.components, &queues)
                .await
            {
                Ok(created) => self.spawn(created),
                Err(failed) => {
                    // Its supervisor starts it again with backoff, and marks it failed if it
                    // never starts; the rest of the reload goes on.
                    tracing::error!(component = %id, error = %failed.error, "Component could not start after the reload; retrying.");
                    failed
                        .component
                        .record
                        .view
                        .status
                        .set_with_error(ComponentStatus::Starting, failed.error.to_string());
                    self.spawn(failed.component);
                }
            }
        }
        drop(old_config);
        // Edges that are gone, then removed components (their queues close as their feeders
        // let go, and they drain to the end).
        for id in &summary.unchanged {
            let record = &self.records[id];
            for (port, control) in &record.ports {
                let wanted = readers_of(self.config.components.values(), &output_name(id, port));
                for subscriber in control.subscribers() {
                    if !wanted.iter().any(|(reader, _)| *reader == subscriber) {
                        control.remove(&subscriber);
                    }
                }
            }
        }
        for id in &removed {
            self.stop_and_wait(id, false).await;
            self.records.shift_remove(id);
        }
        // Keep file order, as the config has it.
        let order: Vec<String> = self.config.components.keys().cloned().collect();
        self.records
            .sort_by(|a, _, b, _| position(&order, a).cmp(&position(&order, b)));
        drop(queues);
        self.handle.replace_view(self.view());
        summary.took = started.elapsed();
        summary
    }

    /// Stops a component's intake (and, when it is replaced, its reading of its queue) and
    /// waits for its supervisor to end, at most the shutdown grace.
    async fn stop_and_wait(&mut self, id: &str, replacing: bool) {
        let Some(record) = self.records.get_mut(id) else {
            return;
        };
        record.view.status.set(ComponentStatus::Draining);
        record.intake.cancel();
        if replacing {
            record.stop_input.cancel();
        }
        if let Some(supervisor) = record.supervisor.take() {
            let grace = self.config.shutdown_grace;
            if tokio::time::timeout(grace, supervisor).await.is_err() {
                tracing::warn!(component = %id, ?grace, "Component did not drain within the grace period.");
            }
        }
    }
}

fn position(order: &[String], id: &str) -> usize {
    order
        .iter()
        .position(|entry| entry == id)
        .unwrap_or(usize::MAX)
}

impl Topology {
    /// Wires queues, starts every connector (binding sockets, opening files), and spawns a
    /// supervisor per component.
    ///
    /// # Errors
    ///
    /// The first component that cannot start; nothing keeps running then.
    pub async fn start(self) -> Result<RunningTopology, StartError> {
        let data_dir: PathBuf = self.config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|error| StartError {
            component: "data_dir".to_owned(),
            message: format!("cannot create {}: {error}", data_dir.display()),
        })?;
        let Topology {
            config,
            nodes,
            builders,
        } = self;
        let metrics = MetricsRegistry::new();
        let tasks = TaskTracker::new();
        let intake = CancellationToken::new();
        let (reload_sender, reload_receiver) = mpsc::channel(4);
        let handle = RuntimeHandle::new(TopologyView::default(), metrics.clone(), reload_sender);
        let grace = config.shutdown_grace;
        let mut engine = Engine {
            config: config.clone(),
            records: IndexMap::new(),
            builders,
            metrics,
            intake: intake.clone(),
            tasks: tasks.clone(),
            handle: handle.clone(),
            store: None,
        };
        engine.open_store_if_needed(&config).await?;
        let mut queues = Queues::default();
        for spec in config.components.values() {
            if !spec.inputs.is_empty() {
                queues.make(&spec.id);
            }
        }
        let mut created = Vec::new();
        for node in nodes {
            let spec = &config.components[node.id.as_str()];
            let component = engine
                .create(node, spec, &config.components, &queues)
                .await
                .map_err(|failed| failed.error)?;
            created.push(component);
        }
        drop(queues);
        for component in created {
            engine.spawn(component);
        }
        handle.replace_view(engine.view());
        Ok(RunningTopology {
            engine: Arc::new(tokio::sync::Mutex::new(engine)),
            handle,
            tasks,
            intake,
            grace,
            reloads: Some(reload_receiver),
        })
    }
}

impl RunningTopology {
    /// The API's view of this topology.
    pub fn handle(&self) -> RuntimeHandle {
        self.handle.clone()
    }

    /// Takes the receiver of reload requests (pushed through the API), for the reload loop.
    pub fn take_reload_requests(&mut self) -> Option<mpsc::Receiver<ReloadRequest>> {
        self.reloads.take()
    }

    /// Runs until every component finishes by itself, or `shutdown` resolves; then stops
    /// intake and drains for at most the grace period, or until `abandon` resolves (a
    /// second signal).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()>,
        abandon: impl Future<Output = ()>,
    ) -> RunOutcome {
        self.tasks.close();
        tokio::select! {
            () = self.tasks.wait() => return RunOutcome::Finished,
            () = shutdown => {}
        }
        tracing::info!(grace = ?self.grace, "Shutting down: intake stopped, draining in-flight events.");
        self.intake.cancel();
        for component in self.handle.components() {
            if component.status() != ComponentStatus::Stopped
                && component.status() != ComponentStatus::Failed
            {
                component.status.set(ComponentStatus::Draining);
            }
        }
        tokio::select! {
            drained = tokio::time::timeout(self.grace, self.tasks.wait()) => match drained {
                Ok(()) => RunOutcome::Drained,
                Err(_elapsed) => {
                    tracing::warn!(
                        "Grace period expired; events still in flight were not confirmed to their sources."
                    );
                    RunOutcome::GraceExpired
                }
            },
            () = abandon => RunOutcome::Abandoned,
        }
    }

    /// Whether any component stopped for good after failures.
    pub fn any_failed(handle: &RuntimeHandle) -> bool {
        handle
            .components()
            .iter()
            .any(|component| component.status() == ComponentStatus::Failed)
    }
}
