//! Upgrades (WebSocket and the like) passed through. An admitted HTTP/1.1 request that
//! asks to switch protocols ([`headers::is_upgrade`]) goes upstream on a connection of its
//! own, never the client connection's kept one nor the pool's. When the upstream answers
//! 101 with a protocol the client offered, both connections are handed over and a task
//! copies bytes both ways until either side closes, or until no byte has moved either way
//! for the route's `response_timeout`. Any other answer goes back as an ordinary response.
//!
//! The request was judged before it came here; what follows the switch is not HTTP, and
//! is not judged. That is why [`headers::is_upgrade`] refuses protocols that carry HTTP
//! requests (h2c, TLS): those would reach the upstream unjudged.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::body::Body;
use super::error::ProxyError;
use super::handover::OnUpgrade;
use super::headers;
use super::upstream::exchange::Switch;
use super::upstream::HttpTarget;
use crate::auth::Permit;
use crate::guard::connections::ConnectionSlot;
use crate::store::token_cache::TokenCache;
use tokio::sync::watch;

/// Whether a tunnel may go on: the token that admitted its request is still live (not
/// revoked, regenerated, rotated or expired since), and the server is not stopping. The
/// tunnel asks it every [`RECHECK`].
pub struct StillAdmitted {
    permit: Permit,
    tokens: Arc<TokenCache>,
    stop: watch::Receiver<bool>,
}

impl StillAdmitted {
    /// The standing of a tunnel opened on `permit`, judged against `tokens`, ended by `stop`.
    pub fn new(permit: Permit, tokens: Arc<TokenCache>, stop: watch::Receiver<bool>) -> StillAdmitted {
        StillAdmitted { permit, tokens, stop }
    }

    /// `Err` names why the tunnel must end.
    fn check(&self) -> Result<(), &'static str> {
        if *self.stop.borrow() {
            return Err("the server is stopping");
        }
        if !self.permit.still_live(&self.tokens, crate::clock::now()) {
            return Err("its token is no longer live");
        }
        Ok(())
    }
}

/// What a tunnel keeps while it lives: the client connection's place under the
/// listener's limits (none for a connection served without them), and its standing.
pub struct Tunnel {
    pub place: Option<Arc<ConnectionSlot>>,
    pub standing: StillAdmitted,
}

/// How often a tunnel asks whether its credential still stands.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Joins the client's connection to the upstream's when the upstream switched (`101`)
/// to a protocol the client offered (`offered`: the request's `Upgrade` values): answers
/// 101, and a task copies bytes both ways once the client's side has switched. Any other
/// answer goes back as it is.
pub(super) fn join(
    target: &HttpTarget,
    switched: Switch,
    offered: &[HeaderValue],
    client: OnUpgrade,
    tunnel_state: Tunnel,
) -> Result<Response<Body>, ProxyError> {
    let Tunnel { place, standing } = tunnel_state;
    let (head, upstream) = match switched {
        // The client's connection goes on as HTTP; this one closes when the body is read.
        Switch::Answer(response) => {
            let (mut parts, body) = response.into_parts();
            headers::prepare_response(&mut parts.headers);
            return Ok(Response::from_parts(parts, body));
        }
        Switch::Switched(head, upstream) => (head, upstream),
    };
    if !headers::upgrade_accepted(offered, &head.headers) {
        tracing::warn!(upstream = %target.authority, "Upstream switched to a protocol the client did not offer");
        return Err(ProxyError::UpstreamFailed);
    }
    let idle = target.response_timeout;
    let authority = target.authority.clone();
    tokio::spawn(async move {
        // The client's side is handed over once its 101 has passed; it may not take longer
        // than the idle limit to get there.
        match tokio::time::timeout(idle, client.upgraded()).await {
            Ok(Ok(client)) => tunnel(client, upstream, idle, Some(&standing)).await,
            Ok(Err(e)) => tracing::debug!(upstream = %authority, error = %e, "Upgrade not completed"),
            Err(_) => tracing::debug!(upstream = %authority, "Upgrade not completed in time"),
        }
        drop(place);
    });
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = head.headers;
    headers::prepare_upgrade_response(response.headers_mut());
    Ok(response)
}

