//! Reading a stream through a consumer group: `XREADGROUP`, `XACK` once an entry's events
//! are acknowledged, `XAUTOCLAIM` of entries left pending too long (by a dead consumer, or
//! errored here).
//!
//! A session first reads this consumer's own pending entries (what it took before a crash
//! or a lost connection), then new ones. What is in flight survives a lost connection: the
//! acknowledgements still arrive and are sent on the next connection, and entries already
//! in flight are not handed on twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tb_event::{AckStatus, KeyString, ObjectMap, Value};

use super::Server;
use crate::core::{
    Backoff, IngestTarget, MessageIn, OutputSender, StreamDecoder, ingest_messages, pause,
};

/// How long one read blocks server side waiting for new entries.
const BLOCK: Duration = Duration::from_secs(2);

/// Why a session ended.
enum End {
    /// Intake stopped and what was in flight is confirmed.
    Stopped,
    /// The connection failed; the next session takes up from the group's state.
    Lost(String),
}

/// Reads `stream` until intake stops, connecting again when a session ends; then finishes
/// the outputs.
pub(super) async fn consume(
    server: &Server,
    stream: &str,
    output: &OutputSender,
    errors: &OutputSender,
) {
    let config = &server.config;
    let mut decoder = server
        .remote
        .message_decoder(config.codec, &config.interceptors);
    let target = server.remote.ingest_target(output, errors);
    let mut group = Group::new(server, stream);
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    while let Some((reader, acker)) = server
        .remote
        .with_backoff(|| open(server, stream), &mut backoff, true)
        .await
    {
        match group.run(reader, acker, &mut decoder, &target).await {
            End::Stopped => return,
            End::Lost(error) => {
                server.remote.report_lost(&error, "connecting again");
                pause(backoff.next_delay(), &server.remote.intake, true).await;
            }
        }
    }
    target.finish_outputs();
}

/// Two connections, one for blocking reads and one for the rest, and the group made
/// (with the stream) if missing.
async fn open(
    server: &Server,
    stream: &str,
) -> Result<(MultiplexedConnection, MultiplexedConnection), String> {
    let reader = server.connection(BLOCK).await?;
    let mut acker = server.connection(Duration::ZERO).await?;
    let start = match server.config.start {
        super::StartFrom::All => "0",
        super::StartFrom::New => "$",
    };
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(&server.config.group)
        .arg(start)
        .arg("MKSTREAM")
        .query_async(&mut acker)
        .await;
    match created {
        Err(error) if error.code() != Some("BUSYGROUP") => Err(format!(
            "cannot create group {} on {}: {}",
            server.config.group,
            stream,
            server.error_text(&error)
        )),
        _ => Ok((reader, acker)),
    }
}

/// An entry whose events' acknowledgement resolved.
type Settled = (String, AckStatus);

/// The consumer's state across sessions.
struct Group<'a> {
    server: &'a Server,
    stream: &'a str,
    /// Entries handed on and not yet settled, by id.
    in_flight: HashSet<String>,
    /// Their acknowledgements.
    pending: FuturesUnordered<BoxFuture<'static, Settled>>,
    /// Settled entries not yet confirmed to Redis.
    settled: Vec<Settled>,
    /// Where `XAUTOCLAIM` goes on from.
    claim_cursor: String,
}

impl<'a> Group<'a> {
    fn new(server: &'a Server, stream: &'a str) -> Self {
        Self {
            server,
            stream,
            in_flight: HashSet::new(),
            pending: FuturesUnordered::new(),
            settled: Vec::new(),
            claim_cursor: "0-0".to_owned(),
        }
    }

