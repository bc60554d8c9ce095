//! The WebSocket client: connects (and reconnects with backoff), sends events from its
//! inputs as messages, and decodes received messages into events, one stream per connection.

use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use tb_codec::Encoder;
use tb_event::{KeyString, ObjectMap, StreamId, Value};
use tokio_tungstenite::tungstenite::Message;

use super::config::WsClientConfig;
use super::{is_text, redact_url};
use crate::core::{
    Backoff, ClientOutputs, ClientProtocol, ClientSession, Connector, ConnectorContext,
    ConnectorError, IngestTarget, InputQueue, SessionEnd, StartFuture, StreamDecoder, WriteEnd,
    complete_written, encode_batch, ingest_message, keep_sendable, run_client, serve_halves,
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

/// Serves one session: what the server sends is read while events are written, never one
/// waiting for the other (a server that answers each message before it reads the next would
/// otherwise block both sides).
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
    let (sink, messages) = socket.split();
    let has_input = input.is_some();
    let read_on = outputs
        .as_ref()
        .is_some_and(|(output, _)| output.is_connected());
    let reading = read_messages(config, context, stream, messages, outputs.clone());
    let writing = async {
        match input.as_mut() {
            Some(input) => write_input(config, context, stream, input, sink).await,
            None => std::future::pending().await,
        }
    };
    let ended = serve_halves(context, has_input, read_on, reading, writing).await;
    if ended.input_done {
        *input = None;
    }
    if ended.outputs_done {
        *outputs = None;
    }
    ended.end
}

/// Sends each event from `input` as one message until the input closes or a send fails.
async fn write_input(
    config: &WsClientConfig,
    context: &ConnectorContext,
    stream: StreamId,
    input: &mut InputQueue,
    mut sink: futures::stream::SplitSink<Socket, Message>,
) -> WriteEnd {
    let mut encoder = Encoder::new(config.codec, &config.interceptors);
    let mut buffer = Vec::new();
    while let Some(batch) = input.recv().await {
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
            return WriteEnd::Broken;
        }
    }
    let _ = sink.close().await;
    WriteEnd::InputClosed
}

/// Decodes what the server sends until it closes, or forever when nothing reads this
/// client's output (the session then ends by its writing half).
async fn read_messages(
    config: &WsClientConfig,
    context: &ConnectorContext,
    stream: StreamId,
    mut messages: futures::stream::SplitStream<Socket>,
    outputs: ClientOutputs,
) {
    let Some((output, errors)) = outputs else {
        return std::future::pending().await;
    };
    let mut fields = ObjectMap::new();
    fields.insert(KeyString::from("url"), Value::from(redact_url(&config.url)));
    let mut decoder = StreamDecoder::new(
        context.id.clone(),
        stream,
        config.codec,
        &config.interceptors,
        Some(Arc::new(fields)),
    );
    let target = IngestTarget {
        id: &context.id,
        output: &output,
        errors: &errors,
        metrics: &context.metrics,
        intake: &context.intake,
    };
    let mut pending = FuturesUnordered::new();
    loop {
        let message = tokio::select! {
            biased;
            () = context.intake.cancelled() => break,
            Some(_) = pending.next(), if !pending.is_empty() => continue,
            message = messages.next() => message,
        };
        let bytes = match message {
            Some(Ok(Message::Text(text))) => bytes::Bytes::from(text),
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        };
        if let Some(waiting) = ingest_message(&mut decoder, &bytes, &target).await {
            pending.push(waiting);
        }
    }
    while pending.next().await.is_some() {}
}
