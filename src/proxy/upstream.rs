//! Upstreams: where a route sends what it admits. An HTTP upstream (`http://` or
//! `https://`) is reached through one connect function, [`Connector::open`], shared by the
//! client connection's own upstream connection ([`exchange::KeptUpstream`]), the worker's pool and
//! upgrades; bodies stream both ways and are never buffered whole. An https upstream is
//! verified against the system's root certificates, or only against the `upstream.ca_file`
//! bundle when one is set, with its host as SNI and HTTP/1.1 as the one ALPN protocol.
//! Nothing here judges a request: `HttpClient::forward` ([`forward`]) takes a
//! [`Plan`](super::plan::Plan), which only a permit makes.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub mod answer;
pub mod exchange;
pub mod forward;

use super::error::ProxyError;
use crate::auth::rules::NormalizedPath;

/// Settings shared by every HTTP upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// The most bytes of an answer head.
    pub max_response_head_bytes: usize,
    /// What https upstreams are verified against.
    pub trust: Trust,
}

/// The certificates an https upstream's chain must lead to.
#[derive(Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system's root certificates (`/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    System,
    /// Only the CA certificates of a PEM bundle (`upstream.ca_file`).
    Bundle {
        file: PathBuf,
        certs: Vec<CertificateDer<'static>>,
    },
}

impl Trust {
    /// Reads a PEM bundle of CA certificates; each must be usable as a trust anchor.
    pub fn bundle(file: &Path) -> Result<Trust, String> {
        let pem = std::fs::read(file).map_err(|e| format!("cannot be read ({e})"))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("is not a PEM file ({e})"))?;
        if certs.is_empty() {
            return Err("holds no certificate (no `BEGIN CERTIFICATE` section)".into());
        }
        let mut roots = RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            roots
                .add(cert.clone())
                .map_err(|e| format!("certificate {} cannot be a trust anchor ({e})", i + 1))?;
        }
        Ok(Trust::Bundle {
            file: file.to_owned(),
            certs,
        })
    }

    fn roots(&self) -> Arc<RootCertStore> {
        match self {
            Trust::System => system_roots(),
            Trust::Bundle { certs, .. } => {
                let mut roots = RootCertStore::empty();
                // Each was checked when the config was read.
                roots.add_parsable_certificates(certs.iter().cloned());
                Arc::new(roots)
            }
        }
    }
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trust::System => f.write_str("System"),
            Trust::Bundle { file, certs } => f
                .debug_struct("Bundle")
                .field("file", file)
                .field("certificates", &certs.len())
                .finish(),
        }
    }
}

/// The system's root certificates, read once per process when an https upstream is first
/// reached.
pub(crate) fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "Cannot read a system root certificate");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!("No system root certificates: https upstreams cannot be verified; set upstream.ca_file");
            } else {
                tracing::debug!(added, ignored, "System root certificates read");
            }
            Arc::new(roots)
        })
        .clone()
}

/// Where a route forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// An HTTP server, over TLS or not.
    Http(HttpTarget),
    /// `git http-backend` run as CGI over the bare repositories under this folder.
    GitHttpBackend(PathBuf),
}

/// An HTTP upstream: TLS or not, authority, an optional path prefix, and how long to
/// wait for its response headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `https://`: reached over TLS and verified.
    pub tls: bool,
    pub authority: Authority,
    /// The `Host` the upstream is sent: its authority, made once.
    pub host: http::HeaderValue,
    pub prefix: String,
    pub response_timeout: Duration,
}

impl HttpTarget {
    /// What the upstream is asked for: the route's prefix, the normalized path and the
    /// client's query. The usual request goes with its own, shared, not copied.
    pub fn path_and_query(&self, uri: &Uri, path: &NormalizedPath) -> Result<PathAndQuery, ProxyError> {
        match uri.path_and_query() {
            Some(pq) if self.prefix.is_empty() && pq.path() == path.as_str() => Ok(pq.clone()),
            _ => {
                let pq = match uri.query() {
                    Some(q) => format!("{}{}?{q}", self.prefix, path.as_str()),
                    None => format!("{}{}", self.prefix, path.as_str()),
                };
                PathAndQuery::try_from(pq).map_err(|_| ProxyError::UpstreamFailed)
            }
        }
    }
}

/// The prefix of the built-in git upstream.
pub const GIT_HTTP_BACKEND: &str = "git-http-backend:";

impl Upstream {
    /// How the metrics name it: scheme and authority (it never holds a userinfo), or
    /// `git-http-backend` (the folder may say more of the host than a label should).
    pub fn label(&self) -> String {
        match self {
            Upstream::Http(t) => format!("{}://{}", if t.tls { "https" } else { "http" }, t.authority),
            Upstream::GitHttpBackend(_) => "git-http-backend".to_owned(),
        }
    }

