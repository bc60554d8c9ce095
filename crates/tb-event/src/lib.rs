//! Tightbeam's event model: what flows through every channel of the engine.
//!
//! An [`Event`] is a VRL [`Value`] (so VRL steps run on it without conversion), its
//! [`EventMeta`] (where it came from: connector, stream, sequence number, arrival time and
//! connector-specific fields) and an [`AckHandle`] that tells the source, once every place the
//! event was routed to has finished with it, whether it may confirm the input upstream.
//!
//! The key design choice is strictness about acknowledgement: an event that is dropped without
//! an explicit status counts as *errored*, never as delivered, so a bug means a redelivery
//! rather than a silent loss. This crate does no I/O and knows nothing of tokio's runtime.
#![deny(missing_docs)]

mod ack;
mod event;
mod ids;

pub use ack::{AckHandle, AckOutcome, AckReceipt, AckStatus, Acknowledgement};
pub use event::{Event, EventBatch, EventMeta};
pub use ids::{ComponentId, EventId, StreamId};
pub use vrl::value::{KeyString, ObjectMap, Value};
