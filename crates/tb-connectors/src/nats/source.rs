//! Receiving: a core subscription, or a JetStream durable pull consumer. Each message's
//! payload is decoded into events; a JetStream message is confirmed once they are
//! acknowledged, by the outcome. Messages that arrived together are decoded and sent on as
//! one batch.

use std::sync::Arc;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use tb_event::{AckStatus, KeyString, ObjectMap, Value};

use super::{DeliverFrom, Server};
use crate::core::{
    Backoff, ChunkAck, IngestTarget, MAX_MESSAGES_PER_BATCH, MessageIn, OutputSender,
    StreamDecoder, ingest_messages, take_ready,
};

/// Receives until intake stops, then finishes the outputs.
pub(super) async fn receive(
    server: &Server,
    client: &async_nats::Client,
    output: &OutputSender,
    errors: &OutputSender,
) {
    let config = &server.config;
    let mut decoder = server
        .remote
        .message_decoder(config.codec, &config.interceptors);
    let target = server.remote.ingest_target(output, errors);
    match (&config.subject, &config.stream) {
        (Some(subject), _) => subscribe(server, client, subject, &mut decoder, &target).await,
        (None, Some(stream)) => consume(server, client, stream, &mut decoder, &target).await,
        (None, None) => {}
    }
    target.finish_outputs();
}

/// A received message, whichever way it came: its payload, its `%tightbeam` fields, and how
/// to confirm it (JetStream only).
struct Received {
    payload: bytes::Bytes,
    fields: Arc<ObjectMap>,
    acker: Option<async_nats::jetstream::message::Acker>,
}

/// Core NATS: nothing to confirm, but no more than `max_ack_pending` messages in flight.
async fn subscribe(
    server: &Server,
    client: &async_nats::Client,
    subject: &str,
    decoder: &mut StreamDecoder,
    target: &IngestTarget<'_>,
) {
    let mut backoff = Backoff::new(server.config.reconnect_min, server.config.reconnect_max);
    let subscribing = || async {
        let subscribed = match &server.config.queue_group {
            Some(group) => {
                client
                    .queue_subscribe(subject.to_owned(), group.clone())
                    .await
            }
            None => client.subscribe(subject.to_owned()).await,
        };
        subscribed.map_err(|error| {
            format!(
                "cannot subscribe to {subject}: {}",
                crate::core::error_chain(&error)
            )
        })
    };
    let Some(subscriber) = server
        .remote
        .with_backoff(subscribing, &mut backoff, true)
        .await
    else {
        return;
    };
    let messages = subscriber.map(|message| {
        Ok::<_, String>(Received {
            fields: Arc::new(core_fields(&message)),
            payload: message.payload,
            acker: None,
        })
    });
    run(server, messages, decoder, target).await;
}

/// JetStream: a durable pull consumer, made (or found) again whenever its message stream
/// ends.
async fn consume(
    server: &Server,
    client: &async_nats::Client,
    stream: &str,
    decoder: &mut StreamDecoder,
    target: &IngestTarget<'_>,
) {
    let jetstream = async_nats::jetstream::new(client.clone());
    let mut backoff = Backoff::new(server.config.reconnect_min, server.config.reconnect_max);
    while !server.remote.intake.is_cancelled() {
        let pulling = || pull_messages(server, &jetstream, stream);
        let Some(messages) = server
            .remote
            .with_backoff(pulling, &mut backoff, true)
            .await
        else {
            return;
        };
        let consumer = server.consumer.as_str();
        let messages = messages.map(move |message| match message {
            Ok(message) => {
                let fields = Arc::new(jetstream_fields(&message, stream, consumer));
                let (message, acker) = message.split();
                Ok(Received {
                    payload: message.payload,
                    fields,
                    acker: Some(acker),
                })
            }
            Err(error) => Err(crate::core::error_chain(&error)),
        });
        run(server, messages, decoder, target).await;
    }
}

/// The consumer's message stream, the consumer created first if missing.
async fn pull_messages(
    server: &Server,
    jetstream: &async_nats::jetstream::Context,
    stream: &str,
) -> Result<pull::Stream, String> {
    let config = &server.config;
    let consumer_config = pull::Config {
        durable_name: Some(server.consumer.clone()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_deliver: config.max_deliver,
        max_ack_pending: config.max_ack_pending,
        filter_subject: config.filter_subject.clone().unwrap_or_default(),
        deliver_policy: match config.deliver {
            DeliverFrom::All => DeliverPolicy::All,
            DeliverFrom::New => DeliverPolicy::New,
        },
        ..pull::Config::default()
    };
    let failed = |what: &str, error: &(dyn std::error::Error + 'static)| {
        format!("{what}: {}", crate::core::error_chain(error))
    };
    let stream_handle = jetstream
        .get_stream(stream)
        .await
        .map_err(|error| failed(&format!("cannot open stream {stream}"), &error))?;
    let consumer = stream_handle
        .get_or_create_consumer(&server.consumer, consumer_config)
        .await
        .map_err(|error| {
            failed(
                &format!("cannot open consumer {} on {stream}", server.consumer),
                &error,
            )
        })?;
    let batch = usize::try_from(config.max_ack_pending)
        .unwrap_or(1)
        .min(MAX_MESSAGES_PER_BATCH);
    consumer
        .stream()
        .max_messages_per_batch(batch)
        .messages()
        .await
        .map_err(|error| failed("cannot pull messages", &error))
}

/// Takes messages until intake stops or `messages` ends, confirming each as its events'
/// acknowledgement resolves.
async fn run<S>(
    server: &Server,
    mut messages: S,
    decoder: &mut StreamDecoder,
    target: &IngestTarget<'_>,
) where
    S: Stream<Item = Result<Received, String>> + Unpin,
{
    let max_pending = usize::try_from(server.config.max_ack_pending).unwrap_or(1);
    let mut pending = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            () = target.intake.cancelled() => break,
            Some((acker, acknowledged)) = pending.next(), if !pending.is_empty() => {
                confirm(server, acker, &acknowledged).await;
            }
            message = messages.next(), if pending.len() < max_pending => match message {
                Some(message) => {
                    let mut received = Vec::new();
                    for message in take_ready(&mut messages, message, MAX_MESSAGES_PER_BATCH) {
                        match message {
                            Ok(message) => received.push(message),
                            // A missed heartbeat, a pull the server refused: the stream goes
                            // on (async-nats pulls again), so this is only reported.
                            Err(error) => {
                                tracing::warn!(connector = %server.remote.id, url = %server.remote.shown_url, %error, "NATS consumer error.");
                                server.remote.metrics.errors.inc();
                            }
                        }
                    }
                    let handed = hand_on(server, received, decoder, target).await;
                    pending.extend(handed.into_iter().map(|(acker, ack)| async move { (acker, ack.wait().await) }));
                }
                None => {
                    tracing::warn!(connector = %server.remote.id, url = %server.remote.shown_url, "The NATS message stream ended; opening it again.");
                    break;
                }
            },
        }
    }
    // Events in flight finish and are confirmed before the connection closes.
    while let Some((acker, acknowledged)) = pending.next().await {
        confirm(server, acker, &acknowledged).await;
    }
}

