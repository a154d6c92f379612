//! The proxy's answers and what reaches an HTTP upstream, over raw sockets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

fn agents_route(upstream: &Upstream) -> String {
    format!(
        "[[routes]]\npath = \"/{{org}}/_apis/distributedtask/**\"\nupstream = \"http://{}\"\nrules = [ {{ methods = [\"GET\"], scope = \"agentpools:read\" }}, {{ scope = \"agentpools:manage\" }} ]\n",
        upstream.addr
    )
}

fn get(path: &str, auth: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gate.example\r\nAuthorization: {auth}\r\n{extra}Connection: close\r\n\r\n")
}

#[test]
fn the_upstream_never_sees_the_credential_or_forged_identity() {
    let up = spawn_upstream(false);
    let p = TestPatgate::start(&agents_route(&up));
    let t = p.mint_live("agentpools:read", "acme");
    let forged = "X-Patgate-User: mallory\r\nX-Patgate-Token-Id: forged\r\nX-Patgate-Other: x\r\nX-Forwarded-For: 10.9.9.9\r\nX-Forwarded-Host: evil\r\nForwarded: for=10.9.9.9\r\nX-Remote-User: mallory\r\nX_Patgate_User: mallory\r\nRemote_User: mallory\r\nProxy-Authorization: Basic eDp5\r\nConnection: X-Custom\r\nX-Custom: hop\r\nX-HTTP-Method-Override: DELETE\r\nX-Original-URL: /other/x\r\nProxy: http://evil\r\nX-Forwarded-User: mallory\r\nRemote-User: mallory\r\n";
    let r = http(
        p.addr,
        &get("/acme/_apis/distributedtask/pools?top=5", &format!("Bearer {}", t.token), forged),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "ok\n");
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.uri, "/acme/_apis/distributedtask/pools?top=5");
    assert_eq!(s.header("x-patgate-user"), vec!["alice"]);
    assert_eq!(s.header("x-patgate-token-id"), vec![t.id.clone()]);
    assert_eq!(s.header("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(s.header("x-forwarded-host"), vec!["gate.example"]);
    assert_eq!(s.header("x-forwarded-proto"), vec!["http"]);
    assert_eq!(s.header("host"), vec![up.addr.to_string()]);
    for gone in [
        "x-http-method-override",
        "x-original-url",
        "proxy",
        "x-forwarded-user",
        "remote-user",
        "authorization",
        "proxy-authorization",
        "x-patgate-other",
        "forwarded",
        "x-remote-user",
        "x_patgate_user",
        "remote_user",
        "x-custom",
    ] {
        assert!(s.header(gone).is_empty(), "{gone} reached the upstream: {:?}", s.headers);
    }
    assert!(!p.log().contains(&t.token));
}

#[test]
fn rules_pick_the_scope_by_method_and_403_names_it() {
    let up = spawn_upstream(false);
    let p = TestPatgate::start(&agents_route(&up));
    let reader = p.mint_live("agentpools:read", "acme");
    let manager = p.mint_live("agentpools:manage", "acme");
    let post = |tok: &str| {
        format!("POST /acme/_apis/distributedtask/pools HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {tok}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}")
    };
    let r = http(p.addr, &post(&reader.token));
    assert_eq!(r.status, 403);
    assert_eq!(r.body, "token lacks scope agentpools:manage\n");
    assert_eq!(http(p.addr, &post(&manager.token)).status, 200);
    assert_eq!(
        http(
            p.addr,
            &get("/acme/_apis/distributedtask/pools", &format!("Bearer {}", manager.token), "")
        )
        .status,
        200
    );
    let r = http(
        p.addr,
        &get("/other/_apis/distributedtask/pools", &format!("Bearer {}", manager.token), ""),
    );
    assert_eq!((r.status, r.body.as_str()), (403, "token does not cover organization other\n"));
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.iter().map(|s| s.method.as_str()).collect::<Vec<_>>(), vec!["POST", "GET"]);
    assert_eq!(seen[0].body_len, 2);
}

