//! Category 7, large: too many headers, too large a head (also when it arrives in pieces),
//! pipelined requests, and hundreds of idle connections. A head past the limit gets 431 (or
//! 400, 414) and is never forwarded; pipelined requests are each judged on their own, in
//! order; idle connections do not delay a normal request. (`slow.rs` covers slow clients.)

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::harness::*;
use crate::support::*;

/// A pipelining row: its name, the requests sent in one write, the answers wanted.
type Pipeline = (&'static str, Vec<Vec<u8>>, Vec<u16>);

/// patgate with the agents route, and the credential line of a reader (agentpools:read).
fn start() -> (Recorder, TestPatgate, String) {
    let rec = spawn_recorder();
    let p = TestPatgate::start(&agents_route(&rec));
    let t = live(&p, "alice", "agentpools:read", "acme").token;
    (rec, p, bearer(&t))
}

/// A keep-alive request (no `Connection: close` unless in `headers`).
fn keep(method: &str, path: &str, case: &str, headers: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: gate.example\r\nX-Case: {case}\r\n{headers}\r\n").into_bytes()
}

/// `server.max_header_bytes` holds however a head is split across reads.
#[test]
fn the_head_limit_holds_when_the_head_arrives_in_pieces() {
    let rec = spawn_recorder();
    let p = TestPatgate::start(&agents_route(&rec));
    let m = live(&p, "bob", "agentpools:manage", "acme").token;
    let filler = "a".repeat(16_963 - 200);
    let raw = format!(
        "GET /acme/agents/x HTTP/1.1\r\nHost: gate.example\r\nX-Case: 7.10-split-head\r\n{}X-Filler: {filler}\r\n\r\n",
        bearer(&m)
    );
    assert!(raw.len() > 16 * 1024);
    for pieces in [
        vec![raw.len()],
        vec![10_000, raw.len() - 10_000],
        vec![4_000, 4_000, 4_000, raw.len() - 12_000],
    ] {
        let mut c = Conn::open(p.addr);
        let mut at = 0;
        for n in pieces {
            if !c.send(&raw.as_bytes()[at..at + n]) {
                break;
            }
            at += n;
            std::thread::sleep(Duration::from_millis(100));
        }
        let r = c.answer().expect("an answer");
        assert_eq!(r.status, 431, "{}", r.head);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(rec.all().is_empty(), "{:?}", rec.all());
}

/// Too many headers, too large a head: 431 (or 400, 414), never forwarded; a head under
/// the limit still passes.
#[test]
fn too_large_a_head_is_refused_and_never_forwarded() {
    let (rec, p, auth) = start();
    let many = |n: usize| (0..n).map(|i| format!("X-H{i}: v\r\n")).collect::<String>();
    let big = |n: usize| format!("{auth}X-Big: {}\r\n", "a".repeat(n));
    let x = "/acme/agents/x";
    let large = [
        ("7.10-150-headers", x, format!("{auth}{}", many(150))),
        ("7.11-5000-headers", x, format!("{auth}{}", many(5000))),
        ("7.12-huge-value", x, big(20000)),
        ("7.13-huge-target", &format!("/acme/agents/{}", "a".repeat(20000)), auth.clone()),
        ("7.14-just-over", x, big(16384)),
    ];
    let mut bad = Vec::new();
    for (name, target, headers) in &large {
        let r = exchange(p.addr, &req("GET", target, name, headers, b""));
        if ![400, 414, 431].contains(&r.status) {
            bad.push(format!("[{name}] status {} (want 431 or 400)", r.status));
        }
        if !rec.case(name).is_empty() {
            bad.push(format!("[{name}] reached the upstream"));
        }
    }
    let r = exchange(p.addr, &req("GET", x, "7.15-under-limit", &big(8000), b""));
    if r.status != 200 {
        bad.push(format!("[7.15] an 8 KB header: {}", r.status));
    }
    assert_no_failures("large heads", &bad);
}

/// Pipelining: each request on its own merits, in order; only those answered 200 reach
/// the upstream.
#[test]
fn pipelined_requests_are_each_judged_on_their_own() {
    let (rec, p, auth) = start();
    let mut bad = Vec::new();
    for pipeline in &pipelines(&auth) {
        bad.extend(check_pipeline(&p, &rec, pipeline));
    }
    assert_no_failures("pipelining", &bad);
}

/// The pipelining rows, with the reader's credential line `auth`.
fn pipelines(auth: &str) -> Vec<Pipeline> {
    let close = format!("{auth}Connection: close\r\n");
    vec![
        (
            "7.16",
            vec![
                keep("GET", "/acme/agents/a", "7.16-a", auth),
                keep("GET", "/acme/agents/b", "7.16-b", &close),
            ],
            vec![200, 200],
        ),
        (
            "7.17",
            vec![
                keep("GET", "/acme/agents/a", "7.17-a", ""),
                keep("GET", "/acme/agents/b", "7.17-b", &close),
            ],
            vec![401, 200],
        ),
        (
            "7.18",
            vec![
                keep("GET", "/acme/agents/a", "7.18-a", auth),
                keep("GET", "/acme/agents/b", "7.18-b", "Connection: close\r\n"),
            ],
            vec![200, 401],
        ),
        (
            "7.19",
            vec![
                keep("GET", "/acme/agents/../a", "7.19-a", auth),
                keep("GET", "/acme/agents/b", "7.19-b", &close),
            ],
            vec![400],
        ),
        (
            "7.20",
            vec![
                keep("POST", "/acme/agents/a", "7.20-a", &format!("{auth}Content-Length: 0\r\n")),
                keep("GET", "/acme/agents/b", "7.20-b", &close),
            ],
            vec![403, 200],
        ),
    ]
}

/// Sends one pipelining row in one write; the problems found.
fn check_pipeline(p: &TestPatgate, rec: &Recorder, (name, requests, want): &Pipeline) -> Vec<String> {
    let mut bad = Vec::new();
    let mut c = Conn::open(p.addr);
    c.send(&requests.concat());
    let mut got = Vec::new();
    while let Some(r) = c.answer() {
        got.push(r.status);
        if r.header("connection").as_deref() == Some("close") {
            break;
        }
    }
    if got != *want {
        bad.push(format!("[{name}] pipelined answers {got:?}, want {want:?}"));
    }
    // Only the requests answered 200 reached the upstream.
    for (i, status) in want.iter().enumerate().chain((want.len()..requests.len()).map(|i| (i, &0))) {
        let case = format!("{name}-{}", ["a", "b"][i]);
        let n = rec.case(&case).len();
        if (*status == 200) != (n == 1) || n > 1 {
            bad.push(format!("[{case}] answered {status}, reached the upstream {n} times"));
        }
    }
    bad
}

/// 7.21: a hundred requests in one write, all answered in order.
#[test]
fn a_hundred_pipelined_requests_are_answered_in_order() {
    let (rec, p, auth) = start();
    let mut bad = Vec::new();
    let mut c = Conn::open(p.addr);
    let burst: Vec<u8> = (0..100)
        .flat_map(|i| {
            let close = if i == 99 { "Connection: close\r\n" } else { "" };
            keep("GET", &format!("/acme/agents/{i}"), &format!("7.21-{i}"), &format!("{auth}{close}"))
        })
        .collect();
    c.send(&burst);
    let mut answered = 0;
    while let Some(r) = c.answer() {
        if r.status != 200 {
            bad.push(format!("[7.21] answer {answered} is {}", r.status));
        }
        answered += 1;
        if answered == 100 {
            break;
        }
    }
    if answered != 100 {
        bad.push(format!("[7.21] {answered} of 100 pipelined requests answered"));
    }
    let order: Vec<String> = rec
        .all()
        .iter()
        .filter_map(|g| g.case().filter(|c| c.starts_with("7.21-")))
        .collect();
    if order != (0..100).map(|i| format!("7.21-{i}")).collect::<Vec<_>>() {
        bad.push(format!("[7.21] the upstream saw {} requests, out of order or missing", order.len()));
    }
    assert_no_failures("a hundred pipelined requests", &bad);
}

/// 7.22: 200 idle connections (half silent, half with a partial head) while a normal
/// request is served at once.
#[test]
fn idle_connections_do_not_delay_a_normal_request() {
    let (rec, p, auth) = start();
    let mut bad = Vec::new();
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(p.addr).unwrap();
        if i % 2 == 1 {
            let _ = s.write_all(format!("GET /acme/agents/idle HTTP/1.1\r\nX-Case: 7.22-idle-{i}\r\n").as_bytes());
        }
        idle.push(s);
    }
    let started = Instant::now();
    let r = exchange(p.addr, &req("GET", "/acme/agents/x", "7.22-normal", &auth, b""));
    if r.status != 200 || started.elapsed() > Duration::from_secs(5) {
        bad.push(format!(
            "[7.22] with 200 idle connections: {} after {:?}",
            r.status,
            started.elapsed()
        ));
    }
    drop(idle);
    if rec.all().iter().any(|g| g.case().is_some_and(|c| c.starts_with("7.22-idle"))) {
        bad.push("[7.22] a partial head reached the upstream".into());
    }
    assert_no_failures("idle connections", &bad);
}
