//! Supervision: every component runs as a series of *runs* under a supervisor task that the
//! runtime owns.
//!
//! A run that panics or stops with an error is contained: the supervisor logs it with the
//! component id, counts it (`tightbeam_component_restarts_total`), and starts a new run from
//! the component's config after a backoff with jitter. The new run takes the same input
//! queue, so what waited there is not lost; events that were inside the dead run are dropped
//! with it, which completes them as errored at their sources. After [`MAX_RESTARTS`]
//! failures within [`RESTART_WINDOW`] the component is `failed`: it stops for good with its
//! last error, and whatever is routed to it is completed as errored, so sources hear of it
//! (an HTTP 503) instead of waiting. The rest of the engine goes on.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tb_connectors::InputBatch;
use tb_connectors::core::Backoff;
use tb_connectors::{
    ComponentStatus, ConnectorBuilder, ConnectorContext, ConnectorMetrics, InputQueue,
    OutputSender, RunningConnector, StatusCell,
};
use tb_event::{AckStatus, ComponentId};
use tb_pipeline::Pipeline;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::PipelineMetrics;
use crate::pipeline_task::run_pipeline;

/// Failures within [`RESTART_WINDOW`] after which a component is `failed` for good.
pub const MAX_RESTARTS: usize = 5;
/// The window in which failures count towards [`MAX_RESTARTS`].
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// The first wait before a restart; it doubles (with jitter) up to [`RESTART_BACKOFF_MAX`].
pub const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait before a restart.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The connector kinds this process knows, kept so a component can be built again.
pub type Builders = Arc<[Box<dyn ConnectorBuilder>]>;

/// A component's input queue: it belongs to the runtime and outlives every run.
pub(crate) struct InputSlot {
    receiver: Arc<Mutex<mpsc::Receiver<InputBatch>>>,
    sender: mpsc::WeakSender<InputBatch>,
}

impl InputSlot {
    /// A new queue of `capacity` batches, and the one strong sender to hand to upstreams.
    pub(crate) fn new(capacity: usize) -> (Arc<Self>, mpsc::Sender<InputBatch>) {
        let (sender, receiver) = mpsc::channel(capacity);
        let slot = Self {
            receiver: Arc::new(Mutex::new(receiver)),
            sender: sender.downgrade(),
        };
        (Arc::new(slot), sender)
    }

    /// A sender into the queue, while anything upstream still holds one.
    pub(crate) fn sender(&self) -> Option<mpsc::Sender<InputBatch>> {
        self.sender.upgrade()
    }

    /// Batches waiting, if the queue is open.
    pub(crate) fn fill(&self) -> Option<usize> {
        self.sender
            .upgrade()
            .map(|sender| sender.max_capacity() - sender.capacity())
    }

    /// Takes the queue for one run, waiting for the previous run to let go of it.
    pub(crate) async fn take(&self, stop: CancellationToken) -> InputQueue {
        InputQueue::new(self.receiver.clone().lock_owned().await, stop)
    }
}

/// What a component is made of, so it can be run again.
pub(crate) enum Blueprint {
    /// A connector: its kind's builder makes it again from its settings.
    Connector {
        kind: String,
        settings: serde_json::Value,
        metrics: ConnectorMetrics,
    },
    /// A pipeline: compiled again from its config.
    Pipeline {
        config: tb_pipeline::PipelineConfig,
        metrics: PipelineMetrics,
    },
    /// A destination: built again from its config, run on the process's job store.
    Destination {
        config: Box<tb_delivery::DestinationConfig>,
        delivery: Delivery,
    },
}

/// What a destination's runs share: the job store, the delivery metrics, its breaker.
#[derive(Clone)]
pub(crate) struct Delivery {
    pub(crate) store: tb_store::Store,
    pub(crate) metrics: tb_delivery::DeliveryMetrics,
    pub(crate) breaker: tb_delivery::Breaker,
}

/// Everything a supervisor needs to run (and run again) one component.
pub(crate) struct Unit {
    pub(crate) id: ComponentId,
    pub(crate) blueprint: Blueprint,
    pub(crate) builders: Builders,
    pub(crate) data_dir: PathBuf,
    pub(crate) status: StatusCell,
    pub(crate) restarts: Counter,
    /// Cancelled when the component must stop taking input from outside.
    pub(crate) intake: CancellationToken,
    /// Cancelled when the component must stop reading its input queue (it is replaced).
    pub(crate) stop_input: CancellationToken,
    pub(crate) input: Option<Arc<InputSlot>>,
    /// One sender per output port, in port order; dropped when the supervisor ends, which
    /// is what closes the queues of the components that read this one.
    pub(crate) outputs: Vec<OutputSender>,
}

