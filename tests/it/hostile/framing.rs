//! Category 6, framing: Content-Length with Transfer-Encoding, two Content-Lengths,
//! malformed lengths, obfuscated Transfer-Encoding, bad chunk sizes, chunked bodies that are
//! not strictly chunked, a request hidden in a refused request's body, bodies that end
//! early, and Host lines that are not one valid host. What could be framed two ways gets 400
//! (501 for a coding patgate does not know); the upstream never reads a body it should not,
//! nor a request hidden in one.

use std::net::Shutdown;
use std::time::Duration;

use super::harness::*;
use crate::support::*;

/// patgate with the agents route, and the credential line of a manager (agentpools:manage)
/// who may POST there.
fn start() -> (Recorder, TestPatgate, String) {
    let rec = spawn_recorder();
    let p = TestPatgate::start(&agents_route(&rec));
    let m = live(&p, "bob", "agentpools:manage", "acme").token;
    (rec, p, bearer(&m))
}

/// The manager's POST to the agents route, with these header lines and body.
fn post(name: &str, auth: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    req("POST", "/acme/agents/x", name, &format!("{auth}{headers}"), body)
}

#[test]
fn content_length_and_transfer_encoding_are_read_one_way() {
    let (rec, p, auth) = start();
    let cases = cl_te_cases(&auth);
    assert_no_failures("CL and TE", &run_http_table(p.addr, &rec, &cases, None));
}

/// The manager's POSTs (credential line `auth`) with a framing of their own.
fn cl_te_cases(auth: &str) -> Vec<Case> {
    let cl_te = |name: &str, headers: &str, body: &[u8], want: u16| case(name, post(name, auth, headers, body), want);
    let http10 = |name: &str, headers: &str, body: &[u8], want: u16| {
        let raw = String::from_utf8(post(name, auth, headers, body)).unwrap();
        case(name, raw.replacen("HTTP/1.1", "HTTP/1.0", 1).into_bytes(), want)
    };
    vec![
        cl_te(
            "6.01-cl-then-te",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            b"0\r\n\r\n",
            400,
        ),
        cl_te(
            "6.02-te-then-cl",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            b"0\r\n\r\n",
            400,
        ),
        cl_te(
            "6.03-te-then-cl-cased",
            "Transfer-Encoding: chunked\r\ncontent-LENGTH: 5\r\n",
            b"0\r\n\r\n",
            400,
        ),
        cl_te(
            "6.04-te-then-bad-cl",
            "Transfer-Encoding: chunked\r\nContent-Length: x\r\n",
            b"0\r\n\r\n",
            400,
        ),
        cl_te("6.05-two-cls", "Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!", 400),
        cl_te("6.06-cl-list", "Content-Length: 5, 6\r\n", b"hello!", 400),
        // Two lines, even when they agree: one reading, no guess (RFC 9112 §6.3 lets a
        // server refuse; nginx does too).
        cl_te("6.07-same-cl-twice", "Content-Length: 5\r\nContent-Length: 5\r\n", b"hello", 400),
        cl_te("6.08-cl-plus", "Content-Length: +5\r\n", b"hello", 400),
        cl_te("6.09-cl-negative", "Content-Length: -1\r\n", b"hello", 400),
        cl_te("6.10-cl-hex", "Content-Length: 0x5\r\n", b"hello", 400),
        cl_te("6.11-cl-huge", "Content-Length: 99999999999999999999999\r\n", b"hello", 400),
        cl_te("6.12-te-xchunked", "Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n", 501),
        cl_te(
            "6.13-te-chunked-identity",
            "Transfer-Encoding: chunked, identity\r\n",
            b"0\r\n\r\n",
            501,
        ),
        cl_te("6.14-te-identity", "Transfer-Encoding: identity\r\n", b"hello", 501),
        cl_te("6.15-te-space-before-colon", "Transfer-Encoding : chunked\r\n", b"0\r\n\r\n", 400),
        cl_te("6.16-te-vertical-tab", "Transfer-Encoding:\x0bchunked\r\n", b"0\r\n\r\n", 400),
        http10(
            "6.17-te-http10",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            b"0\r\n\r\n",
            400,
        ),
        // Content-Length next to Transfer-Encoding is found by looking up the request line
        // in the bytes read; a chunked body that repeats the request line hides the real head.
        cl_te(
            "6.28-cl-te-hidden",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            &chunked_once(b"POST /acme/agents/x HTTP/1.1\r\n\r\n"),
            400,
        ),
    ]
}

