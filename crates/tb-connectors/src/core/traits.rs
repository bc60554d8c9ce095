//! The two traits the runtime drives every connector by.

use std::future::Future;
use std::pin::Pin;

use tb_event::ComponentId;

use super::context::ConnectorContext;
use super::errors::{BuildError, ConnectorError};

/// A running connector: resolves when the connector has finished (its input drained, its
/// intake stopped and every in-flight event acknowledged).
pub type RunningConnector = Pin<Box<dyn Future<Output = Result<(), ConnectorError>> + Send>>;

/// Starting a connector: resolves once its sockets are bound and files opened, so errors such
/// as a port in use are reported at start, before any event flows.
pub type StartFuture =
    Pin<Box<dyn Future<Output = Result<RunningConnector, ConnectorError>> + Send>>;

/// The start of a connector that acquires nothing before it runs (a broker client that
/// connects, with backoff, as it runs): `run` is its run future.
pub fn start_running<F>(run: F) -> StartFuture
where
    F: Future<Output = Result<(), ConnectorError>> + Send + 'static,
{
    Box::pin(async move {
        let running: RunningConnector = Box::pin(run);
        Ok(running)
    })
}

/// Which way a connector kind moves events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    /// Receives from outside and produces events on `<id>`.
    pub produces: bool,
    /// Takes events from `inputs` and sends them outside.
    pub consumes: bool,
}

impl Roles {
    /// Receives from outside only.
    pub const SOURCE: Self = Self {
        produces: true,
        consumes: false,
    };
    /// Sends outside only.
    pub const SINK: Self = Self {
        produces: false,
        consumes: true,
    };

    /// Receives from outside, and also sends out when it has `inputs` (replies, broadcast).
    pub fn source_sending_when(has_inputs: bool) -> Self {
        Self {
            produces: true,
            consumes: has_inputs,
        }
    }
}

/// A built connector, ready to start.
pub trait Connector: Send {
    /// Acquires the connector's resources and returns its run future.
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture;

    /// What `validate` can check of this machine without running (an address that cannot be
    /// bound, a file that cannot be read, a folder that cannot be written), as problems at
    /// the key concerned. Nothing is left behind: a socket bound to check is closed.
    fn check_environment(&self) -> Vec<BuildError> {
        Vec::new()
    }
}

/// Knows one connector kind: validates its config and builds it.
pub trait ConnectorBuilder: Send + Sync {
    /// The `kind` string in config.
    fn kind(&self) -> &'static str;

    /// Whether the kind is left out of the kinds listed to users (test-only kinds).
    fn is_hidden(&self) -> bool {
        false
    }

    /// Which way this kind moves events, given its config has (or lacks) `inputs`.
    fn roles(&self, has_inputs: bool) -> Roles;

    /// Checks the config (everything but `kind` and `inputs`) and builds the connector.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the key that is wrong.
    fn build(
        &self,
        id: &ComponentId,
        config: serde_json::Value,
        has_inputs: bool,
    ) -> Result<Box<dyn Connector>, BuildError>;
}
