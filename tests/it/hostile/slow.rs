//! Category 7, slow: headers sent one byte at a time, a client that sends nothing, bodies
//! that never end (to the HTTP upstream, to git, and refused), and silent clients filling
//! the connection limit. Each is cut off within the header or response timeout, holds no
//! upstream or git process, and keeps no one else waiting. (`large.rs` covers large heads,
//! pipelining and hundreds of idle connections.)

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::harness::*;
use crate::support::*;

/// patgate with a 1 s header timeout, a 2 s response timeout and 8 connection slots, and
/// the credential line of alice (agentpools:manage, code:read).
fn start() -> (Gate, String) {
    let gate = Gate::start_with(
        "[upstream]\nresponse_timeout = \"2s\"\n\n",
        &[
            ("PATGATE__SERVER__HEADER_READ_TIMEOUT", "1s"),
            ("PATGATE__SERVER__MAX_CONNECTIONS", "8"),
        ],
    );
    let t = live(&gate.p, "alice", "agentpools:manage,code:read", "acme").token;
    (gate, bearer(&t))
}

/// A keep-alive request: `req` without its `Connection: close`.
fn keep_alive(raw: Vec<u8>) -> Vec<u8> {
    String::from_utf8(raw).unwrap().replace("Connection: close\r\n", "").into_bytes()
}

/// 7.01: one byte every 400 ms, far past the 1 s header timeout, is cut off; 7.02:
/// meanwhile another client is served at once.
#[test]
fn slow_headers_are_cut_off_while_others_are_served() {
    let (gate, auth) = start();
    let mut bad = Vec::new();
    let slow_head = req("GET", "/acme/agents/x", "7.01-slow-headers", &auth, b"");
    let addr = gate.p.addr;
    let head_len = slow_head.len();
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(400))).unwrap();
        let mut sent = 0;
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while started.elapsed() < Duration::from_secs(10) {
            if sent < slow_head.len() && s.write_all(&slow_head[sent..sent + 1]).is_ok() {
                sent += 1;
            }
            match s.read(&mut buf) {
                Ok(0) => return (Some(started.elapsed()), sent, answer),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return (Some(started.elapsed()), sent, answer),
            }
        }
        (None, sent, answer)
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let r = exchange(gate.p.addr, &req("GET", "/acme/agents/x", "7.02-meanwhile", &auth, b""));
    if r.status != 200 || started.elapsed() > Duration::from_secs(5) {
        bad.push(format!(
            "[7.02] a normal request during a slow one: {} after {:?}",
            r.status,
            started.elapsed()
        ));
    }
    let (cut, sent, answer) = slow.join().unwrap();
    eprintln!("7.01: slow headers closed after {cut:?}, {sent} of {head_len} bytes sent");
    match cut {
        Some(after) if after < Duration::from_secs(6) && sent < head_len => {}
        other => bad.push(format!(
            "[7.01] slow headers not cut off: closed after {other:?}, {sent} of {head_len} bytes sent"
        )),
    }
    let answer = String::from_utf8_lossy(&answer);
    if !(answer.is_empty() || answer.starts_with("HTTP/1.1 408")) {
        bad.push(format!("[7.01] slow headers answered {answer:?}"));
    }
    if !gate.rec.case("7.01-slow-headers").is_empty() {
        bad.push("[7.01] slow headers reached the upstream".into());
    }
    assert_no_failures("slow headers", &bad);
}

/// 7.03: a client that connects and sends nothing.
#[test]
fn a_silent_client_is_cut_off() {
    let (gate, _) = start();
    let mut idle = Conn::open(gate.p.addr);
    assert!(
        idle.closed_within(Duration::from_secs(5)),
        "[7.03] a silent client was not cut off within 5 s"
    );
}

