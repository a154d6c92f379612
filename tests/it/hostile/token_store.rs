//! Category 9, token store abuse: a flood of random well-formed tokens (the one 401, no
//! store reads, no memory growth), revocation racing with use (no success once the revoke
//! answered), and the clock edge of an expiry (admitted strictly before, refused from it on).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use patgate::auth::token::TokenSecret;
use patgate::proxy::{CHALLENGE, UNAUTHORIZED_BODY};

use super::harness::*;
use crate::support::*;

#[test]
fn a_flood_of_unknown_tokens_gets_401_in_bounded_memory() {
    let rec = spawn_recorder();
    let p = TestPatgate::start(&agents_route(&rec));
    let t = live(&p, "alice", "agentpools:read", "acme").token;
    let pid = pid_of(&p);
    let mut bad = Vec::new();
    // Warm up: allocator arenas, connection buffers, log buffers.
    let (b, _) = flood(p.addr, 400, "9.00-warmup");
    bad.extend(b);
    let rss_before = rss_kib(pid);
    let rchar_before = rchar(pid);
    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let addr = p.addr;
            std::thread::spawn(move || flood(addr, 500, &format!("9.01-flood-{i}")))
        })
        .collect();
    let mut sent = 0;
    for th in threads {
        let (b, s) = th.join().unwrap();
        bad.extend(b);
        sent += s;
    }
    let took = started.elapsed();
    let rss_after = rss_kib(pid);
    eprintln!(
        "9.01: 2000 unknown tokens in {took:?}; RSS {rss_before} -> {rss_after} KiB; rchar {rchar_before:?} -> {:?}, {sent} bytes sent",
        rchar(pid)
    );
    if rss_after > rss_before + 4096 {
        bad.push(format!(
            "[9.01] RSS grew from {rss_before} KiB to {rss_after} KiB over 2000 unknown tokens"
        ));
    }
    // A store lookup would read at least a page per request; 2000 requests read little
    // more than their own bytes (the store follower's polls aside).
    if let (Some(before), Some(after)) = (rchar_before, rchar(pid)) {
        let read = after - before;
        if read > sent as u64 + (2 << 20) {
            bad.push(format!("[9.01] patgate read {read} bytes for {sent} bytes of requests"));
        }
    }
    if took > Duration::from_secs(20) {
        bad.push(format!("[9.01] 2000 refusals took {took:?}"));
    }
    if !rec.all().is_empty() {
        bad.push("[9.01] an unknown token reached the upstream".into());
    }
    // The known token still works after the flood.
    let r = exchange(p.addr, &req("GET", "/acme/agents/x", "9.02-after", &bearer(&t), b""));
    if r.status != 200 {
        bad.push(format!("[9.02] a live token after the flood: {}", r.status));
    }
    assert_no_failures("unknown token flood", &bad);
}

/// Sends `n` requests with fresh, never-issued, well-formed tokens on one keep-alive
/// connection; the answers that were not the one 401, and the bytes sent.
fn flood(addr: SocketAddr, n: usize, case: &str) -> (Vec<String>, usize) {
    let mut bad = Vec::new();
    let mut sent = 0;
    let mut c = Conn::open(addr);
    for i in 0..n {
        let secret = TokenSecret::generate();
        let auth = if i % 2 == 0 {
            bearer(secret.expose())
        } else {
            format!("Authorization: {}\r\n", basic("agent", secret.expose()))
        };
        let raw = format!("GET /acme/agents/x HTTP/1.1\r\nHost: gate.example\r\nX-Case: {case}\r\n{auth}\r\n");
        sent += raw.len();
        if !c.send(raw.as_bytes()) {
            c = Conn::open(addr);
            c.send(raw.as_bytes());
        }
        match c.answer() {
            Some(r)
                if r.status == 401
                    && r.body == format!("{UNAUTHORIZED_BODY}\n")
                    && r.header("www-authenticate").as_deref() == Some(CHALLENGE) => {}
            other => bad.push(format!("{case} #{i}: {:?}", other.map(|r| (r.status, r.body)))),
        }
    }
    (bad, sent)
}

