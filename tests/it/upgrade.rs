//! Upgrades (WebSocket and the like) through patgate: judged like any request, then a
//! tunnel both ways to an upstream that switched protocols, over raw sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;

/// How the test upstream answers a request that carries `Upgrade`.
#[derive(Clone, Copy)]
enum Mode {
    /// 101 with the protocol asked for, a greeting, then every byte echoed.
    Echo,
    /// 200, as a server that does not upgrade.
    Decline,
    /// 101 to `h2c`, which no client here offers.
    Other,
}

/// An upstream over raw sockets that records each request head it reads (lower-cased).
struct WsUpstream {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

fn spawn_ws_upstream(mode: Mode) -> WsUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let rec = heads.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let rec = rec.clone();
            std::thread::spawn(move || serve_ws(tcp, mode, &rec));
        }
    });
    WsUpstream { addr, heads }
}

fn serve_ws(mut tcp: TcpStream, mode: Mode, rec: &Mutex<Vec<String>>) {
    loop {
        let Some((head, _)) = read_head(&mut tcp) else { return };
        let head = head.to_ascii_lowercase();
        rec.lock().unwrap().push(head.clone());
        if !head.contains("\r\nupgrade:") {
            let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nplain\n");
            continue;
        }
        match mode {
            Mode::Decline => {
                let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\ndeclined\n");
            }
            Mode::Other => {
                let _ = tcp.write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n");
                return;
            }
            Mode::Echo => {
                // The greeting goes in the same write as the head: it must not be lost.
                let _ = tcp.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Internal\r\n\
                      X-Internal: 1\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nwelcome;",
                );
                let mut buf = [0u8; 4096];
                loop {
                    match tcp.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tcp.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Reads up to the blank line after a head: the head, and any bytes read past it.
fn read_head(tcp: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        match tcp.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads exactly `n` bytes, starting with `already`.
fn read_n(tcp: &mut TcpStream, mut already: Vec<u8>, n: usize) -> Vec<u8> {
    let mut chunk = [0u8; 4096];
    while already.len() < n {
        let got = tcp.read(&mut chunk).expect("reading through the tunnel");
        assert!(got > 0, "the tunnel closed after {:?}", String::from_utf8_lossy(&already));
        already.extend_from_slice(&chunk[..got]);
    }
    already
}

fn ws_route(up: &WsUpstream, extra: &str) -> String {
    format!(
        "[[routes]]\npath = \"/{{org}}/_apis/events/**\"\nupstream = \"http://{}\"\nrules = [ {{ methods = [\"GET\"], scope = \"agentpools:read\" }} ]\n{extra}",
        up.addr
    )
}

fn upgrade_request(auth: Option<&str>, protocol: &str) -> String {
    let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    format!(
        "GET /acme/_apis/events/stream HTTP/1.1\r\nHost: gate.example\r\n{auth}Connection: Upgrade\r\nUpgrade: {protocol}\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A WebSocket tunnel through `p` to an echoing upstream, past its greeting.
fn open_tunnel(p: &TestPatgate, token: &str) -> TcpStream {
    let mut tunnel = connect(p);
    tunnel.write_all(upgrade_request(Some(token), "websocket").as_bytes()).unwrap();
    let (head, rest) = read_head(&mut tunnel).expect("an answer");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(read_n(&mut tunnel, rest, 8), b"welcome;");
    tunnel
}

fn connect(p: &TestPatgate) -> TcpStream {
    let s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

#[test]
fn an_admitted_upgrade_becomes_a_tunnel_both_ways() {
    let up = spawn_ws_upstream(Mode::Echo);
    let p = TestPatgate::start(&ws_route(&up, ""));
    let t = p.mint_live("agentpools:read", "acme");
    let mut s = connect(&p);
    s.write_all(upgrade_request(Some(&t.token), "websocket").as_bytes()).unwrap();
    let (head, rest) = read_head(&mut s).expect("an answer");
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(lower.contains("\r\nupgrade: websocket"), "{head}");
    assert!(lower.contains("\r\nconnection: upgrade"), "{head}");
    assert!(lower.contains("\r\nsec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
    assert!(!lower.contains("x-internal"), "{head}");
    // What the upstream sent right behind its 101 arrives first.
    let greeting = read_n(&mut s, rest, 8);
    assert_eq!(greeting, b"welcome;");
    for message in [
        &b"hello"[..],
        &[0x81, 0x85, 0, 1, 2, 3, b'h', b'e', b'l', b'm', b'o'][..],
        &[7u8; 100_000][..],
    ] {
        s.write_all(message).unwrap();
        assert_eq!(read_n(&mut s, Vec::new(), message.len()), message);
    }
    // The upstream saw the upgrade asked for, with patgate's identity and no credential.
    let heads = up.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let h = &heads[0];
    assert!(h.starts_with("get /acme/_apis/events/stream http/1.1\r\n"), "{h}");
    for want in [
        "\r\nupgrade: websocket\r\n",
        "\r\nconnection: upgrade\r\n",
        "\r\nsec-websocket-key: dghlihnhbxbszsbub25jzq==\r\n",
        "\r\nx-patgate-user: alice\r\n",
    ] {
        assert!(h.contains(want), "{want:?} not in {h}");
    }
    assert!(!h.contains("authorization"), "{h}");
    assert!(!p.log().contains(&t.token));
    assert!(p.log_shows("http.status=101"), "{}", p.log());
}

#[test]
fn without_a_token_401_and_the_upstream_never_sees_it() {
    let up = spawn_ws_upstream(Mode::Echo);
    let p = TestPatgate::start(&ws_route(&up, ""));
    let t = p.mint_live("agentpools:read", "acme");
    let mut s = connect(&p);
    s.write_all(upgrade_request(None, "websocket").as_bytes()).unwrap();
    let (head, _) = read_head(&mut s).expect("an answer");
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    // The connection stays HTTP, and its next request is judged like any other: a head
    // framed two ways is refused even after an upgrade was asked for.
    let body = "0\r\n\r\n";
    s.write_all(
        format!(
            "GET /acme/_apis/events/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
            t.token,
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let (head, _) = read_head(&mut s).expect("a second answer");
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert!(up.heads.lock().unwrap().is_empty());
}

#[test]
fn a_token_without_the_scope_gets_403_and_the_upstream_never_sees_it() {
    let up = spawn_ws_upstream(Mode::Echo);
    let p = TestPatgate::start(&ws_route(&up, ""));
    let t = p.mint_live("code:read", "acme");
    let mut s = connect(&p);
    s.write_all(upgrade_request(Some(&t.token), "websocket").as_bytes()).unwrap();
    let (head, _) = read_head(&mut s).expect("an answer");
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    assert!(up.heads.lock().unwrap().is_empty());
}

#[test]
fn an_upstream_that_does_not_switch_answers_as_usual() {
    let up = spawn_ws_upstream(Mode::Decline);
    let p = TestPatgate::start(&ws_route(&up, ""));
    let t = p.mint_live("agentpools:read", "acme");
    let mut s = connect(&p);
    s.write_all(upgrade_request(Some(&t.token), "websocket").as_bytes()).unwrap();
    let (head, rest) = read_head(&mut s).expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(!head.to_ascii_lowercase().contains("upgrade"), "{head}");
    assert_eq!(read_n(&mut s, rest, 9), b"declined\n");
    // The same connection goes on as HTTP.
    s.write_all(
        format!(
            "GET /acme/_apis/events/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            t.token
        )
        .as_bytes(),
    )
    .unwrap();
    let (head, rest) = read_head(&mut s).expect("a second answer");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(read_n(&mut s, rest, 6), b"plain\n");
    assert_eq!(up.heads.lock().unwrap().len(), 2);
}

#[test]
fn a_switch_to_a_protocol_not_offered_is_502() {
    let up = spawn_ws_upstream(Mode::Other);
    let p = TestPatgate::start(&ws_route(&up, ""));
    let t = p.mint_live("agentpools:read", "acme");
    let r = http(p.addr, &upgrade_request(Some(&t.token), "websocket"));
    assert_eq!(r.status, 502, "{r:?}");
    assert!(p.log_shows("Upstream switched to a protocol the client did not offer"));
}

#[test]
fn protocols_that_carry_http_are_not_passed_on() {
    let up = spawn_ws_upstream(Mode::Echo);
    let p = TestPatgate::start(&ws_route(&up, ""));
    let t = p.mint_live("agentpools:read", "acme");
    for protocol in ["h2c", "HTTP/2.0", "websocket, h2c", "TLS/1.2"] {
        let raw = upgrade_request(Some(&t.token), protocol).replace("\r\n\r\n", "\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n");
        let raw = raw.replace("Connection: Upgrade", "Connection: Upgrade, HTTP2-Settings, close");
        let r = http(p.addr, &raw);
        assert_eq!(r.status, 200, "{protocol}: {r:?}");
        assert_eq!(r.body, "plain\n", "{protocol}");
    }
    for h in up.heads.lock().unwrap().iter() {
        assert!(!h.contains("\r\nupgrade:") && !h.contains("http2-settings"), "{h}");
    }
}

#[test]
fn a_quiet_tunnel_is_closed_after_the_routes_response_timeout() {
    let up = spawn_ws_upstream(Mode::Echo);
    let p = TestPatgate::start(&ws_route(&up, "response_timeout = \"1s\"\n"));
    let t = p.mint_live("agentpools:read", "acme");
    let mut s = connect(&p);
    s.write_all(upgrade_request(Some(&t.token), "websocket").as_bytes()).unwrap();
    let (head, rest) = read_head(&mut s).expect("an answer");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(read_n(&mut s, rest, 8), b"welcome;");
    // Traffic more often than the limit keeps it open.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(600));
        s.write_all(b"ping").unwrap();
        assert_eq!(read_n(&mut s, Vec::new(), 4), b"ping");
    }
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).expect("a close, not a read timeout");
    assert_eq!(n, 0);
    let quiet = started.elapsed();
    assert!(quiet >= Duration::from_millis(900) && quiet < Duration::from_secs(10), "{quiet:?}");
}

#[test]
fn a_tunnel_keeps_its_place_in_the_connection_limits() {
    let up = spawn_ws_upstream(Mode::Echo);
    let p = TestPatgate::start_with_server("max_connections_per_ip = 2", &ws_route(&up, ""));
    let t = p.mint_live("agentpools:read", "acme");
    let mut tunnel = open_tunnel(&p, &t.token);
    // The tunnel is one of the address's two connections: one more is served, a third is not.
    let mut second = connect(&p);
    second.write_all(b"GET /acme/x.git/info/refs HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = [0u8; 12];
    second.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 401");
    let mut third = connect(&p);
    let mut out = String::new();
    let _ = third.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    // The tunnel still works.
    tunnel.write_all(b"ping").unwrap();
    assert_eq!(read_n(&mut tunnel, Vec::new(), 4), b"ping");
}

#[test]
fn a_tunnel_ends_when_its_token_is_revoked() {
    let up = spawn_ws_upstream(Mode::Echo);
    let p = TestPatgate::start(&ws_route(&up, ""));
    let t = p.mint_live("agentpools:read", "acme");
    let mut tunnel = open_tunnel(&p, &t.token);
    tunnel.write_all(b"ping").unwrap();
    assert_eq!(read_n(&mut tunnel, Vec::new(), 4), b"ping");
    let out = p.cli(&["token", "revoke", &t.id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Within the poll interval and one recheck the tunnel is closed.
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tunnel.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the tunnel still carried {:?}", &buf[..n]);
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(p.log_shows("reason=\"its token is no longer live\""), "{}", p.log());
}

#[test]
fn a_tunnel_is_closed_when_the_server_drains() {
    let up = spawn_ws_upstream(Mode::Echo);
    let mut p = TestPatgate::start_with_env(&ws_route(&up, ""), &[("PATGATE__SERVER__SHUTDOWN_GRACE", "30s")]);
    let t = p.mint_live("agentpools:read", "acme");
    let mut tunnel = open_tunnel(&p, &t.token);
    let (status, took) = p.terminate();
    assert!(status.success(), "{status:?}\n{}", p.log());
    // Told within a recheck, not at the end of the 30 s grace.
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(p.log().contains("reason=\"the server is stopping\""), "{}", p.log());
    let mut buf = [0u8; 8];
    assert_eq!(tunnel.read(&mut buf).unwrap_or(0), 0);
}
