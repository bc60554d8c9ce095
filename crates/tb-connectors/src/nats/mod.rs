//! `nats`: NATS through async-nats. It subscribes to a core subject (wildcards, queue
//! groups), or consumes a JetStream stream through a durable pull consumer and confirms
//! each message once its events' acknowledgement resolves: delivered is `ack`, errored is
//! `nak` with `nak_delay` (delivered again), rejected is `term` (never again). It publishes
//! what its `inputs` send to a subject made from each event, core or into JetStream (then
//! an event is delivered once the publish ack arrives); a reply to a request it received
//! goes back to the requester's reply subject.
//!
//! Both halves share one client. It connects with backoff at start; afterwards async-nats
//! reconnects by itself (with this connector's backoff) and resubscribes, and the status is
//! `reconnecting` with the error while the server is away. JetStream messages not yet
//! acknowledged when the connection or the process is lost are delivered again after
//! `ack_wait`: at least once, never lost.

mod config;
mod sink;
mod source;

pub use config::{Declarations, DeliverFrom, NatsConfig, Storage, StreamDeclaration};

use std::sync::Mutex;

use tb_event::ComponentId;

use crate::core::{
    Backoff, BuildError, Connector, ConnectorBuilder, ConnectorContext, FieldTemplate, Remote,
    Roles, StartFuture, parse_config, redact_url, start_running,
};

/// Builds NATS connectors.
pub struct NatsBuilder;

impl ConnectorBuilder for NatsBuilder {
    fn kind(&self) -> &'static str {
        "nats"
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
        let config: NatsConfig = parse_config(config)?;
        check(&config, has_inputs)?;
        let publish_subject = FieldTemplate::compile("publish_subject", &config.publish_subject)?;
        let consumer = config
            .consumer
            .clone()
            .unwrap_or_else(|| format!("tightbeam-{}", id.as_str()));
        Ok(Box::new(Nats {
            config,
            consumer,
            publish_subject,
        }))
    }
}

/// Checks what serde cannot: the URL, and that the keys make one thing to do.
fn check(config: &NatsConfig, has_inputs: bool) -> Result<(), BuildError> {
    if let Err(error) = config.url.parse::<async_nats::ServerAddr>() {
        return Err(BuildError::at(
            "url",
            format!(
                "`{}` is not a NATS URL ({error}); write nats://host:4222 or tls://host:4222",
                redact_url(&config.url)
            ),
        ));
    }
    match (&config.subject, &config.stream) {
        (Some(_), Some(_)) => {
            return Err(BuildError::at(
                "stream",
                "set `subject` (core NATS) or `stream` (JetStream), not both",
            ));
        }
        (None, None) if !has_inputs => {
            return Err(BuildError::at(
                "subject",
                "a nats connector needs `subject` or `stream` to receive, or `inputs` to publish",
            ));
        }
        _ => {}
    }
    if config.queue_group.is_some() && config.subject.is_none() {
        return Err(BuildError::at(
            "queue_group",
            "`queue_group` belongs with `subject` (core NATS); JetStream processes share work through `consumer`",
        ));
    }
    if has_inputs && config.publish_subject.is_empty() && config.subject.is_none() {
        return Err(BuildError::at(
            "publish_subject",
            "a nats connector with `inputs` needs `publish_subject`, such as \"orders.{{ .region }}\" (only one that subscribes to `subject` may go without, to answer requests)",
        ));
    }
    if config.max_ack_pending < 1 {
        return Err(BuildError::at(
            "max_ack_pending",
            "max_ack_pending must be at least 1",
        ));
    }
    if config.max_deliver == 0 || config.max_deliver < -1 {
        return Err(BuildError::at(
            "max_deliver",
            "max_deliver must be at least 1, or -1 for no limit",
        ));
    }
    for (index, stream) in config.declare.streams.iter().enumerate() {
        if stream.subjects.is_empty() {
            return Err(BuildError::at(
                &format!("declare.streams[{index}].subjects"),
                format!("stream `{}` needs at least one subject", stream.name),
            ));
        }
    }
    Ok(())
}

/// A built NATS connector.
struct Nats {
    config: NatsConfig,
    /// The durable consumer's name.
    consumer: String,
    publish_subject: FieldTemplate,
}

