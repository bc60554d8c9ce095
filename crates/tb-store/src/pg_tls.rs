//! TLS to PostgreSQL, as libpq reads a URL's `sslmode` and `sslrootcert`, so a URL that
//! works with `psql` means the same here. Shared by the job store and the `postgres`
//! destination.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and leaves checking the
//! server's certificate to its TLS connector; this module reads libpq's five modes and builds
//! a rustls connector that checks what each promises:
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (the default) | when the server offers TLS | no |
//! | `require` | always | no; with `sslrootcert`, as `verify-ca` (libpq's rule) |
//! | `verify-ca` | always | its chain, to `sslrootcert` or the system's roots |
//! | `verify-full` | always | its chain and that it names the host |
//!
//! `sslrootcert` is a PEM file of trusted certificates, or `system` for the system's roots
//! (the default for the two `verify-` modes). With `hostaddr`, the connection goes to that
//! address and the certificate must name `host`.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The modes as libpq names them.
const MODES: &str = "disable, prefer, require, verify-ca or verify-full";

/// A PostgreSQL URL read: its connection settings and the TLS connector its `sslmode` asks
/// for.
pub struct PgConnect {
    /// The settings tokio-postgres connects with.
    pub config: tokio_postgres::Config,
    /// The TLS connector (unused when `sslmode=disable`).
    pub tls: MakeRustlsConnect,
}

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Nothing: the connection is encrypted, not authenticated (`prefer`, `require`).
    Nothing,
    /// Its chain to a trusted root, not the name it is for (`verify-ca`).
    Chain,
    /// Its chain and that it names the host (`verify-full`).
    ChainAndName,
}

impl PgConnect {
    /// Reads a `postgres://` URL as libpq does. Options other than `sslmode` and
    /// `sslrootcert` go to tokio-postgres as written.
    ///
    /// # Errors
    ///
    /// What is wrong, and what would be right; never the URL itself (the caller names it
    /// without its password).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut mode = "prefer".to_owned();
        let mut root_certificates = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = || {
                percent_encoding::percent_decode_str(value)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            match key {
                "sslmode" => mode = value(),
                "sslrootcert" => root_certificates = Some(value()),
                _ => kept.push(pair),
            }
        }
        let (ssl_mode, check) = match mode.as_str() {
            "disable" => (SslMode::Disable, Check::Nothing),
            "prefer" => (SslMode::Prefer, Check::Nothing),
            // libpq: with a root certificate file, `require` checks the chain.
            "require" if root_certificates.is_some() => (SslMode::Require, Check::Chain),
            "require" => (SslMode::Require, Check::Nothing),
            "verify-ca" => (SslMode::Require, Check::Chain),
            "verify-full" => (SslMode::Require, Check::ChainAndName),
            other => return Err(format!("sslmode `{other}` must be one of {MODES}")),
        };
        let libpq_url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config: tokio_postgres::Config = libpq_url
            .parse()
            .map_err(|error| format!("not a valid PostgreSQL URL: {error}"))?;
        config.ssl_mode(ssl_mode);
        let tls = client_config(check, root_certificates.as_deref())?;
        Ok(Self {
            config,
            tls: MakeRustlsConnect::new(tls),
        })
    }
}

/// The rustls setup for `check`, trusting `root_certificates` (a PEM file, or `system`).
fn client_config(check: Check, root_certificates: Option<&str>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("cannot set up TLS: {error}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(EncryptOnly {
            algorithms: provider.signature_verification_algorithms,
        }),
        Check::Chain | Check::ChainAndName => {
            let roots = trusted_roots(root_certificates)?;
            let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| format!("cannot check server certificates: {error}"))?;
            if check == Check::Chain {
                Arc::new(ChainOnly { chain })
            } else {
                chain
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The certificates `sslrootcert` names: a PEM file's, or the system's for `system` or none.
fn trusted_roots(root_certificates: Option<&str>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match root_certificates {
        None | Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "sslmode asks to check the server's certificate, but no system root \
                     certificates were found; name a PEM file with sslrootcert=PATH"
                        .to_owned(),
                );
            }
        }
        Some(path) => {
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|error| format!("sslrootcert {path}: {error}"))?;
            if certificates.is_empty() {
                return Err(format!("sslrootcert {path} holds no PEM certificate"));
            }
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|error| format!("sslrootcert {path}: {error}"))?;
            }
        }
    }
    Ok(roots)
}

/// `verify-ca`: the chain is checked; the name the certificate is for is not.
#[derive(Debug)]
struct ChainOnly {
    chain: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // The name is checked last, so a chain that got this far is trusted.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain
            .verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain
            .verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// `prefer` and `require`: encrypted, and the handshake's signatures checked, but any
/// certificate accepted, as libpq does in these modes.
#[derive(Debug)]
struct EncryptOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, certificate, signature, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, certificate, signature, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(url: &str) -> Result<SslMode, String> {
        PgConnect::parse(url).map(|connect| connect.config.get_ssl_mode())
    }

    #[test]
    fn libpq_modes_map_to_what_tokio_postgres_negotiates() {
        let base = "postgres://u@127.0.0.1/db";
        assert_eq!(mode_of(base), Ok(SslMode::Prefer));
        assert_eq!(
            mode_of(&format!("{base}?sslmode=disable")),
            Ok(SslMode::Disable)
        );
        for mode in ["require", "verify-ca", "verify-full"] {
            assert_eq!(
                mode_of(&format!("{base}?sslmode={mode}&sslrootcert=system")),
                Ok(SslMode::Require),
                "{mode}"
            );
        }
    }

    #[test]
    fn an_unknown_mode_or_a_missing_root_file_says_what_is_right() {
        let wrong = mode_of("postgres://u@h/db?sslmode=sometimes").expect_err("unknown mode");
        assert!(wrong.contains("verify-full"), "{wrong}");
        let missing = mode_of("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/no/such.pem")
            .expect_err("no such file");
        assert!(missing.contains("/no/such.pem"), "{missing}");
    }

    #[test]
    fn other_options_reach_tokio_postgres() {
        let connect =
            PgConnect::parse("postgres://u@h/db?application_name=tb&sslmode=require").expect("ok");
        assert_eq!(connect.config.get_application_name(), Some("tb"));
    }
}