/// A chunked body of `data` in one chunk.
fn chunked_once(data: &[u8]) -> Vec<u8> {
    let mut body = format!("{:x}\r\n", data.len()).into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    body
}

/// A chunked body is forwarded whole (with a GET too, never silently without it), or, when
/// a chunk size is bad, never whole.
#[test]
fn chunked_bodies_reach_the_upstream_whole_or_not_at_all() {
    let (rec, p, auth) = start();
    let te = format!("{auth}Transfer-Encoding: chunked\r\n");
    let chunked = |name: &str, method: &str, body: &[u8], want: u16| case(name, req(method, "/acme/agents/x", name, &te, body), want);
    let cases = vec![
        chunked("6.18-chunk-extension", "POST", b"5;ext=1\r\nhello\r\n0\r\n\r\n", 200).with_body("hello"),
        chunked("6.19-bad-chunk-size", "POST", b"zz\r\nhello\r\n0\r\n\r\n", 400).no_whole_body(),
        chunked(
            "6.20-overflowing-chunk-size",
            "POST",
            b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            400,
        )
        .no_whole_body(),
        chunked("6.21-negative-chunk-size", "POST", b"-5\r\nhello\r\n0\r\n\r\n", 400).no_whole_body(),
        chunked("6.22-chunk-too-long", "POST", b"3\r\nhello\r\n0\r\n\r\n", 400).no_whole_body(),
        chunked("6.34-get-with-chunked-body", "GET", b"5\r\nhello\r\n0\r\n\r\n", 200).with_body("hello"),
    ];
    assert_no_failures("chunked bodies", &run_http_table(p.addr, &rec, &cases, None));
}

/// Refused before its body is read: the body is drained or the connection closed, never
/// read as a request of its own, though it is one with a good token.
#[test]
fn a_refused_requests_body_is_never_read_as_a_request() {
    let (rec, p, auth) = start();
    let reader = bearer(&live(&p, "alice", "agentpools:read", "acme").token);
    let inner = format!("GET /acme/agents/smuggled HTTP/1.1\r\nHost: gate.example\r\nX-Case: 6.x-inner\r\n{auth}\r\n").into_bytes();
    let length = format!("Content-Length: {}\r\n", inner.len());
    // A keep-alive POST whose body is `inner`.
    let carrying = |name: &str, target: &str, headers: &str, want: u16| {
        let raw = String::from_utf8(req("POST", target, name, headers, b"")).unwrap();
        let mut raw = raw.replace("Connection: close\r\n", "").into_bytes();
        raw.extend_from_slice(&inner);
        case(name, raw, want)
    };
    let cases = vec![
        carrying("6.23-body-after-401", "/acme/agents/x", &length, 401),
        carrying("6.24-body-after-403", "/acme/agents/x", &format!("{reader}{length}"), 403),
        carrying("6.25-body-after-400", "/acme/agents/../x", &format!("{auth}{length}"), 400),
    ];
    let mut bad = run_http_table(p.addr, &rec, &cases, None);
    if rec.all().iter().any(|g| g.uri.contains("smuggled")) {
        bad.push("a request hidden in a refused request's body reached the upstream".into());
    }
    assert_no_failures("bodies of refused requests", &bad);
}

/// RFC 9112 §3.2: one valid Host on HTTP/1.1, or 400; X-Forwarded-Host is only ever one.
#[test]
fn a_request_has_one_valid_host() {
    let (rec, p, auth) = start();
    // The manager's POST with `lines` for its Host line.
    let host = |name: &str, lines: &str| {
        let raw = String::from_utf8(post(name, &auth, "", b"")).unwrap();
        case(name, raw.replace("Host: gate.example\r\n", lines).into_bytes(), 400)
    };
    let cases = vec![
        host("6.28-two-hosts", "Host: gate.example\r\nHost: evil.example\r\n"),
        host("6.29-no-host", ""),
        host("6.30-host-userinfo", "Host: u:p@evil.example\r\n"),
        host("6.31-host-space", "Host: ex ample\r\n"),
        host("6.32-host-slash", "Host: a/b\r\n"),
        host("6.33-host-port", "Host: x.example:99999\r\n"),
    ];
    assert_no_failures("Host", &run_http_table(p.addr, &rec, &cases, None));
}

