//! Subscribing to channels and patterns. Redis pub/sub confirms nothing and keeps nothing:
//! each message is decoded and handed on (messages that arrived together as one batch), and
//! what is published while the connection is down is not seen.

use std::sync::Arc;

use futures::StreamExt;
use tb_event::{KeyString, ObjectMap, Value};

use super::Server;
use crate::core::{
    Backoff, MAX_MESSAGES_PER_BATCH, MessageIn, OutputSender, ingest_messages, pause, take_ready,
};

/// Subscribes until intake stops, subscribing again when the connection is lost; then
/// finishes the outputs.
pub(super) async fn subscribe(server: &Server, output: &OutputSender, errors: &OutputSender) {
    let config = &server.config;
    let mut decoder = server
        .remote
        .message_decoder(config.codec, &config.interceptors);
    let target = server.remote.ingest_target(output, errors);
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    while let Some(pubsub) = server
        .remote
        .with_backoff(|| open(server), &mut backoff, true)
        .await
    {
        let mut messages = pubsub.into_on_message();
        loop {
            let first = tokio::select! {
                biased;
                () = server.remote.intake.cancelled() => {
                    target.finish_outputs();
                    return;
                }
                message = messages.next() => message,
            };
            let Some(first) = first else { break };
            let burst = take_ready(&mut messages, first, MAX_MESSAGES_PER_BATCH);
            let fields: Vec<Arc<ObjectMap>> = burst
                .iter()
                .map(|message| Arc::new(fields_of(message)))
                .collect();
            let batch: Vec<MessageIn<'_>> = burst
                .iter()
                .zip(&fields)
                .map(|(message, fields)| (message.get_payload_bytes(), Some(fields.clone())))
                .collect();
            // Nothing to confirm: the acknowledgements are not awaited.
            ingest_messages(&mut decoder, &batch, &target).await;
        }
        server.remote.report_lost(
            "the subscription ended",
            "subscribing again; what is published meanwhile is not seen",
        );
        pause(backoff.next_delay(), &server.remote.intake, true).await;
    }
    target.finish_outputs();
}

/// A connection subscribed to every channel and pattern.
async fn open(server: &Server) -> Result<redis::aio::PubSub, String> {
    let config = &server.config;
    let mut pubsub = server
        .client
        .get_async_pubsub()
        .await
        .map_err(|error| server.error_text(&error))?;
    for channel in &config.channels {
        pubsub.subscribe(channel).await.map_err(|error| {
            format!(
                "cannot subscribe to {channel}: {}",
                server.error_text(&error)
            )
        })?;
    }
    for pattern in &config.patterns {
        pubsub.psubscribe(pattern).await.map_err(|error| {
            format!(
                "cannot subscribe to {pattern}: {}",
                server.error_text(&error)
            )
        })?;
    }
    Ok(pubsub)
}

/// What VRL reads under `%tightbeam` for one message: `channel`, and `pattern` when it
/// came through one.
fn fields_of(message: &redis::Msg) -> ObjectMap {
    let mut fields = ObjectMap::new();
    fields.insert(
        KeyString::from("channel"),
        Value::from(message.get_channel_name()),
    );
    if message.from_pattern()
        && let Ok(pattern) = message.get_pattern::<String>()
    {
        fields.insert(KeyString::from("pattern"), Value::from(pattern));
    }
    fields
}