type Acker = Option<async_nats::jetstream::message::Acker>;

/// Decodes `received` and sends their events on together; returns each message's
/// confirmation to wait for. A JetStream message that held no event is acked at once.
async fn hand_on(
    server: &Server,
    received: Vec<Received>,
    decoder: &mut StreamDecoder,
    target: &IngestTarget<'_>,
) -> Vec<(Acker, crate::core::MessageAck)> {
    let redelivered = received
        .iter()
        .filter(|message| message.fields.get("redelivered") == Some(&Value::Boolean(true)))
        .count();
    target.metrics.redelivered.inc_by(redelivered as u64);
    let messages: Vec<MessageIn<'_>> = received
        .iter()
        .map(|message| (&message.payload[..], Some(Arc::clone(&message.fields))))
        .collect();
    let acks = ingest_messages(decoder, &messages, target).await;
    drop(messages);
    let mut handed = Vec::with_capacity(acks.len());
    for (Received { acker, .. }, ack) in received.into_iter().zip(acks) {
        match ack {
            Some(ack) => handed.push((acker, ack)),
            None => {
                if let Some(acker) = acker {
                    send_ack(server, &acker, AckKind::Ack).await;
                }
            }
        }
    }
    handed
}

/// Tells JetStream how a message ended: ack, nak with `nak_delay`, or term.
async fn confirm(server: &Server, acker: Acker, acknowledged: &ChunkAck) {
    let Some(acker) = acker else { return };
    let kind = match acknowledged.outcome.status {
        AckStatus::Delivered => AckKind::Ack,
        AckStatus::Errored => AckKind::Nak(Some(server.config.nak_delay)),
        AckStatus::Rejected => AckKind::Term,
    };
    send_ack(server, &acker, kind).await;
}

/// A lost acknowledgement costs a redelivery after `ack_wait`, never a message: it is
/// logged, not retried.
async fn send_ack(server: &Server, acker: &async_nats::jetstream::message::Acker, kind: AckKind) {
    if let Err(error) = acker.ack_with(kind).await {
        tracing::warn!(connector = %server.remote.id, error = %crate::core::error_chain(&*error), "Could not acknowledge a JetStream message; it will be delivered again.");
    }
}

/// `%tightbeam` of a core message: `subject`, `reply_to` when it is a request, `headers`.
fn core_fields(message: &async_nats::Message) -> ObjectMap {
    let mut fields = ObjectMap::new();
    fields.insert(
        KeyString::from("subject"),
        Value::from(message.subject.as_str()),
    );
    if let Some(reply) = &message.reply {
        fields.insert(KeyString::from("reply_to"), Value::from(reply.as_str()));
    }
    insert_headers(&mut fields, message.headers.as_ref());
    fields
}

/// `%tightbeam` of a JetStream message: `subject`, `stream`, `consumer`, `stream_sequence`,
/// `delivered` (how many times, this one included), `redelivered`, `headers`.
fn jetstream_fields(
    message: &async_nats::jetstream::Message,
    stream: &str,
    consumer: &str,
) -> ObjectMap {
    let mut fields = ObjectMap::new();
    fields.insert(
        KeyString::from("subject"),
        Value::from(message.subject.as_str()),
    );
    fields.insert(KeyString::from("stream"), Value::from(stream));
    fields.insert(KeyString::from("consumer"), Value::from(consumer));
    if let Ok(info) = message.info() {
        fields.insert(
            KeyString::from("stream_sequence"),
            Value::from(i64::try_from(info.stream_sequence).unwrap_or(i64::MAX)),
        );
        fields.insert(KeyString::from("delivered"), Value::from(info.delivered));
        fields.insert(
            KeyString::from("redelivered"),
            Value::from(info.delivered > 1),
        );
    }
    insert_headers(&mut fields, message.headers.as_ref());
    fields
}

/// Headers as `headers.<name>`, each its first value.
fn insert_headers(fields: &mut ObjectMap, headers: Option<&async_nats::HeaderMap>) {
    let Some(headers) = headers else { return };
    let headers: ObjectMap = headers
        .iter()
        .filter_map(|(name, values)| {
            let first: &str = values.first()?.as_ref();
            Some((KeyString::from(name.to_string()), Value::from(first)))
        })
        .collect();
    fields.insert(KeyString::from("headers"), Value::Object(headers));
}
