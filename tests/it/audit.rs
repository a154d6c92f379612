//! The audit trail end to end: what a running server records (lifecycle entries with their
//! actor and client, refusals naming known tokens, allowed requests per token and minute),
//! who may read it through `GET /admin/v1/audit` and the CLI, paging and filters, and that
//! an acknowledged revoke is in the trail after a `kill -9`.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// The entries `caller` reads with `query` (one page).
fn audit(p: &TestPatgate, caller: &str, query: &str) -> Vec<Value> {
    let a = p.api("GET", &format!("/admin/v1/audit?{query}"), Some(caller), None);
    assert_eq!(a.status, 200, "{query}: {}", a.json);
    a.json["entries"].as_array().unwrap().clone()
}

/// Waits up to 5 s until the entries of `query` satisfy `done` (entries from the request
/// path are written a moment after their request).
fn audit_until(p: &TestPatgate, caller: &str, query: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let entries = audit(p, caller, query);
        if done(&entries) {
            return entries;
        }
        assert!(Instant::now() < deadline, "{query}: {entries:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get(p: &TestPatgate, path: &str, token: &str) -> RawResponse {
    http(
        p.addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            basic("git", token)
        ),
    )
}

fn created(p: &TestPatgate, caller: &str, body: Value) -> (String, String) {
    let a = p.api("POST", "/admin/v1/tokens", Some(caller), Some(&body));
    assert_eq!(a.status, 201, "{}", a.json);
    (
        a.json["token"]["id"].as_str().unwrap().to_owned(),
        a.json["secret"].as_str().unwrap().to_owned(),
    )
}

