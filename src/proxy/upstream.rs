//! Upstreams: where a route sends what it admits. An HTTP upstream is reached through
//! one pooled hyper client; bodies stream both ways and are never buffered whole.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{request, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::{headers, Body, BoxError, ProxyError};
use crate::auth::rules::NormalizedPath;
use crate::auth::Permit;

/// Settings shared by every HTTP upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

/// Where a route forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// An HTTP server.
    Http(HttpTarget),
    /// `git http-backend` run as CGI over the bare repositories under this folder.
    GitHttpBackend(PathBuf),
}

/// An HTTP upstream: scheme and authority, an optional path prefix, and how long to
/// wait for its response headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub authority: Authority,
    pub prefix: String,
    pub response_timeout: Duration,
}

/// The prefix of the built-in git upstream.
pub const GIT_HTTP_BACKEND: &str = "git-http-backend:";

impl Upstream {
    /// Parses `http://host:port[/prefix]` or `git-http-backend:DIR`.
    pub fn parse(text: &str, response_timeout: Duration) -> Result<Upstream, String> {
        if let Some(dir) = text.strip_prefix(GIT_HTTP_BACKEND) {
            if dir.is_empty() {
                return Err("names no repository folder".into());
            }
            return Ok(Upstream::GitHttpBackend(PathBuf::from(dir)));
        }
        let uri: Uri = text.parse().map_err(|_| "is not a URL".to_string())?;
        match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => {}
            Some(s) if *s == Scheme::HTTPS => {
                return Err("https upstreams are not supported yet; use http:// or git-http-backend:DIR".into())
            }
            _ => return Err("use http://HOST:PORT or git-http-backend:DIR".into()),
        }
        let authority = uri.authority().cloned().ok_or("has no host")?;
        if uri.query().is_some() {
            return Err("may not have a query".into());
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Upstream::Http(HttpTarget {
            authority,
            prefix,
            response_timeout,
        }))
    }
}

/// The upstream connection a client connection keeps for its next request: HTTP/1
/// requests on one connection come one after another, so one upstream connection serves
/// them all, with no pool to consult. It closes when the client connection does.
#[derive(Default)]
pub struct Sticky(Mutex<Option<(Authority, SendRequest<Body>)>>);

impl Sticky {
    fn take(&self, authority: &Authority) -> Option<SendRequest<Body>> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some((a, s)) if a == *authority && !s.is_closed() => Some(s),
            _ => None,
        }
    }

    fn put(&self, authority: Authority, sender: SendRequest<Body>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((authority, sender));
    }
}

impl std::fmt::Debug for Sticky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sticky")
    }
}

/// The pooled client for HTTP upstreams.
pub struct HttpClient {
    client: Client<HttpConnector, Body>,
    connect_timeout: Duration,
}

