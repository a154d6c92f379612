//! The admin router called directly, without sockets, over a SQLite store in a temporary
//! folder. The end-to-end tests over HTTP are in `tests/it/admin.rs`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
use crate::guard::lockout::Lockout;
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
        max_connections_per_ip: 8,
        header_read_timeout: Duration::from_secs(5),
        max_header_bytes: 16 * 1024,
        shutdown_grace: Duration::from_secs(1),
        tls: None,
        policy: Policy {
            max_lifespan: Duration::from_secs(365 * 86400),
            default_lifespan: Duration::from_secs(30 * 86400),
            grantable_scopes: all_but_admin(),
            allow_all_orgs: true,
            allow_full: false,
            rotation_grace: Duration::from_secs(10),
        },
        console: super::sessions::Config::default(),
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
        Harness::with(config()).await
    }

    async fn with(config: Config) -> Harness {
        let h = Harness::unlistened_with(config).await;
        h.state.proxy_listening();
        h
    }

    /// A harness whose proxy listener is not up yet.
    async fn unlistened() -> Harness {
        Harness::unlistened_with(config()).await
    }

    async fn unlistened_with(config: Config) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Location::Sqlite(dir.path().join("t.db"))).await.unwrap();
        let tokens = Arc::new(TokenCache::default());
        follow::load(&store, &tokens).await.unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let state = AdminState::new(config, store, tokens, stop_rx);
        Harness {
            _dir: dir,
            _stop: stop_tx,
            app: router(state.clone()),
            state,
        }
    }

    /// A token minted on the store, as the CLI does, and applied to memory.
    async fn mint(&self, owner: &str, scopes: &[&str]) -> String {
        self.mint_with_id(owner, scopes).await.1
    }

    /// As [`Harness::mint`], with the token's id.
    async fn mint_with_id(&self, owner: &str, scopes: &[&str]) -> (String, String) {
        let created = self
            .state
            .store()
            .create(
                NewToken {
                    repos: Default::default(),
                    allow_from: Default::default(),
                    name: "t".into(),
                    owner: owner.into(),
                    orgs: Orgs::All,
                    scopes: ScopeSet::parse(scopes).unwrap(),
                    lifespan: Duration::from_secs(3600),
                },
                &crate::audit::Actor::default(),
            )
            .await
            .unwrap();
        self.state.applied().await;
        (created.record.id, created.secret.expose().to_owned())
    }

    async fn send(&self, req: http::Request<AxumBody>) -> Answer {
        let res = TowerToHyperService::new(self.app.clone()).call(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        // Every answer is JSON but the metrics' text, which is kept as a JSON string.
        let json = match headers.get(header::CONTENT_TYPE) {
            Some(t) if t.as_bytes().starts_with(b"application/openmetrics-text") => {
                Value::String(String::from_utf8_lossy(&bytes).into_owned())
            }
            _ => serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes))),
        };
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
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json,
        json!({"status": "ready", "seq": 0, "tokens": 0, "store": "reachable",
               "version": crate::build_info::VERSION, "commit": crate::build_info::COMMIT})
    );
    let a = h.call("GET", "/readyz", None, None).await;
    assert_eq!((a.status, &a.json["status"]), (StatusCode::OK, &json!("ready")));
    let a = h.call("GET", "/healthz", None, None).await;
    assert_eq!(a.json, json!({"status": "ok"}));
}

