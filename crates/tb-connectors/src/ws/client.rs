//! The WebSocket client: connects (and reconnects with backoff), sends events from its
//! inputs as messages, and decodes received messages into events, one stream per connection.

use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use tb_codec::Encoder;
use tb_event::{KeyString, ObjectMap, Value};
use tokio_tungstenite::tungstenite::Message;

use super::config::WsClientConfig;
use super::{is_text, redact_url};
use crate::core::{
    Backoff, ClientProtocol, ClientSession, Connector, ConnectorContext, ConnectorError,
    IngestTarget, SessionEnd, StartFuture, StreamDecoder, complete_written, encode_batch,
    ingest_message, keep_sendable, run_client,
};

pub(super) struct WsClient {
    config: WsClientConfig,
}

impl WsClient {
    pub(super) fn new(config: WsClientConfig) -> Self {
        Self { config }
    }
}

impl Connector for WsClient {
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        Box::pin(async move {
            let running: crate::RunningConnector = Box::pin(run(self.config, context));
            Ok(running)
        })
    }
}

/// The WebSocket protocol of a client: connect to `url`, send events as messages, decode
/// the messages received.
struct WsProtocol<'a> {
    config: &'a WsClientConfig,
}

impl ClientProtocol for WsProtocol<'_> {
    type Connection = Socket;
    type Error = tokio_tungstenite::tungstenite::Error;

    async fn connect(&self) -> Result<Socket, Self::Error> {
        let (socket, _response) =
            tokio_tungstenite::connect_async(self.config.url.as_str()).await?;
        Ok(socket)
    }

    async fn serve(&self, socket: Socket, session: ClientSession<'_>) -> SessionEnd {
        serve_session(self.config, session, socket).await
    }
}

async fn run(config: WsClientConfig, context: ConnectorContext) -> Result<(), ConnectorError> {
    let backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let peer = redact_url(&config.url);
    run_client(WsProtocol { config: &config }, context, &peer, backoff).await
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn serve_session(
    config: &WsClientConfig,
    session: ClientSession<'_>,
    socket: Socket,
) -> SessionEnd {
    let ClientSession {
        context,
        input,
        outputs,
        stream,
    } = session;
    let (mut sink, mut messages) = socket.split();
    let mut fields = ObjectMap::new();
    fields.insert(KeyString::from("url"), Value::from(redact_url(&config.url)));
    let mut decoder = StreamDecoder::new(
        context.id.clone(),
        stream,
        config.codec,
        &config.interceptors,
        Some(Arc::new(fields)),
    );
    let mut encoder = Encoder::new(config.codec, &config.interceptors);
    let mut buffer = Vec::new();
    let mut pending = FuturesUnordered::new();
    let end = loop {
        let has_input = input.is_some();
        let reading = outputs.is_some();
        tokio::select! {
            biased;
            () = context.intake.cancelled(), if !has_input => break SessionEnd::Done,
            () = context.intake.cancelled(), if reading => {
                // Intake stopped: read nothing more, and drop the outputs so downstream
                // (which may feed this very client) can drain and close the input; what
                // still arrives is sent.
                *outputs = None;
            }
            Some(_) = pending.next(), if !pending.is_empty() => {}
            batch = async { input.as_mut()?.recv().await }, if has_input => {
                let Some(batch) = batch else {
                    if outputs.as_ref().is_some_and(|(output, _)| output.is_connected()) {
                        // Nothing more to send, but what the server sends is still wanted:
                        // read on until it closes or intake stops, as any source does.
                        *input = None;
                        continue;
                    }
                    break SessionEnd::Done;
                };
                let batch = keep_sendable(context, stream, batch);
                let mut sent_ok = true;
                let mut delivered = Vec::new();
                for event in batch {
                    let events = encode_batch(&mut encoder, vec![event], &mut buffer, &context.metrics);
                    if events.is_empty() {
                        continue;
                    }
                    let message = if is_text(&buffer) {
                        Message::text(String::from_utf8_lossy(&buffer).into_owned())
                    } else {
                        Message::binary(buffer.clone())
                    };
                    if sent_ok {
                        sent_ok = sink.send(message).await.is_ok();
                    }
                    if sent_ok {
                        delivered.extend(events);
                    } else {
                        complete_written(events, false, &context.metrics);
                    }
                }
                complete_written(delivered, true, &context.metrics);
                if !sent_ok {
                    break SessionEnd::Broken;
                }
            }
            message = messages.next(), if reading => {
                let bytes = match message {
                    Some(Ok(Message::Text(text))) => bytes::Bytes::from(text),
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break SessionEnd::Broken,
                };
                let Some((output, errors)) = outputs.as_ref() else { continue };
                let target = IngestTarget {
                    id: &context.id,
                    output,
                    errors,
                    metrics: &context.metrics,
                    intake: &context.intake,
                };
                if let Some(waiting) = ingest_message(&mut decoder, &bytes, &target).await {
                    pending.push(waiting);
                }
            }
        }
    };
    while pending.next().await.is_some() {}
    let _ = sink.close().await;
    end
}
