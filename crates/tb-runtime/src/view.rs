//! The narrow, read-only view of a running topology that the API serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tb_connectors::ConnectorMetrics;
use tb_event::EventBatch;
use tokio::sync::mpsc::WeakSender;

use crate::metrics::{MetricsRegistry, PipelineMetrics};

/// Connector or pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComponentType {
    /// Talks to the outside.
    Connector,
    /// Runs VRL steps.
    Pipeline,
}

/// Where a component is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Built, not yet running.
    Starting = 0,
    /// Running.
    Running = 1,
    /// Finished by itself or drained at shutdown.
    Finished = 2,
    /// Stopped with an error.
    Failed = 3,
}

impl Status {
    /// Lowercase name for the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Running,
            2 => Self::Finished,
            3 => Self::Failed,
            _ => Self::Starting,
        }
    }
}

/// A component's live counters.
#[derive(Clone, Debug)]
pub enum ComponentMetrics {
    /// A connector's.
    Connector(ConnectorMetrics),
    /// A pipeline's.
    Pipeline(PipelineMetrics),
}

/// One component as the API shows it.
#[derive(Clone, Debug)]
pub struct ComponentView {
    /// Its id.
    pub id: String,
    /// Connector or pipeline.
    pub component_type: ComponentType,
    /// The connector kind, or `pipeline`.
    pub kind: String,
    /// Live counters.
    pub metrics: ComponentMetrics,
    pub(crate) status: Arc<AtomicU8>,
}

impl ComponentView {
    /// Its current status.
    pub fn status(&self) -> Status {
        Status::from_u8(self.status.load(Ordering::Relaxed))
    }

    pub(crate) fn set_status(&self, status: Status) {
        self.status.store(status as u8, Ordering::Relaxed);
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

/// A cheap, cloneable handle on a running topology for the API.
#[derive(Clone)]
pub struct RuntimeHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    components: Vec<ComponentView>,
    edges: Vec<EdgeView>,
    metrics: MetricsRegistry,
    queues: Vec<(String, WeakSender<EventBatch>)>,
}

impl RuntimeHandle {
    pub(crate) fn new(
        components: Vec<ComponentView>,
        edges: Vec<EdgeView>,
        metrics: MetricsRegistry,
        queues: Vec<(String, WeakSender<EventBatch>)>,
    ) -> Self {
        Self {
            inner: Arc::new(HandleInner {
                components,
                edges,
                metrics,
                queues,
            }),
        }
    }

    /// Every component.
    pub fn components(&self) -> &[ComponentView] {
        &self.inner.components
    }

    /// Every edge.
    pub fn edges(&self) -> &[EdgeView] {
        &self.inner.edges
    }

    /// Batches waiting in `component`'s input queue, if it has one that is open.
    pub fn queue_fill(&self, component: &str) -> Option<usize> {
        self.inner
            .queues
            .iter()
            .find(|(id, _)| id == component)
            .and_then(|(_, weak)| weak.upgrade())
            .map(|sender| sender.max_capacity() - sender.capacity())
    }

    /// Events received by every connector whose acknowledgement ended errored or rejected.
    pub fn unconfirmed_events(&self) -> u64 {
        self.inner
            .components
            .iter()
            .map(|component| match &component.metrics {
                ComponentMetrics::Connector(metrics) => metrics.unconfirmed.get(),
                ComponentMetrics::Pipeline(_) => 0,
            })
            .sum()
    }

    /// Prometheus text of every metric, with queue fill levels read now.
    pub fn render_metrics(&self) -> String {
        for (id, _) in &self.inner.queues {
            self.inner
                .metrics
                .set_queue_fill(id, self.queue_fill(id).unwrap_or(0));
        }
        self.inner.metrics.render()
    }
}
