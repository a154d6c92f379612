//! Narrower tokens, end to end: repositories with the real git client, address ranges
//! through the real listener (source addresses on loopback), least privilege and
//! rotation with reuse detection through the admin API, and the admin listener's limit
//! of connections per address.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// Mints with the CLI, on the store, with extra arguments; waits until it is live.
fn mint_with(p: &TestPatgate, scopes: &str, orgs: &str, extra: &[&str]) -> Minted {
    let before = p.loaded_tokens();
    let mut args = vec![
        "token",
        "create",
        "--name",
        "narrow",
        "--owner",
        "alice",
        "--scopes",
        scopes,
        "--orgs",
        orgs,
        "--expires-in",
        "1h",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = p.cli(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.loaded_tokens() <= before {
        assert!(Instant::now() < deadline, "token never became live");
        std::thread::sleep(Duration::from_millis(20));
    }
    Minted {
        id: v["id"].as_str().unwrap().to_owned(),
        token: v["token"].as_str().unwrap().to_owned(),
    }
}

fn info_refs(path: &str, token: &str) -> String {
    format!(
        "GET {path}/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
}

#[test]
fn a_token_limited_to_repositories_clones_those_and_no_other() {
    let p = TestPatgate::start("");
    p.init_repo("acme", "infra-net");
    p.init_repo("acme", "app");
    let t = mint_with(&p, "code:read", "acme", &["--repos", "acme/infra-*"]);
    let work = p.dir.path();
    git(
        work,
        &["clone", "-q", &p.url(&format!("ci:{}@", t.token), "/acme/infra-net.git"), "ok"],
    )
    .ok();
    assert!(work.join("ok/README").exists());
    let refused = git(work, &["clone", "-q", &p.url(&format!("ci:{}@", t.token), "/acme/app.git"), "no"]);
    assert!(!refused.ok, "{}", refused.stderr);
    assert!(!work.join("no/README").exists());
    let r = http(p.addr, &info_refs("/acme/app.git", &t.token));
    assert_eq!((r.status, r.body.as_str()), (403, "token does not cover repository acme/app.git\n"));
    // The CLI shows the restriction.
    let out = p.cli(&["token", "show", &t.id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["repos"], json!(["acme/infra-*"]));
    assert_eq!(v["allow_from"], json!("*"));
}

/// Hostile: the pattern is matched on the normalized path, so case, escapes and dot
/// segments cannot reach another repository.
#[test]
fn a_repository_restriction_cannot_be_escaped() {
    let p = TestPatgate::start("");
    p.init_repo("acme", "infra-net");
    p.init_repo("acme", "app");
    let t = mint_with(&p, "code:read", "acme", &["--repos", "acme/infra-*"]);
    let cases: &[(&str, u16)] = &[
        // Allowed: escapes of unreserved characters are decoded before matching, and the
        // upstream gets the same canonical path.
        ("/acme/infra-net.git", 200),
        ("/acme/%69nfra-net.git", 200),
        // Refused.
        ("/acme/INFRA-net.git", 403),
        ("/acme/Infra-net.git", 403),
        ("/acme/app.git", 403),
        ("/ACME/infra-net.git", 403),
        ("/acme/infra-net.git/../app.git", 400),
        ("/acme/infra-x/../app.git", 400),
        ("/acme/infra-x/%2e%2e/app.git", 400),
        ("/acme/infra-x%2F..%2Fapp.git", 400),
        ("/acme/infra-x%2fapp.git", 400),
        ("/acme//app.git", 400),
        ("/acme/./app.git", 400),
        ("/acme/infra-x\\..\\app.git", 400),
        ("/acme/infra-x;/app.git", 400),
        ("/acme/%252e%252e/app.git", 400),
    ];
    for (path, want) in cases {
        let r = http(p.addr, &info_refs(path, &t.token));
        assert_eq!(r.status, *want, "{path}: {}", r.body);
    }
    // A route that names no repository gives a token limited to repositories no code.
    let q = TestPatgate::start(&format!(
        "[[routes]]\npath = \"/mirror/**\"\nupstream = \"git-http-backend:{}\"\nrules = \"git\"\n",
        p.repos().display()
    ));
    let t = mint_with(&q, "code:read", "*", &["--repos", "acme/infra-*"]);
    let r = http(q.addr, &info_refs("/mirror/acme/infra-net.git", &t.token));
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "token is limited to repositories and route /mirror/** names none\n")
    );
}

#[test]
fn an_address_range_admits_its_clients_only_and_x_forwarded_for_does_not_move_it() {
    let p = TestPatgate::start("[brute_force]\nmax_failures = 2\nwindow = \"1m\"\nblock = \"1m\"\n");
    p.init_repo("acme", "demo");
    let t = mint_with(&p, "code:read", "acme", &["--allow-from", "127.0.0.2/32,2001:db8::/32"]);
    let from = |ip: &str, extra: &str| {
        let raw = format!(
            "GET /acme/demo.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n{extra}Connection: close\r\n\r\n",
            t.token
        );
        http_on(connect_from(ip.parse().unwrap(), p.addr), raw.as_bytes())
    };
    assert_eq!(from("127.0.0.2", "").status, 200);
    // Outside: the 401 of an unknown token, with its WWW-Authenticate.
    let r = from("127.0.0.1", "");
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(r.body, "authentication required: give a valid patgate token\n");
    // X-Forwarded-For from a peer that is not a trusted proxy is not read.
    assert_eq!(from("127.0.0.1", "X-Forwarded-For: 127.0.0.2\r\n").status, 401);
    // Each refusal counted a failure: two lock the address out.
    assert_eq!(from("127.0.0.1", "").status, 429);
    // The address inside still works.
    assert_eq!(from("127.0.0.2", "").status, 200);
    assert!(p.log_shows("token used from outside its address ranges"));

    // Behind a trusted proxy, the client it names is the one judged.
    let q = TestPatgate::start_with_server("trusted_proxies = [\"127.0.0.3\"]", "");
    q.init_repo("acme", "demo");
    let t = mint_with(&q, "code:read", "acme", &["--allow-from", "10.0.0.0/8"]);
    let via = |ip: &str, xff: &str| {
        let raw = format!(
            "GET /acme/demo.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n",
            t.token
        );
        http_on(connect_from(ip.parse().unwrap(), q.addr), raw.as_bytes()).status
    };
    assert_eq!(via("127.0.0.3", "10.1.2.3"), 200);
    assert_eq!(
        via("127.0.0.3", "10.1.2.3, 192.0.2.1"),
        401,
        "the rightmost untrusted entry is the client"
    );
    assert_eq!(via("127.0.0.4", "10.1.2.3"), 401, "an untrusted peer's header is not read");
}

#[test]
fn a_caller_grants_no_more_than_its_own_token_holds() {
    let p = TestPatgate::start("");
    let caller = mint_with(
        &p,
        "tokens:manage,code:read",
        "acme,beta",
        &["--repos", "acme/infra-*,beta/*", "--allow-from", "127.0.0.0/8"],
    );
    let create = |body: serde_json::Value| p.api("POST", "/admin/v1/tokens", Some(&caller.token), Some(&body));
    let a = create(json!({"name": "ok", "scopes": ["code:read"], "orgs": ["acme"]}));
    assert_eq!(a.status, 201, "{}", a.json);
    // Left out, repositories and ranges are the caller's own (those in its organizations).
    assert_eq!(a.json["token"]["repos"], json!(["acme/infra-*"]));
    assert_eq!(a.json["token"]["allow_from"], json!(["127.0.0.0/8"]));
    let cases = [
        (
            json!({"name": "x", "scopes": ["code:write"], "orgs": ["acme"]}),
            "scopes: the calling token does not hold code:write;",
        ),
        (
            json!({"name": "x", "scopes": ["code:read"], "orgs": ["gamma"]}),
            "orgs: the calling token does not hold organization gamma;",
        ),
        (
            json!({"name": "x", "scopes": ["code:read"], "orgs": "*"}),
            "orgs: the calling token does not hold organization every organization (*);",
        ),
        (
            json!({"name": "x", "scopes": ["code:read"], "orgs": ["acme"], "repos": "*"}),
            "repos: the calling token does not hold repositories *",
        ),
        (
            json!({"name": "x", "scopes": ["code:read"], "orgs": ["acme"], "repos": ["acme/app"]}),
            "repos: the calling token does not hold repositories acme/app",
        ),
        (
            json!({"name": "x", "scopes": ["code:read"], "orgs": ["acme"], "allow_from": ["10.0.0.0/8"]}),
            "allow_from: the calling token does not hold address ranges 10.0.0.0/8",
        ),
        (
            json!({"name": "x", "scopes": ["code:read"], "orgs": ["acme"], "allow_from": "*"}),
            "allow_from: the calling token does not hold address ranges *",
        ),
    ];
    for (body, want) in cases {
        let a = create(body.clone());
        assert_eq!(a.status, 403, "{body}: {}", a.json);
        assert!(a.error().starts_with(want), "{body}: {}", a.error());
    }
    // A pattern outside the token's own organizations is a bad request.
    let a = create(json!({"name": "x", "scopes": ["code:read"], "orgs": ["acme"], "repos": ["beta/x"]}));
    assert_eq!((a.status, a.error()), (400, "repos: beta/x is outside the token's organizations"));
    // Narrower works, and a change may only narrow further.
    let a =
        create(json!({"name": "n", "scopes": ["code:read"], "orgs": ["acme"], "repos": ["acme/infra-net"], "allow_from": ["127.0.0.2"]}));
    assert_eq!(a.status, 201, "{}", a.json);
    let id = a.json["token"]["id"].as_str().unwrap().to_owned();
    let patch = |body: serde_json::Value| p.api("PATCH", &format!("/admin/v1/tokens/{id}"), Some(&caller.token), Some(&body));
    assert_eq!(patch(json!({"repos": ["acme/infra-*"]})).status, 400, "widening");
    assert_eq!(patch(json!({"allow_from": ["127.0.0.0/24"]})).status, 400, "widening");
    let a = patch(json!({"name": "renamed"}));
    assert_eq!(a.status, 200, "{}", a.json);
}

#[test]
fn a_rotated_secret_presented_again_revokes_the_token() {
    // No grace: the first presentation after the rotation is reuse.
    let p = TestPatgate::start("[policy]\nrotation_grace = \"0s\"\n");
    p.init_repo("acme", "demo");
    let root = p.mint_caller("root", "tokens:admin,auditlog:read");
    // An agent's token that may renew itself.
    let agent = mint_with(&p, "tokens:manage,code:read", "acme", &[]);
    let a = p.api(
        "POST",
        &format!("/admin/v1/tokens/{}/rotate", agent.id),
        Some(&agent.token),
        Some(&json!({"expires_in": "2h"})),
    );
    assert_eq!(a.status, 200, "{}", a.json);
    let fresh = a.json["secret"].as_str().unwrap().to_owned();
    assert_eq!(a.json["token"]["id"], json!(agent.id));
    assert!(a.json["token"]["rotated_at"].is_string());
    let got = |token: &str| http(p.addr, &info_refs("/acme/demo.git", token)).status;
    assert_eq!(got(&fresh), 200);
    // The old secret is refused at once...
    assert_eq!(got(&agent.token), 401);
    // ...and its use revoked the whole token: the new secret too, here and in the store.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let t = p.api("GET", &format!("/admin/v1/tokens/{}", agent.id), Some(&root.token), None);
        if t.json["state"] == "revoked" {
            assert_eq!(t.json["revoked_by"], "patgate:rotated-secret-reused");
            break;
        }
        assert!(Instant::now() < deadline, "never revoked: {}", t.json);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(got(&fresh), 401);
    let audit = p.api(
        "GET",
        &format!("/admin/v1/audit?token_id={}&action=rotated_secret_reused", agent.id),
        Some(&root.token),
        None,
    );
    let entries = audit.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{}", audit.json);
    assert_eq!(entries[0]["actor"], "patgate:rotated-secret-reused");
    assert!(p.log_shows("Rotated-away secret presented again; revoking the token"));
    assert!(!p.log().contains(&fresh) && !p.log().contains(&agent.token));

    // A restart remembers rotated-away secrets: the store keeps them.
    let other = mint_with(&p, "code:read", "acme", &[]);
    let out = p.cli(&["token", "rotate", &other.id, "--expires-in", "1d", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let renewed = v["token"].as_str().unwrap().to_owned();
    let mut p = p;
    p.kill9();
    p.restart();
    assert_eq!(http(p.addr, &info_refs("/acme/demo.git", &renewed)).status, 200);
    assert_eq!(http(p.addr, &info_refs("/acme/demo.git", &other.token)).status, 401);
    let deadline = Instant::now() + Duration::from_secs(5);
    while http(p.addr, &info_refs("/acme/demo.git", &renewed)).status != 401 {
        assert!(Instant::now() < deadline, "the reuse after a restart did not revoke");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_admin_listener_limits_connections_per_address() {
    let p = TestPatgate::start("[admin]\nlisten = \"127.0.0.1:0\"\nmax_connections_per_ip = 2\n");
    let a = p.admin_addr();
    let held: Vec<_> = (0..2).map(|_| connect_from("127.0.0.1".parse().unwrap(), a)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let r = http_on(
        connect_from("127.0.0.1".parse().unwrap(), a),
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((r.status, r.body.as_str()), (503, "too many connections from this address\n"));
    // Another address is not held back.
    let r = http_on(
        connect_from("127.0.0.2".parse().unwrap(), a),
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    // Once one closes, the address gets in again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = http_on(
            connect_from("127.0.0.1".parse().unwrap(), a),
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the address stayed held back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Within `policy.rotation_grace` of a rotation, the old secret is refused and nothing more
/// (a request under way when an agent renewed itself); after it, it revokes the token.
#[test]
fn within_the_rotation_grace_the_old_secret_is_only_refused() {
    let p = TestPatgate::start("[policy]\nrotation_grace = \"5s\"\n");
    p.init_repo("acme", "demo");
    let agent = mint_with(&p, "tokens:manage,code:read", "acme", &[]);
    let a = p.api("POST", &format!("/admin/v1/tokens/{}/rotate", agent.id), Some(&agent.token), None);
    assert_eq!(a.status, 200, "{}", a.json);
    let rotated = Instant::now();
    let fresh = a.json["secret"].as_str().unwrap().to_owned();
    let got = |token: &str| http(p.addr, &info_refs("/acme/demo.git", token)).status;
    assert_eq!(got(&agent.token), 401);
    assert_eq!(got(&agent.token), 401);
    // The grace counts whole seconds from the rotation's: under 4 s here is within 5 s.
    assert!(rotated.elapsed() < Duration::from_secs(4), "the machine is too slow for this test");
    assert_eq!(got(&fresh), 200, "the token lives on");
    std::thread::sleep(Duration::from_secs(6).saturating_sub(rotated.elapsed()));
    // Past the grace: reuse.
    assert_eq!(got(&agent.token), 401);
    let deadline = Instant::now() + Duration::from_secs(5);
    while got(&fresh) != 401 {
        assert!(Instant::now() < deadline, "the reuse after the grace did not revoke");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A console session keeps the digest of the secret it signed in with: after that token is
/// rotated, the session ends, and the token lives on (the session is no reuse of the old
/// secret). And the session cookie, which browsers also send to the proxy's port of the
/// same host, never reaches an upstream.
#[test]
fn a_rotation_ends_a_console_session_and_the_session_cookie_stays_home() {
    let up = spawn_upstream(false);
    let p = TestPatgate::start(&format!(
        "[[routes]]\npath = \"/{{org}}/_apis/distributedtask/**\"\nupstream = \"http://{}\"\nrules = [ {{ scope = \"agentpools:read\" }} ]\n",
        up.addr
    ));
    let t = mint_with(&p, "tokens:manage,agentpools:read", "acme", &[]);
    let body = json!({ "token": t.token }).to_string();
    let r = http(
        p.admin_addr(),
        &format!(
            "POST /console/session HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let cookie = r.header("set-cookie").unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let list = || {
        http(
            p.admin_addr(),
            &format!("GET /admin/v1/tokens HTTP/1.1\r\nHost: a\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"),
        )
        .status
    };
    assert_eq!(list(), 200);
    // The cookie goes no further than patgate, whatever else the browser sends with it.
    let r = http(
        p.addr,
        &format!(
            "GET /acme/_apis/distributedtask/pools HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nCookie: theme=dark; {cookie}; lang=en\r\nConnection: close\r\n\r\n",
            t.token
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen[0].header("cookie"), vec!["theme=dark; lang=en"]);
    // Rotated (by the API, as the CLI or another tab would): the session ends...
    let a = p.api("POST", &format!("/admin/v1/tokens/{}/rotate", t.id), Some(&t.token), None);
    assert_eq!(a.status, 200, "{}", a.json);
    let fresh = a.json["secret"].as_str().unwrap().to_owned();
    assert_eq!(list(), 401);
    // ...and the token does not: its new secret works, now and a moment later.
    std::thread::sleep(Duration::from_millis(300));
    let a = p.api("GET", &format!("/admin/v1/tokens/{}", t.id), Some(&fresh), None);
    assert_eq!((a.status, a.json["state"].as_str()), (200, Some("active")), "{}", a.json);
}