impl Connector for Nats {
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
                consumer: self.consumer,
            };
            let Some(client) = server.connect().await else {
                // Stopped before the server could be reached: nothing was taken.
                output.finish();
                errors.finish();
                if let Some(input) = input {
                    sink::fail_unreachable(&server, input).await;
                }
                return Ok(());
            };
            let receiving = source::receive(&server, &client, &output, &errors);
            let publishing = async {
                if let Some(input) = input {
                    sink::publish(&server, &client, &self.publish_subject, input).await;
                }
            };
            tokio::join!(receiving, publishing);
            // Acknowledgements and publishes still buffered reach the server first.
            let _ = client.flush().await;
            let _ = client.drain().await;
            Ok(())
        })
    }
}

/// What both halves share: the server's address and settings, and where they report.
struct Server {
    remote: Remote,
    config: NatsConfig,
    consumer: String,
}

impl Server {
    /// Connects with backoff (status `reconnecting` with the error meanwhile) and creates
    /// the declared streams; `None` when intake stopped first.
    async fn connect(&self) -> Option<async_nats::Client> {
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        self.remote
            .with_backoff(|| self.connect_once(), &mut backoff, true)
            .await
    }

    async fn connect_once(&self) -> Result<async_nats::Client, String> {
        let client = self
            .options()
            .await?
            .connect(self.config.url.as_str())
            .await
            .map_err(|error| self.without_credentials(crate::core::error_chain(&error)))?;
        self.declare(&client).await?;
        Ok(client)
    }

    async fn options(&self) -> Result<async_nats::ConnectOptions, String> {
        let mut options = match &self.config.credentials_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|error| {
                    format!("cannot read credentials_file {}: {error}", path.display())
                })?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some(path) = &self.config.tls_ca_file {
            options = options.add_root_certificates(path.clone());
        }
        let delays = Mutex::new(Backoff::new(
            self.config.reconnect_min,
            self.config.reconnect_max,
        ));
        let status = self.remote.status.clone();
        let shown_url = self.remote.shown_url.clone();
        let id = self.remote.id.clone();
        Ok(options
            .name(format!("tightbeam {}", self.remote.id.as_str()))
            .reconnect_delay_callback(move |attempts| {
                let mut delays = delays
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if attempts <= 1 {
                    delays.reset();
                }
                delays.next_delay()
            })
            .event_callback(move |event| {
                let status = status.clone();
                let shown_url = shown_url.clone();
                let id = id.clone();
                async move { report(&event, &status, &id, &shown_url) }
            }))
    }

    /// Creates the declared streams that are missing.
    async fn declare(&self, client: &async_nats::Client) -> Result<(), String> {
        let jetstream = async_nats::jetstream::new(client.clone());
        for stream in &self.config.declare.streams {
            let config = async_nats::jetstream::stream::Config {
                name: stream.name.clone(),
                subjects: stream.subjects.clone(),
                storage: match stream.storage {
                    Storage::File => async_nats::jetstream::stream::StorageType::File,
                    Storage::Memory => async_nats::jetstream::stream::StorageType::Memory,
                },
                ..Default::default()
            };
            jetstream
                .get_or_create_stream(config)
                .await
                .map_err(|error| {
                    format!(
                        "cannot create stream {}: {}",
                        stream.name,
                        crate::core::error_chain(&error)
                    )
                })?;
        }
        Ok(())
    }

    /// `text` with the URL's credentials, should it quote them, hidden.
    fn without_credentials(&self, text: String) -> String {
        if self.config.url == self.remote.shown_url {
            text
        } else {
            text.replace(&self.config.url, &self.remote.shown_url)
        }
    }
}

/// Shows the client's connection events in the status and the log.
fn report(
    event: &async_nats::Event,
    status: &crate::StatusCell,
    id: &ComponentId,
    shown_url: &str,
) {
    match event {
        async_nats::Event::Connected => {
            tracing::info!(connector = %id, url = %shown_url, "Connected to NATS.");
            status.set(crate::ComponentStatus::Running);
        }
        async_nats::Event::Disconnected => {
            tracing::warn!(connector = %id, url = %shown_url, "Lost the NATS connection; reconnecting. JetStream messages not yet acknowledged will be delivered again.");
            status.set_with_error(
                crate::ComponentStatus::Reconnecting,
                format!("lost the connection to {shown_url}"),
            );
        }
        // The client's own stop, at shutdown.
        async_nats::Event::Draining | async_nats::Event::Closed => {
            tracing::debug!(connector = %id, url = %shown_url, %event, "NATS client event.");
        }
        other => {
            tracing::warn!(connector = %id, url = %shown_url, event = %other, "NATS client event.")
        }
    }
}
