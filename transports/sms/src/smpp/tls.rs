//! SMPP over TLS (rustls on ring): the ESME's client settings, the simulator's server settings,
//! PEM loading, and naming why a handshake failed.
//!
//! SMPP 3.4 itself says nothing about TLS; SMSCs that offer it run the same PDUs over a TLS
//! connection, usually on a port of their own. The TLS handshake comes first, then the bind.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::smsc_sim::SmscTls;

/// Where PEM text comes from: a file read when the transport or simulator starts, or the text
/// itself.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A PEM file.
    File(PathBuf),
    /// PEM text.
    Pem(Vec<u8>),
}

impl PemSource {
    /// A PEM file.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        PemSource::File(path.into())
    }

    /// PEM text.
    pub fn pem(text: impl Into<Vec<u8>>) -> Self {
        PemSource::Pem(text.into())
    }

    fn read(&self, what: &str) -> Result<Vec<u8>, String> {
        match self {
            PemSource::Pem(bytes) => Ok(bytes.clone()),
            PemSource::File(path) => std::fs::read(path)
                .map_err(|e| format!("{what}: cannot read {}: {e}", path.display())),
        }
    }

    /// Every certificate in the PEM text (at least one).
    fn certificates(&self, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
        let text = self.read(what)?;
        let certs = CertificateDer::pem_slice_iter(&text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{what}: bad PEM: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{what}: no CERTIFICATE in the PEM text"));
        }
        Ok(certs)
    }

    /// The first private key (PKCS#8, PKCS#1 or SEC1) in the PEM text.
    fn private_key(&self, what: &str) -> Result<PrivateKeyDer<'static>, String> {
        let text = self.read(what)?;
        PrivateKeyDer::from_pem_slice(&text).map_err(|e| format!("{what}: no usable key: {e}"))
    }
}

/// Key material is not printed: a file shows its path, PEM text only its length.
impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::File(path) => f.debug_tuple("File").field(path).finish(),
            PemSource::Pem(bytes) => write!(f, "Pem(<{} octets>)", bytes.len()),
        }
    }
}

/// A certificate chain (leaf first) and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// The certificate, then any intermediates.
    pub cert_chain: PemSource,
    /// The private key of the first certificate.
    pub key: PemSource,
}

impl TlsIdentity {
    /// A chain and its key.
    pub fn new(cert_chain: PemSource, key: PemSource) -> Self {
        Self { cert_chain, key }
    }

    fn load(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
        Ok((
            self.cert_chain.certificates("certificate chain")?,
            self.key.private_key("private key")?,
        ))
    }
}

/// TLS for the ESME's connections ([`super::SmppConfig::tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmppTls {
    /// The CA certificate(s) the SMSC's certificate must chain to (no system roots are used).
    pub ca: PemSource,
    /// The name the SMSC's certificate must be valid for, a DNS name or an IP address.
    /// `None`: the host part of [`super::SmppConfig::address`].
    pub server_name: Option<String>,
    /// Client certificate and key, for SMSCs that want mutual TLS. `None`: no client
    /// certificate.
    pub client_identity: Option<TlsIdentity>,
}

impl SmppTls {
    /// Trusts `ca`, checks the host part of the address, sends no client certificate.
    pub fn new(ca: PemSource) -> Self {
        Self {
            ca,
            server_name: None,
            client_identity: None,
        }
    }

    /// Checks the SMSC's certificate against `name` instead of the address's host.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Presents this certificate and key to the SMSC (mutual TLS).
    pub fn with_client_identity(mut self, identity: TlsIdentity) -> Self {
        self.client_identity = Some(identity);
        self
    }
}

/// Why a TLS handshake (or a TLS record after it) failed, as far as the ESME can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The SMSC's certificate does not chain to a configured CA (unknown CA).
    UnknownIssuer,
    /// The SMSC's certificate is not valid for the expected server name.
    NameMismatch {
        /// The name that was checked.
        server_name: String,
    },
    /// The SMSC's certificate has expired.
    Expired,
    /// The SMSC's certificate is not valid yet.
    NotYetValid,
    /// Another problem with the SMSC's certificate (bad signature, revoked, wrong usage, ...).
    BadCertificate(String),
    /// The SMSC ended the connection with a TLS alert (it wants a client certificate, refused
    /// ours, supports none of our versions or suites, ...): the alert's name.
    AlertReceived(String),
    /// What the SMSC sent is not TLS (a plain SMPP port?) or breaks the protocol.
    Protocol(String),
    /// The connection closed or failed during the handshake.
    Io(String),
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::UnknownIssuer => {
                write!(f, "certificate not issued by a trusted CA (unknown CA)")
            }
            TlsFailure::NameMismatch { server_name } => {
                write!(
                    f,
                    "certificate not valid for {server_name:?} (name mismatch)"
                )
            }
            TlsFailure::Expired => write!(f, "certificate expired"),
            TlsFailure::NotYetValid => write!(f, "certificate not valid yet"),
            TlsFailure::BadCertificate(why) => write!(f, "bad certificate: {why}"),
            TlsFailure::AlertReceived(alert) => write!(f, "the SMSC sent the alert {alert}"),
            TlsFailure::Protocol(why) => write!(f, "not TLS or a TLS protocol error: {why}"),
            TlsFailure::Io(why) => write!(f, "connection failed during the handshake: {why}"),
        }
    }
}

