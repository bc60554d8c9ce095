//! The one reconnect loop every client connector shares (tcp_client, ws_client; brokers
//! next): connect with doubling backoff and jitter, show `reconnecting` with the last error
//! while the peer is away, serve one session per connection (each its own stream), and
//! connect again when a session breaks. A client is only its protocol: how to connect, and
//! how to serve a connection.

use std::fmt::Display;
use std::future::Future;

use tb_event::StreamId;

use super::backoff::{Backoff, connect_with_backoff, pause};
use super::context::ConnectorContext;
use super::errors::ConnectorError;
use super::fanout::OutputSender;
use super::input::InputQueue;
use super::status::ComponentStatus;

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The connector is done: its input closed, or intake stopped with nothing to send.
    Done,
    /// The connection broke or the peer closed it: connect again.
    Broken,
}

/// A client's outputs (`<id>`, `<id>._errors`), held apart from its context so a session
/// can drop them when intake stops: downstream (perhaps a pipeline that feeds this very
/// client) can then drain and close the client's input.
pub type ClientOutputs = Option<(OutputSender, OutputSender)>;

/// What one session of a client works with.
pub struct ClientSession<'a> {
    /// The connector's context (id, intake, status, metrics).
    pub context: &'a ConnectorContext,
    /// Events to send; `None` once the input closed, or when the client has no `inputs`.
    pub input: &'a mut Option<InputQueue>,
    /// Where received events go; `None` once intake stopped.
    pub outputs: &'a mut ClientOutputs,
    /// This connection's stream.
    pub stream: StreamId,
}

/// One client protocol.
pub trait ClientProtocol: Sync {
    /// An open connection.
    type Connection: Send;
    /// Why a connection attempt failed.
    type Error: Display + Send;

    /// Opens a connection to the peer.
    fn connect(&self) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;

    /// Serves one connection until it breaks or the connector is done.
    fn serve(
        &self,
        connection: Self::Connection,
        session: ClientSession<'_>,
    ) -> impl Future<Output = SessionEnd> + Send;
}

/// Runs a client: connects to `peer` (as shown in logs and statuses, with any secret
/// already masked), serves each connection, and reconnects per `backoff` until done.
///
/// A client with input keeps trying until that input closes, so nothing it was given is
/// dropped; one that only reads stops with intake.
///
/// # Errors
///
/// None today; the signature leaves room for a fatal protocol error.
pub async fn run_client<P: ClientProtocol>(
    protocol: P,
    mut context: ConnectorContext,
    peer: &str,
    mut backoff: Backoff,
) -> Result<(), ConnectorError> {
    let mut input = context.input.take();
    let mut outputs: ClientOutputs = Some((
        std::mem::replace(&mut context.output, OutputSender::disconnected()),
        std::mem::replace(&mut context.errors, OutputSender::disconnected()),
    ));
    let mut next_stream = 0u64;
    loop {
        let Some(connection) = connect_with_backoff(
            || protocol.connect(),
            &mut backoff,
            &context.intake,
            input.is_none(),
            &context.id,
            &peer,
            &context.status,
        )
        .await
        else {
            return Ok(());
        };
        if context.intake.is_cancelled() {
            outputs = None;
        }
        let stream = StreamId(next_stream);
        next_stream += 1;
        let session = ClientSession {
            context: &context,
            input: &mut input,
            outputs: &mut outputs,
            stream,
        };
        match protocol.serve(connection, session).await {
            SessionEnd::Done => return Ok(()),
            SessionEnd::Broken => {
                tracing::warn!(connector = %context.id, peer, "Connection ended; reconnecting.");
                context.status.set_with_error(
                    ComponentStatus::Reconnecting,
                    format!("connection to {peer} ended"),
                );
                // A peer that accepts and closes at once must not be hammered.
                pause(backoff.next_delay(), &context.intake, input.is_none()).await;
            }
        }
    }
}