    /// Takes entries until intake stops or the connection fails, confirming each as its
    /// events' acknowledgement resolves.
    async fn run(
        &mut self,
        reader: MultiplexedConnection,
        mut acker: MultiplexedConnection,
        decoder: &mut StreamDecoder,
        target: &IngestTarget<'_>,
    ) -> End {
        let config = &self.server.config;
        // This consumer's own pending entries first ("0" and on), then new ones (">").
        let mut backlog = Some("0".to_owned());
        let mut reading: Option<BoxFuture<'static, redis::RedisResult<Vec<StreamId>>>> = None;
        let mut claiming =
            tokio::time::interval((config.claim_idle / 2).max(Duration::from_millis(50)));
        claiming.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let room = self.in_flight.len() < config.max_pending;
            if reading.is_none() && room {
                reading = Some(self.read(reader.clone(), backlog.clone()));
            }
            tokio::select! {
                biased;
                () = target.intake.cancelled() => return self.stop(acker, target).await,
                Some(settled) = self.pending.next(), if !self.pending.is_empty() => {
                    self.gather(settled);
                    if let Err(error) = self.confirm(&mut acker).await {
                        return End::Lost(error);
                    }
                }
                read = async { reading.as_mut().expect("guarded").await }, if reading.is_some() => {
                    reading = None;
                    let entries = match read {
                        Ok(entries) => entries,
                        Err(error) => return End::Lost(self.server.error_text(&error)),
                    };
                    let from_backlog = backlog.is_some();
                    if from_backlog {
                        backlog = entries.last().map(|entry| entry.id.clone());
                    }
                    self.take(entries, from_backlog, decoder, target).await;
                }
                _ = claiming.tick(), if room => match self.claim(&mut acker).await {
                    Ok(entries) => self.take(entries, true, decoder, target).await,
                    Err(error) => return End::Lost(error),
                },
            }
        }
    }

    /// The next read: from `cursor` in this consumer's pending entries, or new entries
    /// (blocking a while) when it is `None`.
    fn read(
        &self,
        mut connection: MultiplexedConnection,
        cursor: Option<String>,
    ) -> BoxFuture<'static, redis::RedisResult<Vec<StreamId>>> {
        let config = &self.server.config;
        let room = config.max_pending.saturating_sub(self.in_flight.len());
        let mut command = redis::cmd("XREADGROUP");
        command
            .arg("GROUP")
            .arg(&config.group)
            .arg(&self.server.consumer)
            .arg("COUNT")
            .arg(config.count.min(room).max(1));
        if cursor.is_none() {
            command.arg("BLOCK").arg(BLOCK.as_millis() as u64);
        }
        command
            .arg("STREAMS")
            .arg(self.stream)
            .arg(cursor.as_deref().unwrap_or(">"));
        async move {
            let reply: Option<StreamReadReply> = command.query_async(&mut connection).await?;
            Ok(reply
                .map(|reply| reply.keys.into_iter().flat_map(|key| key.ids).collect())
                .unwrap_or_default())
        }
        .boxed()
    }

    /// Entries of the group left pending past `claim_idle`, now this consumer's.
    async fn claim(
        &mut self,
        connection: &mut MultiplexedConnection,
    ) -> Result<Vec<StreamId>, String> {
        let config = &self.server.config;
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(self.stream)
            .arg(&config.group)
            .arg(&self.server.consumer)
            .arg(config.claim_idle.as_millis() as u64)
            .arg(&self.claim_cursor)
            .arg("COUNT")
            .arg(config.count)
            .query_async(connection)
            .await
            .map_err(|error| {
                format!(
                    "cannot claim pending entries: {}",
                    self.server.error_text(&error)
                )
            })?;
        self.claim_cursor = reply.next_stream_id;
        Ok(reply.claimed)
    }

    /// Decodes entries not already in flight and hands their events on as one batch.
    async fn take(
        &mut self,
        entries: Vec<StreamId>,
        again: bool,
        decoder: &mut StreamDecoder,
        target: &IngestTarget<'_>,
    ) {
        let config = &self.server.config;
        let fresh: Vec<(String, Vec<u8>, Arc<ObjectMap>)> = entries
            .into_iter()
            .filter(|entry| !self.in_flight.contains(&entry.id))
            .map(|entry| {
                let (payload, fields) = split_entry(&entry, &config.field);
                let meta = self.fields_of(&entry.id, fields, again);
                (entry.id, payload, Arc::new(meta))
            })
            .collect();
        if fresh.is_empty() {
            return;
        }
        if again {
            target.metrics.redelivered.inc_by(fresh.len() as u64);
        }
        let messages: Vec<MessageIn<'_>> = fresh
            .iter()
            .map(|(_, payload, fields)| (payload.as_slice(), Some(fields.clone())))
            .collect();
        let acks = ingest_messages(decoder, &messages, target).await;
        for ((id, _, _), ack) in fresh.into_iter().zip(acks) {
            self.in_flight.insert(id.clone());
            match ack {
                Some(ack) => self
                    .pending
                    .push(async move { (id, ack.wait().await.outcome.status) }.boxed()),
                // Nothing in it to wait for.
                None => self.settled.push((id, AckStatus::Delivered)),
            }
        }
    }

    /// What VRL reads under `%tightbeam` for one entry.
    fn fields_of(&self, id: &str, entry_fields: ObjectMap, again: bool) -> ObjectMap {
        let mut fields = ObjectMap::new();
        fields.insert(KeyString::from("stream"), Value::from(self.stream));
        fields.insert(KeyString::from("id"), Value::from(id));
        fields.insert(
            KeyString::from("group"),
            Value::from(self.server.config.group.as_str()),
        );
        fields.insert(
            KeyString::from("consumer"),
            Value::from(self.server.consumer.as_str()),
        );
        fields.insert(KeyString::from("fields"), Value::Object(entry_fields));
        fields.insert(KeyString::from("redelivered"), Value::from(again));
        fields
    }

    /// Confirms the settled entries: delivered and rejected are acknowledged (rejected ones
    /// copied to the dead-letter stream first); errored ones stay pending, to be claimed
    /// again after `claim_idle`.
    async fn confirm(&mut self, connection: &mut MultiplexedConnection) -> Result<(), String> {
        if self.settled.is_empty() {
            return Ok(());
        }
        let mut acknowledged = Vec::with_capacity(self.settled.len());
        let mut rejected = Vec::new();
        for (id, status) in &self.settled {
            match status {
                AckStatus::Delivered => acknowledged.push(id.as_str()),
                AckStatus::Rejected => {
                    acknowledged.push(id.as_str());
                    rejected.push(id.as_str());
                }
                AckStatus::Errored => {}
            }
        }
        if let (false, Some(dead_letters)) =
            (rejected.is_empty(), &self.server.config.dead_letter_stream)
        {
            dead_letter(
                self.server,
                self.stream,
                connection,
                dead_letters,
                &rejected,
            )
            .await?;
        }
        if !acknowledged.is_empty() {
            let acked: redis::RedisResult<u64> = redis::cmd("XACK")
                .arg(self.stream)
                .arg(&self.server.config.group)
                .arg(&acknowledged)
                .query_async(connection)
                .await;
            acked.map_err(|error| {
                format!(
                    "cannot acknowledge entries: {}",
                    self.server.error_text(&error)
                )
            })?;
        }
        for (id, _) in self.settled.drain(..) {
            self.in_flight.remove(&id);
        }
        Ok(())
    }

    /// At a stop: the outputs are finished, and what is in flight is confirmed as its
    /// events finish.
    async fn stop(&mut self, mut acker: MultiplexedConnection, target: &IngestTarget<'_>) -> End {
        target.finish_outputs();
        let mut confirmed = Ok(());
        while confirmed.is_ok() {
            let Some(settled) = self.pending.next().await else {
                // Entries settled without waiting (nothing in them) are confirmed here too.
                confirmed = self.confirm(&mut acker).await;
                break;
            };
            self.gather(settled);
            confirmed = self.confirm(&mut acker).await;
        }
        if let Err(error) = confirmed {
            tracing::warn!(connector = %self.server.remote.id, %error, "Entries in flight at the stop were not acknowledged; they will be read again.");
        }
        End::Stopped
    }

    /// Takes `first` and every other acknowledgement already resolved, to confirm together.
    fn gather(&mut self, first: Settled) {
        self.settled.push(first);
        while let Some(Some(settled)) = self.pending.next().now_or_never() {
            self.settled.push(settled);
        }
    }
}