/// 9.10: the admin API applies a revoke before answering.
#[test]
fn a_revocation_by_the_admin_api_bites_once_it_answered() {
    let rec = spawn_recorder();
    let p = TestPatgate::start(&agents_route(&rec));
    let caller = p.mint_caller("alice", "tokens:manage,code:manage,agentpools:manage");
    let token = live(&p, "alice", "agentpools:read", "acme");
    let bad = race_with_revoke(&p, &rec, "9.10-api", &token, Duration::ZERO, || {
        let a = p.api("POST", &format!("/admin/v1/tokens/{}/revoke", token.id), Some(&caller.token), None);
        assert_eq!(a.status, 200, "{:?}", a.json);
    });
    assert_no_failures("revocation race", &bad);
}

/// 9.11: the CLI writes the store, which a running server follows within its poll interval
/// (100 ms here; 1 s allowed).
#[test]
fn a_revocation_by_the_cli_bites_within_a_poll() {
    let rec = spawn_recorder();
    let p = TestPatgate::start(&agents_route(&rec));
    let token = live(&p, "alice", "agentpools:read", "acme");
    let bad = race_with_revoke(&p, &rec, "9.11-cli", &token, Duration::from_secs(1), || {
        let out = p.cli(&["token", "revoke", &token.id]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    });
    assert_no_failures("revocation race", &bad);
}

/// Uses `token` from three connections, revokes it with `revoke` while they run, and
/// checks that successes came before the revoke answered and refusals from `grace` after it
/// on; the problems found.
fn race_with_revoke(p: &TestPatgate, rec: &Recorder, how: &str, token: &Minted, grace: Duration, revoke: impl FnOnce()) -> Vec<String> {
    let mut bad = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let (addr, tok, stop) = (p.addr, token.token.clone(), stop.clone());
            let case = format!("{how}-{i}");
            std::thread::spawn(move || hammer(addr, &tok, &case, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    revoke();
    let answered = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let results: Vec<(Instant, u16, String)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let ok_before = results.iter().filter(|(s, st, _)| *s < answered && *st == 200).count();
    let late: Vec<_> = results.iter().filter(|(s, st, _)| *s >= answered + grace && *st != 401).collect();
    let refused_after = results.iter().filter(|(s, st, _)| *s >= answered + grace && *st == 401).count();
    eprintln!(
        "{how}: {} requests, {ok_before} admitted before the revoke answered, {refused_after} refused after",
        results.len()
    );
    if ok_before == 0 || refused_after == 0 {
        bad.push(format!(
            "[{how}] no race: {ok_before} successes before, {refused_after} refusals after"
        ));
    }
    if !late.is_empty() {
        bad.push(format!(
            "[{how}] {} request(s) started after the revoke answered were not refused: {:?}",
            late.len(),
            late.iter().take(5).map(|(_, st, n)| (n, st)).collect::<Vec<_>>()
        ));
    }
    // Whatever reached the upstream was answered 200.
    let admitted: std::collections::HashSet<&str> = results.iter().filter(|(_, st, _)| *st == 200).map(|(_, _, n)| n.as_str()).collect();
    for g in rec.all() {
        if let Some(c) = g.case().filter(|c| c.starts_with(how)) {
            if !admitted.contains(c.as_str()) {
                bad.push(format!("[{how}] {c} reached the upstream without a 200"));
            }
        }
    }
    bad
}

/// Hammers the proxy with one token from several connections; each request's start and
/// status.
fn hammer(addr: SocketAddr, token: &str, case: &str, stop: Arc<AtomicBool>) -> Vec<(Instant, u16, String)> {
    let mut out = Vec::new();
    let mut c = Conn::open(addr);
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("{case}-{i}");
        i += 1;
        let raw = format!("GET /acme/agents/x HTTP/1.1\r\nHost: gate.example\r\nX-Case: {name}\r\nAuthorization: Bearer {token}\r\n\r\n");
        let started = Instant::now();
        if !c.send(raw.as_bytes()) {
            c = Conn::open(addr);
            continue;
        }
        match c.answer() {
            Some(r) => out.push((started, r.status, name)),
            None => c = Conn::open(addr),
        }
    }
    out
}

/// Expiry is whole seconds: refused from `expires_at` on, admitted strictly before (once
/// the server has loaded the token).
#[test]
fn a_token_works_until_its_expiry_and_never_after() {
    let rec = spawn_recorder();
    let p = TestPatgate::start(&agents_route(&rec));
    let out = p.cli(&[
        "token",
        "create",
        "--name",
        "edge",
        "--owner",
        "alice",
        "--scopes",
        "agentpools:read",
        "--orgs",
        "acme",
        "--expires-in",
        "2s",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = v["token"].as_str().unwrap().to_owned();
    let expires_at = humantime::parse_rfc3339_weak(v["expires_at"].as_str().unwrap()).unwrap();
    let seen = use_until(p.addr, &token, expires_at + Duration::from_millis(1200));
    let around = |st: u16| {
        seen.iter()
            .filter(|(_, _, s)| *s == st)
            .map(|(sent, _, _)| sent.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i128)
            .collect::<Vec<_>>()
    };
    let edge = expires_at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i128;
    eprintln!(
        "9.20: {} requests; last 200 sent {:?} ms, first 401 after it {:?} ms from the expiry",
        seen.len(),
        around(200).last().map(|t| t - edge),
        around(401).into_iter().find(|t| *t > edge - 2000).map(|t| t - edge)
    );
    assert_no_failures("expiry", &expiry_failures(&seen, expires_at));
}

/// Uses `token` on a keep-alive connection until `until`: (sent, answered, status) of each
/// request.
fn use_until(addr: SocketAddr, token: &str, until: SystemTime) -> Vec<(SystemTime, SystemTime, u16)> {
    let mut seen = Vec::new();
    let mut c = Conn::open(addr);
    while SystemTime::now() < until {
        let raw = format!("GET /acme/agents/x HTTP/1.1\r\nHost: gate.example\r\nX-Case: 9.20\r\nAuthorization: Bearer {token}\r\n\r\n");
        let sent = SystemTime::now();
        if !c.send(raw.as_bytes()) {
            c = Conn::open(addr);
            continue;
        }
        let Some(r) = c.answer() else {
            c = Conn::open(addr);
            continue;
        };
        seen.push((sent, SystemTime::now(), r.status));
        std::thread::sleep(Duration::from_millis(10));
    }
    seen
}

/// The answers that break the expiry's edge, from the first success on.
fn expiry_failures(seen: &[(SystemTime, SystemTime, u16)], expires_at: SystemTime) -> Vec<String> {
    let mut bad = Vec::new();
    let Some(first_ok) = seen.iter().position(|(_, _, s)| *s == 200) else {
        panic!("the token never worked: {:?}", seen.iter().map(|s| s.2).collect::<Vec<_>>());
    };
    for (sent, answered, status) in &seen[first_ok..] {
        if *answered < expires_at && *status != 200 {
            bad.push(format!(
                "answered {status} {:?} before the expiry",
                expires_at.duration_since(*answered).unwrap()
            ));
        }
        if *sent >= expires_at && *status != 401 {
            bad.push(format!(
                "answered {status} {:?} after the expiry",
                sent.duration_since(expires_at).unwrap()
            ));
        }
    }
    let last_ok = seen.iter().rposition(|(_, _, s)| *s == 200).unwrap();
    if seen[first_ok..=last_ok].iter().any(|(_, _, s)| *s != 200) {
        bad.push("the token was refused, then admitted again".into());
    }
    if !seen.iter().any(|(_, _, s)| *s == 401) {
        bad.push("the token was never refused".into());
    }
    bad
}
