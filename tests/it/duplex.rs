//! The proxy without sockets on the client's side: one HTTP/1 connection is an in-memory
//! pipe (`tokio::io::duplex`) served by [`http1::serve_stream`], with a [`Proxy`] built in
//! this process over a token held in its [`TokenCache`], in front of a real recording
//! upstream on 127.0.0.1. What the client sends and reads is raw bytes, so framing,
//! pipelining, `100 Continue` and the refusal of a smuggled request can be checked byte
//! for byte, and what reached the upstream beside it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use patgate::auth::scope::ScopeSet;
use patgate::auth::token::TokenSecret;
use patgate::auth::Orgs;
use patgate::proxy::http1::{self, Limits};
use patgate::proxy::{Proxy, CHALLENGE};
use patgate::store::token_cache::TokenCache;
use patgate::store::TokenRecord;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::support::{spawn_upstream, Seen, Upstream};

/// How long any one read of the client's side may wait.
const WAIT: Duration = Duration::from_secs(10);

/// A proxy in this process with one route to a recording upstream, and a token it admits.
struct Harness {
    proxy: Arc<Proxy>,
    upstream: Upstream,
    token: String,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::watch::Sender<bool>,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Harness {
    fn new() -> Harness {
        let upstream = spawn_upstream(false);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("patgate.toml");
        std::fs::write(
            &path,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n\n[store]\nurl = \"sqlite://{}\"\n\n[[routes]]\npath = \"/s/**\"\nupstream = \"http://{}\"\nrules = [{{ scope = \"agentpools:read\" }}]\n",
                dir.path().join("patgate.db").display(),
                upstream.addr
            ),
        )
        .unwrap();
        let config = patgate::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        // The token as the store would hand it to the cache, without a store.
        let secret = TokenSecret::generate();
        let tokens = Arc::new(TokenCache::default());
        tokens.apply(
            &TokenRecord {
                repos: Default::default(),
                allow_from: Default::default(),
                rotated_at: None,
                id: "t-duplex".into(),
                hash: secret.hash(),
                name: "duplex".into(),
                owner: "alice".into(),
                orgs: Orgs::All,
                scopes: ScopeSet::parse(&["agentpools:read"]).unwrap(),
                created_at: 0,
                expires_at: i64::MAX,
                revoked_at: None,
                revoked_by: None,
                last_used_at: None,
                last_used_from: None,
            },
            patgate::store::now(),
        );
        assert_eq!(tokens.len(), 1);
        let proxy = Arc::new(Proxy::new(Arc::new(config.proxy), tokens));
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        Harness {
            proxy,
            upstream,
            token: secret.expose().to_owned(),
            _dir: dir,
            _stop: stop_tx,
            stop,
        }
    }

    /// A new client connection, served by the proxy on a task of its own.
    fn connect(&self) -> Client {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let limits = Limits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
        };
        let served = tokio::spawn(http1::serve_stream(server, peer, self.proxy.clone(), limits, self.stop.clone()));
        Client {
            io: client,
            buf: Vec::new(),
            served,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.upstream.seen.lock().unwrap().clone()
    }

    fn auth(&self) -> String {
        format!("Authorization: Bearer {}\r\n", self.token)
    }
}

/// The client's end of one connection.
struct Client {
    io: DuplexStream,
    /// Read and not yet taken.
    buf: Vec<u8>,
    served: tokio::task::JoinHandle<()>,
}

/// One answer as the client read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

