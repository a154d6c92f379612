//! https upstreams: patgate verifies the upstream's certificate against `upstream.ca_file`
//! (a CA made at test time) and forwards over TLS, on a client connection's own upstream
//! connection and through the pool alike; a certificate it cannot verify is a 502.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::certs::TestCa;
use crate::support::*;

/// A CA named `name`, and a server certificate for localhost it signed: (CA, leaf, key).
fn ca_and_leaf(name: &str) -> (TestCa, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca = TestCa::new(name);
    let leaf = ca.server("upstream");
    let cert = CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
    (ca, cert, key)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A TLS HTTP/1.1 upstream on its own thread and runtime: answers `tls ok` to every
/// request, and counts the requests it read.
struct TlsUpstream {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

fn spawn_tls_upstream(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> TlsUpstream {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    // patgate offers HTTP/1.1 alone, though this server would take h2.
                    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        count.fetch_add(1, Ordering::SeqCst);
                        let host = req
                            .headers()
                            .get("host")
                            .map(|h| h.to_str().unwrap_or("").to_owned())
                            .unwrap_or_default();
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(format!(
                                "tls ok {host}\n"
                            )))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
    });
    TlsUpstream { addr, requests }
}

fn tls_route(up: &TlsUpstream, ca_file: &Path) -> String {
    format!(
        "[upstream]\nca_file = \"{}\"\n\n[[routes]]\npath = \"/{{org}}/_apis/distributedtask/**\"\nupstream = \"https://localhost:{}/base\"\nrules = [ {{ scope = \"agentpools:read\" }} ]\n",
        ca_file.display(),
        up.addr.port()
    )
}

#[test]
fn an_https_upstream_verified_by_the_ca_file_serves_through_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_and_leaf("Upstream CA");
    let up = spawn_tls_upstream(cert, key);
    let p = TestPatgate::start(&tls_route(&up, &ca.write(dir.path(), "ca.pem")));
    let t = p.mint_live("agentpools:read", "acme");
    let want = format!("tls ok localhost:{}\n", up.addr.port());
    // A client that closes: the worker's pool.
    let r = http(
        p.addr,
        &format!(
            "GET /acme/_apis/distributedtask/pools HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            t.token
        ),
    );
    assert_eq!((r.status, r.body.as_str()), (200, want.as_str()), "{r:?}");
    // A client that keeps its connection: its own upstream connection, reused.
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let one = format!(
        "GET /acme/_apis/distributedtask/pools HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {}\r\n\r\n",
        t.token
    );
    let last = one.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
    s.write_all(format!("{one}{one}{last}").as_bytes()).unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 3, "{all}");
    assert_eq!(all.matches(want.as_str()).count(), 3, "{all}");
    assert_eq!(up.requests.load(Ordering::SeqCst), 4);
    assert!(!p.log().contains("TLS handshake failed"), "{}", p.log());
}

#[test]
fn an_https_upstream_the_ca_file_does_not_vouch_for_is_502() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = ca_and_leaf("Upstream CA");
    let (other, _, _) = ca_and_leaf("Another CA");
    let up = spawn_tls_upstream(cert, key);
    let p = TestPatgate::start(&tls_route(&up, &other.write(dir.path(), "other.pem")));
    let t = p.mint_live("agentpools:read", "acme");
    for close in ["Connection: close\r\n", ""] {
        // With and without close: the pool and the client connection's own connection.
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(
            format!(
                "GET /acme/_apis/distributedtask/pools HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {}\r\n{close}\r\n",
                t.token
            )
            .as_bytes(),
        )
        .unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
        assert!(answer.ends_with("upstream unreachable\n"), "{answer}");
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), 0);
    let line = format!("upstream=localhost:{}", up.addr.port());
    assert!(p.log_shows("Upstream TLS handshake failed"), "{}", p.log());
    let log = p.log();
    let failure = log.lines().find(|l| l.contains("Upstream TLS handshake failed")).unwrap();
    assert!(failure.contains(&line) && failure.contains("UnknownIssuer"), "{failure}");
    assert!(!log.contains(&t.token));
}

#[test]
fn an_unusable_ca_file_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_only = write(
        dir.path(),
        "key.pem",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let config = write(
        dir.path(),
        "patgate.toml",
        &format!(
            "[upstream]\nca_file = \"{}\"\n\n[[routes]]\npath = \"/x/**\"\nupstream = \"https://localhost:1\"\nrules = \"git\"\n",
            key_only.display()
        ),
    );
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("upstream.ca_file: `{}` holds no certificate", key_only.display())),
        "{stderr}"
    );
}