#[tokio::test]
async fn readiness_waits_for_the_proxy_listener() {
    let h = Harness::unlistened().await;
    for path in [paths::READY, paths::READYZ] {
        let a = h.call("GET", path, None, None).await;
        assert_eq!((a.status, &a.json["status"]), (StatusCode::SERVICE_UNAVAILABLE, &json!("starting")));
    }
    let a = h.call("GET", paths::HEALTHZ, None, None).await;
    assert_eq!(a.status, StatusCode::OK);
    h.state.proxy_listening();
    let a = h.call("GET", paths::READYZ, None, None).await;
    assert_eq!(a.status, StatusCode::OK);
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
    let m = h.mint("alice", &["tokens:manage", "code:manage", "agentpools:manage"]).await;
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
        (
            json!({"name": "ci", "scopes": ["code:read"], "orgs": "*", "expires_at": "0017-09-13T14:20:43.128807Z"}),
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
    let m = h.mint("alice", &["tokens:manage", "code:manage", "agentpools:manage"]).await;
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
    let m = h.mint("alice", &["tokens:manage", "code:manage", "agentpools:manage"]).await;
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

/// A request body that never ends, as a client that stops sending would make.
struct NeverEnds;

impl http_body::Body for NeverEnds {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn manage_cannot_take_over_or_change_a_token_it_could_not_create() {
    let h = Harness::new().await;
    let manage = h.mint("alice", &["tokens:manage", "code:manage", "agentpools:manage"]).await;
    let (admin_id, admin) = h.mint_with_id("alice", &["tokens:admin"]).await;
    let root = h.mint("root", &["tokens:admin"]).await;
    let path = format!("/admin/v1/tokens/{admin_id}");
    // Regenerating would hand tokens:manage the secret of a tokens:admin token.
    let a = h.call("POST", &format!("{path}/regenerate"), Some(&manage), None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.json);
    assert!(
        a.error()
            .starts_with("policy.grantable_scopes: tokens:admin may only be granted with tokens:admin"),
        "{}",
        a.error()
    );
    assert!(a.json.get("secret").is_none());
    // Nor may it keep that token alive longer, or change it at all.
    for body in [
        json!({"expires_in": "300d"}),
        json!({"name": "mine now"}),
        json!({"scopes": ["tokens:admin"]}),
    ] {
        let a = h.call("PATCH", &path, Some(&manage), Some(body.clone())).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.json);
        assert!(a.error().starts_with("policy.grantable_scopes: "), "{body}: {}", a.error());
    }
    // Narrowing it to what alice's manager could grant is a token it could create: allowed.
    let a = h
        .call("PATCH", &path, Some(&manage), Some(json!({"scopes": ["tokens:read"]})))
        .await;
    assert_eq!(
        (a.status, &a.json["scopes"]),
        (StatusCode::OK, &json!(["tokens:read"])),
        "{}",
        a.json
    );
    let a = h.call("GET", "/admin/v1/tokens", Some(&admin), None).await;
    assert_eq!(a.status, StatusCode::OK, "the old secret still works, now for reading only");
    let a = h.call("POST", &format!("{path}/regenerate"), Some(&manage), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    // The admin may regenerate a tokens:admin token; revoking is open to the owner.
    let (other_admin, _) = h.mint_with_id("alice", &["tokens:admin"]).await;
    let a = h
        .call("POST", &format!("/admin/v1/tokens/{other_admin}/regenerate"), Some(&root), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let a = h
        .call("POST", &format!("/admin/v1/tokens/{other_admin}/revoke"), Some(&manage), None)
        .await;
    assert_eq!((a.status, &a.json["state"]), (StatusCode::OK, &json!("revoked")));
}

#[tokio::test]
async fn changes_and_regenerations_obey_allow_full_and_allow_all_orgs() {
    let mut c = config();
    c.policy.allow_all_orgs = false;
    let h = Harness::with(c).await;
    let root = h.mint("root", &["tokens:admin"]).await;
    // Made with the CLI, which the policy does not bind: every scope, every organization.
    let (full, _) = h.mint_with_id("bob", &["full"]).await;
    let path = format!("/admin/v1/tokens/{full}");
    let a = h.call("POST", &format!("{path}/regenerate"), Some(&root), None).await;
    assert_eq!(
        (a.status, a.error()),
        (StatusCode::BAD_REQUEST, "policy.allow_full: a token may not hold every scope")
    );
    let a = h.call("PATCH", &path, Some(&root), Some(json!({"name": "renamed"}))).await;
    assert_eq!(a.error(), "policy.allow_full: a token may not hold every scope");
    let a = h.call("PATCH", &path, Some(&root), Some(json!({"scopes": ["code:read"]}))).await;
    assert!(a.error().starts_with("policy.allow_all_orgs: "), "{}", a.error());
    let a = h
        .call("PATCH", &path, Some(&root), Some(json!({"scopes": ["code:read"], "orgs": "*"})))
        .await;
    assert!(a.error().starts_with("policy.allow_all_orgs: "), "{}", a.error());
    let a = h
        .call(
            "PATCH",
            &path,
            Some(&root),
            Some(json!({"scopes": ["code:read"], "orgs": ["acme"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let a = h.call("PATCH", &path, Some(&root), Some(json!({"expires_in": "366d"}))).await;
    assert_eq!(a.error(), "policy.max_lifespan: tokens may live at most 365d");
    let a = h.call("POST", &format!("{path}/regenerate"), Some(&root), None).await;
    assert_eq!(a.status, StatusCode::OK, "within the policy now: {}", a.json);
}

#[tokio::test]
async fn hostile_ids_owners_and_queries_get_a_short_clean_answer_before_the_store() {
    let h = Harness::new().await;
    let root = h.mint("root", &["tokens:admin"]).await;
    let alice = h.mint("alice", &["tokens:manage", "code:manage", "agentpools:manage"]).await;
    let long = "a".repeat(5000);
    for id in ["%00", "a%0Ab", "a%2Fb", "%E2%80%AE", long.as_str()] {
        for (method, suffix) in [("GET", ""), ("PATCH", ""), ("POST", "/regenerate"), ("POST", "/revoke")] {
            let body = (method == "PATCH").then(|| json!({"name": "x"}));
            let a = h.call(method, &format!("/admin/v1/tokens/{id}{suffix}"), Some(&root), body).await;
            assert_eq!(a.status, StatusCode::NOT_FOUND, "{method} {id}: {}", a.json);
            let e = a.error();
            assert!(
                e.starts_with("no token with id ") && e.chars().count() <= request::MAX_SHOWN + 1,
                "{e}"
            );
            assert!(!e.chars().any(|c| c.is_control() || c == '\u{202e}'), "{e:?}");
        }
    }
    let a = h.call("GET", "/admin/v1/tokens/%FF", Some(&root), None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    for owner in ["%00", "%20alice", "a%0Ab"] {
        let a = h.call("POST", &format!("/admin/v1/owners/{owner}/revoke"), Some(&root), None).await;
        assert_eq!(
            (a.status, a.error()),
            (
                StatusCode::BAD_REQUEST,
                "owner: must be 1 to 200 characters without control characters"
            ),
            "{owner}"
        );
        let a = h.call("GET", &format!("/admin/v1/tokens?owner={owner}"), Some(&root), None).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{owner}");
        // Without tokens:admin another owner is refused first, whatever its name.
        let a = h
            .call("POST", &format!("/admin/v1/owners/{owner}/revoke"), Some(&alice), None)
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{owner}");
    }
    let a = h.call("GET", "/admin/v1/tokens?owner=", Some(&root), None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    for q in [
        "a%0Ab=1",
        "%E2%80%AE=1",
        "wait=%0A",
        "limit=-1",
        "limit=99999999999999999999",
        "since=-5",
        "since=x",
        "after=",
        "after=1.%00",
    ] {
        let a = h.call("GET", &format!("/admin/v1/events?{q}"), Some(&root), None).await;
        let b = h.call("GET", &format!("/admin/v1/tokens?{q}"), Some(&root), None).await;
        for a in [a, b] {
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{q}: {}", a.json);
            assert!(
                !a.error().chars().any(|c| c.is_control() || c == '\u{202e}'),
                "{q}: {:?}",
                a.error()
            );
        }
    }
}

#[tokio::test]
async fn an_endless_wait_is_capped_at_max_wait() {
    let mut c = config();
    c.max_wait = Duration::from_millis(300);
    let h = Harness::with(c).await;
    let root = h.mint("root", &["tokens:admin"]).await;
    for wait in ["99999999999999999999999y", "584942417355y", "1000000h"] {
        let started = std::time::Instant::now();
        let a = h
            .call("GET", &format!("/admin/v1/events?since=9&wait={wait}"), Some(&root), None)
            .await;
        assert_eq!((a.status, &a.json), (StatusCode::OK, &json!({"events": [], "next": 9})), "{wait}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(2),
            "{wait}: {took:?}"
        );
    }
}

#[tokio::test]
async fn a_body_that_never_ends_is_408_and_a_limited_leak_report_is_not_read() {
    let mut c = config();
    c.header_read_timeout = Duration::from_millis(200);
    let h = Harness::with(c).await;
    let m = h.mint("alice", &["tokens:manage", "code:manage", "agentpools:manage"]).await;
    let started = std::time::Instant::now();
    let req = http::Request::post("/admin/v1/tokens")
        .header(header::AUTHORIZATION, format!("Bearer {m}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(AxumBody::new(NeverEnds))
        .unwrap();
    let a = h.send(req).await;
    assert_eq!(
        (a.status, a.error()),
        (StatusCode::REQUEST_TIMEOUT, "the request body did not arrive within 200ms")
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let leak = || {
        http::Request::post("/admin/v1/leaked")
            .header(header::CONTENT_TYPE, "application/json")
            .body(AxumBody::new(NeverEnds))
            .unwrap()
    };
    assert_eq!(h.send(leak()).await.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(h.send(leak()).await.status, StatusCode::REQUEST_TIMEOUT);
    // Over the limit (2 a minute): refused before the body is read.
    let started = std::time::Instant::now();
    let a = h.send(leak()).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(started.elapsed() < Duration::from_millis(150), "{:?}", started.elapsed());
}

#[tokio::test]
async fn waiting_event_requests_are_bounded() {
    let mut c = config();
    c.max_connections = 4;
    let h = Harness::with(c).await;
    let root = h.mint("root", &["tokens:admin"]).await;
    assert_eq!(waiting_slots(4), 3);
    assert_eq!((waiting_slots(1), waiting_slots(256)), (1, 192));
    let poll = || h.call("GET", "/admin/v1/events?since=1&wait=60s", Some(&root), None);
    let started = std::time::Instant::now();
    let waiting = futures_util::future::join_all((0..3).map(|_| poll()));
    let more = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let refused = poll().await;
        // One that need not wait is answered as always.
        let now = h.call("GET", "/admin/v1/events?since=0", Some(&root), None).await;
        let _ = h._stop.send(true);
        (refused, now)
    };
    let (done, (refused, now)) = tokio::join!(waiting, more);
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.json);
    assert_eq!(refused.headers[header::RETRY_AFTER], "1");
    assert!(
        refused.error().starts_with("too many event feed requests are waiting"),
        "{}",
        refused.error()
    );
    assert_eq!((now.status, now.json["events"].as_array().unwrap().len()), (StatusCode::OK, 1));
    for a in done {
        assert_eq!(a.json, json!({"events": [], "next": 1}));
    }
    assert!(started.elapsed() < Duration::from_secs(2), "the waits ended on shutdown");
    // Their slots are free again.
    assert_eq!(h.state.waiters().available_permits(), 3);
}

#[test]
fn the_served_openapi_document_carries_the_limits_and_every_scope() {
    let mut c = config();
    c.max_secrets_per_report = 7;
    let doc: Value = serde_json::from_str(&openapi_for(&c, c.listen)).unwrap();
    assert_eq!(doc["components"]["schemas"]["LeakReport"]["properties"]["secrets"]["maxItems"], 7);
    let names: Vec<&str> = doc["components"]["schemas"]["ScopeName"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut want = vec!["full"];
    want.extend(crate::auth::scope::Scope::all().map(|s| s.name()));
    assert_eq!(names, want);
}

#[test]
fn the_openapi_document_lists_every_status_each_operation_can_answer() {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let codes = |method: &str, path: &str| -> Vec<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    // Every operation that reads the Authorization header or a path can answer 400; every one
    // that touches the store, 500 and 503; every one with a body, 408, 413 and 415.
    for (method, path) in paths::ROUTES {
        let m = method.to_lowercase();
        let has = codes(&m, path);
        if *path != paths::LEAKED && paths::OPEN.contains(path) {
            continue;
        }
        for code in ["400", "403", "500", "503"] {
            assert!(has.iter().any(|c| c == code), "{method} {path} lacks {code}");
        }
        if *path != paths::LEAKED {
            assert!(has.iter().any(|c| c == "401"), "{method} {path} lacks 401");
        }
        let body = doc["paths"][path][&m].get("requestBody").is_some();
        for code in ["408", "413", "415"] {
            assert_eq!(has.iter().any(|c| c == code), body, "{method} {path}: {code}");
        }
    }
    assert!(codes("get", paths::EVENTS).contains(&"429".to_owned()));
    assert!(codes("post", paths::LEAKED).contains(&"429".to_owned()));
}

/// The response object at `r`, following a `$ref`.
fn resolve<'a>(doc: &'a Value, r: &'a Value) -> &'a Value {
    match r.get("$ref").and_then(Value::as_str) {
        Some(pointer) => doc.pointer(pointer.trim_start_matches('#')).unwrap_or_else(|| panic!("{pointer}")),
        None => r,
    }
}

#[tokio::test]
async fn every_operation_the_lockout_guards_documents_429_with_retry_after() {
    let h = Harness::new().await;
    let lockout = Lockout::new(crate::guard::lockout::Config {
        max_failures: 1,
        ..Default::default()
    });
    let blocked: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    lockout.failed(blocked.ip(), Instant::now());
    h.state.replace_lockout(Some(Arc::new(lockout)));
    let root = h.mint("root", &["tokens:admin"]).await;
    let doc: Value = serde_json::from_str(&openapi_for(&config(), config().listen)).unwrap();
    // Ask every route from the blocked address, with a good token and a body: each that
    // answers the lockout's 429 must document it, with its Retry-After.
    let mut guarded = Vec::new();
    for (method, path) in paths::ROUTES {
        let mut req = http::Request::builder()
            .method(*method)
            .uri(fill(path))
            .header(header::AUTHORIZATION, format!("Bearer {root}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(AxumBody::from("{}"))
            .unwrap();
        req.extensions_mut().insert(ConnectInfo(blocked));
        let a = h.send(req).await;
        if a.status != StatusCode::TOO_MANY_REQUESTS {
            continue;
        }
        assert!(
            a.error().starts_with("too many failed authentications"),
            "{method} {path}: {}",
            a.error()
        );
        assert!(a.headers[header::RETRY_AFTER].to_str().unwrap().parse::<u64>().unwrap() >= 1);
        let answer = &doc["paths"][path][method.to_lowercase()]["responses"]["429"];
        assert!(answer.is_object(), "{method} {path} does not document the lockout's 429");
        let answer = resolve(&doc, answer);
        assert_eq!(answer["headers"]["Retry-After"]["required"], true, "{method} {path}: {answer}");
        assert_eq!(answer["headers"]["Retry-After"]["schema"]["type"], "integer");
        guarded.push((*method, *path));
    }
    // Every route that reads the caller's token is guarded; the three open to anyone are not.
    let want: Vec<(&str, &str)> = paths::ROUTES.iter().copied().filter(|(_, p)| !paths::OPEN.contains(p)).collect();
    assert_eq!(guarded, want);
}

#[tokio::test]
async fn servers_name_the_bound_listener_or_are_left_out() {
    // The file itself names no address: only the running server knows its own.
    let file: Value = serde_json::from_str(OPENAPI).unwrap();
    assert!(file.get("servers").is_none());
    let v6 = |s: &str| SocketAddr::from(s.parse::<std::net::SocketAddrV6>().unwrap());
    let cases = [
        (v6("[::1]:9090"), false, Some("http://[::1]:9090")),
        ("127.0.0.1:9090".parse().unwrap(), false, Some("http://127.0.0.1:9090")),
        ("10.1.2.3:8443".parse().unwrap(), true, Some("https://10.1.2.3:8443")),
        (
            SocketAddr::V6(std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 9090, 0, 3)),
            false,
            Some("http://[fe80::1%253]:9090"),
        ),
        // Every interface, or a port the kernel has yet to pick: no one address to name.
        ("0.0.0.0:9090".parse().unwrap(), false, None),
        (v6("[::]:9090"), true, None),
        ("127.0.0.1:0".parse().unwrap(), false, None),
    ];
    for (listen, tls, want) in cases {
        assert_eq!(server_url(listen, tls).as_deref(), want, "{listen} tls {tls}");
    }
    let mut c = config();
    c.listen = "0.0.0.0:9090".parse().unwrap();
    let doc: Value = serde_json::from_str(&openapi_for(&c, c.listen)).unwrap();
    assert!(doc.get("servers").is_none());
    // The served document names the address the listener is bound to, not the config's port 0.
    let h = Harness::new().await;
    let a = h.call("GET", paths::OPENAPI, None, None).await;
    assert!(a.json.get("servers").is_none(), "{}", a.json["servers"]);
    h.state.bound_to("127.0.0.1:39090".parse().unwrap());
    let a = h.call("GET", paths::OPENAPI, None, None).await;
    assert_eq!(a.json["servers"][0]["url"], "http://127.0.0.1:39090");
    assert_eq!(a.json["servers"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn optional_members_may_be_left_out_but_not_null() {
    let h = Harness::new().await;
    let root = h.mint("root", &["tokens:admin"]).await;
    let base = json!({"name": "ci", "scopes": ["code:read"], "orgs": ["acme"]});
    let with = |base: &Value, field: &str, v: Value| {
        let mut b = base.clone();
        b[field] = v;
        b
    };
    // Every member of the create body, required or not, refuses null and names itself.
    for field in ["name", "owner", "scopes", "orgs", "expires_in", "expires_at"] {
        let a = h
            .call("POST", paths::TOKENS, Some(&root), Some(with(&base, field, Value::Null)))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{field}: {}", a.json);
        assert!(a.error().starts_with(&format!("{field}: ")), "{field}: {}", a.error());
    }
    for field in ["owner", "expires_in", "expires_at"] {
        let a = h
            .call("POST", paths::TOKENS, Some(&root), Some(with(&base, field, Value::Null)))
            .await;
        assert!(
            a.error().starts_with(&format!("{field}: may not be null; leave it out instead")),
            "{}",
            a.error()
        );
    }
    let a = h.call("GET", paths::TOKENS, Some(&root), None).await;
    assert_eq!(a.json["tokens"].as_array().unwrap().len(), 1, "nothing was created");
    // Left out, each takes its default.
    let a = h.call("POST", paths::TOKENS, Some(&root), Some(base.clone())).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.json);
    assert_eq!(a.json["token"]["owner"], "root");
    let id = a.json["token"]["id"].as_str().unwrap().to_owned();
    let before = a.json["token"].clone();
    // A change: null is not "leave it as it is" (nor, as in a merge patch, "remove it").
    let path = format!("/admin/v1/tokens/{id}");
    for field in ["name", "scopes", "orgs", "expires_in", "expires_at"] {
        let body = json!({"name": "renamed", field: null});
        let a = h.call("PATCH", &path, Some(&root), Some(body.clone())).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.json);
        assert!(
            a.error().starts_with(&format!("{field}: may not be null; leave it out instead")),
            "{body}: {}",
            a.error()
        );
    }
    let a = h.call("GET", &path, Some(&root), None).await;
    assert_eq!(a.json, before, "no change was made");
    let a = h.call("PATCH", &path, Some(&root), Some(json!({"name": "renamed"}))).await;
    assert_eq!((a.status, &a.json["name"]), (StatusCode::OK, &json!("renamed")));
    // The document says the same: no optional member of either body admits null.
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    for schema in ["CreateRequest", "UpdateRequest"] {
        for (name, member) in doc["components"]["schemas"][schema]["properties"].as_object().unwrap() {
            let member = resolve(&doc, member);
            assert!(!member.to_string().contains("\"null\""), "{schema}.{name} admits null: {member}");
        }
    }
}

#[tokio::test]
async fn a_follower_sees_each_of_its_events_once_and_cursors_never_cross_owners() {
    let h = Harness::new().await;
    let alice = h.mint("alice", &["tokens:manage", "code:manage", "agentpools:manage"]).await;
    let root = h.mint("root", &["tokens:admin"]).await;
    for i in 0..6 {
        h.mint(if i % 2 == 0 { "bob" } else { "alice" }, &["code:read"]).await;
    }
    let (bob_id, _) = h.mint_with_id("bob", &["code:read"]).await;
    h.call("POST", &format!("/admin/v1/tokens/{bob_id}/revoke"), Some(&root), None)
        .await;
    // Follow one event at a time from the start: every seq once, in order, only alice's.
    let (mut since, mut seen) = (0, Vec::new());
    loop {
        let a = h
            .call("GET", &format!("/admin/v1/events?since={since}&limit=1"), Some(&alice), None)
            .await;
        let next = a.json["next"].as_i64().unwrap();
        for e in a.json["events"].as_array().unwrap() {
            assert_eq!(e["owner"], "alice", "{e}");
            seen.push(e["seq"].as_i64().unwrap());
        }
        if next == since {
            break;
        }
        assert!(next > since);
        since = next;
    }
    assert_eq!(seen, vec![1, 4, 6, 8], "alice's four creations, each once");
    assert_eq!(since, 10, "and past everyone else's");
    let a = h.call("GET", "/admin/v1/events?since=0&limit=1000", Some(&root), None).await;
    let all: Vec<i64> = a.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(all, (1..=10).collect::<Vec<_>>());
    // A cursor taken from bob's tokens pages through alice's own, never bob's.
    let a = h.call("GET", "/admin/v1/tokens?owner=bob&limit=1", Some(&root), None).await;
    let cursor = a.json["next"].as_str().unwrap().to_owned();
    let a = h.call("GET", &format!("/admin/v1/tokens?after={cursor}"), Some(&alice), None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.json["tokens"].as_array().unwrap().iter().all(|t| t["owner"] == "alice"),
        "{}",
        a.json
    );
    let a = h
        .call("GET", &format!("/admin/v1/tokens?owner=bob&after={cursor}"), Some(&alice), None)
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

#[test]
fn the_openapi_document_names_every_audit_action() {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let names: Vec<&str> = crate::audit::Action::ALL.iter().map(|a| a.as_str()).collect();
    let enums = [
        "/components/schemas/AuditEntry/properties/action/enum",
        "/paths/~1admin~1v1~1audit/get/parameters/5/schema/enum",
    ];
    for pointer in enums {
        let listed: Vec<&str> = doc
            .pointer(pointer)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(listed, names, "{pointer}");
    }
    assert_eq!(doc.pointer("/paths/~1admin~1v1~1audit/get/parameters/5/name").unwrap(), "action");
}

#[tokio::test]
async fn the_audit_trail_is_read_with_auditlog_read_and_refusals_are_recorded() {
    let h = Harness::new().await;
    let (auditor, writer) = crate::audit::writer::start(h.state.store().clone(), &crate::audit::Config::default());
    h.state.set_auditor(auditor);
    let root = h.mint("root", &["tokens:admin", "auditlog:read"]).await;
    let plain = h.mint("alice", &["code:read"]).await;
    let a = h.call("GET", paths::AUDIT, Some(&plain), None).await;
    assert_eq!((a.status, a.error()), (StatusCode::FORBIDDEN, "token lacks scope auditlog:read"));
    // A change the policy refuses.
    let body = json!({"name": "x", "owner": "alice", "scopes": ["full"], "orgs": "*"});
    let a = h.call("POST", paths::TOKENS, Some(&root), Some(body)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    writer.finish().await;
    let a = h.call("GET", &format!("{}?outcome=failure", paths::AUDIT), Some(&root), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let actions: Vec<&str> = a.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["policy_refusal", "auth_refused"], "{}", a.json);
    assert_eq!(a.json["entries"][1]["owner"], "alice");
    assert_eq!(a.json["entries"][1]["route"], paths::AUDIT);
    assert_eq!(
        a.json["entries"][0]["reason"],
        "policy.allow_full: a token may not hold every scope"
    );
    assert_eq!(a.json["next"], Value::Null);
}
