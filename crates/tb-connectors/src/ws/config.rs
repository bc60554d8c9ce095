//! WebSocket connector settings.

use std::time::Duration;

use serde::Deserialize;
use tb_codec::{CodecKind, InterceptorConfig};

/// `kind = "ws_server"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsServerConfig {
    /// Address to listen on, such as `127.0.0.1:9001`.
    pub address: String,
    /// How messages become values and back.
    #[serde(default = "crate::core::defaults::codec")]
    pub codec: CodecKind,
    /// Byte transforms in receive order; none by default (each message is one frame).
    #[serde(default)]
    pub interceptors: Vec<InterceptorConfig>,
    /// Largest accepted message in bytes; a larger one closes the session with code 1009.
    #[serde(default = "crate::core::defaults::max_body")]
    pub max_body: usize,
    /// How long one write to a peer may stall before the peer counts as gone: its stream
    /// is closed and what was queued for it is failed.
    #[serde(
        default = "crate::core::defaults::write_timeout",
        with = "humantime_serde"
    )]
    pub write_timeout: Duration,
    /// How long a connection may take to send a request's headers, counted from when it
    /// opens or its previous response was sent: so also how long a keep-alive connection may
    /// sit idle. Past it the connection is closed.
    #[serde(
        default = "crate::core::defaults::header_timeout",
        with = "humantime_serde"
    )]
    pub header_timeout: Duration,
}

/// `kind = "ws_client"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsClientConfig {
    /// `ws://host:port/path` to connect to.
    pub url: String,
    /// How messages become values and back.
    #[serde(default = "crate::core::defaults::codec")]
    pub codec: CodecKind,
    /// Byte transforms in receive order; none by default.
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
