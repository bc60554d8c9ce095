//! The pipeline task: batches in from the input queue, through the steps, out per port;
//! steps' timers fired when due; everything the steps hold flushed when the input ends
//! (shutdown, or a reload that replaces the pipeline).
//!
//! A pipeline with a `partition` step runs split: the head (the steps up to the partition)
//! on this task, and each lane (the steps after it) on a task of its own, fed by a bounded
//! queue. Events of one key always go to one lane, and each lane sends in the order it
//! received, so per-key order holds end to end.

use std::time::Instant;

use tb_connectors::core::{OwnedTask, spawn_owned};
use tb_connectors::{InputBatch, InputQueue, OutputSender};
use tb_event::EventBatch;
use tb_pipeline::{OutputPorts, Outputs, Pipeline, PipelineCounts};
use tokio::sync::mpsc;

use crate::metrics::PipelineMetrics;

/// Most events a pipeline sends downstream in one batch.
pub const MAX_BATCH_EVENTS: usize = 4096;

/// Batches a lane's queue holds before the head waits.
const LANE_QUEUE_BATCHES: usize = 4;

/// Where a pipeline (or one lane of it) sends, and what it counts.
struct Sending<'a> {
    id: &'a str,
    ports: OutputPorts,
    senders: &'a [OutputSender],
    metrics: &'a PipelineMetrics,
    /// Lanes do not count input: the head already did.
    counts_input: bool,
}

/// Runs `pipeline` until its input ends, then flushes it.
pub(crate) async fn run_pipeline(
    pipeline: Pipeline,
    input: InputQueue,
    senders: Vec<OutputSender>,
    metrics: PipelineMetrics,
) {
    if pipeline.lanes().is_none() {
        return run_steps(pipeline, input, &senders, &metrics, true, &[]).await;
    }
    let (head, lanes) = pipeline.split_lanes();
    let mut lane_senders = Vec::with_capacity(lanes.len());
    let mut lane_tasks: Vec<OwnedTask<()>> = Vec::with_capacity(lanes.len());
    for lane in lanes {
        let (sender, receiver) = mpsc::channel(LANE_QUEUE_BATCHES);
        lane_senders.push(sender);
        let (senders, metrics) = (senders.clone(), metrics.clone());
        lane_tasks.push(spawn_owned(async move {
            let input = InputQueue::standalone(receiver);
            run_steps(lane, input, &senders, &metrics, false, &[]).await;
        }));
    }
    run_steps(head, input, &senders, &metrics, true, &lane_senders).await;
    // The head has flushed into the lanes: closing their queues lets each flush and end.
    drop(lane_senders);
    for task in lane_tasks {
        if let Err(error) = task.await
            && error.is_panic()
        {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

/// The loop of one pipeline or lane: a batch or a due timer at a time, then a flush at the
/// end of the input. `lanes` are the queues of a head's lanes (empty otherwise).
async fn run_steps(
    mut pipeline: Pipeline,
    mut input: InputQueue,
    senders: &[OutputSender],
    metrics: &PipelineMetrics,
    counts_input: bool,
    lanes: &[mpsc::Sender<InputBatch>],
) {
    let mut outputs = Outputs::for_pipeline(&pipeline);
    let id = pipeline.id().to_owned();
    let sending = Sending {
        id: &id,
        ports: pipeline.ports().clone(),
        senders,
        metrics,
        counts_input,
    };
    loop {
        let deadline = pipeline.next_deadline();
        // `recv` is cancel-safe, and a timer that loses the race is asked for again.
        // Lanes are told which input the batch that fed them came through; what a timer or
        // a flush emits is given as input 0.
        let (counts, from) = tokio::select! {
            batch = input.recv_from() => match batch {
                Some(InputBatch { input, events }) => {
                    (pipeline.process(events, input, &mut outputs), input)
                }
                None => break,
            },
            () = sleep_until(deadline) => (pipeline.on_timer(Instant::now(), &mut outputs), 0),
        };
        sending.send(counts, &mut outputs, lanes, from).await;
    }
    let counts = pipeline.flush(&mut outputs);
    sending.send(counts, &mut outputs, lanes, 0).await;
}

/// Waits until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

impl Sending<'_> {
    /// Counts one pipeline call and sends what it put on each port and lane.
    async fn send(
        &self,
        counts: PipelineCounts,
        outputs: &mut Outputs,
        lanes: &[mpsc::Sender<InputBatch>],
        input: usize,
    ) {
        if self.counts_input {
            self.metrics.input.inc_by(counts.input);
        }
        self.metrics.output.inc_by(counts.output);
        self.metrics.dropped.inc_by(counts.dropped);
        self.metrics.errors.inc_by(counts.errors);
        for (lane, events) in outputs.lanes.iter_mut().enumerate() {
            if events.is_empty() {
                continue;
            }
            let batch = std::mem::take(events);
            // A lane that stopped (it panicked) drops the batch, which fails its events at
            // their sources; the pipeline then ends with the lane's panic.
            if let Some(lane) = lanes.get(lane) {
                let _ = lane
                    .send(InputBatch {
                        input,
                        events: batch,
                    })
                    .await;
            }
        }
        for (port, events) in outputs.ports.iter_mut().enumerate() {
            if events.is_empty() {
                continue;
            }
            let batch = std::mem::take(events);
            self.send_port(port, batch).await;
        }
    }

    async fn send_port(&self, port: usize, batch: EventBatch) {
        let sender = &self.senders[port];
        // `_unmatched` holds copies of events that also go on to the main output; when
        // nothing reads it, the copies are simply done.
        if port == self.ports.unmatched() && !sender.is_connected() {
            batch
                .into_iter()
                .for_each(|event| event.complete(tb_event::AckStatus::Delivered));
            return;
        }
        if port == self.ports.errors() && !sender.is_connected() {
            tracing::warn!(
                pipeline = self.id,
                count = batch.len(),
                "Events failed and nothing reads _errors; they are rejected to their sources."
            );
            reject_unread_errors(batch);
            return;
        }
        // A transform that returns an array can turn one event into very many: send in
        // bounded batches so queue capacities still bound memory. A closed subscriber
        // fails the events, and their sources learn it.
        let mut batch = batch;
        while batch.len() > MAX_BATCH_EVENTS {
            let rest = batch.split_off(MAX_BATCH_EVENTS);
            let _ = sender.send(batch).await;
            batch = rest;
        }
        let _ = sender.send(batch).await;
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
