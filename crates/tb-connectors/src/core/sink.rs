//! The common sink loop: encode each batch, write it, then complete its events.

use tb_codec::Encoder;
use tb_event::{AckStatus, Event, EventBatch};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::input::InputQueue;
use super::metrics::ConnectorMetrics;

/// Encodes `batch` into `buffer` (cleared first). Events that cannot be encoded are failed
/// and counted; the rest are returned, to be completed once the bytes are written.
pub fn encode_batch(
    encoder: &mut Encoder,
    batch: EventBatch,
    buffer: &mut Vec<u8>,
    metrics: &ConnectorMetrics,
) -> Vec<Event> {
    buffer.clear();
    let mut encoded = Vec::with_capacity(batch.len());
    for event in batch {
        match encoder.encode(&event.value, buffer) {
            Ok(()) => encoded.push(event),
            Err(error) => {
                tracing::warn!(%error, "Event could not be encoded.");
                metrics.errors.inc();
                event.complete_with(AckStatus::Rejected, format!("cannot be encoded: {error}"));
            }
        }
    }
    if let Err(error) = encoder.flush(buffer) {
        // The buffer may hold a partial frame: nothing in it can be called delivered.
        tracing::warn!(%error, "Encoder could not flush; the batch is failed.");
        complete_written(std::mem::take(&mut encoded), false, metrics);
        buffer.clear();
    }
    encoded
}

/// Completes written events as delivered, or errored (worth retrying) if the write failed.
pub fn complete_written(events: Vec<Event>, written: bool, metrics: &ConnectorMetrics) {
    if written {
        complete_events(events, AckStatus::Delivered, None, metrics);
    } else {
        complete_events(
            events,
            AckStatus::Errored,
            Some(std::sync::Arc::from("the write failed")),
            metrics,
        );
    }
}

/// Completes sent events with one outcome, counting them as sent or as errors.
pub fn complete_events(
    events: Vec<Event>,
    status: AckStatus,
    reason: Option<std::sync::Arc<str>>,
    metrics: &ConnectorMetrics,
) {
    let count = events.len() as u64;
    if status == AckStatus::Delivered {
        metrics.sent.inc_by(count);
    } else {
        metrics.errors.inc_by(count);
    }
    for event in events {
        let (_value, _meta, ack) = event.into_parts();
        ack.complete_with(status, reason.clone());
    }
}

/// Writes every batch from `input` to `writer` until the input closes, then ends the
/// encoder's stream.
///
/// A failed write may have left part of a frame (or of a compressed block) behind, so
/// nothing written after it could be trusted: the sink is dead from then on. That batch
/// and every later one are failed (their sources do not confirm them), and the error is
/// returned once the input closes.
pub async fn write_batches<W: AsyncWrite + Unpin>(
    mut input: InputQueue,
    mut encoder: Encoder,
    mut writer: W,
    metrics: &ConnectorMetrics,
) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(256 * 1024);
    let mut broken: Option<std::io::Error> = None;
    while let Some(batch) = input.recv().await {
        metrics.input.inc_by(batch.len() as u64);
        if broken.is_some() {
            complete_written(batch, false, metrics);
            continue;
        }
        let events = encode_batch(&mut encoder, batch, &mut buffer, metrics);
        let written = write_all_and_flush(&mut writer, &buffer).await;
        if let Err(error) = &written {
            tracing::error!(%error, "Write failed; this output fails every event from now on.");
        }
        complete_written(events, written.is_ok(), metrics);
        broken = written.err();
    }
    if let Some(error) = broken {
        return Err(error);
    }
    buffer.clear();
    if encoder.finish(&mut buffer).is_ok() {
        write_all_and_flush(&mut writer, &buffer).await?;
    }
    Ok(())
}

/// Writes one stream's outgoing queue to `writer` until the queue closes: events are encoded
/// and completed once written. `acks`, when given, carries the stream's latest
/// acknowledgement line, written whenever it changes (only the newest matters: each line
/// covers all before it). A write that fails or stalls past [`STREAM_WRITE_TIMEOUT`] kills
/// the stream: the rest of the queue is failed.
pub async fn write_outgoing<W: AsyncWrite + Unpin>(
    mut outgoing: mpsc::Receiver<Event>,
    mut acks: Option<tokio::sync::watch::Receiver<bytes::Bytes>>,
    mut encoder: Encoder,
    mut writer: W,
    metrics: &ConnectorMetrics,
) {
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        let event = tokio::select! {
            biased;
            event = outgoing.recv() => match event {
                Some(event) => event,
                None => break,
            },
            changed = changed_ack(&mut acks), if acks.is_some() => {
                match changed {
                    Some(line) => buffer.extend_from_slice(&line),
                    None => acks = None,
                }
                if buffer.is_empty() || write_with_timeout(&mut writer, &buffer).await.is_ok() {
                    continue;
                }
                break fail_rest(&mut outgoing, metrics).await;
            }
        };
        let encoded = encoder
            .encode(&event.value, &mut buffer)
            .and_then(|()| encoder.flush(&mut buffer));
        if let Err(error) = encoded {
            tracing::warn!(%error, "Event could not be encoded.");
            super::streams::fail_outgoing(event, metrics);
            continue;
        }
        let written = write_with_timeout(&mut writer, &buffer).await;
        complete_written(vec![event], written.is_ok(), metrics);
        if written.is_err() {
            return fail_rest(&mut outgoing, metrics).await;
        }
    }
    // The stream is closing after its last acknowledgement: make sure the client sees it.
    if let Some(mut acks) = acks
        && acks.has_changed().unwrap_or(false)
    {
        let line = acks.borrow_and_update().clone();
        let _ = write_with_timeout(&mut writer, &line).await;
    }
    let _ = writer.shutdown().await;
}

/// How long one write to a stream may take before the peer counts as gone.
pub const STREAM_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn write_with_timeout<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    match tokio::time::timeout(STREAM_WRITE_TIMEOUT, write_all_and_flush(writer, bytes)).await {
        Ok(written) => written,
        Err(_elapsed) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "peer stopped reading",
        )),
    }
}

async fn changed_ack(
    acks: &mut Option<tokio::sync::watch::Receiver<bytes::Bytes>>,
) -> Option<bytes::Bytes> {
    let acks = acks.as_mut()?;
    acks.changed().await.ok()?;
    Some(acks.borrow_and_update().clone())
}

async fn fail_rest(outgoing: &mut mpsc::Receiver<Event>, metrics: &ConnectorMetrics) {
    outgoing.close();
    while let Some(event) = outgoing.recv().await {
        super::streams::fail_outgoing(event, metrics);
    }
}

async fn write_all_and_flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}
