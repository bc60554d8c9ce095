//! The common sink loop: encode each batch, write it, then complete its events.

use tb_codec::Encoder;
use tb_event::{AckStatus, Event, EventBatch};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

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
                event.complete(AckStatus::Failed);
            }
        }
    }
    if let Err(error) = encoder.flush(buffer) {
        tracing::warn!(%error, "Encoder could not flush.");
    }
    encoded
}

/// Completes written events as delivered, or failed if the write failed.
pub fn complete_written(events: Vec<Event>, written: bool, metrics: &ConnectorMetrics) {
    let count = events.len() as u64;
    let status = if written {
        metrics.sent.inc_by(count);
        AckStatus::Delivered
    } else {
        metrics.errors.inc_by(count);
        AckStatus::Failed
    };
    events.into_iter().for_each(|event| event.complete(status));
}

/// Writes every batch from `input` to `writer` until the input closes, then ends the
/// encoder's stream. A failed write fails that batch's events and is logged; the loop goes
/// on, so a full disk that frees up resumes delivery.
pub async fn write_batches<W: AsyncWrite + Unpin>(
    mut input: mpsc::Receiver<EventBatch>,
    mut encoder: Encoder,
    mut writer: W,
    metrics: &ConnectorMetrics,
) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(256 * 1024);
    while let Some(batch) = input.recv().await {
        metrics.input.inc_by(batch.len() as u64);
        let events = encode_batch(&mut encoder, batch, &mut buffer, metrics);
        let written = write_all_and_flush(&mut writer, &buffer).await;
        if let Err(error) = &written {
            tracing::error!(%error, "Write failed; the batch is not acknowledged.");
        }
        complete_written(events, written.is_ok(), metrics);
    }
    buffer.clear();
    if encoder.finish(&mut buffer).is_ok() {
        write_all_and_flush(&mut writer, &buffer).await?;
    }
    Ok(())
}

async fn write_all_and_flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

/// Writes one stream's outgoing queue to `writer` until the queue closes: events are encoded
/// and completed once written; raw bytes are written as they are. After a write error the
/// stream is dead: the rest of the queue is failed.
pub async fn write_outgoing<W: AsyncWrite + Unpin>(
    mut outgoing: mpsc::Receiver<super::streams::Outgoing>,
    mut encoder: Encoder,
    mut writer: W,
    metrics: &ConnectorMetrics,
) {
    use super::streams::{Outgoing, fail_outgoing};
    let mut buffer = Vec::new();
    while let Some(item) = outgoing.recv().await {
        buffer.clear();
        let event = match item {
            Outgoing::Raw(bytes) => {
                buffer.extend_from_slice(&bytes);
                None
            }
            Outgoing::Event(event) => {
                let encoded = encoder
                    .encode(&event.value, &mut buffer)
                    .and_then(|()| encoder.flush(&mut buffer));
                if let Err(error) = encoded {
                    tracing::warn!(%error, "Event could not be encoded.");
                    fail_outgoing(Outgoing::Event(event), metrics);
                    continue;
                }
                Some(event)
            }
        };
        let written = write_all_and_flush(&mut writer, &buffer).await;
        if let Some(event) = event {
            complete_written(vec![event], written.is_ok(), metrics);
        }
        if written.is_err() {
            outgoing.close();
            while let Some(item) = outgoing.recv().await {
                fail_outgoing(item, metrics);
            }
            return;
        }
    }
    let _ = writer.shutdown().await;
}
