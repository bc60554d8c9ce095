//! Consuming a queue: each message's body is decoded into events; the message is confirmed
//! to the broker once they are acknowledged, by the outcome.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use tb_event::{AckStatus, KeyString, ObjectMap, Value};

use super::Broker;
use crate::core::{
    Backoff, ChunkAck, IngestTarget, MAX_MESSAGES_PER_BATCH, MessageAck, MessageIn, OutputSender,
    StreamDecoder, ingest_messages, take_ready,
};

/// Why a consuming session ended.
enum End {
    /// Intake stopped: every message taken was confirmed.
    Stopped,
    /// The connection or channel failed; messages not yet confirmed come again.
    Lost(String),
}

/// Consumes `queue` until intake stops, reconnecting when the connection is lost; then
/// finishes the outputs.
pub(super) async fn consume(
    broker: &Broker,
    queue: &str,
    output: &OutputSender,
    errors: &OutputSender,
) {
    let config = &broker.config;
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let mut decoder = broker
        .remote
        .message_decoder(config.codec, &config.interceptors);
    let target = broker.remote.ingest_target(output, errors);
    loop {
        let session = broker
            .remote
            .with_backoff(|| open_consumer(broker, queue), &mut backoff, true)
            .await;
        let Some((connection, consumer)) = session else {
            break;
        };
        let end = run_session(consumer, &mut decoder, &target).await;
        match end {
            End::Stopped => {
                // Best effort: the broker requeues whatever a closed connection held.
                let _ = connection.close(200, "stopping".into()).await;
                break;
            }
            End::Lost(error) => {
                broker.remote.report_lost(
                    &error,
                    "connecting again; messages not yet confirmed will be delivered again",
                );
            }
        }
    }
    target.finish_outputs();
}

