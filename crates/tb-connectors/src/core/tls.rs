//! The one TLS setup of the process: reqwest is built with rustls and no default crypto
//! provider, and ring (which VRL already links) is installed as the provider.

/// An HTTP client builder whose TLS has a crypto provider.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    // Err only when a provider is installed already, which is what is wanted.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// A rustls client config that checks the server's certificate against the system's roots,
/// and those of the PEM file `ca_file` when given.
///
/// # Errors
///
/// The file cannot be read or holds no certificate, or no root at all was found.
pub fn rustls_client_config(
    ca_file: Option<&std::path::Path>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        let certificates = CertificateDer::pem_file_iter(path)
            .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
            .map_err(|error| format!("tls_ca_file {}: {error}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!(
                "tls_ca_file {} holds no PEM certificate",
                path.display()
            ));
        }
        roots.add_parsable_certificates(certificates);
    }
    if roots.is_empty() {
        return Err(
            "no root certificates to check the server with; name a PEM file with tls_ca_file"
                .to_owned(),
        );
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}
