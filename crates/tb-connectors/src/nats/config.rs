//! `kind = "nats"` settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tb_codec::{CodecKind, InterceptorConfig};

/// `kind = "nats"`: NATS core subjects and JetStream. With `subject` it subscribes, with
/// `stream` it consumes a JetStream durable pull consumer, with `inputs` it publishes to
/// `publish_subject`; it may receive and publish at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// The server, `nats://host:4222`, with `user:password@` or a token (`nats://token@host`)
    /// if it asks for one; `tls://host:4222` for TLS, whose certificate is checked. Put
    /// credentials in the environment: `url = "${NATS_URL}"`. They never appear in logs,
    /// errors or the API.
    pub url: String,
    /// A `.creds` file (JWT and NKey seed) to authenticate with.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// PEM file of the certificate authorities to trust for `tls://`, beside the system's.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Core NATS: the subject to subscribe to, wildcards allowed (`orders.*`, `orders.>`).
    /// Core NATS keeps nothing: a message that arrives while Tightbeam is down is not seen.
    #[serde(default)]
    pub subject: Option<String>,
    /// Core NATS: the queue group to join, so each message goes to one member only.
    #[serde(default)]
    pub queue_group: Option<String>,
    /// JetStream: the stream to consume, through the durable pull consumer `consumer`.
    #[serde(default)]
    pub stream: Option<String>,
    /// JetStream: the durable consumer's name (created if missing); processes that share it
    /// share the work. Defaults to `tightbeam-<connector id>`.
    #[serde(default)]
    pub consumer: Option<String>,
    /// JetStream: only the stream's messages on this subject (wildcards allowed).
    #[serde(default)]
    pub filter_subject: Option<String>,
    /// JetStream: where a new consumer starts: `all` (the default) or `new`.
    #[serde(default)]
    pub deliver: DeliverFrom,
    /// JetStream: how long a message may stay unacknowledged before the server delivers it
    /// again (after a crash, to this or another process).
    #[serde(default = "default_ack_wait", with = "humantime_serde")]
    pub ack_wait: Duration,
    /// JetStream: deliveries of one message at most, then the server gives up on it; `-1`
    /// (the default) for no limit. A rejected message is terminated at once either way.
    #[serde(default = "default_max_deliver")]
    pub max_deliver: i64,
    /// JetStream: messages delivered but not yet acknowledged, at most.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: i64,
    /// JetStream: how long the server waits before delivering an errored message again.
    #[serde(default = "default_nak_delay", with = "humantime_serde")]
    pub nak_delay: Duration,
    /// The subject of each published message: text with `{{ .path }}` parts filled from the
    /// event, such as `"orders.{{ .region }}"`. A reply to a request this connector received
    /// goes to the request's reply subject instead.
    #[serde(default)]
    pub publish_subject: String,
    /// Publish into JetStream and wait for its publish ack before calling an event
    /// delivered (the subject must belong to a stream). Otherwise a core publish, delivered
    /// once the server has read it (a flush).
    #[serde(default)]
    pub publish_jetstream: bool,
    /// JetStream streams to create at start when missing.
    #[serde(default)]
    pub declare: Declarations,
    /// How a message's payload becomes values and back: json | msgpack | csv | string |
    /// bytes.
    #[serde(default = "crate::core::defaults::codec")]
    pub codec: CodecKind,
    /// Byte transforms of each payload; none by default (a message is one frame).
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

/// Where a new JetStream consumer starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliverFrom {
    /// The stream's first message.
    #[default]
    All,
    /// Messages stored after the consumer is created.
    New,
}

/// What to create on the server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declarations {
    /// JetStream streams.
    #[serde(default)]
    pub streams: Vec<StreamDeclaration>,
}

/// A JetStream stream to create when missing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamDeclaration {
    /// Its name.
    pub name: String,
    /// The subjects it stores (wildcards allowed).
    pub subjects: Vec<String>,
    /// `file` (the default) or `memory`.
    #[serde(default)]
    pub storage: Storage,
}

/// Where a stream keeps its messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// On disk.
    #[default]
    File,
    /// In memory.
    Memory,
}

fn default_ack_wait() -> Duration {
    Duration::from_secs(30)
}

fn default_max_deliver() -> i64 {
    -1
}

fn default_max_ack_pending() -> i64 {
    1_000
}

fn default_nak_delay() -> Duration {
    Duration::from_secs(1)
}
