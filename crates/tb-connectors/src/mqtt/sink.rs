//! Publishing: each event one message to a topic made from it. At QoS 1 an event is
//! delivered once the broker's PUBACK for it arrives; at QoS 0 once it is written. An event
//! is errored when the connection fails before that (its source sends it again; the
//! connection is made anew, with a clean session, so nothing is sent twice by the client),
//! rejected when it cannot be sent as it is (no topic in it, cannot be encoded).

use std::collections::{HashMap, VecDeque};

use rumqttc::{Event, Outgoing, Packet};
use tb_codec::Encoder;
use tb_event::{AckStatus, Event as TbEvent};

use super::{Broker, Session, SessionKind, qos_of};
use crate::core::{Backoff, FieldTemplate, InputQueue, complete_events, encode_message};

/// Messages published and not yet acknowledged by the broker, at most.
const MAX_IN_FLIGHT: usize = 1_024;

/// Events whose messages are on their way.
#[derive(Default)]
struct InFlight {
    /// Queued for the event loop, in order; it numbers them as it writes them.
    queued: VecDeque<TbEvent>,
    /// Written at QoS 1, by packet id, awaiting their PUBACK.
    written: HashMap<u16, TbEvent>,
}

impl InFlight {
    fn len(&self) -> usize {
        self.queued.len() + self.written.len()
    }

    /// Fails every event in flight: the connection is gone.
    fn fail_all(&mut self, broker: &Broker, reason: &str) {
        let events: Vec<TbEvent> = self
            .queued
            .drain(..)
            .chain(self.written.drain().map(|(_, event)| event))
            .collect();
        complete_events(
            events,
            AckStatus::Errored,
            Some(reason.into()),
            &broker.remote.metrics,
        );
    }

    /// Follows what the event loop did: a message written, a PUBACK received.
    fn observe(&mut self, broker: &Broker, event: &Event) {
        match event {
            Event::Outgoing(Outgoing::Publish(packet_id)) => {
                let Some(published) = self.queued.pop_front() else {
                    return;
                };
                if *packet_id == 0 {
                    complete_events(
                        vec![published],
                        AckStatus::Delivered,
                        None,
                        &broker.remote.metrics,
                    );
                } else {
                    self.written.insert(*packet_id, published);
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(published) = self.written.remove(&ack.pkid) {
                    complete_events(
                        vec![published],
                        AckStatus::Delivered,
                        None,
                        &broker.remote.metrics,
                    );
                }
            }
            _ => {}
        }
    }
}

/// Publishes what `input` brings until it closes.
pub(super) async fn publish(broker: &Broker, topic: &FieldTemplate, mut input: InputQueue) {
    let config = &broker.config;
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let kind = SessionKind {
        client_id: format!("{}-pub", broker.client_id),
        persistent: false,
        manual_acks: false,
        capacity: MAX_IN_FLIGHT + 16,
    };
    // Checked at build.
    let qos = qos_of("publish_qos", config.publish_qos).unwrap_or(rumqttc::QoS::AtLeastOnce);
    let mut encoder = Encoder::new(config.codec, &config.interceptors);
    let mut session: Option<Session> = None;
    let mut in_flight = InFlight::default();
    loop {
        let batch = tokio::select! {
            biased;
            event = async { session.as_mut().map(|(_, eventloop)| eventloop) .expect("guarded").poll().await }, if session.is_some() => {
                match event {
                    Ok(event) => in_flight.observe(broker, &event),
                    Err(error) => {
                        let error = crate::core::error_chain(&error);
                        broker.remote.report_lost(&error, "the events in flight are errored; connecting again");
                        in_flight.fail_all(broker, &format!("the connection was lost: {error}"));
                        session = None;
                    }
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
            session = broker.connect(&kind, &mut backoff).await;
        }
        let Some((client, _)) = &session else {
            complete_events(
                batch,
                AckStatus::Errored,
                Some(format!("cannot reach {}", broker.remote.shown_url).into()),
                &broker.remote.metrics,
            );
            continue;
        };
        for event in batch {
            let message = topic
                .render(&event.value)
                .map_err(|reason| format!("no topic: {reason}"))
                .and_then(|topic| Ok((topic, encode_message(&mut encoder, &event.value)?)));
            let (topic, body) = match message {
                Ok(message) => message,
                Err(reason) => {
                    tracing::warn!(connector = %broker.remote.id, %reason, "An event cannot be published as it is; it is rejected.");
                    complete_events(
                        vec![event],
                        AckStatus::Rejected,
                        Some(reason.into()),
                        &broker.remote.metrics,
                    );
                    continue;
                }
            };
            match client.try_publish(topic, qos, config.retain, body) {
                Ok(()) => in_flight.queued.push_back(event),
                Err(error) => complete_events(
                    vec![event],
                    AckStatus::Errored,
                    Some(crate::core::error_chain(&error).into()),
                    &broker.remote.metrics,
                ),
            }
        }
    }
    if let Some((client, mut eventloop)) = session {
        finish(broker, &client, &mut eventloop, &mut in_flight).await;
    }
}

/// At the end of input: waits (a while) for the acknowledgements in flight, then
/// disconnects.
async fn finish(
    broker: &Broker,
    client: &rumqttc::AsyncClient,
    eventloop: &mut rumqttc::EventLoop,
    in_flight: &mut InFlight,
) {
    let settled = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while in_flight.len() > 0 {
            match eventloop.poll().await {
                Ok(event) => in_flight.observe(broker, &event),
                Err(error) => return Err(crate::core::error_chain(&error)),
            }
        }
        Ok(())
    })
    .await;
    match settled {
        Ok(Ok(())) => {}
        Ok(Err(error)) => in_flight.fail_all(broker, &format!("the connection was lost: {error}")),
        Err(_) => in_flight.fail_all(broker, "the broker did not acknowledge in time"),
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), eventloop.poll()).await;
}
