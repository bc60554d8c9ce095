//! `[connectors.<id>] kind = "http_client"` settings.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::Deserialize;
use tb_codec::{CodecKind, InterceptorConfig};

use crate::core::BuildError;

/// How a batch becomes a request body.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BodyShape {
    /// Every event encoded with `codec` and `interceptors`, one after another (with the
    /// default `lines` interceptor and `json`, that is NDJSON).
    Stream,
    /// One JSON array of the batch's events (`codec` must be `json`).
    Array,
}

/// `kind = "http_client"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpClientConfig {
    /// `http://host:port/path` to send to.
    pub url: String,
    /// HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers. Values of headers named like credentials (`authorization`,
    /// `x-api-key`...) never appear in logs, errors or the API.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How each event is encoded.
    #[serde(default = "crate::core::defaults::codec")]
    pub codec: CodecKind,
    /// Byte transforms for `body = "stream"`; default `lines`.
    #[serde(default = "crate::core::defaults::line_interceptors")]
    pub interceptors: Vec<InterceptorConfig>,
    /// `stream` (events one after another, NDJSON by default) or `array` (a JSON array).
    #[serde(default = "default_body")]
    pub body: BodyShape,
    /// Most events in one request.
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// Longest wait for a batch to fill before it is sent anyway.
    #[serde(default = "default_batch_timeout", with = "humantime_serde")]
    pub batch_timeout: Duration,
    /// How long a request may take before its events fail.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

fn default_method() -> String {
    "POST".to_owned()
}

fn default_body() -> BodyShape {
    BodyShape::Stream
}

fn default_batch_max_events() -> usize {
    100
}

fn default_batch_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

/// What `prepare` checked and turned into types.
pub(super) struct Prepared {
    pub(super) method: reqwest::Method,
    pub(super) url: reqwest::Url,
    pub(super) headers: HeaderMap,
}

impl HttpClientConfig {
    /// Checks the URL, method, headers and batch settings.
    pub(super) fn prepare(&self) -> Result<Prepared, BuildError> {
        let url = crate::core::http_url("url", &self.url)?;
        let method = reqwest::Method::from_bytes(self.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                BuildError::at("method", format!("`{}` is not an HTTP method", self.method))
            })?;
        let headers = crate::core::header_map(&self.headers)?;
        if self.body == BodyShape::Array && self.codec != CodecKind::Json {
            return Err(BuildError::at(
                "body",
                "body = \"array\" needs codec = \"json\"",
            ));
        }
        if self.batch_max_events == 0 {
            return Err(BuildError::at("batch_max_events", "must be at least 1"));
        }
        Ok(Prepared {
            method,
            url,
            headers,
        })
    }
}
