//! TLS on the internal API: the listener's certificate and key, and the cluster CA that a node
//! trusts its peers' certificates to chain to.
//!
//! Both sides are rustls with the ring provider, HTTP/1.1 only. The client ([`PeerTls`])
//! trusts the CA bundle it is given and nothing else (no system roots), and checks that a
//! peer's certificate names the host (DNS name or IP address) of the peer's registered URL.
//! The server asks no client certificate: peers authenticate with the cluster token, which
//! TLS then keeps secret.
//!
//! The listener reads its certificate and key again when their files change (checked at a
//! handshake, at most every [`RECHECK_EVERY`]), so a certificate renewed in place (cert-manager)
//! is served without a restart; a pair that does not load (a certificate written before its
//! key) leaves the previous one in use until it does. The CA bundle is read at start only.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The one protocol the internal API speaks over TLS.
const ALPN_HTTP1: &[u8] = b"http/1.1";
/// How often, at most, the listener looks whether its certificate's files changed.
pub const RECHECK_EVERY: Duration = Duration::from_secs(5);

/// Why a certificate, key or CA bundle could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("the CA bundle {path} is not usable: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("the certificate and key are not usable together: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of the PEM file at `path`: at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem =
        |err: rustls_pki_types::pem::Error| TlsError::Pem { path: path.into(), reason: err.to_string() };
    let certs =
        CertificateDer::pem_file_iter(path).map_err(pem)?.collect::<Result<Vec<_>, _>>().map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// The TLS configuration of an internal listener that presents the certificate chain in
/// `cert` (PEM: the node's certificate first, then any intermediates) with the private key in
/// `key` (PEM: PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// [`TlsError`] when a file cannot be read or parsed, or the key does not fit the certificate.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let files = CertFiles { cert: cert.into(), key: key.into() };
    let loaded = Loaded { stamp: files.stamp(), key: files.load()?, checked: Instant::now() };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Reloading { files, loaded: Mutex::new(loaded) }));
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// The files of the listener's certificate chain and key.
#[derive(Debug)]
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl CertFiles {
    /// The chain and key, checked to fit together.
    fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let chain = certificates(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|err| TlsError::Pem { path: self.key.clone(), reason: err.to_string() })?;
        Ok(Arc::new(CertifiedKey::from_der(chain, key, &provider())?))
    }

    /// When the files last changed (following symbolic links, as Kubernetes mounts them).
    fn stamp(&self) -> [Option<SystemTime>; 2] {
        [&self.cert, &self.key].map(|path| std::fs::metadata(path).and_then(|meta| meta.modified()).ok())
    }
}

/// The certificate last loaded, and when its files were last looked at.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: [Option<SystemTime>; 2],
    checked: Instant,
}

/// Serves the certificate of [`CertFiles`], loaded again when its files change.
#[derive(Debug)]
struct Reloading {
    files: CertFiles,
    loaded: Mutex<Loaded>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if loaded.checked.elapsed() >= RECHECK_EVERY {
            loaded.checked = Instant::now();
            let stamp = self.files.stamp();
            if stamp != loaded.stamp {
                match self.files.load() {
                    Ok(key) => {
                        tracing::info!(cert = %self.files.cert.display(), "the internal listener's certificate changed; serving the new one");
                        (loaded.key, loaded.stamp) = (key, stamp);
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "the internal listener's certificate changed but does not load; still serving the previous one");
                    }
                }
            }
        }
        Some(loaded.key.clone())
    }
}

/// How a node reaches peers whose internal API serves HTTPS: it trusts only the cluster CA.
#[derive(Clone)]
pub struct PeerTls {
    config: Arc<ClientConfig>,
}

impl PeerTls {
    /// Trusts the CA certificates in the PEM bundle at `ca`, and only them.
    ///
    /// # Errors
    /// [`TlsError`] when the bundle cannot be read or holds no usable CA certificate.
    pub fn trusting(ca: &Path) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(ca)? {
            roots.add(cert).map_err(|err| TlsError::BadCa { path: ca.into(), reason: err.to_string() })?;
        }
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(PeerTls { config: Arc::new(config) })
    }

    /// The rustls client configuration.
    pub fn client_config(&self) -> &ClientConfig {
        &self.config
    }
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerTls(cluster CA)")
    }
}