/// Copies bytes both ways until both directions have ended, either side fails, nothing
/// has been read from either side for `idle`, or the credential no longer stands.
async fn tunnel<C, U>(client: C, upstream: U, idle: Duration, standing: Option<&StillAdmitted>)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    // Far enough for any real idle limit, near enough for the clock's arithmetic.
    let idle = idle.min(Duration::from_secs(100 * 365 * 86400));
    let mut recheck = tokio::time::interval(RECHECK);
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Active::new(client, started, last.clone());
    let mut upstream = Active::new(upstream, started, last.clone());
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let mut copy = std::pin::pin!(copy);
    loop {
        let deadline = started + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        tokio::select! {
            done = &mut copy => {
                match done {
                    Ok((up, down)) => tracing::debug!(bytes.up = up, bytes.down = down, "Upgraded connection ended"),
                    Err(e) => tracing::debug!(error = %e, "Upgraded connection ended with an error"),
                }
                return;
            }
            _ = recheck.tick(), if standing.is_some() => {
                if let Some(Err(reason)) = standing.map(StillAdmitted::check) {
                    tracing::info!(reason, "Upgraded connection closed");
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let quiet_since = started + Duration::from_millis(last.load(Ordering::Relaxed));
                if quiet_since.elapsed() >= idle {
                    tracing::debug!(idle_ms = idle.as_millis() as u64, "Upgraded connection idle; closed");
                    return;
                }
            }
        }
    }
}

/// A connection that notes, as milliseconds since `started`, when it last gave bytes.
struct Active<IO> {
    io: IO,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl<IO> Active<IO> {
    fn new(io: IO, started: Instant, last: Arc<AtomicU64>) -> Self {
        Active { io, started, last }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Active<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = self.started.elapsed().as_millis() as u64;
            self.last.store(ms, Ordering::Relaxed);
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Active<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn reads_on_either_side_keep_the_time_of_the_last() {
        let started = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Active::new(a, started, last.clone());
        tokio::time::advance(Duration::from_millis(1500)).await;
        b.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(a.read(&mut buf).await.unwrap(), 1);
        assert_eq!(last.load(Ordering::Relaxed), 1500);
        // Writing is not activity: a peer that only takes bytes does not hold a tunnel.
        tokio::time::advance(Duration::from_millis(500)).await;
        a.write_all(b"y").await.unwrap();
        assert_eq!(last.load(Ordering::Relaxed), 1500);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tunnel_copies_both_ways_and_closes_when_quiet() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let idle = Duration::from_secs(10);
        let task = tokio::spawn(tunnel(client, upstream, idle, None));
        let mut buf = [0u8; 8];
        for _ in 0..3 {
            // Traffic every 8 s keeps it open past the 10 s limit.
            tokio::time::sleep(Duration::from_secs(8)).await;
            client_peer.write_all(b"ping").await.unwrap();
            upstream_peer.read_exact(&mut buf[..4]).await.unwrap();
            assert_eq!(&buf[..4], b"ping");
            upstream_peer.write_all(b"pong").await.unwrap();
            client_peer.read_exact(&mut buf[..4]).await.unwrap();
            assert_eq!(&buf[..4], b"pong");
        }
        assert!(!task.is_finished());
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(task.is_finished());
        // Both peers see the tunnel close.
        assert_eq!(client_peer.read(&mut buf).await.unwrap(), 0);
        assert_eq!(upstream_peer.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_tunnel_ends_when_both_sides_close() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let task = tokio::spawn(tunnel(client, upstream, Duration::from_secs(3600), None));
        client_peer.write_all(b"bye").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        upstream_peer.shutdown().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }
}
