//! `kind = "redis"` settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tb_codec::{CodecKind, InterceptorConfig};

/// `kind = "redis"`: Redis streams and pub/sub. With `stream` it reads the stream through a
/// consumer group; with `channels` or `patterns` it subscribes; with `inputs` it appends to
/// `publish_stream` or publishes to `publish_channel`. It may receive and send at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The server, `redis://host:6379/0`, with `user:password@` (or `:password@`) if it asks;
    /// `rediss://host:6380/0` for TLS, whose certificate is checked. Put credentials in the
    /// environment: `url = "${REDIS_URL}"`. They never appear in logs, errors or the API.
    pub url: String,
    /// PEM file of the certificate authorities to trust for `rediss://`, instead of the
    /// system's.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Streams: the stream to read through the consumer group `group`.
    #[serde(default)]
    pub stream: Option<String>,
    /// Streams: the consumer group, created (with the stream) if missing.
    #[serde(default = "default_group")]
    pub group: String,
    /// Streams: this process's consumer name in the group; `tightbeam-<connector id>` by
    /// default. Entries it took and did not acknowledge are read again under the same name
    /// after a restart: two processes sharing a group must have different names.
    #[serde(default)]
    pub consumer: Option<String>,
    /// Streams: where a new group starts: `all` (the default: the entries already in the
    /// stream) or `new`.
    #[serde(default)]
    pub start: StartFrom,
    /// Streams: the entry field whose value the codec decodes; the other fields are in
    /// `%tightbeam.fields`. An entry without it is taken whole: its fields, as a JSON object,
    /// are what the codec decodes.
    #[serde(default = "default_field")]
    pub field: String,
    /// Streams: entries asked for per read.
    #[serde(default = "default_count")]
    pub count: usize,
    /// Streams: entries taken and not yet acknowledged, at most.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// Streams: an entry taken by any consumer of the group and not acknowledged for this
    /// long is claimed (`XAUTOCLAIM`) and handled here: what a dead consumer left, and
    /// entries whose events errored.
    #[serde(default = "default_claim_idle", with = "humantime_serde")]
    pub claim_idle: Duration,
    /// Streams: where a rejected entry is appended (with `source_stream`, `source_id` and
    /// its fields) before it is acknowledged; without it a rejected entry is acknowledged
    /// and counted in `err` only.
    #[serde(default)]
    pub dead_letter_stream: Option<String>,
    /// Pub/sub: channels to subscribe to. Pub/sub keeps nothing: a message published while
    /// Tightbeam is away is not seen.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Pub/sub: channel patterns to subscribe to (`orders.*`).
    #[serde(default)]
    pub patterns: Vec<String>,
    /// The stream each event is appended to (`XADD`): text with `{{ .path }}` parts filled
    /// from the event, such as `"orders-{{ .region }}"`.
    #[serde(default)]
    pub publish_stream: String,
    /// The channel each event is published to (`PUBLISH`), a template like `publish_stream`.
    #[serde(default)]
    pub publish_channel: String,
    /// Appending: the stream is trimmed to about this many entries (`MAXLEN ~`).
    #[serde(default)]
    pub maxlen: Option<usize>,
    /// How a message's payload becomes values and back: json | msgpack | csv | string |
    /// bytes.
    #[serde(default = "crate::core::defaults::codec")]
    pub codec: CodecKind,
    /// Byte transforms of each payload; none by default (an entry is one frame).
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

/// Where a new consumer group starts reading.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The entries already in the stream, then the new ones.
    #[default]
    All,
    /// Only entries appended after the group is made.
    New,
}

fn default_group() -> String {
    "tightbeam".to_owned()
}

fn default_field() -> String {
    "data".to_owned()
}

fn default_count() -> usize {
    512
}

fn default_max_pending() -> usize {
    4_096
}

fn default_claim_idle() -> Duration {
    Duration::from_secs(60)
}
