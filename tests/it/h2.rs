//! HTTP/2 over the TLS listener, friendly and hostile: hyper's client through a route to an
//! HTTP upstream, and hand-written frames for rapid reset (CVE-2023-44487), a CONTINUATION
//! flood (CVE-2024-27316 family), too many concurrent streams and an oversized header list.
//!
//! What hyper 1.12 / h2 0.4.20 do with patgate's limits, as these tests see it:
//! - rapid reset: streams opened and reset before hyper accepts them are counted against
//!   `http2.max_pending_resets`; a burst written at once piles them up, and past the limit
//!   the connection gets GOAWAY ENHANCE_YOUR_CALM ("too_many_resets") and is closed;
//! - CONTINUATION flood: h2 allows max(1.25 × max_header_list_size / max_frame_size, 5)
//!   CONTINUATION frames per header block, then GOAWAY ENHANCE_YOUR_CALM
//!   ("too_many_continuations"); a block past 4 × max_header_list_size ends the same way
//!   ("header_list_way_too_large");
//! - streams past SETTINGS_MAX_CONCURRENT_STREAMS get RST_STREAM REFUSED_STREAM;
//! - a header list past SETTINGS_MAX_HEADER_LIST_SIZE (`server.max_header_bytes`) gets a
//!   431 and the stream is reset; the connection lives on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::certs::TestCa;
use crate::support::{spawn_upstream, TestPatgate};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

const CANCEL: u32 = 0x8;
const REFUSED_STREAM: u32 = 0x7;
const PROTOCOL_ERROR: u32 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;

const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

const AGENTS: &str = "/acme/_apis/distributedtask/pools";

// ---------------------------------------------------------------------------------------
// patgate, upstreams, clients

/// patgate with TLS on its proxy listener, a route to `upstream`, plus `extra` TOML.
fn start(ca: &TestCa, upstream: SocketAddr, extra: &str, env: &[(&str, &str)]) -> (TestPatgate, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = ca.server("localhost").write(certs.path(), "server");
    let p = TestPatgate::start_with_env(
        &format!(
            "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nhandshake_timeout = \"5s\"\n\n{extra}\n\n\
             [[routes]]\npath = \"/{{org}}/_apis/distributedtask/**\"\nupstream = \"http://{upstream}\"\n\
             rules = [ {{ scope = \"agentpools:read\" }} ]\n",
            cert.display(),
            key.display()
        ),
        env,
    );
    assert!(p.log_shows("tls=true"), "{}", p.log());
    (p, certs)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A TLS connection to patgate for `localhost`, offering only `h2`.
async fn connect(addr: SocketAddr, ca: &TestCa) -> Tls {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(ca.client_config(&[b"h2"], None))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

/// hyper's HTTP/2 client on a new TLS connection.
async fn hyper_client(addr: SocketAddr, ca: &TestCa) -> SendRequest<Empty<Bytes>> {
    let tls = connect(addr, ca).await;
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> hyper::Request<Empty<Bytes>> {
    let mut b = hyper::Request::get(format!("https://localhost:{}{path}", addr.port()));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Empty::new()).unwrap()
}

/// Mints a token for `agentpools:read` on `acme` and waits, over HTTP/2, until patgate
/// knows it (a path outside the token's organization answers 403 instead of 401).
async fn mint_live(p: &TestPatgate, ca: &TestCa) -> String {
    let t = p.mint("agentpools:read", "acme", "1d").token;
    let mut send = hyper_client(p.addr, ca).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = send.send_request(get(p.addr, "/nope-org/x.git/HEAD", Some(&t))).await.unwrap();
        if r.status() != 401 {
            return t;
        }
        assert!(Instant::now() < deadline, "token never became live");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a gated upstream saw of one request: its target and headers.
type SeenRequest = (String, Vec<(String, String)>);

/// An HTTP upstream that holds every request until the gate opens, then answers 200 "ok".
struct Gated {
    addr: SocketAddr,
    /// Requests that arrived (and are held while the gate is shut).
    arrived: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    gate: tokio::sync::watch::Sender<bool>,
}

impl Gated {
    fn spawn() -> Gated {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let arrived = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (gate, rx) = tokio::sync::watch::channel(false);
        let (a, s) = (arrived.clone(), seen.clone());
        std::thread::spawn(move || {
            rt().block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { return };
                    let (a, s, rx) = (a.clone(), s.clone(), rx.clone());
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let (a, s, mut rx) = (a.clone(), s.clone(), rx.clone());
                            async move {
                                let headers = req
                                    .headers()
                                    .iter()
                                    .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                                    .collect();
                                s.lock().unwrap().push((req.uri().to_string(), headers));
                                a.fetch_add(1, Ordering::SeqCst);
                                let _ = rx.wait_for(|open| *open).await;
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(Bytes::from_static(
                                    b"ok\n",
                                ))))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), svc)
                            .await;
                    });
                }
            });
        });
        Gated { addr, arrived, seen, gate }
    }

    fn open(&self) {
        self.gate.send_replace(true);
    }

    fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------
