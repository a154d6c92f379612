//! The admin API: tokens managed over HTTP and JSON, on its own listener (`[admin]`,
//! loopback by default), beside the proxy and sharing its store and in-memory tokens.
//!
//! | endpoint | needs | answers |
//! |---|---|---|
//! | `POST /admin/v1/tokens` | `tokens:manage` | 201 `{"token", "secret"}` |
//! | `GET /admin/v1/tokens?owner=&state=&limit=&after=` | `tokens:read` | `{"tokens": [...], "next"}` |
//! | `GET /admin/v1/tokens/{id}` | `tokens:read` | the token |
//! | `PATCH /admin/v1/tokens/{id}` | `tokens:manage` | the token |
//! | `POST /admin/v1/tokens/{id}/regenerate` | `tokens:manage` | `{"token", "secret"}` |
//! | `POST /admin/v1/tokens/{id}/rotate` | `tokens:manage` | `{"token", "secret"}`; the old secret's later use revokes it |
//! | `POST /admin/v1/tokens/{id}/revoke` | `tokens:manage` | the token |
//! | `POST /admin/v1/owners/{owner}/revoke` | `tokens:manage` | `{"revoked": N}` |
//! | `POST /admin/v1/leaked` | none; limited per address | `{"revoked": N}` |
//! | `GET /admin/v1/events?since=&limit=&wait=` | `tokens:read` | `{"events": [...], "next"}` |
//! | `GET /admin/v1/audit?from=&to=&owner=&token_id=&outcome=&action=&after=&limit=` | `auditlog:read` | `{"entries": [...], "next"}` |
//! | `POST /admin/v1/audit/streams` | `auditstreams:manage` | 201, the stream |
//! | `GET /admin/v1/audit/streams` | `auditstreams:manage` | `{"streams": [...]}` |
//! | `GET`, `PATCH`, `DELETE /admin/v1/audit/streams/{id}` | `auditstreams:manage` | the stream |
//! | `GET /admin/v1/openapi.json` | none | the OpenAPI 3.1 description, its `servers` this listener |
//! | `GET /admin/v1/ready`, `GET /readyz` | none | `{"status": "ready", ...}` once the proxy listens; 503 before |
//! | `GET /healthz` | none | `{"status": "ok"}` while the process serves |
//! | `GET /metrics` | none | Prometheus metrics, OpenMetrics text ([`crate::telemetry::metrics`]) |
//! | `/console/...` | a console session | the web token console ([`console`]) |
//!
//! Callers are tokens, read from `Authorization` as on the proxy ([`caller`]), or the
//! token of a web console session ([`console`]). Without
//! `tokens:admin` a caller sees and changes only its owner's tokens. Tokens made or changed
//! here obey the [`policy`]. Every failure is an [`error::AdminError`], answered in one
//! place as `{"error": "..."}`. A write is applied to this instance's memory before it is
//! answered, so a revoke that answered 200 is in force here. One line per request is
//! logged at `patgate::admin`, with the token id and never a secret, an Authorization
//! value or a body.
//!
//! This module must not be reached from the request path: the proxy never calls it.

