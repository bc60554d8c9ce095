//! Keeping credentials out of everything shown: logs, statuses, config errors, the API and
//! `%tightbeam` metadata. One rule for what looks like a credential, used everywhere.

/// Words that make a key or query parameter name a credential, matched as the whole name or
/// as its last `_`/`-` separated part (`apikey`, `x-api-key`, `db_password`, `token`).
const CREDENTIAL_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "apikey",
    "key",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "signature",
    "sig",
    "session",
    "cookie",
];

/// What stands in for a hidden value.
pub const REDACTED: &str = "<redacted>";

/// Whether a key or parameter named `name` holds a credential.
pub fn is_credential_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let last = name.rsplit(['_', '-', '.']).next().unwrap_or(&name);
    CREDENTIAL_WORDS
        .iter()
        .any(|word| name == *word || last == *word)
        || [
            "password", "secret", "token", "apikey", "api_key", "api-key",
        ]
        .iter()
        .any(|word| name.contains(word))
}

/// `url` with the password of its userinfo and the values of credential-named query
/// parameters replaced by [`REDACTED`].
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rsplit_once('@') {
                Some((credentials, host)) => {
                    let user = credentials.split(':').next().unwrap_or("");
                    format!(
                        "{scheme}://{user}:{REDACTED}@{host}{}",
                        &rest[authority_end..]
                    )
                }
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    match query {
        Some(query) => format!("{base}?{}", redact_query(query)),
        None => base,
    }
}

/// A query string with the values of credential-named parameters replaced.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_credential_name(name) => format!("{name}={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_credential_parameters_are_hidden() {
        assert_eq!(
            redact_url("ws://user:hunter2@example.com:80/path"),
            "ws://user:<redacted>@example.com:80/path"
        );
        assert_eq!(
            redact_url("wss://feed.example.com/v1?apikey=abc123&topic=x&access_token=t0k"),
            "wss://feed.example.com/v1?apikey=<redacted>&topic=x&access_token=<redacted>"
        );
        assert_eq!(
            redact_url("example.com/?X-Api-Key=abc&sig=zz"),
            "example.com/?X-Api-Key=<redacted>&sig=<redacted>"
        );
        assert_eq!(redact_url("ws://example.com/"), "ws://example.com/");
    }

    #[test]
    fn credential_names() {
        for name in [
            "password",
            "db_password",
            "apikey",
            "x-api-key",
            "Authorization",
            "token",
            "Set-Cookie",
            "x-auth-token",
        ] {
            assert!(is_credential_name(name), "{name}");
        }
        for name in ["topic", "keys", "monkey", "path", "address"] {
            assert!(!is_credential_name(name), "{name}");
        }
    }
}