#[test]
fn every_unauthenticated_request_gets_the_same_401_with_a_challenge() {
    let p = TestPatgate::start("");
    let expired = p.mint("code:read", "acme", "1s");
    let revoked = p.mint_live("code:read", "acme");
    assert!(p.cli(&["token", "revoke", &revoked.id]).status.success());
    let mut wrong_sum = revoked.token.clone();
    let last = wrong_sum.pop().unwrap();
    wrong_sum.push(if last == '0' { '1' } else { '0' });
    std::thread::sleep(Duration::from_millis(2100));
    let path = "/acme/demo.git/info/refs?service=git-upload-pack";
    let requests = [
        format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"),
        get(path, "Basic", ""),
        get(path, &basic("alice", "hunter2"), ""),
        get(path, &format!("Bearer {wrong_sum}"), ""),
        get(path, "Bearer patg_000000000000000000000000000000000000000000000000", ""),
        get(path, &format!("Bearer {}", expired.token), ""),
        get(path, &basic("x", &revoked.token), ""),
        get(path, "Negotiate abc", ""),
    ];
    let mut bodies = Vec::new();
    for req in &requests {
        let r = http(p.addr, req);
        assert_eq!(r.status, 401, "{req}");
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Basic realm=\"patgate\""));
        bodies.push(r.body);
    }
    bodies.dedup();
    assert_eq!(bodies.len(), 1, "401 bodies differ: {bodies:?}");
}

#[test]
fn unreadable_requests_get_400_with_a_reason_and_never_reach_the_upstream() {
    let up = spawn_upstream(false);
    let p = TestPatgate::start(&agents_route(&up));
    let t = p.mint_live("full", "*");
    let auth = format!("Bearer {}", t.token);
    let cases: Vec<(String, &str)> = vec![
        (get("/acme/_apis/distributedtask/../x", &auth, ""), "path holds a '.' or '..' segment"),
        (get("/acme/_apis/distributedtask/%2e%2e/x", &auth, ""), "path holds an encoded"),
        (get("/acme%2f_apis/distributedtask/x", &auth, ""), "path holds an encoded"),
        (get("/acme/_apis/distributedtask/%252e%252e/x", &auth, ""), "path holds a double percent-encoding"),
        (get("/acme/_apis//distributedtask/x", &auth, ""), "path holds an empty segment"),
        (get("/acme/_apis/distributedtask/x;a=b", &auth, ""), "path holds a ';' parameter"),
        (get("/acme/_apis/distributedtask/%00", &auth, ""), "path holds a control byte"),
        (get("/acme/_apis/distributedtask/%c0%ae", &auth, ""), "path does not decode to UTF-8"),
        (get("/acme/demo.git/info/refs?service=git-upload-pack&service=git-receive-pack", &auth, ""), "query gives `service` more than once"),
        (get("/acme/demo.git/info/refs?%73ervice=git-receive-pack", &auth, ""), "query gives `service` in an encoded form"),
        (get("/acme/demo.git/info/refs?service=git-upload-archive", &auth, ""), "query gives an unknown `service`"),
        (get("/acme/_apis/distributedtask/x", "Basic !!!", ""), "Basic credentials are not valid base64"),
        (get("/acme/_apis/distributedtask/x", &auth, &format!("Authorization: {auth}\r\n")), "more than one Authorization header"),
        (get("/acme/_apis/distributedtask/x", &format!("Bearer {}", "a".repeat(5000)), ""), "Authorization header longer than"),
        (
            format!("POST /acme/_apis/distributedtask/x HTTP/1.1\r\nHost: h\r\nAuthorization: {auth}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"),
            "request has both Content-Length and Transfer-Encoding",
        ),
        (
            format!("POST /acme/_apis/distributedtask/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nAuthorization: {auth}\r\nContent-Length: 5\r\nConnection: close\r\n\r\n0\r\n\r\n"),
            "request has both Content-Length and Transfer-Encoding",
        ),
        (format!("GET http://evil.example/acme/_apis/distributedtask/x HTTP/1.1\r\nHost: h\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"), "absolute-form"),
    ];
    for (req, reason) in &cases {
        let r = http(p.addr, req);
        assert_eq!(r.status, 400, "{req}\n{r:?}");
        assert!(r.body.starts_with(reason), "{req}\n{:?} should start with {reason:?}", r.body);
        assert_eq!(r.body.lines().count(), 1);
    }
    let r = http(
        p.addr,
        &format!("TRACE /acme/_apis/distributedtask/x HTTP/1.1\r\nHost: h\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(r.status, 405);
    // Non-UTF-8 bytes in the header value.
    let raw =
        b"GET /acme/_apis/distributedtask/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n".to_vec();
    let r = http_bytes(p.addr, &raw);
    assert_eq!(r.status, 400);
    assert!(up.seen.lock().unwrap().is_empty(), "a refused request reached the upstream");
    // And a chunked upload with no Content-Length goes through.
    let r = http(p.addr, &format!("POST /acme/_apis/distributedtask/x HTTP/1.1\r\nHost: h\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"));
    assert_eq!(r.status, 200);
    assert_eq!(up.seen.lock().unwrap()[0].body_len, 5);
}

#[test]
fn a_refused_request_with_expect_continue_is_answered_without_its_body() {
    let up = spawn_upstream(false);
    let p = TestPatgate::start(&agents_route(&up));
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /acme/_apis/distributedtask/x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1000000\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(!text.contains("100 Continue"));

    // With a good token, 100-continue is honoured and the body flows.
    let t = p.mint_live("agentpools:manage", "acme");
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "POST /acme/_apis/distributedtask/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\nExpect: 100-continue\r\nContent-Length: 4\r\nConnection: close\r\n\r\n", t.token).unwrap();
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"));
    s.write_all(b"body").unwrap();
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    assert!(rest.contains("200 OK"), "{rest}");
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].header("expect").is_empty());
    assert_eq!(seen[0].body_len, 4);
}

