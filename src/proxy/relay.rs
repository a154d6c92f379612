//! The relay: the usual HTTP/1.1 request, passed between the client's socket and the
//! upstream's without hyper.
//!
//! Every HTTP/1.1 connection (plain or TLS) starts here. A request whose head is plain
//! (GET, HEAD, DELETE or OPTIONS; HTTP/1.1; origin-form; no body; no `Transfer-Encoding`,
//! `Upgrade`, `Expect` or `TE`; a `Connection` that names at most `keep-alive`) goes
//! through the same pipeline as any other (`Proxy::admit`, the same header rewrite,
//! the same access log, the same error answers) and then to the route's HTTP upstream
//! over the connection's own upstream connection. The answer's head is parsed and its
//! hop-by-hop headers dropped; its body is copied as it is framed (by length, chunk by
//! chunk, or until the upstream closes), never decoded or buffered whole.
//!
//! The first request that is anything else (a body, an upgrade, a git http-backend route,
//! HTTP/1.0, a head that httparse refuses or that is too long) hands the connection, with
//! the bytes already read, to hyper for the rest of its life. The
//! relay never reads a request body, so it never has to judge how one is framed.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::framing::Chunks;
use super::upstream::{Connector, HttpTarget, Stream, Upstream};
use super::{error_response, headers, AccessEntry, Admitted, Connection, Proxy, ProxyError};
use crate::accept::{Activity, InFlight};

/// The most headers a request head may have to be relayed; a head with more goes to hyper.
const MAX_HEADERS: usize = 64;
/// The most headers of an upstream's answer head.
const MAX_RESPONSE_HEADERS: usize = 100;
/// The longest upstream answer head (as much as hyper's client reads).
const MAX_RESPONSE_HEAD: usize = 400 * 1024;
/// What one read from a socket asks room for.
const READ_SIZE: usize = 64 * 1024;

/// The listener's limits the relay enforces while reading request heads.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest a client may take to send a request's head, once it began.
    pub header_read_timeout: Duration,
    /// The most bytes of request line and headers.
    pub max_header_bytes: usize,
}

/// Serves `io` until it closes, the server drains, or a request needs hyper: then
/// `fallback` serves the rest of the connection, given the bytes read and not yet used.
pub(crate) async fn serve<IO, F, Fut>(io: IO, conn: Connection, proxy: Arc<Proxy>, limits: Limits, activity: Arc<Activity>, fallback: F)
where
    IO: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(IO, Bytes, Connection) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut relay = Relay {
        io,
        buf: BytesMut::new(),
        conn,
        proxy,
        limits,
        activity,
        up: UpstreamSide {
            kept: None,
            ubuf: BytesMut::new(),
            out: BytesMut::new(),
        },
        spans: HeadSpans::new(),
        timer: Lazy::idle(),
        headers: HeaderMap::new(),
        identity: headers::Identity::default(),
    };
    match relay.run().await {
        Ended::Closed => {
            // A TLS client reads close_notify; a plain one, the FIN. Bounded by the
            // connection's idle watchdog like everything else.
            let _ = relay.io.shutdown().await;
        }
        Ended::Fallback => {
            let Relay { io, buf, conn, .. } = relay;
            fallback(io, buf.freeze(), conn).await
        }
    }
}

/// How the relay left a connection.
enum Ended {
    /// Closed (by the client, after an answer that ends it, or because the server drains).
    Closed,
    /// Handed to hyper.
    Fallback,
}

/// What to do after an answer.
enum Next {
    KeepAlive,
    Close,
    Fallback,
}

/// The connection's own upstream connection, kept between its requests.
struct Kept {
    tls: bool,
    host: HeaderValue,
    io: Stream,
    /// Its last answer had no body: before it is used again, it must be silent.
    check: bool,
}

/// The relay's side of the upstream: apart from the client's, so that both can be
/// watched at once while the upstream is asked.
struct UpstreamSide {
    kept: Option<Kept>,
    /// What was read from the upstream and not yet passed on.
    ubuf: BytesMut,
    /// What is about to be written (a request head upstream, an answer to the client).
    out: BytesMut,
}

struct Relay<IO> {
    io: IO,
    /// What was read from the client and not yet used.
    buf: BytesMut,
    conn: Connection,
    proxy: Arc<Proxy>,
    limits: Limits,
    activity: Arc<Activity>,
    /// The upstream connection and the buffers that go with it.
    up: UpstreamSide,
    /// Where the last request head's parts lie in `buf`.
    spans: HeadSpans,
    /// The last request's header table, emptied: its room serves the next.
    headers: HeaderMap,
    /// The one timer of the connection: for a request head, then for the answer's.
    timer: Lazy,
    /// The identity headers of the token of the connection's last request.
    identity: headers::Identity,
}

/// A timer that is moved lazily. Every request has deadlines (its head's, its answer's),
/// and nearly all are met: rather than arm and disarm a timer for each, the one timer is
/// left where it is when its deadline is later, and when it fires before the deadline in
/// force, it is set again for that deadline. It never fires late: it is moved forward
/// before a wait whenever the deadline is earlier than it.
struct Lazy(Pin<Box<tokio::time::Sleep>>);

