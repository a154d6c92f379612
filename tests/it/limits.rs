//! Limits on clients: failed authentications per address (429 with Retry-After, the
//! address read through trusted proxies only), connections per address, idle connections,
//! and the minimum rate of request bodies.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::support::{basic, connect_from, http_on, spawn_upstream, RawResponse, TestPatgate};

const A: &str = "127.0.0.1";
const B: &str = "127.0.0.2";
/// Addresses no helper of the support module uses.
const C: &str = "127.0.0.3";
const D: &str = "127.0.0.4";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn agents_route(upstream: SocketAddr, timeout: &str) -> String {
    format!(
        "[[routes]]\npath = \"/{{org}}/_apis/distributedtask/**\"\nupstream = \"http://{upstream}\"\nrules = [ {{ scope = \"agentpools:manage\" }} ]\nresponse_timeout = \"{timeout}\"\n"
    )
}

/// GET of the agents path from `from`, with a token and extra header lines.
fn get(p: &TestPatgate, from: &str, token: &str, extra: &str) -> RawResponse {
    let raw = format!(
        "GET /acme/_apis/distributedtask/pools HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n{extra}Connection: close\r\n\r\n",
        basic("x", token)
    );
    http_on(connect_from(ip(from), p.addr), raw.as_bytes())
}

#[test]
fn an_address_that_fails_too_often_gets_429_and_others_are_served() {
    let upstream = spawn_upstream(false);
    let p = TestPatgate::start(&format!(
        "[brute_force]\nmax_failures = 5\nwindow = \"1m\"\nblock = \"3s\"\n{}",
        agents_route(upstream.addr, "5s")
    ));
    let good = p.mint_live("agentpools:manage", "acme");
    let wrong = format!("{}x", &good.token[..good.token.len() - 1]);
    // A request without a secret does not count: git asks that way first.
    for _ in 0..10 {
        let r = http_on(
            connect_from(ip(C), p.addr),
            b"GET /acme/_apis/distributedtask/pools HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 401);
    }
    for _ in 0..5 {
        assert_eq!(get(&p, C, "not-a-patgate-token", "").status, 401);
    }
    let blocked = get(&p, C, &good.token, "");
    assert_eq!(blocked.status, 429, "{}", blocked.head);
    let retry: u64 = blocked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "{retry}");
    assert!(blocked.body.contains("too many failed authentications"), "{}", blocked.body);
    assert_eq!(get(&p, C, &wrong, "").status, 429);
    // The valid token from another address is not affected.
    assert_eq!(get(&p, D, &good.token, "").status, 200);
    assert!(p.log_shows("Client blocked"), "{}", p.log());
    assert!(!p.log().contains(&good.token));
    // The block ends.
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(get(&p, C, &good.token, "").status, 200);
}

#[test]
fn x_forwarded_for_names_the_client_only_from_a_trusted_proxy() {
    let upstream = spawn_upstream(false);
    let p = TestPatgate::start_with_server(
        &format!("trusted_proxies = [\"{A}\"]"),
        &format!(
            "[brute_force]\nmax_failures = 3\nblock = \"1m\"\n{}",
            agents_route(upstream.addr, "5s")
        ),
    );
    let good = p.mint_live("agentpools:manage", "acme");
    let mallory = "X-Forwarded-For: 203.0.113.66\r\n";
    let alice = "X-Forwarded-For: 198.51.100.7, 203.0.113.5\r\n";
    // Through the trusted proxy, the address it appended is the client.
    for _ in 0..3 {
        assert_eq!(get(&p, A, "wrong", mallory).status, 401);
    }
    assert_eq!(get(&p, A, &good.token, mallory).status, 429);
    let r = get(&p, A, &good.token, alice);
    assert_eq!(r.status, 200, "{}{}\n{}", r.head, r.body, p.log());
    let seen = upstream.seen.lock().unwrap().last().unwrap().header("x-forwarded-for");
    assert_eq!(seen, vec!["203.0.113.5".to_string()], "the upstream is told the client");
    assert!(p.log_shows("client.ip=203.0.113.5"), "{}", p.log());
    // A peer that is not trusted cannot choose its address: its own is counted.
    for _ in 0..3 {
        assert_eq!(get(&p, B, "wrong", alice).status, 401);
    }
    assert_eq!(get(&p, B, &good.token, alice).status, 429);
    assert_eq!(get(&p, A, &good.token, alice).status, 200);

    // A proxy taken off the list by a reload is trusted no more, at once.
    let config = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(&p.config, config.replace(&format!("trusted_proxies = [\"{A}\"]"), "")).unwrap();
    assert!(p.reload().contains("Configuration reloaded"));
    assert_eq!(get(&p, A, &good.token, alice).status, 200);
    let seen = upstream.seen.lock().unwrap().last().unwrap().header("x-forwarded-for");
    assert_eq!(seen, vec![A.to_string()], "the peer is the client again");
    // The blocks made before the reload stand ([brute_force] did not change).
    assert_eq!(get(&p, B, &good.token, "").status, 429);
}

