//! Sending: each event appended to a stream (`XADD`, trimmed with `MAXLEN ~` when `maxlen`
//! is set) or published to a channel, the stream or channel made from the event. A batch is
//! one pipeline, one round trip; each event is delivered once Redis replied for it. An event
//! is errored when Redis cannot be reached or is busy for now (its source sends it again),
//! rejected when it cannot be sent as it is (no stream in it, cannot be encoded, a key of
//! another type).

use redis::aio::MultiplexedConnection;
use tb_codec::Encoder;
use tb_event::{AckStatus, Event};

use super::Server;
use crate::core::{Backoff, FieldTemplate, InputQueue, complete_events, encode_message};

/// Where events go.
pub(super) enum Target {
    /// `XADD` to the stream the template names.
    Stream(FieldTemplate),
    /// `PUBLISH` to the channel the template names.
    Channel(FieldTemplate),
}

/// Server errors that pass: the same command may succeed later.
const TRANSIENT: &[&str] = &[
    "OOM",
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "MASTERDOWN",
    "READONLY",
    "CLUSTERDOWN",
];

/// Sends what `input` brings until it closes.
pub(super) async fn send(server: &Server, target: &Target, mut input: InputQueue) {
    let config = &server.config;
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let mut encoder = Encoder::new(config.codec, &config.interceptors);
    let mut connection: Option<MultiplexedConnection> = None;
    while let Some(batch) = input.recv().await {
        server.remote.metrics.input.inc_by(batch.len() as u64);
        let mut pipeline = redis::pipe();
        pipeline.ignore_errors();
        let mut sending = Vec::with_capacity(batch.len());
        for event in batch {
            match add_command(server, target, &mut encoder, &event, &mut pipeline) {
                Ok(()) => sending.push(event),
                Err(reason) => {
                    tracing::warn!(connector = %server.remote.id, %reason, "An event cannot be sent as it is; it is rejected.");
                    complete_events(
                        vec![event],
                        AckStatus::Rejected,
                        Some(reason.into()),
                        &server.remote.metrics,
                    );
                }
            }
        }
        if sending.is_empty() {
            continue;
        }
        if connection.is_none() {
            // While stopping, a server that cannot be reached fails the batch back to its
            // sources instead of holding the drain.
            connection = server
                .remote
                .with_backoff(
                    || server.connection(std::time::Duration::ZERO),
                    &mut backoff,
                    true,
                )
                .await;
        }
        let Some(open) = connection.as_mut() else {
            fail(
                server,
                sending,
                &format!("cannot reach {}", server.remote.shown_url),
            );
            continue;
        };
        let replies: redis::RedisResult<Vec<redis::RedisResult<redis::Value>>> =
            pipeline.query_async(open).await;
        match replies {
            Ok(replies) => settle(server, sending, replies),
            Err(error) => {
                let error = server.error_text(&error);
                server.remote.report_lost(&error, "connecting again");
                connection = None;
                fail(
                    server,
                    sending,
                    &format!("the connection was lost: {error}"),
                );
            }
        }
    }
}

/// Adds `event`'s command to `pipeline`, or says why it cannot be sent.
fn add_command(
    server: &Server,
    target: &Target,
    encoder: &mut Encoder,
    event: &Event,
    pipeline: &mut redis::Pipeline,
) -> Result<(), String> {
    let (template, what) = match target {
        Target::Stream(template) => (template, "stream"),
        Target::Channel(template) => (template, "channel"),
    };
    let key = template
        .render(&event.value)
        .map_err(|reason| format!("no {what}: {reason}"))?;
    let body = encode_message(encoder, &event.value)?;
    match target {
        Target::Stream(_) => {
            let command = pipeline.cmd("XADD").arg(key);
            if let Some(maxlen) = server.config.maxlen {
                command.arg("MAXLEN").arg("~").arg(maxlen);
            }
            command.arg("*").arg(&server.config.field).arg(body);
        }
        Target::Channel(_) => {
            pipeline.cmd("PUBLISH").arg(key).arg(body);
        }
    }
    Ok(())
}

/// Completes each event by its reply.
fn settle(server: &Server, events: Vec<Event>, replies: Vec<redis::RedisResult<redis::Value>>) {
    let mut delivered = Vec::with_capacity(events.len());
    let mut replies = replies.into_iter();
    for event in events {
        match replies.next() {
            Some(Ok(_)) => delivered.push(event),
            None => fail(server, vec![event], "Redis sent no reply for it"),
            Some(Err(error)) => {
                let transient = error.code().is_none_or(|code| TRANSIENT.contains(&code));
                let status = match transient {
                    true => AckStatus::Errored,
                    false => AckStatus::Rejected,
                };
                let reason = server.error_text(&error);
                tracing::warn!(connector = %server.remote.id, %reason, "Redis refused an event.");
                complete_events(
                    vec![event],
                    status,
                    Some(reason.into()),
                    &server.remote.metrics,
                );
            }
        }
    }
    complete_events(
        delivered,
        AckStatus::Delivered,
        None,
        &server.remote.metrics,
    );
}

fn fail(server: &Server, events: Vec<Event>, reason: &str) {
    complete_events(
        events,
        AckStatus::Errored,
        Some(reason.into()),
        &server.remote.metrics,
    );
}
