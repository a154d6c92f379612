//! patgate's HTTP/1 server: how it frames what upstreams answer, what it drops, pipelining,
//! refusals, and a client that goes away.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;

/// An upstream that answers each request with the raw answer its path names, and records
/// each request head it read.
struct Scripted {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    /// How many connections it accepted.
    connections: Arc<AtomicUsize>,
}

fn answer_for(path: &str) -> (&'static [u8], bool) {
    let close = true;
    match path {
        "/s/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: x-drop\r\nX-Drop: secret\r\nKeep-Alive: timeout=5\r\nX-Kept: 1\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
            !close,
        ),
        "/s/early" => (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter",
            !close,
        ),
        "/s/len" => (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", !close),
        "/s/head" => (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", !close),
        "/s/empty" => (b"HTTP/1.1 204 No Content\r\nX-Kept: 1\r\n\r\n", !close),
        "/s/eof" => (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", close),
        "/s/two-lengths" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            close,
        ),
        "/s/switch" => (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", close),
        "/s/half" => (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", close),
        // Closes after its answer without saying so.
        "/s/silent-close" => (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye", close),
        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n", !close),
    }
}

fn spawn_scripted() -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            let Ok(mut c) = c else { return };
            accepted.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            std::thread::spawn(move || loop {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match c.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                if path == "/s/refuse-body" {
                    // Answers at once, reads none of the body, and closes after a while.
                    seen.lock().unwrap().push(head);
                    let _ = c.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo much");
                    std::thread::sleep(Duration::from_millis(500));
                    return;
                }
                let mut body = vec![0u8; length];
                if c.read_exact(&mut body).is_err() {
                    return;
                }
                seen.lock().unwrap().push(head);
                if path == "/s/hang" {
                    // Holds the request until patgate lets the connection go.
                    let _ = c.read(&mut b);
                    return;
                }
                let (answer, close) = answer_for(&path);
                if c.write_all(answer).is_err() || close {
                    return;
                }
            });
        }
    });
    Scripted { addr, heads, connections }
}

fn start(up: &Scripted) -> (TestPatgate, String) {
    let p = TestPatgate::start(&format!(
        "[[routes]]\npath = \"/s/**\"\nupstream = \"http://{}\"\nrules = [{{ scope = \"agentpools:read\" }}]\n",
        up.addr
    ));
    let t = p.mint_live("agentpools:read", "*");
    (p, t.token)
}

/// Reads one answer: its head, and its body as it is framed on the wire (by length, the
/// chunks with their sizes, or to the end). Apart from `support::Conn`, which decodes: these
/// tests are about the framing itself.
fn read_one(s: &mut TcpStream, head_only: bool) -> (String, Vec<u8>) {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed in a head: {:?}", String::from_utf8_lossy(&got));
        got.push(b[0]);
    }
    let head = String::from_utf8(got).unwrap();
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if head_only || head.starts_with("HTTP/1.1 204") {
        return (head, body);
    }
    if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
    {
        body.resize(len, 0);
        s.read_exact(&mut body).unwrap();
    } else if lower.contains("transfer-encoding: chunked") {
        while !body.ends_with(b"\r\n0\r\n\r\n") && body != b"0\r\n\r\n" {
            assert_eq!(s.read(&mut b).unwrap(), 1, "closed in a body");
            body.push(b[0]);
        }
    } else {
        s.read_to_end(&mut body).unwrap();
    }
    (head, body)
}

