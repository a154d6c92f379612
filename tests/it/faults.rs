//! Faults around patgate, each met with a safe and clear outcome: upstreams that refuse,
//! hang or break off mid-answer; a client that aborts a push; token stores that are
//! corrupt or unreachable at start, or refuse writes while serving; clients that dribble
//! their headers. After each fault patgate goes on serving, and nothing is left open.
//!
//! Time bounds are generous (this runs on two noisy cores): "within 10 s" checks that
//! something ends, not how fast.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

// ---------------------------------------------------------------------------------------
// Helpers: routes, raw clients, upstreams that misbehave, the patgate process.
// ---------------------------------------------------------------------------------------

/// A route `/{org}/NAME/**` to `upstream`, admitting any method with `agentpools:read`.
fn route(name: &str, upstream: SocketAddr, response_timeout: Option<&str>) -> String {
    let timeout = response_timeout
        .map(|t| format!("response_timeout = \"{t}\"\n"))
        .unwrap_or_default();
    format!("[[routes]]\npath = \"/{{org}}/{name}/**\"\nupstream = \"http://{upstream}\"\nrules = [ {{ scope = \"agentpools:read\" }} ]\n{timeout}\n")
}

/// A GET with a bearer token; `Connection: close` when `close`.
fn get(path: &str, token: &str, close: bool) -> String {
    let conn = if close { "Connection: close\r\n" } else { "" };
    format!("GET {path} HTTP/1.1\r\nHost: gate.test\r\nAuthorization: Bearer {token}\r\n{conn}\r\n")
}

/// Asserts an error answer's body is one non-empty line of text.
fn assert_one_line(r: &RawResponse, what: &str) {
    let line = r
        .body
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("{what}: body does not end a line: {r:?}"));
    assert!(!line.trim().is_empty() && !line.contains('\n'), "{what}: not one line: {r:?}");
    assert!(
        r.header("content-type").is_some_and(|t| t.starts_with("text/plain")),
        "{what}: not text: {r:?}"
    );
}

/// Polls `f` every 20 ms until it holds; false if it did not within `limit`.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A raw client connection that reads with a short timeout, so that a test can tell "the
/// server closed it" from "nothing came yet".
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Client {
    fn open(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        Client {
            s,
            buf: Vec::new(),
            eof: false,
        }
    }

    fn send(&mut self, raw: &[u8]) -> bool {
        self.s.write_all(raw).is_ok()
    }

    /// Reads what is there (waiting up to 100 ms); false once the peer closed or reset.
    fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 65536];
        match self.s.read(&mut chunk) {
            Ok(0) => self.eof = true,
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => self.eof = true,
        }
        !self.eof
    }

    /// The next answer framed by Content-Length, or `None` if none was whole within `limit`.
    fn answer(&mut self, limit: Duration) -> Option<RawResponse> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((r, used)) = parse_sized(&self.buf) {
                self.buf.drain(..used);
                return Some(r);
            }
            if !self.fill() || Instant::now() >= deadline {
                return parse_sized(&self.buf).map(|(r, used)| {
                    self.buf.drain(..used);
                    r
                });
            }
        }
    }

    /// Reads until the peer closes; true if it did within `limit`.
    fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !self.fill() {
                return true;
            }
        }
        false
    }
}

/// One answer with a Content-Length from the front of `buf`, and the bytes it took.
fn parse_sized(buf: &[u8]) -> Option<(RawResponse, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end - 4]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut r = RawResponse {
        status,
        head,
        body: String::new(),
    };
    let len: usize = r.header("content-length")?.parse().ok()?;
    let body = buf.get(end..end + len)?;
    r.body = String::from_utf8_lossy(body).into_owned();
    Some((r, end + len))
}

/// Decrements a connection count when a connection ends.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A raw TCP upstream: on each connection it reads one request head, hands the socket to
/// its behaviour, and, if that returns true, holds the connection until patgate closes it.
/// `open` counts connections accepted and not yet closed by either side.
struct RawUpstream {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    /// The request line of every head read.
    heads: Arc<Mutex<Vec<String>>>,
}

fn raw_upstream(behave: fn(&mut TcpStream) -> bool) -> RawUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (o, h) = (open.clone(), heads.clone());
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            o.fetch_add(1, Ordering::SeqCst);
            let guard = Open(o.clone());
            let heads = h.clone();
            std::thread::spawn(move || {
                let _guard = guard;
                // Bounded, so that a thread never outlives the test run by much.
                s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&buf).lines().next().unwrap_or_default().to_owned();
                heads.lock().unwrap().push(line);
                if behave(&mut s) {
                    while matches!(s.read(&mut chunk), Ok(n) if n > 0) {}
                }
            });
        }
    });
    RawUpstream { addr, open, heads }
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// How one request body was read by the counting upstream.
#[derive(Debug, Clone)]
struct BodyRead {
    path: String,
    bytes: usize,
    /// `None` while reading; `Ok` at the body's end, `Err` if it broke off.
    end: Option<Result<(), String>>,
}

