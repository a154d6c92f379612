//! The first stage of the request path: accepting connections on the proxy listener.
//!
//! A connection is admitted within the global and per-address limits, finishes its TLS
//! handshake in time (HTTP/2 or HTTP/1.1 by ALPN; plain TCP is HTTP/1.1), and is then
//! served with the limits below until it ends, falls idle, or the server drains: HTTP/1 by
//! patgate's own server ([`proxy::http1`]), HTTP/2 by hyper. Both hand each request to
//! [`Proxy::handle`](crate::proxy::Proxy::handle).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http_body_util::BodyExt;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::guard::client_addr::TrustedProxies;
use crate::guard::connections::{self, AddressGuard, PerAddress, TOO_MANY};
use crate::proxy::connection::{Activity, InFlight};
use crate::proxy::{self, Proxy};
use crate::server::tls::{ListenerTls, TlsSlot};

/// How the proxy listener accepts and serves connections, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// TLS, when the listener terminates it.
    pub tls: Option<ListenerTls>,
    /// The most connections open at once from one address (an IPv6 /64 counts as one).
    pub max_connections_per_ip: usize,
    /// A connection with no request in flight and no byte moving is closed after this.
    pub idle_timeout: Duration,
    /// The longest a client may take to send a request's headers (HTTP/1).
    pub header_read_timeout: Duration,
    /// The most bytes of request line and headers; for HTTP/2, of the header list.
    pub max_header_bytes: usize,
    pub http2: Http2Limits,
}

/// Limits on one HTTP/2 connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http2Limits {
    pub max_concurrent_streams: u32,
    /// Streams opened and reset by the client before being served (rapid reset).
    pub max_pending_resets: usize,
    /// Streams reset by the server for the client's protocol errors.
    pub max_local_error_resets: usize,
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
}

/// What every worker's accept loop shares: the limits and the current TLS configuration.
pub struct Listener {
    config: Config,
    /// One permit per open connection, across all workers.
    slots: Arc<Semaphore>,
    per_ip: Arc<PerAddress>,
    /// Load balancers: many clients share their address, so no per-address limit.
    trusted: ArcSwap<TrustedProxies>,
    tls: Option<TlsSlot>,
}

impl Listener {
    pub fn new(config: Config, max_connections: usize, trusted: TrustedProxies) -> Self {
        let tls = config.tls.as_ref().map(|t| TlsSlot::new(t.config.clone()));
        Listener {
            per_ip: Arc::new(PerAddress::new(config.max_connections_per_ip)),
            trusted: ArcSwap::from_pointee(trusted),
            slots: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            tls,
            config,
        }
    }

    /// The permits of all connections; every one back means every connection ended.
    pub fn slots(&self) -> &Arc<Semaphore> {
        &self.slots
    }

    /// Puts in the certificate of a reloaded configuration, for connections accepted from
    /// now on. False when the listener runs without TLS (turning it on needs a restart).
    pub fn replace_tls(&self, tls: &ListenerTls) -> bool {
        match &self.tls {
            Some(slot) => {
                slot.replace(tls.config.clone());
                true
            }
            None => false,
        }
    }

    /// Puts in the trusted proxies of a reloaded configuration.
    pub fn replace_trusted(&self, trusted: TrustedProxies) {
        self.trusted.store(Arc::new(trusted));
    }

    /// Connections open from `ip`'s address or /64 (for tests and metrics).
    pub fn connections_from(&self, ip: IpAddr) -> usize {
        self.per_ip.count(ip)
    }
}

/// How often a failing accept is logged.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// Accepts connections until `stop` turns true; each is served on this thread's loop.
pub async fn accept_loop(listener: TcpListener, proxy: Arc<Proxy>, shared: Arc<Listener>, stop: watch::Receiver<bool>) {
    let mut stopping = stop.clone();
    let mut shutdown = std::pin::pin!(stopping.wait_for(|&s| s));
    let (mut failed, mut last_warned) = (0u64, None);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => return,
            slot = shared.slots.clone().acquire_owned() => match slot { Ok(s) => s, Err(_) => return },
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin, and say
                    // so once in a while, not on every try.
                    failed += 1;
                    if last_warned.is_none_or(|t: std::time::Instant| t.elapsed() >= ACCEPT_WARN_EVERY) {
                        tracing::warn!(error = %e, failures = failed, "Accept failed");
                        last_warned = Some(std::time::Instant::now());
                        failed = 0;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve(tcp, peer, proxy.clone(), shared.clone(), slot, stop.clone()));
    }
}