// Raw HTTP/2 frames

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    assert!(len < 1 << 24);
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// An HPACK integer with an `n`-bit prefix, the prefix's other bits being `first`.
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A literal header field without indexing, with a new name (no Huffman coding).
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// The header block of `GET https://localhost{path}`, with a bearer token when given.
fn request_block(path: &str, token: Option<&str>) -> Vec<u8> {
    // :method GET and :scheme https from the static table, the rest as literals.
    let mut b = vec![0x82, 0x87];
    literal(&mut b, ":path", path);
    literal(&mut b, ":authority", "localhost");
    if let Some(t) = token {
        literal(&mut b, "authorization", &format!("Bearer {t}"));
    }
    b
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    /// A GOAWAY's last stream id, error code and debug data.
    fn goaway(&self) -> (u32, u32, String) {
        assert_eq!(self.kind, GOAWAY);
        let p = &self.payload;
        (
            u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
            u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            String::from_utf8_lossy(&p[8..]).into_owned(),
        )
    }

    fn error_code(&self) -> u32 {
        assert_eq!(self.kind, RST_STREAM);
        u32::from_be_bytes(self.payload[..4].try_into().unwrap())
    }

    fn settings(&self) -> Vec<(u16, u32)> {
        assert_eq!(self.kind, SETTINGS);
        self.payload
            .chunks(6)
            .map(|c| (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]])))
            .collect()
    }
}

/// Reads frames off the server's half of a connection.
struct Frames<R> {
    io: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Frames<R> {
    fn new(io: R) -> Self {
        Frames { io, buf: Vec::new() }
    }

    /// The next frame; None once the connection ended (EOF, reset, or a TLS error).
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = (self.buf[0] as usize) << 16 | (self.buf[1] as usize) << 8 | self.buf[2] as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes(self.buf[5..9].try_into().unwrap()) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Some(f);
                }
            }
            let mut chunk = [0u8; 16384];
            match self.io.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next frame within `timeout`; panics when none comes.
    async fn next_within(&mut self, timeout: Duration) -> Option<Frame> {
        tokio::time::timeout(timeout, self.next()).await.expect("no frame in time")
    }
}

/// Opens an HTTP/2 connection by hand: the preface and an empty SETTINGS, the server's
/// SETTINGS read and acknowledged. Returns the stream, the reader's leftovers and the
/// server's settings.
async fn raw_connect(addr: SocketAddr, ca: &TestCa) -> (Tls, Vec<u8>, Vec<(u16, u32)>) {
    let mut tls = connect(addr, ca).await;
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    tls.write_all(&hello).await.unwrap();
    tls.flush().await.unwrap();
    let mut frames = Frames::new(&mut tls);
    let settings = loop {
        let f = frames
            .next_within(Duration::from_secs(10))
            .await
            .expect("the server closed before its SETTINGS");
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            break f.settings();
        }
    };
    let rest = std::mem::take(&mut frames.buf);
    tls.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
    tls.flush().await.unwrap();
    (tls, rest, settings)
}

