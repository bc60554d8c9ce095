//! `stdin` and `stdout`: the process's own standard streams.
//!
//! `stdin` reads until end of input and then finishes, so `tightbeam run` exits when the
//! piped input is done and delivered. `stdout` writes each batch and flushes it.

use serde::Deserialize;
use tb_codec::{CodecKind, Encoder, InterceptorConfig};
use tb_event::{ComponentId, StreamId};

use crate::core::{
    AtEnd, BuildError, Connector, ConnectorBuilder, ConnectorContext, ConnectorError, IngestTarget,
    Roles, StartFuture, StreamDecoder, ingest_reader, parse_config, write_batches,
};

/// `kind = "stdin"` / `kind = "stdout"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioConfig {
    /// How frames become values: json | msgpack | csv | string | bytes.
    #[serde(default = "crate::core::defaults::codec")]
    pub codec: CodecKind,
    /// Byte transforms in receive order; default one line per frame.
    #[serde(default = "crate::core::defaults::line_interceptors")]
    pub interceptors: Vec<InterceptorConfig>,
}

/// Builds `stdin` sources.
pub struct StdinBuilder;

/// Builds `stdout` sinks.
pub struct StdoutBuilder;

impl ConnectorBuilder for StdinBuilder {
    fn kind(&self) -> &'static str {
        "stdin"
    }

    fn roles(&self, _has_inputs: bool) -> Roles {
        Roles::SOURCE
    }

    fn build(
        &self,
        _id: &ComponentId,
        config: serde_json::Value,
        _has_inputs: bool,
    ) -> Result<Box<dyn Connector>, BuildError> {
        Ok(Box::new(Stdin {
            config: parse_config(config)?,
        }))
    }
}

impl ConnectorBuilder for StdoutBuilder {
    fn kind(&self) -> &'static str {
        "stdout"
    }

    fn roles(&self, _has_inputs: bool) -> Roles {
        Roles::SINK
    }

    fn build(
        &self,
        _id: &ComponentId,
        config: serde_json::Value,
        _has_inputs: bool,
    ) -> Result<Box<dyn Connector>, BuildError> {
        Ok(Box::new(Stdout {
            config: parse_config(config)?,
        }))
    }
}

struct Stdin {
    config: StdioConfig,
}

impl Connector for Stdin {
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        Box::pin(async move {
            let running: crate::RunningConnector = Box::pin(async move {
                let mut decoder = StreamDecoder::new(
                    context.id.clone(),
                    StreamId(0),
                    self.config.codec,
                    &self.config.interceptors,
                    None,
                );
                let target = IngestTarget {
                    id: &context.id,
                    output: &context.output,
                    errors: &context.errors,
                    metrics: &context.metrics,
                    intake: &context.intake,
                };
                ingest_reader(
                    tokio::io::stdin(),
                    &mut decoder,
                    target,
                    0,
                    AtEnd::Last,
                    |_| {},
                )
                .await
                .map(|_| ())
                .map_err(|source| ConnectorError::Io {
                    context: "cannot read stdin".to_owned(),
                    source,
                })
            });
            Ok(running)
        })
    }
}

struct Stdout {
    config: StdioConfig,
}

impl Connector for Stdout {
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        Box::pin(async move {
            let running: crate::RunningConnector = Box::pin(async move {
                let Some(input) = context.input else {
                    return Ok(());
                };
                let encoder = Encoder::new(self.config.codec, &self.config.interceptors);
                write_batches(input, encoder, tokio::io::stdout(), &context.metrics)
                    .await
                    .map_err(|source| ConnectorError::Io {
                        context: "cannot write stdout".to_owned(),
                        source,
                    })
            });
            Ok(running)
        })
    }
}
