//! The TCP server: one stream per accepted connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tb_codec::Encoder;
use tb_event::{AckStatus, ComponentId, KeyString, ObjectMap, StreamId, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::TcpServerConfig;
use crate::core::{
    AtEnd, ChunkAck, Connector, ConnectorContext, ConnectorError, ConnectorMetrics, IngestTarget,
    OutputSender, StartFuture, StreamDecoder, StreamWriters, ingest_reader, write_outgoing,
};

pub(super) struct TcpServer {
    config: TcpServerConfig,
}

impl TcpServer {
    pub(super) fn new(config: TcpServerConfig) -> Self {
        Self { config }
    }
}

struct Shared {
    id: ComponentId,
    config: TcpServerConfig,
    output: OutputSender,
    errors: OutputSender,
    metrics: ConnectorMetrics,
    intake: CancellationToken,
    writers: StreamWriters,
    next_stream: AtomicU64,
}

impl Connector for TcpServer {
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        Box::pin(async move {
            let listener = TcpListener::bind(&self.config.address)
                .await
                .map_err(|source| ConnectorError::Bind {
                    address: self.config.address.clone(),
                    source,
                })?;
            let running: crate::RunningConnector = Box::pin(serve(self.config, listener, context));
            Ok(running)
        })
    }
}

async fn serve(
    config: TcpServerConfig,
    listener: TcpListener,
    context: ConnectorContext,
) -> Result<(), ConnectorError> {
    let writers = StreamWriters::default();
    let dispatcher = context.input.map(|input| {
        tokio::spawn(
            writers
                .clone()
                .dispatch(context.id.clone(), input, context.metrics.clone()),
        )
    });
    let shared = Arc::new(Shared {
        id: context.id,
        config,
        output: context.output,
        errors: context.errors,
        metrics: context.metrics,
        intake: context.intake,
        writers,
        next_stream: AtomicU64::new(0),
    });
    let connections = TaskTracker::new();
    loop {
        tokio::select! {
            biased;
            () = shared.intake.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, remote)) => {
                    connections.spawn(serve_connection(shared.clone(), socket, remote));
                }
                Err(error) => {
                    tracing::warn!(connector = %shared.id, %error, "Accept failed.");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    drop(shared);
    if let Some(dispatcher) = dispatcher {
        let _ = dispatcher.await;
    }
    Ok(())
}

async fn serve_connection(shared: Arc<Shared>, socket: TcpStream, remote: SocketAddr) {
    let stream = StreamId(shared.next_stream.fetch_add(1, Ordering::Relaxed));
    tracing::debug!(connector = %shared.id, %stream, %remote, "Stream opened.");
    let (read_half, write_half) = socket.into_split();
    let outgoing = shared.writers.register(stream);
    let encoder = Encoder::new(shared.config.codec, &shared.config.interceptors);
    let writer_metrics = shared.metrics.clone();
    let writer = tokio::spawn(async move {
        write_outgoing(outgoing, encoder, write_half, &writer_metrics).await;
    });
    let mut fields = ObjectMap::new();
    fields.insert(
        KeyString::from("remote_address"),
        Value::from(remote.to_string()),
    );
    let mut decoder = StreamDecoder::new(
        shared.id.clone(),
        stream,
        shared.config.codec,
        &shared.config.interceptors,
        Some(Arc::new(fields)),
    );
    let target = IngestTarget {
        id: &shared.id,
        output: &shared.output,
        errors: &shared.errors,
        metrics: &shared.metrics,
        intake: &shared.intake,
    };
    let ack_lines = shared.config.ack_lines;
    let writers = shared.writers.clone();
    let read = ingest_reader(read_half, &mut decoder, target, 0, AtEnd::Finish, |chunk| {
        if ack_lines {
            writers.try_send_raw(stream, ack_line(chunk));
        }
    })
    .await;
    if let Err(error) = read {
        tracing::debug!(connector = %shared.id, %stream, %error, "Stream read ended with an error.");
    }
    shared.writers.remove(stream);
    let _ = writer.await;
    tracing::debug!(connector = %shared.id, %stream, "Stream closed.");
}

/// `{"acked":N}` or `{"failed":N}`: the first N events of the connection are settled.
fn ack_line(chunk: ChunkAck) -> Bytes {
    let word = match chunk.status {
        AckStatus::Delivered => "acked",
        AckStatus::Failed => "failed",
    };
    Bytes::from(format!("{{\"{word}\":{}}}\n", chunk.events_through))
}