/// How one hostile connection ended.
#[derive(Debug, Default)]
struct Ending {
    /// The GOAWAY's last stream id, error code and debug data.
    goaway: Option<(u32, u32, String)>,
    /// Time from the start of the attack to the GOAWAY, and to the end of the connection.
    goaway_after: Option<Duration>,
    closed_after: Option<Duration>,
    /// Response HEADERS and RST_STREAMs the server sent before it ended the connection.
    responses: usize,
    resets: usize,
}

/// Reads the server's frames until the connection ends or `limit` passes.
async fn read_until_closed<R: AsyncRead + Unpin>(frames: &mut Frames<R>, started: Instant, limit: Duration, goaway: &AtomicBool) -> Ending {
    let mut e = Ending::default();
    let _ = tokio::time::timeout(limit, async {
        while let Some(f) = frames.next().await {
            match f.kind {
                GOAWAY => {
                    e.goaway = Some(f.goaway());
                    e.goaway_after = Some(started.elapsed());
                    goaway.store(true, Ordering::SeqCst);
                }
                HEADERS => e.responses += 1,
                RST_STREAM => e.resets += 1,
                _ => {}
            }
        }
        e.closed_after = Some(started.elapsed());
    })
    .await;
    goaway.store(true, Ordering::SeqCst);
    e
}

// ---------------------------------------------------------------------------------------
// patgate's memory

/// The pid of the `patgate serve` running with `p`'s configuration file.
fn serve_pid(p: &TestPatgate) -> u32 {
    let config = p.config.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.contains(&config) && args.iter().any(|a| a == "serve") {
            return pid;
        }
    }
    panic!("no patgate serve process with {config}");
}

/// The resident set of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Samples the resident set of `pid` every few milliseconds until dropped; the peak seen.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !s.load(Ordering::SeqCst) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak.max(rss_kib(pid))
        });
        RssSampler {
            stop,
            thread: Some(thread),
        }
    }

    fn peak(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// The tests

/// Requests over HTTP/2 reach an HTTP upstream route and answer 200 as HTTP/2; without a
/// token, 401 with a challenge; as many streams at once as the limit allows, all served
/// concurrently on one connection.
#[test]
fn http2_requests_reach_an_http_upstream_and_streams_run_concurrently_up_to_the_limit() {
    const LIMIT: usize = 32;
    let ca = TestCa::new("patgate h2 CA");
    let up = Gated::spawn();
    let (p, _certs) = start(&ca, up.addr, &format!("[http2]\nmax_concurrent_streams = {LIMIT}\n"), &[]);
    rt().block_on(async {
        let token = mint_live(&p, &ca).await;
        let mut send = hyper_client(p.addr, &ca).await;

        // No token: 401 and a challenge, and nothing reaches the upstream.
        let r = send.send_request(get(p.addr, AGENTS, None)).await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.version(), http::Version::HTTP_2);
        assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"patgate\"");
        assert_eq!(up.arrived(), 0);

        // LIMIT requests at once: all held by the upstream at the same time, so all of them
        // are open streams of this one connection together.
        let mut pending = Vec::new();
        for i in 0..LIMIT {
            send.ready().await.unwrap();
            pending.push(tokio::spawn(send.send_request(get(
                p.addr,
                &format!("{AGENTS}?n={i}"),
                Some(&token),
            ))));
        }
        wait_for("every stream to reach the upstream at once", Duration::from_secs(20), || {
            up.arrived() == LIMIT
        })
        .await;
        up.open();
        for r in pending {
            let r = tokio::time::timeout(Duration::from_secs(20), r).await.unwrap().unwrap().unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.version(), http::Version::HTTP_2);
            assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "ok\n");
        }

        // And one more on the same connection once they are done.
        let r = send.send_request(get(p.addr, AGENTS, Some(&token))).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), http::Version::HTTP_2);
    });
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), LIMIT + 1);
    let mut targets: Vec<&str> = seen.iter().map(|(uri, _)| uri.as_str()).collect();
    targets.sort();
    let mut expected: Vec<String> = (0..LIMIT).map(|i| format!("{AGENTS}?n={i}")).collect();
    expected.push(AGENTS.to_owned());
    expected.sort();
    assert_eq!(targets, expected);
    for (_, headers) in &seen {
        assert!(
            headers.iter().all(|(n, _)| n != "authorization"),
            "the credential went upstream: {headers:?}"
        );
        assert!(headers.iter().any(|(n, v)| n == "x-patgate-user" && v == "alice"), "{headers:?}");
    }
}