impl Lazy {
    /// A timer far in the future (about a year: tokio's wheel holds up to two).
    fn idle() -> Lazy {
        Lazy(Box::pin(tokio::time::sleep(Duration::from_secs(365 * 24 * 3600))))
    }

    /// Whether `deadline` passed; if not, the timer will wake the task by then.
    fn expired(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        if deadline < self.0.deadline() {
            self.0.as_mut().reset(deadline);
        }
        while self.0.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return true;
            }
            self.0.as_mut().reset(deadline);
        }
        false
    }
}

/// Where a request head's parts lie in the connection's buffer.
struct HeadSpans {
    len: usize,
    method: Method,
    target: (usize, usize),
    headers: [(usize, usize, usize, usize); MAX_HEADERS],
    count: usize,
}

impl UpstreamSide {
    /// Sends the request head in `out` and reads the answer's head, on the kept upstream
    /// connection or a new one. A request that may be repeated goes once more on a new
    /// connection when a reused one closed before answering.
    async fn exchange(
        &mut self,
        connector: &Connector,
        target: &HttpTarget,
        retry: bool,
        bodiless: bool,
    ) -> Result<(Kept, Answer), ProxyError> {
        let mut kept = self.kept.take().filter(|k| k.tls == target.tls && k.host == target.host);
        // A request that may not be repeated goes on a reused connection only if that has
        // not closed meanwhile (the usual request, which may, is not slowed by the check).
        if let Some(k) = kept.as_mut().filter(|k| !retry || k.check) {
            if !still_open(&mut k.io) {
                kept = None;
            }
        }
        if let Some(k) = kept.as_mut() {
            k.check = false;
        }
        loop {
            let reused = kept.is_some();
            let mut k = match kept.take() {
                Some(k) => k,
                None => Kept {
                    tls: target.tls,
                    host: target.host.clone(),
                    check: false,
                    io: connector
                        .open(target.tls, &target.authority)
                        .await
                        .map_err(|_| ProxyError::UpstreamUnreachable)?,
                },
            };
            match self.send_and_read(&mut k.io, bodiless).await {
                Ok(answer) => return Ok((k, answer)),
                Err(Failed::Stale(_)) if reused && retry => continue,
                Err(Failed::Stale(e)) => {
                    tracing::warn!(upstream = %target.authority, error = %e, "Upstream failed");
                    return Err(ProxyError::UpstreamFailed);
                }
                Err(Failed::Other(e)) => {
                    tracing::warn!(upstream = %target.authority, error = %e, "Upstream failed");
                    return Err(e);
                }
            }
        }
    }

    async fn send_and_read(&mut self, io: &mut Stream, bodiless: bool) -> Result<Answer, Failed> {
        io.write_all(&self.out).await.map_err(Failed::Stale)?;
        io.flush().await.map_err(Failed::Stale)?;
        self.ubuf.clear();
        loop {
            if !self.ubuf.is_empty() {
                match parse_response(&self.ubuf, bodiless, &mut self.out)? {
                    Some((len, answer)) => {
                        self.ubuf.advance(len);
                        return Ok(answer);
                    }
                    None if self.ubuf.len() >= MAX_RESPONSE_HEAD => {
                        return Err(Failed::Other(ProxyError::UpstreamFailed));
                    }
                    None => {}
                }
            }
            let began = !self.ubuf.is_empty();
            self.ubuf.reserve(READ_SIZE);
            match io.read_buf(&mut self.ubuf).await {
                Ok(0) if !began => return Err(Failed::Stale(io::ErrorKind::UnexpectedEof.into())),
                Err(e) if !began => return Err(Failed::Stale(e)),
                Ok(0) => return Err(Failed::Other(ProxyError::UpstreamFailed)),
                Err(_) => return Err(Failed::Other(ProxyError::UpstreamFailed)),
                Ok(_) => {}
            }
        }
    }
}

/// Whether an idle upstream connection is still open and silent: one read that does not
/// wait. `Pending` is the answer of a live connection with nothing to say.
fn still_open(io: &mut Stream) -> bool {
    let mut scratch = [0u8; 1];
    let mut buf = ReadBuf::new(&mut scratch);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    Pin::new(io).poll_read(&mut cx, &mut buf).is_pending()
}

impl HeadSpans {
    fn new() -> Self {
        HeadSpans {
            len: 0,
            method: Method::GET,
            target: (0, 0),
            headers: [(0, 0, 0, 0); MAX_HEADERS],
            count: 0,
        }
    }
}

/// How an answer's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// None at all (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked(Chunks),
    /// Until the upstream closes; the client connection closes after it.
    UntilClose,
}

/// An upstream's answer head, already rewritten for the client into `Relay::out`.
struct Answer {
    status: u16,
    framing: Framing,
    /// Whether the upstream connection may carry another request after this answer.
    reusable: bool,
}