pub mod audit;
pub mod caller;
pub mod console;
pub mod error;
pub mod events;
pub mod leaked;
pub mod policy;
pub mod request;
pub mod sessions;
pub mod shown;
pub mod streams;
pub mod tokens;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{header, Method, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{service_fn, Service};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::guard::lockout::Lockout;
use crate::server::tls::TlsSlot;
use crate::store::token_cache::TokenCache;
use crate::store::{follow, Store};
use crate::telemetry::metrics::metrics;
use caller::LogSlot;
use error::{AdminError, Reason};
use policy::Policy;

/// Admin API settings (`[admin]` and `[policy]`), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Whether the admin listener runs at all.
    pub enabled: bool,
    pub listen: SocketAddr,
    /// The largest request body read (413 beyond).
    pub max_body_bytes: usize,
    /// The longest the event feed waits for new events.
    pub max_wait: Duration,
    /// Leak reports accepted per client address per minute.
    pub leak_reports_per_minute: NonZeroU32,
    /// Secrets one leak report may carry.
    pub max_secrets_per_report: usize,
    /// Admin connections at once, long polls included; more wait to be accepted.
    pub max_connections: usize,
    /// Admin connections at once from one client address (IPv6: one /64); more get 503
    /// and are closed, so that one client cannot take every slot.
    pub max_connections_per_ip: usize,
    /// From `[server]`: how long a client may take to send its headers, and here also its
    /// body (408 after).
    pub header_read_timeout: Duration,
    /// From `[server]`: the most bytes of request line and headers.
    pub max_header_bytes: usize,
    /// From `[server]`: how long requests may run on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// TLS for the admin listener, with client certificates when it names a client CA.
    pub tls: Option<crate::server::tls::ListenerTls>,
    pub policy: Policy,
    /// `[console]`: the web token console and its sessions.
    pub console: sessions::Config,
}

/// The routes, as the router and the OpenAPI document name them.
pub mod paths {
    pub const TOKENS: &str = "/admin/v1/tokens";
    pub const TOKEN: &str = "/admin/v1/tokens/{id}";
    pub const REGENERATE: &str = "/admin/v1/tokens/{id}/regenerate";
    pub const ROTATE: &str = "/admin/v1/tokens/{id}/rotate";
    pub const REVOKE: &str = "/admin/v1/tokens/{id}/revoke";
    pub const OWNER_REVOKE: &str = "/admin/v1/owners/{owner}/revoke";
    pub const LEAKED: &str = "/admin/v1/leaked";
    pub const EVENTS: &str = "/admin/v1/events";
    pub const AUDIT: &str = "/admin/v1/audit";
    pub const OPENAPI: &str = "/admin/v1/openapi.json";
    pub const READY: &str = "/admin/v1/ready";
    pub const READYZ: &str = "/readyz";
    pub const HEALTHZ: &str = "/healthz";
    pub const METRICS: &str = "/metrics";
    pub const STREAMS: &str = "/admin/v1/audit/streams";
    pub const STREAM: &str = "/admin/v1/audit/streams/{id}";

    /// The routes that need no token: no caller is read, so the lockout does not apply.
    pub const OPEN: &[&str] = &[LEAKED, OPENAPI, READY, READYZ, HEALTHZ, METRICS];

    /// Every route of the router: method and path.
    pub const ROUTES: &[(&str, &str)] = &[
        ("POST", TOKENS),
        ("GET", TOKENS),
        ("GET", TOKEN),
        ("PATCH", TOKEN),
        ("POST", REGENERATE),
        ("POST", ROTATE),
        ("POST", REVOKE),
        ("POST", OWNER_REVOKE),
        ("POST", LEAKED),
        ("GET", EVENTS),
        ("GET", AUDIT),
        ("GET", OPENAPI),
        ("GET", READY),
        ("GET", READYZ),
        ("GET", HEALTHZ),
        ("GET", METRICS),
        ("POST", STREAMS),
        ("GET", STREAMS),
        ("GET", STREAM),
        ("PATCH", STREAM),
        ("DELETE", STREAM),
    ];
}

/// The OpenAPI 3.1 description of this API.
pub const OPENAPI: &str = include_str!("admin/openapi.json");

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AdminState(Arc<Shared>);

