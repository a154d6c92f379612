//! The request path, as a pipeline that reads top to bottom:
//! request target and framing → path normalization → credential → token lookup →
//! route and rule → scope and organization → forward → access log.
//!
//! HTTP/1 requests are read by patgate's own server ([`http1`]), HTTP/2 by hyper; both
//! come to [`Proxy::handle`] as the same `http::Request`, and go through the same named
//! phases: **admit** (`Proxy::admit`: target, path, credential, token, route, rule, scope,
//! organization; it returns the [`auth::Permit`]), **plan** ([`plan::Plan`], made from the
//! permit alone: what goes upstream and as whom), **exchange** with the upstream (HTTP,
//! through patgate's own HTTP/1 client, [`upstream`]; or git http-backend), **respond** (errors become answers in one place,
//! [`error_response`]) and **log** (one access line per request). The request path reads
//! only the in-memory token copy and the validated config: it never enters the store.

pub mod body;
pub mod cgi;
pub mod connection;
pub mod error;
pub mod handover;
pub mod headers;
pub mod host;
pub mod http1;
pub mod plan;
pub mod upgrade;
pub mod upstream;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Method, Request, Response};

use crate::audit::{self, Action, AuditEntry, Auditor, Outcome};
use crate::auth::rules::{self, RouteTable, RuleError};
use crate::auth::{self, AuthError};
use crate::guard::{body_rate, client_addr, lockout};
use crate::store::token_cache::TokenCache;
use crate::telemetry::metrics::{metrics, AuthOutcome, RouteLabel, UpstreamFault};
use upstream::Upstream;

pub use crate::auth::{CHALLENGE, UNAUTHORIZED_BODY};
pub use body::{Body, BoxError};
pub use connection::Connection;
pub use error::{error_response, ProxyError};

/// Proxy settings, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    /// Worker threads serving the proxy listener (at least 1).
    pub workers: usize,
    pub routes: RouteTable<Upstream>,
    pub upstream: upstream::Config,
    pub git: cgi::Config,
    /// The least rate at which request bodies must arrive while the upstream waits.
    pub body_rate: body_rate::MinRate,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: client_addr::TrustedProxies,
    /// Failed authentications per client address; `None` when off.
    pub brute_force: Option<lockout::Config>,
}

/// What a reload replaces, as one: the routes with their rules, and how clients are
/// told apart and held to their limits. Every worker shares it; a request reads it once.
pub struct LiveConfig {
    pub routes: RouteTable<Upstream>,
    pub trusted_proxies: client_addr::TrustedProxies,
    pub body_rate: body_rate::MinRate,
    /// Failed authentications per address; `None` when off.
    pub lockout: Option<Arc<lockout::Lockout>>,
}

impl LiveConfig {
    /// The live settings of `config`. The failure counts of `previous` carry over while
    /// `[brute_force]` stays the same, so a reload neither forgets nor lifts a block.
    pub fn new(config: &Config, previous: Option<&LiveConfig>) -> LiveConfig {
        let kept = previous
            .and_then(|p| p.lockout.as_ref())
            .filter(|l| Some(*l.config()) == config.brute_force)
            .cloned();
        LiveConfig {
            routes: config.routes.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            body_rate: config.body_rate,
            lockout: kept.or_else(|| config.brute_force.map(|c| Arc::new(lockout::Lockout::new(c)))),
        }
    }
}

/// The live settings, shared by every worker and replaced whole on reload.
pub type Shared = Arc<ArcSwap<LiveConfig>>;

/// The request path: routes, the in-memory tokens, and the upstream clients.
pub struct Proxy {
    config: Arc<Config>,
    /// The routes and client limits in force: the config's at start, replaced by a reload.
    live: Shared,
    tokens: Arc<TokenCache>,
    http: upstream::forward::HttpClient,
    cgi: Arc<cgi::Runner>,
    /// Where refusals and allowed requests go into the audit trail.
    auditor: Auditor,
}

/// What the access log says of one request, borrowed or shared: nothing is copied for it.
#[derive(Default)]
struct AccessLog<'a> {
    identity: Option<auth::Identity>,
    route: Option<&'a str>,
    /// The matched route's upstream, for the metrics.
    upstream: Option<&'a Upstream>,
    /// The client's address, through trusted proxies; the peer's until it is known.
    client: Option<std::net::IpAddr>,
}

