//! TCP connector settings.

use std::time::Duration;

use serde::Deserialize;
use tb_codec::{CodecKind, InterceptorConfig};

/// `kind = "tcp_server"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpServerConfig {
    /// Address to listen on, such as `127.0.0.1:9000`.
    pub address: String,
    /// How frames become values and back: json | msgpack | csv | string | bytes.
    #[serde(default = "crate::core::defaults::codec")]
    pub codec: CodecKind,
    /// Byte transforms in receive order (reversed when sending); default `lines`.
    #[serde(default = "crate::core::defaults::line_interceptors")]
    pub interceptors: Vec<InterceptorConfig>,
    /// Send `{"acked":N}` (or `{"failed":N}`) lines back as the first N events of the
    /// connection are acknowledged, so a client knows what it may forget.
    #[serde(default)]
    pub ack_lines: bool,
    /// How long one write to a peer may stall before the peer counts as gone: its stream
    /// is closed and what was queued for it is failed.
    #[serde(
        default = "crate::core::defaults::write_timeout",
        with = "humantime_serde"
    )]
    pub write_timeout: Duration,
}

/// `kind = "tcp_client"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpClientConfig {
    /// Address to connect to, such as `127.0.0.1:9000`.
    pub address: String,
    /// How frames become values and back.
    #[serde(default = "crate::core::defaults::codec")]
    pub codec: CodecKind,
    /// Byte transforms in receive order (reversed when sending); default `lines`.
    #[serde(default = "crate::core::defaults::line_interceptors")]
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
