//! Subscribing: each message's payload is decoded into events; at QoS 1 its PUBACK is sent
//! once they are acknowledged, in the order the messages came.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, Publish, SubscribeFilter};
use tb_event::{AckStatus, KeyString, ObjectMap, Value};

use super::{Broker, SessionKind, qos_of};
use crate::core::{Backoff, IngestTarget, OutputSender, StreamDecoder, ingest_messages, pause};

/// Requests (PUBACKs, the subscription) queued at most.
const CAPACITY: usize = 1_024;

/// Why a session ended.
enum End {
    /// Intake stopped: every message taken was acknowledged or left for the broker.
    Stopped,
    /// The connection failed, or a message's events errored: what was not acknowledged
    /// comes again on the next session.
    Lost(String),
}

/// Subscribes until intake stops, connecting again when a session ends; then finishes the
/// outputs.
pub(super) async fn subscribe(broker: &Broker, output: &OutputSender, errors: &OutputSender) {
    let config = &broker.config;
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let mut decoder = broker
        .remote
        .message_decoder(config.codec, &config.interceptors);
    let target = broker.remote.ingest_target(output, errors);
    let kind = SessionKind {
        client_id: broker.client_id.clone(),
        persistent: config.persistent_session,
        manual_acks: true,
        capacity: CAPACITY,
    };
    // Checked at build.
    let qos = qos_of("qos", config.qos).unwrap_or(rumqttc::QoS::AtLeastOnce);
    let filters: Vec<SubscribeFilter> = config
        .topics
        .iter()
        .map(|topic| SubscribeFilter::new(topic.clone(), qos))
        .collect();
    while let Some((client, eventloop)) = broker.connect(&kind, &mut backoff).await {
        if let Err(error) = client.subscribe_many(filters.clone()).await {
            broker.remote.report_lost(
                &crate::core::error_chain(&error),
                "connecting again; messages not yet acknowledged will be delivered again",
            );
            continue;
        }
        match run_session(broker, client, eventloop, &mut decoder, &target).await {
            End::Stopped => break,
            End::Lost(error) => {
                broker.remote.report_lost(
                    &error,
                    "connecting again; messages not yet acknowledged will be delivered again",
                );
                pause(backoff.next_delay(), &broker.remote.intake, true).await;
            }
        }
    }
    target.finish_outputs();
}

/// Takes messages until intake stops or the session ends, acknowledging each (in order) as
/// its events' acknowledgement resolves.
async fn run_session(
    broker: &Broker,
    client: AsyncClient,
    mut eventloop: EventLoop,
    decoder: &mut StreamDecoder,
    target: &IngestTarget<'_>,
) -> End {
    let mut pending = FuturesOrdered::new();
    let end = loop {
        tokio::select! {
            biased;
            () = target.intake.cancelled() => break End::Stopped,
            Some((publish, acknowledged)) = pending.next(), if !pending.is_empty() => {
                if let Err(error) = acknowledge(&mut eventloop, publish, acknowledged).await {
                    break End::Lost(error);
                }
            }
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if publish.dup {
                        target.metrics.redelivered.inc();
                    }
                    let fields = Arc::new(fields_of(&publish));
                    let acks = ingest_messages(decoder, &[(&publish.payload[..], Some(fields))], target).await;
                    let acknowledgement = acks.into_iter().next().flatten();
                    pending.push_back(async move {
                        let status = match acknowledgement {
                            Some(ack) => ack.wait().await.outcome.status,
                            // Nothing in it to wait for.
                            None => AckStatus::Delivered,
                        };
                        (publish, status)
                    });
                }
                Ok(_) => {}
                Err(error) => break End::Lost(crate::core::error_chain(&error)),
            },
        }
    };
    if matches!(end, End::Stopped) {
        return finish(broker, client, eventloop, pending).await;
    }
    end
}

/// At a stop: acknowledges the messages in flight as their events finish (the event loop
/// keeps running to carry the PUBACKs), then disconnects.
async fn finish(
    broker: &Broker,
    client: AsyncClient,
    mut eventloop: EventLoop,
    mut pending: FuturesOrdered<impl Future<Output = (Publish, AckStatus)>>,
) -> End {
    while !pending.is_empty() {
        tokio::select! {
            Some((publish, status)) = pending.next() => {
                if let Err(error) = acknowledge(&mut eventloop, publish, status).await {
                    return End::Lost(error);
                }
            }
            event = eventloop.poll() => {
                if let Err(error) = event {
                    return End::Lost(crate::core::error_chain(&error));
                }
            }
        }
    }
    let _ = client.disconnect().await;
    let flushed = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Ok(event) = eventloop.poll().await {
            if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
    if flushed.is_err() {
        tracing::debug!(connector = %broker.remote.id, "The MQTT disconnect was not sent in time.");
    }
    End::Stopped
}

/// Sends a message's PUBACK by its events' outcome: delivered or rejected acknowledge it;
/// errored ends the session instead, so the broker delivers it again.
///
/// The PUBACK is written to the connection here, not queued through the client: rumqttc's
/// event loop hands out the incoming messages it has buffered before it takes a queued
/// request, so under a steady stream queued PUBACKs lagged by hundreds, and Mosquitto
/// (2.0.11) went on sending until its queue for the client overflowed and dropped messages.
async fn acknowledge(
    eventloop: &mut EventLoop,
    publish: Publish,
    status: AckStatus,
) -> Result<(), String> {
    if status == AckStatus::Errored {
        return Err(format!(
            "a message on {} was not delivered; reconnecting so the broker delivers it again",
            publish.topic
        ));
    }
    if publish.qos == rumqttc::QoS::AtMostOnce {
        return Ok(());
    }
    let network = eventloop
        .network
        .as_mut()
        .ok_or_else(|| "the connection is gone".to_owned())?;
    let written = async {
        network
            .write(Packet::PubAck(rumqttc::PubAck::new(publish.pkid)))
            .await?;
        network.flush().await
    };
    written
        .await
        .map_err(|error| crate::core::error_chain(&error))
}

/// What VRL reads under `%tightbeam` for one message: `topic`, `qos`, `retain`, and `dup`
/// (the broker delivers it again).
fn fields_of(publish: &Publish) -> ObjectMap {
    let mut fields = ObjectMap::new();
    fields.insert(
        KeyString::from("topic"),
        Value::from(publish.topic.as_str()),
    );
    fields.insert(KeyString::from("qos"), Value::from(publish.qos as i64));
    fields.insert(KeyString::from("retain"), Value::from(publish.retain));
    fields.insert(KeyString::from("dup"), Value::from(publish.dup));
    fields
}
