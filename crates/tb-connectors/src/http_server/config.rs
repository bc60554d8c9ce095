//! `[connectors.<id>] kind = "http_server"` settings.

use std::time::Duration;

use serde::Deserialize;
use tb_codec::{CodecKind, InterceptorConfig};

use crate::core::BuildError;

/// `kind = "http_server"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Address to listen on, such as `127.0.0.1:8080`.
    pub address: String,
    /// How request bodies become values (and replies become bodies).
    #[serde(default = "crate::core::defaults::codec")]
    pub codec: CodecKind,
    /// Byte transforms in receive order; none by default (the whole body is one frame, and a
    /// JSON array yields one event per element). Use `lines` for NDJSON bodies.
    #[serde(default)]
    pub interceptors: Vec<InterceptorConfig>,
    /// Largest accepted request body in bytes; larger requests get 413.
    #[serde(default = "crate::core::defaults::max_body")]
    pub max_body: usize,
    /// How long a request waits for its events to be acknowledged before 504.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// With `inputs`: how long a request waits for its response before 504.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub reply_timeout: Duration,
    /// How long a request waits for room in a full queue before 503 with Retry-After.
    #[serde(default = "default_queue_timeout", with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// How long reading a request's body may take before 408 (a body trickled a byte at a
    /// time, or shorter than its Content-Length, does not hold a connection for ever).
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Requests handled at once; one more is answered 503 with Retry-After before its body
    /// is read, so memory stays bounded however many clients connect.
    #[serde(default = "default_max_requests")]
    pub max_requests: usize,
    /// Bytes of request bodies held at once, over every request; a body that does not fit
    /// is answered 503 with Retry-After. Bounds memory together with the slices events go
    /// on in: the default keeps the process within a few hundred MB.
    #[serde(default = "default_max_buffered")]
    pub max_buffered: usize,
    /// Largest size a `Content-Encoding: gzip` or `zstd` body may expand to; 413 past it.
    #[serde(default = "crate::core::defaults::max_decompressed")]
    pub max_decompressed: usize,
    /// How long a connection may take to send a request's headers, counted from when it
    /// opens or its previous response was sent: so also how long a keep-alive connection may
    /// sit idle. Past it the connection is closed.
    #[serde(
        default = "crate::core::defaults::header_timeout",
        with = "humantime_serde"
    )]
    pub header_timeout: Duration,
}

fn default_max_buffered() -> usize {
    128 * 1024 * 1024
}

fn default_max_requests() -> usize {
    256
}

fn default_body_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_queue_timeout() -> Duration {
    Duration::from_secs(1)
}

impl HttpServerConfig {
    /// Checks what serde cannot.
    ///
    /// # Errors
    ///
    /// An address that is not `host:port`, or `max_requests = 0`.
    pub fn validate(&self) -> Result<(), BuildError> {
        if self.max_requests == 0 {
            return Err(BuildError::at(
                "max_requests",
                "max_requests must be at least 1",
            ));
        }
        crate::core::validate_address("address", &self.address)
    }
}
