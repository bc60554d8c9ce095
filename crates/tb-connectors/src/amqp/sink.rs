//! Publishing: each event one message to `exchange`, its routing key from the event; an
//! event is delivered once the broker confirms its message (publisher confirms), errored when
//! the broker refuses it or the connection fails (its source sends it again), rejected when
//! it cannot be sent as it is (no routing key in it, cannot be encoded, routed to no queue).
//!
//! Confirms are awaited while the next batches are published, up to [`MAX_IN_FLIGHT`]
//! messages: waiting for each batch's confirms before sending the next would cost a round
//! trip to the broker per batch.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation, PublisherConfirm};
use tb_codec::Encoder;
use tb_event::{AckStatus, Event};

use super::Broker;
use crate::core::{Backoff, FieldTemplate, InputQueue, complete_events};

/// Messages published and not yet confirmed, at most.
const MAX_IN_FLIGHT: usize = 4_096;

/// Publishes what `input` brings until it closes.
pub(super) async fn publish(broker: &Broker, routing_key: &FieldTemplate, mut input: InputQueue) {
    let config = &broker.config;
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let mut session: Option<Session> = None;
    let mut sessions_opened = 0u64;
    let mut encoder = Encoder::new(config.codec, &config.interceptors);
    let properties = if config.persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    }
    .with_content_type(encoder.content_type().into());
    let mut in_flight = FuturesUnordered::new();
    loop {
        let batch = tokio::select! {
            biased;
            Some(confirmed) = in_flight.next(), if !in_flight.is_empty() => {
                let Confirmed { session: of_session, lost } = settle(broker, confirmed);
                if let Some(error) = lost
                    && session.as_ref().is_some_and(|session| session.number == of_session)
                {
                    session = None;
                    broker
                .remote
                .report_lost(&error, "its events are errored; connecting again");
                }
                continue;
            }
            batch = input.recv(), if in_flight.len() < MAX_IN_FLIGHT => match batch {
                Some(batch) => batch,
                None => break,
            },
        };
        broker.remote.metrics.input.inc_by(batch.len() as u64);
        if session.is_none() {
            // While stopping, a broker that cannot be reached fails the batch back to its
            // sources instead of holding the drain.
            session = broker
                .remote
                .with_backoff(|| open_publisher(broker), &mut backoff, true)
                .await
                .map(|(connection, channel)| {
                    sessions_opened += 1;
                    Session {
                        connection,
                        channel,
                        number: sessions_opened,
                    }
                });
        }
        let Some(open) = &session else {
            complete_events(
                batch,
                AckStatus::Errored,
                Some(format!("cannot reach {}", broker.remote.shown_url).into()),
                &broker.remote.metrics,
            );
            continue;
        };
        let number = open.number;
        let (published, sent) = Publisher {
            broker,
            session: open,
            routing_key,
            properties: &properties,
        }
        .send(batch, &mut encoder)
        .await;
        in_flight.extend(
            published
                .into_iter()
                .map(|(event, key, confirm)| awaited(event, key, number, confirm)),
        );
        if let Err(error) = sent {
            broker
                .remote
                .report_lost(&error, "its events are errored; connecting again");
            session = None;
        }
    }
    while let Some(confirmed) = in_flight.next().await {
        settle(broker, confirmed);
    }
    if let Some(session) = session {
        let _ = session.connection.close(200, "stopping".into()).await;
    }
}

async fn open_publisher(broker: &Broker) -> Result<(lapin::Connection, lapin::Channel), String> {
    let (connection, channel) = broker.open("publisher").await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|error| crate::core::error_chain(&error))?;
    Ok((connection, channel))
}

/// A connection with confirms on, numbered so a confirm that failed on an old one does not
/// close its successor.
struct Session {
    connection: lapin::Connection,
    channel: lapin::Channel,
    number: u64,
}

/// A published message whose confirm arrived.
struct Published {
    event: Event,
    routing_key: String,
    session: u64,
    confirmation: lapin::Result<Confirmation>,
}