/// An HTTP upstream (hyper) that reads every body frame by frame, records how each read
/// ended, answers 200 "ok", and counts its open connections.
struct CountingUpstream {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    reads: Arc<Mutex<Vec<BodyRead>>>,
}

impl CountingUpstream {
    fn read_of(&self, path: &str) -> Option<BodyRead> {
        self.reads.lock().unwrap().iter().find(|r| r.path == path).cloned()
    }
}

fn counting_upstream() -> CountingUpstream {
    use http_body_util::BodyExt;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(Mutex::new(Vec::<BodyRead>::new()));
    let (o, rec) = (open.clone(), reads.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                o.fetch_add(1, Ordering::SeqCst);
                let guard = Open(o.clone());
                let rec = rec.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let rec = rec.clone();
                        async move {
                            let i = {
                                let mut r = rec.lock().unwrap();
                                r.push(BodyRead {
                                    path: req.uri().path().to_owned(),
                                    bytes: 0,
                                    end: None,
                                });
                                r.len() - 1
                            };
                            let mut body = req.into_body();
                            loop {
                                match body.frame().await {
                                    None => {
                                        rec.lock().unwrap()[i].end = Some(Ok(()));
                                        break;
                                    }
                                    Some(Err(e)) => {
                                        rec.lock().unwrap()[i].end = Some(Err(e.to_string()));
                                        break;
                                    }
                                    Some(Ok(frame)) => {
                                        if let Some(d) = frame.data_ref() {
                                            rec.lock().unwrap()[i].bytes += d.len();
                                        }
                                    }
                                }
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
                                b"ok\n",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
    });
    CountingUpstream { addr, open, reads }
}

/// The pid of this test's `patgate serve` (found by its config path).
fn pid_of(p: &TestPatgate) -> u32 {
    let needle = p.config.to_str().unwrap().to_owned();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.contains(&needle) && args.iter().any(|a| a == "serve") {
            return pid;
        }
    }
    panic!("no patgate process for {needle}");
}

/// Open file descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

// ---------------------------------------------------------------------------------------
// 1. An upstream that refuses connections.
// ---------------------------------------------------------------------------------------

#[test]
fn an_upstream_that_refuses_connections_gets_502_and_patgate_serves_on() {
    let good = spawn_upstream(false);
    // Accepts, reads the request, and closes without a word.
    let slammer = raw_upstream(|s| {
        let _ = s.shutdown(Shutdown::Both);
        false
    });
    let p = TestPatgate::start(&format!(
        "{}{}{}",
        route("closed", closed_port(), None),
        route("slam", slammer.addr, None),
        route("good", good.addr, None)
    ));
    let t = p.mint_live("agentpools:read", "acme");

    for (path, reason) in [("/acme/closed/x", "upstream unreachable"), ("/acme/slam/x", "upstream failed")] {
        // A client that closes after this request (the worker's pool) ...
        let started = Instant::now();
        let r = http(p.addr, &get(path, &t.token, true));
        assert_eq!(r.status, 502, "{path}: {r:?}");
        assert_one_line(&r, path);
        assert_eq!(r.body, format!("{reason}\n"), "{path}");
        assert!(started.elapsed() < Duration::from_secs(10), "{path}: took {:?}", started.elapsed());
        assert_eq!(http(p.addr, &get("/acme/good/x", &t.token, true)).status, 200, "after {path}");

        // ... and one that keeps its connection (an upstream connection of its own): the
        // same 502, and the next request on that connection is served.
        let mut c = Client::open(p.addr);
        assert!(c.send(get(path, &t.token, false).as_bytes()));
        let r = c
            .answer(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{path}: no answer on a kept connection"));
        assert_eq!(r.status, 502, "{path}: {r:?}");
        assert_eq!(r.body, format!("{reason}\n"), "{path}");
        if r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            assert!(
                c.closed_within(Duration::from_secs(10)),
                "{path}: said close and kept the connection"
            );
            c = Client::open(p.addr);
        }
        assert!(c.send(get("/acme/good/x", &t.token, false).as_bytes()));
        let r = c.answer(Duration::from_secs(10)).expect("the next request on the connection");
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"), "after {path} on a kept connection");
    }
    assert!(slammer.heads.lock().unwrap().len() >= 2, "the closing upstream was reached");
    assert!(!p.log().contains("panicked"), "{}", p.log());
}

// ---------------------------------------------------------------------------------------
// 2. An upstream that accepts and never answers.
// ---------------------------------------------------------------------------------------

