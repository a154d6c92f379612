//! TLS end to end: git over https with a test CA (HTTP/2 and HTTP/1.1), hyper's HTTP/2
//! client through the TLS listener, a certificate reload on SIGHUP while a long request is
//! in flight, and the admin listener asking for client certificates.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::certs::{Leaf, TestCa};
use crate::support::{basic, git, git_env, spawn_upstream, TestPatgate};

/// patgate with TLS on its proxy listener from `leaf`, plus `extra` TOML.
fn start_tls(leaf: &Leaf, extra: &str) -> (TestPatgate, tempfile::TempDir) {
    start_tls_with(leaf, "", extra)
}

/// Likewise, with `server` lines in the `[server]` table.
fn start_tls_with(leaf: &Leaf, server: &str, extra: &str) -> (TestPatgate, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = leaf.write(certs.path(), "server");
    let p = TestPatgate::start_with_server(
        server,
        &format!(
            "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nhandshake_timeout = \"2s\"\n{extra}",
            cert.display(),
            key.display()
        ),
    );
    assert!(p.log_shows("tls=true"), "{}", p.log());
    (p, certs)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Waits until the running server has the token (the CLI wrote it to the store).
fn wait_until_admitted(p: &TestPatgate, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.admin_sees(token) {
        assert!(Instant::now() < deadline, "the server never loaded the token");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TLS connection to `addr` for server name `localhost`, trusting what `config` trusts.
async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

/// An HTTP/2 client connection to `addr` over TLS (ALPN `h2`, checked), driven in a task.
async fn h2_client(addr: SocketAddr, ca: &TestCa) -> hyper::client::conn::http2::SendRequest<Empty<bytes::Bytes>> {
    let tls = connect(addr, ca.client_config(&[b"h2"], None)).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// `GET` of the agents' pools with `token`, as an HTTP/2 client sends it.
fn pools(addr: SocketAddr, token: &str) -> hyper::Request<Empty<bytes::Bytes>> {
    hyper::Request::get(format!("https://localhost:{}/acme/_apis/distributedtask/pools", addr.port()))
        .header("authorization", basic("x", token))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap()
}

#[test]
fn git_clones_and_pushes_over_https_with_a_test_ca_on_http2_and_http1() {
    let ca = TestCa::new("patgate test CA");
    let (p, certs) = start_tls(&ca.server("localhost"), "");
    let ca_file = ca.write(certs.path(), "ca.pem");
    p.init_repo("acme", "app");
    let t = p.mint("code:write", "acme", "1d");
    wait_until_admitted(&p, &t.token);
    let url = format!("https://x:{}@localhost:{}/acme/app.git", t.token, p.addr.port());
    let ca_file = ca_file.to_str().unwrap();
    let env = [("GIT_SSL_CAINFO", ca_file)];
    for (i, version) in ["HTTP/2", "HTTP/1.1"].into_iter().enumerate() {
        let dir = p.dir.path().join(format!("clone{i}"));
        let v = format!("http.version={version}");
        let run = git_env(p.dir.path(), &["-c", &v, "clone", "-q", &url, dir.to_str().unwrap()], &env);
        assert!(run.ok, "{version}: {}\n{}", run.stderr, p.log());
        std::fs::write(dir.join(format!("f{i}")), "x\n").unwrap();
        git(&dir, &["add", "."]).ok();
        git(&dir, &["commit", "-qm", "over tls"]).ok();
        let run = git_env(&dir, &["-c", &v, "push", "-q", "origin", "main"], &env);
        assert!(run.ok, "{version}: {}\n{}", run.stderr, p.log());
    }
    let log = p.log();
    assert!(
        log.contains("http.version=HTTP/2.0") && log.contains("http.version=HTTP/1.1"),
        "{log}"
    );
    // Without the CA, git refuses the certificate; with a bad token, it is asked again.
    let run = git(p.dir.path(), &["clone", "-q", &url, "untrusted"]);
    assert!(!run.ok && run.stderr.contains("certificate"), "{}", run.stderr);
    let bad = format!("https://x:not-a-token@localhost:{}/acme/app.git", p.addr.port());
    let run = git_env(p.dir.path(), &["clone", "-q", &bad, "refused"], &env);
    assert!(!run.ok && run.stderr.contains("Authentication failed"), "{}", run.stderr);
}

#[test]
fn an_http2_client_is_served_through_the_tls_listener() {
    let ca = TestCa::new("patgate test CA");
    let (p, _certs) = start_tls(&ca.server("localhost"), "");
    p.init_repo("acme", "app");
    let t = p.mint("code:read", "acme", "1d");
    wait_until_admitted(&p, &t.token);
    let addr = p.addr;
    let ca = rt().block_on(async move {
        let mut send = h2_client(addr, &ca).await;
        let get = |auth: Option<String>| {
            let mut b = hyper::Request::get(format!(
                "https://localhost:{}/acme/app.git/info/refs?service=git-upload-pack",
                addr.port()
            ));
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            b.body(Empty::<bytes::Bytes>::new()).unwrap()
        };
        // Several streams at once on the one connection.
        let mut streams = Vec::new();
        for _ in 0..8 {
            send.ready().await.unwrap();
            streams.push(send.send_request(get(Some(basic("x", &t.token)))));
        }
        for s in streams {
            let r = s.await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.version(), http::Version::HTTP_2);
            let body = r.into_body().collect().await.unwrap().to_bytes();
            assert!(body.windows(8).any(|w| w == b"git-uplo"), "{body:?}");
        }
        let r = send.send_request(get(None)).await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"patgate\"");
        ca
    });
    // A client that offers only HTTP/1.1 gets HTTP/1.1.
    rt().block_on(async move {
        let tls = connect(addr, ca.client_config(&[b"http/1.1"], None)).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    });
}

#[test]
fn plain_http_on_the_tls_port_and_a_stalled_handshake_are_cut() {
    let ca = TestCa::new("patgate test CA");
    let (p, _certs) = start_tls(&ca.server("localhost"), "");
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf));
    // A client that opens TCP and says nothing is cut at the handshake timeout (2 s).
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let n = s.read(&mut [0u8; 16]).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
}

