//! What a multi-stream server (TCP, WebSocket) shares between its streams, and serving an
//! axum router until intake stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tb_codec::{CodecKind, InterceptorConfig};
use tb_event::{ComponentId, KeyString, ObjectMap, StreamId, Value};
use tokio_util::sync::CancellationToken;

use super::context::ConnectorContext;
use super::errors::ConnectorError;
use super::fanout::OutputSender;
use super::ingest::StreamDecoder;
use super::metrics::ConnectorMetrics;
use super::reader::IngestTarget;
use super::routing::{Foreign, route_replies};
use super::streams::StreamWriters;

/// The parts of a connector context every stream of a server uses.
pub struct StreamServer {
    /// The connector's id.
    pub id: ComponentId,
    /// `<id>`.
    pub output: OutputSender,
    /// `<id>._errors`.
    pub errors: OutputSender,
    /// Counters.
    pub metrics: ConnectorMetrics,
    /// Cancelled when intake must stop.
    pub intake: CancellationToken,
    /// Writers of the open streams.
    pub writers: StreamWriters,
    next_stream: AtomicU64,
}

impl StreamServer {
    /// Takes `context` apart, starting the task that routes its input (if it has `inputs`)
    /// to the open streams: replies to their own stream, anything else to every stream.
    pub fn from_context(context: ConnectorContext) -> (Self, Option<super::tasks::OwnedTask<()>>) {
        let writers = StreamWriters::default();
        let dispatcher = context.input.map(|input| {
            super::tasks::spawn_owned(route_replies(
                writers.clone(),
                Foreign::Broadcast,
                context.id.clone(),
                input,
                context.metrics.clone(),
            ))
        });
        let server = Self {
            id: context.id,
            output: context.output,
            errors: context.errors,
            metrics: context.metrics,
            intake: context.intake,
            writers,
            next_stream: AtomicU64::new(0),
        };
        (server, dispatcher)
    }

    /// A new stream id, unique within the connector.
    pub fn open_stream(&self) -> StreamId {
        StreamId(self.next_stream.fetch_add(1, Ordering::Relaxed))
    }

    /// Where a stream's decoded events go.
    pub fn ingest_target(&self) -> IngestTarget<'_> {
        IngestTarget {
            id: &self.id,
            output: &self.output,
            errors: &self.errors,
            metrics: &self.metrics,
            intake: &self.intake,
        }
    }

    /// A decoder for `stream`, with `%tightbeam.remote_address` set to `remote`.
    pub fn stream_decoder(
        &self,
        stream: StreamId,
        codec: CodecKind,
        interceptors: &[InterceptorConfig],
        remote: SocketAddr,
    ) -> StreamDecoder {
        let mut fields = ObjectMap::new();
        fields.insert(
            KeyString::from("remote_address"),
            Value::from(remote.to_string()),
        );
        StreamDecoder::new(
            self.id.clone(),
            stream,
            codec,
            interceptors,
            Some(Arc::new(fields)),
        )
    }
}

/// Serves `router` on `listener` (with each connection's remote address) until `intake` is
/// cancelled and every request in flight has been answered; then waits for `dispatcher`,
/// which ends once the connector's input closes.
///
/// # Errors
///
/// The server's I/O error, naming `address`.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    intake: CancellationToken,
    address: &str,
    dispatcher: Option<super::tasks::OwnedTask<()>>,
) -> Result<(), ConnectorError> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(intake.cancelled_owned())
    .await
    .map_err(|source| ConnectorError::Io {
        context: format!("server on {address}"),
        source,
    })?;
    // The router (and the output senders it held) is gone, so downstream can drain; replies
    // still in flight come back through the dispatcher until its input closes.
    if let Some(dispatcher) = dispatcher {
        let _ = dispatcher.await;
    }
    Ok(())
}

/// Binds a listener, naming the address in the error.
///
/// # Errors
///
/// [`ConnectorError::Bind`].
pub async fn bind(address: &str) -> Result<tokio::net::TcpListener, ConnectorError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ConnectorError::Bind {
            address: address.to_owned(),
            source,
        })
}
