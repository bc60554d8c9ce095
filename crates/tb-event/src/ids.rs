//! Identifiers: components, streams and events.

use std::fmt;
use std::sync::Arc;

/// The id of a connector or pipeline, as written in the config (`[connectors.<id>]`).
///
/// Cheap to clone: events carry it, so it is a shared string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId(Arc<str>);

impl ComponentId {
    /// Makes an id from its config name.
    pub fn new(name: &str) -> Self {
        Self(Arc::from(name))
    }

    /// The id as written in the config.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// One stream inside a connector: a TCP connection, a WebSocket session, an HTTP request,
/// a file. Unique within its connector for the life of the process.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct StreamId(pub u64);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where an event was born: connector, stream, and its sequence number within that stream.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct EventId {
    /// The connector that received the event from outside.
    pub connector: ComponentId,
    /// The stream inside that connector.
    pub stream: StreamId,
    /// Position of the event within its stream, from 0.
    pub seq: u64,
}