fn summary(entries: &[Value]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["token_id"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

#[test]
fn lifecycle_entries_name_the_actor_and_the_client() {
    let p = TestPatgate::start("");
    let root = p.mint_caller("root", "tokens:admin,auditlog:read");
    let body = json!({"name": "ci", "owner": "alice", "scopes": ["code:write"], "orgs": ["acme"], "expires_in": "2h"});
    let (t, _) = created(&p, &root.token, body.clone());
    let a = p.api(
        "PATCH",
        &format!("/admin/v1/tokens/{t}"),
        Some(&root.token),
        Some(&json!({"name": "renamed"})),
    );
    assert_eq!(a.status, 200, "{}", a.json);
    let a = p.api("POST", &format!("/admin/v1/tokens/{t}/regenerate"), Some(&root.token), None);
    assert_eq!(a.status, 200, "{}", a.json);
    let a = p.api("POST", &format!("/admin/v1/tokens/{t}/revoke"), Some(&root.token), None);
    assert_eq!(a.status, 200, "{}", a.json);
    let (u, _) = created(&p, &root.token, body.clone());
    let a = p.api("POST", "/admin/v1/owners/alice/revoke", Some(&root.token), None);
    assert_eq!((a.status, &a.json["revoked"]), (200, &json!(1)));
    let (v, secret) = created(&p, &root.token, body);
    let a = p.api("POST", "/admin/v1/leaked", None, Some(&json!({"secrets": [secret]})));
    assert_eq!((a.status, &a.json["revoked"]), (200, &json!(1)));

    let entries = audit(&p, &root.token, "owner=alice");
    let want: Vec<(String, String)> = [
        ("leak_report", &v),
        ("create", &v),
        ("revoke_all", &u),
        ("create", &u),
        ("revoke", &t),
        ("regenerate", &t),
        ("update", &t),
        ("create", &t),
    ]
    .iter()
    .map(|(a, id)| (a.to_string(), id.to_string()))
    .collect();
    assert_eq!(summary(&entries), want, "newest first");
    for e in &entries {
        let actor = if e["action"] == "leak_report" { "leak report" } else { "root" };
        assert_eq!(
            (&e["actor"], &e["client"], &e["outcome"]),
            (&json!(actor), &json!("127.0.0.1"), &json!("success")),
            "{e}"
        );
        assert_eq!(e["owner"], "alice");
        assert!(e["time"].as_str().unwrap().ends_with('Z'));
    }
    // The CLI's own change, on the store, names it and no client.
    let minted = audit(&p, &root.token, &format!("token_id={}", root.id));
    assert_eq!(minted.len(), 1, "{minted:?}");
    assert!(minted[0]["actor"].as_str().unwrap().starts_with("cli:"), "{}", minted[0]);
    assert_eq!(minted[0]["client"], Value::Null);

    // A change the policy refuses is recorded too, with the reason.
    let long = json!({"name": "ci", "owner": "alice", "scopes": ["code:read"], "orgs": ["acme"], "expires_in": "5000d"});
    let a = p.api("POST", "/admin/v1/tokens", Some(&root.token), Some(&long));
    assert_eq!(a.status, 400);
    let refused = audit_until(&p, &root.token, "action=policy_refusal", |e| !e.is_empty());
    let e = &refused[0];
    assert_eq!(
        (&e["outcome"], &e["owner"], &e["actor"]),
        (&json!("failure"), &json!("alice"), &json!("root"))
    );
    assert!(e["reason"].as_str().unwrap().starts_with("policy.max_lifespan"), "{e}");
    assert_eq!(
        (&e["method"], &e["path"], &e["status"]),
        (&json!("POST"), &json!("/admin/v1/tokens"), &json!(400))
    );
}

#[test]
fn refusals_name_known_tokens_and_never_hold_a_secret() {
    let p = TestPatgate::start("");
    let root = p.mint_caller("root", "tokens:admin,auditlog:read");
    p.init_repo("acme", "demo");
    let path = "/acme/demo.git/info/refs?service=git-receive-pack";
    // Known tokens refused: lacking the scope (403), expired, revoked, superseded (401).
    let reader = p.mint_live("code:read", "acme");
    assert_eq!(get(&p, path, &reader.token).status, 403);
    let minted = Instant::now();
    let expiring = p.mint_live_for("code:write", "acme", "2s");
    let revoked = p.mint_live("code:write", "acme");
    let a = p.api("POST", &format!("/admin/v1/tokens/{}/revoke", revoked.id), Some(&root.token), None);
    assert_eq!(a.status, 200);
    let regenerated = p.mint_live("code:write", "acme");
    let a = p.api(
        "POST",
        &format!("/admin/v1/tokens/{}/regenerate", regenerated.id),
        Some(&root.token),
        None,
    );
    assert_eq!(a.status, 200);
    std::thread::sleep((minted + Duration::from_millis(2100)).saturating_duration_since(Instant::now()));
    let unknown = patgate::auth::token::TokenSecret::generate().expose().to_owned();
    let mut bodies = Vec::new();
    for t in [&expiring.token, &revoked.token, &regenerated.token, &unknown] {
        let r = get(&p, path, t);
        assert_eq!(r.status, 401);
        bodies.push(r.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "one 401 for all: {bodies:?}");
    // A request without a credential is not a refused authentication (git asks so first).
    let r = http(p.addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
    assert_eq!(r.status, 401);

    let entries = audit_until(&p, &root.token, "action=auth_refused", |e| e.len() >= 5);
    assert_eq!(entries.len(), 5, "{entries:#?}");
    let by_token = |id: &str| {
        entries
            .iter()
            .find(|e| e["token_id"] == id)
            .unwrap_or_else(|| panic!("{id}: {entries:#?}"))
    };
    for (token, status, reason) in [
        (&reader, 403, "token lacks scope code:write"),
        (&expiring, 401, "expired token"),
        (&revoked, 401, "revoked token"),
        (&regenerated, 401, "superseded secret of a regenerated token"),
    ] {
        let e = by_token(&token.id);
        assert_eq!(e["owner"], "alice", "{e}");
        assert_eq!((&e["status"], &e["reason"]), (&json!(status), &json!(reason)), "{e}");
        assert_eq!(
            (&e["method"], &e["path"]),
            (&json!("GET"), &json!("/acme/demo.git/info/refs")),
            "never the query"
        );
        // A credential is judged before the route is looked up: only a 403 has one.
        let route = if status == 403 { json!("/{org}/{repo}/**") } else { Value::Null };
        assert_eq!(e["route"], route);
        assert_eq!(
            (&e["client"], &e["outcome"], &e["actor"]),
            (&json!("127.0.0.1"), &json!("failure"), &Value::Null)
        );
        // The access log names them too.
        assert!(
            p.log_shows(&format!("http.status={status} token.id=\"{}\" token.owner=\"alice\"", token.id)),
            "{}",
            p.log()
        );
    }
    let anonymous = entries.iter().find(|e| e["token_id"].is_null()).unwrap();
    assert_eq!(
        (&anonymous["reason"], &anonymous["owner"]),
        (&json!("unknown or revoked token"), &Value::Null)
    );
    // No secret anywhere in the trail.
    let all = p.api("GET", "/admin/v1/audit?limit=1000", Some(&root.token), None).raw.body;
    assert!(!all.contains("patg_"), "{all}");

    // Refusals on the admin listener too: a token without the scope, an expired one.
    let a = p.api("GET", "/admin/v1/audit", Some(&reader.token), None);
    assert_eq!(a.status, 403);
    let a = p.api("GET", "/admin/v1/tokens", Some(&expiring.token), None);
    assert_eq!(a.status, 401);
    let admin = audit_until(&p, &root.token, "action=auth_refused", |e| e.len() >= 7);
    let on = |id: &str, route: &str| {
        admin
            .iter()
            .any(|e| e["token_id"] == id && e["route"] == route && e["owner"] == "alice")
    };
    assert!(on(&reader.id, "/admin/v1/audit"), "{admin:#?}");
    assert!(on(&expiring.id, "/admin/v1/tokens"), "{admin:#?}");
}

#[test]
fn allowed_requests_are_counted_per_token_and_minute() {
    let mut p = TestPatgate::start("");
    let root = p.mint_caller("root", "tokens:admin,auditlog:read");
    p.init_repo("acme", "demo");
    let t = p.mint_live("code:read", "acme");
    for _ in 0..3 {
        assert_eq!(get(&p, "/acme/demo.git/info/refs?service=git-upload-pack", &t.token).status, 200);
    }
    // The counts of the minute are written when it turns, or at shutdown.
    let (status, _) = p.terminate();
    assert!(status.success());
    p.restart();
    let entries = audit(&p, &root.token, &format!("token_id={}&action=access", t.id));
    let counts: Vec<u64> = entries.iter().map(|e| e["count"].as_u64().unwrap()).collect();
    // Three requests in one minute are one entry, unless the minute turned between them.
    assert!(
        counts == [3] || (counts.len() == 2 && counts.iter().sum::<u64>() == 3),
        "{entries:#?}"
    );
    let e = &entries[0];
    assert_eq!(
        (&e["owner"], &e["client"], &e["outcome"]),
        (&json!("alice"), &json!("127.0.0.1"), &json!("success"))
    );
    assert!(e["time"].as_str().unwrap().ends_with(":00.000Z"), "stamped with its minute: {e}");
}

#[test]
fn each_allowed_request_is_an_entry_when_configured() {
    let p = TestPatgate::start("[audit]\nallowed_requests = \"each\"\n");
    let root = p.mint_caller("root", "tokens:admin,auditlog:read");
    p.init_repo("acme", "demo");
    let t = p.mint_live("code:read", "acme");
    for _ in 0..2 {
        assert_eq!(get(&p, "/acme/demo.git/info/refs?service=git-upload-pack", &t.token).status, 200);
    }
    let entries = audit_until(&p, &root.token, &format!("token_id={}&action=access", t.id), |e| e.len() == 2);
    for e in &entries {
        assert_eq!(
            (&e["method"], &e["path"], &e["status"]),
            (&json!("GET"), &json!("/acme/demo.git/info/refs"), &json!(200))
        );
        assert_eq!((&e["route"], &e["count"]), (&json!("/{org}/{repo}/**"), &json!(1)));
    }
}

#[test]
fn owners_read_their_own_entries_and_need_auditlog_read() {
    let p = TestPatgate::start("");
    let root = p.mint_caller("root", "tokens:admin,auditlog:read");
    let alice = p.mint_caller("alice", "auditlog:read");
    let bob = p.mint_caller("bob", "code:read");
    let entries = audit(&p, &alice.token, "");
    assert!(!entries.is_empty());
    assert!(entries.iter().all(|e| e["owner"] == "alice"), "{entries:#?}");
    assert!(!entries.iter().any(|e| e["token_id"] == bob.id.as_str()));
    // Another owner's entries need tokens:admin.
    let a = p.api("GET", "/admin/v1/audit?owner=bob", Some(&alice.token), None);
    assert_eq!(a.status, 403);
    assert_eq!(a.error(), "token lacks scope tokens:admin");
    assert_eq!(audit(&p, &alice.token, "owner=alice").len(), entries.len());
    // tokens:admin does not imply auditlog:read.
    let admin_only = p.mint_caller("carol", "tokens:admin");
    let a = p.api("GET", "/admin/v1/audit", Some(&admin_only.token), None);
    assert_eq!((a.status, a.error()), (403, "token lacks scope auditlog:read"));
    let a = p.api("GET", "/admin/v1/audit", None, None);
    assert_eq!(a.status, 401);
    // tokens:admin with auditlog:read reads everyone's.
    let every = audit(&p, &root.token, "limit=1000");
    for id in [&alice.id, &bob.id, &admin_only.id, &root.id] {
        assert!(every.iter().any(|e| e["token_id"] == id.as_str()), "{id}");
    }
    assert_eq!(audit(&p, &root.token, "owner=bob").len(), 1);
}

#[test]
fn pages_follow_next_without_duplicates_or_gaps() {
    let p = TestPatgate::start("");
    let root = p.mint_caller("root", "tokens:admin,auditlog:read");
    let mut ids: Vec<String> = (0..5).map(|_| p.mint_for("pager", "code:read", "acme", "1h").id).collect();
    ids.reverse();
    let mut seen = Vec::new();
    let mut seqs = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let a = p.api(
            "GET",
            &format!("/admin/v1/audit?owner=pager&limit=2{after}"),
            Some(&root.token),
            None,
        );
        assert_eq!(a.status, 200, "{}", a.json);
        pages += 1;
        let entries = a.json["entries"].as_array().unwrap();
        assert!(entries.len() <= 2);
        seen.extend(entries.iter().map(|e| e["token_id"].as_str().unwrap().to_owned()));
        seqs.extend(entries.iter().map(|e| e["seq"].as_i64().unwrap()));
        match a.json["next"].as_str() {
            Some(n) => after = format!("&after={n}"),
            None => break,
        }
    }
    assert_eq!((pages, &seen), (3, &ids), "newest first, each once");
    assert!(seqs.windows(2).all(|w| w[0] > w[1]));
}

#[test]
fn filters_select_and_bad_values_are_400() {
    let p = TestPatgate::start("");
    let root = p.mint_caller("root", "tokens:admin,auditlog:read");
    let t = p.mint_for("alice", "code:read", "acme", "1h");
    let a = p.api("POST", &format!("/admin/v1/tokens/{}/revoke", t.id), Some(&root.token), None);
    assert_eq!(a.status, 200);
    assert_eq!(summary(&audit(&p, &root.token, &format!("token_id={}", t.id))).len(), 2);
    let revokes = audit(&p, &root.token, &format!("token_id={}&action=revoke&outcome=success", t.id));
    assert_eq!(summary(&revokes), vec![("revoke".to_owned(), t.id.clone())]);
    assert!(audit(&p, &root.token, "outcome=failure").is_empty());
    assert!(audit(&p, &root.token, "from=2999-01-01T00:00:00Z").is_empty());
    assert!(audit(&p, &root.token, "to=2000-01-01T00:00:00Z").is_empty());
    assert_eq!(
        audit(&p, &root.token, "from=2000-01-01T00:00:00Z&to=2999-01-01T00:00:00Z&owner=alice").len(),
        2
    );
    for (query, field) in [
        ("from=yesterday", "from: "),
        ("to=2030-13-01T00:00:00Z", "to: "),
        ("outcome=maybe", "outcome: "),
        ("action=delete", "action: "),
        ("token_id=a-b", "token_id: "),
        ("after=0", "after: "),
        ("after=01", "after: "),
        ("limit=0", "limit: "),
        ("limit=1001", "limit: "),
        ("owner=%20x", "owner: "),
        ("other=1", "unknown query parameter `other`"),
        ("limit=1&limit=2", "limit: given more than once"),
    ] {
        let a = p.api("GET", &format!("/admin/v1/audit?{query}"), Some(&root.token), None);
        assert_eq!(a.status, 400, "{query}: {}", a.json);
        assert!(a.error().starts_with(field), "{query}: {}", a.error());
    }
}

#[test]
fn the_cli_lists_the_trail_on_the_store_and_through_the_admin_api() {
    let p = TestPatgate::start("");
    let root = p.mint_caller("root", "tokens:admin,auditlog:read");
    let t = p.mint_for("alice", "code:read", "acme", "1h");
    let out = p.cli(&["audit", "list", "--owner", "alice", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary(&entries), vec![("create".to_owned(), t.id.clone())]);
    assert!(entries[0]["actor"].as_str().unwrap().starts_with("cli:"));

    let url = format!("http://{}", p.admin_addr());
    let out = Command::new(BIN)
        .args(["audit", "--admin-url", &url, "list", "--action", "create", "--limit", "1", "--json"])
        .env("PATGATE_ADMIN_TOKEN", &root.token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary(&entries), vec![("create".to_owned(), t.id.clone())], "the newest, one");

    let out = p.cli(&["audit", "list", "--token-id", &t.id]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("TIME") && lines[0].contains("ACTION"), "{table}");
    assert!(
        lines.len() == 2 && lines[1].contains("create") && lines[1].contains(&t.id),
        "{table}"
    );
    let out = p.cli(&["audit", "list", "--action", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoke_all"));
}

#[test]
fn a_revoke_that_answered_is_in_the_trail_after_kill_9() {
    let mut p = TestPatgate::start("");
    let root = p.mint_caller("root", "tokens:admin,auditlog:read");
    let t = p.mint_for("alice", "code:read", "acme", "1h");
    let a = p.api("POST", &format!("/admin/v1/tokens/{}/revoke", t.id), Some(&root.token), None);
    assert_eq!(a.status, 200);
    p.kill9();
    p.restart();
    let entries = audit(&p, &root.token, &format!("token_id={}&action=revoke", t.id));
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!((&entries[0]["actor"], &entries[0]["client"]), (&json!("root"), &json!("127.0.0.1")));
}

#[test]
fn a_locked_out_address_is_one_entry_a_minute_not_one_a_request() {
    let mut p = TestPatgate::start("[brute_force]\nmax_failures = 3\nblock = \"1m\"\n");
    let root = p.mint_caller("root", "tokens:admin,auditlog:read");
    // The attacker has an address of its own: the admin API's callers are not blocked.
    let attacker: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let wrong = patgate::auth::token::TokenSecret::generate().expose().to_owned();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let raw = format!("GET /acme/demo.git/info/refs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {wrong}\r\nConnection: close\r\n\r\n");
        statuses.push(http_on(connect_from(attacker, p.addr), raw.as_bytes()).status);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429, 429, 429]);
    let (status, _) = p.terminate();
    assert!(status.success());
    p.restart();
    let entries = audit(&p, &root.token, "action=auth_refused");
    let failed = entries.iter().filter(|e| e["status"] == 401).count();
    let blocked: Vec<&Value> = entries.iter().filter(|e| e["status"] == 429).collect();
    assert_eq!(failed, 3, "{entries:#?}");
    assert!((1..=2).contains(&blocked.len()), "{entries:#?}");
    assert_eq!(blocked.iter().map(|e| e["count"].as_u64().unwrap()).sum::<u64>(), 5);
    assert!(entries.iter().all(|e| e["client"] == "127.0.0.2"));
}
