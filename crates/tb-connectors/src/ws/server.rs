//! The WebSocket server: one stream per session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use tb_codec::Encoder;
use tb_event::{ComponentId, KeyString, ObjectMap, StreamId, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::WsServerConfig;
use super::is_text;
use crate::core::{
    ConnectorContext, ConnectorError, ConnectorMetrics, IngestTarget, Outgoing, OutputSender,
    StartFuture, StreamDecoder, StreamWriters, complete_written, fail_outgoing, ingest_message,
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

struct Shared {
    id: ComponentId,
    config: WsServerConfig,
    output: OutputSender,
    errors: OutputSender,
    metrics: ConnectorMetrics,
    intake: CancellationToken,
    writers: StreamWriters,
    next_stream: AtomicU64,
}

impl crate::core::Connector for WsServer {
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        Box::pin(async move {
            let address = self.config.address.clone();
            let listener = tokio::net::TcpListener::bind(&address)
                .await
                .map_err(|source| ConnectorError::Bind {
                    address: address.clone(),
                    source,
                })?;
            let writers = StreamWriters::default();
            let dispatcher = context.input.map(|input| {
                tokio::spawn(writers.clone().dispatch(
                    context.id.clone(),
                    input,
                    context.metrics.clone(),
                ))
            });
            let intake = context.intake.clone();
            let shared = Arc::new(Shared {
                id: context.id,
                config: self.config,
                output: context.output,
                errors: context.errors,
                metrics: context.metrics,
                intake: context.intake,
                writers,
                next_stream: AtomicU64::new(0),
            });
            let router = Router::new().fallback(upgrade).with_state(shared);
            let running: crate::RunningConnector = Box::pin(async move {
                axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(intake.cancelled_owned())
                .await
                .map_err(|source| ConnectorError::Io {
                    context: format!("websocket server on {address}"),
                    source,
                })?;
                if let Some(dispatcher) = dispatcher {
                    let _ = dispatcher.await;
                }
                Ok(())
            });
            Ok(running)
        })
    }
}

async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let max = shared.config.max_body;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| session(shared, socket, remote))
}

async fn session(shared: Arc<Shared>, socket: WebSocket, remote: SocketAddr) {
    let stream = StreamId(shared.next_stream.fetch_add(1, Ordering::Relaxed));
    tracing::debug!(connector = %shared.id, %stream, %remote, "Session opened.");
    let (sink, mut messages) = socket.split();
    let outgoing = shared.writers.register(stream);
    let encoder = Encoder::new(shared.config.codec, &shared.config.interceptors);
    let writer_metrics = shared.metrics.clone();
    let writer = tokio::spawn(write_session(outgoing, encoder, sink, writer_metrics));
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
    let mut pending = FuturesUnordered::new();
    loop {
        while pending.len() >= MAX_UNACKNOWLEDGED_MESSAGES {
            pending.next().await;
        }
        let message = tokio::select! {
            biased;
            () = shared.intake.cancelled() => break,
            Some(_) = pending.next(), if !pending.is_empty() => continue,
            message = messages.next() => message,
        };
        let bytes = match message {
            Some(Ok(Message::Text(text))) => bytes::Bytes::from(text),
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(error)) => {
                tracing::debug!(connector = %shared.id, %stream, %error, "Session read failed.");
                shared.metrics.errors.inc();
                break;
            }
        };
        if let Some(waiting) = ingest_message(&mut decoder, &bytes, &target).await {
            pending.push(waiting);
        }
    }
    while pending.next().await.is_some() {}
    shared.writers.remove(stream);
    let _ = writer.await;
    tracing::debug!(connector = %shared.id, %stream, "Session closed.");
}

async fn write_session(
    mut outgoing: mpsc::Receiver<Outgoing>,
    mut encoder: Encoder,
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    metrics: ConnectorMetrics,
) {
    let mut buffer = Vec::new();
    while let Some(item) = outgoing.recv().await {
        buffer.clear();
        let event = match item {
            Outgoing::Raw(bytes) => {
                buffer.extend_from_slice(&bytes);
                None
            }
            Outgoing::Event(event) => {
                let encoded = encoder
                    .encode(&event.value, &mut buffer)
                    .and_then(|()| encoder.flush(&mut buffer));
                if encoded.is_err() {
                    fail_outgoing(Outgoing::Event(event), &metrics);
                    continue;
                }
                Some(event)
            }
        };
        let message = if is_text(&buffer) {
            Message::Text(String::from_utf8_lossy(&buffer).into_owned().into())
        } else {
            Message::Binary(std::mem::take(&mut buffer).into())
        };
        let sent = sink.send(message).await;
        if let Some(event) = event {
            complete_written(vec![event], sent.is_ok(), &metrics);
        }
        if sent.is_err() {
            outgoing.close();
            while let Some(item) = outgoing.recv().await {
                fail_outgoing(item, &metrics);
            }
            return;
        }
    }
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: 1001,
            reason: "going away".into(),
        })))
        .await;
}