async fn open_consumer(
    broker: &Broker,
    queue: &str,
) -> Result<(lapin::Connection, lapin::Consumer), String> {
    let (connection, channel) = broker.open("consumer").await?;
    let consuming = async {
        channel
            .basic_qos(broker.config.prefetch, BasicQosOptions::default())
            .await?;
        channel
            .basic_consume(
                queue.into(),
                format!("tightbeam-{}", broker.remote.id.as_str())
                    .as_str()
                    .into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
    };
    let consumer = consuming.await.map_err(|error| {
        format!(
            "cannot consume queue {queue}: {}",
            crate::core::error_chain(&error)
        )
    })?;
    Ok((connection, consumer))
}

/// Takes messages until intake stops or the connection fails, confirming each as its
/// events' acknowledgement resolves (in any order: AMQP confirms by delivery tag).
async fn run_session(
    mut consumer: lapin::Consumer,
    decoder: &mut StreamDecoder,
    target: &IngestTarget<'_>,
) -> End {
    let mut pending = FuturesUnordered::new();
    let end = loop {
        tokio::select! {
            biased;
            () = target.intake.cancelled() => break End::Stopped,
            Some((acker, acknowledged)) = pending.next(), if !pending.is_empty() => {
                if let Err(error) = confirm(&acker, &acknowledged).await {
                    break End::Lost(error);
                }
            }
            delivery = consumer.next() => match delivery {
                Some(Ok(delivery)) => {
                    // What else has already arrived goes on with it, as one batch.
                    let mut deliveries = Vec::new();
                    let mut failed = None;
                    for delivery in take_ready(&mut consumer, Ok(delivery), MAX_MESSAGES_PER_BATCH) {
                        match delivery {
                            Ok(delivery) => deliveries.push(delivery),
                            Err(error) => {
                                failed = Some(crate::core::error_chain(&error));
                                break;
                            }
                        }
                    }
                    match hand_on(deliveries, decoder, target).await {
                        Ok(handed) => pending.extend(handed.into_iter().map(|(acker, ack)| async move { (acker, ack.wait().await) })),
                        Err(error) => break End::Lost(error),
                    }
                    if let Some(error) = failed {
                        break End::Lost(error);
                    }
                }
                Some(Err(error)) => break End::Lost(crate::core::error_chain(&error)),
                None => break End::Lost("the broker cancelled the consumer".to_owned()),
            },
        }
    };
    if matches!(end, End::Stopped) {
        // Events in flight finish and are confirmed before the connection closes.
        while let Some((acker, acknowledged)) = pending.next().await {
            if let Err(error) = confirm(&acker, &acknowledged).await {
                return End::Lost(error);
            }
        }
    }
    end
}

/// Decodes `deliveries` and sends their events on together; each message's confirmation
/// is returned, to be awaited. A message that held no event is acked at once.
async fn hand_on(
    deliveries: Vec<lapin::message::Delivery>,
    decoder: &mut StreamDecoder,
    target: &IngestTarget<'_>,
) -> Result<Vec<(lapin::Acker, MessageAck)>, String> {
    let redelivered = deliveries
        .iter()
        .filter(|delivery| delivery.redelivered)
        .count();
    target.metrics.redelivered.inc_by(redelivered as u64);
    let messages: Vec<MessageIn<'_>> = deliveries
        .iter()
        .map(|delivery| (&delivery.data[..], Some(Arc::new(fields_of(delivery)))))
        .collect();
    let acks = ingest_messages(decoder, &messages, target).await;
    drop(messages);
    let mut handed = Vec::with_capacity(acks.len());
    for (delivery, ack) in deliveries.into_iter().zip(acks) {
        let acker = delivery.acker;
        match ack {
            Some(ack) => handed.push((acker, ack)),
            None => {
                acker
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(|error| crate::core::error_chain(&error))?;
            }
        }
    }
    Ok(handed)
}

/// Tells the broker how a message ended.
async fn confirm(acker: &lapin::Acker, acknowledged: &ChunkAck) -> Result<(), String> {
    let confirmed = match acknowledged.outcome.status {
        AckStatus::Delivered => acker.ack(BasicAckOptions::default()).await,
        AckStatus::Errored => {
            acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await
        }
        AckStatus::Rejected => acker.reject(BasicRejectOptions { requeue: false }).await,
    };
    confirmed
        .map(drop)
        .map_err(|error| crate::core::error_chain(&error))
}

/// What VRL reads under `%tightbeam` for one message: `exchange`, `routing_key`,
/// `redelivered`, `headers`, and the properties that are set (`message_id`,
/// `correlation_id`, `reply_to`, `content_type`).
fn fields_of(delivery: &lapin::message::Delivery) -> ObjectMap {
    let mut fields = ObjectMap::new();
    fields.insert(
        KeyString::from("exchange"),
        Value::from(delivery.exchange.as_str()),
    );
    fields.insert(
        KeyString::from("routing_key"),
        Value::from(delivery.routing_key.as_str()),
    );
    fields.insert(
        KeyString::from("redelivered"),
        Value::from(delivery.redelivered),
    );
    let properties = &delivery.properties;
    for (name, value) in [
        ("message_id", properties.message_id()),
        ("correlation_id", properties.correlation_id()),
        ("reply_to", properties.reply_to()),
        ("content_type", properties.content_type()),
    ] {
        if let Some(value) = value {
            fields.insert(KeyString::from(name), Value::from(value.as_str()));
        }
    }
    if let Some(headers) = properties.headers() {
        let headers: ObjectMap = headers
            .inner()
            .iter()
            .filter_map(|(name, value)| {
                header_value(value).map(|value| (KeyString::from(name.as_str()), value))
            })
            .collect();
        fields.insert(KeyString::from("headers"), Value::Object(headers));
    }
    fields
}

/// A header's value as VRL sees it; tables and arrays are left out.
fn header_value(value: &AMQPValue) -> Option<Value> {
    Some(match value {
        AMQPValue::LongString(text) => {
            Value::from(String::from_utf8_lossy(text.as_bytes()).into_owned())
        }
        AMQPValue::ShortString(text) => Value::from(text.as_str()),
        AMQPValue::Boolean(flag) => Value::from(*flag),
        AMQPValue::ShortShortInt(number) => Value::from(i64::from(*number)),
        AMQPValue::ShortShortUInt(number) => Value::from(i64::from(*number)),
        AMQPValue::ShortInt(number) => Value::from(i64::from(*number)),
        AMQPValue::ShortUInt(number) => Value::from(i64::from(*number)),
        AMQPValue::LongInt(number) => Value::from(i64::from(*number)),
        AMQPValue::LongUInt(number) => Value::from(i64::from(*number)),
        AMQPValue::LongLongInt(number) => Value::from(*number),
        _ => return None,
    })
}