#[test]
fn an_upstream_that_never_answers_gets_504_after_the_route_timeout_and_is_let_go() {
    let good = spawn_upstream(false);
    // Reads the request and holds the connection, silent, until patgate closes it.
    let hang = raw_upstream(|_| true);
    let p = TestPatgate::start(&format!(
        "{}{}",
        route("hang", hang.addr, Some("1s")),
        route("good", good.addr, None)
    ));
    let t = p.mint_live("agentpools:read", "acme");

    // A client that closes after the request.
    let started = Instant::now();
    let r = http(p.addr, &get("/acme/hang/one", &t.token, true));
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{r:?}");
    assert_one_line(&r, "504");
    assert_eq!(r.body, "upstream did not answer within 1s\n");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(10),
        "504 after {took:?}"
    );
    assert_eq!(http(p.addr, &get("/acme/good/x", &t.token, true)).status, 200);

    // A client that keeps its connection: 504, then its next request is served.
    let mut c = Client::open(p.addr);
    assert!(c.send(get("/acme/hang/two", &t.token, false).as_bytes()));
    let started = Instant::now();
    let r = c.answer(Duration::from_secs(10)).expect("a 504 within 10 s");
    assert_eq!((r.status, r.body.as_str()), (504, "upstream did not answer within 1s\n"));
    assert!(started.elapsed() < Duration::from_secs(10));
    if r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
        assert!(c.closed_within(Duration::from_secs(10)));
        c = Client::open(p.addr);
    }
    assert!(c.send(get("/acme/good/y", &t.token, false).as_bytes()));
    let r = c.answer(Duration::from_secs(10)).expect("the next request on the connection");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    drop(c);

    assert_eq!(hang.heads.lock().unwrap().len(), 2, "both requests reached the silent upstream");
    // Patgate gave up on both: it does not hold connections to a silent upstream.
    assert!(
        wait_until(Duration::from_secs(10), || hang.open.load(Ordering::SeqCst) == 0),
        "{} connections to the silent upstream still open 10 s after the 504s",
        hang.open.load(Ordering::SeqCst)
    );
}

// ---------------------------------------------------------------------------------------
// 3. An upstream that breaks off in the middle of its answer.
// ---------------------------------------------------------------------------------------

#[test]
fn an_answer_cut_by_the_upstream_reaches_the_client_cut_and_patgate_serves_on() {
    let good = spawn_upstream(false);
    let sized = raw_upstream(|s| {
        let _ =
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\nthe first few bytes");
        let _ = s.flush();
        let _ = s.shutdown(Shutdown::Both);
        false
    });
    let chunked = raw_upstream(|s| {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n13\r\nthe first few bytes\r\n",
        );
        let _ = s.flush();
        let _ = s.shutdown(Shutdown::Both);
        false
    });
    let p = TestPatgate::start(&format!(
        "{}{}{}",
        route("sized", sized.addr, None),
        route("chunked", chunked.addr, None),
        route("good", good.addr, None)
    ));
    let t = p.mint_live("agentpools:read", "acme");

    for path in ["/acme/sized/big", "/acme/chunked/big"] {
        for close in [true, false] {
            let what = format!("{path} (Connection: close: {close})");
            let mut c = Client::open(p.addr);
            assert!(c.send(get(path, &t.token, close).as_bytes()));
            // The answer must end, cut, not hang: the connection closes within 10 s.
            assert!(
                c.closed_within(Duration::from_secs(10)),
                "{what}: the connection was not closed within 10 s"
            );
            let end = c.buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
            let Some(end) = end else {
                // Closed before any head: the client cannot take it for a whole answer.
                assert!(c.buf.is_empty() || !c.buf.starts_with(b"HTTP/1.1 2"), "{what}: {:?}", c.buf);
                continue;
            };
            let head = String::from_utf8_lossy(&c.buf[..end - 4]).into_owned();
            let body = &c.buf[end..];
            let r = RawResponse {
                status: head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0),
                head,
                body: String::new(),
            };
            eprintln!("{what}: {} with {} body bytes, then closed", r.status, body.len());
            match r.status {
                // A clean failure answer, whole, is safe too.
                502 => continue,
                200 => {}
                other => panic!("{what}: status {other}: {}", r.head),
            }
            // The cut must be visible: framed by length with fewer bytes, or chunked with
            // no last chunk. A close-delimited answer would pass a cut one off as whole.
            if let Some(len) = r.header("content-length") {
                assert_eq!(len, "1000000", "{what}");
                assert!(body.len() < 1_000_000, "{what}: a whole body arrived");
            } else {
                assert!(
                    r.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")),
                    "{what}: an answer with no framing hides the cut: {}",
                    r.head
                );
                assert!(
                    !body.ends_with(b"0\r\n\r\n"),
                    "{what}: the cut answer was finished with a last chunk"
                );
            }
            // New connections are served.
            let r = http(p.addr, &get("/acme/good/x", &t.token, true));
            assert_eq!((r.status, r.body.as_str()), (200, "ok\n"), "after {what}");
        }
    }
    assert_eq!(sized.heads.lock().unwrap().len(), 2);
    assert_eq!(chunked.heads.lock().unwrap().len(), 2);
    assert!(!p.log().contains("panicked"), "{}", p.log());
}