/// A request the pipeline admitted: where it goes and on whose authority.
struct Admitted<'a> {
    path: rules::NormalizedPath,
    target: &'a Upstream,
    permit: auth::Permit,
    /// The client's address, through trusted proxies.
    pub client: std::net::IpAddr,
}

/// One request's access-log line. It is written when the answer is ready, or, if the
/// client goes away first (a closed connection, an HTTP/2 reset), when the request is
/// dropped: with status 499, as nginx logs it, since it may have reached the upstream.
struct AccessEntry<'a> {
    started: Instant,
    method: Method,
    version: http::Version,
    uri: http::Uri,
    peer: std::net::IpAddr,
    log: AccessLog<'a>,
    written: bool,
    auditor: &'a Auditor,
}

/// The status logged for a request whose client went away before its answer.
const CLIENT_CLOSED: u16 = 499;

impl<'a> AccessEntry<'a> {
    fn begin<B>(req: &Request<B>, conn: &Connection, auditor: &'a Auditor) -> Self {
        Self::of(req.method(), req.version(), req.uri(), conn, auditor)
    }

    fn of(method: &Method, version: http::Version, uri: &http::Uri, conn: &Connection, auditor: &'a Auditor) -> Self {
        AccessEntry {
            started: Instant::now(),
            method: method.clone(),
            version,
            // A cheap clone: the URI shares the connection's read buffer.
            uri: uri.clone(),
            peer: conn.peer.ip(),
            log: AccessLog::default(),
            written: false,
            auditor,
        }
    }

    /// The answer for `result`, logged and counted: the response, or the error's answer.
    fn finish(mut self, result: Result<Response<Body>, ProxyError>) -> Response<Body> {
        self.written = true;
        let m = metrics();
        let error = result.as_ref().err();
        let counting = m.enabled();
        let outcome = auth_outcome(error, self.log.identity.is_some());
        if let Some(outcome) = outcome.filter(|_| counting) {
            m.auth(outcome);
        }
        let fault = match error.filter(|_| counting) {
            Some(ProxyError::UpstreamTimeout(_)) => Some(UpstreamFault::Timeout),
            Some(ProxyError::UpstreamUnreachable | ProxyError::UpstreamFailed | ProxyError::CgiUnavailable | ProxyError::CgiMalformed) => {
                Some(UpstreamFault::Error)
            }
            _ => None,
        };
        if let (Some(fault), Some(route)) = (fault, self.route_label()) {
            m.upstream_fault(&route, fault);
        }
        match result {
            Ok(r) => {
                let status = r.status().as_u16();
                self.audit_allowed(outcome, status);
                self.emit(status, None, None);
                r
            }
            Err(e) => {
                let r = error_response(&e);
                let status = r.status().as_u16();
                match outcome {
                    Some(AuthOutcome::Allowed) => self.audit_allowed(outcome, status),
                    _ => self.audit_refusal(&e, status),
                }
                let known = match &e {
                    ProxyError::Auth(a) => a.known_token(),
                    _ => None,
                };
                self.emit(status, Some(&e), known);
                r
            }
        }
    }

    /// Counts an allowed request for the audit trail (`audit.allowed_requests`).
    #[inline]
    fn audit_allowed(&self, outcome: Option<AuthOutcome>, status: u16) {
        if let (Some(AuthOutcome::Allowed), Some(id)) = (outcome, &self.log.identity) {
            let client = self.log.client.unwrap_or(self.peer);
            self.auditor.allowed(id.token_id(), id.owner(), client, || {
                let mut e = self.audit_entry(Action::Access, Outcome::Success, status);
                e.token_id = Some(id.token_id().to_owned());
                e.owner = Some(id.owner().to_owned());
                e
            });
        }
    }

    /// Records a refused authentication or authorization (401, 403, and 400 for an
    /// unreadable `Authorization`) in the audit trail, naming the token when it is known;
    /// a locked-out address's 429s are counted per minute. A request without any
    /// credential is not a refused authentication: git asks without one first.
    fn audit_refusal(&self, e: &ProxyError, status: u16) {
        let known = match e {
            ProxyError::Auth(AuthError::Missing) => return,
            ProxyError::Auth(a) => a.known_token(),
            ProxyError::NoRule { .. } => None,
            ProxyError::Blocked(_) => {
                return self.auditor.blocked(client_addr::client_key(self.log.client.unwrap_or(self.peer)));
            }
            _ => return,
        };
        let mut entry = self.audit_entry(Action::AuthRefused, Outcome::Failure, status);
        entry.reason = Some(e.to_string());
        if let Some(id) = &self.log.identity {
            entry.token_id = Some(id.token_id().to_owned());
            entry.owner = Some(id.owner().to_owned());
        } else if let Some(k) = known {
            entry.token_id = Some(k.id.to_string());
            entry.owner = Some(k.owner.to_string());
        }
        self.auditor.record(entry);
    }

