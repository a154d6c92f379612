//! The web token console at `/console/`: a static page and its script and style, built
//! into the binary, and the browser sessions they run on.
//!
//! | endpoint | needs | answers |
//! |---|---|---|
//! | `GET /console/`, `/console/console.js`, `/console/console.css` | none | the page |
//! | `POST /console/session` `{"token"}` | a token with `tokens:read` | 201 `{"csrf", "owner", ...}`, the session cookie |
//! | `GET /console/session` | the session cookie | `{"csrf", "owner", ...}` |
//! | `DELETE /console/session` | the session cookie and `X-CSRF-Token` | 204, the cookie cleared |
//! | `GET /console/config.json` | the session cookie | the scope table, the policy, the caller |
//!
//! The page does everything else through the JSON admin API, which accepts the session in
//! place of `Authorization` ([`super::sessions::session_caller`]): the same checks, the same errors. A
//! session holds the token's hash, never its secret; it is looked up again on every
//! request, so a revoked or expired token ends its sessions at once. Sessions live in this
//! process's memory only: bounded in number, ended by an idle and an absolute timeout.
//! Writes with a session need the session's `X-CSRF-Token`; the admin API's refusal of
//! writes from other origins stays. Every answer here carries a strict
//! `Content-Security-Policy`. Nothing here logs a session id, a CSRF token or a secret.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, MethodRouter};
use axum::{Json, Router};
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, StatusCode};

use super::caller::{Access, Caller};
use super::error::AdminError;
use super::request::Body;
use super::sessions::{same_secret, session_caller, session_id, COOKIE, CSRF_HEADER};
use super::AdminState;
use crate::auth::rules::Requirement;
use crate::auth::scope::{Scope, ScopeSet};
use crate::auth::token::TokenSecret;
use crate::auth::{self, AuthError, Identity};

/// The policy every console answer carries: nothing inline, nothing from elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// The console's routes (not part of the JSON API, so not in [`super::paths::ROUTES`],
/// which is what the OpenAPI document describes).
pub mod paths {
    pub const ROOT: &str = "/console";
    pub const INDEX: &str = "/console/";
    pub const SCRIPT: &str = "/console/console.js";
    pub const STYLE: &str = "/console/console.css";
    pub const SESSION: &str = "/console/session";
    pub const CONFIG: &str = "/console/config.json";
    pub const ANY: &str = "/console/{*rest}";

    /// Every console route: method and path.
    pub const ROUTES: &[(&str, &str)] = &[
        ("GET", ROOT),
        ("GET", INDEX),
        ("GET", SCRIPT),
        ("GET", STYLE),
        ("POST", SESSION),
        ("GET", SESSION),
        ("DELETE", SESSION),
        ("GET", CONFIG),
    ];
}