/// A run, started and ready to be driven.
pub(crate) type Run = RunningConnector;

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunStartError {
    #[error("{0}")]
    Connector(#[from] tb_connectors::ConnectorError),
    #[error("{0}")]
    Build(String),
}

impl Unit {
    /// Starts a run: builds the component from its blueprint, takes the input queue, and
    /// (for a connector) acquires its sockets and files.
    pub(crate) async fn start_run(&self) -> Result<Run, RunStartError> {
        match &self.blueprint {
            Blueprint::Connector { kind, settings, .. } => {
                let builder = self
                    .builders
                    .iter()
                    .find(|builder| builder.kind() == kind)
                    .ok_or_else(|| RunStartError::Build(format!("unknown kind `{kind}`")))?;
                let connector = builder
                    .build(&self.id, settings.clone(), self.input.is_some())
                    .map_err(|error| RunStartError::Build(error.to_string()))?;
                let input = self.take_input(None).await?;
                self.start_connector(connector, input).await
            }
            Blueprint::Pipeline { config, .. } => {
                let pipeline = Pipeline::build(self.id.as_str(), config).map_err(|errors| {
                    RunStartError::Build(format!("pipeline does not build: {errors:?}"))
                })?;
                let input = self.take_input(None).await?;
                Ok(self.pipeline_run(pipeline, input))
            }
            Blueprint::Destination { config, .. } => {
                let destination = tb_delivery::Destination::build(
                    self.id.as_str(),
                    (**config).clone(),
                )
                .map_err(|problems| {
                    RunStartError::Build(format!("destination does not build: {problems:?}"))
                })?;
                let input = self.take_input(None).await?;
                self.destination_run(destination, input)
            }
        }
    }

    /// A run of a destination that is already built, on `input`.
    pub(crate) fn destination_run(
        &self,
        destination: tb_delivery::Destination,
        input: Option<InputQueue>,
    ) -> Result<Run, RunStartError> {
        let Blueprint::Destination { delivery, .. } = &self.blueprint else {
            return Err(RunStartError::Build("not a destination".to_owned()));
        };
        let context = tb_delivery::DestinationContext {
            store: delivery.store.clone(),
            input,
            intake: self.intake.clone(),
            metrics: delivery.metrics.clone(),
            breaker: delivery.breaker.clone(),
            data_dir: self.data_dir.clone(),
        };
        Ok(Box::pin(async move {
            destination
                .run(context)
                .await
                .map_err(|error| tb_connectors::ConnectorError::Io {
                    context: "destination".to_owned(),
                    source: std::io::Error::other(error),
                })
        }))
    }

    /// Takes the input queue for a run, waiting for the previous run to let go of it (at
    /// most `limit`, when given).
    pub(crate) async fn take_input(
        &self,
        limit: Option<Duration>,
    ) -> Result<Option<InputQueue>, RunStartError> {
        let Some(slot) = &self.input else {
            return Ok(None);
        };
        let taking = slot.take(self.stop_input.clone());
        match limit {
            None => Ok(Some(taking.await)),
            Some(limit) => {
                tokio::time::timeout(limit, taking)
                    .await
                    .map(Some)
                    .map_err(|_elapsed| {
                        RunStartError::Build(
                            "its previous run still holds its input queue".to_owned(),
                        )
                    })
            }
        }
    }

    /// Starts a run of a connector that is already built, on `input`.
    pub(crate) async fn start_connector(
        &self,
        connector: Box<dyn tb_connectors::Connector>,
        input: Option<InputQueue>,
    ) -> Result<Run, RunStartError> {
        let Blueprint::Connector { metrics, .. } = &self.blueprint else {
            return Err(RunStartError::Build("not a connector".to_owned()));
        };
        let mut outputs = self.outputs.iter().cloned();
        let context = ConnectorContext {
            id: self.id.clone(),
            output: outputs.next().unwrap_or_else(OutputSender::disconnected),
            errors: outputs.next().unwrap_or_else(OutputSender::disconnected),
            input,
            intake: self.intake.clone(),
            status: self.status.clone(),
            metrics: metrics.clone(),
            data_dir: self.data_dir.clone(),
        };
        Ok(connector.start(context).await?)
    }

    /// A run of a pipeline that is already compiled, on `input`.
    pub(crate) fn pipeline_run(&self, pipeline: Pipeline, input: Option<InputQueue>) -> Run {
        let metrics = match &self.blueprint {
            Blueprint::Pipeline { metrics, .. } => metrics.clone(),
            Blueprint::Connector { .. } | Blueprint::Destination { .. } => {
                PipelineMetrics::default()
            }
        };
        let outputs = self.outputs.clone();
        Box::pin(async move {
            if let Some(input) = input {
                run_pipeline(pipeline, input, outputs, metrics).await;
            }
            Ok(())
        })
    }

    fn is_connector(&self) -> bool {
        matches!(self.blueprint, Blueprint::Connector { .. })
    }

    fn stopping(&self) -> bool {
        self.intake.is_cancelled() || self.stop_input.is_cancelled()
    }

    /// Completes everything routed to a failed component as errored, until its queue closes.
    async fn refuse_input(&self, error: &str) {
        let Some(slot) = &self.input else {
            return;
        };
        let mut input = slot.take(CancellationToken::new()).await;
        let reason: Arc<str> = Arc::from(format!("component {} failed: {error}", self.id));
        while let Some(batch) = input.recv().await {
            for event in batch {
                event.complete_with(AckStatus::Errored, reason.clone());
            }
        }
    }
}

/// Runs `unit` until it finishes, is stopped, or fails for good. `first` is a run already
/// started (the initial start reports errors such as a port in use before anything runs).
pub(crate) async fn supervise(mut unit: Unit, mut first: Option<Run>) {
    // At error level, so it is kept whatever `RUST_LOG` lets through: a warning from a
    // component names the component even when info lines are off.
    let span = tracing::error_span!("component", id = %unit.id);
    async move {
        let mut failures: VecDeque<Instant> = VecDeque::new();
        let mut backoff = Backoff::new(RESTART_BACKOFF_MIN, RESTART_BACKOFF_MAX);
        loop {
            let started = match first.take() {
                Some(run) => Ok(run),
                None => unit.start_run().await,
            };
            let error = match started {
                Ok(run) => {
                    unit.status.set(ComponentStatus::Running);
                    match drive(run, &mut unit).await {
                        None => {
                            unit.status.set(ComponentStatus::Stopped);
                            return;
                        }
                        Some(error) => error,
                    }
                }
                Err(error) => format!("cannot start: {error}"),
            };
            if unit.stopping() {
                unit.status.set_with_error(ComponentStatus::Stopped, error);
                return;
            }
            let now = Instant::now();
            failures.push_back(now);
            while failures
                .front()
                .is_some_and(|first| now.duration_since(*first) > RESTART_WINDOW)
            {
                failures.pop_front();
            }
            if failures.len() > MAX_RESTARTS {
                tracing::error!(%error, failures = failures.len(), window = ?RESTART_WINDOW, "Component failed too often; it is stopped for good.");
                unit.status.set_with_error(ComponentStatus::Failed, error.clone());
                // Its outputs go first: what it fed (perhaps its own input, through a
                // pipeline) must be able to close.
                unit.outputs.clear();
                unit.refuse_input(&error).await;
                return;
            }
            unit.restarts.inc();
            let delay = backoff.next_delay();
            tracing::error!(%error, retry_in = ?delay, "Component stopped with an error; restarting it.");
            unit.status
                .set_with_error(ComponentStatus::Starting, error.clone());
            tokio::select! {
                () = unit.intake.cancelled() => {
                    unit.status.set(ComponentStatus::Stopped);
                    return;
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
    .instrument(span)
    .await;
}

/// Drives one run on its own task (so a panic is contained there) and says how it ended:
/// `None` when it finished cleanly, or the error or panic message.
///
/// Once intake stops the supervisor lets go of the component's outputs: it will not start
/// it again, and a component that both produces and consumes (a server answering through a
/// pipeline) only ends when what it fed has closed its input.
async fn drive(run: Run, unit: &mut Unit) -> Option<String> {
    let mut task = tokio::spawn(run.in_current_span());
    let ended = tokio::select! {
        ended = &mut task => ended,
        () = unit.intake.cancelled(), if unit.is_connector() => {
            // A connector's intake stopped: what it handed on stays handed on, nothing new
            // goes out, and the queues it fed close, so steps that hold events flush them
            // (the connector may be waiting for their acknowledgements). A pipeline has no
            // intake: it ends when its own input does, after flushing into its outputs.
            for output in unit.outputs.drain(..) {
                output.finish();
            }
            task.await
        }
    };
    match ended {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(join) if join.is_panic() => Some(format!("panicked: {}", panic_text(join))),
        Err(join) => Some(format!("was cancelled: {join}")),
    }
}

fn panic_text(join: tokio::task::JoinError) -> String {
    let payload = join.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
