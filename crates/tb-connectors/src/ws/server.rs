//! The WebSocket server: one stream per session. The stream's life cycle is
//! `StreamServer::serve_stream`; this file is the protocol: the upgrade, reading messages
//! (closing with 1009 on one over `max_body`), and sending each event as one text or binary
//! message, with a close code at the end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use futures::stream::{FuturesUnordered, SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tb_event::StreamId;

use super::config::WsServerConfig;
use super::is_text;
use crate::core::{
    ConnectorContext, FrameWriter, StartFuture, StreamDecoder, StreamServer, bind,
    decode_error_event, ingest_message, serve_router,
};

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
    fn check_environment(&self) -> Vec<crate::core::BuildError> {
        crate::core::check_bindable("address", &self.config.address)
            .err()
            .into_iter()
            .collect()
    }

    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        Box::pin(async move {
            let listener = bind(&self.config.address).await?;
            let header_timeout = self.config.header_timeout;
            let intake = context.intake.clone();
            let (server, dispatcher) = StreamServer::from_context(
                context,
                self.config.codec,
                &self.config.interceptors,
                self.config.write_timeout,
            );
            let shared: Shared = Arc::new((server, self.config));
            let router = Router::new().fallback(upgrade).with_state(shared);
            let running: crate::RunningConnector = Box::pin(async move {
                serve_router(listener, router, header_timeout, intake, dispatcher).await
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
    let (sink, messages) = socket.split();
    let close_code = Arc::new(AtomicU16::new(CLOSE_GOING_AWAY));
    let write_half = SessionSender {
        sink,
        close_code: close_code.clone(),
    };
    server
        .serve_stream(remote, write_half, None, |stream, decoder| {
            let session = SessionReader {
                server,
                max_body: config.max_body,
                stream,
                close_code: &close_code,
            };
            session.read(messages, decoder)
        })
        .await;
}

/// What reading one session needs besides its messages.
struct SessionReader<'a> {
    server: &'a StreamServer,
    max_body: usize,
    stream: StreamId,
    /// The code the session closes with, set here when a message is over `max_body`.
    close_code: &'a AtomicU16,
}

impl SessionReader<'_> {
    /// Reads messages until the peer closes, a read fails or intake stops, holding at most
    /// [`MAX_UNACKNOWLEDGED_MESSAGES`] unacknowledged; then waits for those.
    async fn read(self, mut messages: SplitStream<WebSocket>, mut decoder: StreamDecoder) {
        let target = self.server.ingest_target();
        let mut pending = FuturesUnordered::new();
        loop {
            while pending.len() >= MAX_UNACKNOWLEDGED_MESSAGES {
                pending.next().await;
            }
            let message = tokio::select! {
                biased;
                () = self.server.intake.cancelled() => break,
                Some(_) = pending.next(), if !pending.is_empty() => continue,
                message = messages.next() => message,
            };
            let bytes = match message {
                Some(Ok(Message::Text(text))) => bytes::Bytes::from(text),
                Some(Ok(Message::Binary(bytes))) => bytes,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(error)) => {
                    self.read_failed(&error).await;
                    break;
                }
            };
            if let Some(waiting) = ingest_message(&mut decoder, &bytes, &target).await {
                pending.push(waiting);
            }
        }
        while pending.next().await.is_some() {}
    }

    async fn read_failed(&self, error: &axum::Error) {
        let server = self.server;
        server.metrics.errors.inc();
        // tungstenite reports a message over `max_message_size` as "too long".
        if error.to_string().contains("too long") {
            self.close_code
                .store(CLOSE_MESSAGE_TOO_BIG, Ordering::Relaxed);
            reject_oversized(server, self.stream, self.max_body).await;
        } else {
            tracing::debug!(connector = %server.id, stream = %self.stream, %error, "Session read failed.");
        }
    }
}

/// Puts a record of a message over `max_body` on `<id>._errors`: the message itself was
/// never read past the limit, so only the reason is kept.
async fn reject_oversized(server: &StreamServer, stream: StreamId, max_body: usize) {
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

/// A session's sending half: each write is one message, text when the bytes are UTF-8.
struct SessionSender {
    sink: SplitSink<WebSocket, Message>,
    close_code: Arc<AtomicU16>,
}

impl FrameWriter for SessionSender {
    async fn write_frame(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let message = if is_text(bytes) {
            Message::Text(String::from_utf8_lossy(bytes).into_owned().into())
        } else {
            Message::Binary(bytes.to_vec().into())
        };
        self.sink.send(message).await.map_err(std::io::Error::other)
    }

    async fn close(&mut self) {
        let code = self.close_code.load(Ordering::Relaxed);
        let reason = if code == CLOSE_MESSAGE_TOO_BIG {
            "message too big"
        } else {
            "going away"
        };
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = self.sink.send(close).await;
    }
}