    /// An audit entry for this request: its client, method, normalized path (never the
    /// query), route and status.
    fn audit_entry(&self, action: Action, outcome: Outcome, status: u16) -> AuditEntry {
        let mut e = AuditEntry::new(audit::now_millis(), action, outcome);
        e.client = Some(self.log.client.unwrap_or(self.peer));
        e.method = Some(self.method.as_str().to_owned());
        e.path = rules::normalize(self.uri.path()).ok().map(|p| p.as_str().to_owned());
        e.route = self.log.route.map(str::to_owned);
        e.status = Some(status);
        e
    }

    /// The metric labels of the matched route.
    fn route_label(&self) -> Option<RouteLabel> {
        let (pattern, upstream) = (self.log.route?, self.log.upstream?);
        Some(metrics().route(pattern, || upstream.label()))
    }

    /// Writes the access line; `known` names the token of a refused credential.
    fn emit(&self, status: u16, reason: Option<&dyn std::fmt::Display>, known: Option<&auth::KnownToken>) {
        let elapsed = self.started.elapsed();
        let m = metrics();
        if m.enabled() {
            m.request(self.route_label().as_ref(), &self.method, status, elapsed.as_secs_f64());
        }
        let message = match (status, reason) {
            (CLIENT_CLOSED, _) => "Request cancelled",
            (_, None) => "Request",
            (_, Some(_)) => "Request denied",
        };
        tracing::info!(
            target: "patgate::access",
            duration_ms = crate::telemetry::millis(elapsed),
            client.ip = %self.log.client.unwrap_or(self.peer),
            http.method = %self.method,
            url.path = %self.uri.path(),
            http.version = ?self.version,
            http.status = status,
            token.id = self.log.identity.as_ref().map(|i| i.token_id()).or(known.map(|k| k.id.as_str())).unwrap_or("-"),
            token.owner = self.log.identity.as_ref().map(|i| i.owner()).or(known.map(|k| &*k.owner)),
            route = self.log.route.unwrap_or("-"),
            reason = reason.map(tracing::field::display),
            "{message}"
        );
    }
}

impl Drop for AccessEntry<'_> {
    fn drop(&mut self) {
        if !self.written {
            self.emit(CLIENT_CLOSED, Some(&"the client went away before the answer"), None);
        }
    }
}

impl Proxy {
    /// Builds the proxy over a config and the token copy it reads.
    pub fn new(config: Arc<Config>, tokens: Arc<TokenCache>) -> Self {
        let http = upstream::forward::HttpClient::new(&config.upstream);
        let cgi = Arc::new(cgi::Runner::new(config.git.clone()));
        let live = Arc::new(ArcSwap::from_pointee(LiveConfig::new(&config, None)));
        Proxy {
            config,
            live,
            tokens,
            http,
            cgi,
            auditor: Auditor::off(),
        }
    }

    /// The proxy with refusals and allowed requests going to `auditor`.
    pub fn with_auditor(mut self, auditor: Auditor) -> Self {
        self.auditor = auditor;
        self
    }

    /// The routes and client limits in force; a reload stores new ones here.
    pub fn live(&self) -> &Shared {
        &self.live
    }

    /// Another proxy for another worker: the same config, tokens and git process limit,
    /// with upstream connections of its own.
    pub fn for_worker(&self) -> Self {
        Proxy {
            config: self.config.clone(),
            live: self.live.clone(),
            tokens: self.tokens.clone(),
            http: upstream::forward::HttpClient::new(&self.config.upstream),
            cgi: self.cgi.clone(),
            auditor: self.auditor.clone(),
        }
    }