/// Rapid reset: thousands of streams opened and cancelled at once on one connection are
/// met with GOAWAY ENHANCE_YOUR_CALM and the connection closes; patgate serves on.
#[test]
fn a_rapid_reset_flood_gets_goaway_and_the_connection_closed() {
    const STREAMS: u32 = 5000;
    let ca = TestCa::new("patgate h2 CA");
    let up = spawn_upstream(false);
    let (p, _certs) = start(&ca, up.addr, "", &[]);
    let rt = rt();
    let token = rt.block_on(mint_live(&p, &ca));
    let ending = rt.block_on(async {
        let (tls, rest, _) = raw_connect(p.addr, &ca).await;
        // Every HEADERS followed at once by its RST_STREAM CANCEL, all in one write, so that
        // the streams are reset before hyper gets to accept them.
        let block = request_block(AGENTS, None);
        let mut burst = Vec::new();
        for i in 0..STREAMS {
            let id = 2 * i + 1;
            burst.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
            burst.extend(rst_stream(id, CANCEL));
        }
        let (r, mut w) = tokio::io::split(tls);
        let mut frames = Frames::new(r);
        frames.buf = rest;
        let started = Instant::now();
        let writer = tokio::spawn(async move {
            // The server may cut the connection in the middle of the burst.
            let _ = w.write_all(&burst).await;
            let _ = w.flush().await;
            w
        });
        let ending = read_until_closed(&mut frames, started, Duration::from_secs(10), &AtomicBool::new(false)).await;
        drop(writer.await.unwrap());
        ending
    });
    eprintln!("rapid reset of {STREAMS} streams: {ending:?}");
    let (last, code, debug) = ending.goaway.clone().unwrap_or_else(|| panic!("no GOAWAY: {ending:?}"));
    assert_eq!(code, ENHANCE_YOUR_CALM, "GOAWAY {last} {code:#x} {debug:?}");
    assert!(last < 2 * STREAMS - 1, "the server processed the whole burst: {ending:?}");
    assert!(
        ending.closed_after.is_some(),
        "the connection stayed open for 10 s after the flood: {ending:?}"
    );
    assert!(ending.responses < STREAMS as usize / 10, "{ending:?}");
    assert!(up.seen.lock().unwrap().is_empty());

    // A new connection is served.
    rt.block_on(async {
        let mut send = hyper_client(p.addr, &ca).await;
        let r = send.send_request(get(p.addr, AGENTS, Some(&token))).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "ok\n");
    });
    assert_eq!(up.seen.lock().unwrap().len(), 1);
}

/// One CONTINUATION flood: HEADERS without END_HEADERS, then CONTINUATION frames of about
/// `frame_bytes` of new literal headers each, written until the server ends the connection
/// or 10 MiB went out. Returns how it ended and the bytes written by then.
async fn continuation_flood(addr: SocketAddr, ca: &TestCa, token: &str, frame_bytes: usize) -> (Ending, usize) {
    const MAX_SENT: usize = 10 << 20;
    let (tls, rest, _) = raw_connect(addr, ca).await;
    let (r, mut w) = tokio::io::split(tls);
    let mut frames = Frames::new(r);
    frames.buf = rest;
    let ended = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let writer = {
        let (ended, sent) = (ended.clone(), sent.clone());
        let token = token.to_owned();
        tokio::spawn(async move {
            let first = frame(HEADERS, END_STREAM, 1, &request_block(AGENTS, Some(&token)));
            if w.write_all(&first).await.is_err() {
                return;
            }
            sent.fetch_add(first.len(), Ordering::SeqCst);
            let mut n = 0u64;
            while !ended.load(Ordering::SeqCst) && sent.load(Ordering::SeqCst) < MAX_SENT {
                let mut block = Vec::new();
                while block.len() < frame_bytes {
                    n += 1;
                    literal(&mut block, &format!("x-flood-{n:010}"), &format!("{n:040}"));
                }
                let f = frame(CONTINUATION, 0, 1, &block);
                if w.write_all(&f).await.is_err() || w.flush().await.is_err() {
                    return;
                }
                sent.fetch_add(f.len(), Ordering::SeqCst);
            }
        })
    };
    let ending = read_until_closed(&mut frames, started, Duration::from_secs(15), &ended).await;
    let sent_at_end = sent.load(Ordering::SeqCst);
    ended.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    (ending, sent_at_end)
}