/// Reads until the peer closes or `limit` passes; the bytes and whether it closed.
fn read_until_closed(s: &mut std::net::TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

#[test]
fn connections_per_address_are_limited() {
    let p = TestPatgate::start_with_server("max_connections_per_ip = 3", "");
    let probe = b"GET /acme/app.git/info/refs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut open: Vec<_> = (0..3).map(|_| connect_from(ip(A), p.addr)).collect();
    // Each of the three is being served (it answers); they stay open.
    for s in &mut open {
        s.write_all(b"GET /acme/app.git/info/refs HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"HTTP/1.1 401");
    }
    let mut fourth = connect_from(ip(A), p.addr);
    let (answer, closed) = read_until_closed(&mut fourth, Duration::from_secs(10));
    let answer = String::from_utf8_lossy(&answer);
    assert!(closed && answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.ends_with("too many connections from this address\n"), "{answer}");
    // Another address is served.
    assert_eq!(http_on(connect_from(ip(B), p.addr), probe).status, 401);
    // When one closes, the address may open another.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = connect_from(ip(A), p.addr);
        s.write_all(probe).unwrap();
        let (answer, _) = read_until_closed(&mut s, Duration::from_secs(10));
        if answer.starts_with(b"HTTP/1.1 401") {
            break;
        }
        assert!(Instant::now() < deadline, "{}", String::from_utf8_lossy(&answer));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_idle_connection_is_closed_but_a_long_wait_for_the_upstream_is_not() {
    let hanging = spawn_upstream(true);
    let p = TestPatgate::start_with_server("idle_timeout = \"1s\"", &agents_route(hanging.addr, "4s"));
    let t = p.mint_live("agentpools:manage", "acme");
    // A kept-alive connection with nothing to do is closed after about a second.
    let mut s = connect_from(ip(A), p.addr);
    s.write_all(b"GET /acme/app.git/info/refs HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(15));
    assert!(answer.starts_with(b"HTTP/1.1 401"));
    assert!(closed, "the idle connection stayed open");
    let idle = started.elapsed();
    assert!(idle >= Duration::from_millis(900) && idle < Duration::from_secs(10), "{idle:?}");
    // A request waiting on its upstream is in flight, not idle: it ends at the route's
    // response timeout (4 s), not at the idle timeout (1 s).
    let started = Instant::now();
    let r = get(&p, A, &t.token, "");
    assert_eq!(r.status, 504, "{}", r.head);
    assert!(started.elapsed() >= Duration::from_millis(3500), "{:?}", started.elapsed());
}

#[test]
fn a_body_slower_than_the_minimum_rate_is_cut_with_408_and_one_that_flows_is_not() {
    let upstream = spawn_upstream(false);
    let p = TestPatgate::start_with_server(
        "body_min_rate = 1000\nbody_rate_grace = \"1s\"",
        &agents_route(upstream.addr, "30s"),
    );
    let t = p.mint_live("agentpools:manage", "acme");
    let head = |len: usize| {
        format!(
            "POST /acme/_apis/distributedtask/pools HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {len}\r\n\r\n",
            basic("x", &t.token)
        )
    };
    // 100 bytes, then nothing.
    let mut s = connect_from(ip(A), p.addr);
    s.write_all(head(100_000).as_bytes()).unwrap();
    s.write_all(&[b'x'; 100]).unwrap();
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(20));
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request body arrived slower than 1000 bytes/s"), "{answer}");
    assert!(closed);
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    // 5000 bytes a second for four seconds passes, however long it takes.
    let mut s = connect_from(ip(A), p.addr);
    s.write_all(head(20_000).as_bytes()).unwrap();
    for _ in 0..20 {
        s.write_all(&[b'y'; 1000]).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let (answer, _) = read_until_closed(&mut s, Duration::from_secs(10));
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(upstream.seen.lock().unwrap().last().unwrap().body_len, 20_000);
}

#[test]
fn failures_on_the_admin_api_and_the_proxy_count_in_one_table() {
    let upstream = spawn_upstream(false);
    let p = TestPatgate::start(&format!(
        "[brute_force]\nmax_failures = 3\nblock = \"1m\"\n{}",
        agents_route(upstream.addr, "5s")
    ));
    let good = p.mint_live("agentpools:manage,tokens:read", "acme");
    let admin = |from: &str, token: &str| {
        let raw = format!("GET /admin/v1/tokens HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
        http_on(connect_from(ip(from), p.admin_addr()), raw.as_bytes())
    };
    // Two wrong secrets on the admin API and one on the proxy block the address on both.
    assert_eq!(admin(C, "patg_wrong").status, 401);
    assert_eq!(admin(C, "not-a-token").status, 401);
    assert_eq!(get(&p, C, "wrong", "").status, 401);
    assert_eq!(get(&p, C, &good.token, "").status, 429);
    let r = admin(C, &good.token);
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").is_some(), "{}", r.head);
    // Another address is served on both.
    assert_eq!(get(&p, D, &good.token, "").status, 200);
    assert_eq!(admin(D, &good.token).status, 200);
}

/// One kept-alive request on `s`: true when its 200 came within `limit`.
fn answered(s: &mut std::net::TcpStream, token: &str, limit: Duration) -> bool {
    let raw = format!(
        "GET /acme/_apis/distributedtask/pools HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
        basic("x", token)
    );
    if s.write_all(raw.as_bytes()).is_err() {
        return false;
    }
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1024];
    while !(got.starts_with(b"HTTP/1.1 ") && got.ends_with(b"\r\n\r\nok\n")) {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
    got.starts_with(b"HTTP/1.1 200 ")
}

/// With an open-file limit too small for `server.max_connections`, patgate says so once at
/// start and serves as many connections as the limit covers (two descriptors each); the
/// next waits to be accepted, and is served as soon as one closes. None is failed with 502.
#[test]
fn connections_past_the_open_file_limit_wait_instead_of_failing() {
    let up = spawn_upstream(false);
    // 400 descriptors, 64 kept, 256 for the admin listener: 40 connections.
    let p = TestPatgate::start_with_open_files(400, &agents_route(up.addr, "10s"));
    assert!(
        p.log_shows("The open-file limit covers fewer connections than server.max_connections"),
        "{}",
        p.log()
    );
    assert!(p.log_shows("connections=40"), "{}", p.log());
    let t = p.mint_live("agentpools:manage", "acme");
    let mut open: Vec<std::net::TcpStream> = (0..40).map(|_| std::net::TcpStream::connect(p.addr).unwrap()).collect();
    for s in open.iter_mut() {
        assert!(answered(s, &t.token, Duration::from_secs(10)));
    }
    let mut waiting = std::net::TcpStream::connect(p.addr).unwrap();
    assert!(
        !answered(&mut waiting, &t.token, Duration::from_millis(1500)),
        "a 41st connection was served"
    );
    drop(open.pop());
    // The request it sent is still in its socket: read what comes now.
    waiting.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1024];
    while !got.ends_with(b"ok\n") {
        match waiting.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
    assert!(got.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&got));
    for s in open.iter_mut() {
        assert!(answered(s, &t.token, Duration::from_secs(10)), "a kept connection failed");
    }
    assert!(!p.log().contains("Too many open files"), "{}", p.log());
    // The admin listener keeps its own room.
    assert_eq!(p.api("GET", "/admin/v1/ready", None, None).status, 200);
}
