//! The WebSocket server: one stream per session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use tb_codec::Encoder;
use tokio::sync::mpsc;

use super::config::WsServerConfig;
use super::is_text;
use crate::core::{
    ConnectorContext, ConnectorMetrics, STREAM_WRITE_TIMEOUT, StartFuture, StreamServer, bind,
    complete_written, decode_error_event, fail_outgoing, ingest_message, serve_router,
};
use tb_event::Event;

/// Messages handed on and not yet acknowledged, per session, before reading pauses.
const MAX_UNACKNOWLEDGED_MESSAGES: usize = 256;

pub(super) struct WsServer {
    config: WsServerConfig,
}

impl WsServer {
    pub(super) fn new(config: WsServerConfig) -> Self {
        Self { config }
    }
}

type Shared = Arc<(StreamServer, WsServerConfig)>;

impl crate::core::Connector for WsServer {
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        Box::pin(async move {
            let address = self.config.address.clone();
            let listener = bind(&address).await?;
            let intake = context.intake.clone();
            let (server, dispatcher) = StreamServer::from_context(context);
            let shared: Shared = Arc::new((server, self.config));
            let router = Router::new().fallback(upgrade).with_state(shared);
            let running: crate::RunningConnector = Box::pin(async move {
                serve_router(listener, router, intake, &address, dispatcher).await
            });
            Ok(running)
        })
    }
}

async fn upgrade(
    State(shared): State<Shared>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let max = shared.1.max_body;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| session(shared, socket, remote))
}

async fn session(shared: Shared, socket: WebSocket, remote: SocketAddr) {
    let (server, config) = &*shared;
    let stream = server.open_stream();
    tracing::debug!(connector = %server.id, %stream, %remote, "Session opened.");
    let (sink, mut messages) = socket.split();
    let outgoing = server.writers.register(stream);
    let encoder = Encoder::new(config.codec, &config.interceptors);
    let close_code = Arc::new(AtomicU16::new(CLOSE_GOING_AWAY));
    let writer = crate::core::spawn_owned(write_session(
        outgoing,
        encoder,
        sink,
        server.metrics.clone(),
        close_code.clone(),
    ));
    let mut decoder = server.stream_decoder(stream, config.codec, &config.interceptors, remote);
    let target = server.ingest_target();
    let mut pending = FuturesUnordered::new();
    loop {
        while pending.len() >= MAX_UNACKNOWLEDGED_MESSAGES {
            pending.next().await;
        }
        let message = tokio::select! {
            biased;
            () = server.intake.cancelled() => break,
            Some(_) = pending.next(), if !pending.is_empty() => continue,
            message = messages.next() => message,
        };
        let bytes = match message {
            Some(Ok(Message::Text(text))) => bytes::Bytes::from(text),
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(error)) => {
                server.metrics.errors.inc();
                // tungstenite reports a message over `max_message_size` as "too long".
                if error.to_string().contains("too long") {
                    close_code.store(CLOSE_MESSAGE_TOO_BIG, Ordering::Relaxed);
                    reject_oversized(server, stream, config.max_body).await;
                } else {
                    tracing::debug!(connector = %server.id, %stream, %error, "Session read failed.");
                }
                break;
            }
        };
        if let Some(waiting) = ingest_message(&mut decoder, &bytes, &target).await {
            pending.push(waiting);
        }
    }
    while pending.next().await.is_some() {}
    server.writers.remove(stream);
    let _ = writer.await;
    tracing::debug!(connector = %server.id, %stream, "Session closed.");
}

/// Puts a record of a message over `max_body` on `<id>._errors`: the message itself was
/// never read past the limit, so only the reason is kept.
async fn reject_oversized(server: &StreamServer, stream: tb_event::StreamId, max_body: usize) {
    let error = tb_codec::DecodeError::too_large(
        format!(
            "websocket message larger than max_body ({max_body} bytes); session closed with 1009"
        ),
        &[],
    );
    let event = decode_error_event(&server.id, stream, &error, tb_event::AckHandle::untracked());
    let _ = server.errors.send(vec![event]).await;
}

/// Close code for a normal end: the server is going away (shutdown) or the session ended.
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for a message over `max_body`.
const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

async fn write_session(
    mut outgoing: mpsc::Receiver<Event>,
    mut encoder: Encoder,
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    metrics: ConnectorMetrics,
    close_code: Arc<AtomicU16>,
) {
    let mut buffer = Vec::new();
    while let Some(event) = outgoing.recv().await {
        buffer.clear();
        let encoded = encoder
            .encode(&event.value, &mut buffer)
            .and_then(|()| encoder.flush(&mut buffer));
        if encoded.is_err() {
            fail_outgoing(event, &metrics);
            continue;
        }
        let message = if is_text(&buffer) {
            Message::Text(String::from_utf8_lossy(&buffer).into_owned().into())
        } else {
            Message::Binary(std::mem::take(&mut buffer).into())
        };
        let sent = tokio::time::timeout(STREAM_WRITE_TIMEOUT, sink.send(message)).await;
        let delivered = matches!(sent, Ok(Ok(())));
        complete_written(vec![event], delivered, &metrics);
        if !delivered {
            outgoing.close();
            while let Some(event) = outgoing.recv().await {
                fail_outgoing(event, &metrics);
            }
            return;
        }
    }
    let code = close_code.load(Ordering::Relaxed);
    let reason = if code == CLOSE_MESSAGE_TOO_BIG {
        "message too big"
    } else {
        "going away"
    };
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}