/// How the wait for an upstream's answer ended.
enum Waited {
    Answered(Result<(Kept, Answer), ProxyError>),
    TimedOut,
    ClientGone,
}

/// Why an exchange with the upstream failed.
enum Failed {
    /// The connection closed before the answer began: a reused one may have gone stale.
    Stale(io::Error),
    Other(ProxyError),
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Relay<IO> {
    async fn run(&mut self) -> Ended {
        loop {
            match self.read_head().await {
                Ok(true) => {}
                Ok(false) => return Ended::Fallback,
                Err(()) => return Ended::Closed,
            }
            let head = self.buf.split_to(self.spans.len).freeze();
            let map = std::mem::take(&mut self.headers);
            let Some(mut parts) = parts_of(&head, &self.spans, map) else {
                self.put_back(head);
                return Ended::Fallback;
            };
            let next = self.answer(&parts, head).await;
            self.headers = std::mem::take(&mut parts.headers);
            self.headers.clear();
            match next {
                Next::KeepAlive if !*self.conn.stop.borrow() => {}
                Next::KeepAlive | Next::Close => return Ended::Closed,
                Next::Fallback => return Ended::Fallback,
            }
        }
    }

    /// Puts a request head back before the unread bytes, for hyper to read.
    fn put_back(&mut self, head: Bytes) {
        let mut all = BytesMut::with_capacity(head.len() + self.buf.len());
        all.extend_from_slice(&head);
        all.extend_from_slice(&self.buf);
        self.buf = all;
    }

    /// Reads the next request head: `Ok(true)` when the relay takes it (see `spans`),
    /// `Ok(false)` when it goes to hyper, `Err` when the connection is to close (the client
    /// closed, the head took too long, or the server drains while the connection waits).
    async fn read_head(&mut self) -> Result<bool, ()> {
        // As hyper does, the time runs from when the connection waits for a head, whether
        // or not a byte of it came yet: a keep-alive connection idles for as long at most.
        let deadline = Instant::now() + self.limits.header_read_timeout;
        loop {
            if !self.buf.is_empty() {
                match parse_request(&self.buf, &mut self.spans) {
                    Parsed::Relay => return Ok(true),
                    Parsed::Partial if self.buf.len() < self.limits.max_header_bytes => {}
                    Parsed::Partial | Parsed::Hyper => return Ok(false),
                }
            }
            self.buf.reserve(8 * 1024);
            let stop = &self.conn.stop;
            let mut read = std::pin::pin!(self.io.read_buf(&mut self.buf));
            let timer = &mut self.timer;
            let read = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = read.as_mut().poll(cx) {
                    return Poll::Ready(Ok(r));
                }
                // A draining server closes a connection that waits for a head at once: the
                // connection's watchdog polls it again when the drain begins.
                if *stop.borrow() {
                    return Poll::Ready(Err(false));
                }
                match timer.expired(cx, deadline) {
                    true => Poll::Ready(Err(true)),
                    false => Poll::Pending,
                }
            })
            .await;
            match read {
                Ok(Ok(0) | Err(_)) | Err(false) => return Err(()),
                Err(true) => {
                    tracing::debug!(client.ip = %self.conn.peer.ip(), "Request head not received in time");
                    return Err(());
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Answers one request.
    async fn answer(&mut self, parts: &http::request::Parts, head: Bytes) -> Next {
        let proxy = self.proxy.clone();
        let live = proxy.live.load_full();
        let busy = InFlight::new(&self.activity);
        let mut entry = AccessEntry::of(&parts.method, parts.version, &parts.uri, &self.conn);
        let bodiless = parts.method == Method::HEAD;
        let (target, permit, path, client) = match proxy.admit(parts, false, &self.conn, &live, &mut entry.log) {
            Err(e) => return self.refuse(entry, busy, &e, bodiless).await,
            Ok(Admitted {
                target: Upstream::Http(target),
                path,
                permit,
                client,
            }) => (target, permit, path, client),
            Ok(_) => {
                // git http-backend: hyper's side runs it. The request is judged again there.
                entry.written = true;
                self.put_back(head);
                return Next::Fallback;
            }
        };
        let pq = match target.path_and_query(&parts.uri, &path) {
            Ok(pq) => pq,
            Err(e) => return self.refuse(entry, busy, &e, bodiless).await,
        };
        // The same rewrite as the hyper side (see `Proxy::handle_inner` and
        // `HttpClient::forward`), written straight into the upstream's request head.
        let client = self.conn.forwarded_for(client);
        self.identity.update(&permit);
        let up = Upward {
            target: pq.as_str(),
            host: &target.host,
            client: &client,
            https: self.conn.tls,
            identity: &self.identity,
        };
        self.up.out.clear();
        put_request_head(&mut self.up.out, parts, &up);
        drop(head);
        let retry = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        let deadline = Instant::now() + target.response_timeout;
        let waited = {
            let (io, buf, max) = (&mut self.io, &mut self.buf, self.limits.max_header_bytes);
            let timer = &mut self.timer;
            let mut exchange = std::pin::pin!(self.up.exchange(proxy.http.connector(), target, retry, bodiless));
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = exchange.as_mut().poll(cx) {
                    return Poll::Ready(Waited::Answered(r));
                }
                // A client that goes away takes its request with it (logged as 499, as on
                // hyper's side); what it sends meanwhile is its next request, kept.
                while buf.len() < max {
                    buf.reserve(1024);
                    match std::pin::pin!(io.read_buf(&mut *buf)).poll(cx) {
                        Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Waited::ClientGone),
                        Poll::Ready(Ok(_)) => {}
                        Poll::Pending => break,
                    }
                }
                match timer.expired(cx, deadline) {
                    true => Poll::Ready(Waited::TimedOut),
                    false => Poll::Pending,
                }
            })
            .await
        };
        let (mut kept, answer) = match waited {
            Waited::Answered(Ok(done)) => done,
            Waited::Answered(Err(e)) => return self.refuse(entry, busy, &e, bodiless).await,
            Waited::TimedOut => {
                let e = ProxyError::UpstreamTimeout(target.response_timeout);
                return self.refuse(entry, busy, &e, bodiless).await;
            }
            Waited::ClientGone => return Next::Close,
        };
        // The answer is ready: from here on, only the body moves (watched for idling).
        entry.written = true;
        entry.emit(answer.status, None);
        drop(busy);
        let mut reusable = answer.reusable;
        let sent = match answer.framing {
            Framing::Empty => {
                // Nothing may follow an answer without a body; what might (a HEAD answered
                // with one) is looked for before the connection is used again.
                reusable &= self.up.ubuf.is_empty();
                kept.check = true;
                self.flush_out().await
            }
            Framing::Length(n) => self.relay_length(&mut kept.io, n, &mut reusable).await,
            Framing::Chunked(chunks) => self.relay_chunks(&mut kept.io, chunks, &mut reusable).await,
            Framing::UntilClose => {
                let _ = self.relay_until_close(&mut kept.io).await;
                return Next::Close;
            }
        };
        match sent {
            Ok(()) => {
                if reusable {
                    self.up.kept = Some(kept);
                }
                Next::KeepAlive
            }
            Err(e) => {
                tracing::debug!(upstream = %target.authority, error = %e, "Answer cut short");
                Next::Close
            }
        }
    }