struct Shared {
    config: Config,
    /// The policy in force: the config's at start, replaced whole by a reload.
    policy: ArcSwap<Policy>,
    /// The listener's TLS configuration, when it terminates TLS.
    tls: Option<TlsSlot>,
    /// Failed authentications per address, the same table as the proxy's (set by the
    /// server, and again on reload); none when `[brute_force]` is off.
    lockout: ArcSwapOption<Lockout>,
    store: Store,
    tokens: Arc<TokenCache>,
    leaks: leaked::Limiter,
    /// Event feed requests that may wait at once (see [`AdminState::waiters`]).
    waiters: Arc<Semaphore>,
    /// The OpenAPI document with this server's limits and address filled in (the bound
    /// address once [`serve`] runs).
    openapi: ArcSwap<String>,
    /// Set once the proxy listener is bound: readiness waits for it.
    proxy_listening: std::sync::atomic::AtomicBool,
    stop: watch::Receiver<bool>,
    /// This instance's audit stream delivery, once started ([`AdminState::set_streams`]).
    streams: std::sync::OnceLock<crate::audit::streams::Streams>,
    /// Where refusals go into the audit trail, once set ([`AdminState::set_auditor`]).
    auditor: std::sync::OnceLock<crate::audit::Auditor>,
    /// The web console's signed-in browsers.
    sessions: sessions::Sessions,
}

