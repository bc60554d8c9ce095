//! `generator`: synthetic events at a rate, for demos and benchmarks.
//!
//! Events look like the standard benchmark event (sensor, kind, value, sequence number), are
//! deterministic for a given sequence number, and are acknowledged like any source's: the
//! generator waits for every batch before it finishes, and records the latency.

use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Deserialize;
use tb_event::{
    AckStatus, Acknowledgement, ComponentId, Event, EventId, EventMeta, KeyString, ObjectMap,
    StreamId, Value,
};

use crate::core::{
    BuildError, Connector, ConnectorBuilder, ConnectorContext, Roles, StartFuture, parse_config,
};

/// `kind = "generator"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// How many events to make before finishing; unset means forever.
    #[serde(default)]
    pub count: Option<u64>,
    /// Events per second; unset means as fast as the pipeline takes them.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Events per batch (and per acknowledgement).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_batch_size() -> usize {
    100
}

/// Batches handed on and not yet acknowledged, at most.
const MAX_UNACKNOWLEDGED_BATCHES: usize = 64;

/// Builds generators.
pub struct GeneratorBuilder;

impl ConnectorBuilder for GeneratorBuilder {
    fn kind(&self) -> &'static str {
        "generator"
    }

    fn roles(&self, _has_inputs: bool) -> Roles {
        Roles::SOURCE
    }

    fn build(
        &self,
        _id: &ComponentId,
        config: serde_json::Value,
        _has_inputs: bool,
    ) -> Result<Box<dyn Connector>, BuildError> {
        let config: GeneratorConfig = parse_config(config)?;
        if config.batch_size == 0 {
            return Err(BuildError::at("batch_size", "must be at least 1"));
        }
        if config
            .rate
            .is_some_and(|rate| !(rate > 0.0 && rate.is_finite()))
        {
            return Err(BuildError::at(
                "rate",
                "must be a positive number of events per second",
            ));
        }
        Ok(Box::new(Generator { config }))
    }
}

struct Generator {
    config: GeneratorConfig,
}

impl Connector for Generator {
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        Box::pin(async move {
            let running: crate::RunningConnector = Box::pin(self.run(context));
            Ok(running)
        })
    }
}

impl Generator {
    /// The configured batch size, but at most a tenth of a second's worth at a set rate, so
    /// a slow generator still spreads its events out.
    fn batch_size(&self) -> u64 {
        let configured = self.config.batch_size as u64;
        match self.config.rate {
            Some(rate) => configured.min(((rate / 10.0) as u64).max(1)),
            None => configured,
        }
    }

    async fn run(self, context: ConnectorContext) -> Result<(), crate::ConnectorError> {
        let started = Instant::now();
        let mut next_seq = 0u64;
        let mut pending = FuturesUnordered::new();
        let limit = self.config.count.unwrap_or(u64::MAX);
        'generating: while next_seq < limit && !context.intake.is_cancelled() {
            while pending.len() >= MAX_UNACKNOWLEDGED_BATCHES {
                pending.next().await;
            }
            if let Some(rate) = self.config.rate {
                let offset =
                    Duration::try_from_secs_f64(next_seq as f64 / rate).unwrap_or(Duration::MAX);
                let Some(due) = started.checked_add(offset) else {
                    break;
                };
                // Acknowledgements are taken as they come (so latency is measured when it
                // happens), while waiting for the next batch's turn.
                loop {
                    tokio::select! {
                        biased;
                        () = context.intake.cancelled() => break 'generating,
                        Some(()) = pending.next(), if !pending.is_empty() => {}
                        () = tokio::time::sleep_until(due.into()) => break,
                    }
                }
            }
            let size = self.batch_size().min(limit - next_seq);
            let (ack, receipt) = Acknowledgement::new_unit();
            let now = Utc::now();
            let batch: Vec<Event> = (next_seq..next_seq + size)
                .map(|seq| {
                    let meta = EventMeta {
                        id: EventId {
                            connector: context.id.clone(),
                            stream: StreamId(0),
                            seq,
                        },
                        received_at: now,
                        fields: None,
                    };
                    Event::new(synthetic_value(seq, now), meta, ack.clone())
                })
                .collect();
            ack.complete(AckStatus::Delivered);
            next_seq += size;
            context.metrics.received.inc_by(size);
            context.metrics.output.inc_by(size);
            let sent_at = Instant::now();
            let metrics = context.metrics.clone();
            pending.push(async move {
                let outcome = receipt.wait().await;
                metrics.latency.observe(sent_at.elapsed().as_secs_f64());
                metrics.settle(size, &outcome);
            });
            let sending = context.output.send(batch);
            tokio::pin!(sending);
            loop {
                tokio::select! {
                    biased;
                    () = context.intake.cancelled() => break 'generating,
                    Some(()) = pending.next(), if !pending.is_empty() => {}
                    sent = &mut sending => {
                        if sent.is_err() {
                            break 'generating;
                        }
                        break;
                    }
                }
            }
        }
        // Nothing more to send: downstream steps that hold events (a batch) may flush.
        context.output.finish();
        context.errors.finish();
        while pending.next().await.is_some() {}
        Ok(())
    }
}

const KINDS: [&str; 5] = ["temp", "humidity", "pressure", "vibration", "debug"];

/// A deterministic standard-looking event for sequence number `seq`.
fn synthetic_value(seq: u64, now: chrono::DateTime<Utc>) -> Value {
    // A multiplicative hash spreads consecutive numbers over sensors, kinds and values.
    let hash = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut object = ObjectMap::new();
    object.insert(KeyString::from("seq"), Value::from(seq as i64));
    object.insert(
        KeyString::from("sensor_id"),
        Value::from(format!("s-{:04}", (hash >> 20) % 1000)),
    );
    object.insert(
        KeyString::from("kind"),
        Value::from(KINDS[((hash >> 40) % KINDS.len() as u64) as usize]),
    );
    let value = ((hash >> 8) % 140_000) as f64 / 1000.0 - 20.0;
    object.insert(KeyString::from("value"), Value::from_f64_or_zero(value));
    object.insert(KeyString::from("ts"), Value::from(now));
    Value::Object(object)
}