/// Bodies that end early, then the client goes away: the upstream never reads a whole one.
#[test]
fn a_body_that_ends_early_never_reaches_the_upstream_whole() {
    let (rec, p, auth) = start();
    let mut bad = Vec::new();
    for (name, headers, body) in [
        ("6.26-short-body", "Content-Length: 10\r\n", b"hello".as_slice()),
        (
            "6.27-unterminated-chunks",
            "Transfer-Encoding: chunked\r\n",
            b"5\r\nhello\r\n".as_slice(),
        ),
    ] {
        let mut c = Conn::open(p.addr);
        c.send(&post(name, &auth, headers, body));
        c.s.shutdown(Shutdown::Write).unwrap();
        if let Some(r) = c.answer() {
            if r.status == 200 {
                bad.push(format!("[{name}] answered 200"));
            }
        }
        let done = wait_until(Duration::from_secs(5), || rec.case(name).iter().all(|g| g.body.is_some()));
        if !done {
            bad.push(format!("[{name}] the upstream still waits for the body"));
        }
        bad.extend(check_reach_http(&rec, &case(name, Vec::new(), 0).no_whole_body()));
    }
    assert_no_failures("bodies that end early", &bad);
}

/// The ways a lenient chunked reader loses a connection's framing: a chunk extension with a
/// control byte, a trailer line ending in a bare LF, an empty line that is a bare LF.
const NOT_STRICTLY_CHUNKED: &[(&str, &[u8])] = &[
    ("7.01-ext-control", b"5;\x01\r\nhello\r\n0\r\n\r\n"),
    ("7.02-ext-nul", b"5;\x00\r\nhello\r\n0\r\n\r\n"),
    ("7.03-ext-del", b"5;a\x7fb\r\nhello\r\n0\r\n\r\n"),
    ("7.04-trailer-bare-lf", b"0\r\nX-T: 1\n\r\n"),
    ("7.05-trailer-host-bare-lf", b"0\r\nHost: evil\n\r\n"),
    ("7.06-end-bare-lf", b"0\r\n\n"),
];

/// Each body of `NOT_STRICTLY_CHUNKED`, followed on the same connection by a request that
/// must never be read as one, gets 400 and the connection closes; the upstream sees neither
/// request, nor one hidden in a body.
#[test]
fn a_chunked_body_that_is_not_strictly_chunked_ends_the_connection() {
    let (rec, p, auth) = start();
    let mut bad = Vec::new();
    for (name, body) in NOT_STRICTLY_CHUNKED {
        bad.extend(check_not_strictly_chunked(p.addr, &rec, &auth, name, body));
    }
    if rec.all().iter().any(|g| g.uri.contains("hidden")) {
        bad.push("a request hidden in a body reached the upstream".into());
    }
    assert_no_failures("strict chunks", &bad);
}

/// Sends one body of `NOT_STRICTLY_CHUNKED`, then the next request; the problems found.
fn check_not_strictly_chunked(addr: std::net::SocketAddr, rec: &Recorder, auth: &str, case: &str, body: &[u8]) -> Vec<String> {
    let head = |case: &str, extra: &str| {
        format!("POST /acme/agents/x HTTP/1.1\r\nHost: gate.example\r\nX-Case: {case}\r\n{auth}{extra}\r\n").into_bytes()
    };
    let mut raw = head(case, "Transfer-Encoding: chunked\r\n");
    raw.extend_from_slice(body);
    let hidden = "0\r\n\r\nGET /acme/agents/hidden HTTP/1.1\r\nHost: gate.example\r\n\r\n";
    raw.extend_from_slice(&head(
        &format!("{case}-next"),
        &format!("Content-Length: {}\r\nTransfer-Encoding: chunked\r\n", hidden.len()),
    ));
    raw.extend_from_slice(hidden.as_bytes());
    let mut bad = Vec::new();
    let mut c = Conn::open(addr);
    c.send(&raw);
    match c.answer() {
        Some(r) if r.status == 400 => {}
        other => bad.push(format!("[{case}] answered {:?}, not 400", other.map(|r| r.head))),
    }
    if c.answer().is_some() {
        bad.push(format!("[{case}] a second answer came on the connection"));
    }
    if !c.closed_within(Duration::from_secs(5)) {
        bad.push(format!("[{case}] the connection stayed open"));
    }
    if !rec.case(&format!("{case}-next")).is_empty() {
        bad.push(format!("[{case}] the next request reached the upstream"));
    }
    if rec.case(case).iter().any(|g| matches!(g.body, Some(Ok(_)))) {
        bad.push(format!("[{case}] a whole body reached the upstream"));
    }
    bad
}
