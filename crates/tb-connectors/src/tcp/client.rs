//! The TCP client: connects (and reconnects with backoff), sends events from its inputs, and
//! decodes what the server sends into events, one stream per connection.

use std::sync::Arc;

use tb_codec::Encoder;
use tb_event::{KeyString, ObjectMap, StreamId, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::config::TcpClientConfig;
use crate::core::{
    AtEnd, Backoff, ClientOutputs, ClientProtocol, ClientSession, Connector, ConnectorContext,
    ConnectorError, IngestTarget, InputQueue, SessionEnd, StartFuture, StreamDecoder, WriteEnd,
    complete_written, encode_batch, ingest_reader, keep_sendable, run_client, serve_halves,
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

impl ClientProtocol for TcpProtocol<'_> {
    type Connection = TcpStream;
    type Error = std::io::Error;

    async fn connect(&self) -> Result<TcpStream, std::io::Error> {
        TcpStream::connect(&self.config.address).await
    }

    async fn serve(&self, socket: TcpStream, session: ClientSession<'_>) -> SessionEnd {
        let connection = Connection {
            config: self.config,
            context: session.context,
            stream: session.stream,
        };
        connection
            .serve(session.input, session.outputs, socket.into_split())
            .await
    }
}

/// The TCP protocol of a client: connect to `address`, write encoded events, read frames.
struct TcpProtocol<'a> {
    config: &'a TcpClientConfig,
}

async fn run(config: TcpClientConfig, context: ConnectorContext) -> Result<(), ConnectorError> {
    let backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let peer = config.address.clone();
    run_client(TcpProtocol { config: &config }, context, &peer, backoff).await
}

struct Connection<'a> {
    config: &'a TcpClientConfig,
    context: &'a ConnectorContext,
    stream: StreamId,
}

impl Connection<'_> {
    async fn serve(
        &self,
        input: &mut Option<InputQueue>,
        outputs: &mut ClientOutputs,
        (read_half, write_half): (OwnedReadHalf, OwnedWriteHalf),
    ) -> SessionEnd {
        let has_input = input.is_some();
        let read_on = outputs
            .as_ref()
            .is_some_and(|(output, _)| output.is_connected());
        let reading = self.read(read_half, outputs.clone());
        let writing = async {
            match input.as_mut() {
                Some(input) => {
                    write_input(self.config, self.context, self.stream, input, write_half).await
                }
                None => std::future::pending().await,
            }
        };
        let ended = serve_halves(self.context, has_input, read_on, reading, writing).await;
        if ended.input_done {
            *input = None;
        }
        if ended.outputs_done {
            *outputs = None;
        }
        ended.end
    }

    /// Decodes what the server sends until it closes or intake stops.
    async fn read(&self, read_half: OwnedReadHalf, outputs: ClientOutputs) {
        let Some((output, errors)) = outputs else {
            return std::future::pending().await;
        };
        let mut fields = ObjectMap::new();
        fields.insert(
            KeyString::from("remote_address"),
            Value::from(self.config.address.as_str()),
        );
        let mut decoder = StreamDecoder::new(
            self.context.id.clone(),
            self.stream,
            self.config.codec,
            &self.config.interceptors,
            Some(Arc::new(fields)),
        );
        let target = IngestTarget {
            id: &self.context.id,
            output: &output,
            errors: &errors,
            metrics: &self.context.metrics,
            intake: &self.context.intake,
        };
        let _ = ingest_reader(read_half, &mut decoder, target, 0, AtEnd::Finish, |_| {}).await;
    }
}

async fn write_input(
    config: &TcpClientConfig,
    context: &ConnectorContext,
    stream: StreamId,
    input: &mut InputQueue,
    mut writer: OwnedWriteHalf,
) -> WriteEnd {
    let mut encoder = Encoder::new(config.codec, &config.interceptors);
    let mut buffer = Vec::new();
    while let Some(batch) = input.recv().await {
        let batch = keep_sendable(context, stream, batch);
        let events = encode_batch(&mut encoder, batch, &mut buffer, &context.metrics);
        let written = async {
            writer.write_all(&buffer).await?;
            writer.flush().await
        }
        .await;
        let ok = written.is_ok();
        complete_written(events, ok, &context.metrics);
        if !ok {
            return WriteEnd::Broken;
        }
    }
    buffer.clear();
    if encoder.finish(&mut buffer).is_ok() {
        let _ = writer.write_all(&buffer).await;
    }
    let _ = writer.shutdown().await;
    WriteEnd::InputClosed
}
