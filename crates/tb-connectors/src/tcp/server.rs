//! The TCP server: one stream per accepted connection. The stream's life cycle is
//! `StreamServer::serve_stream`; this file is the protocol: accepting connections, reading
//! each one as a byte stream, and (with `ack_lines`) telling the client how far its events
//! got.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tb_event::{AckOutcome, AckStatus, StreamId};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::config::TcpServerConfig;
use crate::core::{
    AtEnd, ByteStream, Connector, ConnectorContext, ConnectorError, StartFuture, StreamDecoder,
    StreamServer, bind, ingest_reader,
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
    fn check_environment(&self) -> Vec<crate::core::BuildError> {
        crate::core::check_bindable("address", &self.config.address)
            .err()
            .into_iter()
            .collect()
    }

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
    let (server, dispatcher) = StreamServer::from_context(
        context,
        config.codec,
        &config.interceptors,
        config.write_timeout,
    );
    let shared = Arc::new((server, config));
    // A JoinSet, not detached tasks: if this server dies (a panic, an abort by its
    // supervisor), dropping the set aborts every connection it was serving.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shared.0.intake.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
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
    while connections.join_next().await.is_some() {}
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
    let (read_half, write_half) = socket.into_split();
    // The sender outlives the stream's writer, which writes the last line as it closes.
    let (ack_sender, ack_receiver) = watch::channel(Bytes::new());
    let acks = config.ack_lines.then_some(ack_receiver);
    let ack_sender = &ack_sender;
    server
        .serve_stream(remote, ByteStream(write_half), acks, |stream, decoder| {
            read_connection(server, read_half, decoder, ack_sender, stream)
        })
        .await;
}

/// Reads one connection until the client closes it or intake stops, keeping its latest
/// acknowledgement line in `ack_sender`.
async fn read_connection(
    server: &StreamServer,
    read_half: OwnedReadHalf,
    mut decoder: StreamDecoder,
    ack_sender: &watch::Sender<Bytes>,
    stream: StreamId,
) {
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