async fn serve(
    mut tcp: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    shared: Arc<Listener>,
    slot: OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) {
    let per_ip = match shared.trusted.load().contains(peer.ip()) {
        true => None,
        false => Some(shared.per_ip.enter(peer.ip())),
    };
    if let Some(None) = per_ip {
        tracing::debug!(client.ip = %peer.ip(), "Too many connections from one address");
        if shared.tls.is_none() {
            let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(TOO_MANY)).await;
        }
        return;
    }
    let _open = OpenConnection::count();
    let config = &shared.config;
    // The connection's place in the limits; a WebSocket tunnel it turns into keeps it.
    let place: ConnectionSlot = connections::ConnectionSlot::new(slot, per_ip.flatten());
    let activity = Arc::new(Activity::default());
    let tcp = Metered {
        io: tcp,
        activity: activity.clone(),
    };
    match &shared.tls {
        None => {
            let conn = serve_http1(tcp, connection(peer, false, &stop), &proxy, config, &activity, &place);
            drive(conn, &activity, config.idle_timeout, false, &mut stop).await;
        }
        // Boxed: the handshake and HTTP/2 make a future of several KiB, which would be
        // copied for every plain connection too if it were part of this one.
        Some(tls) => Box::pin(serve_tls(tls, tcp, peer, &proxy, &shared, &activity, &place, &mut stop)).await,
    }
}

/// Serves a TLS connection: the handshake, then HTTP/2 or HTTP/1 as ALPN chose.
#[allow(clippy::too_many_arguments)]
async fn serve_tls(
    slot: &TlsSlot,
    tcp: Metered<TcpStream>,
    peer: SocketAddr,
    proxy: &Arc<Proxy>,
    shared: &Arc<Listener>,
    activity: &Arc<Activity>,
    place: &ConnectionSlot,
    stop: &mut watch::Receiver<bool>,
) {
    let config = &shared.config;
    let handshake_timeout = config.tls.as_ref().map_or(Duration::from_secs(10), |t| t.handshake_timeout);
    let tls = match tokio::time::timeout(handshake_timeout, slot.acceptor().accept(tcp)).await {
        Err(_) => {
            tracing::debug!(client.ip = %peer.ip(), "TLS handshake timed out");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(client.ip = %peer.ip(), error = %e, "TLS handshake failed");
            return;
        }
        Ok(Ok(tls)) => tls,
    };
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        let conn = serve_http2(tls, connection(peer, true, stop), proxy, shared, activity);
        drive(conn, activity, config.idle_timeout, true, stop).await;
    } else {
        let conn = serve_http1(tls, connection(peer, true, stop), proxy, config, activity, place);
        drive(conn, activity, config.idle_timeout, false, stop).await;
    }
}

/// Counts a connection in `patgate_connections_open` while it is served.
struct OpenConnection;

impl OpenConnection {
    fn count() -> OpenConnection {
        crate::telemetry::metrics::metrics().connections_open.inc();
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        crate::telemetry::metrics::metrics().connections_open.dec();
    }
}

/// A connection's place under the limits, shared with a tunnel it turns into.
type ConnectionSlot = Arc<connections::ConnectionSlot>;

/// The service every request on an HTTP/2 connection goes through: it counts the request
/// in flight while the proxy works on it, and each stream counts against
/// `server.max_connections` and its address's limit until its answer is sent, as nginx's
/// `limit_conn` counts them: one connection may not multiply itself past either.
fn service(
    proxy: &Arc<Proxy>,
    conn: proxy::Connection,
    activity: &Arc<Activity>,
    streams: Arc<Listener>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<proxy::Body>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<http::Response<proxy::Body>, std::convert::Infallible>> + Send,
> + Clone {
    let conn = Arc::new(conn);
    let proxy = proxy.clone();
    let activity = activity.clone();
    service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let proxy = proxy.clone();
        let conn = conn.clone();
        let activity = activity.clone();
        let busy = InFlight::new(&activity);
        let streams = streams.clone();
        async move {
            // A place in all (server.max_connections), then one under the address.
            let Ok(slot) = streams.slots.clone().try_acquire_owned() else {
                return Ok(proxy.refuse(&req, &conn, proxy::ProxyError::Busy));
            };
            let address = match streams.trusted.load().contains(conn.peer.ip()) {
                true => None,
                false => match streams.per_ip.enter(conn.peer.ip()) {
                    Some(g) => Some(g),
                    None => return Ok(proxy.refuse(&req, &conn, proxy::ProxyError::TooManyRequests)),
                },
            };
            let response = proxy.handle(req, &conn).await;
            drop(busy);
            // HTTP/2 answers count while their bodies are sent: pings alone do not keep a
            // connection open, answers being sent do.
            Ok(response.map(|body| Sending::new(body, &activity, Some((slot, address))).boxed_unsync()))
        }
    })
}

/// An answer's body being sent on an HTTP/2 connection: counted until sent or dropped.
struct Sending {
    body: proxy::Body,
    activity: Arc<Activity>,
    /// The stream's place under the limits.
    _counted: Option<(OwnedSemaphorePermit, Option<AddressGuard>)>,
}

impl Sending {
    fn new(body: proxy::Body, activity: &Arc<Activity>, counted: Option<(OwnedSemaphorePermit, Option<AddressGuard>)>) -> Self {
        activity.sending.fetch_add(1, Ordering::Relaxed);
        Sending {
            body,
            activity: activity.clone(),
            _counted: counted,
        }
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.activity.sending.fetch_sub(1, Ordering::Relaxed);
    }
}