/// Reads a request head from `s`; false when it closed first.
fn read_head(s: &mut std::net::TcpStream) -> bool {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap_or(0) == 0 {
            return false;
        }
        head.push(b[0]);
    }
    true
}

/// An upstream that answers every request with a body of `len` bytes, one every `gap`.
fn slow_upstream(len: usize, gap: Duration) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                if !read_head(&mut s) {
                    return;
                }
                let _ = write!(s, "HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                for _ in 0..len {
                    std::thread::sleep(gap);
                    if s.write_all(b"x").is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn agents_route(upstream: SocketAddr) -> String {
    format!(
        "[[routes]]\npath = \"/{{org}}/_apis/distributedtask/**\"\nupstream = \"http://{upstream}\"\nrules = [ {{ scope = \"agentpools:read\" }} ]\n"
    )
}

/// Rewrites the listener's certificate files with `leaf`.
fn replace_files(dir: &Path, leaf: &Leaf) {
    leaf.write(dir, "server");
}

#[test]
fn sighup_puts_in_a_new_certificate_without_cutting_a_long_request() {
    let ca1 = TestCa::new("first CA");
    let ca2 = TestCa::new("second CA");
    let upstream = slow_upstream(30, Duration::from_millis(100));
    let (p, certs) = start_tls(&ca1.server("localhost"), &agents_route(upstream));
    let t = p.mint("agentpools:read", "acme", "1d");
    let addr = p.addr;
    wait_until_admitted(&p, &t.token);
    let request = format!(
        "GET /acme/_apis/distributedtask/pools HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        basic("x", &t.token)
    );
    rt().block_on(async {
        // The long request starts on the first certificate ...
        let mut long = connect(addr, ca1.client_config(&[b"http/1.1"], None)).await.unwrap();
        long.write_all(request.as_bytes()).await.unwrap();
        let mut got = vec![0u8; 64];
        let n = long.read(&mut got).await.unwrap();
        assert!(got[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got[..n]));

        // ... the files change and SIGHUP puts the second in.
        replace_files(certs.path(), &ca2.server("localhost"));
        let line = p.reload();
        assert!(line.contains("Configuration reloaded"), "{line}");
        let fresh = connect(addr, ca2.client_config(&[b"http/1.1"], None)).await;
        assert!(fresh.is_ok(), "the new certificate is served: {:?}", fresh.err());
        let old = connect(addr, ca1.client_config(&[b"http/1.1"], None)).await;
        assert!(old.is_err(), "the old certificate is no longer served");

        // The long request was not cut: every byte of its body arrives.
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), long.read_to_end(&mut rest))
            .await
            .expect("the long request finished")
            .unwrap();
        let mut all = got[..n].to_vec();
        all.extend_from_slice(&rest);
        let body = &all[all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
        assert_eq!(body, &[b'x'; 30][..]);

        // A broken file is refused on reload; the certificate in force stays.
        std::fs::write(certs.path().join("server.crt"), "not a certificate\n").unwrap();
        let line = p.reload();
        assert!(line.contains("Reload refused") && line.contains("server.tls.cert_file"), "{line}");
        assert!(connect(addr, ca2.client_config(&[b"http/1.1"], None)).await.is_ok());
    });
}

