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
    delivery: tb_delivery::DeliveryMetrics,
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
        let delivery = tb_delivery::DeliveryMetrics::default();
        delivery.register(&mut registry);
        Self {
            delivery,
            registry: Arc::new(registry),
            connector_events,
            pipeline_events,
            latency,
            queue_fill,
            restarts,
            status,
        }
    }

    /// Durable delivery's metrics.
    pub fn delivery(&self) -> tb_delivery::DeliveryMetrics {
        self.delivery.clone()
    }

    /// The counters of connector `id`.
    pub fn connector(&self, id: &str) -> ConnectorMetrics {
        self.connector_with(id, Latency::Registered)
    }

    /// The counters of connector `id`; a connector that receives nothing from outside (a
    /// sink) gets a latency histogram that is not registered, so `/metrics` shows no series
    /// that can only stay at zero.
    pub fn connector_with(&self, id: &str, latency: Latency) -> ConnectorMetrics {
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
            latency: match latency {
                Latency::Registered => self
                    .latency
                    .get_or_create(&labels("connector", id, None))
                    .clone(),
                Latency::Unregistered => new_latency_histogram(),
            },
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
    pub fn render(&self, format: MetricsFormat) -> String {
        let mut text = String::new();
        if let Err(error) = encode(&mut text, &self.registry) {
            tracing::error!(%error, "Metrics could not be encoded.");
        }
        match format {
            MetricsFormat::OpenMetrics => text,
            MetricsFormat::Prometheus => openmetrics_to_prometheus(&text),
        }
    }
}

/// Whether a connector's receive-to-acknowledge histogram is exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    /// It receives from outside: the histogram is in `/metrics`.
    Registered,
    /// It only sends: no histogram series.
    Unregistered,
}

/// How `/metrics` is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsFormat {
    /// The Prometheus text format, version 0.0.4: what scrapers and `promtool` read by default.
    Prometheus,
    /// OpenMetrics 1.0, for a scraper that asks for it.
    OpenMetrics,
}

impl MetricsFormat {
    /// The format an `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Self {
        if accept.is_some_and(|accept| accept.contains("application/openmetrics-text")) {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// OpenMetrics text as the Prometheus text format: a counter's HELP and TYPE name its
/// samples (`x_total`, where OpenMetrics names the family `x`), and there is no `# UNIT` or
/// `# EOF`.
fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(renamed) => out.push_str(&renamed),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn labels(kind: &str, id: &str, direction: Option<&str>) -> Labels {
    let mut labels = vec![(kind.to_owned(), id.to_owned())];
    if let Some(direction) = direction {
        labels.push(("direction".to_owned(), direction.to_owned()));
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_by_their_samples_and_has_no_eof() {
        let registry = MetricsRegistry::new();
        registry.connector("web").received.inc_by(3);
        let text = registry.render(MetricsFormat::Prometheus);
        assert!(
            text.contains("# TYPE tightbeam_connector_events_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP tightbeam_connector_events_total "),
            "{text}"
        );
        assert!(
            text.contains(
                "tightbeam_connector_events_total{connector=\"web\",direction=\"recv\"} 3"
            ),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        let open = registry.render(MetricsFormat::OpenMetrics);
        assert!(open.contains("# TYPE tightbeam_connector_events counter"));
        assert!(open.trim_end().ends_with("# EOF"));
    }
}
