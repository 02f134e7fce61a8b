//! TLS with rustls: the public listener's certificate (reloaded when its
//! files change, a bad new pair never replacing a good one) and the client
//! side for `https://` upstreams and the Schema Registry.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ServerTls, UpstreamTls};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a certificate chain and its key, and checks that they belong together.
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = certificates(cert)?;
    let key_der = private_key(key)?;
    let ck = CertifiedKey::from_der(chain, key_der, &provider())
        .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))?;
    Ok(ck)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The listener's certificate, swapped in place when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
    cert: PathBuf,
    key: PathBuf,
    stamps: std::sync::Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// What a reload check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files did not change.
    Unchanged,
    /// A new certificate is in use.
    Loaded,
    /// The files changed but do not make a usable pair; the old one stays.
    Refused(String),
}

impl ReloadingCert {
    /// Loads the pair; fails when it is not usable.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        let stamps = (modified(cert), modified(key));
        let ck = certified_key(cert, key)?;
        Ok(Self {
            current: ArcSwap::from_pointee(ck),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            stamps: std::sync::Mutex::new(stamps),
        })
    }

    /// Reloads the pair if either file changed since the last look.
    pub fn reload_if_changed(&self) -> Reload {
        let now = (modified(&self.cert), modified(&self.key));
        let Ok(mut stamps) = self.stamps.lock() else {
            return Reload::Unchanged;
        };
        if *stamps == now {
            return Reload::Unchanged;
        }
        *stamps = now;
        match certified_key(&self.cert, &self.key) {
            Ok(ck) => {
                self.current.store(Arc::new(ck));
                Reload::Loaded
            }
            Err(e) => Reload::Refused(e),
        }
    }

    /// The certificate in use (DER of the leaf).
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current.load().cert.first().cloned()
    }
}

/// The public listener's TLS: the rustls config and the reloading
/// certificate behind it.
pub struct ServerTlsState {
    /// For the acceptor.
    pub config: Arc<rustls::ServerConfig>,
    /// For the reload task.
    pub cert: Arc<ReloadingCert>,
    /// How often the files are looked at.
    pub interval: Duration,
}

/// Builds the listener's TLS from `[server.tls]` (paths already resolved).
pub fn server(tls: &ServerTls) -> Result<ServerTlsState, String> {
    let cert = Arc::new(ReloadingCert::load(&tls.cert_file, &tls.key_file)?);
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(cert.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerTlsState {
        config: Arc::new(config),
        cert,
        interval: Duration::from_secs(tls.reload_interval_secs.max(1)),
    })
}

/// The client side: the system's trust store plus `ca_file`, and a client
/// certificate when one is configured.
pub fn client(tls: &UpstreamTls) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A certificate of the system store that rustls cannot parse is
        // left out; the others still count.
        let _ = roots.add(cert);
    }
    if let Some(ca) = &tls.ca_file {
        for cert in certificates(ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", ca.display()))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display())),
        _ => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let err = certified_key(&empty, &empty).expect_err("refused");
        assert!(err.contains("empty.pem"), "{err}");
        let err = certified_key(&dir.path().join("nope.pem"), &empty).expect_err("refused");
        assert!(err.contains("nope.pem"), "{err}");
    }

    #[test]
    fn the_client_trusts_the_system_store_without_a_ca_file() {
        assert!(client(&UpstreamTls::default()).is_ok());
        let bad = UpstreamTls {
            ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..UpstreamTls::default()
        };
        let err = client(&bad).expect_err("refused");
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