#[test]
fn the_admin_listener_asks_for_client_certificates_from_its_ca() {
    let server_ca = TestCa::new("server CA");
    let client_ca = TestCa::new("client CA");
    let stranger_ca = TestCa::new("stranger CA");
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = server_ca.server("localhost").write(certs.path(), "admin");
    let client_ca_file = client_ca.write(certs.path(), "clients.pem");
    let p = TestPatgate::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[admin.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n",
        cert.display(),
        key.display(),
        client_ca_file.display()
    ));
    let admin = p.admin.unwrap();
    let ready = async |config: Arc<rustls::ClientConfig>| -> Result<String, String> {
        let mut s = connect(admin, config).await.map_err(|e| e.to_string())?;
        s.write_all(b"GET /admin/v1/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    };
    rt().block_on(async {
        let ok = ready(server_ca.client_config(&[b"http/1.1"], Some(&client_ca.client("ci-robot")))).await;
        assert!(ok.as_deref().is_ok_and(|r| r.starts_with("HTTP/1.1 200")), "{ok:?}");
        let none = ready(server_ca.client_config(&[b"http/1.1"], None)).await;
        assert!(none.as_ref().is_err() || none.as_ref().is_ok_and(|r| r.is_empty()), "{none:?}");
        let stranger = ready(server_ca.client_config(&[b"http/1.1"], Some(&stranger_ca.client("mallory")))).await;
        assert!(
            stranger.as_ref().is_err() || stranger.as_ref().is_ok_and(|r| r.is_empty()),
            "{stranger:?}"
        );
    });
}

#[test]
fn the_upstream_is_told_https_the_client_and_the_host_of_an_http2_request() {
    let ca = TestCa::new("patgate test CA");
    let up = spawn_upstream(false);
    let (p, _certs) = start_tls(&ca.server("localhost"), &agents_route(up.addr));
    let t = p.mint("agentpools:read", "acme", "1d");
    wait_until_admitted(&p, &t.token);
    let addr = p.addr;
    rt().block_on(async move {
        for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
            let req = pools(addr, &t.token);
            let status = if alpn == b"h2" {
                h2_client(addr, &ca).await.send_request(req).await.unwrap().status()
            } else {
                let tls = connect(addr, ca.client_config(&[alpn], None)).await.unwrap();
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
                tokio::spawn(conn);
                let (mut parts, body) = req.into_parts();
                parts.uri = "/acme/_apis/distributedtask/pools".parse().unwrap();
                parts.headers.insert("host", format!("localhost:{}", addr.port()).parse().unwrap());
                send.send_request(hyper::Request::from_parts(parts, body)).await.unwrap().status()
            };
            assert_eq!(status, 200);
        }
    });
    let seen = up.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for s in seen.iter() {
        assert_eq!(s.header("x-forwarded-proto"), vec!["https".to_string()]);
        assert_eq!(s.header("x-forwarded-host"), vec![format!("localhost:{}", p.addr.port())]);
        assert_eq!(s.header("x-forwarded-for"), vec!["127.0.0.1".to_string()]);
        assert_eq!(s.header("host"), vec![up.addr.to_string()]);
    }
}

#[test]
fn sigterm_lets_an_http2_stream_in_flight_finish_then_exits_zero() {
    let ca = TestCa::new("patgate test CA");
    let upstream = slow_upstream(20, Duration::from_millis(50));
    let (mut p, _certs) = start_tls(&ca.server("localhost"), &agents_route(upstream));
    let t = p.mint("agentpools:read", "acme", "1d");
    wait_until_admitted(&p, &t.token);
    let addr = p.addr;
    let (tx, rx) = std::sync::mpsc::channel();
    let client = std::thread::spawn(move || {
        rt().block_on(async move {
            let r = h2_client(addr, &ca).await.send_request(pools(addr, &t.token)).await.unwrap();
            tx.send(()).unwrap();
            let status = r.status();
            let body = r.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        })
    });
    rx.recv_timeout(Duration::from_secs(20)).expect("the answer's head");
    let (status, _) = p.terminate();
    assert!(status.success(), "{status:?}\n{}", p.log());
    let (status, body) = client.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(&body[..], &[b'x'; 20][..], "the stream finished whole");
}

#[test]
fn an_http2_connection_with_nothing_to_do_is_closed_though_the_client_pings() {
    let ca = TestCa::new("patgate test CA");
    let (p, _certs) = start_tls_with(&ca.server("localhost"), "idle_timeout = \"1s\"", "");
    let addr = p.addr;
    rt().block_on(async move {
        let tls = connect(addr, ca.client_config(&[b"h2"], None)).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(200))
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(tls))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let req = hyper::Request::get(format!("https://localhost:{}/acme/app.git/info/refs", addr.port()))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        assert_eq!(send.send_request(req).await.unwrap().status(), 401);
        // Pings every 200 ms keep bytes moving, but no request comes: the server ends it.
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(15), conn)
            .await
            .expect("the connection was closed")
            .unwrap()
            .ok();
        assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    });
}

