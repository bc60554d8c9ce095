//! The one TLS setup of the process: reqwest is built with rustls and no default crypto
//! provider, and ring (which VRL already links) is installed as the provider.

/// An HTTP client builder whose TLS has a crypto provider.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    // Err only when a provider is installed already, which is what is wanted.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
