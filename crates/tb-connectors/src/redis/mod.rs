//! `redis`: Redis streams and pub/sub through the redis crate.
//!
//! A stream is read through a consumer group (`XREADGROUP`). An entry is acknowledged
//! (`XACK`) once its events' acknowledgement resolves: delivered, or rejected (appended to
//! `dead_letter_stream` first, when there is one). An errored entry is left pending, and so is
//! everything taken when the process dies: entries idle past `claim_idle` are claimed
//! (`XAUTOCLAIM`) by a consumer of the group, this one included, and handled again, and a
//! restarted consumer reads its own pending entries first. At least once, then.
//!
//! Pub/sub is fire and forget on Redis's side: messages are decoded and handed on, nothing
//! is confirmed. Sending appends each event to a stream (`XADD`, trimmed with `MAXLEN ~`) or
//! publishes it to a channel, a batch per round trip; an event is delivered once Redis
//! replied for it.
//!
//! Each part has its own connection, made again with backoff when lost (status
//! `reconnecting` with the error meanwhile).

mod config;
mod pubsub;
mod sink;
mod streams;

pub use config::{RedisConfig, StartFrom};

use std::time::Duration;

use tb_event::ComponentId;

use crate::core::{
    BuildError, Connector, ConnectorBuilder, ConnectorContext, FieldTemplate, Remote, Roles,
    StartFuture, parse_config, redact_url, start_running,
};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a command (not a blocking read) may wait for its reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds Redis connectors.
pub struct RedisBuilder;

impl ConnectorBuilder for RedisBuilder {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn roles(&self, has_inputs: bool) -> Roles {
        Roles::source_sending_when(has_inputs)
    }

    fn build(
        &self,
        id: &ComponentId,
        config: serde_json::Value,
        has_inputs: bool,
    ) -> Result<Box<dyn Connector>, BuildError> {
        let config: RedisConfig = parse_config(config)?;
        check(&config, has_inputs)?;
        let client = client_of(&config)?;
        let target = match (
            config.publish_stream.is_empty(),
            config.publish_channel.is_empty(),
        ) {
            (false, _) => Some(sink::Target::Stream(FieldTemplate::compile(
                "publish_stream",
                &config.publish_stream,
            )?)),
            (true, false) => Some(sink::Target::Channel(FieldTemplate::compile(
                "publish_channel",
                &config.publish_channel,
            )?)),
            (true, true) => None,
        };
        let consumer = config
            .consumer
            .clone()
            .unwrap_or_else(|| format!("tightbeam-{}", id.as_str()));
        Ok(Box::new(Redis {
            config,
            client,
            consumer,
            target,
        }))
    }
}

/// The settings that only make sense together, checked.
fn check(config: &RedisConfig, has_inputs: bool) -> Result<(), BuildError> {
    let subscribes = !config.channels.is_empty() || !config.patterns.is_empty();
    if config.stream.is_some() && subscribes {
        return Err(BuildError::at(
            "stream",
            "a redis connector reads a `stream` or subscribes to `channels`/`patterns`, not both: make two connectors",
        ));
    }
    if config.stream.is_none() && !subscribes && !has_inputs {
        return Err(BuildError::at(
            "stream",
            "a redis connector needs a `stream` to read, `channels` or `patterns` to subscribe to, or `inputs` to send",
        ));
    }
    let publishes = !config.publish_stream.is_empty() || !config.publish_channel.is_empty();
    if has_inputs && !publishes {
        return Err(BuildError::at(
            "publish_stream",
            "a redis connector with `inputs` needs `publish_stream` (XADD) or `publish_channel` (PUBLISH)",
        ));
    }
    if !config.publish_stream.is_empty() && !config.publish_channel.is_empty() {
        return Err(BuildError::at(
            "publish_channel",
            "set `publish_stream` or `publish_channel`, not both",
        ));
    }
    if config.count == 0 || config.max_pending == 0 {
        return Err(BuildError::at(
            "count",
            "`count` and `max_pending` must be at least 1",
        ));
    }
    if config.claim_idle < Duration::from_millis(100) {
        return Err(BuildError::at(
            "claim_idle",
            "claim_idle must be at least 100ms",
        ));
    }
    Ok(())
}

/// The client for `url`, with the CA file for `rediss://` when one is named.
fn client_of(config: &RedisConfig) -> Result<redis::Client, BuildError> {
    let wrong = |error: redis::RedisError| {
        BuildError::at(
            "url",
            format!(
                "`{}` is not a Redis URL ({error}); write redis://host:6379/0 or rediss://host:6380/0",
                redact_url(&config.url)
            ),
        )
    };
    match &config.tls_ca_file {
        None => redis::Client::open(config.url.as_str()).map_err(wrong),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|error| {
                BuildError::at(
                    "tls_ca_file",
                    format!("cannot read {}: {error}", path.display()),
                )
            })?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            redis::Client::build_with_tls(config.url.as_str(), certificates).map_err(wrong)
        }
    }
}

/// A built Redis connector.
struct Redis {
    config: RedisConfig,
    client: redis::Client,
    consumer: String,
    target: Option<sink::Target>,
}

impl Connector for Redis {
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        start_running(async move {
            let ConnectorContext {
                id,
                output,
                errors,
                input,
                intake,
                status,
                metrics,
                data_dir: _,
            } = context;
            let server = Server {
                remote: Remote::new(id, &self.config.url, status, metrics, intake),
                config: self.config,
                client: self.client,
                consumer: self.consumer,
            };
            let receiving = async {
                match &server.config.stream {
                    Some(stream) => streams::consume(&server, stream, &output, &errors).await,
                    None if !server.config.channels.is_empty()
                        || !server.config.patterns.is_empty() =>
                    {
                        pubsub::subscribe(&server, &output, &errors).await;
                    }
                    None => {
                        output.finish();
                        errors.finish();
                    }
                }
            };
            let sending = async {
                if let (Some(input), Some(target)) = (input, &self.target) {
                    sink::send(&server, target, input).await;
                }
            };
            tokio::join!(receiving, sending);
            Ok(())
        })
    }
}

/// What every part shares: the client and settings, and where they report.
struct Server {
    remote: Remote,
    config: RedisConfig,
    client: redis::Client,
    consumer: String,
}

impl Server {
    /// A new connection. `blocking_for` is the longest a command on it may block server
    /// side (a blocking read), added to the reply timeout.
    async fn connection(
        &self,
        blocking_for: Duration,
    ) -> Result<redis::aio::MultiplexedConnection, String> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT + blocking_for));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|error| self.error_text(&error))
    }

    /// A Redis error as text, without the URL's credentials should it quote them.
    fn error_text(&self, error: &redis::RedisError) -> String {
        let text = crate::core::error_chain(error);
        if self.config.url == self.remote.shown_url {
            text
        } else {
            text.replace(&self.config.url, &self.remote.shown_url)
        }
    }
}