/// 7.04: a body announced and never completed, HTTP upstream: bounded by the route's
/// response timeout, and the upstream is let go.
#[test]
fn an_endless_body_ends_at_the_response_timeout() {
    let (gate, auth) = start();
    let mut bad = Vec::new();
    let mut c = Conn::open(gate.p.addr);
    let head = req(
        "POST",
        "/acme/agents/x",
        "7.04-endless-body",
        &format!("{auth}Content-Length: 100000\r\n"),
        b"0123456789",
    );
    let started = Instant::now();
    c.send(&keep_alive(head));
    let r = c.answer();
    let waited = started.elapsed();
    eprintln!("7.04: endless body answered {:?} after {waited:?}", r.as_ref().map(|r| r.status));
    match &r {
        Some(r) if r.status == 504 && waited < Duration::from_secs(10) => {}
        _ => bad.push(format!("[7.04] endless body: {:?} after {waited:?}", r.map(|r| r.status))),
    }
    let released = wait_until(Duration::from_secs(5), || {
        gate.rec.case("7.04-endless-body").iter().all(|g| matches!(g.body, Some(Err(_))))
    });
    if !released {
        bad.push(format!(
            "[7.04] the upstream still waits for the body after the 504: {:?}",
            gate.rec.case("7.04-endless-body")
        ));
    }
    if gate.rec.case("7.04-endless-body").iter().any(|g| matches!(g.body, Some(Ok(_)))) {
        bad.push("[7.04] the upstream read a whole body".into());
    }
    drop(c);
    assert_no_failures("endless body", &bad);
}

/// 7.07: the same body, refused (no token): answered at once, and the connection is not
/// held open waiting for a body nobody reads.
#[test]
fn an_endless_body_that_is_refused_is_not_waited_for() {
    let (gate, _) = start();
    let mut bad = Vec::new();
    let mut c = Conn::open(gate.p.addr);
    let head = req(
        "POST",
        "/acme/agents/x",
        "7.07-endless-refused",
        "Content-Length: 100000\r\n",
        b"0123456789",
    );
    let started = Instant::now();
    c.send(&keep_alive(head));
    let r = c.answer();
    if r.as_ref().map(|r| r.status) != Some(401) || started.elapsed() > Duration::from_secs(5) {
        bad.push(format!(
            "[7.07] refused endless body: {:?} after {:?}",
            r.map(|r| r.status),
            started.elapsed()
        ));
    }
    if !c.closed_within(Duration::from_secs(5)) {
        bad.push("[7.07] the connection stays open after refusing a body that never ends".into());
    }
    if !gate.rec.case("7.07-endless-refused").is_empty() {
        bad.push("[7.07] reached the upstream".into());
    }
    assert_no_failures("endless refused body", &bad);
}

/// 7.05: the same against git http-backend: the process is ended, its slot freed.
#[test]
fn an_endless_body_to_git_ends_git() {
    let (gate, auth) = start();
    let pid = pid_of(&gate.p);
    let mut bad = Vec::new();
    let mut c = Conn::open(gate.p.addr);
    let head = req(
        "POST",
        "/acme/demo.git/git-upload-pack",
        "7.05-endless-git-body",
        &format!("{auth}Content-Type: application/x-git-upload-pack-request\r\nContent-Length: 100000\r\n"),
        b"0032want ",
    );
    let started = Instant::now();
    c.send(&head);
    let r = c.answer();
    let waited = started.elapsed();
    eprintln!(
        "7.05: endless git body answered {:?} after {waited:?}",
        r.as_ref().map(|r| (r.status, &r.body))
    );
    let cut = r.as_ref().is_none_or(|r| r.status == 504);
    if !cut || waited > Duration::from_secs(12) {
        bad.push(format!(
            "[7.05] endless git body: {:?} after {waited:?}",
            r.map(|r| (r.status, r.body))
        ));
    }
    if !wait_until(Duration::from_secs(5), || !children(pid).iter().any(|c| c.contains("http-backend"))) {
        bad.push(format!("[7.05] git http-backend still runs: {:?}", children(pid)));
    }
    drop(c);
    assert_no_failures("endless git body", &bad);
}

/// 7.06: more silent clients than connection slots: each is cut after the header timeout,
/// so a normal client waiting behind them is served within seconds.
#[test]
fn silent_clients_beyond_the_connection_limit_are_cut_off() {
    let (gate, auth) = start();
    let idle: Vec<TcpStream> = (0..24).map(|_| TcpStream::connect(gate.p.addr).unwrap()).collect();
    let started = Instant::now();
    let mut c = Conn::open(gate.p.addr);
    c.send(&req("GET", "/acme/agents/x", "7.06-behind-idle", &auth, b""));
    let r = c.answer();
    eprintln!("7.06: served behind idle clients after {:?}", started.elapsed());
    let mut bad = Vec::new();
    if r.as_ref().map(|r| r.status) != Some(200) || started.elapsed() > Duration::from_secs(12) {
        bad.push(format!(
            "[7.06] a request behind 24 idle clients (8 slots): {:?} after {:?}",
            r.map(|r| r.status),
            started.elapsed()
        ));
    }
    drop(idle);
    assert_no_failures("silent clients", &bad);
}