impl Client {
    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// Reads more, failing the test after [`WAIT`]; `false` at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(WAIT, self.io.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no answer in time; read so far: {:?}", String::from_utf8_lossy(&self.buf)))
            .unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Takes `n` bytes, reading as needed.
    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "the stream ended inside a body");
        }
        self.buf.drain(..n).collect()
    }

    /// Takes a line, CRLF and all.
    async fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return self.buf.drain(..i + 2).collect();
            }
            assert!(self.fill().await, "the stream ended inside a line");
        }
    }

    /// Reads one answer's head (an informational answer is one too), or `None` when the
    /// connection ended before one.
    async fn head(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..i + 4).collect();
                return Some(String::from_utf8(head).unwrap());
            }
            if !self.fill().await {
                assert!(
                    self.buf.is_empty(),
                    "the stream ended inside a head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
        }
    }

    /// Reads one final answer, whole (to a request that is not HEAD).
    async fn answer(&mut self) -> Answer {
        let head = self.head().await.expect("the connection closed before an answer");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {head:?}"));
        let mut answer = Answer {
            status,
            head,
            body: Vec::new(),
        };
        if let Some(n) = answer.header("content-length") {
            let n = n.parse().unwrap();
            answer.body = self.take(n).await;
        } else if answer.header("transfer-encoding").is_some() {
            loop {
                let line = self.line().await;
                let size = std::str::from_utf8(&line).unwrap().trim_end();
                let size = usize::from_str_radix(size.split(';').next().unwrap(), 16).unwrap();
                if size == 0 {
                    while self.line().await != b"\r\n" {}
                    break;
                }
                let data = self.take(size).await;
                answer.body.extend_from_slice(&data);
                assert_eq!(self.take(2).await, b"\r\n");
            }
        }
        answer
    }

    /// Reads to the end of the stream: whatever the server sent after what was taken.
    async fn rest(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }

    /// The connection is closed by the server: no more bytes, and its task ended.
    async fn closed(mut self) {
        let rest = self.rest().await;
        assert!(rest.is_empty(), "more after the last answer: {:?}", String::from_utf8_lossy(&rest));
        tokio::time::timeout(WAIT, self.served)
            .await
            .expect("the connection's task did not end")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_get_is_forwarded_with_the_identity_and_without_the_token() {
    let h = Harness::new();
    let mut c = h.connect();
    c.send(
        format!(
            "GET /s/info?x=1 HTTP/1.1\r\nHost: gate.example\r\n{}X-Patgate-User: mallory\r\n\r\n",
            h.auth()
        )
        .as_bytes(),
    )
    .await;
    let a = c.answer().await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body, b"ok\n");
    let seen = h.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((seen[0].method.as_str(), seen[0].uri.as_str()), ("GET", "/s/info?x=1"));
    assert_eq!(
        seen[0].header("x-patgate-user"),
        ["alice"],
        "the identity comes from the token only"
    );
    assert!(seen[0].header("authorization").is_empty(), "the token went upstream: {seen:?}");
    // The connection stays open for the next request.
    c.send(
        format!(
            "GET /s/again HTTP/1.1\r\nHost: gate.example\r\n{}Connection: close\r\n\r\n",
            h.auth()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(c.answer().await.status, 200);
    c.closed().await;
    assert_eq!(h.seen().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_is_a_401_with_the_challenge_and_nothing_reaches_the_upstream() {
    let h = Harness::new();
    let mut c = h.connect();
    c.send(b"GET /s/info HTTP/1.1\r\nHost: gate.example\r\n\r\n").await;
    let a = c.answer().await;
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.header("www-authenticate"), Some(CHALLENGE));
    // An unknown token of the right shape is refused the same way.
    c.send(
        format!(
            "GET /s/info HTTP/1.1\r\nHost: gate.example\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            TokenSecret::generate().expose()
        )
        .as_bytes(),
    )
    .await;
    let a = c.answer().await;
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.header("www-authenticate"), Some(CHALLENGE));
    c.closed().await;
    assert!(h.seen().is_empty(), "{:?}", h.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let h = Harness::new();
    let mut c = h.connect();
    let auth = h.auth();
    // Three requests in one write: a GET, a POST with a length, a refused one, a last GET.
    let pipelined = format!(
        "GET /s/1 HTTP/1.1\r\nHost: g\r\n{auth}\r\n\
         POST /s/2 HTTP/1.1\r\nHost: g\r\n{auth}Content-Length: 5\r\n\r\nhello\
         GET /s/3 HTTP/1.1\r\nHost: g\r\n\r\n\
         GET /s/4 HTTP/1.1\r\nHost: g\r\n{auth}Connection: close\r\n\r\n"
    );
    c.send(pipelined.as_bytes()).await;
    let statuses = [
        c.answer().await.status,
        c.answer().await.status,
        c.answer().await.status,
        c.answer().await.status,
    ];
    assert_eq!(statuses, [200, 200, 401, 200]);
    c.closed().await;
    let seen = h.seen();
    let order: Vec<(&str, &str, usize)> = seen.iter().map(|s| (s.method.as_str(), s.uri.as_str(), s.body_len)).collect();
    assert_eq!(order, [("GET", "/s/1", 0), ("POST", "/s/2", 5), ("GET", "/s/4", 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_reaches_the_upstream_whole() {
    let h = Harness::new();
    let mut c = h.connect();
    let data: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut req = format!(
        "POST /s/upload HTTP/1.1\r\nHost: g\r\n{}Transfer-Encoding: chunked\r\n\r\n",
        h.auth()
    )
    .into_bytes();
    // Chunks of uneven sizes, one with extensions; trailers at the end.
    let mut at = 0;
    for (i, size) in [1usize, 7, 4096, 65_536, 10_000].iter().cycle().enumerate() {
        if at == data.len() {
            break;
        }
        let n = (*size).min(data.len() - at);
        let ext = if i == 2 { ";name=\"value\"" } else { "" };
        req.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
        req.extend_from_slice(&data[at..at + n]);
        req.extend_from_slice(b"\r\n");
        at += n;
    }
    req.extend_from_slice(b"0\r\nX-Checksum: 1\r\n\r\n");
    // Sent in pieces, as a slow client would.
    for piece in req.chunks(3001) {
        c.send(piece).await;
    }
    let a = c.answer().await;
    assert_eq!(a.status, 200, "{a:?}");
    let seen = h.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].method.as_str(), seen[0].body_len), ("POST", data.len()));
    // And the connection is ready for the next request.
    c.send(format!("GET /s/after HTTP/1.1\r\nHost: g\r\n{}Connection: close\r\n\r\n", h.auth()).as_bytes())
        .await;
    assert_eq!(c.answer().await.status, 200);
    c.closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let h = Harness::new();
    let mut c = h.connect();
    c.send(
        format!(
            "POST /s/push HTTP/1.1\r\nHost: g\r\n{}Content-Length: 11\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            h.auth()
        )
        .as_bytes(),
    )
    .await;
    // Nothing of the body is sent until the 100 arrives.
    let interim = c.head().await.expect("no interim answer");
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    c.send(b"hello world").await;
    let a = c.answer().await;
    assert_eq!(a.status, 200, "{a:?}");
    c.closed().await;
    let seen = h.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body_len, 11);
    assert!(seen[0].header("expect").is_empty(), "Expect went upstream: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_with_expect_gets_no_100_and_its_body_is_not_read() {
    let h = Harness::new();
    let mut c = h.connect();
    c.send(b"POST /s/push HTTP/1.1\r\nHost: g\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let a = c.answer().await;
    assert_eq!(a.status, 401, "a 100 or another answer came first: {a:?}");
    // The body was never read, so nothing after it could be framed: the connection closes.
    c.closed().await;
    assert!(h.seen().is_empty());
}

/// The smuggling defects of the issue: a chunked body whose framing is ambiguous (a trailer
/// ended by a bare LF, which hyper and other servers read past) is refused, and what the
/// client pipelined after it never reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_chunked_body_closes_the_connection_and_hides_what_follows() {
    let cases: &[(&str, &[u8])] = &[
        ("a bare LF ending a trailer", b"0\r\nX-T: 1\n\r\n"),
        ("a bare LF ending the last chunk line", b"0\n\r\n"),
        ("a bare LF ending the body", b"0\r\n\n"),
        ("a bare LF after chunk data", b"5\r\nhello\n0\r\n\r\n"),
        ("a control byte in an extension", b"5;\x01\r\nhello\r\n0\r\n\r\n"),
        ("a trailer without a colon", b"0\r\nX-T 1\r\n\r\n"),
    ];
    for (name, body) in cases {
        let h = Harness::new();
        let mut c = h.connect();
        let auth = h.auth();
        let mut req = format!("POST /s/first HTTP/1.1\r\nHost: g\r\n{auth}Transfer-Encoding: chunked\r\n\r\n").into_bytes();
        req.extend_from_slice(body);
        req.extend_from_slice(format!("GET /s/smuggled HTTP/1.1\r\nHost: g\r\n{auth}\r\n").as_bytes());
        c.send(&req).await;
        let a = c.answer().await;
        assert_eq!(a.status, 400, "{name}: {a:?}");
        assert_eq!(a.header("connection"), Some("close"), "{name}: {a:?}");
        c.closed().await;
        // Give the upstream a moment: anything forwarded would have arrived by now.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen = h.seen();
        assert!(
            seen.iter().all(|s| s.uri != "/s/smuggled"),
            "{name}: the pipelined request reached the upstream: {seen:?}"
        );
        assert!(seen.len() <= 1, "{name}: {seen:?}");
    }
    // The same with a well-formed body: the pipelined request is read, and reaches the
    // upstream (so the harness would see it above).
    let h = Harness::new();
    let mut c = h.connect();
    let auth = h.auth();
    c.send(
        format!(
            "POST /s/first HTTP/1.1\r\nHost: g\r\n{auth}Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n\
             GET /s/smuggled HTTP/1.1\r\nHost: g\r\n{auth}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!([c.answer().await.status, c.answer().await.status], [200, 200]);
    c.closed().await;
    let uris: Vec<String> = h.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/s/first", "/s/smuggled"]);
}

/// Heads that cannot be framed one way are refused before anything is forwarded, and the
/// connection closes with the pipelined request unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_head_is_refused_and_nothing_is_forwarded() {
    let cases: &[(&str, &str, u16)] = &[
        ("CL and TE", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400),
        ("two lengths", "Content-Length: 5\r\nContent-Length: 5\r\n", 400),
        ("another coding", "Transfer-Encoding: gzip, chunked\r\n", 501),
        ("a second Host", "Host: evil.example\r\n", 400),
        ("an expectation", "Expect: fancy\r\nContent-Length: 5\r\n", 417),
    ];
    for (name, extra, status) in cases {
        let h = Harness::new();
        let mut c = h.connect();
        let auth = h.auth();
        let req =
            format!("POST /s/first HTTP/1.1\r\nHost: g\r\n{auth}{extra}\r\n0\r\n\r\nGET /s/smuggled HTTP/1.1\r\nHost: g\r\n{auth}\r\n");
        c.send(req.as_bytes()).await;
        let a = c.answer().await;
        assert_eq!(a.status, *status, "{name}: {a:?}");
        c.closed().await;
        assert!(h.seen().is_empty(), "{name}: {:?}", h.seen());
    }
    // A head with a bare LF, too.
    let h = Harness::new();
    let mut c = h.connect();
    c.send(format!("GET /s/x HTTP/1.1\nHost: g\r\n{}\r\n", h.auth()).as_bytes()).await;
    assert_eq!(c.answer().await.status, 400);
    c.closed().await;
    assert!(h.seen().is_empty());
}
