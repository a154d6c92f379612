//! The admin router called directly, without sockets, over a SQLite store in a temporary
//! folder. The end-to-end tests over HTTP are in `tests/it/admin.rs`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body as AxumBody;
use http::{header, HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use hyper::service::Service;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::*;
use crate::auth::scope::ScopeSet;
use crate::auth::Orgs;
use crate::store::{Location, NewToken};

struct Harness {
    _dir: tempfile::TempDir,
    _stop: watch::Sender<bool>,
    state: AdminState,
    app: Router,
}

/// Every scope but `tokens:admin` (which `tokens:manage` does not imply).
pub(crate) fn all_but_admin() -> ScopeSet {
    let names: Vec<&str> = crate::auth::scope::Scope::all()
        .map(|s| s.name())
        .filter(|n| *n != "tokens:admin")
        .collect();
    ScopeSet::parse(&names).unwrap()
}

fn config() -> Config {
    Config {
        enabled: true,
        listen: "127.0.0.1:0".parse().unwrap(),
        max_body_bytes: 2048,
        max_wait: Duration::from_secs(2),
        leak_reports_per_minute: NonZeroU32::new(2).unwrap(),
        max_secrets_per_report: 3,
        max_connections: 8,
        header_read_timeout: Duration::from_secs(5),
        max_header_bytes: 16 * 1024,
        shutdown_grace: Duration::from_secs(1),
        policy: Policy {
            max_lifespan: Duration::from_secs(365 * 86400),
            default_lifespan: Duration::from_secs(30 * 86400),
            grantable_scopes: all_but_admin(),
            allow_all_orgs: true,
            allow_full: false,
        },
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

impl Answer {
    fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or_else(|| panic!("no error in {}", self.json))
    }
}

impl Harness {
    async fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Location::Sqlite(dir.path().join("t.db"))).await.unwrap();
        let tokens = Arc::new(TokenCache::default());
        follow::load(&store, &tokens).await.unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let state = AdminState::new(config(), store, tokens, stop_rx);
        Harness {
            _dir: dir,
            _stop: stop_tx,
            app: router(state.clone()),
            state,
        }
    }

    /// A token minted on the store, as the CLI does, and applied to memory.
    async fn mint(&self, owner: &str, scopes: &[&str]) -> String {
        let created = self
            .state
            .store()
            .create(
                NewToken {
                    name: "t".into(),
                    owner: owner.into(),
                    orgs: Orgs::All,
                    scopes: ScopeSet::parse(scopes).unwrap(),
                    lifespan: Duration::from_secs(3600),
                },
                None,
            )
            .await
            .unwrap();
        self.state.applied().await;
        created.secret.expose().to_owned()
    }

    async fn send(&self, req: http::Request<AxumBody>) -> Answer {
        let res = TowerToHyperService::new(self.app.clone()).call(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
        Answer { status, headers, json }
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let mut req = http::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                AxumBody::from(b.to_string())
            }
            None => AxumBody::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }
}

fn fill(path: &str) -> String {
    path.replace("{id}", "nosuchid").replace("{owner}", "nobody")
}

#[test]
fn the_openapi_document_parses_and_describes_exactly_the_routes() {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "patch", "put", "delete"] {
            if item.get(method).is_some() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    let mut routes: Vec<(String, String)> = paths::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    documented.sort();
    routes.sort();
    assert_eq!(documented, routes);
    // Every reference resolves.
    let text = OPENAPI;
    for part in text.split("\"$ref\": \"#/").skip(1) {
        let pointer = format!("/{}", part.split('"').next().unwrap());
        assert!(doc.pointer(&pointer).is_some(), "{pointer} does not resolve");
    }
}

#[tokio::test]
async fn every_route_is_served_and_the_rest_is_json() {
    let h = Harness::new().await;
    for (method, path) in paths::ROUTES {
        let a = h.call(method, &fill(path), None, None).await;
        assert!(
            a.status != StatusCode::METHOD_NOT_ALLOWED && a.json.get("error") != Some(&json!("no such endpoint")),
            "{method} {path}: {}",
            a.json
        );
    }
    let a = h.call("GET", "/admin/v1/nope", None, None).await;
    assert_eq!((a.status, a.error()), (StatusCode::NOT_FOUND, "no such endpoint"));
    let a = h.call("DELETE", "/admin/v1/tokens", None, None).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
    let a = h.call("GET", "/admin/v1/ready", None, None).await;
    assert_eq!(a.json, json!({"status": "ready", "seq": 0, "tokens": 0}));
}

#[tokio::test]
async fn no_token_is_401_with_the_bearer_challenge() {
    let h = Harness::new().await;
    for token in [
        None,
        Some("patg_nope"),
        Some(&*crate::auth::token::TokenSecret::generate().expose().to_owned()),
    ] {
        let a = h.call("GET", "/admin/v1/tokens", token, None).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(a.headers[header::WWW_AUTHENTICATE], "Bearer realm=\"patgate\"");
        assert_eq!(a.error(), crate::proxy::UNAUTHORIZED_BODY);
    }
}