/// CONTINUATION flood: an endless header block is cut with GOAWAY long before 10 MiB, in
/// bounded time, whatever the size of its frames, and patgate's memory stays flat.
#[test]
fn a_continuation_flood_is_cut_early_and_memory_stays_flat() {
    let ca = TestCa::new("patgate h2 CA");
    let up = spawn_upstream(false);
    let (p, _certs) = start(&ca, up.addr, "", &[]);
    let pid = serve_pid(&p);
    let rt = rt();
    let token = rt.block_on(mint_live(&p, &ca));
    // Warm up: a served connection, so that the baseline has the TLS and HTTP/2 machinery.
    rt.block_on(async {
        let mut send = hyper_client(p.addr, &ca).await;
        let r = send.send_request(get(p.addr, AGENTS, Some(&token))).await.unwrap();
        assert_eq!(r.status(), 200);
    });
    let seen_before = up.seen.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(300));
    let baseline = rss_kib(pid);
    let sampler = RssSampler::start(pid);
    // Small frames (the frame count is the limit) and full 16 KiB frames (the header list
    // size is passed with the first one); a few connections of each.
    for frame_bytes in [1024, 16_000] {
        for round in 0..3 {
            let (ending, sent) = rt.block_on(continuation_flood(p.addr, &ca, &token, frame_bytes));
            eprintln!("CONTINUATION flood, {frame_bytes}-byte frames, round {round}: {sent} bytes sent by the end; {ending:?}");
            let (_, code, debug) = ending
                .goaway
                .clone()
                .unwrap_or_else(|| panic!("no GOAWAY after {sent} bytes: {ending:?}"));
            assert!(
                [ENHANCE_YOUR_CALM, PROTOCOL_ERROR, 0x9 /* COMPRESSION_ERROR */].contains(&code),
                "GOAWAY {code:#x} {debug:?}"
            );
            let closed = ending
                .closed_after
                .unwrap_or_else(|| panic!("the connection stayed open: {ending:?}"));
            assert!(closed < Duration::from_secs(10), "{ending:?}");
            assert!(sent < 10 << 20, "{sent} bytes went out before the server ended the connection");
            assert_eq!(ending.responses, 0, "the endless header block got an answer: {ending:?}");
        }
    }
    let peak = sampler.peak();
    let after = rss_kib(pid);
    eprintln!("VmRSS: {baseline} KiB before, {peak} KiB at most during, {after} KiB after");
    assert!(
        peak.saturating_sub(baseline) < 6 * 1024,
        "VmRSS grew from {baseline} KiB to {peak} KiB during the floods"
    );
    assert_eq!(up.seen.lock().unwrap().len(), seen_before, "a flooded request reached the upstream");

    // patgate serves on.
    rt.block_on(async {
        let mut send = hyper_client(p.addr, &ca).await;
        let r = send.send_request(get(p.addr, AGENTS, Some(&token))).await.unwrap();
        assert_eq!(r.status(), 200);
    });
}

