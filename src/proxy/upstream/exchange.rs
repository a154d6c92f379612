//! **Exchange**: patgate's HTTP/1 client. A permitted request goes to an HTTP upstream, and
//! its answer comes back, here, in the task that serves the client: no channel and no task
//! of its own between the client's side and the upstream's.
//!
//! An exchange, in three steps:
//! 1. a connection: the client connection's own ([`KeptUpstream`]), else an idle one of the
//!    worker's [`Pool`], else a new one ([`Connector::open`]). A kept connection that the
//!    upstream closed while it idled is seen before the request goes (its end is read
//!    without waiting), and another is taken.
//! 2. the request head, written from the plan's parts, and its body (by `Content-Length`,
//!    or chunked), while the answer's head is read ([`answer::parse_final`]); interim
//!    `1xx` answers are skipped.
//! 3. the answer's body (`AnswerBody`), read as the client's side asks for it, by its
//!    length, chunked (the strict decoder requests have), or until close ([`BodyReader`]).
//!    The rest of the request's body goes on meanwhile, as an upstream may answer before
//!    it has read all of it. When the answer ends where its framing says, after the whole
//!    request went, the connection goes back where it came from; else it closes.
//!
//! A request without a body that a kept connection failed before any byte of its answer
//! came (the upstream closed it as the request went out) goes once more, on a new
//! connection, when its method is idempotent: as nginx retries.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{request, Method, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::answer::{self, AnswerError, AnswerFraming, AnswerHead, BodyReader, Piece};
use super::{Connector, HttpTarget, Stream};
use crate::proxy::body::{Body, BoxError};
use crate::proxy::error::ProxyError;
use crate::proxy::handover::Upgraded;
use crate::proxy::wire::{poll_read_buf, poll_write_out, put_header, Output};

/// A body of a known length up to this goes with its head, in one write: it is gathered
/// whole before anything is written (nginx gathers every body before it sends one).
const GATHER_UP_TO: u64 = 8 * 1024;
/// What a read asks room for: the answer's head, and its body.
const HEAD_READ: usize = 4 * 1024;
const BODY_READ: usize = 64 * 1024;

/// Which upstream a connection reaches: over TLS or not, and its authority.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    tls: bool,
    host: HeaderValue,
}

impl Key {
    fn of(target: &HttpTarget) -> Key {
        Key {
            tls: target.tls,
            host: target.host.clone(),
        }
    }
}

/// An open upstream connection between exchanges: it holds no buffer.
pub struct Conn {
    key: Key,
    io: Stream,
}

impl Conn {
    /// Whether the upstream closed it, or sent something unasked, while it idled: seen
    /// without waiting, from what the socket already has.
    fn is_stale(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        !matches!(Pin::new(&mut self.io).poll_read(&mut cx, &mut buf), Poll::Pending)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The upstream connection a client connection keeps for its next request: HTTP/1
/// requests on one connection come one after another, so one upstream connection serves
/// them all. It closes when the client connection does.
#[derive(Clone, Default)]
pub struct KeptUpstream(Arc<Mutex<Option<Conn>>>);

impl KeptUpstream {
    fn take(&self, key: &Key) -> Option<Conn> {
        // Another upstream's connection is closed: the next request will want this one's.
        lock(&self.0).take().filter(|c| c.key == *key)
    }

    fn put(&self, conn: Conn) {
        *lock(&self.0) = Some(conn);
    }
}

impl std::fmt::Debug for KeptUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeptUpstream")
    }
}

/// The worker's idle upstream connections, for requests whose client connection keeps
/// none (HTTP/2, and HTTP/1 requests that close their connection): each for
/// `upstream.pool_idle_timeout`, and `upstream.pool_max_idle_per_host` an upstream. That
/// many are kept when the sweep comes (once a second, the newest kept): a burst of answers
/// may bring more back for a moment, and closing those at once would mean opening as
/// many again for the next burst (HTTP/2 clients send ten streams at a time and more).
#[derive(Clone)]
pub struct Pool(Arc<PoolInner>);

struct PoolInner {
    idle: Mutex<Idle>,
    max_per_host: usize,
    timeout: Duration,
}

#[derive(Default)]
struct Idle {
    by_key: HashMap<Key, Vec<(Instant, Conn)>>,
    /// Whether a task closes the connections that idled too long.
    swept: bool,
}

