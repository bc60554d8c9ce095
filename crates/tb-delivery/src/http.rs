//! Loading jobs over HTTP: one request per job, or a batch per request (NDJSON or a JSON
//! array). Every request carries `Idempotency-Key` and, with signing, the Standard Webhooks
//! headers; the answer is sorted by [`crate::retry::verdict`].

use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tb_store::Claimed;

use crate::config::{BatchBody, DestinationConfig};
use crate::retry::{Verdict, parse_retry_after, verdict};
use crate::signing::Signer;

/// Bytes of a response body kept with an attempt.
const EXCERPT_BYTES: usize = 512;

/// What one load gave.
#[derive(Clone, Debug)]
pub struct LoadResult {
    /// Its verdict.
    pub verdict: Verdict,
    /// The response code, if there was a response.
    pub code: Option<u16>,
    /// What failed, for a load that did not succeed.
    pub error: Option<String>,
    /// The start of the response body.
    pub body_excerpt: Option<String>,
    /// How long it took.
    pub duration: Duration,
}

/// Sends jobs to one HTTP destination.
pub struct HttpLoader {
    client: reqwest::Client,
    base: String,
    headers: HeaderMap,
    signer: Option<Signer>,
    batch_body: BatchBody,
}

impl HttpLoader {
    /// Checks the destination's URL, headers and secrets.
    ///
    /// # Errors
    ///
    /// The key that is wrong, and why.
    pub fn new(config: &DestinationConfig) -> Result<Self, (String, String)> {
        let url = reqwest::Url::parse(&config.url).map_err(|error| {
            (
                "url".to_owned(),
                format!(
                    "url `{}` is not a URL: {error}; write it as \"http://127.0.0.1:9000\"",
                    config.url
                ),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err((
                "url".to_owned(),
                "url must be http:// or https:// with a host, such as \"http://127.0.0.1:9000\""
                    .to_owned(),
            ));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                (
                    format!("headers.{name}"),
                    format!("`{name}` is not a header name"),
                )
            })?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                (
                    format!("headers.{name}"),
                    "the value is not a valid header value".to_owned(),
                )
            })?;
            headers.insert(name, value);
        }
        let signer = match &config.signing {
            None => None,
            Some(signing) => {
                let secrets: Vec<String> = signing
                    .secret
                    .iter()
                    .chain(&signing.secrets)
                    .cloned()
                    .collect();
                Some(Signer::new(&secrets).map_err(|error| ("signing".to_owned(), error))?)
            }
        };
        let client = tb_connectors::core::http_client_builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| {
                (
                    "url".to_owned(),
                    format!("cannot make an HTTP client: {error}"),
                )
            })?;
        Ok(Self {
            client,
            base: config.url.trim_end_matches('/').to_owned(),
            headers,
            signer,
            batch_body: config.batch_body,
        })
    }

    /// Sends `jobs` (one, or a batch sharing `method` and `path`) and sorts the answer.
    pub async fn load(
        &self,
        method: &reqwest::Method,
        path: &str,
        jobs: &[Claimed],
        retry_on: &[u16],
    ) -> LoadResult {
        let started = Instant::now();
        let body = self.body(jobs);
        let id = match jobs {
            [job] => job.id.to_string(),
            _ => format!(
                "batch_{}",
                jobs.first()
                    .map(|job| job.id.to_string())
                    .unwrap_or_default()
            ),
        };
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .headers(self.headers.clone())
            .header("content-type", self.content_type(jobs.len()))
            .header("idempotency-key", &id);
        if let Some(signer) = &self.signer {
            let timestamp = tb_store::now_ms() / 1000;
            request = request
                .header("webhook-id", &id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signer.signature(&id, timestamp, &body));
        }
        let answer = request.body(body).send().await;
        let response = match answer {
            Ok(response) => response,
            Err(error) => {
                return LoadResult {
                    verdict: Verdict::Retry { after: None },
                    code: None,
                    error: Some(describe(&error)),
                    body_excerpt: None,
                    duration: started.elapsed(),
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let abort = response
            .headers()
            .get("webhook-delivery")
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"abort-message"));
        let excerpt = excerpt(response).await;
        let verdict = verdict(status, retry_after, abort, retry_on);
        let error = (verdict != Verdict::Succeeded).then(|| {
            if abort {
                format!("HTTP {status}; the receiver asked for no more retries (webhook-delivery: abort-message)")
            } else {
                format!("HTTP {status}")
            }
        });
        LoadResult {
            verdict,
            code: Some(status),
            error,
            body_excerpt: excerpt,
            duration: started.elapsed(),
        }
    }

    fn content_type(&self, jobs: usize) -> &'static str {
        match (jobs, self.batch_body) {
            (1, _) | (_, BatchBody::Array) => "application/json",
            (_, BatchBody::Ndjson) => "application/x-ndjson",
        }
    }

    fn body(&self, jobs: &[Claimed]) -> Vec<u8> {
        match (jobs, self.batch_body) {
            ([job], _) => job.payload.as_str().as_bytes().to_vec(),
            (_, BatchBody::Array) => {
                let mut body = Vec::with_capacity(
                    jobs.iter()
                        .map(|job| job.payload.as_str().len() + 1)
                        .sum::<usize>()
                        + 2,
                );
                body.push(b'[');
                for (index, job) in jobs.iter().enumerate() {
                    if index > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(job.payload.as_str().as_bytes());
                }
                body.push(b']');
                body
            }
            (_, BatchBody::Ndjson) => {
                let mut body =
                    Vec::with_capacity(jobs.iter().map(|job| job.payload.as_str().len() + 1).sum());
                for job in jobs {
                    body.extend_from_slice(job.payload.as_str().as_bytes());
                    body.push(b'\n');
                }
                body
            }
        }
    }
}

/// A transport error in one line, with its causes (the URL is never in it: reqwest's own
/// display would include it, and a URL may carry credentials).
fn describe(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut text = what.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn excerpt(mut response: reqwest::Response) -> Option<String> {
    let mut kept: Vec<u8> = Vec::new();
    while kept.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = EXCERPT_BYTES - kept.len();
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            _ => break,
        }
    }
    (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned())
}