    /// Parses `http://host[:port][/prefix]`, `https://host[:port][/prefix]` or
    /// `git-http-backend:DIR`.
    pub fn parse(text: &str, response_timeout: Duration) -> Result<Upstream, String> {
        if let Some(dir) = text.strip_prefix(GIT_HTTP_BACKEND) {
            if dir.is_empty() {
                return Err("names no repository folder".into());
            }
            return Ok(Upstream::GitHttpBackend(PathBuf::from(dir)));
        }
        let uri: Uri = text.parse().map_err(|_| "is not a URL".to_string())?;
        let tls = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => false,
            Some(s) if *s == Scheme::HTTPS => true,
            _ => return Err("use http://HOST:PORT, https://HOST:PORT or git-http-backend:DIR".into()),
        };
        let authority = uri.authority().cloned().ok_or("has no host")?;
        if authority.as_str().contains('@') {
            return Err("may not hold a user or password".into());
        }
        if tls && ServerName::try_from(bare_host(&authority)).is_err() {
            return Err("has a host that is neither a DNS name nor an IP address".into());
        }
        if uri.query().is_some() {
            return Err("may not have a query".into());
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        let host = http::HeaderValue::from_str(authority.as_str()).map_err(|_| "has a host that is not a header value".to_string())?;
        Ok(Upstream::Http(HttpTarget {
            tls,
            authority,
            host,
            prefix,
            response_timeout,
        }))
    }
}

/// The host of an authority without the brackets of an IPv6 address.
fn bare_host(authority: &Authority) -> &str {
    let host = authority.host();
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// Why no connection to an upstream could be opened. It is logged where it happens, with
/// the upstream; the client only reads that the upstream is unreachable.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out (TCP and TLS handshake)")]
    Timeout,
    #[error("{0}")]
    Tcp(io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error("the host is not a TLS server name")]
    ServerName,
    #[error("not an http or https URL")]
    Scheme,
}

/// Opens upstream connections, plain or TLS, for every path that needs one. The TLS
/// client config is built once, when the first https upstream is reached.
#[derive(Clone)]
pub struct Connector {
    inner: Arc<ConnectorInner>,
}

struct ConnectorInner {
    connect_timeout: Duration,
    trust: Trust,
    tls: OnceLock<TlsConnector>,
}

impl Connector {
    fn new(config: &Config) -> Self {
        Connector {
            inner: Arc::new(ConnectorInner {
                connect_timeout: config.connect_timeout,
                trust: config.trust.clone(),
                tls: OnceLock::new(),
            }),
        }
    }

    fn tls(&self) -> &TlsConnector {
        self.inner.tls.get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default TLS versions")
                .with_root_certificates(self.inner.trust.roots())
                .with_no_client_auth();
            // patgate speaks HTTP/1.1 upstream, upgrades included.
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            TlsConnector::from(Arc::new(config))
        })
    }

    /// Opens a connection to `authority` (port 80 or 443 when it names none), over TLS
    /// when `tls`; `upstream.connect_timeout` covers TCP and the TLS handshake together.
    /// A failure is logged here, naming the upstream and the error.
    pub async fn open(&self, tls: bool, authority: &Authority) -> Result<Stream, ConnectError> {
        let host = bare_host(authority);
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let opened = async {
            let tcp = TcpStream::connect((host, port)).await.map_err(ConnectError::Tcp)?;
            let _ = tcp.set_nodelay(true);
            if !tls {
                return Ok(Stream::Plain(tcp));
            }
            let name = ServerName::try_from(host.to_owned()).map_err(|_| ConnectError::ServerName)?;
            let stream = self.tls().connect(name, tcp).await.map_err(ConnectError::Tls)?;
            Ok(Stream::Tls(Box::new(stream)))
        };
        let result = match tokio::time::timeout(self.inner.connect_timeout, opened).await {
            Err(_) => Err(ConnectError::Timeout),
            Ok(r) => r,
        };
        if let Err(e) = &result {
            match e {
                ConnectError::Tls(_) => tracing::warn!(upstream = %authority, error = %e, "Upstream TLS handshake failed"),
                _ => tracing::warn!(upstream = %authority, error = %e, "Upstream unreachable"),
            }
        }
        result
    }
}