    /// The settings this proxy runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Answers one request: forwards it, or answers with the reason it was not.
    pub async fn handle<B>(&self, req: Request<B>, conn: &Connection) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        // The settings as they are now serve the whole request, whatever a reload does meanwhile.
        let live = self.live.load_full();
        let mut entry = AccessEntry::begin(&req, conn, &self.auditor);
        let result = self.handle_inner(req, conn, &live, &mut entry.log).await;
        entry.finish(result)
    }

    /// Answers a request that the listener's limits refuse before the pipeline runs,
    /// logged as any other.
    pub fn refuse<B>(&self, req: &Request<B>, conn: &Connection, e: ProxyError) -> Response<Body> {
        AccessEntry::begin(req, conn, &self.auditor).finish(Err(e))
    }

    /// Logs a request that was refused before it could be read (a head that is not valid
    /// HTTP/1): the access line of a request the pipeline never saw.
    pub(crate) fn log_unread(&self, conn: &Connection, e: &ProxyError) {
        tracing::info!(
            target: "patgate::access",
            duration_ms = 0.0,
            client.ip = %conn.peer.ip(),
            http.status = e.status().as_u16(),
            token.id = "-",
            route = "-",
            reason = %e,
            "Request denied"
        );
    }

    /// **Admit**: everything before forwarding: request target and `:authority`, path,
    /// credential and token, route and rule, scope and organization. What it returns holds
    /// the [`auth::Permit`], the only way to a [`plan::Plan`].
    fn admit<'a>(
        &self,
        head: &http::request::Parts,
        conn: &Connection,
        live: &'a LiveConfig,
        log: &mut AccessLog<'a>,
    ) -> Result<Admitted<'a>, ProxyError> {
        // HTTP/2 always names scheme and authority; an HTTP/1 request may only name its path
        // (its `Host` was judged as it was read, by the same rule as `:authority` here).
        if head.version < http::Version::HTTP_2 && (head.uri.scheme().is_some() || head.uri.authority().is_some()) {
            return Err(ProxyError::AbsoluteForm);
        }
        if head.version >= http::Version::HTTP_2 {
            authority_of_h2(head)?;
        }
        if head.method == Method::CONNECT || head.method == Method::TRACE {
            return Err(ProxyError::MethodNotAllowed(head.method.clone()));
        }
        // Path.
        let path = rules::normalize(head.uri.path())?;
        // Credential and token, unless this address has failed too often.
        let client = live.trusted_proxies.client_ip(conn.peer.ip(), &head.headers);
        log.client = Some(client);
        if let Some(lockout) = &live.lockout {
            lockout.check(client, Instant::now())?;
        }
        let now = crate::clock::now();
        let identity = auth::authenticate_on(&head.headers, &self.tokens, now, client, &conn.credential).inspect_err(|e| {
            if let Some(lockout) = live.lockout.as_ref().filter(|_| counts_as_failure(e)) {
                lockout.failed(client, Instant::now());
            }
        })?;
        identity.note_client(&self.tokens, client);
        log.identity = Some(identity.clone());
        // Route and rule.
        let found = live.routes.find(&path).ok_or(ProxyError::NoRoute)?;
        log.route = Some(found.route.pattern.as_str());
        log.upstream = Some(&found.route.target);
        let scope = found
            .route
            .required_scope(&head.method, &path, head.uri.query())
            .map_err(|e| match e {
                RuleError::NoRule => ProxyError::NoRule {
                    route: found.route.pattern.to_string(),
                    method: head.method.clone(),
                },
                RuleError::Query(q) => ProxyError::Query(q),
            })?;
        // Scope and organization.
        let permit = auth::authorize(identity, found.requirement(scope))?;
        let target = &found.route.target;
        Ok(Admitted {
            path,
            target,
            permit,
            client,
        })
    }

    async fn handle_inner<'a, B>(
        &'a self,
        req: Request<B>,
        conn: &Connection,
        live: &'a LiveConfig,
        log: &mut AccessLog<'a>,
    ) -> Result<Response<Body>, ProxyError>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        // Admit.
        let admitted = self.admit(&parts, conn, live, log)?;
        let target = admitted.target;
        // Plan, from the permit.
        let Admitted { path, permit, client, .. } = admitted;
        let plan = plan::Plan::new(path, permit, client, parts, conn);
        // Exchange with the upstream. A body that arrives too slowly is cut; the alarm
        // tells this 408 from an upstream failure, as the body's own error tells a body
        // that was not what its head said.
        let fault = plan.body_fault();
        let alarm = (!body.is_end_stream()).then(|| Arc::new(std::sync::atomic::AtomicBool::new(false)));
        let mut body = body_rate::RateLimited::new(body, live.body_rate);
        if let Some(a) = &alarm {
            body = body.with_alarm(a.clone());
        }
        let exchanged = match target {
            Upstream::Http(target) => match self.http.forward(target, plan, body).await {
                Ok(upstream::forward::Forwarded::Answer(answer)) => Ok(answer),
                // A tunnel lives on after this answer: it ends when the token does, or
                // when the server drains, and keeps the connection's place meanwhile.
                Ok(upstream::forward::Forwarded::Switch {
                    switched,
                    offered,
                    client,
                    permit,
                }) => {
                    let tunnel = upgrade::Tunnel {
                        place: conn.place.clone(),
                        standing: upgrade::StillAdmitted::new(permit, self.tokens.clone(), conn.stop.clone()),
                    };
                    upgrade::join(target, switched, &offered, client, tunnel)
                }
                Err(e) => Err(e),
            },
            Upstream::GitHttpBackend(root) => Box::pin(self.cgi.run(root, plan, body)).await,
        };
        // Respond: what went wrong on the client's side comes first.
        match exchanged {
            Err(_) if fault.as_ref().and_then(|f| f.error()).is_some() => {
                Err(fault.and_then(|f| f.error()).map_or(ProxyError::UpstreamFailed, ProxyError::Body))
            }
            Err(_) if alarm.is_some_and(|a| a.load(std::sync::atomic::Ordering::Relaxed)) => Err(body_rate::BodyTooSlow {
                bytes_per_sec: live.body_rate.bytes_per_sec,
            }
            .into()),
            other => other,
        }
    }
}