/// The data of a chunked body.
fn unchunk(mut body: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    loop {
        let line = body.windows(2).position(|w| w == b"\r\n").expect("a chunk-size line");
        let size = usize::from_str_radix(std::str::from_utf8(&body[..line]).unwrap(), 16).unwrap();
        body = &body[line + 2..];
        if size == 0 {
            return data;
        }
        data.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

fn send(s: &mut TcpStream, method: &str, path: &str, token: &str, extra: &str) {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: gate.example\r\nAuthorization: Bearer {token}\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).unwrap();
}

fn client(p: &TestPatgate) -> TcpStream {
    let s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn answers_are_framed_as_the_upstream_framed_them_without_hop_by_hop_headers() {
    let up = spawn_scripted();
    let (p, t) = start(&up);
    let mut s = client(&p);

    send(&mut s, "GET", "/s/chunked", &t, "");
    let (head, body) = read_one(&mut s, false);
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        lower.contains("transfer-encoding: chunked\r\n") && lower.contains("x-kept: 1"),
        "{head}"
    );
    assert!(
        !lower.contains("x-drop") && !lower.contains("keep-alive") && !lower.contains("connection"),
        "{head}"
    );
    // The data passes chunk by chunk, framed anew: extensions and trailers stay behind.
    assert_eq!(String::from_utf8(body).unwrap(), "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");

    // An informational answer is skipped; the final one follows on the same connection.
    send(&mut s, "GET", "/s/early", &t, "");
    let (head, body) = read_one(&mut s, false);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"after");

    // HEAD: the length is told, no body follows, and the connection goes on.
    send(&mut s, "HEAD", "/s/head", &t, "");
    let (head, _) = read_one(&mut s, true);
    assert!(head.to_ascii_lowercase().contains("content-length: 10"), "{head}");
    send(&mut s, "GET", "/s/empty", &t, "");
    let (head, _) = read_one(&mut s, false);
    assert!(
        head.starts_with("HTTP/1.1 204") && head.to_ascii_lowercase().contains("x-kept: 1"),
        "{head}"
    );
    send(&mut s, "GET", "/s/len", &t, "");
    assert_eq!(read_one(&mut s, false).1, b"0123456789");

    // An answer framed by the upstream's closing goes to the client chunked, and the
    // client's connection goes on.
    send(&mut s, "GET", "/s/eof", &t, "");
    let (head, body) = read_one(&mut s, false);
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(unchunk(&body), b"until the end");
    send(&mut s, "GET", "/s/len", &t, "");
    assert_eq!(read_one(&mut s, false).1, b"0123456789");

    // None saw the secret.
    let heads = up.heads.lock().unwrap();
    assert_eq!(heads.len(), 7);
    for h in heads.iter() {
        let lower = h.to_ascii_lowercase();
        assert!(!h.contains(&t) && !lower.contains("authorization"), "{h}");
        assert!(lower.contains(&format!("host: {}\r\n", up.addr)), "{h}");
        assert!(
            lower.contains("x-patgate-user: ") && lower.contains("x-forwarded-host: gate.example"),
            "{h}"
        );
    }
}

#[test]
fn answers_that_cannot_pass_are_502_and_a_cut_body_ends_the_connection() {
    let up = spawn_scripted();
    let (p, t) = start(&up);
    let mut s = client(&p);
    send(&mut s, "GET", "/s/switch", &t, "");
    let (head, _) = read_one(&mut s, false);
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    // An upstream's answer framed both ways is read by its Transfer-Encoding (RFC 9112
    // §6.3), as the upstream client (hyper) reads it, and passed on framed once.
    let mut s = client(&p);
    send(&mut s, "GET", "/s/two-lengths", &t, "");
    let (head, body) = read_one(&mut s, false);
    assert!(
        head.starts_with("HTTP/1.1 200") && !head.to_ascii_lowercase().contains("content-length: 2"),
        "{head}"
    );
    assert_eq!(body, b"0\r\n\r\n");
    // The head went out; the body stops short: the client sees its connection close.
    let mut s = client(&p);
    send(&mut s, "GET", "/s/half", &t, "");
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let all = String::from_utf8_lossy(&all);
    assert!(all.starts_with("HTTP/1.1 200") && all.ends_with("only this"), "{all}");
}

#[test]
fn pipelined_requests_with_and_without_bodies_are_answered_in_order() {
    let up = spawn_scripted();
    let (p, t) = start(&up);
    let mut s = client(&p);
    let one = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {t}\r\n\r\n");
    let post = format!("POST /s/posted HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {t}\r\nContent-Length: 4\r\n\r\nbody");
    s.write_all(format!("{}{}{}{}", one("/s/len"), one("/s/early"), post, one("/s/len")).as_bytes())
        .unwrap();
    assert_eq!(read_one(&mut s, false).1, b"0123456789");
    assert_eq!(read_one(&mut s, false).1, b"after");
    let (head, body) = read_one(&mut s, false);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"ok\n");
    assert_eq!(read_one(&mut s, false).1, b"0123456789");
    // A refusal after them, on the same connection.
    send(&mut s, "GET", "/s/len", "not-a-token", "");
    let (head, _) = read_one(&mut s, false);
    assert!(
        head.starts_with("HTTP/1.1 401") && head.to_ascii_lowercase().contains("www-authenticate"),
        "{head}"
    );
    let heads = up.heads.lock().unwrap();
    assert_eq!(heads.len(), 4);
    assert!(
        heads[2].starts_with("POST /s/posted") && heads[2].contains("content-length: 4"),
        "{}",
        heads[2]
    );
}