/// The console's router (empty when `[console] enabled = false`).
pub fn router(state: &AdminState) -> Router<AdminState> {
    if !state.config().console.enabled {
        return Router::new();
    }
    // Each route answers other methods itself, inside the layer that sets the headers.
    let only = |m: MethodRouter<AdminState>| m.fallback(|| async { AdminError::MethodNotAllowed });
    Router::new()
        .route(paths::ROOT, only(get(|| async { Redirect::permanent(paths::INDEX) })))
        .route(paths::INDEX, only(get(|| async { file("text/html; charset=utf-8", INDEX_HTML) })))
        .route(
            paths::SCRIPT,
            only(get(|| async { file("text/javascript; charset=utf-8", CONSOLE_JS) })),
        )
        .route(paths::STYLE, only(get(|| async { file("text/css; charset=utf-8", CONSOLE_CSS) })))
        .route(paths::SESSION, only(get(current).post(sign_in).delete(sign_out)))
        .route(paths::CONFIG, only(get(config)))
        .route(paths::ANY, any(|| async { AdminError::NoEndpoint }))
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The console's security headers, which the admin listener puts on every answer, the
/// console's or not, and refusals made before a route is reached (a foreign `Origin`, a
/// lockout) alike.
pub fn security_headers(h: &mut HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// What the page shows of a session.
#[derive(serde::Serialize)]
struct SessionJson {
    csrf: String,
    token_id: String,
    owner: String,
    /// `tokens:admin`: every owner.
    admin: bool,
    /// `tokens:manage` or more: may create and change tokens.
    manage: bool,
    idle_seconds: u64,
    max_seconds: u64,
}

fn session_json(state: &AdminState, identity: &Identity, csrf: String) -> Result<SessionJson, AdminError> {
    let access = [Access::Admin, Access::Manage, Access::Read]
        .into_iter()
        .find(|a| auth::authorize(identity.clone(), Requirement::scope(a.scope())).is_ok());
    let Some(access) = access else {
        return Err(AuthError::ScopeMissing {
            scope: Access::Read.scope(),
        }
        .into());
    };
    let c = &state.config().console;
    Ok(SessionJson {
        csrf,
        token_id: identity.token_id().to_owned(),
        owner: identity.owner().to_owned(),
        admin: access == Access::Admin,
        manage: access >= Access::Manage,
        idle_seconds: c.session_idle.as_secs(),
        max_seconds: c.session_max.as_secs(),
    })
}

/// The `Set-Cookie` value for session `value` (empty and `Max-Age=0` to clear it), `Secure`
/// when the listener has TLS.
fn cookie(tls: bool, value: &str, max_age: Option<u64>) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let age = max_age.map(|s| format!("; Max-Age={s}")).unwrap_or_default();
    HeaderValue::from_str(&format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict{secure}{age}")).expect("a session id is base64url")
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// `POST /console/session`: a pasted token, authenticated as the admin API does (and
/// counted by the lockout alike), exchanged for a new session; the one the browser held
/// before, if any, ends.
async fn sign_in(State(s): State<AdminState>, parts: Parts, body: Body) -> Result<Response, AdminError> {
    let lockout = s.lockout();
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let counted = lockout.as_ref().zip(peer);
    if let Some((lockout, ip)) = counted {
        lockout.check(ip, Instant::now())?;
    }
    let b: SignIn = body.parse()?;
    let hash = TokenSecret::parse(b.token.trim()).map(|secret| secret.hash());
    drop(b);
    let found = match &hash {
        Some(hash) => auth::authenticate_digest(hash, s.tokens(), crate::clock::now(), peer),
        None => Err(AuthError::Malformed),
    };
    let identity = found.inspect_err(|_| {
        if let Some((lockout, ip)) = counted {
            lockout.failed(ip, Instant::now());
        }
    })?;
    let hash = hash.ok_or(AuthError::Malformed)?;
    let info = session_json(&s, &identity, String::new())?;
    // Signing in again ends the session the browser held, whoever's it was.
    if let Some(old) = session_id(&parts.headers) {
        s.sessions().remove(old);
    }
    let (id, csrf) = s.sessions().create(hash, Instant::now());
    let body = SessionJson { csrf, ..info };
    let token_id = body.token_id.as_str();
    tracing::event!(target: "patgate::admin", tracing::Level::INFO, token.id = token_id, "Console session started");
    let mut res = (StatusCode::CREATED, Json(body)).into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, cookie(s.config().tls.is_some(), &id, None));
    Ok(res)
}

/// `GET /console/session`: the session's caller and CSRF token, or 401.
async fn current(State(s): State<AdminState>, parts: Parts) -> Result<Json<SessionJson>, AdminError> {
    let identity = session_caller(&parts, &s)?.ok_or(AuthError::Missing)?;
    let id = session_id(&parts.headers).ok_or(AuthError::Missing)?;
    let found = s.sessions().get(id, Instant::now()).ok_or(AuthError::Missing)?;
    Ok(Json(session_json(&s, &identity, found.csrf)?))
}

/// `DELETE /console/session`: signs out (with the session's CSRF token) and clears the
/// cookie; without a live session it only clears the cookie.
async fn sign_out(State(s): State<AdminState>, parts: Parts) -> Result<Response, AdminError> {
    if let Some(id) = session_id(&parts.headers) {
        if let Some(found) = s.sessions().get(id, Instant::now()) {
            let sent = parts.headers.get(CSRF_HEADER).map(HeaderValue::as_bytes).unwrap_or_default();
            if !same_secret(sent, found.csrf.as_bytes()) {
                return Err(AdminError::Csrf);
            }
            s.sessions().remove(id);
        }
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, cookie(s.config().tls.is_some(), "", Some(0)));
    Ok(res)
}

#[derive(serde::Serialize)]
struct ScopeJson {
    name: &'static str,
    summary: &'static str,
    /// The scopes it grants besides itself.
    implies: Vec<&'static str>,
    /// Whether this caller may grant it: under the policy and, without `tokens:admin`,
    /// held by its own token.
    grantable: bool,
}

#[derive(serde::Serialize)]
struct AreaJson {
    area: &'static str,
    scopes: Vec<ScopeJson>,
}

/// The scope table by area, in table order, for a caller that may grant `grantable`.
fn areas(grantable: ScopeSet) -> Vec<AreaJson> {
    let mut out: Vec<AreaJson> = Vec::new();
    for scope in Scope::all() {
        let mut closure = ScopeSet::EMPTY;
        closure.grant(scope);
        let entry = ScopeJson {
            name: scope.name(),
            summary: scope.summary(),
            implies: Scope::all().filter(|&o| o != scope && closure.allows(o)).map(Scope::name).collect(),
            grantable: grantable.allows(scope),
        };
        let a = scope.area().title();
        match out.iter_mut().find(|x| x.area == a) {
            Some(x) => x.scopes.push(entry),
            None => out.push(AreaJson {
                area: a,
                scopes: vec![entry],
            }),
        }
    }
    out
}

/// `GET /console/config.json`: what the "New token" form is built from: the policy, and
/// what this caller may grant under it (without `tokens:admin`, no more than its own token
/// holds).
async fn config(State(s): State<AdminState>, caller: Caller) -> Result<Json<serde_json::Value>, AdminError> {
    let who = caller.require(Access::Read)?;
    let manage = caller.require(Access::Manage).is_ok();
    let p = s.policy();
    let holds = &who.holds;
    let grantable = if who.admin {
        ScopeSet::full()
    } else {
        p.grantable_scopes.without(p.grantable_scopes.without(holds.scopes))
    };
    Ok(Json(serde_json::json!({
        "owner": who.owner,
        "admin": who.admin,
        "manage": manage,
        "policy": {
            "max_lifespan_seconds": p.max_lifespan.as_secs(),
            "default_lifespan_seconds": p.default_lifespan.as_secs(),
            "allow_full": p.allow_full,
            "allow_all_orgs": p.allow_all_orgs,
            "grantable_scopes": Scope::all().filter(|&x| p.grantable_scopes.allows(x)).map(Scope::name).collect::<Vec<_>>(),
        },
        "may_grant_full": p.allow_full && (who.admin || holds.scopes.is_full()),
        "may_grant_all_orgs": p.allow_all_orgs && (who.admin || holds.orgs == crate::auth::Orgs::All),
        "areas": areas(grantable),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::sessions::{same_origin, Config, Sessions};
    use crate::auth::token::TokenHash;
    use std::time::Duration;

    fn sessions(idle: u64, max: u64, n: usize) -> Sessions {
        Sessions::new(Config {
            enabled: true,
            session_idle: Duration::from_secs(idle),
            session_max: Duration::from_secs(max),
            max_sessions: n,
        })
    }

    #[test]
    fn a_session_ends_when_idle() {
        let s = sessions(60, 3600, 10);
        let t0 = Instant::now();
        let (id, csrf) = s.create(TokenHash::of("a"), t0);
        assert_eq!(id.len(), 43, "32 bytes in base64url");
        assert_ne!(id, csrf);
        let found = s.get(&id, t0 + Duration::from_secs(59)).unwrap();
        assert!(found.token == TokenHash::of("a") && found.csrf == csrf);
        // Each use restarts the idle clock.
        assert!(s.get(&id, t0 + Duration::from_secs(118)).is_some());
        assert!(s.get(&id, t0 + Duration::from_secs(178)).is_none());
        assert!(s.is_empty(), "an ended session is dropped when found");
        assert!(s.get(&id, t0).is_none());
    }

    #[test]
    fn a_session_ends_at_its_absolute_timeout_however_used() {
        let s = sessions(60, 150, 10);
        let t0 = Instant::now();
        let (id, _) = s.create(TokenHash::of("a"), t0);
        for t in [50, 100, 149] {
            assert!(s.get(&id, t0 + Duration::from_secs(t)).is_some(), "{t}");
        }
        assert!(s.get(&id, t0 + Duration::from_secs(150)).is_none());
    }

    #[test]
    fn sign_out_ends_a_session_and_unknown_ids_find_nothing() {
        let s = sessions(60, 3600, 10);
        let t0 = Instant::now();
        let (a, _) = s.create(TokenHash::of("a"), t0);
        let (b, _) = s.create(TokenHash::of("b"), t0);
        s.remove(&a);
        assert!(s.get(&a, t0).is_none());
        assert!(s.get(&b, t0).is_some());
        assert!(s.get("", t0).is_none() && s.get("nope", t0).is_none());
    }

    #[test]
    fn the_table_is_bounded_and_the_oldest_go_first() {
        let s = sessions(60, 3600, 3);
        let t0 = Instant::now();
        let ids: Vec<String> = (0..5)
            .map(|i| s.create(TokenHash::of(&i.to_string()), t0 + Duration::from_secs(i)).0)
            .collect();
        assert_eq!(s.len(), 3);
        let now = t0 + Duration::from_secs(5);
        assert!(s.get(&ids[0], now).is_none() && s.get(&ids[1], now).is_none());
        assert!(ids[2..].iter().all(|id| s.get(id, now).is_some()));
        // Ended sessions make room before live ones are pushed out.
        let s = sessions(10, 3600, 2);
        let (old, _) = s.create(TokenHash::of("old"), t0);
        let (live, _) = s.create(TokenHash::of("live"), t0 + Duration::from_secs(20));
        let (new, _) = s.create(TokenHash::of("new"), t0 + Duration::from_secs(25));
        let now = t0 + Duration::from_secs(26);
        assert!(s.get(&old, now).is_none());
        assert!(s.get(&live, now).is_some() && s.get(&new, now).is_some());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_with_tls() {
        assert_eq!(cookie(false, "abc", None), "patgate_session=abc; Path=/; HttpOnly; SameSite=Strict");
        assert_eq!(
            cookie(true, "abc", None),
            "patgate_session=abc; Path=/; HttpOnly; SameSite=Strict; Secure"
        );
        assert_eq!(
            cookie(true, "", Some(0)),
            "patgate_session=; Path=/; HttpOnly; SameSite=Strict; Secure; Max-Age=0"
        );
    }

    #[test]
    fn csrf_tokens_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
        assert!(!same_secret(b"", b"abc"));
        assert!(same_secret(b"", b""));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        assert_eq!(session_id(&h), None);
        h.append(header::COOKIE, HeaderValue::from_static("a=1; patgate_session_x=2"));
        assert_eq!(session_id(&h), None);
        h.append(header::COOKIE, HeaderValue::from_static("b=2;  patgate_session=abc ; c=3"));
        assert_eq!(session_id(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("patgate_session="));
        assert_eq!(session_id(&h), None);
        // Two different ids (one planted by another page of the host): none is read.
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("patgate_session=planted; patgate_session=mine"),
        );
        assert_eq!(session_id(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("patgate_session=mine; patgate_session=mine"),
        );
        assert_eq!(session_id(&h), Some("mine"));
    }

    #[test]
    fn one_token_cannot_push_out_the_sessions_of_others() {
        let s = sessions(60, 3600, 20);
        let t0 = Instant::now();
        let (admin, _) = s.create(TokenHash::of("admin"), t0);
        let pest = TokenHash::of("pest");
        let ids: Vec<String> = (0..40).map(|i| s.create(pest, t0 + Duration::from_secs(1 + i)).0).collect();
        let now = t0 + Duration::from_secs(50);
        assert!(s.get(&admin, now).is_some(), "another token's session stays");
        assert_eq!(s.len(), 1 + crate::admin::sessions::PER_TOKEN);
        assert!(s.get(&ids[0], now).is_none() && s.get(&ids[39], now).is_some());
    }

    #[test]
    fn only_the_listeners_own_origin_is_the_same() {
        let h = |origin: &str, host: &str, site: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            if let Some(site) = site {
                h.insert("sec-fetch-site", HeaderValue::from_str(site).unwrap());
            }
            h
        };
        assert!(same_origin(&h("http://127.0.0.1:9090", "127.0.0.1:9090", None), false));
        assert!(same_origin(
            &h("http://127.0.0.1:9090", "127.0.0.1:9090", Some("same-origin")),
            false
        ));
        assert!(same_origin(&h("https://admin.example", "admin.example", None), true));
        let refused = [
            (h("http://127.0.0.1:9091", "127.0.0.1:9090", None), false),
            (h("https://127.0.0.1:9090", "127.0.0.1:9090", None), false),
            (h("http://127.0.0.1:9090", "127.0.0.1:9090", None), true),
            (h("http://127.0.0.1:9090", "127.0.0.1:9090", Some("same-site")), false),
            (h("http://evil.example", "127.0.0.1:9090", None), false),
            (h("null", "127.0.0.1:9090", None), false),
            (h("http://", "", None), false),
        ];
        for (headers, tls) in refused {
            assert!(!same_origin(&headers, tls), "{headers:?} tls {tls}");
        }
        assert!(!same_origin(&HeaderMap::new(), false));
    }

    /// Every console route (and one that is not, and one of the API), answered by the
    /// admin router, from the page and from a foreign one: each answer carries the
    /// console's headers.
    #[tokio::test]
    async fn every_console_answer_carries_the_security_headers() {
        use http_body_util::BodyExt;
        use hyper::service::Service;

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("patgate.toml");
        let toml = format!(
            "[store]\nurl = \"sqlite://{}\"\n[[routes]]\npath = \"/{{org}}/**\"\nupstream = \"git-http-backend:repos\"\nrules = \"git\"\n",
            dir.path().join("t.db").display()
        );
        std::fs::write(&file, toml).unwrap();
        let config = crate::config::load(&file).unwrap();
        let store = crate::store::Store::open(&config.store.location).await.unwrap();
        let tokens = std::sync::Arc::new(crate::store::token_cache::TokenCache::default());
        let (_stop, stop) = tokio::sync::watch::channel(false);
        let state = AdminState::new(config.admin, store, tokens, stop);
        let app = hyper_util::service::TowerToHyperService::new(super::super::router(state));
        let mut asked: Vec<(&str, &str)> = paths::ROUTES.to_vec();
        asked.extend([("GET", "/console/nope"), ("POST", paths::CONFIG), ("GET", "/healthz")]);
        // Each once as the page would send it, and once from a foreign page: a write from
        // there is refused before it reaches a route.
        let origins = [None, Some("https://evil.example")];
        for ((method, path), origin) in asked.into_iter().flat_map(|a| origins.map(|o| (a, o))) {
            let mut req = http::Request::builder()
                .method(method)
                .uri(path)
                .header(header::COOKIE, "patgate_session=nosuchsession");
            if let Some(origin) = origin {
                req = req.header(header::ORIGIN, origin);
            }
            let req = req.body(axum::body::Body::empty()).unwrap();
            let res = app.call(req).await.unwrap();
            let h = res.headers().clone();
            assert_eq!(
                h.get(header::CONTENT_SECURITY_POLICY).map(|v| v.to_str().unwrap()),
                Some(CSP),
                "{method} {path}"
            );
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer", "{method} {path}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{method} {path}");
            assert_eq!(h[header::CACHE_CONTROL], "no-store", "{method} {path}");
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert!(!String::from_utf8_lossy(&body).contains("nosuchsession"), "{method} {path}");
        }
    }

    #[test]
    fn scopes_are_grouped_by_area_with_their_implications() {
        let a = areas(ScopeSet::parse(&["code:read"]).unwrap());
        let names: Vec<&str> = a.iter().map(|x| x.area).collect();
        assert_eq!(names, ["Code", "Agent pools", "Audit log", "Audit streams", "Tokens"]);
        let code = &a[0].scopes;
        assert_eq!(
            code.iter().map(|s| s.name).collect::<Vec<_>>(),
            ["code:read", "code:write", "code:manage"]
        );
        assert_eq!(code[2].implies, ["code:read", "code:write"]);
        assert!(code[0].grantable && !code[1].grantable);
        assert!(areas(ScopeSet::full()).iter().flat_map(|x| &x.scopes).all(|s| s.grantable));
        let total: usize = a.iter().map(|x| x.scopes.len()).sum();
        assert_eq!(total, Scope::all().count(), "every scope is shown once");
    }
}
