//! The pipeline task: batches in from the input queue, through the steps, out per port.

use tb_connectors::{InputQueue, OutputSender};
use tb_event::EventBatch;
use tb_pipeline::Pipeline;

use crate::metrics::PipelineMetrics;

/// Most events a pipeline sends downstream in one batch.
pub const MAX_BATCH_EVENTS: usize = 4096;

/// Runs batches through `pipeline` until its input closes, sending each port's events on.
pub(crate) async fn run_pipeline(
    mut pipeline: Pipeline,
    mut input: InputQueue,
    senders: Vec<OutputSender>,
    metrics: PipelineMetrics,
) {
    let mut outputs: Vec<EventBatch> = senders.iter().map(|_| Vec::new()).collect();
    let unmatched = pipeline.ports().unmatched();
    while let Some(batch) = input.recv().await {
        let counts = pipeline.process(batch, &mut outputs);
        metrics.input.inc_by(counts.input);
        metrics.output.inc_by(counts.output);
        metrics.dropped.inc_by(counts.dropped);
        metrics.errors.inc_by(counts.errors);
        for (port, events) in outputs.iter_mut().enumerate() {
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
            if port == pipeline.ports().errors() && !senders[port].is_connected() {
                tracing::warn!(
                    pipeline = pipeline.id(),
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