impl AdminState {
    /// The state over the server's store and in-memory tokens; `stop` turns true on shutdown.
    pub fn new(config: Config, store: Store, tokens: Arc<TokenCache>, stop: watch::Receiver<bool>) -> AdminState {
        let leaks = leaked::Limiter::new(config.leak_reports_per_minute);
        let waiters = Arc::new(Semaphore::new(waiting_slots(config.max_connections)));
        let openapi = ArcSwap::from_pointee(openapi_for(&config, config.listen));
        let sessions = sessions::Sessions::new(config.console.clone());
        AdminState(Arc::new(Shared {
            policy: ArcSwap::from_pointee(config.policy.clone()),
            tls: config.tls.as_ref().map(|t| TlsSlot::new(t.config.clone())),
            lockout: ArcSwapOption::empty(),
            config,
            store,
            tokens,
            leaks,
            waiters,
            openapi,
            proxy_listening: std::sync::atomic::AtomicBool::new(false),
            stop,
            streams: std::sync::OnceLock::new(),
            auditor: std::sync::OnceLock::new(),
            sessions,
        }))
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// The policy in force; one request reads it once.
    pub fn policy(&self) -> Arc<Policy> {
        self.0.policy.load_full()
    }

    /// Puts in a reloaded certificate for connections from now on; false when the
    /// listener runs without TLS (turning it on needs a restart).
    pub fn replace_tls(&self, tls: &crate::server::tls::ListenerTls) -> bool {
        match &self.0.tls {
            Some(slot) => {
                slot.replace(tls.config.clone());
                true
            }
            None => false,
        }
    }

    /// Counts failed authentications in `lockout` from now on (the proxy's table).
    pub fn replace_lockout(&self, lockout: Option<Arc<Lockout>>) {
        self.0.lockout.store(lockout);
    }

    /// The failure table in force.
    pub fn lockout(&self) -> Option<Arc<Lockout>> {
        self.0.lockout.load_full()
    }

    /// Tells readiness that the proxy listener is up.
    pub fn proxy_listening(&self) {
        self.0.proxy_listening.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Fills the address the listener is bound to into the OpenAPI document's `servers`
    /// (the config's may have port 0).
    fn bound_to(&self, addr: SocketAddr) {
        self.0.openapi.store(Arc::new(openapi_for(&self.0.config, addr)));
    }

    /// Puts in a reloaded policy for requests from now on.
    pub fn replace_policy(&self, policy: Policy) {
        self.0.policy.store(Arc::new(policy));
    }

    /// Hands the admin API this instance's audit stream delivery (its `audit.stream_dir`,
    /// and a wake-up for changes); without it file streams are refused.
    pub fn set_streams(&self, streams: crate::audit::streams::Streams) {
        let _ = self.0.streams.set(streams);
    }

    /// Sends refusals (policy, authentication) to the audit trail through `auditor`.
    pub fn set_auditor(&self, auditor: crate::audit::Auditor) {
        let _ = self.0.auditor.set(auditor);
    }

    /// Where refusals go into the audit trail (nowhere until [`AdminState::set_auditor`]).
    pub fn auditor(&self) -> &crate::audit::Auditor {
        self.0.auditor.get().unwrap_or_else(|| crate::audit::Auditor::off_ref())
    }

    /// This instance's audit stream delivery, if it runs.
    pub fn streams(&self) -> Option<&crate::audit::streams::Streams> {
        self.0.streams.get()
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    pub fn tokens(&self) -> &TokenCache {
        &self.0.tokens
    }

    /// The web console's sessions.
    pub fn sessions(&self) -> &sessions::Sessions {
        &self.0.sessions
    }

    fn leak_limiter(&self) -> &leaked::Limiter {
        &self.0.leaks
    }

    /// The slots for event feed requests that wait: three quarters of the connections,
    /// so that long polls never take every connection from writes and leak reports.
    pub fn waiters(&self) -> &Arc<Semaphore> {
        &self.0.waiters
    }

    /// Turns true when the server shuts down.
    pub fn stop(&self) -> watch::Receiver<bool> {
        self.0.stop.clone()
    }

    /// Applies the store's new events to memory now, after a write, so that the change is
    /// in force on this instance before the write is answered. A failure is logged: the
    /// follower applies the change on its next poll.
    pub async fn applied(&self) {
        if let Err(e) = follow::catch_up(&self.0.store, &self.0.tokens).await {
            tracing::warn!(target: "patgate::admin", error = %e, "Change stored but not yet applied to memory");
        }
    }
}

/// The admin router over `state`, with the request log and refusals of web pages' writes.
pub fn router(state: AdminState) -> Router {
    use paths::*;
    Router::new()
        .route(TOKENS, post(tokens::create).get(tokens::list))
        .route(TOKEN, get(tokens::get).patch(tokens::update))
        .route(REGENERATE, post(tokens::regenerate))
        .route(ROTATE, post(tokens::rotate))
        .route(REVOKE, post(tokens::revoke))
        .route(OWNER_REVOKE, post(tokens::revoke_owner))
        .route(LEAKED, post(leaked::leaked))
        .route(EVENTS, get(events::events))
        .route(AUDIT, get(audit::list))
        .route(OPENAPI, get(openapi))
        .route(READY, get(ready))
        .route(READYZ, get(ready))
        .route(HEALTHZ, get(health))
        .route(METRICS, get(serve_metrics))
        .route(STREAMS, post(streams::create).get(streams::list))
        .route(STREAM, get(streams::get).patch(streams::update).delete(streams::delete))
        .merge(console::router(&state))
        .fallback(|| async { AdminError::NoEndpoint })
        .method_not_allowed_fallback(|| async { AdminError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), access_log))
        .with_state(state)
}

/// How many event feed requests may wait at once, out of `max_connections`.
pub fn waiting_slots(max_connections: usize) -> usize {
    (max_connections - max_connections / 4).clamp(1, Semaphore::MAX_PERMITS)
}

/// [`OPENAPI`] with what depends on the configuration filled in: the limits, and `servers`
/// for a listener on `listen`.
fn openapi_for(config: &Config, listen: SocketAddr) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("the OpenAPI document is JSON");
    if let Some(secrets) = doc.pointer_mut("/components/schemas/LeakReport/properties/secrets") {
        secrets["maxItems"] = config.max_secrets_per_report.into();
    }
    if let Some(url) = server_url(listen, config.tls.is_some()) {
        doc["servers"] = serde_json::json!([{ "url": url, "description": "This server's admin listener." }]);
    }
    doc.to_string()
}

/// The URL clients reach a listener on `listen` by, if its address says it: none for an
/// unspecified address (`0.0.0.0`, `[::]`: every interface, no one address to name) or
/// port 0. Without `servers`, OpenAPI 3.1 reads the server as `/`, the origin the document
/// was fetched from, which is then right.
pub fn server_url(listen: SocketAddr, tls: bool) -> Option<String> {
    if listen.ip().is_unspecified() || listen.port() == 0 {
        return None;
    }
    let scheme = if tls { "https" } else { "http" };
    let host = match listen {
        SocketAddr::V4(a) => a.ip().to_string(),
        // A zone (fe80::1%eth0) is written %25 in a URL (RFC 6874).
        SocketAddr::V6(a) if a.scope_id() != 0 => format!("[{}%25{}]", a.ip(), a.scope_id()),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    Some(format!("{scheme}://{host}:{}", listen.port()))
}

async fn openapi(State(s): State<AdminState>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], String::clone(&s.0.openapi.load())).into_response()
}