/// `http2.max_concurrent_streams = 4` is advertised in the server's SETTINGS; with four
/// streams in flight, more are refused with RST_STREAM REFUSED_STREAM (or the connection
/// with GOAWAY PROTOCOL_ERROR) and never reach the upstream, while the four are served.
#[test]
fn streams_past_max_concurrent_streams_are_refused_and_the_first_ones_served() {
    let ca = TestCa::new("patgate h2 CA");
    let up = Gated::spawn();
    let (p, _certs) = start(&ca, up.addr, "[http2]\nmax_concurrent_streams = 4\n", &[]);
    rt().block_on(async {
        let token = mint_live(&p, &ca).await;
        let (mut tls, rest, settings) = raw_connect(p.addr, &ca).await;
        eprintln!("server SETTINGS: {settings:?}");
        assert!(settings.contains(&(SETTINGS_MAX_CONCURRENT_STREAMS, 4)), "{settings:?}");
        assert!(settings.contains(&(SETTINGS_MAX_HEADER_LIST_SIZE, 16 * 1024)), "{settings:?}");

        let block = request_block(AGENTS, Some(&token));
        let mut four = Vec::new();
        for id in [1, 3, 5, 7] {
            four.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
        }
        tls.write_all(&four).await.unwrap();
        tls.flush().await.unwrap();
        wait_for("four streams at the upstream", Duration::from_secs(20), || up.arrived() == 4).await;

        // Three more while the four are open.
        let mut more = Vec::new();
        for id in [9, 11, 13] {
            more.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
        }
        tls.write_all(&more).await.unwrap();
        tls.flush().await.unwrap();
        let mut frames = Frames::new(&mut tls);
        frames.buf = rest;
        let mut refused = Vec::new();
        let mut goaway = None;
        while refused.len() < 3 && goaway.is_none() {
            let f = frames
                .next_within(Duration::from_secs(10))
                .await
                .expect("the connection ended with no GOAWAY");
            match f.kind {
                RST_STREAM => {
                    assert!([9, 11, 13].contains(&f.stream), "stream {} reset: {:#x}", f.stream, f.error_code());
                    assert_eq!(f.error_code(), REFUSED_STREAM, "stream {}", f.stream);
                    refused.push(f.stream);
                }
                GOAWAY => goaway = Some(f.goaway()),
                HEADERS => panic!("stream {} answered before the gate opened", f.stream),
                _ => {}
            }
        }
        eprintln!("refused: {refused:?}; GOAWAY: {goaway:?}");
        if let Some((last, code, debug)) = &goaway {
            assert_eq!(*code, PROTOCOL_ERROR, "GOAWAY {last} {debug:?}");
            assert!(*last >= 7, "GOAWAY {last}: the first four streams were dropped");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(up.arrived(), 4, "a refused stream reached the upstream");

        // The four are served: each a 200 (`:status 200` is static entry 8) and a body.
        up.open();
        let mut answered = Vec::new();
        let mut finished = Vec::new();
        while finished.len() < 4 {
            let f = frames
                .next_within(Duration::from_secs(20))
                .await
                .expect("the connection ended before the four streams were served");
            match f.kind {
                HEADERS => {
                    assert!([1, 3, 5, 7].contains(&f.stream), "{f:?}");
                    assert_eq!(f.payload.first(), Some(&0x88), "stream {} did not answer 200: {f:?}", f.stream);
                    answered.push(f.stream);
                }
                DATA if f.flags & END_STREAM != 0 => finished.push(f.stream),
                RST_STREAM => panic!("stream {} reset: {:#x}", f.stream, f.error_code()),
                PING if f.flags & ACK == 0 => {}
                _ => {}
            }
        }
        answered.sort();
        finished.sort();
        assert_eq!(answered, [1, 3, 5, 7]);
        assert_eq!(finished, [1, 3, 5, 7]);

        // With the four done, a new stream is served again (unless the connection was told
        // to go away, in which case a new connection is).
        if goaway.is_none() {
            let leftover = std::mem::take(&mut frames.buf);
            drop(frames);
            tls.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 15, &block)).await.unwrap();
            tls.flush().await.unwrap();
            let mut frames = Frames::new(&mut tls);
            frames.buf = leftover;
            loop {
                let f = frames.next_within(Duration::from_secs(20)).await.expect("the connection ended");
                if f.kind == HEADERS && f.stream == 15 {
                    assert_eq!(f.payload.first(), Some(&0x88), "{f:?}");
                    break;
                }
                assert!(f.kind != RST_STREAM && f.kind != GOAWAY, "{f:?}");
            }
        } else {
            let mut send = hyper_client(p.addr, &ca).await;
            let r = send.send_request(get(p.addr, AGENTS, Some(&token))).await.unwrap();
            assert_eq!(r.status(), 200);
        }
    });
    assert_eq!(up.arrived(), 5);
}

