//! The narrow view of a running topology that the API serves: read-only state, plus the one
//! door through which a new config may be pushed.
//!
//! The view is replaced as a whole when a reload changes the topology, so a reader always
//! sees one consistent topology.

use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::metrics::counter::Counter;
use tb_connectors::{ConnectorMetrics, StatusCell, StatusRecord};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::{MetricsRegistry, PipelineMetrics};
use crate::reload::{ReloadOutcome, ReloadRequest};
use crate::supervise::InputSlot;

pub use tb_connectors::ComponentStatus as Status;

/// Connector or pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComponentType {
    /// Talks to the outside.
    Connector,
    /// Runs VRL steps.
    Pipeline,
    /// Loads jobs durably.
    Destination,
}

/// A component's live counters.
#[derive(Clone, Debug)]
pub enum ComponentMetrics {
    /// A connector's.
    Connector(ConnectorMetrics),
    /// A pipeline's.
    Pipeline(PipelineMetrics),
    /// A destination's: its actions and its circuit breaker.
    Destination {
        /// Its actions' names.
        actions: Vec<String>,
        /// Its circuit breaker.
        breaker: tb_delivery::Breaker,
    },
}

/// One component as the API shows it.
#[derive(Clone)]
pub struct ComponentView {
    /// Its id.
    pub id: String,
    /// Connector or pipeline.
    pub component_type: ComponentType,
    /// The connector kind, or `pipeline`.
    pub kind: String,
    /// Live counters.
    pub metrics: ComponentMetrics,
    /// How many times it was restarted after a failure.
    pub restarts: Counter,
    pub(crate) status: StatusCell,
    pub(crate) input: Option<Arc<InputSlot>>,
}

impl std::fmt::Debug for ComponentView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentView")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("status", &self.status.status())
            .finish()
    }
}

impl ComponentView {
    /// Its current status.
    pub fn status(&self) -> Status {
        self.status.status()
    }

    /// Its status, since when, and its last error.
    pub fn status_record(&self) -> StatusRecord {
        self.status.snapshot()
    }

    /// Batches waiting in its input queue, if it has one that is open.
    pub fn queue_fill(&self) -> Option<usize> {
        self.input.as_ref().and_then(|slot| slot.fill())
    }
}

/// Data flows from the output `from` (`id` or `id.port`) to the component `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeView {
    /// The output.
    pub from: String,
    /// The reading component.
    pub to: String,
}

/// The topology as it is now.
#[derive(Clone, Debug, Default)]
pub(crate) struct TopologyView {
    pub(crate) components: Vec<ComponentView>,
    pub(crate) edges: Vec<EdgeView>,
    /// The running config's text as JSON, with secrets masked.
    pub(crate) config: serde_json::Value,
}

/// A cheap, cloneable handle on a running topology for the API.
#[derive(Clone)]
pub struct RuntimeHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    view: RwLock<Arc<TopologyView>>,
    store: RwLock<Option<tb_store::Store>>,
    metrics: MetricsRegistry,
    reloads: mpsc::Sender<ReloadRequest>,
}

impl RuntimeHandle {
    pub(crate) fn new(
        view: TopologyView,
        metrics: MetricsRegistry,
        reloads: mpsc::Sender<ReloadRequest>,
    ) -> Self {
        Self {
            inner: Arc::new(HandleInner {
                view: RwLock::new(Arc::new(view)),
                store: RwLock::new(None),
                metrics,
                reloads,
            }),
        }
    }

    pub(crate) fn replace_view(&self, view: TopologyView) {
        *self
            .inner
            .view
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(view);
    }

    fn view(&self) -> Arc<TopologyView> {
        self.inner
            .view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_store(&self, store: tb_store::Store) {
        *self
            .inner
            .store
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(store);
    }

    /// The job store, once a destination has opened it.
    pub fn store(&self) -> Option<tb_store::Store> {
        self.inner
            .store
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every component.
    pub fn components(&self) -> Vec<ComponentView> {
        self.view().components.clone()
    }

    /// Every edge.
    pub fn edges(&self) -> Vec<EdgeView> {
        self.view().edges.clone()
    }

    /// The running config as JSON, with secrets masked.
    pub fn config(&self) -> serde_json::Value {
        self.view().config.clone()
    }

    /// Components that are not ready (failed, starting, reconnecting), with their records.
    pub fn not_ready(&self) -> Vec<(String, StatusRecord)> {
        self.view()
            .components
            .iter()
            .map(|component| (component.id.clone(), component.status_record()))
            .filter(|(_, record)| !record.status.is_ready())
            .collect()
    }

    /// Events received by every connector whose acknowledgement ended errored or rejected.
    pub fn unconfirmed_events(&self) -> u64 {
        self.view()
            .components
            .iter()
            .map(|component| match &component.metrics {
                ComponentMetrics::Connector(metrics) => metrics.unconfirmed.get(),
                ComponentMetrics::Pipeline(_) | ComponentMetrics::Destination { .. } => 0,
            })
            .sum()
    }

    /// Asks the runtime to reconcile to a new config given as text (`format` is `toml`,
    /// `yaml` or `json`). A pushed config never expands `${VAR}`.
    pub async fn reload(&self, text: String, format: &str) -> ReloadOutcome {
        let (reply, answer) = oneshot::channel();
        let request = ReloadRequest::Text {
            text,
            format: format.to_owned(),
            reply,
        };
        if self.inner.reloads.send(request).await.is_err() {
            return ReloadOutcome::Unavailable;
        }
        answer.await.unwrap_or(ReloadOutcome::Unavailable)
    }

    /// Events handed on by connectors whose acknowledgement has not resolved yet.
    pub fn in_flight_events(&self) -> u64 {
        self.view()
            .components
            .iter()
            .map(|component| match &component.metrics {
                ComponentMetrics::Connector(metrics) => {
                    metrics.output.get().saturating_sub(metrics.settled.get())
                }
                ComponentMetrics::Pipeline(_) | ComponentMetrics::Destination { .. } => 0,
            })
            .sum()
    }

    /// Prometheus text of every metric, with queue fill levels and statuses read now.
    pub fn render_metrics(&self, format: crate::metrics::MetricsFormat) -> String {
        for component in &self.view().components {
            self.inner
                .metrics
                .set_queue_fill(&component.id, component.queue_fill().unwrap_or(0));
            self.inner
                .metrics
                .set_status(&component.id, component.status());
        }
        self.inner.metrics.render(format)
    }
}