#[tokio::test]
async fn the_scope_is_checked_before_the_body_is_read() {
    let h = Harness::new().await;
    let reader = h.mint("alice", &["tokens:read"]).await;
    let req = http::Request::post("/admin/v1/tokens")
        .header(header::AUTHORIZATION, format!("Bearer {reader}"))
        .body(AxumBody::from("{not json"))
        .unwrap();
    let a = h.send(req).await;
    assert_eq!((a.status, a.error()), (StatusCode::FORBIDDEN, "token lacks scope tokens:manage"));
}

#[tokio::test]
async fn bodies_must_be_bounded_json_with_known_fields() {
    let h = Harness::new().await;
    let m = h.mint("alice", &["tokens:manage"]).await;
    let auth = format!("Bearer {m}");
    let post = |ct: Option<&str>, body: String| {
        let mut r = http::Request::post("/admin/v1/tokens").header(header::AUTHORIZATION, &auth);
        if let Some(ct) = ct {
            r = r.header(header::CONTENT_TYPE, ct);
        }
        r.body(AxumBody::from(body)).unwrap()
    };
    let good = json!({"name": "ci", "scopes": ["code:read"], "orgs": ["acme"]}).to_string();
    let a = h.send(post(None, good.clone())).await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let a = h.send(post(Some("text/plain"), good)).await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let a = h.send(post(Some("application/json"), "x".repeat(4096))).await;
    assert_eq!(
        (a.status, a.error()),
        (StatusCode::PAYLOAD_TOO_LARGE, "the request body is larger than 2048 bytes")
    );
    let a = h.send(post(Some("application/json"), "{\"name\": ".into())).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().starts_with("malformed JSON: "), "{}", a.error());
    let cases = [
        (
            json!({"name": "ci", "scopes": ["code:read"], "orgs": "*", "colour": 1}),
            "colour: unknown field `colour`",
        ),
        (
            json!({"name": "ci", "scopes": ["code:delete"], "orgs": "*"}),
            "scopes: unknown scope `code:delete`",
        ),
        (json!({"name": "ci", "scopes": "code:read", "orgs": "*"}), "scopes: invalid type"),
        (
            json!({"name": "ci", "scopes": ["code:read"], "orgs": ["a/b"]}),
            "orgs: invalid organization `a/b`",
        ),
        (json!({"name": "ci", "scopes": ["code:read"]}), "missing field `orgs`"),
        (json!({"name": "", "scopes": ["code:read"], "orgs": "*"}), "name: "),
        (json!({"name": "ci", "scopes": [], "orgs": "*"}), "scopes: at least one scope"),
        (
            json!({"name": "ci", "scopes": ["code:read"], "orgs": "*", "expires_in": "1h", "expires_at": "2099-01-01T00:00:00Z"}),
            "expires_in: give expires_in or expires_at, not both",
        ),
        (
            json!({"name": "ci", "scopes": ["code:read"], "orgs": "*", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at: must be in the future",
        ),
    ];
    for (body, want) in cases {
        let a = h.call("POST", "/admin/v1/tokens", Some(&m), Some(body.clone())).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.json);
        assert!(a.error().starts_with(want), "{body}: {}", a.error());
    }
}

