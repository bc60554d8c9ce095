//! The one reconnect loop every client connector shares (tcp_client, ws_client; brokers
//! next): connect with doubling backoff and jitter, show `reconnecting` with the last error
//! while the peer is away, serve one session per connection (each its own stream), and
//! connect again when a session breaks. A client is only its protocol: how to connect, and
//! how to serve a connection.

use std::fmt::Display;
use std::future::Future;

use tb_event::{AckStatus, EventBatch, StreamId};

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

/// Counts `batch` as taken in by the connection `stream` and keeps what it may send: a
/// reply to an event born on an earlier connection of this client has nowhere to go (that
/// peer is gone), so it is counted in `err` and errored, never sent to the new peer.
pub fn keep_sendable(
    context: &ConnectorContext,
    stream: StreamId,
    mut batch: EventBatch,
) -> EventBatch {
    context.metrics.input.inc_by(batch.len() as u64);
    // In place: the usual batch holds no stale reply and is passed on as it came.
    let stale =
        |event: &mut tb_event::Event| event.is_from(&context.id) && event.meta.id.stream != stream;
    for event in batch.extract_if(.., stale) {
        context.metrics.errors.inc();
        event.complete_with(
            AckStatus::Errored,
            "the connection it replies to has closed",
        );
    }
    batch
}

/// Why the writing half of a session stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteEnd {
    /// The input closed: nothing more to send.
    InputClosed,
    /// A write failed: the connection is gone.
    Broken,
}

/// How a session whose halves ran together ended, and what its caller must let go of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HalvesEnd {
    /// Done, or connect again.
    pub end: SessionEnd,
    /// The input closed: the session's `input` is to be set to `None`.
    pub input_done: bool,
    /// Intake stopped: the session's `outputs` are to be set to `None`.
    pub outputs_done: bool,
}

/// Runs a session's reading and writing halves at once (never one waiting for the other: a
/// peer that answers each message before it reads the next would block both sides), and
/// decides how the session ends:
/// - the input closed while something reads this client: read on until the peer closes or
///   intake stops, as any source does;
/// - intake stopped: read nothing more; what still comes in from the input is written out;
/// - either half broke: connect again.
pub async fn serve_halves(
    context: &ConnectorContext,
    has_input: bool,
    read_on: bool,
    reading: impl Future<Output = ()>,
    writing: impl Future<Output = WriteEnd>,
) -> HalvesEnd {
    tokio::pin!(reading);
    tokio::pin!(writing);
    let first = tokio::select! {
        end = &mut writing => Some(end),
        () = &mut reading => None,
    };
    let ended = |end, input_done, outputs_done| HalvesEnd {
        end,
        input_done,
        outputs_done,
    };
    let stopped = || {
        if context.intake.is_cancelled() {
            SessionEnd::Done
        } else {
            SessionEnd::Broken
        }
    };
    match first {
        Some(WriteEnd::InputClosed) if read_on => {
            reading.await;
            ended(stopped(), true, false)
        }
        Some(WriteEnd::InputClosed) => ended(SessionEnd::Done, true, false),
        Some(WriteEnd::Broken) => ended(SessionEnd::Broken, false, false),
        None if context.intake.is_cancelled() => {
            // With no input, `writing` never ends: waiting for it held the drain for the
            // whole grace period when intake stopped during a session (a CI run caught it).
            let end = match has_input && matches!(writing.await, WriteEnd::Broken) {
                true => SessionEnd::Broken,
                false => SessionEnd::Done,
            };
            ended(end, false, true)
        }
        None => ended(SessionEnd::Broken, false, false),
    }
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
            // Connected just as intake stopped: nothing more is read from this peer, and a
            // client with nothing to send is done (serving would wait on nothing for ever;
            // a CI run caught that as a drain that lasted the whole grace period).
            outputs = None;
            if input.is_none() {
                return Ok(());
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tb_event::{Acknowledgement, ComponentId, Event, EventMeta, Value};

    fn context() -> ConnectorContext {
        ConnectorContext {
            id: ComponentId::new("peer"),
            output: OutputSender::disconnected(),
            errors: OutputSender::disconnected(),
            input: None,
            intake: tokio_util::sync::CancellationToken::new(),
            status: super::super::status::StatusCell::new(),
            metrics: crate::core::ConnectorMetrics::unregistered(),
            data_dir: std::path::PathBuf::new(),
        }
    }

    fn event(connector: &str, stream: u64) -> (Event, tb_event::AckReceipt) {
        let (ack, receipt) = Acknowledgement::new_unit();
        let meta = EventMeta::new(ComponentId::new(connector), StreamId(stream), 0);
        (Event::new(Value::from(1), meta, ack), receipt)
    }

    /// Connects (at once, always) and serves by waiting for ever: a client that serves when
    /// it should not never ends.
    struct Connects {
        intake: tokio_util::sync::CancellationToken,
    }

    impl ClientProtocol for Connects {
        type Connection = ();
        type Error = String;

        async fn connect(&self) -> Result<(), String> {
            // Intake stops while this connection is being made.
            self.intake.cancel();
            Ok(())
        }

        async fn serve(&self, (): (), _session: ClientSession<'_>) -> SessionEnd {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_client_with_nothing_to_send_that_connects_as_intake_stops_is_done() {
        let context = context();
        let protocol = Connects {
            intake: context.intake.clone(),
        };
        let backoff = Backoff::new(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(1),
        );
        let ended = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            run_client(protocol, context, "peer", backoff),
        )
        .await;
        assert!(matches!(ended, Ok(Ok(()))), "the client ended");
    }

    /// Issue 7: a reply to an event born on an earlier connection is an `err`, never a
    /// message to the peer the client is connected to now.
    #[tokio::test]
    async fn a_reply_to_an_earlier_connection_is_errored_and_the_rest_is_kept() {
        let context = context();
        let (stale, stale_receipt) = event("peer", 0);
        let (current, _current_receipt) = event("peer", 1);
        let (foreign, _foreign_receipt) = event("elsewhere", 0);
        let kept = keep_sendable(&context, StreamId(1), vec![stale, current, foreign]);
        let kept: Vec<(String, u64)> = kept
            .iter()
            .map(|event| (event.meta.id.connector.to_string(), event.meta.id.stream.0))
            .collect();
        assert_eq!(
            kept,
            vec![("peer".to_owned(), 1), ("elsewhere".to_owned(), 0)],
            "this connection's replies and events from elsewhere go on"
        );
        let outcome = stale_receipt.wait().await;
        assert_eq!(outcome.status, AckStatus::Errored);
        assert_eq!(context.metrics.errors.get(), 1);
        assert_eq!(context.metrics.input.get(), 3);
    }
}
