//! The TCP server: one stream per accepted connection.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tb_codec::Encoder;
use tb_event::{AckOutcome, AckStatus};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use super::config::TcpServerConfig;
use crate::core::{
    AtEnd, Connector, ConnectorContext, ConnectorError, StartFuture, StreamServer, bind,
    ingest_reader, write_outgoing,
};

pub(super) struct TcpServer {
    config: TcpServerConfig,
}

impl TcpServer {
    pub(super) fn new(config: TcpServerConfig) -> Self {
        Self { config }
    }
}

impl Connector for TcpServer {
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        Box::pin(async move {
            let listener = bind(&self.config.address).await?;
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
    let (server, dispatcher) = StreamServer::from_context(context);
    let shared = Arc::new((server, config));
    let connections = TaskTracker::new();
    loop {
        tokio::select! {
            biased;
            () = shared.0.intake.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, remote)) => {
                    connections.spawn(tracing::Instrument::in_current_span(serve_connection(shared.clone(), socket, remote)));
                }
                Err(error) => {
                    tracing::warn!(connector = %shared.0.id, %error, "Accept failed.");
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

async fn serve_connection(
    shared: Arc<(StreamServer, TcpServerConfig)>,
    socket: TcpStream,
    remote: SocketAddr,
) {
    let (server, config) = &*shared;
    let stream = server.open_stream();
    tracing::debug!(connector = %server.id, %stream, %remote, "Stream opened.");
    let (read_half, write_half) = socket.into_split();
    let outgoing = server.writers.register(stream);
    let encoder = Encoder::new(config.codec, &config.interceptors);
    let writer_metrics = server.metrics.clone();
    let (ack_sender, ack_receiver) = tokio::sync::watch::channel(Bytes::new());
    let acks = config.ack_lines.then_some(ack_receiver);
    let writer = crate::core::spawn_owned(async move {
        write_outgoing(outgoing, acks, encoder, write_half, &writer_metrics).await;
    });
    let mut decoder = server.stream_decoder(stream, config.codec, &config.interceptors, remote);
    let mut worst = AckOutcome::DELIVERED;
    let read = ingest_reader(
        read_half,
        &mut decoder,
        server.ingest_target(),
        0,
        AtEnd::Finish,
        |chunk| {
            // Once a chunk has failed, no later line may say everything before it is safe.
            if chunk.outcome.status > worst.status {
                worst = chunk.outcome;
            }
            ack_sender.send_replace(ack_line(chunk.events_through, &worst));
        },
    )
    .await;
    if let Err(error) = read {
        tracing::debug!(connector = %server.id, %stream, %error, "Stream read ended with an error.");
    }
    server.writers.remove(stream);
    let _ = writer.await;
    tracing::debug!(connector = %server.id, %stream, "Stream closed.");
}

/// `{"acked":N}`: the first N events of the connection are delivered. Once one of them
/// was not, the line says how the worst one ended and why, from then on:
/// `{"errored":N,"reason":...}` (sending it again may work) or `{"rejected":N,"reason":...}`
/// (it will never be accepted as it is).
fn ack_line(events_through: u64, worst: &AckOutcome) -> Bytes {
    let line = match worst.status {
        AckStatus::Delivered => serde_json::json!({ "acked": events_through }),
        status => serde_json::json!({
            status.as_str(): events_through,
            "reason": worst.reason_or_status(),
        }),
    };
    let mut bytes = line.to_string().into_bytes();
    bytes.push(b'\n');
    Bytes::from(bytes)
}