    /// Writes `out` to the client.
    async fn flush_out(&mut self) -> io::Result<()> {
        // TLS keeps what it took in its own buffer until flushed.
        let r = match self.io.write_all(&self.up.out).await {
            Ok(()) => self.io.flush().await,
            Err(e) => Err(e),
        };
        self.up.out.clear();
        r
    }

    /// Moves what the upstream already sent, as far as the body goes, to `out`.
    fn take_read(&mut self, n: usize) {
        self.up.out.extend_from_slice(&self.up.ubuf[..n]);
        self.up.ubuf.advance(n);
    }

    async fn relay_length(&mut self, upstream: &mut Stream, mut left: u64, reusable: &mut bool) -> io::Result<()> {
        loop {
            let n = self.up.ubuf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            self.take_read(n);
            left -= n as u64;
            self.flush_out().await?;
            if left == 0 {
                // More than the answer: the upstream's framing is not to be trusted again.
                *reusable &= self.up.ubuf.is_empty();
                return Ok(());
            }
            self.read_upstream(upstream).await?;
        }
    }

    async fn relay_chunks(&mut self, upstream: &mut Stream, mut chunks: Chunks, reusable: &mut bool) -> io::Result<()> {
        loop {
            let n = chunks.scan(&self.up.ubuf);
            self.take_read(n);
            self.flush_out().await?;
            match chunks {
                Chunks::Done => {
                    *reusable &= self.up.ubuf.is_empty();
                    return Ok(());
                }
                Chunks::Bad => return Err(io::Error::new(io::ErrorKind::InvalidData, "upstream sent a malformed chunk")),
                _ => self.read_upstream(upstream).await?,
            }
        }
    }

    async fn relay_until_close(&mut self, upstream: &mut Stream) -> io::Result<()> {
        loop {
            let n = self.up.ubuf.len();
            self.take_read(n);
            self.flush_out().await?;
            self.up.ubuf.reserve(READ_SIZE);
            if upstream.read_buf(&mut self.up.ubuf).await? == 0 {
                return Ok(());
            }
        }
    }

    /// Reads more of the answer's body; the upstream closing before its end is an error.
    async fn read_upstream(&mut self, upstream: &mut Stream) -> io::Result<()> {
        self.up.ubuf.clear();
        self.up.ubuf.reserve(READ_SIZE);
        match upstream.read_buf(&mut self.up.ubuf).await? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }

