//! Category 10, the admin API, for the cases tests/it/admin.rs does not already cover:
//! oversized bodies (chunked, or announced by the gigabyte), JSON that could be read two
//! ways or nests deep, a non-grantable scope written with an escape, revoked and expired
//! callers, asking for a secret after creation, and paths that climb out of a token's id.

use std::time::{Duration, Instant};

use patgate::auth::token::TokenSecret;

use super::harness::*;
use crate::support::*;

/// patgate with the admin API (bodies up to 2 KiB), and a caller with tokens:manage.
fn start() -> (TestPatgate, Minted) {
    let p = TestPatgate::start("[admin]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 2048\n");
    let alice = p.mint_caller("alice", "tokens:manage,code:manage,agentpools:manage");
    (p, alice)
}

/// A POST that creates a token, as `caller`, with these header lines and body.
fn create(caller: &Minted, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "POST /admin/v1/tokens HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n{headers}Connection: close\r\n\r\n",
        caller.token
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

#[test]
fn hostile_bodies_are_refused() {
    let (p, alice) = start();
    let sized = |body: &[u8]| format!("Content-Length: {}\r\n", body.len());
    let big = format!(
        "{{\"name\": \"{}\", \"scopes\": [\"code:read\"], \"orgs\": \"*\"}}",
        "x".repeat(4000)
    );
    let escaped = br#"{"name": "a", "scopes": ["tokens:\u0061dmin"], "orgs": "*"}"#;
    let deep = format!("{{\"name\": {}{}}}", "[".repeat(600), "]".repeat(600)).into_bytes();
    // (name, header lines, body, status)
    let rows: Vec<(&str, String, Vec<u8>, u16)> = vec![
        // Chunked past the limit: no Content-Length to refuse up front.
        (
            "10.01-chunked-oversized",
            "Transfer-Encoding: chunked\r\n".into(),
            chunked(big.as_bytes(), 500),
            413,
        ),
        // Duplicate keys could be read two ways. (The body has a space after its 84 bytes.)
        (
            "10.03-duplicate-keys",
            "Content-Length: 84\r\n".into(),
            br#"{"name": "a", "name": "b", "scopes": ["code:read"], "orgs": "*", "expires_in": "1h"} "#.to_vec(),
            400,
        ),
        // tokens:admin written with a JSON escape is still tokens:admin (not grantable).
        ("10.04-escaped-tokens-admin", sized(escaped), escaped.to_vec(), 400),
        // Deep nesting is a 400, not a crash.
        ("10.05-deep-nesting", sized(&deep), deep, 400),
    ];
    let mut bad = Vec::new();
    for (name, headers, body, want) in &rows {
        let r = exchange(p.admin_addr(), &create(&alice, headers, body));
        if r.status != *want {
            bad.push(format!("[{name}] {} (want {want}) {}", r.status, r.body));
        }
    }
    assert_no_failures("admin API bodies", &bad);
}

/// `body` in chunks of `size` bytes.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// 10.02: an enormous announced body is refused without waiting for it.
#[test]
fn an_enormous_announced_body_is_refused_at_once() {
    let (p, alice) = start();
    let started = Instant::now();
    let r = exchange(p.admin_addr(), &create(&alice, "Content-Length: 10000000000\r\n", b"{"));
    assert!(
        r.status == 413 && started.elapsed() <= Duration::from_secs(5),
        "[10.02] 10 GB announced: {} after {:?}",
        r.status,
        started.elapsed()
    );
}

/// 10.06, 10.07: a revoked or expired caller gets the same 401 as an unknown one.
#[test]
fn revoked_and_expired_callers_get_an_unknown_callers_401() {
    let (p, alice) = start();
    let unknown = p.api("GET", "/admin/v1/tokens", Some(TokenSecret::generate().expose()), None);
    let revoked = p.mint_caller("alice", "tokens:manage,code:manage,agentpools:manage");
    let a = p.api("POST", &format!("/admin/v1/tokens/{}/revoke", revoked.id), Some(&alice.token), None);
    assert_eq!(a.status, 200);
    let short = p.mint_for("alice", "tokens:manage,code:manage,agentpools:manage", "*", "1s");
    std::thread::sleep(Duration::from_millis(2100));
    let mut bad = Vec::new();
    for (name, tok) in [("10.06-revoked", &revoked.token), ("10.07-expired", &short.token)] {
        let a = p.api("GET", "/admin/v1/tokens", Some(tok), None);
        if (a.status, &a.raw.body, a.raw.header("www-authenticate")) != (401, &unknown.raw.body, unknown.raw.header("www-authenticate")) {
            bad.push(format!("[{name}] {} {:?}, unlike an unknown token's 401", a.status, a.raw.body));
        }
    }
    assert_no_failures("admin API callers", &bad);
}

/// Creates a token through the API as `caller`: its id and secret.
fn create_token(p: &TestPatgate, caller: &Minted) -> (String, String) {
    let a = p.api(
        "POST",
        "/admin/v1/tokens",
        Some(&caller.token),
        Some(&serde_json::json!({"name": "s", "scopes": ["code:read"], "orgs": "*"})),
    );
    assert_eq!(a.status, 201, "{:?}", a.json);
    (
        a.json["token"]["id"].as_str().unwrap().to_owned(),
        a.json["secret"].as_str().unwrap().to_owned(),
    )
}

/// 10.08: after creation, no read gives the secret back, in any field.
#[test]
fn no_read_gives_a_secret_back() {
    let (p, alice) = start();
    let (id, secret) = create_token(&p, &alice);
    let mut bad = Vec::new();
    for path in [
        format!("/admin/v1/tokens/{id}"),
        "/admin/v1/tokens".to_owned(),
        format!("/admin/v1/tokens/{id}/secret"),
        format!("/admin/v1/tokens/{id}?secret=1"),
        "/admin/v1/events?since=0".to_owned(),
    ] {
        let a = p.api_raw(
            format!(
                "GET {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                alice.token
            )
            .as_bytes(),
        );
        if a.raw.body.contains(&secret) || a.raw.body.contains(&secret[5..]) {
            bad.push(format!("[10.08] GET {path} gave the secret back"));
        }
    }
    assert!(!p.log().contains(&secret));
    assert_no_failures("admin API secrets", &bad);
}

/// 10.09: paths that climb out of a token's id reach no other endpoint.
#[test]
fn paths_that_climb_out_of_a_token_reach_nothing() {
    let (p, alice) = start();
    let (id, secret) = create_token(&p, &alice);
    let mut bad = Vec::new();
    for path in [
        format!("/admin/v1/tokens/{id}/..%2f..%2fowners/alice/revoke"),
        "/admin/v1/tokens/..%2fowners%2falice/revoke".to_owned(),
        "/admin/v1/owners/%2e%2e/revoke".to_owned(),
        "/admin/v1/owners/alice%2f..%2fbob/revoke".to_owned(),
    ] {
        let a = p.api_raw(
            format!(
                "POST {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                alice.token
            )
            .as_bytes(),
        );
        if a.status == 200 {
            bad.push(format!("[10.09] POST {path} answered 200: {:?}", a.json));
        }
    }
    let a = p.api("GET", &format!("/admin/v1/tokens/{id}"), Some(&alice.token), None);
    if a.json["state"] != "active" {
        bad.push(format!("[10.09] the token was touched: {:?}", a.json));
    }
    assert!(!p.log().contains(&secret));
    assert_no_failures("admin API paths", &bad);
}
