//! Durable delivery's metrics: jobs by status, pending jobs, attempt durations and
//! circuit state, by destination and action.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn attempt_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// The families, shared by every destination of the process.
#[derive(Clone)]
pub struct DeliveryMetrics {
    jobs: Family<Labels, Counter>,
    pending: Family<Labels, Gauge>,
    attempts: HistogramFamily,
    circuit_open: Family<Labels, Gauge>,
}

impl Default for DeliveryMetrics {
    fn default() -> Self {
        Self {
            jobs: Family::default(),
            pending: Family::default(),
            attempts: Family::new_with_constructor(attempt_histogram),
            circuit_open: Family::default(),
        }
    }
}

fn labels(destination: &str, action: Option<&str>, status: Option<&str>) -> Labels {
    let mut labels = vec![("destination".to_owned(), destination.to_owned())];
    if let Some(action) = action {
        labels.push(("action".to_owned(), action.to_owned()));
    }
    if let Some(status) = status {
        labels.push(("status".to_owned(), status.to_owned()));
    }
    labels
}

impl DeliveryMetrics {
    /// Registers the families in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tightbeam_jobs",
            "Jobs that reached a status (available or scheduled when stored; succeeded, retrying, discarded when an attempt ended), by destination and action",
            self.jobs.clone(),
        );
        registry.register(
            "tightbeam_jobs_pending",
            "Jobs stored and not ended (scheduled, available, running, retrying), by destination and action, as last counted in the store",
            self.pending.clone(),
        );
        registry.register(
            "tightbeam_job_attempt_duration_seconds",
            "Seconds one load of a job took, by destination and action",
            self.attempts.clone(),
        );
        registry.register(
            "tightbeam_destination_circuit_open",
            "1 while a destination's circuit breaker is open (loads paused), else 0",
            self.circuit_open.clone(),
        );
    }

    /// Counts `count` jobs of an action reaching `status`.
    pub fn jobs(&self, destination: &str, action: &str, status: &str, count: u64) {
        self.jobs
            .get_or_create(&labels(destination, Some(action), Some(status)))
            .inc_by(count);
    }

    /// Sets the pending count of an action.
    pub fn pending(&self, destination: &str, action: &str, count: u64) {
        self.pending
            .get_or_create(&labels(destination, Some(action), None))
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Records one attempt's duration.
    pub fn attempt(&self, destination: &str, action: &str, seconds: f64) {
        self.attempts
            .get_or_create(&labels(destination, Some(action), None))
            .observe(seconds);
    }

    /// Sets whether a destination's circuit is open.
    pub fn circuit(&self, destination: &str, open: bool) {
        self.circuit_open
            .get_or_create(&labels(destination, None, None))
            .set(i64::from(open));
    }
}
