//! `kind = "mqtt"` settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tb_codec::{CodecKind, InterceptorConfig};

/// `kind = "mqtt"`: MQTT 3.1.1. With `topics` it subscribes; with `inputs` it publishes to
/// `publish_topic`; it may do both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// The broker, `mqtt://host:1883`, with `user:password@` if it asks; `mqtts://host:8883`
    /// for TLS, whose certificate is checked. Put credentials in the environment:
    /// `url = "${MQTT_URL}"`. They never appear in logs, errors or the API.
    pub url: String,
    /// PEM file of the certificate authorities to trust for `mqtts://`, beside the system's.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// The client id; `tightbeam-<connector id>` by default (publishing uses it with `-pub`).
    /// A persistent session belongs to it: two processes must not share one.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Topic filters to subscribe to (`+` and `#` wildcards).
    #[serde(default)]
    pub topics: Vec<String>,
    /// The QoS of the subscriptions: 0 (at most once) or 1 (at least once, acknowledged
    /// only once the message's events are).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Keep the subscriptions and the messages not yet acknowledged while disconnected (a
    /// session that is not clean), so a restart or a lost connection loses nothing at QoS 1.
    #[serde(default = "default_persistent_session")]
    pub persistent_session: bool,
    /// The topic of each published message: text with `{{ .path }}` parts filled from the
    /// event, such as `"sensors/{{ .room }}"`.
    #[serde(default)]
    pub publish_topic: String,
    /// The QoS of published messages: 0 (delivered once written) or 1 (delivered once the
    /// broker's PUBACK arrives).
    #[serde(default = "default_qos")]
    pub publish_qos: u8,
    /// Published messages are retained by the broker for later subscribers.
    #[serde(default)]
    pub retain: bool,
    /// How often the connection is checked with a ping.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
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

fn default_qos() -> u8 {
    1
}

fn default_persistent_session() -> bool {
    true
}

fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