impl HttpClient {
    /// Builds the client.
    pub fn new(config: &Config) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .build(connector);
        HttpClient {
            client,
            connect_timeout: config.connect_timeout,
        }
    }

    /// Opens a new HTTP/1 connection to `target`; its driver runs as a task of its own.
    async fn connect(&self, target: &HttpTarget) -> Result<SendRequest<Body>, ProxyError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            tracing::warn!(upstream = %target.authority, error = %e, "Upstream unreachable");
            ProxyError::UpstreamUnreachable
        };
        let addr = target.authority.as_str();
        let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(unreachable(&"connect timed out")),
            Ok(Err(e)) => return Err(unreachable(&e)),
            Ok(Ok(t)) => t,
        };
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| unreachable(&e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "Upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends on the client connection's own upstream connection, opening it when there is
    /// none. A request that a reused connection turned away unsent (it had just closed)
    /// goes once more on a new one.
    async fn send_sticky(&self, sticky: &Sticky, target: &HttpTarget, mut req: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        // On a connection of its own the request goes in origin form, as the pool sends it.
        let origin = req
            .uri()
            .path_and_query()
            .cloned()
            .map(Uri::from)
            .ok_or(ProxyError::UpstreamFailed)?;
        *req.uri_mut() = origin;
        let failed = |e: &dyn std::fmt::Display| {
            tracing::warn!(upstream = %target.authority, error = %e, "Upstream failed");
            ProxyError::UpstreamFailed
        };
        let (mut sender, reused) = match sticky.take(&target.authority) {
            Some(s) => (s, true),
            None => (self.connect(target).await?, false),
        };
        if sender.ready().await.is_err() {
            sender = self.connect(target).await?;
            sender.ready().await.map_err(|e| failed(&e))?;
        }
        let response = match sender.try_send_request(req).await {
            Ok(r) => r,
            Err(mut e) if reused => match e.take_message() {
                Some(req) => {
                    sender = self.connect(target).await?;
                    sender.ready().await.map_err(|e| failed(&e))?;
                    sender.send_request(req).await.map_err(|e| failed(&e))?
                }
                None => return Err(failed(e.error())),
            },
            Err(e) => return Err(failed(e.error())),
        };
        sticky.put(target.authority.clone(), sender);
        Ok(response)
    }

    /// Sends a permitted request to `target` and streams the answer back.
    pub async fn forward<B>(
        &self,
        target: &HttpTarget,
        mut parts: request::Parts,
        body: B,
        path: &NormalizedPath,
        _permit: &Permit,
        sticky: Option<&Sticky>,
    ) -> Result<Response<Body>, ProxyError>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let pq = match parts.uri.query() {
            Some(q) => format!("{}{}?{q}", target.prefix, path.as_str()),
            None => format!("{}{}", target.prefix, path.as_str()),
        };
        let pq = PathAndQuery::try_from(pq).map_err(|_| ProxyError::UpstreamFailed)?;
        parts.uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(target.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| ProxyError::UpstreamFailed)?;
        parts.version = http::Version::HTTP_11;
        // The upstream serves the route's host; the client's stays in X-Forwarded-Host.
        let host = http::HeaderValue::from_str(target.authority.as_str()).map_err(|_| ProxyError::UpstreamFailed)?;
        parts.headers.insert(http::header::HOST, host);
        let req = Request::from_parts(parts, body.map_err(Into::into).boxed_unsync());
        let sent = async {
            match sticky {
                Some(sticky) => self.send_sticky(sticky, target, req).await,
                None => self.client.request(req).await.map_err(|e| {
                    if e.is_connect() {
                        tracing::warn!(upstream = %target.authority, error = %e, "Upstream unreachable");
                        ProxyError::UpstreamUnreachable
                    } else {
                        tracing::warn!(upstream = %target.authority, error = %e, "Upstream failed");
                        ProxyError::UpstreamFailed
                    }
                }),
            }
        };
        let response = match tokio::time::timeout(target.response_timeout, sent).await {
            Err(_) => return Err(ProxyError::UpstreamTimeout(target.response_timeout)),
            Ok(r) => r?,
        };
        let (mut parts, body) = response.into_parts();
        headers::prepare_response(&mut parts.headers);
        Ok(Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_parse() {
        let t = Duration::from_secs(1);
        assert_eq!(
            Upstream::parse("git-http-backend:data/repos", t),
            Ok(Upstream::GitHttpBackend("data/repos".into()))
        );
        let Upstream::Http(h) = Upstream::parse("http://127.0.0.1:9000/base/", t).unwrap() else {
            panic!()
        };
        assert_eq!((h.authority.as_str(), h.prefix.as_str()), ("127.0.0.1:9000", "/base"));
        assert!(Upstream::parse("git-http-backend:", t).is_err());
        assert!(Upstream::parse("ftp://x", t).is_err());
        assert!(Upstream::parse("https://x", t).unwrap_err().contains("https"));
        assert!(Upstream::parse("127.0.0.1:9000", t).is_err());
        assert!(Upstream::parse("http://h/?q=1", t).is_err());
    }
}
