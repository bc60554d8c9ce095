//! Durable delivery (issue 8): destinations whose actions turn events into jobs in the job
//! store ([`tb_store`]), acknowledged upstream once stored, then loaded in real time or on
//! a schedule, retried with exponential backoff and jitter, chained to other actions on
//! success, failure or discard, and dead-lettered where the API can show and replay them.
//!
//! A [`Destination`] is built (and checked) from its [`DestinationConfig`]; its run has two
//! halves: the intake, which stores one transaction per incoming batch and then
//! acknowledges, and the loader, which claims due jobs under a lease, loads them with at
//! most `concurrency` loads at once (`rate_limit`, the circuit [`Breaker`]), renews their
//! leases while they run, and settles each with its verdict. Only `http` destinations exist
//! so far ([`http`]): Idempotency-Key on every request, Standard Webhooks signatures
//! ([`signing`]) when `signing` is set.

pub mod action;
pub mod breaker;
pub mod config;
mod destination;
pub mod http;
mod metrics;
pub mod postgres;
pub mod retry;
pub mod schedule;
pub mod signing;
pub mod template;
pub mod wrapped;

pub use breaker::{Breaker, CircuitState};
pub use config::{DEFAULT_ACTION, DestinationConfig};
pub use destination::{Destination, DestinationContext};
pub use metrics::DeliveryMetrics;
