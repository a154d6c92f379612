//! patgate's HTTP/1 server: every request of every HTTP/1 connection, plain or TLS, is
//! read here, once, by one reader, and never handed to another parser mid-connection.
//!
//! A connection is a loop of requests, each in four steps:
//! 1. the head ([`head::parse`]), within `server.max_header_bytes` and
//!    `server.header_read_timeout` however it is split across reads;
//! 2. the request goes to the pipeline ([`Proxy::handle`], the same as HTTP/2's) with a
//!    body ([`body::RequestBody`]) that this loop decodes from the client's bytes as the
//!    pipeline asks for them: by `Content-Length`, or strictly chunked ([`chunked`]);
//!    `100 Continue` is sent when the body is first asked for;
//! 3. while the answer is awaited, the client is watched: one that goes away takes its
//!    request with it (logged 499);
//! 4. the answer is written, framed by its length, chunked, or (HTTP/1.0) until close.
//!
//! A refused head (see [`head::HeadError`]) or a body that is not what its head said
//! closes the connection after the answer: nothing after it can be trusted to be framed as
//! the client meant. An answer of `101 Switching Protocols` to an upgrade request hands
//! the connection, with the bytes read past the head, to the tunnel ([`OnUpgrade`]).
//! Nothing here decides whether a request may pass: that is [`Proxy::handle`]'s.

pub mod body;
pub mod chunked;
pub mod head;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use http::{header, Method, Response, StatusCode, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::body::Body;
use super::connection::{Activity, Connection, InFlight};
use super::error::{error_response, ProxyError};
use super::handover::{OnUpgrade, Upgraded};
use super::wire::{poll_read_buf, poll_write_out, put_header, Output};
use super::{headers, Proxy};
use body::{BodyError, Feed, RequestBody, Room};
use head::{Framing, Head};

/// What one read asks room for: the first of a head (what an idle connection holds while
/// it waits), the rest of a head, and a body.
const FIRST_READ: usize = 2 * 1024;
const HEAD_READ: usize = 8 * 1024;
const BODY_READ: usize = 64 * 1024;
/// A buffer larger than this is given back when its connection falls idle, so that an idle
/// connection costs little whatever its last request was.
const KEEP_IDLE: usize = 16 * 1024;

/// The listener's limits this server holds requests to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest a client may take to send a request's head, from when it is awaited.
    pub header_read_timeout: Duration,
    /// The most bytes of request line and headers.
    pub max_header_bytes: usize,
}

/// Serves an HTTP/1 connection until it closes, falls idle (the watchdog in
/// [`crate::server::accept`] drops it), the server drains, or it switches protocols (the
/// tunnel then keeps the connection's place, [`Connection::place`]).
pub(crate) async fn serve<IO>(io: IO, conn: Connection, proxy: Arc<Proxy>, limits: Limits, activity: Arc<Activity>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut wire = Wire {
        io,
        rbuf: BytesMut::new(),
        out: Output::default(),
        limits,
        timer: LazyDeadline::idle(),
    };
    loop {
        let head = match wire.read_head(&conn).await {
            Ok(Some(head)) => head,
            Ok(None) => break,
            Err(e) => {
                let e = ProxyError::Head(e);
                proxy.log_unread(&conn, &e);
                let mut reading = Reading::none();
                let _ = wire.respond(error_response(&e), &mut reading, &Exchange::refused()).await;
                break;
            }
        };
        let Head {
            mut parts,
            framing,
            keep_alive,
            expect_continue,
        } = head;
        let exchange = Exchange {
            head: parts.method == Method::HEAD,
            version: parts.version,
            keep_alive,
            switch: None,
        };
        let mut exchange = exchange;
        if parts.version == Version::HTTP_11 && headers::is_upgrade(&parts.headers) {
            let (tx, rx) = oneshot::channel();
            parts.extensions.insert(OnUpgrade::new(rx));
            exchange.switch = Some(tx);
        }
        let (body, mut reading) = Reading::of(framing, expect_continue);
        if let Some(feed) = &reading.feed {
            parts.extensions.insert(feed.watch());
        }
        let busy = InFlight::new(&activity);
        let answer = {
            let handling = std::pin::pin!(proxy.handle(http::Request::from_parts(parts, body), &conn));
            wire.until_answered(handling, &mut reading).await
        };
        drop(busy);
        let Some(answer) = answer else {
            // The client went away; the pipeline logged it as 499 when it was dropped.
            break;
        };
        let exchange = Exchange {
            keep_alive: exchange.keep_alive && !*conn.stop.borrow(),
            ..exchange
        };
        match wire.respond(answer, &mut reading, &exchange).await {
            Ok(AfterAnswer::KeepAlive) if reading.done && !reading.failed => {}
            Ok(AfterAnswer::KeepAlive | AfterAnswer::Close) => break,
            Ok(AfterAnswer::Switch) => {
                let Some(tx) = exchange.switch else { break };
                let Wire { io, mut rbuf, .. } = wire;
                let pre = rbuf.split().freeze();
                let _ = tx.send(Upgraded::new(pre, Box::new(io)));
                return;
            }
            Err(e) => {
                tracing::debug!(client.ip = %conn.peer.ip(), error = %e, "Answer not sent whole");
                return;
            }
        }
        wire.idle();
    }
    // A TLS client reads close_notify; a plain one, the FIN. Bounded by the idle watchdog.
    let _ = std::future::poll_fn(|cx| Pin::new(&mut wire.io).poll_shutdown(cx)).await;
}