impl TlsFailure {
    /// The rustls error inside an I/O error from tokio-rustls, if there is one.
    pub(crate) fn from_rustls_io(error: &std::io::Error, server_name: &str) -> Option<Self> {
        let inner = error.get_ref()?.downcast_ref::<rustls::Error>()?;
        Some(Self::from_rustls(inner, server_name))
    }

    /// An I/O error of the handshake: the rustls error in it, or the I/O failure itself.
    pub(crate) fn from_handshake_io(error: &std::io::Error, server_name: &str) -> Self {
        Self::from_rustls_io(error, server_name)
            .unwrap_or_else(|| TlsFailure::Io(error.to_string()))
    }

    fn from_rustls(error: &rustls::Error, server_name: &str) -> Self {
        match error {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsFailure::NameMismatch {
                    server_name: server_name.to_string(),
                },
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsFailure::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    TlsFailure::NotYetValid
                }
                _ => TlsFailure::BadCertificate(error.to_string()),
            },
            rustls::Error::AlertReceived(alert) => TlsFailure::AlertReceived(format!("{alert:?}")),
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. }
            | rustls::Error::PeerMisbehaved(_)
            | rustls::Error::PeerIncompatible(_)
            | rustls::Error::DecryptError => TlsFailure::Protocol(error.to_string()),
            other => TlsFailure::Protocol(other.to_string()),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
fn host_of(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            return &rest[..end];
        }
    }
    match address.rsplit_once(':') {
        // More than one ':' without brackets: a bare IPv6 address.
        Some((host, _)) if !host.contains(':') => host,
        Some(_) => address,
        None => address,
    }
}

/// What each ESME connection needs for its handshake, built once by `SmppTransport::start`.
#[derive(Clone)]
pub(crate) struct ClientTls {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
    /// The name as configured or derived, for error messages.
    pub name: String,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Loads the CA and the client identity and checks the server name; the message says
    /// what is wrong.
    pub fn new(tls: &SmppTls, address: &str) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        for cert in tls.ca.certificates("tls.ca")? {
            roots
                .add(cert)
                .map_err(|e| format!("tls.ca: unusable CA certificate: {e}"))?;
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_root_certificates(roots);
        let config = match &tls.client_identity {
            None => builder.with_no_client_auth(),
            Some(identity) => {
                let (chain, key) = identity
                    .load()
                    .map_err(|e| format!("tls.client_identity: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("tls.client_identity: {e}"))?
            }
        };
        let name = tls
            .server_name
            .clone()
            .unwrap_or_else(|| host_of(address).to_string());
        let server_name = ServerName::try_from(name.clone()).map_err(|_| {
            format!("tls.server_name: {name:?} is neither a DNS name nor an IP address")
        })?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            name,
        })
    }
}

/// The simulator's acceptor, built once by `SmscSimulator::start`.
pub(crate) fn acceptor(tls: &SmscTls) -> Result<TlsAcceptor, String> {
    let (chain, key) = tls
        .identity
        .load()
        .map_err(|e| format!("tls.identity: {e}"))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in ca.certificates("tls.client_ca")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("tls.client_ca: unusable CA certificate: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| format!("tls.client_ca: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls.identity: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_part_of_addresses() {
        assert_eq!(host_of("smsc.example.net:3550"), "smsc.example.net");
        assert_eq!(host_of("127.0.0.1:2775"), "127.0.0.1");
        assert_eq!(host_of("[::1]:2775"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn pem_text_is_not_printed() {
        let source = PemSource::pem("-----BEGIN PRIVATE KEY-----\nsecret\n");
        let shown = format!("{source:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("octets"), "{shown}");
    }

    #[test]
    fn bad_pem_is_a_config_error() {
        let tls = SmppTls::new(PemSource::pem("not PEM"));
        let error = ClientTls::new(&tls, "localhost:1").unwrap_err();
        assert!(error.contains("tls.ca"), "{error}");
        let tls = SmppTls::new(PemSource::file("/nonexistent/ca.pem"));
        let error = ClientTls::new(&tls, "localhost:1").unwrap_err();
        assert!(error.contains("cannot read"), "{error}");
    }

    #[test]
    fn rustls_errors_are_named() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert_eq!(
            TlsFailure::from_handshake_io(
                &io(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer
                )),
                "x"
            ),
            TlsFailure::UnknownIssuer
        );
        assert_eq!(
            TlsFailure::from_handshake_io(
                &io(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                )),
                "smsc"
            ),
            TlsFailure::NameMismatch {
                server_name: "smsc".into()
            }
        );
        assert!(matches!(
            TlsFailure::from_handshake_io(
                &io(rustls::Error::AlertReceived(
                    rustls::AlertDescription::CertificateRequired
                )),
                "x"
            ),
            TlsFailure::AlertReceived(a) if a == "CertificateRequired"
        ));
        assert!(matches!(
            TlsFailure::from_handshake_io(
                &std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof"),
                "x"
            ),
            TlsFailure::Io(_)
        ));
    }
}