#[test]
fn refusals_keep_the_connection_and_a_bad_head_closes_it() {
    let up = spawn_scripted();
    let (p, t) = start(&up);
    let mut s = client(&p);
    send(&mut s, "GET", "/s/len", "nope", "");
    let (head, body) = read_one(&mut s, false);
    let lower = head.to_ascii_lowercase();
    assert!(
        head.starts_with("HTTP/1.1 401") && lower.contains("www-authenticate: basic realm=\"patgate\""),
        "{head}"
    );
    assert!(String::from_utf8_lossy(&body).starts_with("authentication required"));
    send(&mut s, "GET", "/elsewhere/x", &t, "");
    let (head, body) = read_one(&mut s, false);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}{}", String::from_utf8_lossy(&body));
    send(&mut s, "GET", "/s/../s/len", &t, "");
    let (head, _) = read_one(&mut s, false);
    assert!(
        head.starts_with("HTTP/1.1 400") && head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    // A header line folded onto two is refused.
    let mut s = client(&p);
    s.write_all(format!("GET /s/len HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {t}\r\nX-A: 1\r\n 2\r\n\r\n").as_bytes())
        .unwrap();
    assert!(read_one(&mut s, false).0.starts_with("HTTP/1.1 400"));
    assert_eq!(up.heads.lock().unwrap().len(), 0);
}

#[test]
fn a_client_that_goes_away_while_the_upstream_works_is_logged_as_499() {
    let up = spawn_scripted();
    let (p, t) = start(&up);
    let mut s = client(&p);
    send(&mut s, "GET", "/s/hang", &t, "");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while up.heads.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the request never reached the upstream");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(s);
    assert!(p.log_shows("Request cancelled duration_ms="), "{}", p.log());
    let line = p.log().lines().find(|l| l.contains("Request cancelled")).unwrap().to_owned();
    assert!(line.contains("http.status=499") && line.contains("url.path=/s/hang"), "{line}");
}

#[test]
fn an_upstream_connection_that_closed_unannounced_is_not_used_again() {
    let up = spawn_scripted();
    let (p, t) = start(&up);
    let mut s = client(&p);
    for method in ["GET", "DELETE", "GET", "OPTIONS", "DELETE"] {
        send(&mut s, method, "/s/silent-close", &t, "");
        let (head, body) = read_one(&mut s, false);
        assert!(head.starts_with("HTTP/1.1 200"), "{method}: {head}");
        assert_eq!(body, b"bye");
        // Time for the upstream's FIN to arrive before the next request.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(up.heads.lock().unwrap().len(), 5);
}

#[test]
fn an_upstream_that_answers_before_reading_the_body_is_answered_and_not_kept() {
    let up = spawn_scripted();
    let (p, t) = start(&up);
    let mut s = client(&p);
    // More than the socket buffers hold: patgate cannot write it all before the answer.
    let body = vec![b'x'; 8 * 1024 * 1024];
    send(&mut s, "POST", "/s/refuse-body", &t, &format!("Content-Length: {}\r\n", body.len()));
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = s.write_all(&body);
        })
    };
    let (head, answer) = read_one(&mut s, false);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(answer, b"too much");
    // The rest of the body is never read: the client's connection ends after the answer
    // (when the head went, patgate did not know yet that nobody would read it).
    let mut rest = [0u8; 64];
    match s.read(&mut rest) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection stayed open: {other:?}"),
    }
    drop(s);
    writer.join().unwrap();
    // The upstream's connection was not kept with half a body in it: the next request gets
    // a new one.
    let mut s = client(&p);
    send(&mut s, "GET", "/s/len", &t, "");
    assert!(read_one(&mut s, false).0.starts_with("HTTP/1.1 200"));
    assert_eq!(up.connections.load(Ordering::SeqCst), 2);
}

#[test]
fn requests_whose_client_connection_closes_share_the_pools_upstream_connection() {
    let up = spawn_scripted();
    let (p, t) = start(&up);
    for _ in 0..5 {
        let mut s = client(&p);
        send(&mut s, "GET", "/s/len", &t, "Connection: close\r\n");
        let (head, body) = read_one(&mut s, false);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"0123456789");
    }
    // An upstream connection for each worker at most (the test server runs two).
    assert_eq!(up.heads.lock().unwrap().len(), 5);
    let n = up.connections.load(Ordering::SeqCst);
    assert!((1..=2).contains(&n), "{n} upstream connections for 5 requests");
}

#[test]
fn a_small_body_that_comes_after_its_head_is_waited_for() {
    let up = spawn_scripted();
    let (p, t) = start(&up);
    let mut s = client(&p);
    // Head and body in two writes, the body a moment later: patgate gathers a small body
    // before it writes the head upstream.
    send(&mut s, "POST", "/s/len", &t, "Content-Length: 5\r\n");
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"hello").unwrap();
    let (head, body) = read_one(&mut s, false);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"0123456789");
    assert!(up.heads.lock().unwrap()[0].to_ascii_lowercase().contains("content-length: 5"));
}
