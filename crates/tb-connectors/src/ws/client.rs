//! The WebSocket client: connects (and reconnects with backoff), sends events from its
//! inputs as messages, and decodes received messages into events, one stream per connection.

use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use tb_codec::Encoder;
use tb_event::{EventBatch, KeyString, ObjectMap, StreamId, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::config::WsClientConfig;
use super::{is_text, redact_url};
use crate::core::{
    Backoff, Connector, ConnectorContext, ConnectorError, IngestTarget, StartFuture, StreamDecoder,
    complete_written, connect_with_backoff, encode_batch, ingest_message, pause,
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

enum SessionEnd {
    Done,
    Broken,
}

async fn run(config: WsClientConfig, mut context: ConnectorContext) -> Result<(), ConnectorError> {
    let mut input = context.input.take();
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let shown_url = redact_url(&config.url);
    let mut next_stream = 0u64;
    loop {
        let Some((socket, _response)) = connect_with_backoff(
            || tokio_tungstenite::connect_async(config.url.as_str()),
            &mut backoff,
            &context.intake,
            input.is_none(),
            &context.id,
            &shown_url,
        )
        .await
        else {
            return Ok(());
        };
        let stream = StreamId(next_stream);
        next_stream += 1;
        match session(&config, &context, &mut input, stream, socket).await {
            SessionEnd::Done => return Ok(()),
            SessionEnd::Broken => {
                tracing::warn!(connector = %context.id, url = %shown_url, "Session ended; reconnecting.");
                pause(backoff.next_delay(), &context.intake, input.is_none()).await;
            }
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn session(
    config: &WsClientConfig,
    context: &ConnectorContext,
    input: &mut Option<mpsc::Receiver<EventBatch>>,
    stream: StreamId,
    socket: Socket,
) -> SessionEnd {
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
    let target = IngestTarget {
        id: &context.id,
        output: &context.output,
        errors: &context.errors,
        metrics: &context.metrics,
        intake: &context.intake,
    };
    let mut encoder = Encoder::new(config.codec, &config.interceptors);
    let mut buffer = Vec::new();
    let mut pending = FuturesUnordered::new();
    let end = loop {
        let has_input = input.is_some();
        tokio::select! {
            biased;
            () = context.intake.cancelled(), if !has_input => break SessionEnd::Done,
            Some(_) = pending.next(), if !pending.is_empty() => {}
            batch = async { input.as_mut()?.recv().await }, if has_input => {
                let Some(batch) = batch else {
                    if context.output.is_connected() {
                        // Nothing more to send, but what the server sends is still wanted:
                        // read on until it closes or intake stops, as any source does.
                        *input = None;
                        continue;
                    }
                    break SessionEnd::Done;
                };
                context.metrics.input.inc_by(batch.len() as u64);
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
            message = messages.next() => {
                let bytes = match message {
                    Some(Ok(Message::Text(text))) => bytes::Bytes::from(text),
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break SessionEnd::Broken,
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