/// Appends the rejected entries, with their origin, to `dead_letters`.
async fn dead_letter(
    server: &Server,
    stream: &str,
    connection: &mut MultiplexedConnection,
    dead_letters: &str,
    ids: &[&str],
) -> Result<(), String> {
    let failed = |error: redis::RedisError| {
        format!(
            "cannot move rejected entries to {dead_letters}: {}",
            server.error_text(&error)
        )
    };
    let mut ranges = redis::pipe();
    for id in ids {
        ranges.cmd("XRANGE").arg(stream).arg(*id).arg(*id);
    }
    let found: Vec<redis::streams::StreamRangeReply> =
        ranges.query_async(connection).await.map_err(failed)?;
    let mut appends = redis::pipe();
    for entry in found.into_iter().flat_map(|range| range.ids) {
        let command = appends
            .cmd("XADD")
            .arg(dead_letters)
            .arg("*")
            .arg("source_stream")
            .arg(stream)
            .arg("source_id")
            .arg(&entry.id);
        for (field, value) in &entry.map {
            let value: Vec<u8> = redis::from_redis_value_ref(value).unwrap_or_default();
            command.arg(field).arg(value);
        }
    }
    appends.query_async::<()>(connection).await.map_err(failed)
}

/// An entry's payload (the value of `field`, or all its fields as a JSON object when it
/// has no such field) and its other fields, as text.
fn split_entry(entry: &StreamId, field: &str) -> (Vec<u8>, ObjectMap) {
    let mut others = ObjectMap::new();
    let mut payload = None;
    for (name, value) in &entry.map {
        let bytes: Vec<u8> = redis::from_redis_value_ref(value).unwrap_or_default();
        if name == field {
            payload = Some(bytes);
        } else {
            others.insert(
                KeyString::from(name.as_str()),
                Value::from(String::from_utf8_lossy(&bytes).into_owned()),
            );
        }
    }
    let payload = payload.unwrap_or_else(|| {
        let whole: serde_json::Map<String, serde_json::Value> = others
            .iter()
            .map(|(name, value)| {
                (
                    name.to_string(),
                    serde_json::Value::String(value.to_string_lossy().into_owned()),
                )
            })
            .collect();
        serde_json::to_vec(&whole).unwrap_or_default()
    });
    (payload, others)
}
