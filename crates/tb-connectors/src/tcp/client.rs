//! The TCP client: connects (and reconnects with backoff), sends events from its inputs, and
//! decodes what the server sends into events, one stream per connection.

use std::sync::Arc;

use tb_codec::Encoder;
use tb_event::{EventBatch, KeyString, ObjectMap, StreamId, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use super::config::TcpClientConfig;
use crate::core::{
    AtEnd, Backoff, Connector, ConnectorContext, ConnectorError, IngestTarget, StartFuture,
    StreamDecoder, complete_written, connect_with_backoff, encode_batch, ingest_reader, pause,
};

pub(super) struct TcpClient {
    config: TcpClientConfig,
}

impl TcpClient {
    pub(super) fn new(config: TcpClientConfig) -> Self {
        Self { config }
    }
}

impl Connector for TcpClient {
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        Box::pin(async move {
            let running: crate::RunningConnector = Box::pin(run(self.config, context));
            Ok(running)
        })
    }
}

/// Why a connection ended.
enum ConnectionEnd {
    /// The input closed: the connector is done.
    InputClosed,
    /// Intake stopped and there is no input to drain: done.
    Stopped,
    /// The connection broke or the server closed it: reconnect.
    Broken,
}

async fn run(config: TcpClientConfig, mut context: ConnectorContext) -> Result<(), ConnectorError> {
    let mut input = context.input.take();
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let mut next_stream = 0u64;
    loop {
        // A client with input keeps trying until that input closes, so nothing it was given
        // is dropped; one that only reads stops with intake.
        let Some(socket) = connect_with_backoff(
            || TcpStream::connect(&config.address),
            &mut backoff,
            &context.intake,
            input.is_none(),
            &context.id,
            &config.address,
        )
        .await
        else {
            return Ok(());
        };
        let stream = StreamId(next_stream);
        next_stream += 1;
        let (read_half, write_half) = socket.into_split();
        match serve_connection(&config, &context, &mut input, stream, read_half, write_half).await {
            ConnectionEnd::InputClosed | ConnectionEnd::Stopped => return Ok(()),
            ConnectionEnd::Broken => {
                tracing::warn!(connector = %context.id, address = %config.address, "Connection ended; reconnecting.");
                // A server that accepts and closes at once must not be hammered.
                pause(backoff.next_delay(), &context.intake, input.is_none()).await;
            }
        }
    }
}

async fn serve_connection(
    config: &TcpClientConfig,
    context: &ConnectorContext,
    input: &mut Option<mpsc::Receiver<EventBatch>>,
    stream: StreamId,
    read_half: OwnedReadHalf,
    write_half: OwnedWriteHalf,
) -> ConnectionEnd {
    let mut fields = ObjectMap::new();
    fields.insert(
        KeyString::from("remote_address"),
        Value::from(config.address.as_str()),
    );
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
    let reading = ingest_reader(read_half, &mut decoder, target, 0, AtEnd::Finish, |_| {});
    tokio::pin!(reading);
    let written = {
        let writing = async {
            match input.as_mut() {
                Some(input) => write_input(config, context, input, write_half).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            end = writing => Some(end),
            _ = &mut reading => None,
        }
    };
    match written {
        Some(ConnectionEnd::InputClosed) if context.output.is_connected() => {
            // Nothing more to send, but what the server sends is still wanted: read on
            // until the server closes or intake stops, as any source does.
            *input = None;
            let _ = (&mut reading).await;
            reading_ended(context, input)
        }
        Some(end) => end,
        None => reading_ended(context, input),
    }
}

/// The server closed its side, or intake stopped.
fn reading_ended(
    context: &ConnectorContext,
    input: &Option<mpsc::Receiver<EventBatch>>,
) -> ConnectionEnd {
    if context.intake.is_cancelled() && input.is_none() {
        ConnectionEnd::Stopped
    } else {
        ConnectionEnd::Broken
    }
}

async fn write_input(
    config: &TcpClientConfig,
    context: &ConnectorContext,
    input: &mut mpsc::Receiver<EventBatch>,
    mut writer: OwnedWriteHalf,
) -> ConnectionEnd {
    let mut encoder = Encoder::new(config.codec, &config.interceptors);
    let mut buffer = Vec::new();
    while let Some(batch) = input.recv().await {
        context.metrics.input.inc_by(batch.len() as u64);
        let events = encode_batch(&mut encoder, batch, &mut buffer, &context.metrics);
        let written = async {
            writer.write_all(&buffer).await?;
            writer.flush().await
        }
        .await;
        let ok = written.is_ok();
        complete_written(events, ok, &context.metrics);
        if !ok {
            return ConnectionEnd::Broken;
        }
    }
    buffer.clear();
    if encoder.finish(&mut buffer).is_ok() {
        let _ = writer.write_all(&buffer).await;
    }
    let _ = writer.shutdown().await;
    ConnectionEnd::InputClosed
}