/// A header list over `server.max_header_bytes`, in one HEADERS frame, is refused with 431
/// (or a reset of the stream) and never reaches the upstream; one under it is served.
#[test]
fn a_header_list_over_max_header_bytes_is_refused_before_the_upstream() {
    const MAX: usize = 10_000;
    let ca = TestCa::new("patgate h2 CA");
    let up = spawn_upstream(false);
    let max = MAX.to_string();
    let (p, _certs) = start(&ca, up.addr, "", &[("PATGATE__SERVER__MAX_HEADER_BYTES", &max)]);
    rt().block_on(async {
        let token = mint_live(&p, &ca).await;

        // The advertised limit is the configured one.
        let (_tls, _, settings) = raw_connect(p.addr, &ca).await;
        assert!(settings.contains(&(SETTINGS_MAX_HEADER_LIST_SIZE, MAX as u32)), "{settings:?}");

        let with = |value_len: usize| {
            let mut r = get(p.addr, AGENTS, Some(&token));
            r.headers_mut().insert("x-big", "a".repeat(value_len).parse().unwrap());
            r
        };
        let mut send = hyper_client(p.addr, &ca).await;
        // 12 000 bytes of value: past the limit, yet (Huffman-coded) well inside one frame.
        let refused = send.send_request(with(12_000)).await;
        eprintln!("oversized header list: {:?}", refused.as_ref().map(|r| r.status()));
        match refused {
            Ok(r) => assert_eq!(r.status(), 431),
            Err(e) => {
                let text = format!("{e:?}");
                assert!(
                    text.contains("REFUSED_STREAM") || text.contains("PROTOCOL_ERROR") || text.contains("GoAway"),
                    "{text}"
                );
            }
        }
        assert!(up.seen.lock().unwrap().is_empty(), "the oversized request reached the upstream");

        // A list under the limit is served, on the same connection when it lives on.
        let mut send = match send.ready().await {
            Ok(()) => send,
            Err(_) => hyper_client(p.addr, &ca).await,
        };
        let r = send.send_request(with(6_000)).await.unwrap();
        assert_eq!(r.status(), 200);
    });
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-big"), vec!["a".repeat(6_000)]);
}

/// `:authority` is held to the rule an HTTP/1 `Host` is: userinfo or a bad port gets 400,
/// and so does a `Host` beside it that names another; the upstream sees none of them.
#[test]
fn an_invalid_authority_or_a_host_that_differs_gets_400() {
    let ca = TestCa::new("patgate h2 CA");
    let up = Gated::spawn();
    up.open();
    let (p, _certs) = start(&ca, up.addr, "", &[]);
    rt().block_on(async {
        let token = mint_live(&p, &ca).await;
        let mut send = hyper_client(p.addr, &ca).await;
        let port = p.addr.port();
        let with = |uri: String, host: Option<&str>| {
            let mut b = hyper::Request::get(uri).header("authorization", format!("Bearer {token}"));
            if let Some(h) = host {
                b = b.header("host", h);
            }
            b.body(Empty::new()).unwrap()
        };
        let ok = send
            .send_request(with(format!("https://localhost:{port}{AGENTS}"), None))
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        let before = up.arrived();
        for (uri, host) in [
            (format!("https://u:p@localhost:{port}{AGENTS}"), None),
            (format!("https://localhost:{port}{AGENTS}"), Some("evil.example")),
        ] {
            let r = send.send_request(with(uri.clone(), host)).await.unwrap();
            assert_eq!(r.status(), 400, "{uri} {host:?}");
        }
        assert_eq!(up.arrived(), before);
    });
}
