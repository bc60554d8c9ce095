//! `kind = "http_stream"` settings.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use tb_codec::{CodecKind, InterceptorConfig};

/// `kind = "http_stream"`: a long-lived HTTP GET whose response streams envelopes (NDJSON
/// lines or server-sent events): `DATA` carries a message that becomes events, `PING` says
/// the feed is alive, `SYNC` carries a marker to confirm once everything before it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpStreamConfig {
    /// The feed, `http://` or `https://` (whose certificate is checked).
    pub url: String,
    /// `ndjson` (one JSON envelope per line, the default) or `sse` (server-sent events whose
    /// `data` is a JSON envelope).
    #[serde(default)]
    pub format: FeedFormat,
    /// Request headers (an `authorization` header, say). Values of headers named like
    /// credentials never appear in logs, errors or the API; put them in the environment.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// With nothing at all arriving for this long (a `PING` is due well within it), the
    /// connection counts as dead and is made again.
    #[serde(default = "default_heartbeat_timeout", with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// Where a confirmed `SYNC` marker is POSTed, as `{"<marker field>": "<marker>"}`, once
    /// every event before it is acknowledged: the feed saves its place there.
    #[serde(default)]
    pub sync_url: Option<String>,
    /// On reconnecting, the last confirmed marker is sent as the `Last-Event-ID` header and,
    /// when this is set, as this query parameter too.
    #[serde(default)]
    pub resume_query: Option<String>,
    /// The names of the envelope's fields.
    #[serde(default)]
    pub envelope: EnvelopeFields,
    /// The longest line or event accepted; a longer one ends the connection with an error.
    #[serde(default = "default_max_line")]
    pub max_line: usize,
    /// Events handed on and not yet acknowledged, at most; reading pauses at that.
    #[serde(default = "default_max_pending")]
    pub max_pending: u64,
    /// How a `DATA` message becomes values: a message that is a JSON string is decoded from
    /// its text, any other JSON value from its JSON. json | msgpack | csv | string | bytes.
    #[serde(default = "crate::core::defaults::codec")]
    pub codec: CodecKind,
    /// Byte transforms of each message; none by default.
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

/// How the feed frames its envelopes.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FeedFormat {
    /// One JSON envelope per line.
    #[default]
    Ndjson,
    /// Server-sent events, each `data` a JSON envelope.
    Sse,
}

/// The names of an envelope's fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeFields {
    /// The field naming the envelope's type: `DATA`, `PING` or `SYNC`.
    #[serde(default = "default_type_field", rename = "type")]
    pub kind: String,
    /// The field of a `DATA` envelope holding the message.
    #[serde(default = "default_message_field")]
    pub message: String,
    /// The field of a `SYNC` envelope holding the marker.
    #[serde(default = "default_marker_field")]
    pub marker: String,
}

impl Default for EnvelopeFields {
    fn default() -> Self {
        Self {
            kind: default_type_field(),
            message: default_message_field(),
            marker: default_marker_field(),
        }
    }
}

fn default_type_field() -> String {
    "envelopeType".to_owned()
}

fn default_message_field() -> String {
    "pipelineMessage".to_owned()
}

fn default_marker_field() -> String {
    "syncMarker".to_owned()
}

fn default_heartbeat_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_line() -> usize {
    1024 * 1024
}

fn default_max_pending() -> u64 {
    4_096
}
