//! What the connectors that make HTTP requests share: their URL and headers, checked.

use std::collections::BTreeMap;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::errors::BuildError;

/// `text` as an `http://` or `https://` URL, or an error at `key`.
pub fn http_url(key: &str, text: &str) -> Result<reqwest::Url, BuildError> {
    reqwest::Url::parse(text)
        .ok()
        .filter(|url| url.scheme() == "http" || url.scheme() == "https")
        .ok_or_else(|| BuildError::at(key, "must be an http:// or https:// URL"))
}

/// `headers` checked and made a header map; values of headers named like credentials are
/// marked sensitive, so they are never shown.
pub fn header_map(headers: &BTreeMap<String, String>) -> Result<HeaderMap, BuildError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| BuildError::at("headers", format!("`{name}` is not a header name")))?;
        let mut header_value = HeaderValue::from_str(value).map_err(|_| {
            BuildError::at(
                "headers",
                format!("the value of header `{name}` is not valid"),
            )
        })?;
        if super::is_credential_name(name) {
            header_value.set_sensitive(true);
        }
        map.insert(header_name, header_value);
    }
    Ok(map)
}