impl http_body::Body for Sending {
    type Data = bytes::Bytes;
    type Error = proxy::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// What the request path is told of a new connection.
fn connection(peer: SocketAddr, tls: bool, stop: &watch::Receiver<bool>) -> proxy::Connection {
    proxy::Connection::new(peer, tls, stop.clone())
}

/// Serves HTTP/1 with patgate's own server ([`proxy::http1`]), which follows the drain
/// signal itself.
fn serve_http1<IO>(
    io: IO,
    conn: proxy::Connection,
    proxy: &Arc<Proxy>,
    config: &Config,
    activity: &Arc<Activity>,
    place: &ConnectionSlot,
) -> impl Drain
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = proxy::http1::Limits {
        header_read_timeout: config.header_read_timeout,
        max_header_bytes: config.max_header_bytes,
    };
    // A request that turns into a tunnel takes the connection's place with it.
    let conn = conn.with_place(place.clone());
    SelfDraining(Box::pin(proxy::http1::serve(io, conn, proxy.clone(), limits, activity.clone())))
}

/// A connection that follows the drain signal itself.
struct SelfDraining<F>(Pin<Box<F>>);

impl<F: Future<Output = ()>> Future for SelfDraining<F> {
    type Output = Result<(), hyper::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}

impl<F: Future<Output = ()>> Drain for SelfDraining<F> {
    fn drain(self: Pin<&mut Self>) {}
}

/// Serves HTTP/2 on `conn`. Streams of one connection run concurrently; none keeps an
/// upstream connection of its own.
fn serve_http2<IO>(io: IO, conn: proxy::Connection, proxy: &Arc<Proxy>, shared: &Arc<Listener>, activity: &Arc<Activity>) -> impl Drain
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    let h = &config.http2;
    http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(h.max_concurrent_streams)
        .max_header_list_size(config.max_header_bytes.min(u32::MAX as usize) as u32)
        .max_pending_accept_reset_streams(h.max_pending_resets)
        .max_local_error_reset_streams(h.max_local_error_resets)
        .keep_alive_interval(h.keep_alive_interval)
        .keep_alive_timeout(h.keep_alive_timeout)
        .serve_connection(TokioIo::new(io), service(proxy, conn, activity, shared.clone()))
}

/// A served connection that can be asked to finish what it is doing and close.
trait Drain: Future<Output = Result<(), hyper::Error>> {
    fn drain(self: Pin<&mut Self>);
}

impl<I, S, E> Drain for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Runs a connection until it ends. When the server drains, the connection finishes its
/// requests in flight and closes; when it has had no request in flight and no byte moving
/// for `idle`, it is dropped (a client that stopped reading its answer counts as idle).
///
/// On HTTP/2, where the client may keep bytes moving with pings alone, a connection with
/// no request in flight and no answer being sent for `idle` also ends (GOAWAY first).
async fn drive(conn: impl Drain, activity: &Activity, idle: Duration, multiplexed: bool, stop: &mut watch::Receiver<bool>) {
    let mut conn = std::pin::pin!(conn);
    let tick = (idle / 4).max(Duration::from_millis(50));
    let mut still = Duration::ZERO;
    let mut unused = Duration::ZERO;
    let mut draining = *stop.borrow();
    if draining {
        conn.as_mut().drain();
    }
    // The drain signal and the watchdog's tick each wake the task when they come; on every
    // other wake-up (the connection's, nearly all of them) they are only looked at, with a
    // read each, rather than polled again.
    let probe = stop.clone();
    let mut changed = std::pin::pin!(stop.changed());
    let mut timer = std::pin::pin!(tokio::time::sleep(tick));
    let mut registered = false;
    std::future::poll_fn(|cx| {
        if !registered {
            registered = true;
            let _ = changed.as_mut().poll(cx);
            let _ = timer.as_mut().poll(cx);
        }
        loop {
            if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "Connection ended with an error");
                }
                return Poll::Ready(());
            }
            if !draining && probe.has_changed().unwrap_or(true) {
                draining = true;
                conn.as_mut().drain();
                continue;
            }
            if !timer.is_elapsed() {
                return Poll::Pending;
            }
            let waiting = activity.in_flight.load(Ordering::Relaxed) > 0;
            let used = activity.used.swap(false, Ordering::Relaxed);
            if activity.moved.swap(false, Ordering::Relaxed) || waiting {
                still = Duration::ZERO;
            } else {
                still += tick;
                if still >= idle {
                    tracing::debug!("Idle connection closed");
                    return Poll::Ready(());
                }
            }
            if waiting || used || activity.sending.load(Ordering::Relaxed) > 0 {
                unused = Duration::ZERO;
            } else {
                unused += tick;
                if multiplexed && unused >= idle && !draining {
                    tracing::debug!("Unused HTTP/2 connection closed");
                    draining = true;
                    conn.as_mut().drain();
                }
            }
            timer.as_mut().reset(tokio::time::Instant::now() + tick);
            let _ = timer.as_mut().poll(cx);
        }
    })
    .await
}

/// A socket that notes when bytes move through it.
struct Metered<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO> Metered<IO> {
    fn moved(&self, n: usize) {
        if n > 0 {
            self.activity.moved.store(true, Ordering::Relaxed);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Metered<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.moved(buf.filled().len() - before);
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Metered<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.moved(n);
        }
        r
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.moved(n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