#[tokio::test]
async fn creating_follows_the_policy_and_defaults_the_lifespan() {
    let h = Harness::new().await;
    let m = h.mint("alice", &["tokens:manage"]).await;
    let root = h.mint("root", &["tokens:admin"]).await;
    let create = |scopes: Value, orgs: Value, extra: Value| {
        let mut b = json!({"name": "ci", "scopes": scopes, "orgs": orgs});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let a = h
        .call(
            "POST",
            "/admin/v1/tokens",
            Some(&m),
            Some(create(json!(["code:read"]), json!("*"), json!({}))),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.json);
    let t = &a.json["token"];
    assert_eq!((t["owner"].as_str(), t["state"].as_str()), (Some("alice"), Some("active")));
    assert!(a.json["secret"].as_str().unwrap().starts_with("patg_"));
    assert!(t.get("hash").is_none());
    let life = crate::admin::request::parse_time(t["expires_at"].as_str().unwrap()).unwrap()
        - crate::admin::request::parse_time(t["created_at"].as_str().unwrap()).unwrap();
    assert_eq!(life, 30 * 86400);

    let a = h
        .call(
            "POST",
            "/admin/v1/tokens",
            Some(&m),
            Some(create(json!(["tokens:admin"]), json!("*"), json!({}))),
        )
        .await;
    assert!(a.error().starts_with("policy.grantable_scopes: tokens:admin"), "{}", a.error());
    let a = h
        .call(
            "POST",
            "/admin/v1/tokens",
            Some(&root),
            Some(create(json!(["tokens:admin"]), json!("*"), json!({}))),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.json);
    let a = h
        .call(
            "POST",
            "/admin/v1/tokens",
            Some(&root),
            Some(create(json!(["full"]), json!("*"), json!({}))),
        )
        .await;
    assert_eq!(a.error(), "policy.allow_full: a token may not hold every scope");
    let a = h
        .call(
            "POST",
            "/admin/v1/tokens",
            Some(&root),
            Some(create(json!(["code:read"]), json!("*"), json!({"expires_in": "366d"}))),
        )
        .await;
    assert_eq!(
        (a.status, a.error()),
        (StatusCode::BAD_REQUEST, "policy.max_lifespan: tokens may live at most 365d")
    );
    let a = h
        .call(
            "POST",
            "/admin/v1/tokens",
            Some(&m),
            Some(create(json!(["code:read"]), json!("*"), json!({"owner": "bob"}))),
        )
        .await;
    assert_eq!((a.status, a.error()), (StatusCode::FORBIDDEN, "token lacks scope tokens:admin"));
}

#[tokio::test]
async fn writes_from_web_pages_are_refused() {
    let h = Harness::new().await;
    let m = h.mint("alice", &["tokens:manage"]).await;
    let req = http::Request::builder()
        .method(Method::POST)
        .uri("/admin/v1/owners/alice/revoke")
        .header(header::AUTHORIZATION, format!("Bearer {m}"))
        .header(header::ORIGIN, "https://evil.example")
        .body(AxumBody::empty())
        .unwrap();
    let a = h.send(req).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = h.call("GET", "/admin/v1/tokens", Some(&m), None).await;
    assert_eq!(a.json["tokens"].as_array().unwrap().len(), 1, "nothing was revoked");
}

#[tokio::test]
async fn leak_reports_revoke_live_tokens_and_are_limited() {
    let h = Harness::new().await;
    let victim = h.mint("alice", &["code:read"]).await;
    let body = json!({"secrets": [victim, "patg_notatoken", victim]});
    let a = h.call("POST", "/admin/v1/leaked", None, Some(body.clone())).await;
    assert_eq!((a.status, &a.json), (StatusCode::OK, &json!({"revoked": 1})));
    let a = h.call("GET", "/admin/v1/ready", None, None).await;
    assert_eq!(a.json["tokens"], 0, "the revoke is applied to memory before the answer");
    let a = h
        .call("POST", "/admin/v1/leaked", None, Some(json!({"secrets": ["a", "b", "c", "d"]})))
        .await;
    assert_eq!((a.status, a.error()), (StatusCode::BAD_REQUEST, "secrets: at most 3 in one report"));
    let a = h.call("POST", "/admin/v1/leaked", None, Some(body)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(a.headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn events_of_others_are_skipped_for_owners_and_waits_end_on_shutdown() {
    let h = Harness::new().await;
    let alice = h.mint("alice", &["tokens:read"]).await;
    h.mint("bob", &["code:read"]).await;
    let root = h.mint("root", &["tokens:admin"]).await;
    let a = h.call("GET", "/admin/v1/events", Some(&root), None).await;
    assert_eq!(a.json["events"].as_array().unwrap().len(), 3);
    assert_eq!(a.json["next"], 3);
    let a = h.call("GET", "/admin/v1/events", Some(&alice), None).await;
    let events = a.json["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0]["owner"].as_str(), events[0]["kind"].as_str()),
        (Some("alice"), Some("created"))
    );
    assert_eq!(a.json["next"], 3);
    let a = h.call("GET", "/admin/v1/events?since=1&limit=1", Some(&alice), None).await;
    assert_eq!(a.json, json!({"events": [], "next": 2}));
    for (q, want) in [
        ("limit=0", "limit: must be a whole number from 1 to 1000"),
        ("since=-1", "since: must be a whole number from 0"),
        ("wait=soon", "wait: `soon` is not a duration"),
        ("colour=red", "unknown query parameter `colour`"),
    ] {
        let a = h.call("GET", &format!("/admin/v1/events?{q}"), Some(&root), None).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{q}");
        assert!(a.error().starts_with(want), "{q}: {}", a.error());
    }
    // A long poll ends when the server stops.
    let started = std::time::Instant::now();
    let poll = h.call("GET", "/admin/v1/events?since=3&wait=60s", Some(&root), None);
    let stop = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        h._stop.send(true).unwrap();
    };
    let (a, ()) = tokio::join!(poll, stop);
    assert_eq!(a.json, json!({"events": [], "next": 3}));
    assert!(started.elapsed() < Duration::from_millis(1500));
}