    /// Answers with an error, as the hyper side would, and logs it.
    /// The request stops counting as in flight (`busy`) before its answer is written: a
    /// client that does not read it is left to the idle watchdog, as on hyper's side.
    async fn refuse(&mut self, mut entry: AccessEntry<'_>, busy: InFlight, e: &ProxyError, bodiless: bool) -> Next {
        drop(busy);
        let (head, body) = error_response(e).into_parts();
        entry.written = true;
        entry.emit(head.status.as_u16(), Some(e));
        // A whole body, ready at once.
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        self.up.out.clear();
        put_status_line(&mut self.up.out, head.status.as_u16(), head.status.canonical_reason().unwrap_or(""));
        for (name, value) in &head.headers {
            put_header(&mut self.up.out, name.as_str().as_bytes(), value.as_bytes());
        }
        put_header(
            &mut self.up.out,
            b"content-length",
            itoa::Buffer::new().format(body.len()).as_bytes(),
        );
        self.up.out.put_slice(b"\r\n");
        if !bodiless {
            self.up.out.put_slice(&body);
        }
        let closes = headers::asks_to_close(&head.headers);
        match self.flush_out().await {
            Ok(()) if !closes => Next::KeepAlive,
            _ => Next::Close,
        }
    }
}

/// What a request head is, for the relay.
enum Parsed {
    /// The relay takes it: its spans are written.
    Relay,
    /// Not whole yet.
    Partial,
    /// For hyper: not one the relay takes, or not a valid head (hyper answers it).
    Hyper,
}

/// Parses a request head in place and judges whether the relay takes it; when it does,
/// `spans` says where its parts lie.
fn parse_request(buf: &[u8], spans: &mut HeadSpans) -> Parsed {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Hyper,
    };
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        Some("DELETE") => Method::DELETE,
        Some("OPTIONS") => Method::OPTIONS,
        _ => return Parsed::Hyper,
    };
    let (Some(1), Some(target)) = (req.version, req.path) else {
        return Parsed::Hyper;
    };
    if !target.starts_with('/') {
        return Parsed::Hyper;
    }
    let at = |s: &[u8]| s.as_ptr() as usize - buf.as_ptr() as usize;
    spans.len = len;
    spans.method = method;
    spans.target = (at(target.as_bytes()), at(target.as_bytes()) + target.len());
    spans.count = req.headers.len();
    let mut lengths = 0;
    for (h, span) in req.headers.iter().zip(spans.headers.iter_mut()) {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"te")
        {
            return Parsed::Hyper;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            if lengths > 1 || h.value.trim_ascii() != b"0" {
                return Parsed::Hyper;
            }
        }
        if name.eq_ignore_ascii_case(b"connection")
            && !h
                .value
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .all(|t| t.is_empty() || t.eq_ignore_ascii_case(b"keep-alive"))
        {
            return Parsed::Hyper;
        }
        *span = (at(name), at(name) + name.len(), at(h.value), at(h.value) + h.value.len());
    }
    Parsed::Relay
}

/// The request's parts, sharing `head`'s bytes; `None` when hyper should judge it.
/// `map` is an empty table to fill, kept from the connection's last request.
fn parts_of(head: &Bytes, spans: &HeadSpans, mut map: HeaderMap) -> Option<http::request::Parts> {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = spans.method.clone();
    parts.uri = Uri::from_maybe_shared(head.slice(spans.target.0..spans.target.1)).ok()?;
    parts.version = Version::HTTP_11;
    map.reserve(spans.count);
    for &(n0, n1, v0, v1) in &spans.headers[..spans.count] {
        let name = HeaderName::from_bytes(&head[n0..n1]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0..v1)).ok()?;
        map.append(name, value);
    }
    parts.headers = map;
    Some(parts)
}

