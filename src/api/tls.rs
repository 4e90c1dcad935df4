//! HTTPS for the northbound API: a rustls server configuration (ring provider) from PEM files,
//! and the API's server ([`super::serve`]) over it.
//!
//! Certificates: `api.tls_cert` / `api.tls_key` in the configuration (or `OTAGW_API_TLS_CERT`
//! / `OTAGW_API_TLS_KEY`). `certs/README.md` describes the development pair and real ones.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use super::serve::SHUTDOWN_GRACE;

/// Why the TLS configuration could not be built. Each error names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read (missing, no permission).
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not valid PEM.
    #[error("{}: malformed PEM: {problem}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The certificate file holds no certificate.
    #[error("{}: no certificate in it (expected a PEM \"BEGIN CERTIFICATE\" block)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no (usable) private key.
    #[error("{}: no private key in it ({detail})", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
        /// What was expected or found instead.
        detail: &'static str,
    },
    /// The private key is of a kind the TLS library cannot use.
    #[error("{}: unusable private key: {problem}", path.display())]
    UnusableKey {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        problem: String,
    },
    /// The certificate cannot be parsed.
    #[error("{}: bad certificate: {problem}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        problem: String,
    },
    /// The private key is not the one of the (first) certificate.
    #[error("{}: private key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// Any other rustls refusal.
    #[error("TLS configuration ({} + {}): {problem}", cert.display(), key.display())]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        problem: String,
    },
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3, ALPN h2 and http/1.1, no
/// client certificates) from a PEM certificate chain (server certificate first, then any
/// intermediates) and a PEM private key (PKCS#8, PKCS#1 or SEC1; not encrypted).
pub fn server_config(
    cert_pem: &Path,
    key_pem: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = read_certificates(cert_pem)?;
    let key = read_private_key(key_pem)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config {
            cert: cert_pem.to_path_buf(),
            key: key_pem.to_path_buf(),
            problem: e.to_string(),
        })?;
    let mut config = builder
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert: cert_pem.to_path_buf(),
                    key: key_pem.to_path_buf(),
                }
            }
            rustls::Error::InvalidCertificate(problem) => TlsError::BadCertificate {
                path: cert_pem.to_path_buf(),
                problem: format!("{problem:?}"),
            },
            rustls::Error::General(problem) => TlsError::UnusableKey {
                path: key_pem.to_path_buf(),
                problem,
            },
            other => TlsError::Config {
                cert: cert_pem.to_path_buf(),
                key: key_pem.to_path_buf(),
                problem: other.to_string(),
            },
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_problem(path: &Path, e: pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        problem: e.to_string(),
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_problem(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            let text = String::from_utf8_lossy(&bytes);
            let detail = if text.contains("ENCRYPTED PRIVATE KEY")
                || text.contains("Proc-Type: 4,ENCRYPTED")
            {
                "the key is encrypted: give it unencrypted (openssl pkey -in KEY -out KEY.plain)"
            } else if text.contains("BEGIN CERTIFICATE") {
                "it holds a certificate, not a key: is this the certificate file?"
            } else {
                "expected a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block"
            };
            Err(TlsError::NoPrivateKey {
                path: path.to_path_buf(),
                detail,
            })
        }
        Err(e) => Err(pem_problem(path, e)),
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` completes; then stops accepting,
/// lets in-flight requests finish for up to [`SHUTDOWN_GRACE`], and returns.
///
/// Handlers can extract `axum::extract::ConnectInfo<SocketAddr>` (the client's address).
/// Connections get the default [`super::serve::ConnLimits`] (a TLS handshake is part of the
/// 10 s header time); [`super::serve::serve`] takes others. A tokio listener converts with
/// `listener.into_std()?`.
pub async fn serve_tls(
    listener: std::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    super::serve::serve(
        listener,
        Some(config),
        router,
        super::serve::ConnLimits::default(),
        super::serve::Connections::new(),
        shutdown,
    )
    .await
}
