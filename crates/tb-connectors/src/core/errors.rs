//! Connector errors: at build time (config) and at start or run time (I/O).

use serde::de::DeserializeOwned;

/// A connector config that cannot work. Carries the key path so the config loader can point
/// at the file, line and column.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    /// Dotted path of the offending key inside the component (`interceptors[0].kind`), or
    /// empty for the component as a whole.
    pub path: String,
    /// What is wrong and, where possible, what would be right.
    pub message: String,
}

impl BuildError {
    /// An error about the key at `path`.
    pub fn at(path: &str, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// Deserializes a connector's config table (without `kind` and `inputs`), keeping the path
/// of the first key that does not fit.
///
/// # Errors
///
/// The serde message and the key path.
pub fn parse_config<T: DeserializeOwned>(config: serde_json::Value) -> Result<T, BuildError> {
    serde_path_to_error::deserialize(config).map_err(|error| {
        let path = error.path().to_string();
        let path = if path == "." { String::new() } else { path };
        BuildError {
            path,
            message: error.into_inner().to_string(),
        }
    })
}

/// Checks that `address` is `host:port`.
///
/// # Errors
///
/// A [`BuildError`] at `key` saying what is expected.
pub fn validate_address(key: &str, address: &str) -> Result<(), BuildError> {
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if valid {
        Ok(())
    } else {
        Err(BuildError::at(
            key,
            format!("`{address}` is not host:port, such as 127.0.0.1:8080"),
        ))
    }
}

/// Whether `address` can be listened on now: bound, then let go at once.
///
/// # Errors
///
/// A [`BuildError`] at `key` with the OS's reason.
pub fn check_bindable(key: &str, address: &str) -> Result<(), BuildError> {
    std::net::TcpListener::bind(address)
        .map(drop)
        .map_err(|error| BuildError::at(key, format!("cannot listen on {address}: {error}")))
}

/// An error and every cause under it, `outer: inner: innermost`: libraries such as reqwest
/// put the useful part ("Connection refused") in a source, not in their own message.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A connector that could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// Could not bind a listening socket.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The configured address.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file could not be opened, read or written.
    #[error("{action} {path}: {source}")]
    File {
        /// What was attempted (`cannot open`, `cannot write`...).
        action: &'static str,
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Any other I/O failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}