/// Parses an upstream's answer head in `buf`; when whole, writes the client's head into
/// `out` and says how long it was and how its body is framed. Informational answers are
/// skipped; a 101 nobody asked for fails, as do heads that frame a body two ways.
fn parse_response(mut buf: &[u8], bodiless: bool, out: &mut BytesMut) -> Result<Option<(usize, Answer)>, Failed> {
    let failed = || Failed::Other(ProxyError::UpstreamFailed);
    let mut skipped = 0;
    loop {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, &mut slots) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(failed()),
        };
        let status = res.code.filter(|c| (100..=999).contains(c)).ok_or_else(failed)?;
        if status == 101 {
            tracing::warn!("Upstream switched protocols unasked");
            return Err(failed());
        }
        if (100..200).contains(&status) {
            buf = &buf[len..];
            skipped += len;
            continue;
        }
        // Framing, and what `Connection` says.
        let mut chunked = None;
        let mut length: Option<u64> = None;
        let mut close = res.version != Some(1);
        let mut listed: Vec<&[u8]> = Vec::new();
        let mut has_date = false;
        for h in res.headers.iter() {
            let name = h.name.as_bytes();
            has_date |= name.eq_ignore_ascii_case(b"date");
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // Chunked must be the last coding of the last value.
                let last = h.value.rsplit(|&b| b == b',').next().map(<[u8]>::trim_ascii);
                chunked = Some(last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")));
            } else if name.eq_ignore_ascii_case(b"content-length") {
                // Digits only, as hyper reads it: no sign, no list.
                let n = digits(h.value).ok_or_else(failed)?;
                if length.is_some_and(|l| l != n) {
                    return Err(failed());
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case(b"connection") {
                for t in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if t.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !t.is_empty() && !t.eq_ignore_ascii_case(b"keep-alive") && !t.eq_ignore_ascii_case(b"content-length") {
                        // The body's length is passed on whatever `Connection` says.
                        listed.push(t);
                    }
                }
            }
        }
        let framing = if bodiless || status == 204 || status == 304 {
            Framing::Empty
        } else {
            match (chunked, length) {
                // HTTP/1.0 has no chunked coding.
                (Some(_), _) if res.version != Some(1) => return Err(failed()),
                (Some(_), Some(_)) | (Some(false), None) => return Err(failed()),
                (Some(true), None) => Framing::Chunked(Chunks::START),
                (None, Some(n)) => Framing::Length(n),
                (None, None) => Framing::UntilClose,
            }
        };
        out.clear();
        put_status_line(out, status, res.reason.unwrap_or(""));
        for h in res.headers.iter() {
            let name = h.name.as_bytes();
            let hop = headers::HOP_BY_HOP.iter().any(|n| name.eq_ignore_ascii_case(n.as_str().as_bytes()))
                || listed.iter().any(|l| name.eq_ignore_ascii_case(l));
            if !hop {
                put_header(out, name, h.value);
            }
        }
        if !has_date {
            put_header(out, b"date", &date::now());
        }
        match framing {
            Framing::Chunked(_) => put_header(out, b"transfer-encoding", b"chunked"),
            Framing::UntilClose => put_header(out, b"connection", b"close"),
            Framing::Empty | Framing::Length(_) => {}
        }
        out.put_slice(b"\r\n");
        let answer = Answer {
            status,
            framing,
            reusable: !close && framing != Framing::UntilClose,
        };
        return Ok(Some((skipped + len, answer)));
    }
}

/// A decimal number of digits only, or `None`.
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The `Date` an answer without one is given, as hyper gives it: made at most once a
/// second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static NOW: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }

    pub fn now() -> [u8; 29] {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        NOW.with(|cell| {
            let mut cached = cell.borrow_mut();
            if cached.0 != secs {
                let text = httpdate::fmt_http_date(now);
                cached.1.copy_from_slice(&text.as_bytes()[..29]);
                cached.0 = secs;
            }
            cached.1
        })
    }
}

/// What the upstream's request head says besides the client's request.
struct Upward<'a> {
    /// The request target, as the route maps it.
    target: &'a str,
    /// The upstream's `Host`.
    host: &'a HeaderValue,
    /// The client's address, as a header value.
    client: &'a HeaderValue,
    https: bool,
    identity: &'a headers::Identity,
}

