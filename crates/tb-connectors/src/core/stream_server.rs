//! What a multi-stream server (TCP, WebSocket) shares between its streams, the life cycle
//! of one stream, and serving an axum router until intake stops.
//!
//! [`StreamServer::serve_stream`] owns a stream from its opening to its end: it gives the
//! stream an id, registers its writer queue, runs the write loop on the protocol's write
//! half, hands the protocol's read loop a decoder, and once reading ends closes the stream
//! and waits for the writer. A server keeps only its protocol: how it accepts, how it reads,
//! and how bytes become frames on its wire.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tb_codec::{CodecKind, Encoder, InterceptorConfig};
use tb_event::{ComponentId, KeyString, ObjectMap, StreamId, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::context::ConnectorContext;
use super::errors::ConnectorError;
use super::fanout::OutputSender;
use super::http_serve::serve_http;
use super::ingest::StreamDecoder;
use super::metrics::ConnectorMetrics;
use super::reader::IngestTarget;
use super::routing::{Foreign, route_replies};
use super::sink::{EventWriter, FrameWriter, WritePolicy, write_outgoing};
use super::streams::StreamWriters;
use super::tasks::{OwnedTask, spawn_owned};

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
    /// How every stream's bytes are framed and encoded.
    codec: CodecKind,
    interceptors: Vec<InterceptorConfig>,
    write_timeout: Duration,
    next_stream: AtomicU64,
}

impl StreamServer {
    /// Takes `context` apart, starting the task that routes its input (if it has `inputs`)
    /// to the open streams: replies to their own stream, anything else to every stream.
    /// Every stream decodes and encodes with `codec` and `interceptors`, and counts as gone
    /// once a write to it stalls past `write_timeout`.
    pub fn from_context(
        context: ConnectorContext,
        codec: CodecKind,
        interceptors: &[InterceptorConfig],
        write_timeout: Duration,
    ) -> (Self, Option<OwnedTask<()>>) {
        let writers = StreamWriters::default();
        let dispatcher = context.input.map(|input| {
            spawn_owned(route_replies(
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
            codec,
            interceptors: interceptors.to_vec(),
            write_timeout,
            next_stream: AtomicU64::new(0),
        };
        (server, dispatcher)
    }

    /// Serves one stream with the peer at `remote`, from its opening to its end.
    ///
    /// Replies are written to `write_half` (a stalled peer costing only its own events),
    /// with the stream's latest acknowledgement line from `acks`, if any, whenever it
    /// changes. `read` gets the stream's id and decoder and reads the peer until it closes
    /// or intake stops; then the stream closes, and this returns once its writer has written
    /// (or failed) what was queued. A writer that fails (the peer is gone, or stalled past
    /// `write_timeout`) ends the stream at once: reading stops and the connection closes.
    pub async fn serve_stream<W, Read>(
        &self,
        remote: SocketAddr,
        write_half: W,
        acks: Option<watch::Receiver<Bytes>>,
        read: impl FnOnce(StreamId, StreamDecoder) -> Read,
    ) where
        W: FrameWriter + 'static,
        Read: Future<Output = ()>,
    {
        let stream = StreamId(self.next_stream.fetch_add(1, Ordering::Relaxed));
        tracing::debug!(connector = %self.id, %stream, %remote, "Stream opened.");
        let outgoing = self.writers.register(stream);
        let encoder = Encoder::new(self.codec, &self.interceptors);
        let output = EventWriter::new(encoder, write_half, WritePolicy::Stream(self.write_timeout));
        let metrics = self.metrics.clone();
        let mut writer = spawn_owned(async move {
            write_outgoing(outgoing, acks, output, &metrics).await;
        });
        // The writer ends before reading does only when it failed: its queue closes only
        // once the stream is removed.
        tokio::select! {
            () = read(stream, self.stream_decoder(stream, remote)) => {
                self.writers.remove(stream);
                let _ = writer.await;
            }
            _ = &mut writer => {
                self.writers.remove(stream);
                tracing::debug!(connector = %self.id, %stream, "Stream writer failed; the stream is closed.");
            }
        }
        tracing::debug!(connector = %self.id, %stream, "Stream closed.");
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
    fn stream_decoder(&self, stream: StreamId, remote: SocketAddr) -> StreamDecoder {
        let mut fields = ObjectMap::new();
        fields.insert(
            KeyString::from("remote_address"),
            Value::from(remote.to_string()),
        );
        StreamDecoder::new(
            self.id.clone(),
            stream,
            self.codec,
            &self.interceptors,
            Some(Arc::new(fields)),
        )
    }
}

/// Serves `router` on `listener` (with each connection's remote address, and
/// `header_timeout` as [`serve_http`] says) until `intake` is cancelled and every request
/// in flight has been answered; then waits for `dispatcher`, which ends once the
/// connector's input closes.
///
/// # Errors
///
/// None today: accept errors are logged and retried. The `Result` is the connector's.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    header_timeout: Duration,
    intake: CancellationToken,
    dispatcher: Option<OwnedTask<()>>,
) -> Result<(), ConnectorError> {
    serve_http(listener, router, header_timeout, intake).await;
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
