//! **Plan**: what goes upstream, made from the [`Permit`] that admission returned and from
//! nothing else of the caller's. The upstream's request headers are rewritten here, once
//! ([`headers::prepare_upstream`]): the credential and every client-sent identity or
//! forwarding header go, and patgate's own identity headers are made from the permit.
//! Forwarding (`HttpClient::forward` of [`super::upstream::forward`], [`super::cgi::Runner::run`])
//! takes a `Plan`, so no request can reach an upstream without a permit.

use std::net::{IpAddr, SocketAddr};

use http::{header, request, HeaderValue};

use super::connection::Connection;
use super::headers;
use super::http1::body::Watch;
use super::upstream::exchange::KeptUpstream;
use crate::auth::rules::NormalizedPath;
use crate::auth::Permit;

/// A permitted request, ready for its upstream.
pub struct Plan<'c> {
    parts: request::Parts,
    path: NormalizedPath,
    permit: Permit,
    client: SocketAddr,
    sticky: Option<&'c KeptUpstream>,
}

impl<'c> Plan<'c> {
    /// The plan of a request admitted on `permit`, for `path` as normalized, from `client`
    /// (through trusted proxies), that came on `conn`.
    pub(super) fn new(path: NormalizedPath, permit: Permit, client: IpAddr, mut parts: request::Parts, conn: &'c Connection) -> Plan<'c> {
        // A client connection that stays open keeps its own upstream connection; one that
        // ends with this request borrows from the worker's pool.
        let keeps = parts.version == http::Version::HTTP_11 && !headers::asks_to_close(&parts.headers);
        // HTTP/2 names the host in the request target only (judged by admission, with no
        // userinfo); the upstream is told it as usual.
        if !parts.headers.contains_key(header::HOST) {
            if let Some(host) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                parts.headers.insert(header::HOST, host);
            }
        }
        headers::prepare_upstream(&mut parts.headers, &permit, &conn.forwarded_for(client), conn.tls);
        Plan {
            parts,
            path,
            permit,
            client: SocketAddr::new(client, conn.peer.port()),
            sticky: keeps.then_some(&conn.upstream),
        }
    }

    /// On whose authority the request goes.
    pub fn permit(&self) -> &Permit {
        &self.permit
    }

    /// The path the rules judged, which the upstream is asked for.
    pub fn path(&self) -> &NormalizedPath {
        &self.path
    }

    /// The client's address (through trusted proxies) and port.
    pub fn client(&self) -> SocketAddr {
        self.client
    }

    /// The client connection's own upstream connection, when it keeps one.
    pub fn sticky(&self) -> Option<&'c KeptUpstream> {
        self.sticky
    }

    /// The request as it goes upstream.
    pub fn parts(&self) -> &request::Parts {
        &self.parts
    }

    /// Why the request's body failed, for HTTP/1 requests with one.
    pub(super) fn body_fault(&self) -> Option<Watch> {
        self.parts.extensions.get::<Watch>().cloned()
    }

    /// The request's parts, path and permit, to send: the plan is used up.
    pub fn into_request(self) -> (request::Parts, NormalizedPath, Permit) {
        (self.parts, self.path, self.permit)
    }
}