/// An open upstream connection, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    #[test]
    fn upstreams_parse() {
        let t = Duration::from_secs(1);
        assert_eq!(
            Upstream::parse("git-http-backend:data/repos", t),
            Ok(Upstream::GitHttpBackend("data/repos".into()))
        );
        let Upstream::Http(h) = Upstream::parse("http://127.0.0.1:9000/base/", t).unwrap() else {
            panic!()
        };
        assert_eq!((h.tls, h.authority.as_str(), h.prefix.as_str()), (false, "127.0.0.1:9000", "/base"));
        let Upstream::Http(h) = Upstream::parse("https://git.example.com/base/", t).unwrap() else {
            panic!()
        };
        assert_eq!((h.tls, h.authority.as_str(), h.prefix.as_str()), (true, "git.example.com", "/base"));
        let Upstream::Http(h) = Upstream::parse("https://[::1]:8443", t).unwrap() else {
            panic!()
        };
        assert_eq!((h.tls, bare_host(&h.authority), h.authority.port_u16()), (true, "::1", Some(8443)));
        assert!(Upstream::parse("git-http-backend:", t).is_err());
        assert!(Upstream::parse("ftp://x", t).unwrap_err().contains("https://"));
        assert!(Upstream::parse("127.0.0.1:9000", t).is_err());
        assert!(Upstream::parse("http://h/?q=1", t).is_err());
        assert!(Upstream::parse("https://h/?q=1", t).is_err());
        assert!(Upstream::parse("https://user:secret@h", t).unwrap_err().contains("user"));
        assert!(Upstream::parse("https://a..b:443", t).unwrap_err().contains("DNS name"));
    }

    #[test]
    fn the_system_store_is_read() {
        // CI installs ca-certificates (.ci/run), as every distribution ships it.
        assert!(!system_roots().is_empty());
    }

    /// A CA, and a server certificate for localhost it signed: (CA PEM, leaf DER, leaf key).
    fn ca_and_server(name: &str) -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(params, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (ca_pem, leaf.der().clone(), key)
    }

    fn bundle(dir: &Path, name: &str, text: &str) -> Result<Trust, String> {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        Trust::bundle(&path)
    }

    #[test]
    fn a_ca_bundle_must_hold_usable_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _, _) = ca_and_server("CA");
        let Ok(Trust::Bundle { certs, .. }) = bundle(dir.path(), "ca.pem", &format!("# our CA\n{ca}{ca}")) else {
            panic!()
        };
        assert_eq!(certs.len(), 2);
        assert!(Trust::bundle(&dir.path().join("missing.pem"))
            .unwrap_err()
            .starts_with("cannot be read"));
        assert!(bundle(dir.path(), "empty.pem", "").unwrap_err().starts_with("holds no certificate"));
        let key = KeyPair::generate().unwrap().serialize_pem();
        assert!(bundle(dir.path(), "key.pem", &key).unwrap_err().starts_with("holds no certificate"));
        let bad = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(bundle(dir.path(), "bad.pem", bad).unwrap_err().starts_with("is not a PEM file"));
        let junk = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
        assert!(bundle(dir.path(), "junk.pem", junk)
            .unwrap_err()
            .contains("cannot be a trust anchor"));
    }

    /// A TLS server on 127.0.0.1 that completes handshakes, offering h2 and http/1.1, and
    /// sends back the negotiated ALPN protocol and the client's SNI.
    async fn tls_server(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> u16 {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        use tokio::io::AsyncWriteExt;
                        let c = tls.get_ref().1;
                        let alpn = String::from_utf8_lossy(c.alpn_protocol().unwrap_or(b"none")).into_owned();
                        let said = format!("{alpn} {}", c.server_name().unwrap_or("none"));
                        let _ = tls.write_all(said.as_bytes()).await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        port
    }

    fn connector(trust: Trust, connect_timeout: Duration) -> Connector {
        Connector::new(&Config {
            connect_timeout,
            response_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(5),
            pool_max_idle_per_host: 1,
            max_response_head_bytes: 16 * 1024,
            trust,
        })
    }

    #[tokio::test]
    async fn tls_upstreams_are_verified_against_the_trust_with_sni_and_http1_alpn() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = ca_and_server("Our CA");
        let port = tls_server(cert, key).await;
        let ours = connector(bundle(dir.path(), "ca.pem", &ca).unwrap(), Duration::from_secs(5));
        let localhost: Authority = format!("localhost:{port}").parse().unwrap();
        let Stream::Tls(mut tls) = ours.open(true, &localhost).await.unwrap() else {
            panic!("not TLS")
        };
        let mut said = String::new();
        tls.read_to_string(&mut said).await.unwrap();
        assert_eq!(said, "http/1.1 localhost");
        // The certificate names localhost, not 127.0.0.1.
        let by_ip: Authority = format!("127.0.0.1:{port}").parse().unwrap();
        let e = ours.open(true, &by_ip).await.err().unwrap();
        assert!(
            matches!(e, ConnectError::Tls(_)) && e.to_string().contains("not valid for name"),
            "{e}"
        );
        // Another CA does not vouch for it.
        let (other, _, _) = ca_and_server("Their CA");
        let theirs = connector(bundle(dir.path(), "other.pem", &other).unwrap(), Duration::from_secs(5));
        let e = theirs.open(true, &localhost).await.err().unwrap();
        assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    }

    #[tokio::test]
    async fn the_connect_timeout_covers_the_tls_handshake() {
        // A server that accepts and never speaks.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let c = connector(Trust::System, Duration::from_millis(300));
        let started = std::time::Instant::now();
        let e = c.open(true, &format!("localhost:{port}").parse().unwrap()).await.err().unwrap();
        assert!(matches!(e, ConnectError::Timeout), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
        // The same server is fine over plain TCP.
        assert!(matches!(
            c.open(false, &format!("127.0.0.1:{port}").parse().unwrap()).await,
            Ok(Stream::Plain(_))
        ));
        held.abort();
    }
}