#[test]
fn http2_streams_count_against_the_address_limit_as_connections_do() {
    let ca = TestCa::new("patgate test CA");
    let hanging = spawn_upstream(true);
    let (p, _certs) = start_tls_with(
        &ca.server("localhost"),
        "max_connections_per_ip = 3",
        &format!("{}response_timeout = \"3s\"\n", agents_route(hanging.addr)),
    );
    let t = p.mint("agentpools:read", "acme", "1d");
    wait_until_admitted(&p, &t.token);
    let addr = p.addr;
    let seen = hanging.seen.clone();
    rt().block_on(async move {
        let send = h2_client(addr, &ca).await;
        let get = || pools(addr, &t.token);
        // The connection is one; two streams waiting on the upstream make three.
        let mut waiting = Vec::new();
        for _ in 0..2 {
            let mut s = send.clone();
            let req = get();
            waiting.push(tokio::spawn(async move { s.send_request(req).await.unwrap().status() }));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.lock().unwrap().len() < 2 {
            assert!(Instant::now() < deadline, "the two streams never reached the upstream");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = send.clone().send_request(get()).await.unwrap();
        assert_eq!(r.status(), 503);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"too many requests in flight from this address\n");
        for w in waiting {
            assert_eq!(w.await.unwrap(), 504);
        }
        // Their places are given back with their answers.
        assert_eq!(send.clone().send_request(get()).await.unwrap().status(), 504);
    });
    assert_eq!(
        hanging.seen.lock().unwrap().len(),
        3,
        "the refused stream never reached the upstream"
    );
}

#[test]
fn http2_streams_count_against_max_connections_too() {
    let ca = TestCa::new("patgate test CA");
    let hanging = spawn_upstream(true);
    let (p, _certs) = start_tls_with(
        &ca.server("localhost"),
        // One worker: its accept loop holds a place while it waits for the next connection.
        "max_connections = 3\nworkers = 1",
        &format!("{}response_timeout = \"2s\"\n", agents_route(hanging.addr)),
    );
    let t = p.mint("agentpools:read", "acme", "1d");
    wait_until_admitted(&p, &t.token);
    let addr = p.addr;
    let seen = hanging.seen.clone();
    rt().block_on(async move {
        let send = h2_client(addr, &ca).await;
        let get = || pools(addr, &t.token);
        // The connection, the waiting accept loop and a stream waiting on the upstream take
        // the three places.
        let mut s = send.clone();
        let req = get();
        let waiting = tokio::spawn(async move { s.send_request(req).await.unwrap().status() });
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the stream never reached the upstream");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = send.clone().send_request(get()).await.unwrap();
        assert_eq!(r.status(), 503);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"too many requests in flight; retry later\n");
        assert_eq!(waiting.await.unwrap(), 504);
    });
    assert_eq!(hanging.seen.lock().unwrap().len(), 1);
}

/// An upstream that answers every request on a connection with `len` bytes at once.
fn bulk_upstream(len: usize) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || loop {
                if !read_head(&mut s) {
                    return;
                }
                let mut answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n").into_bytes();
                answer.resize(answer.len() + len, b'x');
                if s.write_all(&answer).is_err() {
                    return;
                }
            });
        }
    });
    addr
}

#[test]
fn a_large_answer_read_slowly_over_tls_arrives_whole_and_the_connection_goes_on() {
    let ca = TestCa::new("bulk CA");
    let len = 4 << 20;
    let (p, _certs) = start_tls(&ca.server("localhost"), &agents_route(bulk_upstream(len)));
    let t = p.mint("agentpools:read", "acme", "1d");
    wait_until_admitted(&p, &t.token);
    let request = format!(
        "GET /acme/_apis/distributedtask/pools HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\n\r\n",
        basic("x", &t.token)
    );
    rt().block_on(async {
        // A small receive window, so that patgate's writes wait on the socket.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        let tcp = socket.connect(p.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let config = ca.client_config(&[b"http/1.1"], None);
        let mut s = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
        for round in 0..2 {
            s.write_all(request.as_bytes()).await.unwrap();
            let started = Instant::now();
            let mut got = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            // Slowly at first, so that patgate's writes fill the socket and wait.
            let whole = async {
                loop {
                    let n = s.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "closed after {} bytes", got.len());
                    got.extend_from_slice(&chunk[..n]);
                    if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        if got.len() >= end + 4 + len {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), whole)
                .await
                .unwrap_or_else(|_| panic!("round {round}: stalled at {} bytes", got.len()));
            assert!(got.starts_with(b"HTTP/1.1 200"), "round {round}");
            assert!(started.elapsed() < Duration::from_secs(10));
        }
    });
}