#[test]
fn unreachable_and_slow_upstreams_get_502_and_504() {
    let hanging = spawn_upstream(true);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let extra = format!(
        "[[routes]]\npath = \"/{{org}}/_apis/down/**\"\nupstream = \"http://{closed}\"\nrules = [ {{ scope = \"agentpools:read\" }} ]\n\n[[routes]]\npath = \"/{{org}}/_apis/slow/**\"\nupstream = \"http://{}\"\nresponse_timeout = \"1s\"\nrules = [ {{ scope = \"agentpools:read\" }} ]\n",
        hanging.addr
    );
    let p = TestPatgate::start(&extra);
    let t = p.mint_live("agentpools:read", "acme");
    let r = http(p.addr, &get("/acme/_apis/down/x", &format!("Bearer {}", t.token), ""));
    assert_eq!((r.status, r.body.as_str()), (502, "upstream unreachable\n"));
    let started = Instant::now();
    let r = http(p.addr, &get("/acme/_apis/slow/x", &format!("Bearer {}", t.token), ""));
    assert_eq!((r.status, r.body.as_str()), (504, "upstream did not answer within 1s\n"));
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn no_route_and_no_rule_are_refused() {
    let p = TestPatgate::start("");
    let t = p.mint_live("full", "*");
    let r = http(p.addr, &get("/", &format!("Bearer {}", t.token), ""));
    assert_eq!(r.status, 404);
    let r = http(p.addr, &get("/acme/demo.git/config", &format!("Bearer {}", t.token), ""));
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "no rule of route /{org}/{repo}/** admits GET on this path\n")
    );
}

/// Reads one answer with a Content-Length body from a kept-alive connection.
fn read_answer(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text;
            }
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_kept_alive_client_connection_reuses_its_upstream_connection_and_survives_its_closing() {
    // An upstream that closes its connection after every answer, next to one that keeps it.
    let closing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closing_addr = closing.local_addr().unwrap();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let served = served.clone();
        std::thread::spawn(move || {
            for c in closing.incoming() {
                let Ok(mut c) = c else { return };
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && c.read(&mut b).map(|n| n == 1).unwrap_or(false) {
                    head.push(b[0]);
                }
                served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
            }
        });
    }
    let up = spawn_upstream(false);
    let extra = format!(
        "{}\n[[routes]]\npath = \"/closing/**\"\nupstream = \"http://{closing_addr}\"\nrules = [{{ scope = \"agentpools:read\" }}]\n",
        agents_route(&up)
    );
    let p = TestPatgate::start(&extra);
    let t = p.mint_live("agentpools:read", "acme");
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for (i, path) in [
        "/acme/_apis/distributedtask/pools",
        "/closing/a",
        "/closing/b",
        "/acme/_apis/distributedtask/pools",
        "/closing/c",
    ]
    .iter()
    .enumerate()
    {
        let req = format!("GET {path}?n={i} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\r\n", t.token);
        s.write_all(req.as_bytes()).unwrap();
        let answer = read_answer(&mut s);
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        assert!(answer.ends_with("ok\n"), "{path}: {answer}");
    }
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 3);
    let seen = up.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter().all(|r| r.uri.starts_with("/acme/_apis/distributedtask/pools?n=")),
        "{seen:?}"
    );
}

#[test]
fn a_request_whose_client_goes_away_is_logged_as_499() {
    let up = spawn_upstream(true);
    let p = TestPatgate::start(&agents_route(&up));
    let t = p.mint_live("agentpools:read", "acme");
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.write_all(get("/acme/_apis/distributedtask/pools", &basic("x", &t.token), "").as_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.seen.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the request never reached the upstream");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(s);
    assert!(p.log_shows("Request cancelled duration_ms="), "{}", p.log());
    let line = p.log().lines().find(|l| l.contains("Request cancelled")).unwrap().to_owned();
    assert!(
        line.contains("http.status=499") && line.contains(&format!("token.id=\"{}\"", t.id)),
        "{line}"
    );
    assert!(line.contains("reason=the client went away before the answer"), "{line}");
}
