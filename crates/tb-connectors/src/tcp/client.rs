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
    AtEnd, Backoff, Connector, ConnectorContext, ConnectorError, IngestTarget, InputQueue,
    OutputSender, StartFuture, StreamDecoder, complete_written, connect_with_backoff, encode_batch,
    ingest_reader, pause,
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

/// The connector's outputs, held apart from its context so they can be dropped when intake
/// stops: downstream (possibly a pipeline that feeds this client back) can then drain and
/// close this client's input.
type Outputs = Option<(OutputSender, OutputSender)>;

async fn run(config: TcpClientConfig, mut context: ConnectorContext) -> Result<(), ConnectorError> {
    let mut input = context.input.take();
    let mut outputs: Outputs = Some((
        std::mem::replace(&mut context.output, OutputSender::disconnected()),
        std::mem::replace(&mut context.errors, OutputSender::disconnected()),
    ));
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
            &context.status,
        )
        .await
        else {
            return Ok(());
        };
        if context.intake.is_cancelled() {
            outputs = None;
        }
        let stream = StreamId(next_stream);
        next_stream += 1;
        let connection = Connection {
            config: &config,
            context: &context,
            stream,
        };
        match connection
            .serve(&mut input, &mut outputs, socket.into_split())
            .await
        {
            ConnectionEnd::InputClosed | ConnectionEnd::Stopped => return Ok(()),
            ConnectionEnd::Broken => {
                tracing::warn!(connector = %context.id, address = %config.address, "Connection ended; reconnecting.");
                context.status.set_with_error(
                    crate::core::ComponentStatus::Reconnecting,
                    format!("connection to {} ended", config.address),
                );
                // A server that accepts and closes at once must not be hammered.
                pause(backoff.next_delay(), &context.intake, input.is_none()).await;
            }
        }
    }
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
        outputs: &mut Outputs,
        (read_half, write_half): (OwnedReadHalf, OwnedWriteHalf),
    ) -> ConnectionEnd {
        let has_input = input.is_some();
        let read_on = outputs
            .as_ref()
            .is_some_and(|(output, _)| output.is_connected());
        let mut reading = Box::pin(self.read(read_half, outputs.clone()));
        let mut writing = Box::pin(async {
            match input.as_mut() {
                Some(input) => write_input(self.config, self.context, input, write_half).await,
                None => std::future::pending().await,
            }
        });
        let first = tokio::select! {
            end = &mut writing => Some(end),
            () = &mut reading => None,
        };
        match first {
            Some(ConnectionEnd::InputClosed) if read_on => {
                // Nothing more to send, but what the server sends is still wanted: read on
                // until the server closes or intake stops, as any source does.
                drop(writing);
                *input = None;
                reading.await;
                if self.context.intake.is_cancelled() {
                    ConnectionEnd::Stopped
                } else {
                    ConnectionEnd::Broken
                }
            }
            Some(end) => end,
            None if self.context.intake.is_cancelled() => {
                // Intake stopped: produce nothing more, and drop the outputs so downstream
                // (which may feed this very client) can drain and close the input; what
                // still arrives is written out.
                drop(reading);
                *outputs = None;
                if has_input {
                    writing.await
                } else {
                    ConnectionEnd::Stopped
                }
            }
            None => ConnectionEnd::Broken,
        }
    }

    /// Decodes what the server sends until it closes or intake stops.
    async fn read(&self, read_half: OwnedReadHalf, outputs: Outputs) {
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
    input: &mut InputQueue,
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