/// What settling a confirm tells the publishing loop.
struct Confirmed {
    session: u64,
    /// The connection failed.
    lost: Option<String>,
}

/// Completes a published message's event by its confirm.
fn settle(broker: &Broker, published: Published) -> Confirmed {
    let Published {
        event,
        routing_key: key,
        session,
        confirmation,
    } = published;
    let mut lost = None;
    let (status, reason) = match confirmation {
        Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => (AckStatus::Delivered, None),
        Ok(Confirmation::Ack(Some(_returned))) => {
            tracing::warn!(connector = %broker.remote.id, exchange = %broker.config.exchange, routing_key = %key, "A message was routed to no queue; its event is rejected.");
            (
                AckStatus::Rejected,
                Some(format!(
                    "routed to no queue: exchange `{}`, routing key `{key}`",
                    broker.config.exchange
                )),
            )
        }
        Ok(Confirmation::Nack(_)) => (
            AckStatus::Errored,
            Some("the broker refused the message (nack)".to_owned()),
        ),
        Err(error) => {
            let error = crate::core::error_chain(&error);
            lost = Some(error.clone());
            (AckStatus::Errored, Some(error))
        }
    };
    complete_events(
        vec![event],
        status,
        reason.map(Into::into),
        &broker.remote.metrics,
    );
    Confirmed { session, lost }
}

struct Publisher<'a> {
    broker: &'a Broker,
    session: &'a Session,
    routing_key: &'a FieldTemplate,
    properties: &'a BasicProperties,
}

impl Publisher<'_> {
    /// Publishes `batch`, returning each published event with its routing key and the
    /// confirm to wait for, and `Err` when the connection failed (the events not published
    /// are errored).
    async fn send(
        &self,
        batch: Vec<Event>,
        encoder: &mut Encoder,
    ) -> (Vec<(Event, String, PublisherConfirm)>, Result<(), String>) {
        let mut published = Vec::with_capacity(batch.len());
        let metrics = &self.broker.remote.metrics;
        let mut body = Vec::new();
        let mut events = batch.into_iter();
        let mut lost = None;
        for event in events.by_ref() {
            let key = match self.routing_key.render(&event.value) {
                Ok(key) => key,
                Err(reason) => {
                    tracing::warn!(connector = %self.broker.remote.id, %reason, "An event gives no routing key; it is rejected.");
                    complete_events(
                        vec![event],
                        AckStatus::Rejected,
                        Some(format!("no routing key: {reason}").into()),
                        metrics,
                    );
                    continue;
                }
            };
            body.clear();
            let encoded = encoder
                .encode(&event.value, &mut body)
                .and_then(|()| encoder.flush(&mut body));
            if let Err(error) = encoded {
                complete_events(
                    vec![event],
                    AckStatus::Rejected,
                    Some(format!("cannot be encoded: {error}").into()),
                    metrics,
                );
                continue;
            }
            let options = BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            };
            match self
                .session
                .channel
                .basic_publish(
                    self.broker.config.exchange.as_str().into(),
                    key.as_str().into(),
                    options,
                    &body,
                    self.properties.clone(),
                )
                .await
            {
                Ok(confirm) => published.push((event, key, confirm)),
                Err(error) => {
                    lost = Some(crate::core::error_chain(&error));
                    complete_events(vec![event], AckStatus::Errored, None, metrics);
                    break;
                }
            }
        }
        let rest: Vec<Event> = events.collect();
        if !rest.is_empty() {
            complete_events(
                rest,
                AckStatus::Errored,
                Some("the connection was lost".into()),
                metrics,
            );
        }
        (published, lost.map_or(Ok(()), Err))
    }
}

async fn awaited(
    event: Event,
    routing_key: String,
    session: u64,
    confirm: PublisherConfirm,
) -> Published {
    Published {
        event,
        routing_key,
        session,
        confirmation: confirm.await,
    }
}