impl Idle {
    /// Closes what idled past `timeout`, and the oldest past `max` an upstream; the newest
    /// are last in each list.
    fn sweep(&mut self, timeout: Duration, max: usize) {
        let now = Instant::now();
        self.by_key.retain(|_, list| {
            list.retain(|(since, _)| now.duration_since(*since) < timeout);
            let over = list.len().saturating_sub(max);
            list.drain(..over);
            !list.is_empty()
        });
    }
}

impl Pool {
    pub fn new(max_per_host: usize, timeout: Duration) -> Pool {
        Pool(Arc::new(PoolInner {
            idle: Mutex::default(),
            max_per_host,
            timeout,
        }))
    }

    fn take(&self, key: &Key) -> Option<Conn> {
        let mut idle = lock(&self.0.idle);
        let list = idle.by_key.get_mut(key)?;
        while let Some((since, conn)) = list.pop() {
            if since.elapsed() < self.0.timeout {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, conn: Conn) {
        if self.0.max_per_host == 0 {
            return;
        }
        let mut idle = lock(&self.0.idle);
        idle.by_key.entry(conn.key.clone()).or_default().push((Instant::now(), conn));
        if !idle.swept {
            idle.swept = true;
            self.sweep();
        }
    }

    /// A task that closes idle connections as they expire or overflow, while there are
    /// any, and ends with the pool.
    fn sweep(&self) {
        let pool = Arc::downgrade(&self.0);
        let every = (self.0.timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = pool.upgrade() else { return };
                let mut idle = lock(&pool.idle);
                idle.sweep(pool.timeout, pool.max_per_host);
                if idle.by_key.is_empty() {
                    idle.swept = false;
                    return;
                }
            }
        });
    }
}

/// Where an exchange's connection comes from and goes back to.
#[derive(Clone)]
enum Home {
    KeptUpstream(KeptUpstream, Pool),
    Pool(Pool),
    /// A connection of its own, closed after its one exchange (an upgrade request's).
    Nowhere,
}

impl Home {
    /// A kept connection to `key` that is still open, if there is one.
    fn take(&self, key: &Key) -> Option<Conn> {
        let (sticky, pool) = match self {
            Home::KeptUpstream(s, p) => (Some(s), p),
            Home::Pool(p) => (None, p),
            Home::Nowhere => return None,
        };
        let mut found = sticky.and_then(|s| s.take(key));
        loop {
            let mut conn = match found.take() {
                Some(conn) => conn,
                None => pool.take(key)?,
            };
            if !conn.is_stale() {
                return Some(conn);
            }
        }
    }

    fn put(&self, conn: Conn) {
        match self {
            Home::KeptUpstream(s, _) => s.put(conn),
            Home::Pool(p) => p.put(conn),
            Home::Nowhere => {}
        }
    }
}

/// Why an exchange failed before its answer's head.
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error("the upstream closed the connection before its answer")]
    Closed,
    #[error("{0}")]
    Io(io::Error),
    #[error("{0}")]
    Answer(AnswerError),
    /// The client's body failed: the client's side says why.
    #[error("the request's body failed: {0}")]
    Body(BoxError),
}

/// The request's body as it goes.
struct Sending {
    body: Body,
    chunked: bool,
    ended: bool,
    /// Nothing is written before the body ended: it is small and of a known length.
    gather: bool,
}

/// One request and its answer on one connection.
struct Exchange {
    conn: Conn,
    home: Home,
    upstream: Authority,
    /// What is to be written: the head, then the body as it comes.
    out: Output,
    /// The body, until all of it is written; `None` after.
    sending: Option<Sending>,
    /// The answer's bytes, read and not used.
    rbuf: BytesMut,
    max_head: usize,
    /// Whether any byte of the answer came.
    heard: bool,
    keep_alive: bool,
}

impl Exchange {
    fn new(conn: Conn, home: Home, target: &HttpTarget, parts: &request::Parts, body: Body, max_head: usize) -> Exchange {
        let mut out = Output::default();
        let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
        put_request_head(&mut out.tail, parts);
        let ended = body.is_end_stream();
        let gather = !chunked && body.size_hint().exact().is_some_and(|n| n <= GATHER_UP_TO);
        Exchange {
            conn,
            home,
            upstream: target.authority.clone(),
            out,
            sending: Some(Sending {
                body,
                chunked,
                ended,
                gather,
            }),
            rbuf: BytesMut::new(),
            max_head,
            heard: false,
            keep_alive: true,
        }
    }

