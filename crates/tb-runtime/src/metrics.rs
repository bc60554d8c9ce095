//! The Prometheus registry and the counters the runtime hands to components.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tb_connectors::ConnectorMetrics;
use tb_connectors::core::latency_buckets;

type Labels = Vec<(String, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// One pipeline's counters.
#[derive(Clone, Debug, Default)]
pub struct PipelineMetrics {
    /// Events in.
    pub input: Counter,
    /// Events out on any port but `_errors`.
    pub output: Counter,
    /// Events a filter dropped.
    pub dropped: Counter,
    /// Events sent to `_errors`.
    pub errors: Counter,
}

/// Every metric of the process, registered for `/metrics`.
#[derive(Clone)]
pub struct MetricsRegistry {
    registry: Arc<Registry>,
    connector_events: Family<Labels, Counter>,
    pipeline_events: Family<Labels, Counter>,
    latency: HistogramFamily,
    queue_fill: Family<Labels, Gauge>,
    restarts: Family<Labels, Counter>,
    status: Family<Labels, Gauge>,
}

fn new_latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsRegistry {
    /// A registry with Tightbeam's metric families.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let connector_events = Family::<Labels, Counter>::default();
        let pipeline_events = Family::<Labels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(new_latency_histogram);
        let queue_fill = Family::<Labels, Gauge>::default();
        let restarts = Family::<Labels, Counter>::default();
        let status = Family::<Labels, Gauge>::default();
        registry.register(
            "tightbeam_component_restarts",
            "Times a component was restarted after it panicked or stopped with an error",
            restarts.clone(),
        );
        registry.register(
            "tightbeam_component_status",
            "1 for a component's current status (starting, running, reconnecting, draining, failed, stopped), 0 for the others",
            status.clone(),
        );
        registry.register(
            "tightbeam_connector_events",
            "Events by connector and direction: recv (outside to connector), out (connector to pipelines), in (pipelines to connector), send (connector to outside), err, unconfirmed (received but not confirmed upstream: errored or rejected), redelivered (sent on again after an errored acknowledgement), settled (acknowledgement resolved; out - settled are in flight)",
            connector_events.clone(),
        );
        registry.register(
            "tightbeam_pipeline_events",
            "Events by pipeline and direction: in, out, dropped (by a filter), err (sent to _errors)",
            pipeline_events.clone(),
        );
        registry.register(
            "tightbeam_event_latency_seconds",
            "Seconds from receipt by a source connector to acknowledgement",
            latency.clone(),
        );
        registry.register(
            "tightbeam_queue_fill",
            "Batches waiting in a component's input queue",
            queue_fill.clone(),
        );
        Self {
            registry: Arc::new(registry),
            connector_events,
            pipeline_events,
            latency,
            queue_fill,
            restarts,
            status,
        }
    }

    /// The counters of connector `id`.
    pub fn connector(&self, id: &str) -> ConnectorMetrics {
        let counter = |direction: &str| {
            self.connector_events
                .get_or_create(&labels("connector", id, Some(direction)))
                .clone()
        };
        ConnectorMetrics {
            received: counter("recv"),
            output: counter("out"),
            input: counter("in"),
            sent: counter("send"),
            errors: counter("err"),
            unconfirmed: counter("unconfirmed"),
            redelivered: counter("redelivered"),
            settled: counter("settled"),
            latency: self
                .latency
                .get_or_create(&labels("connector", id, None))
                .clone(),
        }
    }

    /// The counters of pipeline `id`.
    pub fn pipeline(&self, id: &str) -> PipelineMetrics {
        let counter = |direction: &str| {
            self.pipeline_events
                .get_or_create(&labels("pipeline", id, Some(direction)))
                .clone()
        };
        PipelineMetrics {
            input: counter("in"),
            output: counter("out"),
            dropped: counter("dropped"),
            errors: counter("err"),
        }
    }

    /// The restart counter of `component`.
    pub fn restarts(&self, component: &str) -> Counter {
        self.restarts
            .get_or_create(&labels("component", component, None))
            .clone()
    }

    /// Sets the status gauges of `component`: 1 for `current`, 0 for every other status.
    pub fn set_status(&self, component: &str, current: tb_connectors::ComponentStatus) {
        for status in tb_connectors::ComponentStatus::ALL {
            let labels = vec![
                ("component".to_owned(), component.to_owned()),
                ("status".to_owned(), status.as_str().to_owned()),
            ];
            self.status
                .get_or_create(&labels)
                .set(i64::from(status == current));
        }
    }

    /// Sets the queue fill gauge of `component`.
    pub fn set_queue_fill(&self, component: &str, queued: usize) {
        self.queue_fill
            .get_or_create(&labels("component", component, None))
            .set(queued as i64);
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = encode(&mut text, &self.registry) {
            tracing::error!(%error, "Metrics could not be encoded.");
        }
        text
    }
}

fn labels(kind: &str, id: &str, direction: Option<&str>) -> Labels {
    let mut labels = vec![(kind.to_owned(), id.to_owned())];
    if let Some(direction) = direction {
        labels.push(("direction".to_owned(), direction.to_owned()));
    }
    labels
}
