//! `kind = "amqp"` settings.

use std::time::Duration;

use serde::Deserialize;
use tb_codec::{CodecKind, InterceptorConfig};

/// `kind = "amqp"`: RabbitMQ (AMQP 0-9-1). With `queue` it consumes; with `inputs` it
/// publishes to `exchange`; it may do both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// The broker, `amqp://user:password@host:5672/vhost` (`%2f` for the default vhost) or
    /// `amqps://` for TLS, whose certificate is checked. Put the password in the environment:
    /// `url = "${AMQP_URL}"`. It never appears in logs, errors or the API.
    pub url: String,
    /// The queue to consume; none for a connector that only publishes.
    #[serde(default)]
    pub queue: Option<String>,
    /// Messages delivered but not yet acknowledged, at most (`basic.qos`).
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// The exchange to publish to (`""`, the default exchange, routes by queue name).
    #[serde(default)]
    pub exchange: String,
    /// The routing key of each published message: text with `{{ .path }}` parts filled from
    /// the event, such as `"orders.{{ .region }}"`.
    #[serde(default)]
    pub routing_key: String,
    /// Published messages survive a broker restart (delivery mode 2) when their queue is
    /// durable.
    #[serde(default = "default_persistent")]
    pub persistent: bool,
    /// Exchanges, queues and bindings to declare at every connection, before consuming or
    /// publishing.
    #[serde(default)]
    pub declare: Declarations,
    /// How a message's body becomes values and back: json | msgpack | csv | string | bytes.
    #[serde(default = "crate::core::defaults::codec")]
    pub codec: CodecKind,
    /// Byte transforms of each message body; none by default (a message is one frame).
    #[serde(default)]
    pub interceptors: Vec<InterceptorConfig>,
    /// First wait before reconnecting; doubles up to `reconnect_max`.
    #[serde(
        default = "crate::core::defaults::reconnect_min",
        with = "humantime_serde"
    )]
    pub reconnect_min: Duration,
    /// Longest wait between reconnection attempts.
    #[serde(
        default = "crate::core::defaults::reconnect_max",
        with = "humantime_serde"
    )]
    pub reconnect_max: Duration,
}

/// What to declare on the broker.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declarations {
    /// Exchanges.
    #[serde(default)]
    pub exchanges: Vec<ExchangeDeclaration>,
    /// Queues.
    #[serde(default)]
    pub queues: Vec<QueueDeclaration>,
    /// Bindings of queues to exchanges.
    #[serde(default)]
    pub bindings: Vec<Binding>,
}

/// An exchange to declare.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeDeclaration {
    /// Its name.
    pub name: String,
    /// direct | fanout | topic | headers.
    #[serde(default = "default_exchange_kind")]
    pub kind: String,
    /// Survives a broker restart.
    #[serde(default = "default_durable")]
    pub durable: bool,
}

/// A queue to declare.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueDeclaration {
    /// Its name.
    pub name: String,
    /// Survives a broker restart.
    #[serde(default = "default_durable")]
    pub durable: bool,
    /// Where messages rejected for good go (`x-dead-letter-exchange`).
    #[serde(default)]
    pub dead_letter_exchange: Option<String>,
}

/// A queue bound to an exchange.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// The queue.
    pub queue: String,
    /// The exchange.
    pub exchange: String,
    /// The binding key (`#` for everything on a topic exchange).
    #[serde(default)]
    pub routing_key: String,
}

fn default_prefetch() -> u16 {
    1_000
}

fn default_persistent() -> bool {
    true
}

fn default_durable() -> bool {
    true
}

fn default_exchange_kind() -> String {
    "direct".to_owned()
}