// ---------------------------------------------------------------------------------------
// 4. A client that aborts in the middle of a push.
// ---------------------------------------------------------------------------------------

#[test]
fn a_push_aborted_by_the_client_ends_the_upstream_body_and_leaks_nothing() {
    const ANNOUNCED: usize = 10_000_000;
    const SENT: usize = 256 * 1024;
    let up = counting_upstream();
    // Idle pooled upstream connections close after a second, so that the count of open
    // upstream connections has a baseline of zero.
    let p = TestPatgate::start(&format!(
        "[upstream]\npool_idle_timeout = \"1s\"\n\n{}",
        route("push", up.addr, None)
    ));
    let t = p.mint_live("agentpools:read", "acme");
    let pid = pid_of(&p);
    // A POST's head announcing `len` bytes of body.
    let post = |path: &str, len: usize, close: bool| {
        let conn = if close { "Connection: close\r\n" } else { "" };
        format!(
            "POST {path} HTTP/1.1\r\nHost: gate.test\r\nAuthorization: Bearer {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n{conn}\r\n",
            t.token
        )
    };
    let settled = |what: &str| {
        assert!(
            wait_until(Duration::from_secs(10), || up.open.load(Ordering::SeqCst) == 0),
            "{what}: {} upstream connections still open after 10 s",
            up.open.load(Ordering::SeqCst)
        );
    };

    // Warm up, then take the baseline with nothing in flight.
    for i in 0..5 {
        let r = http(p.addr, &format!("{}hello", post(&format!("/acme/push/warm-{i}"), 5, true)));
        assert_eq!(r.status, 200, "{r:?}");
    }
    settled("after the warm-up");
    std::thread::sleep(Duration::from_millis(500));
    let fds_before = fd_count(pid);

    // Pushes cut off by the client, on kept connections (as git pushes) and on closing ones.
    let mut aborted = Vec::new();
    for i in 0..10 {
        let close = i % 2 == 1;
        let path = format!("/acme/push/abort-{i}");
        let mut c = TcpStream::connect(p.addr).unwrap();
        c.write_all(post(&path, ANNOUNCED, close).as_bytes()).unwrap();
        let chunk = vec![b'x'; 16 * 1024];
        for _ in 0..SENT / chunk.len() {
            c.write_all(&chunk).unwrap();
        }
        // The upstream is reading this body before the client goes.
        assert!(
            wait_until(Duration::from_secs(10), || up.read_of(&path).is_some_and(|r| r.bytes > 0)),
            "{path}: the push never reached the upstream: {:?}",
            up.read_of(&path)
        );
        drop(c);
        aborted.push(path);
    }
    for path in &aborted {
        assert!(
            wait_until(Duration::from_secs(10), || up.read_of(path).is_some_and(|r| r.end.is_some())),
            "{path}: the upstream still waits for the body 10 s after the client left: {:?}",
            up.read_of(path)
        );
        let r = up.read_of(path).unwrap();
        assert!(
            matches!(r.end, Some(Err(_))),
            "{path}: the upstream took a cut body for a whole one: {r:?}"
        );
        assert!(r.bytes <= SENT, "{path}: {r:?}");
    }

    // Nothing is stuck: many fresh requests succeed ...
    for i in 0..50 {
        let r = http(p.addr, &format!("{}hello", post(&format!("/acme/push/after-{i}"), 5, true)));
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"), "request {i} after the aborts");
        let read = up.read_of(&format!("/acme/push/after-{i}")).unwrap();
        assert!(matches!(read.end, Some(Ok(()))) && read.bytes == 5, "{read:?}");
    }
    // ... and, once idle, no upstream connection and no file descriptor is left over.
    settled("after the aborted pushes");
    let fds_ok = wait_until(Duration::from_secs(10), || fd_count(pid) <= fds_before + 2);
    eprintln!("file descriptors: {fds_before} before the aborted pushes, {} after", fd_count(pid));
    assert!(
        fds_ok,
        "patgate holds {} file descriptors, {fds_before} before the aborted pushes",
        fd_count(pid)
    );
    assert!(!p.log().contains("panicked"), "{}", p.log());
}

// ---------------------------------------------------------------------------------------
// 5. A store that cannot be opened at start.
// ---------------------------------------------------------------------------------------

/// Runs `patgate serve` with `url` as its store; its exit status (`None`: still running
/// after 15 s, then killed), how long it ran, and its standard error.
fn serve_with_store(dir: &Path, url: &str) -> (Option<ExitStatus>, Duration, String) {
    let repos = dir.join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    let config = dir.join("patgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[store]\nurl = \"{url}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\npath = \"/{{org}}/**\"\nupstream = \"git-http-backend:{}\"\nrules = \"git\"\n",
            repos.display()
        ),
    )
    .unwrap();
    let stderr_path = dir.join("stderr.txt");
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env_remove("PATGATE__STORE__URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    (status, took, std::fs::read_to_string(&stderr_path).unwrap())
}

