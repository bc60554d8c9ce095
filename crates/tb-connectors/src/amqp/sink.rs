//! Publishing: each event one message to `exchange`, its routing key from the event; an
//! event is delivered once the broker confirms its message (publisher confirms), errored when
//! the broker refuses it or the connection fails (its source sends it again), rejected when
//! it cannot be sent as it is (no routing key in it, cannot be encoded, routed to no queue).

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation};
use tb_codec::Encoder;
use tb_event::{AckStatus, Event};

use super::Broker;
use crate::core::{Backoff, FieldTemplate, InputQueue, complete_events, connect_with_backoff};

/// Publishes what `input` brings until it closes.
pub(super) async fn publish(broker: &Broker, routing_key: &FieldTemplate, mut input: InputQueue) {
    let config = &broker.config;
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let mut session: Option<(lapin::Connection, lapin::Channel)> = None;
    let mut encoder = Encoder::new(config.codec, &config.interceptors);
    let properties = if config.persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    }
    .with_content_type(encoder.content_type().into());
    while let Some(batch) = input.recv().await {
        broker.metrics.input.inc_by(batch.len() as u64);
        if session.is_none() {
            // While stopping, a broker that cannot be reached fails the batch back to its
            // sources instead of holding the drain.
            session = connect_with_backoff(
                || open_publisher(broker),
                &mut backoff,
                &broker.intake,
                true,
                &broker.id,
                &broker.shown_url,
                &broker.status,
            )
            .await;
        }
        let Some((_, channel)) = &session else {
            complete_events(
                batch,
                AckStatus::Errored,
                Some(format!("cannot reach {}", broker.shown_url).into()),
                &broker.metrics,
            );
            continue;
        };
        let sent = Publisher {
            broker,
            channel,
            routing_key,
            properties: &properties,
        }
        .send(batch, &mut encoder)
        .await;
        if let Err(error) = sent {
            tracing::warn!(connector = %broker.id, url = %broker.shown_url, %error, "Lost the AMQP connection while publishing; its events are errored.");
            broker.status.set_with_error(
                crate::ComponentStatus::Reconnecting,
                format!("lost the connection to {}: {error}", broker.shown_url),
            );
            session = None;
        }
    }
    if let Some((connection, _)) = session {
        let _ = connection.close(200, "stopping".into()).await;
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

struct Publisher<'a> {
    broker: &'a Broker,
    channel: &'a lapin::Channel,
    routing_key: &'a FieldTemplate,
    properties: &'a BasicProperties,
}

impl Publisher<'_> {
    /// Publishes `batch` and completes each event by its confirm. `Err` when the connection
    /// failed (every event not confirmed is errored).
    async fn send(&self, batch: Vec<Event>, encoder: &mut Encoder) -> Result<(), String> {
        let metrics = &self.broker.metrics;
        let mut confirms = Vec::with_capacity(batch.len());
        let mut body = Vec::new();
        let mut events = batch.into_iter();
        let mut lost = None;
        for event in events.by_ref() {
            let key = match self.routing_key.render(&event.value) {
                Ok(key) => key,
                Err(reason) => {
                    tracing::warn!(connector = %self.broker.id, %reason, "An event gives no routing key; it is rejected.");
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
                Ok(confirm) => confirms.push((event, key, confirm)),
                Err(error) => {
                    lost = Some(crate::core::error_chain(&error));
                    complete_events(vec![event], AckStatus::Errored, None, metrics);
                    break;
                }
            }
        }
        for (event, key, confirm) in confirms {
            let (status, reason) = match confirm.await {
                Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => {
                    (AckStatus::Delivered, None)
                }
                Ok(Confirmation::Ack(Some(_returned))) => {
                    tracing::warn!(connector = %self.broker.id, exchange = %self.broker.config.exchange, routing_key = %key, "A message was routed to no queue; its event is rejected.");
                    (
                        AckStatus::Rejected,
                        Some(format!(
                            "routed to no queue: exchange `{}`, routing key `{key}`",
                            self.broker.config.exchange
                        )),
                    )
                }
                Ok(Confirmation::Nack(_)) => (
                    AckStatus::Errored,
                    Some("the broker refused the message (nack)".to_owned()),
                ),
                Err(error) => {
                    let error = crate::core::error_chain(&error);
                    lost.get_or_insert(error.clone());
                    (AckStatus::Errored, Some(error))
                }
            };
            complete_events(vec![event], status, reason.map(Into::into), metrics);
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
        lost.map_or(Ok(()), Err)
    }
}