/// Writes the upstream's request head: the client's headers that the rewrite keeps, the
/// upstream's `Host` in place of the client's, and what patgate adds.
fn put_request_head(out: &mut BytesMut, parts: &http::request::Parts, up: &Upward<'_>) {
    let rewrite = headers::Rewrite::of(&parts.headers);
    out.put_slice(parts.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(up.target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name != header::HOST && rewrite.keeps(name) {
            put_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    put_header(out, b"host", up.host.as_bytes());
    let asked = rewrite.forwarded_host(&parts.headers);
    rewrite.added(up.client, up.https, asked, up.identity, |name, value| {
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    });
    out.put_slice(b"\r\n");
}

fn put_status_line(out: &mut BytesMut, status: u16, reason: &str) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(itoa::Buffer::new().format(status).as_bytes());
    out.put_u8(b' ');
    out.put_slice(reason.as_bytes());
    out.put_slice(b"\r\n");
}

fn put_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relay writes the upstream's head itself: it must carry what hyper's side would
    /// send after `prepare_upstream` and the upstream's `Host`, neither more nor less, for
    /// heads as they come from a socket.
    #[test]
    fn the_relayed_head_carries_what_the_hyper_side_sends() {
        let permit = headers::tests::permit();
        let mut identity = headers::Identity::default();
        identity.update(&permit);
        let client = headers::ip_value("10.0.0.7".parse().unwrap());
        let upstream_host = HeaderValue::from_static("up.internal:8080");
        let heads = [
            "GET /a HTTP/1.1\r\nHost: gate.example\r\nAuthorization: Basic eDp5\r\n\r\n",
            "GET /a?b HTTP/1.1\r\nHost: gate.example\r\nhost: second.example\r\nConnection: Keep-Alive\r\n\
             X-Forwarded-For: 1.2.3.4\r\nx-FORWARDED-host: evil\r\nX-Patgate-User: mallory\r\n\
             X-Patgate-Token-Id: t9\r\nForwarded: for=1.2.3.4\r\nx_remote_user: mallory\r\nProxy: http://evil\r\n\
             Keep-Alive: timeout=5\r\nProxy-Authorization: Basic eDp5\r\nAccept: */*\r\naccept: text/plain\r\n\
             User-Agent: git/2.47\r\n\r\n",
            "DELETE /a HTTP/1.1\r\nContent-Length: 0\r\nAccept: */*\r\n\r\n",
        ];
        for (i, text) in heads.iter().enumerate() {
            let mut spans = HeadSpans::new();
            assert!(matches!(parse_request(text.as_bytes(), &mut spans), Parsed::Relay), "{text:?}");
            let head = Bytes::copy_from_slice(text.as_bytes());
            let parts = parts_of(&head, &spans, HeaderMap::new()).unwrap();
            let https = i % 2 == 1;
            let mut out = BytesMut::new();
            let up = Upward {
                target: "/a",
                host: &upstream_host,
                client: &client,
                https,
                identity: &identity,
            };
            put_request_head(&mut out, &parts, &up);
            let out = std::str::from_utf8(&out).unwrap();
            // One request line, header lines, one empty line at the end and nothing after.
            let (lines, rest) = out.split_once("\r\n\r\n").unwrap();
            assert_eq!(rest, "", "{out:?}");
            let mut lines = lines.split("\r\n");
            assert_eq!(lines.next(), Some(format!("{} /a HTTP/1.1", parts.method).as_str()));
            let mut relayed: Vec<(String, String)> = lines
                .map(|l| {
                    let (n, v) = l.split_once(": ").unwrap();
                    (n.to_owned(), v.to_owned())
                })
                .collect();
            let mut map = parts.headers.clone();
            headers::prepare_upstream(&mut map, &permit, &client, https);
            map.insert(header::HOST, upstream_host.clone());
            let mut hyper: Vec<(String, String)> = map
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                .collect();
            relayed.sort();
            hyper.sort();
            assert_eq!(relayed, hyper, "{text:?}");
            // And what both send, spelled out.
            let value = |name: &str| -> Vec<&str> { relayed.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect() };
            assert_eq!(value("host"), ["up.internal:8080"]);
            assert_eq!(value("x-forwarded-for"), ["10.0.0.7"]);
            assert_eq!(value("x-forwarded-proto"), [if https { "https" } else { "http" }]);
            assert_eq!(value("x-patgate-user"), ["alice"]);
            assert_eq!(value("x-patgate-token-id"), ["t1"]);
            let forwarded_host: &[&str] = if text.contains("gate.example") { &["gate.example"] } else { &[] };
            assert_eq!(value("x-forwarded-host"), forwarded_host);
            for gone in [
                "authorization",
                "proxy-authorization",
                "forwarded",
                "x_remote_user",
                "proxy",
                "keep-alive",
                "connection",
            ] {
                assert!(value(gone).is_empty(), "{gone} in {out:?}");
            }
        }
    }

    fn judge(head: &str) -> Parsed {
        let mut spans = HeadSpans::new();
        parse_request(head.as_bytes(), &mut spans)
    }

    #[test]
    fn only_plain_heads_without_a_body_are_relayed() {
        let relayed = [
            "GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
            "HEAD /a?b=c HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
            "DELETE /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "\r\nOPTIONS /a HTTP/1.1\r\nConnection: Keep-Alive, \r\n\r\n",
        ];
        for h in relayed {
            assert!(matches!(judge(h), Parsed::Relay), "{h:?}");
        }
        let for_hyper = [
            "POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            "GET /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            "GET /a HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            "GET /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET /a HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET /a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /a HTTP/1.1\r\nTE: trailers\r\n\r\n",
            "GET /a HTTP/1.1\r\nConnection: close\r\n\r\n",
            "GET /a HTTP/1.1\r\nConnection: keep-alive, x-other\r\n\r\n",
            "GET /a HTTP/1.0\r\n\r\n",
            "GET http://h/a HTTP/1.1\r\n\r\n",
            "CONNECT h:443 HTTP/1.1\r\n\r\n",
            "TRACE /a HTTP/1.1\r\n\r\n",
            "GET /a HTTP/1.1\r\nX: 1\r\n 2\r\n\r\n",
            "GET /a HTTP/1.1\r\nX : 1\r\n\r\n",
        ];
        for h in for_hyper {
            assert!(matches!(judge(h), Parsed::Hyper), "{h:?}");
        }
        assert!(matches!(judge("GET /a HTTP/1.1\r\nHost: h\r\n"), Parsed::Partial));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(matches!(judge(&format!("GET / HTTP/1.1\r\n{many}\r\n")), Parsed::Hyper));
    }

    #[test]
    fn a_relayed_head_keeps_its_parts() {
        let text = "GET /a/b?c=d HTTP/1.1\r\nHost: h\r\nX-Two: 1\r\nx-two: 2\r\n\r\nNEXT";
        let mut spans = HeadSpans::new();
        // Left from an earlier request: the parse must overwrite it.
        spans.method = Method::POST;
        assert!(matches!(parse_request(text.as_bytes(), &mut spans), Parsed::Relay));
        assert_eq!(&text[spans.len..], "NEXT");
        let head = Bytes::copy_from_slice(&text.as_bytes()[..spans.len]);
        let parts = parts_of(&head, &spans, HeaderMap::new()).unwrap();
        assert_eq!(
            (parts.method, parts.uri.path(), parts.uri.query()),
            (Method::GET, "/a/b", Some("c=d"))
        );
        assert_eq!(parts.headers.get_all("x-two").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(parts.headers["host"], "h");
    }

    fn answer(raw: &str, bodiless: bool) -> Result<(usize, Framing, bool, String), ()> {
        let mut out = BytesMut::new();
        match parse_response(raw.as_bytes(), bodiless, &mut out) {
            Ok(Some((len, a))) => Ok((len, a.framing, a.reusable, String::from_utf8(out.to_vec()).unwrap())),
            Ok(None) => panic!("partial: {raw:?}"),
            Err(_) => Err(()),
        }
    }

    fn answer_ok(raw: &str, bodiless: bool) -> (usize, Framing, bool, String) {
        answer(raw, bodiless).unwrap_or_else(|()| panic!("refused: {raw:?}"))
    }

    #[test]
    fn answers_are_framed_and_lose_their_hop_by_hop_headers() {
        let raw =
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Gone\r\nX-Gone: 1\r\nKeep-Alive: 5\r\nContent-Length: 2\r\nX-Stays: 1\r\n\r\nok";
        let (len, framing, reusable, head) = answer_ok(raw, false);
        assert_eq!((len, framing, reusable), (raw.len() - 2, Framing::Length(2), true));
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Stays: 1\r\ndate: "),
            "{head}"
        );

        // `Connection` may not take the length away; an answer without `Date` is given one.
        let (_, framing, _, head) = answer_ok(
            "HTTP/1.1 200 OK\r\nConnection: content-length, x-a\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n",
            false,
        );
        assert_eq!(framing, Framing::Length(2));
        assert!(head.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 2\r\ndate: "), "{head}");
        assert!(!head.contains("X-A") && head.ends_with(" GMT\r\n\r\n"), "{head}");

        let (_, framing, reusable, head) = answer_ok("HTTP/1.1 201 Made\r\nTransfer-Encoding: gzip, chunked\r\nDate: x\r\n\r\n", false);
        assert_eq!((framing, reusable), (Framing::Chunked(Chunks::START), true));
        assert_eq!(head, "HTTP/1.1 201 Made\r\nDate: x\r\ntransfer-encoding: chunked\r\n\r\n");

        let (_, framing, reusable, head) = answer_ok("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((framing, reusable), (Framing::UntilClose, false));
        assert!(head.ends_with("connection: close\r\n\r\n"));

        let (_, framing, reusable, _) = answer_ok("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", false);
        assert_eq!((framing, reusable), (Framing::Length(1), false));
        let (_, framing, reusable, _) = answer_ok("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false);
        assert_eq!((framing, reusable), (Framing::Length(1), false));
        for (raw, bodiless) in [
            ("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false),
            ("HTTP/1.1 204 No Content\r\n\r\n", false),
            ("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true),
        ] {
            assert_eq!(answer(raw, bodiless).unwrap().1, Framing::Empty, "{raw:?}");
        }
        let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let (len, framing, _, head) = answer_ok(raw, false);
        assert_eq!((len, framing), (raw.len(), Framing::Length(0)));
        assert!(head.starts_with("HTTP/1.1 200 OK"));
    }

    #[test]
    fn answers_framed_two_ways_or_switching_unasked_fail() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Header: 1\r\n\r\n",
        ] {
            assert!(answer(raw, false).is_err(), "{raw:?}");
        }
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            "HTTP/1.1 042 Odd\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(answer(raw, false).is_err(), "{raw:?}");
        }
        // Repeated equal lengths are one length.
        assert_eq!(
            answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", false)
                .unwrap()
                .1,
            Framing::Length(2)
        );
    }

    impl Lazy {
        /// `work`'s output, or `None` when `deadline` passes first.
        async fn within<F: Future>(&mut self, deadline: Instant, work: F) -> Option<F::Output> {
            let mut work = std::pin::pin!(work);
            std::future::poll_fn(|cx| {
                if let Poll::Ready(out) = work.as_mut().poll(cx) {
                    return Poll::Ready(Some(out));
                }
                match self.expired(cx, deadline) {
                    true => Poll::Ready(None),
                    false => Poll::Pending,
                }
            })
            .await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_lazy_timer_is_never_late_nor_early() {
        let second = Duration::from_secs(1);
        let start = Instant::now();
        let mut t = Lazy::idle();
        // A deadline before the timer: it is moved forward, and the wait ends on time.
        assert!(t.within(start + second, std::future::pending::<()>()).await.is_none());
        assert_eq!(Instant::now(), start + second);
        // Work done in time is given back.
        assert_eq!(t.within(start + 10 * second, async { 7 }).await, Some(7));
        // The timer, left behind at the old deadline, fires at once; the later deadline
        // still stands until it passes.
        assert!(t.within(start + 3 * second, std::future::pending::<()>()).await.is_none());
        assert_eq!(Instant::now(), start + 3 * second);
    }
}