/// Asserts that `serve` on this store failed fast and said so in one line naming `names`;
/// returns its standard error.
fn assert_refused_at_start(case: &str, dir: &Path, url: &str, names: &str) -> String {
    let (status, took, stderr) = serve_with_store(dir, url);
    let Some(status) = status else {
        panic!("{case}: patgate serve still runs after 15 s on {url}:\n{stderr}");
    };
    assert!(
        !status.success() && status.code().is_some(),
        "{case}: exit {status}, wanted a non-zero exit code:\n{stderr}"
    );
    assert!(took < Duration::from_secs(10), "{case}: took {took:?} to give up");
    assert!(!stderr.contains("panicked"), "{case}: a panic:\n{stderr}");
    assert!(!stderr.contains("Listening"), "{case}: started listening:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{case}: wanted one `error:` line:\n{stderr}");
    assert!(
        errors[0].contains(names),
        "{case}: the error does not name the store ({names}):\n{stderr}"
    );
    eprintln!("{case}: {}", errors[0]);
    stderr
}

#[test]
fn a_corrupt_or_unopenable_store_stops_serve_at_once_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let case = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let sqlite = |db: &Path| format!("sqlite://{}", db.display());
    let garbage: Vec<u8> = (0u32..64 * 1024).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();

    // (a) A file of garbage where the SQLite database should be.
    let d = case("garbage");
    let db = d.join("tokens.db");
    std::fs::write(&db, &garbage).unwrap();
    assert_refused_at_start("garbage file", &d, &sqlite(&db), &db.display().to_string());

    // (a') A real store, with a token in it, whose pages were overwritten after the
    // 100-byte SQLite header.
    let d = case("damaged");
    let db = d.join("tokens.db");
    let make = d.join("make.toml");
    std::fs::write(
        &make,
        format!(
            "[store]\nurl = \"{}\"\n\n[[routes]]\npath = \"/{{org}}/**\"\nupstream = \"git-http-backend:{}\"\nrules = \"git\"\n",
            sqlite(&db),
            d.display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&make)
        .args(["token", "create", "--name", "n", "--owner", "o", "--scopes", "code:read"])
        .args(["--orgs", "acme", "--expires-in", "1h"])
        .env_remove("PATGATE__STORE__URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "making a store: {}", String::from_utf8_lossy(&out.stderr));
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(
        bytes.len() > 4096 && bytes.starts_with(b"SQLite format 3\0"),
        "{} bytes",
        bytes.len()
    );
    for (i, b) in bytes.iter_mut().enumerate().skip(100) {
        *b = garbage[i % garbage.len()];
    }
    std::fs::write(&db, &bytes).unwrap();
    let _ = std::fs::remove_file(d.join("tokens.db-wal"));
    let _ = std::fs::remove_file(d.join("tokens.db-shm"));
    assert_refused_at_start("damaged pages", &d, &sqlite(&db), &db.display().to_string());

    // (b) A store in a folder that cannot be made: its parent is a file. (A folder that
    // does not exist yet but can be made is made: `serve` creates its store.)
    let d = case("no-folder");
    std::fs::write(d.join("plain-file"), "not a folder\n").unwrap();
    let db = d.join("plain-file").join("data").join("tokens.db");
    assert_refused_at_start("folder that cannot be made", &d, &sqlite(&db), &db.display().to_string());

    // (b') A store path that is a folder.
    let d = case("is-a-folder");
    let db = d.join("tokens.db");
    std::fs::create_dir_all(&db).unwrap();
    assert_refused_at_start("store is a folder", &d, &sqlite(&db), &db.display().to_string());

    // (c) A PostgreSQL store that nobody answers at: named, its password never shown.
    let d = case("pg-down");
    let port = closed_port().port();
    let url = format!("postgres://patgate:hunter2-s3cret@127.0.0.1:{port}/patgate");
    let stderr = assert_refused_at_start("PostgreSQL unreachable", &d, &url, &format!("127.0.0.1:{port}"));
    assert!(!stderr.contains("hunter2-s3cret"), "the password was shown:\n{stderr}");
}

// ---------------------------------------------------------------------------------------
// 6. A store that refuses writes while serving.
// ---------------------------------------------------------------------------------------

/// One admin write and how long it took.
fn timed_api(p: &TestPatgate, method: &str, path: &str, token: &str, body: Option<&Value>) -> (Api, Duration) {
    let started = Instant::now();
    let a = p.api(method, path, Some(token), body);
    (a, started.elapsed())
}

fn new_token_body(owner: &str) -> Value {
    json!({"name": "during-fault", "owner": owner, "scopes": ["code:read"], "orgs": ["acme"], "expires_in": "1h"})
}

/// The proxy status for a GET through the good route.
fn through(p: &TestPatgate, token: &str) -> u16 {
    http(p.addr, &get("/acme/up/x", token, true)).status
}

/// Runs an admin write in a thread while the proxy is exercised with `token`; returns the
/// write's answer and time, and the proxy statuses seen while the write was pending.
fn write_while_proxying(
    p: &TestPatgate,
    method: &str,
    path: &str,
    caller: &str,
    body: Option<Value>,
    token: &str,
) -> (Api, Duration, Vec<u16>) {
    std::thread::scope(|s| {
        let write = s.spawn(|| timed_api(p, method, path, caller, body.as_ref()));
        let mut during = Vec::new();
        while !write.is_finished() {
            let status = through(p, token);
            if !write.is_finished() {
                during.push(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (a, took) = write.join().unwrap();
        (a, took, during)
    })
}

/// Asserts a write refused by the store: a 5xx JSON error about the token store, within
/// the store's own timeout (5 s) and slack, while the proxy kept serving.
fn assert_store_refused(what: &str, (a, took, during): &(Api, Duration, Vec<u16>), want_status: u16, cause: &[&str]) {
    assert_eq!(a.status, want_status, "{what}: {:?}", a.raw);
    let error = a.error();
    assert!(error.contains("token store"), "{what}: the error does not name the store: {error}");
    assert!(
        cause.iter().any(|c| error.contains(c)),
        "{what}: the error does not say why ({cause:?}): {error}"
    );
    assert!(!error.contains('\n'), "{what}: {error}");
    assert!(*took < Duration::from_secs(15), "{what}: answered after {took:?}");
    assert!(
        during.iter().all(|&s| s == 200),
        "{what}: proxy answers during the write: {during:?}"
    );
    if *took >= Duration::from_secs(1) {
        assert!(!during.is_empty(), "{what}: no proxy request completed during a {took:?} write");
    }
}

#[test]
fn a_locked_sqlite_store_fails_admin_writes_clearly_while_the_proxy_serves() {
    let up = spawn_upstream(false);
    let p = TestPatgate::start(&route("up", up.addr, None));
    let root = p.mint_caller("root", "tokens:admin");
    let agent = p.mint_live("agentpools:read", "acme");
    let victim = p.mint_live("agentpools:read", "acme");
    assert_eq!(through(&p, &agent.token), 200);

    // Another process holds the write lock, as a long migration or a backup tool could.
    let lock = rusqlite::Connection::open(p.dir.path().join("patgate.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE;").unwrap();

    let created = write_while_proxying(
        &p,
        "POST",
        "/admin/v1/tokens",
        &root.token,
        Some(new_token_body("during")),
        &agent.token,
    );
    eprintln!(
        "create under lock: {} {} after {:?}",
        created.0.status,
        created.0.raw.body.trim(),
        created.1
    );
    let revoke = format!("/admin/v1/tokens/{}/revoke", victim.id);
    let revoked = write_while_proxying(&p, "POST", &revoke, &root.token, None, &agent.token);
    eprintln!(
        "revoke under lock: {} {} after {:?}",
        revoked.0.status,
        revoked.0.raw.body.trim(),
        revoked.1
    );
    assert!(p.log_shows("database is locked"), "the log does not name the cause:\n{}", p.log());
    // The store is there but cannot take writes for now: unavailable (503, retry later),
    // saying why, as the PostgreSQL store says of a write it could not make in time.
    assert_store_refused("create under a lock", &created, 503, &["locked", "busy"]);
    assert_store_refused("revoke under a lock", &revoked, 503, &["locked", "busy"]);
    assert_eq!(through(&p, &agent.token), 200);

    // Released: writes work again, and the failed create left nothing behind.
    lock.execute_batch("ROLLBACK;").unwrap();
    drop(lock);
    let a = p.api("POST", "/admin/v1/tokens", Some(&root.token), Some(&new_token_body("after")));
    assert_eq!(a.status, 201, "{:?}", a.raw);
    let a = p.api("POST", &revoke, Some(&root.token), None);
    assert_eq!(a.status, 200, "{:?}", a.raw);
    assert_eq!(through(&p, &victim.token), 401, "a revoke that answered 200 bites at once");
    let a = p.api("GET", "/admin/v1/tokens?owner=during", Some(&root.token), None);
    assert_eq!(a.json["tokens"], json!([]), "a create that failed left a token: {:?}", a.raw);
    assert_eq!(through(&p, &agent.token), 200);
}

/// Runs SQL on the PostgreSQL server, on a connection of its own (in `rt`).
struct Sql {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Sql {
    fn connect(url: &str) -> Sql {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL is unreachable: {e}"));
            tokio::spawn(conn);
            client
        });
        Sql { rt, client }
    }

    fn run(&self, sql: &str) {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

#[test]
fn a_postgres_store_that_refuses_writes_fails_admin_writes_clearly_while_the_proxy_serves() {
    let server = std::env::var("PATGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let sql = Sql::connect(&server);
    let url = sql.rt.block_on(crate::postgres::fresh_database(&server));
    let db = url.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned();
    let up = spawn_upstream(false);
    let p = TestPatgate::start_with_env(&route("up", up.addr, None), &[("PATGATE__STORE__URL", &url)]);
    let mint = |owner: &str, scopes: &str| -> Minted {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&p.config)
            .args(["token", "create", "--name", "t", "--owner", owner, "--scopes", scopes])
            .args(["--orgs", "*", "--expires-in", "1h", "--json"])
            .env("PATGATE__STORE__URL", &url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        Minted {
            id: v["id"].as_str().unwrap().to_owned(),
            token: v["token"].as_str().unwrap().to_owned(),
        }
    };
    let root = mint("root", "tokens:admin");
    let agent = mint("agent", "agentpools:read");
    let victim = mint("victim", "agentpools:read");
    assert!(
        wait_until(Duration::from_secs(10), || through(&p, &victim.token) == 200
            && p.api("GET", "/admin/v1/tokens?limit=1", Some(&root.token), None).status == 200),
        "the tokens never became live"
    );
    let revoke = format!("/admin/v1/tokens/{}/revoke", victim.id);
    let kick = format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()");

    // (1) The database turns read-only (as a failed-over replica is): the server refuses
    // every write. Patgate's connections are cut so that new ones read the setting.
    sql.run(&format!("ALTER DATABASE \"{db}\" SET default_transaction_read_only = on; {kick}"));
    let created = write_while_proxying(
        &p,
        "POST",
        "/admin/v1/tokens",
        &root.token,
        Some(new_token_body("during")),
        &agent.token,
    );
    eprintln!(
        "create read-only: {} {} after {:?}",
        created.0.status,
        created.0.raw.body.trim(),
        created.1
    );
    let revoked = write_while_proxying(&p, "POST", &revoke, &root.token, None, &agent.token);
    eprintln!(
        "revoke read-only: {} {} after {:?}",
        revoked.0.status,
        revoked.0.raw.body.trim(),
        revoked.1
    );
    for (what, (a, took, during)) in [("create, read-only", &created), ("revoke, read-only", &revoked)] {
        assert!((500..=599).contains(&a.status), "{what}: {:?}", a.raw);
        assert!(a.error().contains("token store"), "{what}: {}", a.error());
        assert!(*took < Duration::from_secs(15), "{what}: answered after {took:?}");
        assert!(
            during.iter().all(|&s| s == 200),
            "{what}: proxy answers during the write: {during:?}"
        );
    }
    // The client's line is generic; the log says what the server refused.
    assert!(
        p.log_shows("read-only transaction"),
        "the log does not name the cause:\n{}",
        p.log()
    );
    assert_eq!(through(&p, &agent.token), 200);
    assert_eq!(through(&p, &victim.token), 200);
    sql.run(&format!("ALTER DATABASE \"{db}\" RESET default_transaction_read_only; {kick}"));
    assert!(
        wait_until(Duration::from_secs(15), || {
            p.api("POST", "/admin/v1/tokens", Some(&root.token), Some(&new_token_body("after")))
                .status
                == 201
        }),
        "writes did not work again after the database became writable"
    );

    // (2) Another session holds the tokens table locked: writes wait up to the store's
    // timeout, then fail as unavailable.
    let lock = Sql::connect(&url);
    lock.run("BEGIN; LOCK TABLE tokens IN ACCESS EXCLUSIVE MODE;");
    let created = write_while_proxying(
        &p,
        "POST",
        "/admin/v1/tokens",
        &root.token,
        Some(new_token_body("during")),
        &agent.token,
    );
    eprintln!(
        "create locked: {} {} after {:?}",
        created.0.status,
        created.0.raw.body.trim(),
        created.1
    );
    assert_store_refused("create, table locked", &created, 503, &["unavailable"]);
    let revoked = write_while_proxying(&p, "POST", &revoke, &root.token, None, &agent.token);
    eprintln!(
        "revoke locked: {} {} after {:?}",
        revoked.0.status,
        revoked.0.raw.body.trim(),
        revoked.1
    );
    assert_store_refused("revoke, table locked", &revoked, 503, &["unavailable"]);
    assert_eq!(through(&p, &agent.token), 200);
    lock.run("ROLLBACK;");
    drop(lock);

    // Back to normal: the revoke goes through and bites, and no failed create survived.
    assert!(
        wait_until(Duration::from_secs(15), || p.api("POST", &revoke, Some(&root.token), None).status
            == 200),
        "the revoke did not work again after the lock was released"
    );
    assert_eq!(through(&p, &victim.token), 401);
    let a = p.api("GET", "/admin/v1/tokens?owner=during", Some(&root.token), None);
    assert_eq!(a.json["tokens"], json!([]), "a create that failed left a token: {:?}", a.raw);
    assert_eq!(through(&p, &agent.token), 200);
}

// ---------------------------------------------------------------------------------------
// 7. Slowloris: headers one byte a second.
// ---------------------------------------------------------------------------------------

/// What became of a client that sent a request head one byte a second.
#[derive(Debug)]
struct Dribbled {
    /// When the server closed the connection, from the first byte; `None`: still open.
    closed_after: Option<Duration>,
    sent: usize,
    answer: Vec<u8>,
}

/// Sends `head` one byte a second until patgate closes the connection or `limit` passes.
fn dribble(addr: SocketAddr, head: Vec<u8>, limit: Duration) -> Dribbled {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let started = Instant::now();
    let mut sent = 0;
    let mut next_byte = started;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        if sent < head.len() && Instant::now() >= next_byte {
            if s.write_all(&head[sent..sent + 1]).is_err() {
                return Dribbled {
                    closed_after: Some(started.elapsed()),
                    sent,
                    answer,
                };
            }
            sent += 1;
            next_byte += Duration::from_secs(1);
        }
        match s.read(&mut buf) {
            Ok(0) => {
                return Dribbled {
                    closed_after: Some(started.elapsed()),
                    sent,
                    answer,
                }
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                return Dribbled {
                    closed_after: Some(started.elapsed()),
                    sent,
                    answer,
                }
            }
        }
    }
    Dribbled {
        closed_after: None,
        sent,
        answer,
    }
}

/// Asserts a dribbling client was cut off, unanswered or with a 408, within 10 s.
fn assert_cut(what: &str, d: &Dribbled, head_len: usize) {
    match d.closed_after {
        Some(after) if after < Duration::from_secs(10) => {}
        other => panic!("{what}: not cut off within 10 s ({other:?}, {} of {head_len} bytes sent)", d.sent),
    }
    assert!(d.sent < head_len, "{what}: the whole head got through");
    let answer = String::from_utf8_lossy(&d.answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{what}: answered {answer:?}"
    );
}

/// Normal requests through `/acme/up/` until `done`; their statuses and longest time.
fn serve_normally_until(p: &TestPatgate, token: &str, done: impl Fn() -> bool) -> (Vec<u16>, Duration) {
    let mut statuses = Vec::new();
    let mut longest = Duration::ZERO;
    let mut i = 0;
    while !done() {
        let started = Instant::now();
        let r = http(p.addr, &get(&format!("/acme/up/normal-{i}"), token, true));
        longest = longest.max(started.elapsed());
        if !done() {
            statuses.push(r.status);
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    (statuses, longest)
}

#[test]
fn slow_headers_are_cut_at_the_header_timeout_while_others_are_served() {
    let up = spawn_upstream(false);
    let p = TestPatgate::start_with_env(&route("up", up.addr, None), &[("PATGATE__SERVER__HEADER_READ_TIMEOUT", "2s")]);
    let t = p.mint_live("agentpools:read", "acme");
    let head = get("/acme/up/slow", &t.token, true).into_bytes();
    let head_len = head.len();

    // One slow client.
    let (slow, (statuses, longest)) = std::thread::scope(|s| {
        let slow = s.spawn(|| dribble(p.addr, head.clone(), Duration::from_secs(15)));
        std::thread::sleep(Duration::from_millis(200));
        let normal = serve_normally_until(&p, &t.token, || slow.is_finished());
        (slow.join().unwrap(), normal)
    });
    eprintln!(
        "one slow client: {slow:?}; meanwhile {} requests, the longest {longest:?}",
        statuses.len()
    );
    assert_cut("a slow client", &slow, head_len);
    assert!(
        statuses.len() >= 3,
        "only {} requests completed while the slow client dribbled",
        statuses.len()
    );
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert!(longest < Duration::from_secs(10), "a normal request took {longest:?}");

    // Twenty at once.
    let (slow, (statuses, longest)) = std::thread::scope(|s| {
        let slow: Vec<_> = (0..20)
            .map(|_| {
                let head = head.clone();
                s.spawn(move || dribble(p.addr, head, Duration::from_secs(15)))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let normal = serve_normally_until(&p, &t.token, || slow.iter().all(|h| h.is_finished()));
        (slow.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>(), normal)
    });
    eprintln!(
        "twenty slow clients closed after {:?}; meanwhile {} requests, the longest {longest:?}",
        slow.iter().map(|d| d.closed_after).collect::<Vec<_>>(),
        statuses.len()
    );
    for (i, d) in slow.iter().enumerate() {
        assert_cut(&format!("slow client {i} of 20"), d, head_len);
    }
    assert!(
        statuses.len() >= 3,
        "only {} requests completed beside 20 slow clients",
        statuses.len()
    );
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert!(longest < Duration::from_secs(10), "a normal request took {longest:?}");

    // None of the slow requests reached the upstream.
    let seen = up.seen.lock().unwrap();
    assert!(seen.iter().all(|s| s.uri != "/acme/up/slow"), "a slow request reached the upstream");
    assert!(seen.iter().any(|s| s.uri.starts_with("/acme/up/normal-")));
}
