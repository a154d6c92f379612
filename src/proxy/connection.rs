//! What is known of the connection a request came on ([`Connection`]), shared by the
//! servers that read requests and the stages that handle them, and whether it is doing
//! anything ([`Activity`]), for the idle watchdog of [`crate::server::accept`].

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use http::HeaderValue;

use super::{headers, upstream};
use crate::auth;
use crate::guard::connections::ConnectionSlot;

/// What is known of the connection a request came on.
#[derive(Debug)]
pub struct Connection {
    pub peer: SocketAddr,
    /// The peer's address as a header value, made once for every request that names it.
    pub peer_ip: HeaderValue,
    /// The credential its last admitted request carried.
    pub credential: auth::LastCredential,
    /// The HTTP upstream connection this client connection keeps between its requests.
    pub upstream: upstream::exchange::KeptUpstream,
    /// Whether the client came over TLS.
    pub tls: bool,
    /// Turns true when the server drains.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Its place under the listener's limits, when it has one: a tunnel it turns into
    /// keeps it.
    pub place: Option<Arc<ConnectionSlot>>,
}

impl Connection {
    /// A new connection from `peer`; `stop` turns true when the server drains.
    pub fn new(peer: SocketAddr, tls: bool, stop: tokio::sync::watch::Receiver<bool>) -> Connection {
        Connection {
            peer,
            peer_ip: headers::ip_value(peer.ip()),
            credential: Default::default(),
            upstream: Default::default(),
            tls,
            stop,
            place: None,
        }
    }

    /// The connection, holding `place` under the listener's limits.
    pub fn with_place(self, place: Arc<ConnectionSlot>) -> Connection {
        Connection {
            place: Some(place),
            ..self
        }
    }

    /// The client's address as the upstream is told it (`X-Forwarded-For`): the peer's,
    /// made once, or the one trusted proxies named.
    pub fn forwarded_for(&self, client: IpAddr) -> Cow<'_, HeaderValue> {
        match client == self.peer.ip() {
            true => Cow::Borrowed(&self.peer_ip),
            false => Cow::Owned(headers::ip_value(client)),
        }
    }
}

/// Whether a connection is doing anything: requests in flight, and whether a byte moved
/// since the watchdog last looked.
#[derive(Debug, Default)]
pub struct Activity {
    pub(crate) moved: AtomicBool,
    /// Requests whose answer is not ready yet (waiting on the upstream is not idling).
    pub(crate) in_flight: AtomicUsize,
    /// Whether a request started since the watchdog last looked.
    pub(crate) used: AtomicBool,
    /// HTTP/2 answers whose bodies are being sent.
    pub(crate) sending: AtomicUsize,
}

/// Counts a request in flight for as long as it lives.
pub(crate) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(crate) fn new(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.used.store(true, Ordering::Relaxed);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
