//! Forwarding a permitted request to an HTTP upstream (`HttpClient::forward`): on the
//! client connection's own upstream connection, the worker's pool, or for an upgrade a
//! connection of its own.

use bytes::Bytes;
use http::{Response, Uri};
use http_body_util::BodyExt;

use super::exchange::{self, Switch};
use super::{Config, Connector, HttpTarget};
use crate::proxy::body::{Body, BoxError};
use crate::proxy::error::ProxyError;
use crate::proxy::handover::OnUpgrade;
use crate::proxy::headers;
use crate::proxy::plan::Plan;

/// The client for HTTP upstreams: a connector, and the pool of idle connections.
pub struct HttpClient {
    client: exchange::Client,
}

impl HttpClient {
    /// Builds the client.
    pub fn new(config: &Config) -> Self {
        let pool = exchange::Pool::new(config.pool_max_idle_per_host, config.pool_idle_timeout);
        HttpClient {
            client: exchange::Client::new(Connector::new(config), pool, config.max_response_head_bytes),
        }
    }

    /// The connector every upstream connection is opened with.
    pub fn connector(&self) -> &Connector {
        &self.client.connector
    }

    /// Sends a permitted request (its [`Plan`]) to `target` and streams the answer back. An HTTP/1.1
    /// upgrade request (see [`headers::is_upgrade`]) goes on a connection of its own and,
    /// when the upstream switches protocols, becomes a tunnel ([`upgrade`]).
    pub(crate) async fn forward<B>(&self, target: &HttpTarget, plan: Plan<'_>, body: B) -> Result<Forwarded, ProxyError>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let sticky = plan.sticky();
        let (mut parts, path, permit) = plan.into_request();
        let path = &path;
        let pq = target.path_and_query(&parts.uri, path)?;
        // patgate's HTTP/1 server puts the client connection's upgrade here for HTTP/1.1
        // requests that ask for one; only those may go upstream asking for one.
        let client_upgrade = parts.extensions.remove::<OnUpgrade>();
        let upgrade = match client_upgrade {
            Some(on) if parts.version == http::Version::HTTP_11 && headers::is_upgrade(&parts.headers) => Some(on),
            _ => {
                headers::drop_upgrade(&mut parts.headers);
                None
            }
        };
        parts.uri = Uri::from(pq);
        parts.version = http::Version::HTTP_11;
        // The upstream serves the route's host; the client's stays in X-Forwarded-Host.
        parts.headers.insert(http::header::HOST, target.host.clone());
        // A body of no known length goes chunked, whatever the method; one of a known
        // length says it.
        if !body.is_end_stream() {
            match body.size_hint().exact() {
                None => {
                    parts.headers.remove(http::header::CONTENT_LENGTH);
                    parts
                        .headers
                        .insert(http::header::TRANSFER_ENCODING, http::HeaderValue::from_static("chunked"));
                }
                Some(n) => {
                    parts.headers.insert(http::header::CONTENT_LENGTH, n.into());
                }
            }
        }
        let body = body.map_err(Into::into).boxed_unsync();
        if let Some(client) = upgrade {
            let offered: Vec<_> = parts.headers.get_all(http::header::UPGRADE).iter().cloned().collect();
            let switched = match tokio::time::timeout(target.response_timeout, self.client.switch(target, &parts, body)).await {
                Err(_) => return Err(ProxyError::UpstreamTimeout(target.response_timeout)),
                Ok(r) => r?,
            };
            return Ok(Forwarded::Switch {
                switched,
                offered,
                client,
                permit,
            });
        }
        let sent = self.client.exchange(target, sticky, &parts, body);
        let response = match tokio::time::timeout(target.response_timeout, sent).await {
            Err(_) => return Err(ProxyError::UpstreamTimeout(target.response_timeout)),
            Ok(r) => r?,
        };
        let (mut parts, body) = response.into_parts();
        headers::prepare_response(&mut parts.headers);
        Ok(Forwarded::Answer(Response::from_parts(parts, body)))
    }
}

/// What forwarding a request gave: the upstream's answer, or for an upgrade request the
/// upstream's switch (or its refusal) to be joined to the client's connection
/// ([`crate::proxy::upgrade::join`]), with what the tunnel needs.
pub(crate) enum Forwarded {
    Answer(Response<Body>),
    Switch {
        switched: Switch,
        /// The protocols the client offered (its `Upgrade` values).
        offered: Vec<http::HeaderValue>,
        /// The client's connection, once its `101` is written.
        client: OnUpgrade,
        /// The permit of the request, which the tunnel's standing is judged by.
        permit: crate::auth::Permit,
    },
}