/// Judges an HTTP/2 request's `:authority` by the same rule as an HTTP/1 `Host`, and a
/// `Host` beside it, which must name the same (RFC 9113 §8.3.1).
fn authority_of_h2(head: &http::request::Parts) -> Result<(), host::HostError> {
    let authority = head.uri.authority().map(|a| a.as_str());
    if let Some(a) = authority {
        host::check(a.as_bytes())?;
    }
    let mut hosts = head.headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next(), authority) {
        (_, Some(_), _) => Err(host::HostError::Repeated),
        (Some(h), None, Some(a)) if h.as_bytes() != a.as_bytes() => Err(host::HostError::Differs),
        (Some(h), None, _) => host::check(h.as_bytes()),
        (None, None, _) => Ok(()),
    }
}

/// Whether a failed authentication counts against the client's address: a secret that
/// was given and is wrong. A request without one does not count (git asks without
/// credentials first, then again with them).
/// How authentication ended for a request that ended with `error` (or none), and whether
/// it had been authenticated; `None` for a request refused before authentication.
fn auth_outcome(error: Option<&ProxyError>, authenticated: bool) -> Option<AuthOutcome> {
    Some(match error {
        Some(ProxyError::Auth(e)) => match e {
            AuthError::Missing => AuthOutcome::NoCredential,
            AuthError::Credential(_) | AuthError::Malformed => AuthOutcome::Malformed,
            AuthError::Unknown => AuthOutcome::Unknown,
            AuthError::Revoked { .. } => AuthOutcome::Revoked,
            AuthError::Superseded { .. } => AuthOutcome::Superseded,
            AuthError::RotatedReused { .. } => AuthOutcome::RotatedReused,
            AuthError::OutsideRanges { .. } => AuthOutcome::OutsideRanges,
            AuthError::Expired { .. } => AuthOutcome::Expired,
            AuthError::ScopeMissing { .. } => AuthOutcome::LacksScope,
            AuthError::OrgMissing { .. } => AuthOutcome::LacksOrg,
            AuthError::RepoMissing { .. } | AuthError::RepoUnnamed { .. } => AuthOutcome::LacksRepo,
        },
        Some(ProxyError::NoRule { .. }) => AuthOutcome::NoRule,
        Some(ProxyError::Blocked(_)) => AuthOutcome::LockedOut,
        _ if authenticated => AuthOutcome::Allowed,
        _ => return None,
    })
}

fn counts_as_failure(e: &AuthError) -> bool {
    !matches!(
        e,
        AuthError::Missing
            | AuthError::ScopeMissing { .. }
            | AuthError::OrgMissing { .. }
            | AuthError::RepoMissing { .. }
            | AuthError::RepoUnnamed { .. }
    )
}
