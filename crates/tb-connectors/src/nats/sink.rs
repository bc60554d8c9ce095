//! Publishing: each event one message to a subject made from it (a reply to a request this
//! connector received goes to the request's reply subject). Into JetStream, an event is
//! delivered once its publish ack arrives, and those acks are awaited while later batches go
//! out; a core publish is delivered once the server has read it (a flush after each batch).
//! An event is errored when the server cannot be reached or refuses it (its source sends it
//! again), rejected when it cannot be sent as it is (no subject in it, cannot be encoded, no
//! stream takes its subject, too large).

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tb_codec::Encoder;
use tb_event::{AckStatus, Event};

use super::Server;
use crate::core::{FieldTemplate, InputQueue, complete_events, encode_message};

/// JetStream messages published and not yet acknowledged, at most.
const MAX_IN_FLIGHT: usize = 4_096;

/// Publishes what `input` brings until it closes.
pub(super) async fn publish(
    server: &Server,
    client: &async_nats::Client,
    subject: &FieldTemplate,
    mut input: InputQueue,
) {
    let jetstream = async_nats::jetstream::new(client.clone());
    let mut encoder = Encoder::new(server.config.codec, &server.config.interceptors);
    let mut in_flight = FuturesUnordered::new();
    loop {
        let batch = tokio::select! {
            biased;
            Some((event, acked)) = in_flight.next(), if !in_flight.is_empty() => {
                settle(server, event, acked);
                continue;
            }
            batch = input.recv(), if in_flight.len() < MAX_IN_FLIGHT => match batch {
                Some(batch) => batch,
                None => break,
            },
        };
        server.remote.metrics.input.inc_by(batch.len() as u64);
        let mut core_sent = Vec::new();
        for event in batch {
            let message = match message_of(server, subject, &mut encoder, &event) {
                Ok(message) => message,
                Err(reason) => {
                    tracing::warn!(connector = %server.remote.id, %reason, "An event cannot be published as it is; it is rejected.");
                    complete_events(
                        vec![event],
                        AckStatus::Rejected,
                        Some(reason.into()),
                        &server.remote.metrics,
                    );
                    continue;
                }
            };
            if message.core {
                match client.publish(message.subject, message.payload).await {
                    Ok(()) => core_sent.push(event),
                    Err(error) => fail(server, event, &crate::core::error_chain(&error)),
                }
                continue;
            }
            match jetstream.publish(message.subject, message.payload).await {
                Ok(acked) => in_flight.push(async move { (event, acked.await) }),
                Err(error) => settle(server, event, Err(error)),
            }
        }
        if !core_sent.is_empty() {
            match client.flush().await {
                Ok(()) => complete_events(
                    core_sent,
                    AckStatus::Delivered,
                    None,
                    &server.remote.metrics,
                ),
                Err(error) => complete_events(
                    core_sent,
                    AckStatus::Errored,
                    Some(
                        format!(
                            "the server did not confirm reading: {}",
                            crate::core::error_chain(&error)
                        )
                        .into(),
                    ),
                    &server.remote.metrics,
                ),
            }
        }
    }
    while let Some((event, acked)) = in_flight.next().await {
        settle(server, event, acked);
    }
}

/// Fails every event of `input` until it closes: the server was never reached.
pub(super) async fn fail_unreachable(server: &Server, mut input: InputQueue) {
    while let Some(batch) = input.recv().await {
        server.remote.metrics.input.inc_by(batch.len() as u64);
        complete_events(
            batch,
            AckStatus::Errored,
            Some(format!("cannot reach {}", server.remote.shown_url).into()),
            &server.remote.metrics,
        );
    }
}

/// Where an event goes, and what.
struct Outgoing {
    subject: String,
    payload: Bytes,
    /// A core publish (a reply, or `publish_jetstream` off).
    core: bool,
}

/// The message for `event`, or why it cannot be made.
fn message_of(
    server: &Server,
    subject: &FieldTemplate,
    encoder: &mut Encoder,
    event: &Event,
) -> Result<Outgoing, String> {
    let reply_to = event
        .is_from(&server.remote.id)
        .then(|| event.meta.fields.as_ref()?.get("reply_to")?.to_str_lossy())
        .flatten();
    let (subject, core) = match reply_to {
        Some(reply_to) => (reply_to.into_owned(), true),
        _ if server.config.publish_subject.is_empty() => {
            return Err("no reply subject, and no publish_subject to send it to".to_owned());
        }
        _ => match subject.render(&event.value) {
            Ok(subject) => (subject, !server.config.publish_jetstream),
            Err(reason) => return Err(format!("no subject: {reason}")),
        },
    };
    Ok(Outgoing {
        subject,
        payload: Bytes::from(encode_message(encoder, &event.value)?),
        core,
    })
}

/// Completes a JetStream publish by its ack.
fn settle(server: &Server, event: Event, acked: Result<PublishAck, PublishError>) {
    let (status, reason) = match acked {
        Ok(_) => (AckStatus::Delivered, None),
        Err(error) => {
            let status = match error.kind() {
                PublishErrorKind::StreamNotFound | PublishErrorKind::MaxPayloadExceeded => {
                    AckStatus::Rejected
                }
                _ => AckStatus::Errored,
            };
            let reason = crate::core::error_chain(&error);
            tracing::warn!(connector = %server.remote.id, %reason, "JetStream did not take a message.");
            (status, Some(reason.into()))
        }
    };
    complete_events(vec![event], status, reason, &server.remote.metrics);
}

fn fail(server: &Server, event: Event, reason: &str) {
    complete_events(
        vec![event],
        AckStatus::Errored,
        Some(reason.into()),
        &server.remote.metrics,
    );
}
