//! TLS for patgate's listeners: server configurations built from PEM files, and a slot
//! that holds the current one so that SIGHUP can put in a new certificate while every
//! open connection keeps the one it was made with.
//!
//! Only rustls with the `ring` provider is used.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// ALPN for the proxy listener: HTTP/2 first, then HTTP/1.1.
pub const ALPN_PROXY: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN for the admin listener, which speaks HTTP/1.1 only.
pub const ALPN_ADMIN: &[&[u8]] = &[b"http/1.1"];

/// The PEM files of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate chaining to a CA in this file.
    pub client_ca: Option<PathBuf>,
}

/// Why a listener's TLS cannot be set up. Which file is named; no key material is shown.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", .0.display())]
    NoKey(PathBuf),
    #[error("{} is not a usable PEM file: {reason}", path.display())]
    BadPem { path: PathBuf, reason: String },
    #[error("the key does not fit the certificate, or is of an unsupported kind: {0}")]
    Rejected(rustls::Error),
    #[error("{}: the client CA certificates cannot be used: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
}

/// The provider every TLS configuration here uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file, in order.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey(path.to_owned()),
        // The parser's message never quotes the file's bytes.
        other => TlsError::BadPem {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

/// Builds a server configuration from `files`, offering `alpn`.
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(&files.cert)?;
    let key = private_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rejected)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(path)? {
                roots.add(cert).map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(TlsError::Rejected)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Sessions resume from tickets (keys rotated every six hours, shared by every worker)
    // as well as from the server's cache: a client that comes back skips the key exchange.
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsError::Rejected)?;
    Ok(Arc::new(config))
}

/// A listener's TLS settings, validated: the configuration built from its files.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub files: TlsFiles,
    pub config: Arc<ServerConfig>,
    /// The longest a client may take to finish the handshake.
    pub handshake_timeout: Duration,
}

/// Two are equal when made from the same files with the same timeout (the files' contents
/// may differ: that is what a reload picks up).
impl PartialEq for ListenerTls {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files && self.handshake_timeout == other.handshake_timeout
    }
}

impl Eq for ListenerTls {}

/// The configuration a listener hands to each new connection. A reload replaces it;
/// connections already open keep theirs.
#[derive(Debug)]
pub struct TlsSlot(ArcSwap<ServerConfig>);

impl TlsSlot {
    pub fn new(config: Arc<ServerConfig>) -> Self {
        TlsSlot(ArcSwap::new(config))
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.0.load_full())
    }

    /// Puts in a new configuration for connections accepted from now on.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        self.0.store(config);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn self_signed() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn a_certificate_and_its_key_make_a_config_offering_h2_first() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let files = TlsFiles {
            cert: write(dir.path(), "cert.pem", &cert),
            key: write(dir.path(), "key.pem", &key),
            client_ca: None,
        };
        let c = server_config(&files, ALPN_PROXY).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(c.ticketer.enabled(), "sessions resume from tickets");
        let files = TlsFiles {
            client_ca: Some(files.cert.clone()),
            ..files
        };
        assert!(server_config(&files, ALPN_ADMIN).is_ok());
    }

    #[test]
    fn each_bad_file_is_named_and_no_key_material_is_shown() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let (other_cert, _) = self_signed();
        let good_cert = write(dir.path(), "cert.pem", &cert);
        let good_key = write(dir.path(), "key.pem", &key);
        let files = |cert: &Path, key: &Path| TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            client_ca: None,
        };
        let missing = dir.path().join("missing.pem");
        let e = server_config(&files(&missing, &good_key), ALPN_PROXY).unwrap_err();
        assert!(e.to_string().starts_with(&format!("cannot read {}", missing.display())), "{e}");
        let e = server_config(&files(&good_key, &good_key), ALPN_PROXY).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate(_)), "{e}");
        let e = server_config(&files(&good_cert, &good_cert), ALPN_PROXY).unwrap_err();
        assert!(matches!(e, TlsError::NoKey(_)), "{e}");
        let other = write(dir.path(), "other.pem", &other_cert);
        let e = server_config(&files(&other, &good_key), ALPN_PROXY).unwrap_err();
        assert!(matches!(e, TlsError::Rejected(_)), "{e}");
        let key_body: String = key.lines().nth(1).unwrap().to_owned();
        assert!(!e.to_string().contains(&key_body));
        let garbage = write(
            dir.path(),
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        let e = server_config(&files(&garbage, &good_key), ALPN_PROXY).unwrap_err();
        assert!(e.to_string().contains("garbage.pem"), "{e}");
    }
}