/// Serves one HTTP/1 connection on any byte stream, as the listener would but without its
/// connection limits and idle watchdog: for tests that drive the proxy without sockets
/// (over `tokio::io::duplex`) and for embedding. `stop` turns true when the server drains.
pub async fn serve_stream<IO>(
    io: IO,
    peer: std::net::SocketAddr,
    proxy: Arc<Proxy>,
    limits: Limits,
    stop: tokio::sync::watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Connection::new(peer, false, stop);
    serve(io, conn, proxy, limits, Arc::new(Activity::default())).await
}

/// What the answer to one request depends on.
struct Exchange {
    /// The request was `HEAD`: the answer has no body, whatever its headers say.
    head: bool,
    version: Version,
    /// Whether the connection may stay open after the answer, as far as the request goes.
    keep_alive: bool,
    /// Where the connection goes if this answer switches protocols.
    switch: Option<oneshot::Sender<Upgraded>>,
}

impl Exchange {
    /// The exchange of a request that was refused before it was read whole.
    fn refused() -> Exchange {
        Exchange {
            head: false,
            version: Version::HTTP_11,
            keep_alive: false,
            switch: None,
        }
    }
}

/// What to do after an answer.
enum AfterAnswer {
    KeepAlive,
    Close,
    Switch,
}

/// How a request body is being read off the connection.
struct Reading {
    feed: Option<Feed>,
    decoding: Decoding,
    /// `100 Continue` is owed when the body is first asked for: how much of it is written.
    expect_continue: Option<usize>,
    /// The body was read whole (or there was none).
    done: bool,
    /// The body was not what its head said, or the client left before its end.
    failed: bool,
    /// How many frames (and ends) were fed to the body so far.
    fed: u64,
}

enum Decoding {
    Length(u64),
    Chunked(chunked::Decoder),
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

impl Reading {
    fn none() -> Reading {
        Reading {
            feed: None,
            decoding: Decoding::Length(0),
            expect_continue: None,
            done: true,
            failed: false,
            fed: 0,
        }
    }

    fn of(framing: Framing, expect_continue: bool) -> (RequestBody, Reading) {
        let (length, decoding) = match framing {
            Framing::Empty => return (RequestBody::empty(), Reading::none()),
            Framing::Length(n) => (Some(n), Decoding::Length(n)),
            Framing::Chunked => (None, Decoding::Chunked(chunked::Decoder::new())),
        };
        let (body, feed) = body::channel(length);
        let reading = Reading {
            feed: Some(feed),
            decoding,
            expect_continue: expect_continue.then_some(0),
            done: false,
            failed: false,
            fed: 0,
        };
        (body, reading)
    }

