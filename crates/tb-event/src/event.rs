//! The event itself and its metadata.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use vrl::value::{KeyString, ObjectMap, Value};

use crate::ack::{AckHandle, AckStatus};
use crate::ids::{ComponentId, EventId, StreamId};

/// Events travel in batches, so channel, acknowledgement and metric costs are paid per batch.
pub type EventBatch = Vec<Event>;

/// Where an event came from, readable in VRL as `%tightbeam`.
#[derive(Clone, Debug)]
pub struct EventMeta {
    /// Connector, stream and sequence number.
    pub id: EventId,
    /// When the connector received the bytes the event was decoded from.
    pub received_at: DateTime<Utc>,
    /// Connector-specific fields (HTTP method, path, headers, remote address...), shared by
    /// every event of one stream or request.
    pub fields: Option<Arc<ObjectMap>>,
}

impl EventMeta {
    /// Metadata for an event born at `connector` on `stream` with sequence `seq`.
    pub fn new(connector: ComponentId, stream: StreamId, seq: u64) -> Self {
        Self {
            id: EventId {
                connector,
                stream,
                seq,
            },
            received_at: Utc::now(),
            fields: None,
        }
    }

    /// The metadata as VRL sees it under `%tightbeam`.
    pub fn to_vrl_metadata(&self) -> Value {
        let mut tightbeam = ObjectMap::new();
        let mut id = ObjectMap::new();
        id.insert(
            KeyString::from("connector"),
            Value::from(self.id.connector.as_str()),
        );
        id.insert(KeyString::from("stream_id"), Value::from(self.id.stream.0));
        id.insert(KeyString::from("seq"), Value::from(self.id.seq));
        tightbeam.insert(KeyString::from("id"), Value::Object(id));
        tightbeam.insert(
            KeyString::from("connector"),
            Value::from(self.id.connector.as_str()),
        );
        tightbeam.insert(KeyString::from("stream_id"), Value::from(self.id.stream.0));
        tightbeam.insert(
            KeyString::from("received_at"),
            Value::from(self.received_at),
        );
        if let Some(fields) = &self.fields {
            for (key, value) in fields.iter() {
                tightbeam.insert(key.clone(), value.clone());
            }
        }
        let mut root = ObjectMap::new();
        root.insert(KeyString::from("tightbeam"), Value::Object(tightbeam));
        Value::Object(root)
    }
}

/// One event: a value, where it came from, and the acknowledgement it owes its source.
///
/// Dropping an event without [`Event::complete`] counts as a failure at its source.
#[derive(Debug)]
pub struct Event {
    /// The structured payload VRL runs on.
    pub value: Value,
    /// Origin and arrival metadata.
    pub meta: EventMeta,
    ack: AckHandle,
}

impl Event {
    /// Makes an event.
    pub fn new(value: Value, meta: EventMeta, ack: AckHandle) -> Self {
        Self { value, meta, ack }
    }

    /// Records this copy's outcome with its source.
    pub fn complete(self, status: AckStatus) {
        self.ack.complete(status);
    }

    /// Records this copy's outcome with its source, saying why.
    pub fn complete_with(self, status: AckStatus, reason: impl Into<Arc<str>>) {
        self.ack.complete_with(status, Some(reason.into()));
    }

    /// The acknowledgement this event owes its source.
    pub fn ack(&self) -> &AckHandle {
        &self.ack
    }

    /// A copy for fan-out: the value is cloned and the source waits for both copies.
    pub fn fork(&self) -> Self {
        Self {
            value: self.value.clone(),
            meta: self.meta.clone(),
            ack: self.ack.clone(),
        }
    }

    /// Splits the event, for sinks that complete the acknowledgement later.
    pub fn into_parts(self) -> (Value, EventMeta, AckHandle) {
        (self.value, self.meta, self.ack)
    }

    /// Whether the event was born on `stream` of `connector`: replies use this to go home.
    pub fn is_from(&self, connector: &ComponentId) -> bool {
        &self.meta.id.connector == connector
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::Acknowledgement;

    #[tokio::test]
    async fn forked_event_needs_both_copies_completed() {
        let (handle, receipt) = Acknowledgement::new_unit();
        let meta = EventMeta::new(ComponentId::new("src"), StreamId(1), 0);
        let event = Event::new(Value::from(1), meta, handle);
        let copy = event.fork();
        event.complete(AckStatus::Delivered);
        drop(copy);
        assert_eq!(receipt.wait().await.status, AckStatus::Errored);
    }

    #[test]
    fn vrl_metadata_exposes_id_and_connector_fields() {
        let mut fields = ObjectMap::new();
        fields.insert(KeyString::from("method"), Value::from("POST"));
        let mut meta = EventMeta::new(ComponentId::new("web"), StreamId(7), 3);
        meta.fields = Some(Arc::new(fields));
        let value = meta.to_vrl_metadata();
        let tightbeam = value
            .as_object()
            .and_then(|root| root.get("tightbeam"))
            .and_then(Value::as_object)
            .expect("tightbeam object");
        assert_eq!(tightbeam.get("connector"), Some(&Value::from("web")));
        assert_eq!(tightbeam.get("stream_id"), Some(&Value::from(7)));
        assert_eq!(tightbeam.get("method"), Some(&Value::from("POST")));
        let id = tightbeam.get("id").and_then(Value::as_object).expect("id");
        assert_eq!(id.get("seq"), Some(&Value::from(3)));
    }
}
