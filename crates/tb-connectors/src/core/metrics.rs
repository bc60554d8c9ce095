//! Per-connector counters, shared with the runtime's metrics registry and the API.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tb_event::AckOutcome;

/// Handles to one connector's metrics. Cloning shares the underlying counters.
#[derive(Clone, Debug)]
pub struct ConnectorMetrics {
    /// Events received from outside.
    pub received: Counter,
    /// Events handed to pipelines (on `<id>`).
    pub output: Counter,
    /// Events taken from pipelines to send out.
    pub input: Counter,
    /// Events sent outside successfully.
    pub sent: Counter,
    /// Events or frames that failed (decode errors, send failures, replies with no stream).
    pub errors: Counter,
    /// Events received from outside whose acknowledgement ended errored or rejected, so the
    /// source did not confirm them upstream.
    pub unconfirmed: Counter,
    /// Events a source sent on again after an errored acknowledgement (duplicates downstream
    /// are possible: delivery is at least once).
    pub redelivered: Counter,
    /// Events handed on whose acknowledgement has resolved; `out - settled` are in flight.
    pub settled: Counter,
    /// Seconds from receipt to acknowledgement.
    pub latency: Histogram,
}

impl ConnectorMetrics {
    /// Counters that no registry exports: for a connector used inside another component
    /// (a destination's), or in tests.
    pub fn unregistered() -> Self {
        Self {
            received: Counter::default(),
            output: Counter::default(),
            input: Counter::default(),
            sent: Counter::default(),
            errors: Counter::default(),
            unconfirmed: Counter::default(),
            redelivered: Counter::default(),
            settled: Counter::default(),
            latency: Histogram::new(latency_buckets()),
        }
    }

    /// Counts `events` handed on as settled with `outcome`, and as unconfirmed if they were
    /// not delivered.
    pub fn settle(&self, events: u64, outcome: &AckOutcome) {
        self.settled.inc_by(events);
        if !outcome.is_delivered() {
            self.unconfirmed.inc_by(events);
        }
    }
}

/// Latency buckets from 100 µs to 30 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0,
    ]
    .into_iter()
}
