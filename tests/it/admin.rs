//! The admin API over HTTP: every endpoint, its errors and its authorization, against a
//! real `patgate serve` whose first admin token is minted with the CLI.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// An agents route to a recording upstream: the proxy answers 200 to a live token with
/// `agentpools:read`, 401 otherwise.
fn agents(up: &Upstream) -> String {
    format!(
        "[[routes]]\npath = \"/{{org}}/_apis/distributedtask/**\"\nupstream = \"http://{}\"\nrules = [ {{ scope = \"agentpools:read\" }} ]\n",
        up.addr
    )
}

/// The proxy's status for a request with this token.
fn proxy_status(p: &TestPatgate, token: &str) -> u16 {
    http(
        p.addr,
        &format!("GET /acme/_apis/distributedtask/pools HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    )
    .status
}

fn create(p: &TestPatgate, caller: &str, body: Value) -> Api {
    p.api("POST", "/admin/v1/tokens", Some(caller), Some(&body))
}

/// Creates a token through the API and returns (id, secret).
fn created(p: &TestPatgate, caller: &str, body: Value) -> (String, String) {
    let a = create(p, caller, body);
    assert_eq!(a.status, 201, "{:?}", a.json);
    (
        a.json["token"]["id"].as_str().unwrap().to_owned(),
        a.json["secret"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn tokens_are_created_read_listed_and_changed() {
    let p = TestPatgate::start("");
    let root = p.mint_caller("root", "tokens:admin");
    let a = create(
        &p,
        &root.token,
        json!({"name": "ci", "owner": "alice", "scopes": ["code:write", "agentpools:read"], "orgs": ["acme", "beta"], "expires_in": "2h"}),
    );
    assert_eq!(a.status, 201, "{:?}", a.json);
    assert_eq!(a.raw.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(a.raw.header("cache-control").as_deref(), Some("no-store"));
    let t = &a.json["token"];
    let id = t["id"].as_str().unwrap().to_owned();
    let secret = a.json["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("patg_") && secret.len() == 51);
    assert_eq!(t["owner"], "alice");
    assert_eq!(t["orgs"], json!(["acme", "beta"]));
    assert_eq!(t["scopes"], json!(["code:write", "agentpools:read"]));
    assert_eq!(t["state"], "active");
    assert_eq!(t["revoked_at"], Value::Null);
    for field in ["created_at", "expires_at"] {
        assert!(t[field].as_str().unwrap().ends_with('Z'), "{field}");
    }
    assert!(t.get("hash").is_none());

    // Read one; never a secret again.
    let a = p.api("GET", &format!("/admin/v1/tokens/{id}"), Some(&root.token), None);
    assert_eq!(a.status, 200);
    assert_eq!(a.json["id"], id.as_str());
    assert!(!a.raw.body.contains("patg_"));
    let a = p.api("GET", "/admin/v1/tokens/nosuchid", Some(&root.token), None);
    assert_eq!((a.status, a.error()), (404, "no token with id nosuchid"));

    // List, filter, page.
    created(
        &p,
        &root.token,
        json!({"name": "two", "owner": "alice", "scopes": ["code:read"], "orgs": "*"}),
    );
    let a = p.api("GET", "/admin/v1/tokens?owner=alice", Some(&root.token), None);
    assert_eq!(a.json["tokens"].as_array().unwrap().len(), 2);
    assert!(!a.raw.body.contains("patg_"));
    let a = p.api("GET", "/admin/v1/tokens", Some(&root.token), None);
    assert_eq!(a.json["tokens"].as_array().unwrap().len(), 3, "every owner's, root's own too");
    let a = p.api("GET", "/admin/v1/tokens?owner=alice&limit=1", Some(&root.token), None);
    assert_eq!(a.json["tokens"].as_array().unwrap().len(), 1);
    let first = a.json["tokens"][0]["name"].clone();
    let next = a.json["next"].as_str().unwrap().to_owned();
    let a = p.api(
        "GET",
        &format!("/admin/v1/tokens?owner=alice&limit=1&after={next}"),
        Some(&root.token),
        None,
    );
    let mut names = vec![first, a.json["tokens"][0]["name"].clone()];
    names.sort_by_key(|n| n.to_string());
    assert_eq!(names, vec![json!("ci"), json!("two")], "each once, over two pages");
    assert_eq!(a.json["next"], Value::Null);
    let a = p.api("GET", "/admin/v1/tokens?state=revoked", Some(&root.token), None);
    assert_eq!(a.json, json!({"tokens": [], "next": null}));
    for (q, want) in [
        ("state=gone", "state: must be active, expired or revoked"),
        ("limit=1001", "limit: must be a whole number from 1 to 1000"),
        ("after=nonsense", "after: not a `next` value"),
        ("limit=1&limit=2", "limit: given more than once"),
        ("colour=red", "unknown query parameter `colour`"),
    ] {
        let a = p.api("GET", &format!("/admin/v1/tokens?{q}"), Some(&root.token), None);
        assert_eq!(a.status, 400, "{q}");
        assert!(a.error().starts_with(want), "{q}: {}", a.error());
    }

    // Change: rename, narrow, move the expiry; never widen.
    let path = format!("/admin/v1/tokens/{id}");
    let a = p.api(
        "PATCH",
        &path,
        Some(&root.token),
        Some(&json!({"name": "ci-2", "scopes": ["code:read"], "orgs": ["acme"], "expires_in": "1h"})),
    );
    assert_eq!(a.status, 200, "{:?}", a.json);
    assert_eq!(
        (&a.json["name"], &a.json["scopes"], &a.json["orgs"]),
        (&json!("ci-2"), &json!(["code:read"]), &json!(["acme"]))
    );
    for (body, status, want) in [
        (json!({"scopes": ["code:write"]}), 400, "scopes: may only be narrowed"),
        (json!({"orgs": "*"}), 400, "organizations: may only be narrowed"),
        (json!({}), 400, "nothing to change"),
        (json!({"name": "x", "owner": "bob"}), 400, "owner: unknown field `owner`"),
        (json!({"scopes": ["nope"]}), 400, "scopes: unknown scope `nope`"),
        (
            json!({"expires_at": "2001-01-01T00:00:00Z"}),
            400,
            "expires_at: must be in the future",
        ),
        (json!({"expires_at": "soon"}), 400, "expires_at: `soon` is not an RFC 3339 time"),
    ] {
        let a = p.api("PATCH", &path, Some(&root.token), Some(&body));
        assert_eq!(a.status, status, "{body}: {:?}", a.json);
        assert!(a.error().starts_with(want), "{body}: {}", a.error());
    }
    let a = p.api("PATCH", "/admin/v1/tokens/nosuchid", Some(&root.token), Some(&json!({"name": "x"})));
    assert_eq!(a.status, 404);
    assert!(!p.log().contains(&secret) && !p.log().contains(&root.token));
}

#[test]
fn malformed_requests_are_refused_with_json_naming_the_problem() {
    let p = TestPatgate::start("[admin]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 2048\n");
    let root = p.mint_caller("root", "tokens:admin");
    let raw = |body: &str, content_type: &str| {
        p.api_raw(
            format!(
                "POST /admin/v1/tokens HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                root.token,
                body.len()
            )
            .as_bytes(),
        )
    };
    let a = raw("{\"name\": \"x\",", "application/json");
    assert_eq!(a.status, 400);
    assert!(a.error().starts_with("malformed JSON: "), "{}", a.error());
    let a = raw("name=x", "application/x-www-form-urlencoded");
    assert_eq!(
        (a.status, a.error()),
        (415, "send the body as JSON with Content-Type: application/json")
    );
    let a = raw(&format!("{{\"name\": \"{}\"}}", "x".repeat(4096)), "application/json");
    assert_eq!((a.status, a.error()), (413, "the request body is larger than 2048 bytes"));
    for (body, want) in [
        (
            json!({"name": "x", "scopes": ["code:read"], "orgs": "*", "ttl": 5}),
            "ttl: unknown field `ttl`",
        ),
        (
            json!({"name": "x", "scopes": ["code:read", "code:delete"], "orgs": "*"}),
            "scopes: unknown scope `code:delete`",
        ),
        (
            json!({"name": "x", "scopes": ["code:read"], "orgs": "*", "expires_in": "forever"}),
            // The lifespan reader's own words follow (src/auth/lifespan.rs).
            "expires_in: `forever` is not a",
        ),
        (
            json!({"name": "x", "scopes": ["code:read"], "orgs": "*", "expires_in": null}),
            "expires_in: may not be null; leave it out instead",
        ),
        (json!({"name": 5, "scopes": ["code:read"], "orgs": "*"}), "name: invalid type"),
        (json!({"scopes": ["code:read"], "orgs": "*"}), "missing field `name`"),
    ] {
        let a = create(&p, &root.token, body.clone());
        assert_eq!(a.status, 400, "{body}");
        assert!(a.error().starts_with(want), "{body}: {}", a.error());
    }
    // A secret sent in the wrong place is not echoed.
    let a = create(&p, &root.token, json!({"name": "x", "scopes": root.token, "orgs": "*"}));
    assert_eq!(a.status, 400);
    assert!(!a.raw.body.contains(&root.token), "{}", a.raw.body);
    // Authorization: none, unknown, unreadable.
    let a = p.api("GET", "/admin/v1/tokens", None, None);
    assert_eq!(a.status, 401);
    assert_eq!(a.raw.header("www-authenticate").as_deref(), Some("Bearer realm=\"patgate\""));
    let unknown = p.api(
        "GET",
        "/admin/v1/tokens",
        Some("patg_00000000000000000000000000000000000000000000aa"),
        None,
    );
    assert_eq!((unknown.status, unknown.error()), (401, a.error()));
    let a = p.api_raw(b"GET /admin/v1/tokens HTTP/1.1\r\nHost: a\r\nAuthorization: Basic !!!\r\nConnection: close\r\n\r\n");
    assert_eq!(a.status, 400);
    // Basic works as on the proxy.
    let a = p.api_raw(
        format!(
            "GET /admin/v1/tokens HTTP/1.1\r\nHost: a\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            basic("root", &root.token)
        )
        .as_bytes(),
    );
    assert_eq!(a.status, 200);
    let a = p.api("GET", "/admin/v2/tokens", Some(&root.token), None);
    assert_eq!((a.status, a.error()), (404, "no such endpoint"));
    let a = p.api("DELETE", "/admin/v1/tokens", Some(&root.token), None);
    assert_eq!(a.status, 405);
    assert!(a.json["error"].is_string());
    assert!(!p.log().contains(&root.token));
}

#[test]
fn owners_see_and_touch_only_their_own_tokens() {
    let p = TestPatgate::start("");
    let alice = p.mint_caller("alice", "tokens:manage,code:manage,agentpools:manage");
    let reader = p.mint_caller("alice", "tokens:read");
    let bob = p.mint_caller("bob", "tokens:manage,code:manage,agentpools:manage");
    let root = p.mint_caller("root", "tokens:admin");
    let (bobs, _) = created(&p, &bob.token, json!({"name": "b", "scopes": ["code:read"], "orgs": "*"}));
    let (alices, _) = created(&p, &alice.token, json!({"name": "a", "scopes": ["code:read"], "orgs": "*"}));

    // Bob's token does not exist for alice.
    let bobs_path = format!("/admin/v1/tokens/{bobs}");
    for (method, path, body) in [
        ("GET", bobs_path.clone(), None),
        ("PATCH", bobs_path.clone(), Some(json!({"name": "mine"}))),
        ("POST", format!("{bobs_path}/regenerate"), None),
        ("POST", format!("{bobs_path}/revoke"), None),
    ] {
        let a = p.api(method, &path, Some(&alice.token), body.as_ref());
        assert_eq!(
            (a.status, a.error()),
            (404, format!("no token with id {bobs}").as_str()),
            "{method} {path}"
        );
    }
    let a = p.api("GET", "/admin/v1/tokens?owner=bob", Some(&alice.token), None);
    assert_eq!((a.status, a.error()), (403, "token lacks scope tokens:admin"));
    let a = p.api("POST", "/admin/v1/owners/bob/revoke", Some(&alice.token), None);
    assert_eq!((a.status, a.error()), (403, "token lacks scope tokens:admin"));
    let a = create(
        &p,
        &alice.token,
        json!({"name": "x", "owner": "bob", "scopes": ["code:read"], "orgs": "*"}),
    );
    assert_eq!((a.status, a.error()), (403, "token lacks scope tokens:admin"));
    let a = p.api("GET", "/admin/v1/tokens", Some(&alice.token), None);
    let owners: Vec<&str> = a.json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["owner"].as_str().unwrap())
        .collect();
    assert_eq!(owners, vec!["alice"; 3], "only alice's, unasked");

    // Reading is not managing.
    let a = p.api("GET", &format!("/admin/v1/tokens/{alices}"), Some(&reader.token), None);
    assert_eq!(a.status, 200);
    let a = create(&p, &reader.token, json!({"name": "x", "scopes": ["code:read"], "orgs": "*"}));
    assert_eq!((a.status, a.error()), (403, "token lacks scope tokens:manage"));
    let a = p.api("POST", &format!("/admin/v1/tokens/{alices}/revoke"), Some(&reader.token), None);
    assert_eq!((a.status, a.error()), (403, "token lacks scope tokens:manage"));
    // A token with no tokens scope at all.
    let coder = p.mint_caller("alice", "code:write");
    let a = p.api("GET", "/admin/v1/tokens", Some(&coder.token), None);
    assert_eq!((a.status, a.error()), (403, "token lacks scope tokens:read"));

    // The admin sees and touches everyone's, and the writes name their actor.
    let a = p.api("GET", &bobs_path, Some(&root.token), None);
    assert_eq!(a.status, 200);
    let a = p.api("POST", &format!("{bobs_path}/revoke"), Some(&root.token), None);
    assert_eq!((a.status, &a.json["revoked_by"]), (200, &json!("root")));
    let a = p.api("POST", &format!("/admin/v1/tokens/{alices}/revoke"), Some(&alice.token), None);
    assert_eq!((a.status, &a.json["revoked_by"]), (200, &json!("alice")));
    // Alice revokes all of hers, her own caller token included.
    let a = p.api("POST", "/admin/v1/owners/alice/revoke", Some(&alice.token), None);
    assert_eq!(a.json, json!({"revoked": 3}));
    assert_eq!(p.api("GET", "/admin/v1/tokens", Some(&alice.token), None).status, 401);
    let a = p.api("POST", "/admin/v1/owners/bob/revoke", Some(&root.token), None);
    assert_eq!(a.json, json!({"revoked": 1}));
}

#[test]
fn policies_refuse_with_400_naming_the_policy() {
    let p = TestPatgate::start(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[policy]\nmax_lifespan = \"7d\"\ndefault_lifespan = \"1d\"\ngrantable_scopes = [\"code:write\", \"tokens:manage\"]\nallow_all_orgs = false\nallow_full = false\n",
    );
    let alice = p.mint_caller("alice", "tokens:manage,code:manage,agentpools:manage");
    let root = p.mint_caller("root", "tokens:admin");
    let body = |scopes: Value, orgs: Value, extra: Value| {
        let mut b = json!({"name": "n", "scopes": scopes, "orgs": orgs});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    for (caller, b, want) in [
        (
            &alice,
            body(json!(["code:manage"]), json!(["acme"]), json!({})),
            "policy.grantable_scopes: code:manage",
        ),
        (
            &alice,
            body(json!(["agentpools:read"]), json!(["acme"]), json!({})),
            "policy.grantable_scopes: agentpools:read",
        ),
        (&alice, body(json!(["code:read"]), json!("*"), json!({})), "policy.allow_all_orgs: "),
        (&root, body(json!(["code:read"]), json!("*"), json!({})), "policy.allow_all_orgs: "),
        (&root, body(json!(["full"]), json!(["acme"]), json!({})), "policy.allow_full: "),
        (
            &alice,
            body(json!(["code:read"]), json!(["acme"]), json!({"expires_in": "8d"})),
            "policy.max_lifespan: tokens may live at most 7d",
        ),
        (
            &root,
            body(json!(["code:read"]), json!(["acme"]), json!({"expires_at": "2099-01-01T00:00:00Z"})),
            "policy.max_lifespan: ",
        ),
    ] {
        let a = create(&p, &caller.token, b.clone());
        assert_eq!(a.status, 400, "{b}: {:?}", a.json);
        assert!(a.error().starts_with(want), "{b}: {}", a.error());
    }
    // What the policy allows; admins may grant beyond grantable_scopes.
    let (id, _) = created(&p, &alice.token, body(json!(["code:read"]), json!(["acme"]), json!({})));
    created(
        &p,
        &root.token,
        body(json!(["agentpools:manage"]), json!(["acme"]), json!({"expires_in": "7d"})),
    );
    // The default lifespan applies, and a change may not stretch a life past the maximum.
    let a = p.api("GET", &format!("/admin/v1/tokens/{id}"), Some(&alice.token), None);
    let life = |t: &Value| {
        let at = |f: &str| humantime::parse_rfc3339(t[f].as_str().unwrap()).unwrap();
        at("expires_at").duration_since(at("created_at")).unwrap()
    };
    assert_eq!(life(&a.json), Duration::from_secs(86400));
    let a = p.api(
        "PATCH",
        &format!("/admin/v1/tokens/{id}"),
        Some(&alice.token),
        Some(&json!({"expires_in": "8d"})),
    );
    assert_eq!((a.status, a.error()), (400, "policy.max_lifespan: tokens may live at most 7d"));
    let a = p.api(
        "PATCH",
        &format!("/admin/v1/tokens/{id}"),
        Some(&alice.token),
        Some(&json!({"expires_in": "6d"})),
    );
    assert_eq!(a.status, 200);
}

#[test]
fn regenerate_and_revoke_bite_on_the_proxy_as_soon_as_they_answer() {
    let up = spawn_upstream(false);
    let p = TestPatgate::start(&agents(&up));
    let alice = p.mint_caller("alice", "tokens:manage,code:manage,agentpools:manage");
    let (id, old) = created(
        &p,
        &alice.token,
        json!({"name": "agent", "scopes": ["agentpools:read"], "orgs": ["acme"]}),
    );
    assert_eq!(proxy_status(&p, &old), 200, "live as soon as created");

    let a = p.api("POST", &format!("/admin/v1/tokens/{id}/regenerate"), Some(&alice.token), None);
    assert_eq!(a.status, 200, "{:?}", a.json);
    let new = a.json["secret"].as_str().unwrap().to_owned();
    assert_eq!(a.json["token"]["id"], id.as_str());
    assert_ne!(new, old);
    assert_eq!(proxy_status(&p, &old), 401);
    assert_eq!(proxy_status(&p, &new), 200);

    let a = p.api("POST", &format!("/admin/v1/tokens/{id}/revoke"), Some(&alice.token), None);
    assert_eq!((a.status, &a.json["state"]), (200, &json!("revoked")));
    assert_eq!(proxy_status(&p, &new), 401);
    let again = p.api("POST", &format!("/admin/v1/tokens/{id}/revoke"), Some(&alice.token), None);
    assert_eq!(
        (again.status, &again.json["revoked_at"]),
        (200, &a.json["revoked_at"]),
        "idempotent"
    );
    for (method, path, body) in [
        ("POST", format!("/admin/v1/tokens/{id}/regenerate"), None),
        ("PATCH", format!("/admin/v1/tokens/{id}"), Some(json!({"name": "back"}))),
    ] {
        let a = p.api(method, &path, Some(&alice.token), body.as_ref());
        assert_eq!(
            (a.status, a.error()),
            (409, format!("token {id} is revoked").as_str()),
            "{method} {path}"
        );
    }
    let log = p.log();
    assert!(!log.contains(&old) && !log.contains(&new) && !log.contains(&alice.token));
}

#[test]
fn leak_reports_revoke_without_saying_which_and_are_rate_limited() {
    let up = spawn_upstream(false);
    let p = TestPatgate::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\nleak_reports_per_minute = 3\nmax_secrets_per_report = 4\n\n{}",
        agents(&up)
    ));
    let root = p.mint_caller("root", "tokens:admin");
    let (id, leaked) = created(
        &p,
        &root.token,
        json!({"name": "l", "owner": "alice", "scopes": ["agentpools:read"], "orgs": "*"}),
    );
    let a = p.api(
        "POST",
        "/admin/v1/leaked",
        None,
        Some(&json!({"secrets": [leaked, "patg_notatoken", "hello", leaked]})),
    );
    assert_eq!((a.status, &a.json), (200, &json!({"revoked": 1})));
    assert_eq!(proxy_status(&p, &leaked), 401);
    let t = p.api("GET", &format!("/admin/v1/tokens/{id}"), Some(&root.token), None);
    assert_eq!(t.json["revoked_by"], "leak report");
    assert!(p.log_shows(&format!("token.ids={id}")), "{}", p.log());
    assert!(!p.log().contains(&leaked));
    let a = p.api(
        "POST",
        "/admin/v1/leaked",
        None,
        Some(&json!({"secrets": ["a", "b", "c", "d", "e"]})),
    );
    assert_eq!((a.status, a.error()), (400, "secrets: at most 4 in one report"));
    let a = p.api("POST", "/admin/v1/leaked", None, Some(&json!({"secrets": [leaked]})));
    assert_eq!((a.status, &a.json), (200, &json!({"revoked": 0})), "already revoked");
    let a = p.api("POST", "/admin/v1/leaked", None, Some(&json!({"secrets": []})));
    assert_eq!(a.status, 429);
    let retry: u64 = a.raw.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(a.error().starts_with("too many leak reports"));
}

#[test]
fn the_event_feed_pages_and_long_polls() {
    let p = TestPatgate::start("");
    let root = p.mint_caller("root", "tokens:admin");
    let alice = p.mint_caller("alice", "tokens:read");
    let (id, _) = created(
        &p,
        &root.token,
        json!({"name": "e", "owner": "alice", "scopes": ["code:read"], "orgs": "*"}),
    );
    created(
        &p,
        &root.token,
        json!({"name": "f", "owner": "bob", "scopes": ["code:read"], "orgs": "*"}),
    );

    let a = p.api("GET", "/admin/v1/events", Some(&root.token), None);
    let events = a.json["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 4);
    let last = events[3]["seq"].as_i64().unwrap();
    assert_eq!(a.json["next"], last);
    assert_eq!(events[2]["token_id"], id.as_str());
    assert_eq!(events[2]["kind"], "created");
    assert_eq!((&events[2]["owner"], &events[2]["actor"]), (&json!("alice"), &json!("root")));
    assert!(events[2]["at"].as_str().unwrap().ends_with('Z'));
    let first = events[0]["seq"].as_i64().unwrap();
    let a = p.api("GET", &format!("/admin/v1/events?since={first}&limit=2"), Some(&root.token), None);
    assert_eq!(a.json["events"].as_array().unwrap().len(), 2);
    assert_eq!(a.json["next"], events[2]["seq"]);
    // Owners see their own tokens' events only.
    let a = p.api("GET", "/admin/v1/events", Some(&alice.token), None);
    let owners: Vec<&str> = a.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["owner"].as_str().unwrap())
        .collect();
    assert_eq!(owners, vec!["alice", "alice"]);
    assert_eq!(a.json["next"], last);

    // Nothing new: an empty answer after the wait.
    let started = Instant::now();
    let a = p.api("GET", &format!("/admin/v1/events?since={last}&wait=1s"), Some(&root.token), None);
    assert_eq!(a.json, json!({"events": [], "next": last}));
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());

    // A revoke during the wait answers it early.
    let started = Instant::now();
    let revoke = std::thread::scope(|s| {
        let poll = s.spawn(|| p.api("GET", &format!("/admin/v1/events?since={last}&wait=20s"), Some(&alice.token), None));
        std::thread::sleep(Duration::from_millis(300));
        let r = p.api("POST", &format!("/admin/v1/tokens/{id}/revoke"), Some(&root.token), None);
        assert_eq!(r.status, 200);
        poll.join().unwrap()
    });
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let events = revoke.json["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{:?}", revoke.json);
    assert_eq!((&events[0]["kind"], &events[0]["token_id"]), (&json!("revoked"), &json!(id)));
    assert_eq!(revoke.json["next"], last + 1);

    for (q, want) in [
        ("since=x", "since: must be a whole number"),
        ("limit=0", "limit: must be a whole number from 1 to 1000"),
        ("wait=later", "wait: `later` is not a duration"),
    ] {
        let a = p.api("GET", &format!("/admin/v1/events?{q}"), Some(&root.token), None);
        assert_eq!(a.status, 400, "{q}");
        assert!(a.error().starts_with(want), "{q}: {}", a.error());
    }
    assert_eq!(p.api("GET", "/admin/v1/events", None, None).status, 401);
}

#[test]
fn a_long_poll_ends_promptly_on_shutdown() {
    let mut p = TestPatgate::start("");
    let root = p.mint_caller("root", "tokens:admin");
    let admin = p.admin_addr();
    let poll = std::thread::spawn(move || {
        http(
            admin,
            &format!(
                "GET /admin/v1/events?since=1000&wait=60s HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                root.token
            ),
        )
    });
    assert!(p.log_shows("Admin API up"));
    std::thread::sleep(Duration::from_millis(300));
    let (status, took) = p.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let r = poll.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap(), json!({"events": [], "next": 1000}));
}

#[test]
fn openapi_ready_and_the_request_log() {
    let p = TestPatgate::start("");
    let a = p.api("GET", "/admin/v1/openapi.json", None, None);
    assert_eq!(a.status, 200);
    assert_eq!(a.json["openapi"], "3.1.0");
    // The config says port 0: the document names the port the listener got.
    let admin = p.admin.unwrap();
    assert_eq!(
        a.json["servers"],
        json!([{"url": format!("http://{admin}"), "description": "This server's admin listener."}])
    );
    for path in [
        "/admin/v1/tokens",
        "/admin/v1/tokens/{id}/regenerate",
        "/admin/v1/leaked",
        "/admin/v1/events",
        "/admin/v1/ready",
    ] {
        assert!(a.json["paths"].get(path).is_some(), "{path}");
    }
    let root = p.mint_caller("root", "tokens:admin");
    let a = p.api("GET", "/admin/v1/ready", None, None);
    assert_eq!((a.status, &a.json["status"], &a.json["tokens"]), (200, &json!("ready"), &json!(1)));
    assert!(a.json["seq"].as_i64().unwrap() >= 1);
    p.api("GET", "/admin/v1/tokens?limit=5", Some(&root.token), None);
    assert!(
        p.log_shows(&format!("url.path=/admin/v1/tokens http.status=200 token.id=\"{}\"", root.id)),
        "{}",
        p.log()
    );
    assert!(p.log().contains("patgate::admin"));
    assert!(!p.log().contains(&root.token));
    // Writes from a web page are refused.
    let a = p.api_raw(
        format!(
            "POST /admin/v1/owners/root/revoke HTTP/1.1\r\nHost: a\r\nOrigin: http://evil.example\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            root.token
        )
        .as_bytes(),
    );
    assert_eq!(a.status, 403);
    assert_eq!(p.api("GET", "/admin/v1/tokens", Some(&root.token), None).status, 200);
}

#[test]
fn the_admin_api_can_be_turned_off_and_never_shares_the_proxy_port() {
    let p = TestPatgate::start("[admin]\nenabled = false\n");
    assert_eq!(p.admin, None);
    assert!(!p.log().contains("Admin API up"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:7070\"\n[admin]\nlisten = \"127.0.0.1:7070\"\n[[routes]]\npath = \"/{org}/**\"\nupstream = \"git-http-backend:r\"\nrules = \"git\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("p.toml:") && stderr.contains("admin.listen: `127.0.0.1:7070` is the proxy's address"),
        "{stderr}"
    );
}

#[test]
fn no_secret_and_no_forged_line_reaches_the_request_log() {
    let p = TestPatgate::start("");
    let root = p.mint_caller("root", "tokens:admin");
    let (_, secret) = created(
        &p,
        &root.token,
        json!({"name": "s", "owner": "alice", "scopes": ["code:read"], "orgs": "*"}),
    );
    let tail = &secret["patg_".len()..];
    let basic_secret = basic("x", &secret);
    let b64 = basic_secret.trim_start_matches("Basic ");
    let answers = vec![
        // A secret in the path, plain and percent-encoded; the caller's own too.
        p.api("GET", &format!("/admin/v1/tokens/{secret}"), Some(&root.token), None),
        p.api("GET", &format!("/admin/v1/tokens/patg%5F{tail}"), Some(&root.token), None),
        p.api("GET", &format!("/admin/v1/tokens/{}", root.token), Some(&root.token), None),
        // Secrets echoed by errors: a scope, a duration, a field name, a query parameter.
        create(&p, &root.token, json!({"name": "x", "scopes": [basic_secret], "orgs": "*"})),
        create(
            &p,
            &root.token,
            json!({"name": "x", "scopes": [format!("a{secret}b")], "orgs": "*"}),
        ),
        create(
            &p,
            &root.token,
            json!({"name": "x", "scopes": ["code:read"], "orgs": "*", "expires_in": b64}),
        ),
        create(
            &p,
            &root.token,
            json!({"name": "x", "scopes": ["code:read"], "orgs": "*", (secret.as_str()): 1}),
        ),
        p.api("GET", &format!("/admin/v1/events?{b64}=1"), Some(&root.token), None),
        // Line breaks that would forge a log line.
        p.api("GET", "/admin/v1/events?x%0AFORGED%20line=1", Some(&root.token), None),
        p.api("GET", "/admin/v1/tokens/a%0D%0AFORGED%20line", Some(&root.token), None),
        create(&p, &root.token, json!({"name": "x", "scopes": ["x\nFORGED line"], "orgs": "*"})),
        p.api("POST", "/admin/v1/leaked", None, Some(&json!({"secrets": [secret, 1]}))),
    ];
    for a in &answers {
        assert!((400..500).contains(&a.status), "{:?}", a.raw);
        assert!(!a.error().contains('\n'));
        for s in [secret.as_str(), tail, b64, &root.token] {
            assert!(!a.raw.body.contains(s), "{}", a.raw.body);
        }
    }
    assert!(answers[3].error().contains("<redacted>"), "{}", answers[3].error());
    // A report with a valid secret revokes it; the log holds its id, not the secret.
    let a = p.api(
        "POST",
        "/admin/v1/leaked",
        None,
        Some(&json!({"secrets": ["a\u{2028}FORGED line", secret]})),
    );
    assert_eq!((a.status, &a.json), (200, &json!({"revoked": 1})));
    assert!(p.log_shows("Tokens revoked by leak report"));
    let log = p.log();
    for s in [secret.as_str(), tail, b64, &root.token] {
        assert!(!log.contains(s), "a secret in the log:\n{log}");
    }
    assert!(log.contains("patgate::admin"));
    for line in log.lines() {
        assert!(
            !line.trim_start().starts_with("FORGED") && !line.contains('\u{2028}'),
            "a forged line: {line:?}"
        );
    }
}

#[test]
fn bodies_are_bounded_also_when_chunked_and_slow_senders_are_cut() {
    let p = TestPatgate::start_with_env(
        "[admin]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 1024\nmax_connections = 2\n",
        &[("PATGATE__SERVER__HEADER_READ_TIMEOUT", "1s")],
    );
    let root = p.mint_caller("root", "tokens:admin");
    let chunked = |body: &str, chunk: usize| {
        let mut raw = format!(
            "POST /admin/v1/tokens HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            root.token
        );
        for part in body.as_bytes().chunks(chunk) {
            raw.push_str(&format!("{:x}\r\n{}\r\n", part.len(), String::from_utf8_lossy(part)));
        }
        raw.push_str("0\r\n\r\n");
        p.api_raw(raw.as_bytes())
    };
    let small = json!({"name": "c", "scopes": ["code:read"], "orgs": "*"}).to_string();
    assert_eq!(chunked(&small, 7).status, 201);
    let big = json!({"name": "c", "scopes": ["code:read"], "orgs": "*", "pad": "x".repeat(5000)}).to_string();
    let a = chunked(&big, 100);
    assert_eq!((a.status, a.error()), (413, "the request body is larger than 1024 bytes"));

    // Two clients that stop sending their bodies hold both connections, but only for the
    // header timeout: each gets 408 and the connection closes.
    let admin = p.admin_addr();
    let slow = |path: &'static str, auth: String| {
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut s = std::net::TcpStream::connect(admin).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            use std::io::{Read, Write};
            write!(
                s,
                "POST {path} HTTP/1.1\r\nHost: a\r\n{auth}Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"secr"
            )
            .unwrap();
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            (answer, started.elapsed())
        })
    };
    let held = [
        slow("/admin/v1/leaked", String::new()),
        slow("/admin/v1/tokens", format!("Authorization: Bearer {}\r\n", root.token)),
    ];
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let a = p.api("GET", "/admin/v1/ready", None, None);
    assert_eq!(a.status, 200);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    for h in held {
        let (answer, took) = h.join().unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("the request body did not arrive within 1s"), "{answer}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}

#[test]
fn a_client_that_never_reads_holds_a_long_poll_slot_no_longer_than_max_wait() {
    let p = TestPatgate::start_with_env(
        "[admin]\nlisten = \"127.0.0.1:0\"\nmax_wait = \"1s\"\nmax_connections = 4\n",
        &[("PATGATE__SERVER__HEADER_READ_TIMEOUT", "1s")],
    );
    let root = p.mint_caller("root", "tokens:admin");
    let poll = format!(
        "GET /admin/v1/events?since=1000&wait=1h HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\n\r\n",
        root.token
    );
    // Three of four connections may wait; these clients send and never read nor close.
    let idle: Vec<std::net::TcpStream> = (0..3)
        .map(|_| {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect(p.admin_addr()).unwrap();
            s.write_all(poll.as_bytes()).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let a = p.api("GET", "/admin/v1/events?since=1000&wait=1h", Some(&root.token), None);
    assert_eq!(a.status, 429, "{:?}", a.json);
    assert_eq!(a.raw.header("retry-after").as_deref(), Some("1"));
    // After max_wait their answers are written, and after the header timeout the idle
    // connections are closed: the slots are free for others.
    std::thread::sleep(Duration::from_millis(2500));
    let started = Instant::now();
    let a = p.api("GET", "/admin/v1/events?since=1000&wait=1h", Some(&root.token), None);
    assert_eq!((a.status, &a.json), (200, &json!({"events": [], "next": 1000})));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    for mut s in idle {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