    fn fail(&mut self, e: BodyError) {
        if let Some(feed) = &self.feed {
            feed.put(Err(e));
        }
        self.done = true;
        self.failed = true;
    }
}

/// The connection's bytes: what was read and not used, what is to be written.
struct Wire<IO> {
    io: IO,
    rbuf: BytesMut,
    out: Output,
    limits: Limits,
    /// The one timer of the connection, for request heads.
    timer: LazyDeadline,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Wire<IO> {
    /// Reads the next request head: `Ok(None)` when the connection is to close quietly
    /// (the client closed, the head took too long, the server drains while it waits).
    async fn read_head(&mut self, conn: &Connection) -> Result<Option<Head>, head::HeadError> {
        // As hyper does, the time runs from when a head is awaited, whether or not a byte of
        // it came yet: a kept-alive connection idles this long at most between requests.
        let deadline = Instant::now() + self.limits.header_read_timeout;
        loop {
            if !self.rbuf.is_empty() {
                if let Some(head) = head::parse(&mut self.rbuf, self.limits.max_header_bytes)? {
                    return Ok(Some(head));
                }
            }
            self.rbuf.reserve(if self.rbuf.is_empty() { FIRST_READ } else { HEAD_READ });
            let (io, rbuf, timer, stop) = (&mut self.io, &mut self.rbuf, &mut self.timer, &conn.stop);
            let read = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = poll_read_buf(io, cx, rbuf) {
                    return Poll::Ready(Some(r));
                }
                // A draining server closes a connection that waits for a head: the
                // watchdog polls it again when the drain begins.
                if *stop.borrow() || timer.expired(cx, deadline) {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await;
            match read {
                Some(Ok(n)) if n > 0 => {}
                Some(_) => return Ok(None),
                None => {
                    if !*conn.stop.borrow() && !self.rbuf.is_empty() {
                        tracing::debug!(client.ip = %conn.peer.ip(), "Request head not received in time");
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// Waits for the pipeline's answer, feeding it the body as it asks and watching the
    /// client: `None` when the client went away first.
    async fn until_answered<F>(&mut self, mut handling: Pin<&mut F>, reading: &mut Reading) -> Option<Response<Body>>
    where
        F: Future<Output = Response<Body>>,
    {
        std::future::poll_fn(|cx| {
            // The pipeline goes on at once with what the body was fed, rather than when the
            // task is woken again: a small body then goes upstream with its head.
            let body_ready = loop {
                if let Poll::Ready(r) = handling.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                let fed = reading.fed;
                let ready = self.poll_body(cx, reading).is_ready();
                if reading.fed == fed {
                    break ready;
                }
            };
            if body_ready && reading.done {
                // What the client sends now is its next request, kept for later, within
                // the head limit; its end means it is gone.
                while self.rbuf.len() < self.limits.max_header_bytes {
                    self.rbuf.reserve(1024);
                    match poll_read_buf(&mut self.io, cx, &mut self.rbuf) {
                        Poll::Ready(Ok(0) | Err(_)) if !reading.failed => return Poll::Ready(None),
                        Poll::Ready(Ok(0) | Err(_)) => break,
                        Poll::Ready(Ok(_)) => {}
                        Poll::Pending => break,
                    }
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Decodes the body as far as it is asked for; ready when nothing is left to do.
    fn poll_body(&mut self, cx: &mut Context<'_>, reading: &mut Reading) -> Poll<()> {
        loop {
            if reading.done {
                return Poll::Ready(());
            }
            let Some(feed) = &reading.feed else { return Poll::Ready(()) };
            match feed.room(cx, true) {
                Room::Wait => return Poll::Pending,
                Room::Dropped => {
                    // Nobody reads the rest: the connection closes after the answer.
                    reading.done = true;
                    reading.failed = true;
                    return Poll::Ready(());
                }
                Room::Frame => {}
            }
            // The client waits for leave to send its body: give it first.
            if let Some(written) = &mut reading.expect_continue {
                match poll_continue(&mut self.io, cx, written) {
                    Poll::Ready(Ok(())) => reading.expect_continue = None,
                    Poll::Ready(Err(_)) => {
                        reading.fail(BodyError::Incomplete);
                        return Poll::Ready(());
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if !self.rbuf.is_empty() {
                let Some(feed) = &reading.feed else { return Poll::Ready(()) };
                match &mut reading.decoding {
                    Decoding::Length(left) => {
                        let n = usize::try_from(*left).unwrap_or(usize::MAX).min(self.rbuf.len());
                        *left -= n as u64;
                        feed.put(Ok(self.rbuf.split_to(n).freeze()));
                        reading.fed += 1;
                        if *left == 0 {
                            feed.end();
                            reading.done = true;
                        }
                        continue;
                    }
                    Decoding::Chunked(decoder) => {
                        let step = decoder.decode(&self.rbuf);
                        let data = step.data.map(|r| {
                            self.rbuf.advance(r.start);
                            self.rbuf.split_to(r.len()).freeze()
                        });
                        if data.is_none() {
                            self.rbuf.advance(step.used);
                        }
                        if let Some(e) = decoder.error() {
                            reading.fail(e.into());
                            return Poll::Ready(());
                        }
                        if let Some(data) = data {
                            feed.put(Ok(data));
                            reading.fed += 1;
                            continue;
                        }
                        if decoder.is_done() {
                            feed.end();
                            reading.fed += 1;
                            reading.done = true;
                            continue;
                        }
                    }
                }
            }
            self.rbuf.reserve(BODY_READ);
            match poll_read_buf(&mut self.io, cx, &mut self.rbuf) {
                Poll::Ready(Ok(n)) if n > 0 => {}
                Poll::Ready(_) => {
                    reading.fail(BodyError::Incomplete);
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Writes `answer` to the client, feeding the request body meanwhile (an upstream may
    /// answer before it read all of it).
    async fn respond(&mut self, answer: Response<Body>, reading: &mut Reading, exchange: &Exchange) -> io::Result<AfterAnswer> {
        let (parts, mut body) = answer.into_parts();
        let status = parts.status;
        let switch = status == StatusCode::SWITCHING_PROTOCOLS && exchange.switch.is_some();
        let bodiless = exchange.head || status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let mut framing = if switch || bodiless {
            Out::Empty
        } else if body.is_end_stream() {
            Out::Length(0)
        } else {
            match body.size_hint().exact() {
                Some(n) => Out::Length(n),
                None if exchange.version == Version::HTTP_11 => Out::Chunked,
                None => Out::UntilClose,
            }
        };
        let closes = headers::asks_to_close(&parts.headers);
        let keep_alive = exchange.keep_alive && !closes && framing != Out::UntilClose;
        // The head.
        let tail = &mut self.out.tail;
        tail.reserve(256 + parts.headers.len() * 64);
        tail.put_slice(b"HTTP/1.1 ");
        tail.put_slice(status.as_str().as_bytes());
        tail.put_u8(b' ');
        tail.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
        tail.put_slice(b"\r\n");
        let mut has_date = false;
        for (name, value) in &parts.headers {
            let framing_header = *name == header::TRANSFER_ENCODING || (*name == header::CONTENT_LENGTH && !bodiless);
            if framing_header || (*name == header::CONNECTION && !switch) {
                continue;
            }
            has_date |= *name == header::DATE;
            put_header(tail, name.as_str().as_bytes(), value.as_bytes());
        }
        if !has_date {
            put_header(tail, b"date", &date::now());
        }
        match framing {
            Out::Length(n) => put_header(tail, b"content-length", itoa::Buffer::new().format(n).as_bytes()),
            Out::Chunked => put_header(tail, b"transfer-encoding", b"chunked"),
            Out::Empty | Out::UntilClose => {}
        }
        if !keep_alive && !switch {
            put_header(tail, b"connection", b"close");
        }
        tail.put_slice(b"\r\n");
        // The body.
        let mut ended = matches!(framing, Out::Empty | Out::Length(0));
        let mut broken = false;
        std::future::poll_fn(|cx| loop {
            // The next frame is gathered with what is to be written while that is small, so
            // that a head and a small body go in one write.
            let mut waiting = ended;
            if !ended && self.out.has_room() {
                match Pin::new(&mut body).poll_frame(cx) {
                    Poll::Ready(None) => {
                        match framing {
                            Out::Chunked => self.out.last_chunk(),
                            Out::Length(left) if left > 0 => return Poll::Ready(Err(short("the answer ended before its length"))),
                            _ => {}
                        }
                        ended = true;
                        continue;
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        // Trailers are not passed on.
                        let Ok(data) = frame.into_data() else { continue };
                        if data.is_empty() {
                            continue;
                        }
                        match &mut framing {
                            Out::Chunked => self.out.chunk(data),
                            Out::Length(left) => {
                                let n = data.len() as u64;
                                if n > *left {
                                    return Poll::Ready(Err(short("the answer is longer than its length")));
                                }
                                *left -= n;
                                self.out.data(data);
                            }
                            Out::UntilClose => self.out.data(data),
                            Out::Empty => {}
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // What came before it still goes out; then the connection ends.
                        tracing::debug!(error = %e, "Answer body failed");
                        broken = true;
                        ended = true;
                        continue;
                    }
                    Poll::Pending => waiting = true,
                }
            }
            if !self.out.is_empty() {
                match poll_write_out(&mut self.io, cx, &mut self.out) {
                    Poll::Ready(Ok(())) => continue,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        let _ = self.poll_body(cx, reading);
                        return Poll::Pending;
                    }
                }
            }
            if ended {
                return match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) if broken => Poll::Ready(Err(short("the answer's body failed"))),
                    other => other,
                };
            }
            if waiting {
                // Written whole: what is sent so far reaches the client while the rest comes.
                if let Poll::Ready(Err(e)) = Pin::new(&mut self.io).poll_flush(cx) {
                    return Poll::Ready(Err(e));
                }
                let _ = self.poll_body(cx, reading);
                return Poll::Pending;
            }
        })
        .await?;
        Ok(match () {
            _ if switch => AfterAnswer::Switch,
            _ if keep_alive => AfterAnswer::KeepAlive,
            _ => AfterAnswer::Close,
        })
    }

    /// Gives back what an idle connection need not keep: the read buffer, unless the next
    /// request's bytes are in it already (8 KiB a connection, against one allocation a
    /// request), and any write buffer that grew.
    fn idle(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        self.out.shrink(KEEP_IDLE);
    }
}

/// How an answer's body is framed to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

fn short(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Writes what is left of `100 Continue` past `written`, then flushes it.
fn poll_continue<IO: AsyncWrite + Unpin>(io: &mut IO, cx: &mut Context<'_>, written: &mut usize) -> Poll<io::Result<()>> {
    while *written < CONTINUE.len() {
        match Pin::new(&mut *io).poll_write(cx, &CONTINUE[*written..]) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => *written += n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    Pin::new(io).poll_flush(cx)
}

/// A timer that is moved lazily: the one timer of a connection serves every request head's
/// deadline, left where it is when the next deadline is later, and set again when it
/// fires early. It never fires late.
struct LazyDeadline(Pin<Box<tokio::time::Sleep>>);

impl LazyDeadline {
    /// A timer far in the future (about a year: tokio's wheel holds up to two).
    fn idle() -> LazyDeadline {
        LazyDeadline(Box::pin(tokio::time::sleep(Duration::from_secs(365 * 24 * 3600))))
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

/// The `Date` an answer without one is given: made at most once a second per thread.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_lazy_timer_is_never_late() {
        let mut t = LazyDeadline::idle();
        let start = Instant::now();
        let far = start + Duration::from_secs(30);
        let near = start + Duration::from_secs(5);
        std::future::poll_fn(|cx| {
            assert!(!t.expired(cx, far));
            assert!(!t.expired(cx, near));
            Poll::Ready(())
        })
        .await;
        tokio::time::advance(Duration::from_secs(6)).await;
        std::future::poll_fn(|cx| {
            assert!(t.expired(cx, near));
            assert!(!t.expired(cx, far), "a later deadline is not yet due");
            Poll::Ready(())
        })
        .await;
    }
}