    /// Writes the request as far as it can: ready when it is all written and flushed, or
    /// when writing failed.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failed>> {
        loop {
            let Some(sending) = &mut self.sending else {
                return Poll::Ready(Ok(()));
            };
            let mut waiting = sending.ended;
            if !sending.ended && (sending.gather || self.out.has_room()) {
                match Pin::new(&mut sending.body).poll_frame(cx) {
                    Poll::Ready(None) => {
                        if sending.chunked {
                            self.out.last_chunk();
                        }
                        sending.ended = true;
                        continue;
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        match frame.into_data() {
                            Ok(data) if data.is_empty() => {}
                            Ok(data) if sending.chunked => self.out.chunk(data),
                            Ok(data) => self.out.data(data),
                            // Trailers are not passed on.
                            Err(_) => {}
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Failed::Body(e))),
                    Poll::Pending => waiting = true,
                }
            }
            if sending.gather && !sending.ended {
                return Poll::Pending;
            }
            if !self.out.is_empty() {
                match poll_write_out(&mut self.conn.io, cx, &mut self.out) {
                    Poll::Ready(Ok(())) => continue,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Failed::Io(e))),
                    Poll::Pending => return Poll::Pending,
                }
            }
            // Written whole: what is written so far reaches the upstream while the rest comes.
            if let Poll::Ready(Err(e)) = Pin::new(&mut self.conn.io).poll_flush(cx) {
                return Poll::Ready(Err(Failed::Io(e)));
            }
            if sending.ended {
                self.sending = None;
                return Poll::Ready(Ok(()));
            }
            if waiting {
                return Poll::Pending;
            }
        }
    }

    /// Sends the request and reads up to the final answer's head.
    fn poll_head(&mut self, cx: &mut Context<'_>, to_head: bool) -> Poll<Result<AnswerHead, Failed>> {
        loop {
            match self.poll_send(cx) {
                // An upstream that answered may stop reading: its answer is still read.
                Poll::Ready(Err(Failed::Io(e))) if self.heard => self.stop_sending(&e),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                _ => {}
            }
            if !self.rbuf.is_empty() {
                match answer::parse_final(&self.rbuf, self.max_head, to_head) {
                    Err(e) => return Poll::Ready(Err(Failed::Answer(e))),
                    Ok(Some((len, head))) => {
                        self.rbuf.advance(len);
                        self.keep_alive &= head.keep_alive;
                        return Poll::Ready(Ok(head));
                    }
                    Ok(None) => {}
                }
            }
            self.rbuf.reserve(HEAD_READ);
            match poll_read_buf(&mut self.conn.io, cx, &mut self.rbuf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(Failed::Closed)),
                Poll::Ready(Ok(_)) => self.heard = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Failed::Io(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Sends no more of the request, which the upstream no longer reads; the connection
    /// closes after the answer.
    fn stop_sending(&mut self, e: &io::Error) {
        tracing::debug!(upstream = %self.upstream, error = %e, "Upstream stopped reading the request");
        self.sending = None;
        self.out = Output::default();
        self.keep_alive = false;
    }

    /// The connection goes back where it came from when all of the request went, the
    /// answer ended where its framing said, and nothing followed it; else it closes.
    fn end(self) {
        if self.keep_alive && self.sending.is_none() && self.rbuf.is_empty() {
            self.home.put(self.conn);
        }
    }
}

/// The request line and headers, as they go upstream: origin form, HTTP/1.1.
fn put_request_head(out: &mut BytesMut, parts: &request::Parts) {
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let size = parts.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>();
    out.reserve(parts.method.as_str().len() + target.len() + 13 + size + 2);
    out.put_slice(parts.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.put_slice(b"\r\n");
}

/// Methods whose request may be sent twice with the effect of once (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Opens connections and keeps the idle ones: the one way patgate's requests reach HTTP
/// upstreams.
pub(super) struct Client {
    pub(super) connector: Connector,
    pool: Pool,
    max_head: usize,
}

impl Client {
    pub(super) fn new(connector: Connector, pool: Pool, max_head: usize) -> Client {
        Client { connector, pool, max_head }
    }

    async fn open(&self, target: &HttpTarget, key: Key) -> Result<Conn, ProxyError> {
        let io = self
            .connector
            .open(target.tls, &target.authority)
            .await
            .map_err(|_| ProxyError::UpstreamUnreachable)?;
        Ok(Conn { key, io })
    }

    /// Sends `parts` (origin form, framing headers set) and `body` to `target`, on the
    /// client connection's own connection when it keeps one (`sticky`), and gives back the
    /// answer, its body still to read.
    pub(super) async fn exchange(
        &self,
        target: &HttpTarget,
        sticky: Option<&KeptUpstream>,
        parts: &request::Parts,
        body: Body,
    ) -> Result<Response<Body>, ProxyError> {
        let key = Key::of(target);
        let home = match sticky {
            Some(s) => Home::KeptUpstream(s.clone(), self.pool.clone()),
            None => Home::Pool(self.pool.clone()),
        };
        let to_head = parts.method == Method::HEAD;
        let retriable = body.is_end_stream() && is_idempotent(&parts.method);
        let mut body = Some(body);
        loop {
            let (conn, reused) = match home.take(&key) {
                Some(conn) => (conn, true),
                None => (self.open(target, key.clone()).await?, false),
            };
            let body = body.take().unwrap_or_else(empty);
            let mut ex = Exchange::new(conn, home.clone(), target, parts, body, self.max_head);
            let e = match std::future::poll_fn(|cx| ex.poll_head(cx, to_head)).await {
                Ok(head) if head.status == StatusCode::SWITCHING_PROTOCOLS => {
                    tracing::warn!(upstream = %target.authority, "Upstream switched protocols unasked");
                    return Err(ProxyError::UpstreamFailed);
                }
                Ok(head) => return Ok(answer(ex, head)),
                Err(e) => e,
            };
            match e {
                Failed::Closed | Failed::Io(_) if reused && retriable && !ex.heard => {
                    tracing::debug!(upstream = %target.authority, error = %e, "Kept upstream connection failed; sending again on a new one");
                }
                Failed::Body(e) => {
                    tracing::debug!(error = %e, "Request body failed");
                    return Err(ProxyError::UpstreamFailed);
                }
                e => {
                    tracing::warn!(upstream = %target.authority, error = %e, "Upstream failed");
                    return Err(ProxyError::UpstreamFailed);
                }
            }
        }
    }
}

/// What an upgrade request got.
pub(crate) enum Switch {
    /// `101`: its head, and the upstream's connection, the bytes read past the head first.
    Switched(AnswerHead, Upgraded),
    /// Any other answer, to go back as it is; its connection closes after it.
    Answer(Response<Body>),
}

impl Client {
    /// Sends an upgrade request (`parts` in origin form, headers prepared) on a new
    /// connection of its own, and reads the answer's head.
    pub(crate) async fn switch(&self, target: &HttpTarget, parts: &request::Parts, body: Body) -> Result<Switch, ProxyError> {
        let conn = self.open(target, Key::of(target)).await?;
        let mut ex = Exchange::new(conn, Home::Nowhere, target, parts, body, self.max_head);
        match std::future::poll_fn(|cx| ex.poll_head(cx, false)).await {
            // Everything the request holds went before the switch.
            Ok(head) if head.status == StatusCode::SWITCHING_PROTOCOLS && ex.sending.is_none() => {
                let pre = ex.rbuf.split().freeze();
                Ok(Switch::Switched(head, Upgraded::new(pre, Box::new(ex.conn.io))))
            }
            Ok(head) if head.status == StatusCode::SWITCHING_PROTOCOLS => {
                tracing::warn!(upstream = %target.authority, "Upstream switched protocols before the request's body was sent");
                Err(ProxyError::UpstreamFailed)
            }
            Ok(head) => Ok(Switch::Answer(answer(ex, head))),
            Err(Failed::Body(e)) => {
                tracing::debug!(error = %e, "Request body failed");
                Err(ProxyError::UpstreamFailed)
            }
            Err(e) => {
                tracing::warn!(upstream = %target.authority, error = %e, "Upstream failed");
                Err(ProxyError::UpstreamFailed)
            }
        }
    }
}

fn empty() -> Body {
    use http_body_util::BodyExt;
    http_body_util::Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// The answer, with the rest of the exchange in its body.
fn answer(ex: Exchange, head: AnswerHead) -> Response<Body> {
    let AnswerHead {
        status,
        version,
        mut headers,
        framing,
        ..
    } = head;
    if framing == AnswerFraming::Chunked {
        headers.remove(header::CONTENT_LENGTH);
    }
    let body = match BodyReader::of(framing) {
        None => {
            ex.end();
            empty()
        }
        Some(reading) => Body::new(AnswerBody {
            ex: Some(Box::new(ex)),
            reading,
        }),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    response
}

/// An answer's body, read from its upstream connection as it is asked for, while the rest
/// of the request goes; the connection goes back when it ends.
struct AnswerBody {
    ex: Option<Box<Exchange>>,
    reading: BodyReader,
}

fn invalid(what: String) -> BoxError {
    io::Error::new(io::ErrorKind::InvalidData, what).into()
}

impl AnswerBody {
    fn end(&mut self) {
        if let Some(ex) = self.ex.take() {
            ex.end();
        }
    }

    /// A failure: logged with the upstream, and the connection closes.
    fn fail(&mut self, e: BoxError) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
        if let Some(ex) = self.ex.take() {
            tracing::warn!(upstream = %ex.upstream, error = %e, "Upstream answer body failed");
        }
        Poll::Ready(Some(Err(e)))
    }
}

impl http_body::Body for AnswerBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(ex) = this.ex.as_mut() else { return Poll::Ready(None) };
            match ex.poll_send(cx) {
                Poll::Ready(Err(Failed::Body(e))) => {
                    // The client's side ends the connection; the upstream's closes.
                    this.ex = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Err(Failed::Io(e))) => ex.stop_sending(&e),
                _ => {}
            }
            match this.reading.next(&mut ex.rbuf) {
                Piece::Data(data) => {
                    if this.reading.left() == Some(0) {
                        this.end();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Piece::End => {
                    this.end();
                    return Poll::Ready(None);
                }
                Piece::Failed(e) => return this.fail(invalid(format!("the answer's chunked body: {e}"))),
                Piece::More => {}
            }
            let room = this.reading.left().map_or(BODY_READ, |left| (left as usize).clamp(1, BODY_READ));
            ex.rbuf.reserve(room);
            match poll_read_buf(&mut ex.conn.io, cx, &mut ex.rbuf) {
                Poll::Ready(Ok(0)) if this.reading.ends_at_close() => {
                    this.ex = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => return this.fail(invalid("the upstream closed the connection before the answer's end".into())),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(e.into()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ex.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.reading.left() {
            Some(left) => SizeHint::with_exact(left),
            None if self.ex.is_none() => SizeHint::with_exact(0),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn conns(n: usize) -> (Vec<Conn>, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let key = Key {
            tls: false,
            host: HeaderValue::from_str(&addr.to_string()).unwrap(),
        };
        let mut out = Vec::new();
        for _ in 0..n {
            let io = Stream::Plain(tokio::net::TcpStream::connect(addr).await.unwrap());
            out.push(Conn { key: key.clone(), io });
        }
        (out, listener)
    }

    fn idle(pool: &Pool) -> usize {
        lock(&pool.0.idle).by_key.values().map(Vec::len).sum()
    }

    #[tokio::test]
    async fn a_burst_stays_pooled_until_the_sweep_keeps_the_newest() {
        let (five, _listener) = conns(5).await;
        let key = five[0].key.clone();
        let pool = Pool::new(2, Duration::from_secs(60));
        for c in five {
            pool.put(c);
        }
        assert_eq!(idle(&pool), 5, "a burst is not closed at once");
        lock(&pool.0.idle).sweep(pool.0.timeout, pool.0.max_per_host);
        assert_eq!(idle(&pool), 2);
        assert!(pool.take(&key).is_some() && pool.take(&key).is_some() && pool.take(&key).is_none());
        // With no room at all, nothing is kept.
        let (mut one, _l) = conns(1).await;
        let none = Pool::new(0, Duration::from_secs(60));
        none.put(one.pop().unwrap());
        assert_eq!(idle(&none), 0);
    }

    #[tokio::test]
    async fn idle_connections_expire() {
        let (mut one, _listener) = conns(1).await;
        let key = one[0].key.clone();
        let pool = Pool::new(4, Duration::from_millis(50));
        pool.put(one.pop().unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Closed by the sweep task, or refused by take: never handed out.
        assert!(pool.take(&key).is_none());
        assert_eq!(idle(&pool), 0);
    }
}
