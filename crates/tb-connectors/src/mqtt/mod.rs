//! `mqtt`: MQTT 3.1.1 through rumqttc. It subscribes to `topics` and, at QoS 1, sends each
//! message's PUBACK only once its events' acknowledgement resolves, in the order the
//! messages came (as MQTT asks): delivered or rejected is a PUBACK (MQTT has no refusal; a
//! rejected message is counted and dropped), errored ends the session without one, so the
//! broker delivers the message again when the connector reconnects (with the default
//! persistent session). It publishes what its `inputs` send to a topic made from each event;
//! at QoS 1 an event is delivered once the broker's PUBACK arrives.
//!
//! Each half has its own connection, made again with backoff when lost (status
//! `reconnecting` with the error meanwhile). Messages not yet acknowledged when the
//! connection or the process is lost are delivered again: at least once (`tests/mqtt.rs`
//! kills the engine with -9 in the middle of 10,000 messages).

mod config;
mod sink;
mod source;

pub use config::MqttConfig;

use std::time::Duration;

use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet, QoS};
use tb_event::ComponentId;

use crate::core::{
    Backoff, BuildError, Connector, ConnectorBuilder, ConnectorContext, FieldTemplate, Remote,
    Roles, StartFuture, parse_config, redact_url, start_running,
};

/// How long a connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds MQTT connectors.
pub struct MqttBuilder;

impl ConnectorBuilder for MqttBuilder {
    fn kind(&self) -> &'static str {
        "mqtt"
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
        let config: MqttConfig = parse_config(config)?;
        let address = Address::parse(&config.url)?;
        if config.topics.is_empty() && !has_inputs {
            return Err(BuildError::at(
                "topics",
                "an mqtt connector needs `topics` to subscribe to, or `inputs` to publish",
            ));
        }
        if has_inputs && config.publish_topic.is_empty() {
            return Err(BuildError::at(
                "publish_topic",
                "an mqtt connector with `inputs` needs `publish_topic`, such as \"sensors/{{ .room }}\"",
            ));
        }
        qos_of("qos", config.qos)?;
        qos_of("publish_qos", config.publish_qos)?;
        if config.keep_alive < Duration::from_secs(1) {
            return Err(BuildError::at(
                "keep_alive",
                "keep_alive must be at least 1s",
            ));
        }
        let tls = match address.tls {
            true => Some(
                crate::core::rustls_client_config(config.tls_ca_file.as_deref())
                    .map_err(|message| BuildError::at("tls_ca_file", message))?,
            ),
            false => None,
        };
        let publish_topic = FieldTemplate::compile("publish_topic", &config.publish_topic)?;
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("tightbeam-{}", id.as_str()));
        Ok(Box::new(Mqtt {
            config,
            address,
            tls,
            client_id,
            publish_topic,
        }))
    }
}

/// `0` or `1` as a QoS; 2 is not offered (at least once is what acknowledgements give).
fn qos_of(key: &str, qos: u8) -> Result<QoS, BuildError> {
    match qos {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        other => Err(BuildError::at(
            key,
            format!("{key} {other} is not offered: write 0 (at most once) or 1 (at least once)"),
        )),
    }
}

/// Where the broker is, read from `url`.
#[derive(Clone, Debug)]
struct Address {
    host: String,
    port: u16,
    tls: bool,
    credentials: Option<(String, String)>,
}

impl Address {
    fn parse(url: &str) -> Result<Self, BuildError> {
        let wrong = |why: String| {
            BuildError::at(
                "url",
                format!(
                    "`{}` {why}; write mqtt://host:1883 or mqtts://host:8883",
                    redact_url(url)
                ),
            )
        };
        let parsed =
            reqwest::Url::parse(url).map_err(|error| wrong(format!("is not a URL ({error})")))?;
        let tls = match parsed.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => return Err(wrong(format!("has scheme `{other}`"))),
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| wrong("names no host".to_owned()))?
            .to_owned();
        let port = parsed.port().unwrap_or(if tls { 8883 } else { 1883 });
        let credentials = (!parsed.username().is_empty()).then(|| {
            (
                percent_decode(parsed.username()),
                percent_decode(parsed.password().unwrap_or("")),
            )
        });
        Ok(Self {
            host,
            port,
            tls,
            credentials,
        })
    }
}

/// `%XX` escapes of a URL's user or password, decoded.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// A built MQTT connector.
struct Mqtt {
    config: MqttConfig,
    address: Address,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    client_id: String,
    publish_topic: FieldTemplate,
}

impl Connector for Mqtt {
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
            let broker = Broker {
                remote: Remote::new(id, &self.config.url, status, metrics, intake),
                config: self.config,
                address: self.address,
                tls: self.tls,
                client_id: self.client_id,
            };
            let subscribing = async {
                if broker.config.topics.is_empty() {
                    output.finish();
                    errors.finish();
                } else {
                    source::subscribe(&broker, &output, &errors).await;
                }
            };
            let publishing = async {
                if let Some(input) = input {
                    sink::publish(&broker, &self.publish_topic, input).await;
                }
            };
            tokio::join!(subscribing, publishing);
            Ok(())
        })
    }
}

/// What both halves share: the broker's address and settings, and where they report.
struct Broker {
    remote: Remote,
    config: MqttConfig,
    address: Address,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    client_id: String,
}

/// One connection: the client that queues requests, and the event loop that carries them.
type Session = (AsyncClient, EventLoop);

/// What differs between the halves' connections.
struct SessionKind {
    client_id: String,
    /// Keep the session while away.
    persistent: bool,
    /// PUBACKs are sent by the source, not on receipt.
    manual_acks: bool,
    /// Requests queued at most.
    capacity: usize,
}

impl Broker {
    /// Connects with backoff (status `reconnecting` with the error meanwhile); `None` when
    /// intake stopped first.
    async fn connect(&self, kind: &SessionKind, backoff: &mut Backoff) -> Option<Session> {
        self.remote
            .with_backoff(|| self.open(kind), backoff, true)
            .await
    }

    /// A connection whose CONNACK arrived.
    async fn open(&self, kind: &SessionKind) -> Result<Session, String> {
        let address = &self.address;
        let mut options = MqttOptions::new(&kind.client_id, &address.host, address.port);
        options
            .set_keep_alive(self.config.keep_alive)
            .set_clean_session(!kind.persistent)
            .set_manual_acks(kind.manual_acks)
            .set_request_channel_capacity(kind.capacity);
        if let Some((user, password)) = &address.credentials {
            options.set_credentials(user, password);
        }
        if let Some(tls) = &self.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
        let (client, mut eventloop) = AsyncClient::new(options, kind.capacity);
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        return match ack.code {
                            ConnectReturnCode::Success => Ok(()),
                            refused => {
                                Err(format!("the broker refused the connection: {refused:?}"))
                            }
                        };
                    }
                    Ok(_) => {}
                    Err(error) => return Err(crate::core::error_chain(&error)),
                }
            }
        })
        .await
        .map_err(|_| format!("no CONNACK within {CONNECT_TIMEOUT:?}"))?;
        connected.map(|()| (client, eventloop))
    }
}
