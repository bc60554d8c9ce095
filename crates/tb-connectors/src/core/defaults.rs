//! Config defaults shared by several connector kinds, named so serde can use them and the
//! reference can state them once.

use std::time::Duration;

use tb_codec::{CodecKind, InterceptorConfig};

/// `codec = "json"`.
pub fn codec() -> CodecKind {
    CodecKind::Json
}

/// One frame per `\n`-terminated line, at most 1 MiB: the framing of byte streams.
pub fn line_interceptors() -> Vec<InterceptorConfig> {
    vec![InterceptorConfig::Lines {
        delimiter: "\n".to_owned(),
        max_length: 1024 * 1024,
    }]
}

/// 10 MiB: the largest HTTP body or WebSocket message accepted.
pub fn max_body() -> usize {
    10 * 1024 * 1024
}

/// 100 MiB: the most a compressed body may expand to.
pub fn max_decompressed() -> usize {
    100 * 1024 * 1024
}

/// 100 ms: the first wait before reconnecting.
pub fn reconnect_min() -> Duration {
    Duration::from_millis(100)
}

/// 10 s: the longest wait between reconnection attempts.
pub fn reconnect_max() -> Duration {
    Duration::from_secs(10)
}

/// 10 s: how long one write to a server's stream may stall before the peer counts as gone.
pub fn write_timeout() -> Duration {
    Duration::from_secs(10)
}

/// 30 s: how long an HTTP connection may take to send a request's headers, idle time
/// before them included.
pub fn header_timeout() -> Duration {
    Duration::from_secs(30)
}