#[derive(serde::Serialize)]
struct Ready {
    status: &'static str,
    seq: i64,
    tokens: usize,
    /// `reachable`, or `unreachable` while this instance serves from memory (by design:
    /// it stays ready).
    store: &'static str,
    version: &'static str,
    commit: &'static str,
}

/// Ready once the tokens are loaded (the admin listener starts only after they are) and
/// the proxy listens; a store that cannot be reached does not make it unready, since
/// serving from memory is what patgate does then.
async fn ready(State(s): State<AdminState>) -> Response {
    let listening = s.0.proxy_listening.load(std::sync::atomic::Ordering::Acquire);
    let body = Ready {
        status: if listening { "ready" } else { "starting" },
        seq: s.tokens().seq(),
        tokens: s.tokens().len(),
        store: if s.tokens().store_reachable() { "reachable" } else { "unreachable" },
        version: crate::build_info::VERSION,
        commit: crate::build_info::COMMIT,
    };
    let status = if listening {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Alive: the process answers.
async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// The process's metrics, with the gauges of state read now.
async fn serve_metrics(State(s): State<AdminState>) -> Response {
    let m = metrics();
    if !m.enabled() {
        let off = serde_json::json!({"error": "metrics are off: [metrics] enabled = false"});
        return (StatusCode::NOT_FOUND, Json(off)).into_response();
    }
    m.tokens_live.set(i64::try_from(s.tokens().len()).unwrap_or(i64::MAX));
    m.store_reachable.set(i64::from(s.tokens().store_reachable()));
    let blocked = s.lockout().map_or(0, |l| l.blocked(Instant::now()));
    m.lockouts_active.set(i64::try_from(blocked).unwrap_or(i64::MAX));
    if let Some(window) = m.expiry_window() {
        m.set_tokens_expiring(crate::audit::expiry::expiring(s.tokens(), window));
    }
    ([(header::CONTENT_TYPE, crate::telemetry::metrics::CONTENT_TYPE)], m.encode()).into_response()
}

/// Logs one line per request; refuses writes that carry an `Origin` (a web page may send
/// them with credentials a browser remembered) other than this listener's own, the
/// console's ([`sessions::same_origin`]); puts the console's security headers on every
/// answer (not to be cached, framed, sniffed or given a referrer);
/// records refused authentications and authorizations in the audit trail.
async fn access_log(State(s): State<AdminState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = request::clean(req.uri().path());
    let ip: Option<IpAddr> = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let route = req.extensions().get::<axum::extract::MatchedPath>().cloned();
    let slot = LogSlot::default();
    req.extensions_mut().insert(slot.clone());
    let from_page = req.headers().contains_key(header::ORIGIN)
        && !(s.config().console.enabled && sessions::same_origin(req.headers(), s.config().tls.is_some()))
        && method != Method::GET
        && method != Method::HEAD;
    let mut res = if from_page {
        AdminError::FromWebPage.into_response()
    } else {
        next.run(req).await
    };
    console::security_headers(res.headers_mut());
    let status = res.status().as_u16();
    let duration_ms = crate::telemetry::millis(started.elapsed());
    if let (Some(error::Refusal::Blocked), Some(ip)) = (res.extensions().get::<error::Refusal>(), ip) {
        s.auditor().blocked(crate::guard::client_addr::client_key(ip));
    }
    if let Some(error::Refusal::Credential(known)) = res.extensions_mut().remove::<error::Refusal>() {
        let mut e = crate::audit::AuditEntry::new(
            crate::audit::now_millis(),
            crate::audit::Action::AuthRefused,
            crate::audit::Outcome::Failure,
        );
        e.reason = res.extensions().get::<Reason>().map(|r| r.0.clone());
        match (slot.token_id(), slot.owner(), known) {
            (Some(id), owner, _) => (e.token_id, e.owner) = (Some(id.to_owned()), owner.map(str::to_owned)),
            (None, _, Some(k)) => (e.token_id, e.owner) = (Some(k.id.to_string()), Some(k.owner.to_string())),
            (None, _, None) => {}
        }
        e.client = ip;
        e.method = Some(method.as_str().to_owned());
        e.path = Some(path.clone());
        e.route = route.map(|r| r.as_str().to_owned());
        e.status = Some(status);
        s.auditor().record(e);
    }
    let token_id = slot.token_id().unwrap_or("-");
    let client_ip = ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
    match res.extensions_mut().remove::<Reason>() {
        None => tracing::info!(
            target: "patgate::admin", duration_ms, client.ip = %client_ip, http.method = %method, url.path = %path,
            http.status = status, token.id = token_id, "Admin request"
        ),
        Some(Reason(reason)) => tracing::info!(
            target: "patgate::admin", duration_ms, client.ip = %client_ip, http.method = %method, url.path = %path,
            http.status = status, token.id = token_id, reason = %reason, "Admin request refused"
        ),
    }
    res
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves the admin API on `listener` until the state's stop signal, then lets requests
/// in flight finish (long polls end at once) for up to the shutdown grace.
pub async fn serve(listener: TcpListener, state: AdminState) {
    let config = state.config().clone();
    if let Ok(addr) = listener.local_addr() {
        state.bound_to(addr);
    }
    let app = router(state.clone());
    let max = config.max_connections.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize) as u32;
    let slots = Arc::new(Semaphore::new(max as usize));
    let per_ip = Arc::new(crate::guard::connections::PerAddress::new(config.max_connections_per_ip));
    let mut stop = state.stop();
    loop {
        let slot = tokio::select! {
            _ = stopped(&mut stop) => break,
            slot = slots.clone().acquire_owned() => match slot { Ok(s) => s, Err(_) => break },
        };
        let (tcp, peer) = tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(target: "patgate::admin", error = %e, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let Some(counted) = per_ip.enter(peer.ip()) else {
            tracing::debug!(target: "patgate::admin", ip = %peer.ip(), "Too many admin connections from one address");
            let too_many = state.0.tls.is_none();
            tokio::spawn(async move {
                if too_many {
                    let _ = tokio::time::timeout(Duration::from_secs(1), crate::guard::connections::refuse_too_many(tcp)).await;
                }
                drop(slot);
            });
            continue;
        };
        let app = TowerToHyperService::new(app.clone());
        let conn_stop = state.stop();
        let config = config.clone();
        let tls = state.0.tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(TokioIo::new(tcp), peer, app, &config, conn_stop).await,
                Some(acceptor) => {
                    let timeout = config.tls.as_ref().map_or(Duration::from_secs(10), |t| t.handshake_timeout);
                    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => serve_connection(TokioIo::new(tls), peer, app, &config, conn_stop).await,
                        Ok(Err(e)) => {
                            tracing::debug!(target: "patgate::admin", ip = %peer.ip(), error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(target: "patgate::admin", ip = %peer.ip(), "TLS handshake timed out"),
                    }
                }
            }
            drop((slot, counted));
        });
    }
    drop(listener);
    if tokio::time::timeout(config.shutdown_grace, slots.acquire_many(max)).await.is_err() {
        tracing::warn!(
            target: "patgate::admin",
            connections = max as usize - slots.available_permits(),
            "Shutdown grace ended with admin connections open"
        );
    }
}

/// Serves one admin connection (plain or TLS) until it ends or the server drains.
async fn serve_connection<IO>(io: IO, peer: SocketAddr, app: TowerToHyperService<Router>, config: &Config, mut stop: watch::Receiver<bool>)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        app.call(req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes)
        .keep_alive(true)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(target: "patgate::admin", error = %e, "Admin connection ended with an error");
    }
}

#[cfg(test)]
mod tests;
