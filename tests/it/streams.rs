//! Audit streams and expiry warnings, end to end: a real HTTP receiver (a small blocking
//! server in the test) takes the webhook's JSON lines and checks their signature; a file
//! stream is moved away as logrotate does and reopened on SIGHUP; a receiver that is down
//! slows no request, and what its stream skips is counted.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// The config of these tests: their receivers listen on loopback, which webhooks may not
/// reach by default.
const LOOPBACK: &str = "[audit]\nwebhook_allow = [\"loopback\"]\n";

/// One POST the receiver took: its headers (names in lower case), its body, and the
/// status it answered.
#[derive(Debug, Clone)]
struct Post {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    status: u16,
}

impl Post {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body's JSON lines.
    fn lines(&self) -> Vec<Value> {
        std::str::from_utf8(&self.body)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
            .collect()
    }
}

/// A webhook receiver on 127.0.0.1: reads HTTP/1.1 requests, answers each with the next
/// status queued in `answers` (200 when none is), and records them.
struct Receiver {
    addr: SocketAddr,
    posts: Arc<Mutex<Vec<Post>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    fn start() -> Receiver {
        Receiver::start_with(None)
    }

    /// A receiver over TLS, with this certificate and key.
    fn start_tls(cert: &str, key: &str) -> Receiver {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap();
        Receiver::start_with(Some(Arc::new(config)))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(VecDeque::new()));
        let (p, a) = (posts.clone(), answers.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let (p, a, tls) = (p.clone(), a.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => serve(conn, &p, &a),
                    Some(config) => {
                        let Ok(server) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        serve(rustls::StreamOwned::new(server, conn), &p, &a);
                    }
                });
            }
        });
        Receiver { addr, posts, answers }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    /// Every line of every POST answered 2xx, with the POST it came in.
    fn delivered(&self) -> Vec<(Post, Value)> {
        self.posts()
            .into_iter()
            .filter(|p| p.status < 300)
            .flat_map(|p| p.lines().into_iter().map(move |l| (p.clone(), l)))
            .collect()
    }

    /// Waits up to `within` for a delivered line that `want` accepts.
    fn wait_for(&self, within: Duration, want: impl Fn(&Value) -> bool) -> (Post, Value) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = self.delivered().into_iter().find(|(_, l)| want(l)) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no such line delivered; the receiver got: {:?}",
                self.posts()
                    .iter()
                    .map(|p| (p.status, String::from_utf8_lossy(&p.body).into_owned()))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve(conn: impl Read + Write, posts: &Mutex<Vec<Post>>, answers: &Mutex<VecDeque<u16>>) {
    // One request a connection: patgate sends `Connection: close`, and so does the answer.
    let mut r = BufReader::new(conn);
    let mut request_line = String::new();
    if r.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (n, v) = line.split_once(':').unwrap();
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let status = answers.lock().unwrap().pop_front().unwrap_or(200);
    posts.lock().unwrap().push(Post {
        path,
        headers,
        body,
        status,
    });
    let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = r.get_mut().write_all(answer.as_bytes());
    let _ = r.get_mut().flush();
}

/// `sha256=HEX` of `body` keyed with `secret`, computed here as a receiver would.
fn hmac(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    format!("sha256={}", tag.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A token that may manage audit streams (and only that).
fn stream_admin(p: &TestPatgate) -> String {
    p.mint_caller("root", "auditstreams:manage").token
}

fn create_stream(p: &TestPatgate, caller: &str, body: Value) -> Value {
    let r = p.api("POST", "/admin/v1/audit/streams", Some(caller), Some(&body));
    assert_eq!(r.status, 201, "{}", r.json);
    r.json
}

/// The value of one sample of the metrics text, 0 when absent.
fn metric(p: &TestPatgate, sample: &str) -> f64 {
    let r = http(p.admin_addr(), "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[test]
fn a_webhook_gets_each_token_change_as_a_signed_json_line() {
    let p = TestPatgate::start(LOOPBACK);
    let rx = Receiver::start();
    let caller = stream_admin(&p);
    let secret = "s3cret-signing-key-0123456789";
    let s = create_stream(
        &p,
        &caller,
        json!({"name": "siem", "kind": "webhook", "url": rx.url("/in?src=patgate"), "secret": secret}),
    );
    assert_eq!((s["kind"].as_str(), s["secret_set"].as_bool()), (Some("webhook"), Some(true)));
    let minted = p.mint("code:read", "acme", "30d");
    let (post, line) = rx.wait_for(Duration::from_secs(10), |l| {
        l["action"] == "create" && l["token_id"] == minted.id.as_str()
    });
    assert_eq!(post.path, "/in?src=patgate");
    assert_eq!(post.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(post.header("x-patgate-signature"), Some(hmac(secret, &post.body).as_str()));
    assert!(post.body.ends_with(b"\n"));
    assert_eq!(line["outcome"], "success");
    assert_eq!(line["owner"], "alice");
    assert!(line["seq"].as_i64().unwrap() > 0);
    // The secret is nowhere in the log.
    assert!(!p.log().contains(secret));
    // The stream's cursor moves past what it delivered.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = p.api(
            "GET",
            &format!("/admin/v1/audit/streams/{}", s["id"].as_str().unwrap()),
            Some(&caller),
            None,
        );
        if r.json["delivered_seq"].as_i64().unwrap() >= line["seq"].as_i64().unwrap() {
            break;
        }
        assert!(Instant::now() < deadline, "the cursor did not move: {}", r.json);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(metric(&p, "patgate_audit_stream_delivered_total{stream=\"siem\"}") >= 1.0);
    // Without a secret, no signature.
    let rx2 = Receiver::start();
    create_stream(&p, &caller, json!({"name": "plain", "kind": "webhook", "url": rx2.url("/")}));
    let other = p.mint("code:read", "acme", "30d");
    let (post, _) = rx2.wait_for(Duration::from_secs(10), |l| l["token_id"] == other.id.as_str());
    assert_eq!(post.header("x-patgate-signature"), None);
}

#[test]
fn who_pauses_moves_or_deletes_a_stream_is_in_the_trail_the_others_deliver() {
    let p = TestPatgate::start(LOOPBACK);
    let watch = Receiver::start();
    let caller = stream_admin(&p);
    let watching = create_stream(&p, &caller, json!({"name": "watch", "kind": "webhook", "url": watch.url("/")}));
    // The stream's first line is its own creation, by the caller, from its address.
    let (_, first) = watch.wait_for(Duration::from_secs(10), |l| l["action"] == "stream_create");
    assert_eq!(
        first["reason"],
        format!("stream watch (id {}, webhook, enabled)", watching["id"].as_str().unwrap())
    );
    assert_eq!(first["actor"], "root");
    assert_eq!(first["client"], "127.0.0.1");
    assert!(first["token_id"].is_null() && first["owner"].is_null());

    let other = Receiver::start();
    let target = other.url("/hook?key=webhook-credential");
    let s = create_stream(
        &p,
        &caller,
        json!({"name": "siem", "kind": "webhook", "url": target, "secret": "0123456789abcdef"}),
    );
    let id = s["id"].as_str().unwrap();
    let r = p.api(
        "PATCH",
        &format!("/admin/v1/audit/streams/{id}"),
        Some(&caller),
        Some(&json!({"enabled": false, "secret": "fedcba9876543210", "url": other.url("/elsewhere")})),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    let r = p.api("DELETE", &format!("/admin/v1/audit/streams/{id}"), Some(&caller), None);
    assert_eq!(r.status, 200, "{}", r.json);

    let (_, changed) = watch.wait_for(Duration::from_secs(10), |l| l["action"] == "stream_change");
    assert_eq!(
        changed["reason"],
        format!("stream siem (id {id}, webhook, disabled): changed url, secret, disabled")
    );
    let (_, deleted) = watch.wait_for(Duration::from_secs(10), |l| l["action"] == "stream_delete");
    assert_eq!(deleted["reason"], format!("stream siem (id {id}, webhook, disabled)"));
    // Neither a target nor a secret is in the trail.
    for (_, line) in watch.delivered() {
        let text = line.to_string();
        for secret in ["webhook-credential", "elsewhere", "0123456789abcdef", "fedcba9876543210"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    // The admin API's trail has them too, for a tokens:admin reader.
    let reader = p.mint_caller("root", "tokens:admin,auditlog:read").token;
    let r = p.api("GET", "/admin/v1/audit?action=stream_delete", Some(&reader), None);
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["entries"].as_array().unwrap().len(), 1, "{}", r.json);
    // A refused change is not a change.
    let r = p.api(
        "PATCH",
        &format!("/admin/v1/audit/streams/{}", watching["id"].as_str().unwrap()),
        Some(&caller),
        Some(&json!({"url": "ftp://nowhere"})),
    );
    assert_eq!(r.status, 400, "{}", r.json);
    let r = p.api("GET", "/admin/v1/audit?action=stream_change", Some(&reader), None);
    assert_eq!(r.json["entries"].as_array().unwrap().len(), 1, "{}", r.json);
}

#[test]
fn an_https_webhook_is_verified_against_the_system_roots() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::certs::TestCa::new("webhook CA");
    let leaf = ca.server("receiver");
    let roots = dir.path().join("roots.pem");
    std::fs::write(&roots, &ca.pem).unwrap();
    // The system's roots, as rustls-native-certs reads them: here, only the test's CA.
    let p = TestPatgate::start_with_env(LOOPBACK, &[("SSL_CERT_FILE", roots.to_str().unwrap())]);
    let rx = Receiver::start_tls(&leaf.cert, &leaf.key);
    let caller = stream_admin(&p);
    create_stream(
        &p,
        &caller,
        json!({"name": "tls", "kind": "webhook", "url": format!("https://localhost:{}/in", rx.addr.port())}),
    );
    // One the CA did not sign is refused, and retried.
    let stranger = crate::certs::TestCa::new("stranger").server("receiver");
    let bad = Receiver::start_tls(&stranger.cert, &stranger.key);
    create_stream(
        &p,
        &caller,
        json!({"name": "untrusted", "kind": "webhook", "url": format!("https://localhost:{}/in", bad.addr.port())}),
    );
    let minted = p.mint("code:read", "acme", "30d");
    rx.wait_for(Duration::from_secs(10), |l| {
        l["action"] == "create" && l["token_id"] == minted.id.as_str()
    });
    assert!(p.log_shows("TLS handshake failed"), "{}", p.log());
    assert!(bad.posts().is_empty());
}

#[test]
fn a_webhook_answering_500_gets_the_entry_again() {
    let p = TestPatgate::start(LOOPBACK);
    let rx = Receiver::start();
    rx.answers.lock().unwrap().extend([500, 503]);
    let caller = stream_admin(&p);
    create_stream(&p, &caller, json!({"name": "flaky", "kind": "webhook", "url": rx.url("/")}));
    // The stream's first entry is its own creation.
    let (_, line) = rx.wait_for(Duration::from_secs(15), |l| l["action"] == "stream_create");
    // The same entry (the same seq) was refused twice, then taken.
    let tries: Vec<u16> = rx
        .posts()
        .iter()
        .filter(|p| p.lines().iter().any(|l| l["seq"] == line["seq"]))
        .map(|p| p.status)
        .collect();
    assert_eq!(tries, vec![500, 503, 200]);
    assert!(p.log_shows("Audit stream delivery failed; retrying with back-off"));
    assert!(p.log_shows("Audit stream delivers again"));
}

#[test]
fn a_receiver_that_is_down_slows_no_request_and_what_is_skipped_is_counted() {
    let p = TestPatgate::start_with_env(
        "[audit]\nallowed_requests = \"each\"\nwebhook_allow = [\"loopback\"]\n",
        &[("PATGATE__AUDIT__STREAM_BACKLOG", "5")],
    );
    p.init_repo("acme", "app");
    // A port nothing listens on.
    let down = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let caller = stream_admin(&p);
    let stream = create_stream(
        &p,
        &caller,
        json!({"name": "down", "kind": "webhook", "url": format!("http://{down}/")}),
    );
    let start = stream["delivered_seq"].as_i64().unwrap();
    let reader = p.mint_live("code:read", "acme");
    let fetch = format!(
        "GET /acme/app.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        reader.token
    );
    for round in 0..2 {
        for _ in 0..20 {
            assert_eq!(http(p.addr, &fetch).status, 200);
        }
        // Entries the store writes itself, whatever the request path's trail does.
        for _ in 0..10 {
            p.mint("code:read", "acme", "30d");
        }
        // All but the backlog's 5 newest are skipped, and counted: the 20 requests (one
        // entry each) and the 10 tokens made a round.
        let deadline = Instant::now() + Duration::from_secs(15);
        while metric(&p, "patgate_audit_stream_dropped_total{stream=\"down\"}") < f64::from(30 * (round + 1) - 5) {
            assert!(Instant::now() < deadline, "not all counted as dropped:\n{}", p.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // What was skipped is exactly how far the cursor moved: nothing was delivered.
    let id = stream["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let at = p.api("GET", &format!("/admin/v1/audit/streams/{id}"), Some(&caller), None).json["delivered_seq"]
            .as_i64()
            .unwrap();
        let dropped = metric(&p, "patgate_audit_stream_dropped_total{stream=\"down\"}");
        if dropped == (at - start) as f64 {
            break;
        }
        assert!(Instant::now() < deadline, "dropped {dropped}, but the cursor moved {}", at - start);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        metric(&p, "patgate_audit_stream_delivered_total{stream=\"down\"}"),
        0.0,
        "nothing reached a receiver that is down"
    );
    // Said once, not at every skip.
    assert_eq!(p.log().matches("Audit stream fell behind").count(), 1, "{}", p.log());
    assert_eq!(p.log().matches("Audit stream delivery failed; retrying").count(), 1, "{}", p.log());
}

#[test]
fn a_file_stream_gets_json_lines_and_a_new_file_after_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let streams = dir.path().join("streams");
    std::fs::create_dir(&streams).unwrap();
    let p = TestPatgate::start(&format!("{LOOPBACK}stream_dir = \"{}\"\n", streams.display()));
    let caller = stream_admin(&p);
    let file = streams.join("audit.jsonl");
    let s = create_stream(&p, &caller, json!({"name": "file", "kind": "file", "path": file}));
    assert_eq!(s["path"], file.to_str().unwrap());
    let first = p.mint("code:read", "acme", "30d");
    wait_for_line(&file, &first.id);
    // logrotate: move the file away, then SIGHUP.
    let rotated = streams.join("audit.jsonl.1");
    std::fs::rename(&file, &rotated).unwrap();
    assert!(p.reload().contains("Configuration reloaded"));
    let second = p.mint("code:read", "acme", "30d");
    wait_for_line(&file, &second.id);
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains(&first.id) && !old.contains(&second.id), "{old}");
    let new = std::fs::read_to_string(&file).unwrap();
    assert!(!new.contains(&first.id), "{new}");
    for l in old.lines().chain(new.lines()) {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o640);
}

/// Waits until `file` holds a `create` line for the token `id`.
fn wait_for_line(file: &Path, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let found = text.lines().any(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["action"] == "create" && v["token_id"] == id
        });
        if found {
            return;
        }
        assert!(Instant::now() < deadline, "no line for {id} in {}:\n{text}", file.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn streams_need_auditstreams_manage_and_never_show_their_secret() {
    let p = TestPatgate::start(LOOPBACK);
    let rx = Receiver::start();
    let secret = "a-very-long-hmac-key-ABCDEFGH";
    let body = json!({"name": "siem", "kind": "webhook", "url": rx.url("/"), "secret": secret});
    // No token, a token without the scope (tokens:admin does not imply it).
    let r = p.api("POST", "/admin/v1/audit/streams", None, Some(&body));
    assert_eq!(r.status, 401);
    let admin = p.mint_caller("root", "tokens:admin").token;
    for (method, path) in [
        ("POST", "/admin/v1/audit/streams"),
        ("GET", "/admin/v1/audit/streams"),
        ("GET", "/admin/v1/audit/streams/abc"),
        ("PATCH", "/admin/v1/audit/streams/abc"),
        ("DELETE", "/admin/v1/audit/streams/abc"),
    ] {
        let r = p.api(method, path, Some(&admin), Some(&body));
        assert_eq!(
            (r.status, r.error()),
            (403, "token lacks scope auditstreams:manage"),
            "{method} {path}"
        );
    }
    let caller = stream_admin(&p);
    let made = create_stream(&p, &caller, body.clone());
    let id = made["id"].as_str().unwrap().to_owned();
    let one = format!("/admin/v1/audit/streams/{id}");
    // `full` holds every scope.
    let full = p.mint_caller("root", "full").token;
    let listed = p.api("GET", "/admin/v1/audit/streams", Some(&full), None);
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json["streams"].as_array().unwrap().len(), 1);
    let changed = p.api(
        "PATCH",
        &one,
        Some(&caller),
        Some(&json!({"secret": "another-key-0123456789", "enabled": false})),
    );
    assert_eq!((changed.status, &changed.json["enabled"]), (200, &json!(false)), "{}", changed.json);
    let read = p.api("GET", &one, Some(&caller), None);
    for answer in [&made, &listed.json, &changed.json, &read.json] {
        let text = answer.to_string();
        assert!(!text.contains(secret) && !text.contains("another-key"), "{text}");
        assert!(!text.contains("\"secret\""), "{text}");
    }
    assert_eq!(read.json["secret_set"], true);
    // Checked, with one line naming the field.
    for (bad, want) in [
        (
            json!({"name": "x", "kind": "webhook", "url": "ftp://h/"}),
            "url: must be an http:// or https:// URL",
        ),
        (
            json!({"name": "x", "kind": "webhook", "url": "http://u:p@h/"}),
            "url: may not hold a user or password",
        ),
        (json!({"name": "x", "kind": "webhook"}), "url: a webhook stream needs one"),
        (
            json!({"name": "x", "kind": "file", "path": "rel/a.log"}),
            "path: must be an absolute path",
        ),
        (
            json!({"name": "x", "kind": "file", "path": "/tmp/a.log"}),
            "path: file streams are off: set audit.stream_dir",
        ),
        (
            json!({"name": "x", "kind": "webhook", "url": rx.url("/"), "secret": "short"}),
            "secret: must be 16 to 1024 characters",
        ),
        (
            json!({"name": "a b", "kind": "webhook", "url": rx.url("/")}),
            "name: must be 1 to 64 letters",
        ),
        (json!({"name": "x", "kind": "pipe"}), "kind: must be webhook or file"),
        (
            json!({"name": "x", "kind": "webhook", "url": rx.url("/"), "path": "/a"}),
            "path: only for file streams",
        ),
    ] {
        let r = p.api("POST", "/admin/v1/audit/streams", Some(&caller), Some(&bad));
        assert_eq!(r.status, 400, "{bad}: {}", r.json);
        assert!(r.error().starts_with(want), "{bad}: {}", r.error());
    }
    let r = p.api("POST", "/admin/v1/audit/streams", Some(&caller), Some(&body));
    assert_eq!((r.status, r.error()), (409, "name: another audit stream is named `siem`"));
    // Deleted: gone.
    let r = p.api("DELETE", &one, Some(&caller), None);
    assert_eq!((r.status, &r.json["id"]), (200, &json!(id)));
    let r = p.api("GET", &one, Some(&caller), None);
    assert_eq!((r.status, r.error()), (404, format!("no audit stream with id {id}").as_str()));
    assert!(!p.log().contains(secret));
}

#[test]
fn an_expiry_warning_reaches_the_webhook_once_and_not_again_after_a_restart() {
    let mut p = TestPatgate::start(LOOPBACK);
    let rx = Receiver::start();
    let caller = stream_admin(&p);
    create_stream(&p, &caller, json!({"name": "expiry", "kind": "webhook", "url": rx.url("/")}));
    // Within the default window of 7 days; another one beyond it.
    let soon = p.mint("code:read", "acme", "2d");
    let later = p.mint("code:read", "acme", "30d");
    let (_, line) = rx.wait_for(Duration::from_secs(10), |l| {
        l["action"] == "expiry_warning" && l["token_id"] == soon.id.as_str()
    });
    assert_eq!(line["owner"], "alice");
    assert!(line["reason"].as_str().unwrap().starts_with("expires 20"), "{line}");
    let expiring = metric(&p, "patgate_tokens_expiring{within=\"7d\"}");
    assert!(expiring >= 2.0, "the caller's token and `soon`: {expiring}");
    // Restarted on the same store: no second warning for the same expiry.
    let (status, _) = p.terminate();
    assert!(status.success());
    let store = format!("sqlite://{}", p.dir.path().join("patgate.db").display());
    let q = TestPatgate::start_with_env(LOOPBACK, &[("PATGATE__STORE__URL", &store)]);
    // A token made now, through the restarted instance, is warned of: the restart's scan ran.
    let manager = p.mint_caller_on(&store, "tokens:manage,code:manage,agentpools:manage");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !q.admin_sees(&manager) {
        assert!(Instant::now() < deadline, "the token never became live");
        std::thread::sleep(Duration::from_millis(20));
    }
    let manager = q.api(
        "POST",
        "/admin/v1/tokens",
        Some(&manager),
        Some(&json!({"name": "n", "scopes": ["code:read"], "orgs": ["acme"], "expires_in": "1d"})),
    );
    assert_eq!(manager.status, 201, "{}", manager.json);
    let fresh = manager.json["token"]["id"].as_str().unwrap().to_owned();
    rx.wait_for(Duration::from_secs(10), |l| {
        l["action"] == "expiry_warning" && l["token_id"] == fresh.as_str()
    });
    std::thread::sleep(Duration::from_secs(2));
    let warnings = |id: &str| {
        rx.delivered()
            .iter()
            .filter(|(_, l)| l["action"] == "expiry_warning" && l["token_id"] == id)
            .count()
    };
    assert_eq!(warnings(&soon.id), 1);
    assert_eq!(warnings(&later.id), 0);
}

impl TestPatgate {
    /// A token made with the CLI on the store at `url` (not this instance's own), once
    /// the running instance on that store admits it.
    fn mint_caller_on(&self, url: &str, scopes: &str) -> String {
        let out = std::process::Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(["token", "create", "--name", "t", "--owner", "root", "--scopes", scopes])
            .args(["--orgs", "*", "--expires-in", "1h", "--json"])
            .env("PATGATE__STORE__URL", url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["token"].as_str().unwrap().to_owned()
    }
}

#[test]
fn two_instances_on_one_store_deliver_each_entry_once() {
    let mut a = TestPatgate::start(LOOPBACK);
    let store = format!("sqlite://{}", a.dir.path().join("patgate.db").display());
    let b = TestPatgate::start_with_env(LOOPBACK, &[("PATGATE__STORE__URL", &store)]);
    let rx = Receiver::start();
    let caller = a.mint_caller_on(&store, "auditstreams:manage");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !a.admin_sees(&caller) || !b.admin_sees(&caller) {
        assert!(Instant::now() < deadline, "the token never became live");
        std::thread::sleep(Duration::from_millis(20));
    }
    create_stream(&b, &caller, json!({"name": "shared", "kind": "webhook", "url": rx.url("/")}));
    let minted: Vec<Minted> = (0..5).map(|_| a.mint("code:read", "acme", "30d")).collect();
    for m in &minted {
        rx.wait_for(Duration::from_secs(10), |l| {
            l["action"] == "create" && l["token_id"] == m.id.as_str()
        });
    }
    // One instance holds the stream: the other does not send the same entries again.
    std::thread::sleep(Duration::from_secs(2));
    let creates = |id: &str| {
        rx.delivered()
            .iter()
            .filter(|(_, l)| l["action"] == "create" && l["token_id"] == id)
            .count()
    };
    for m in &minted {
        assert_eq!(creates(&m.id), 1, "{}", m.id);
    }
    // Whichever held it, the stream goes on when one instance stops (it gives its lease up).
    let (status, _) = a.terminate();
    assert!(status.success());
    // b's CLI would work on b's own file: the change goes through b's admin API.
    let manager = a.mint_caller_on(&store, "tokens:manage,code:manage,agentpools:manage");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !b.admin_sees(&manager) {
        assert!(Instant::now() < deadline, "the token never became live");
        std::thread::sleep(Duration::from_millis(20));
    }
    let made = b.api(
        "POST",
        "/admin/v1/tokens",
        Some(&manager),
        Some(&json!({"name": "n", "scopes": ["code:read"], "orgs": ["acme"], "expires_in": "30d"})),
    );
    assert_eq!(made.status, 201, "{}", made.json);
    let id = made.json["token"]["id"].as_str().unwrap().to_owned();
    rx.wait_for(Duration::from_secs(10), |l| l["action"] == "create" && l["token_id"] == id.as_str());
}

#[test]
fn webhooks_reach_only_the_addresses_audit_webhook_allow_lets_them() {
    // The default: external addresses only.
    let p = TestPatgate::start("");
    let rx = Receiver::start();
    let caller = stream_admin(&p);
    for (url, why) in [
        (rx.url("/"), "127.0.0.1 is a loopback address".to_owned()),
        (
            "http://[fd00:ec2::254]/latest".to_owned(),
            "fd00:ec2::254 is a special-purpose".to_owned(),
        ),
        (
            "http://169.254.169.254/latest".to_owned(),
            "169.254.169.254 is a special-purpose".to_owned(),
        ),
        (
            "http://[::ffff:10.1.2.3]:8080/".to_owned(),
            "::ffff:10.1.2.3 is a private address".to_owned(),
        ),
        ("https://[::1]/".to_owned(), "::1 is a loopback address".to_owned()),
    ] {
        let r = p.api(
            "POST",
            "/admin/v1/audit/streams",
            Some(&caller),
            Some(&json!({"name": "inside", "kind": "webhook", "url": url})),
        );
        assert_eq!(r.status, 400, "{url}: {}", r.json);
        assert!(
            r.error().starts_with(&format!("url: {why}")) && r.error().ends_with("which audit.webhook_allow does not allow"),
            "{url}: {}",
            r.error()
        );
    }
    // A name is taken, and checked where it resolves, at each delivery: nothing is sent.
    let s = create_stream(
        &p,
        &caller,
        json!({"name": "named", "kind": "webhook", "url": format!("http://localhost:{}/in", rx.addr.port())}),
    );
    p.mint("code:read", "acme", "30d");
    // The delivery's own line (the 400s above logged the same reason as admin requests).
    let refused = |log: String| {
        log.lines().any(|l| {
            l.contains("Audit stream delivery failed")
                && l.contains("stream=named")
                && l.contains("loopback address, which audit.webhook_allow does not allow")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !refused(p.log()) {
        assert!(Instant::now() < deadline, "{}", p.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(rx.posts().is_empty());
    // Changing it to an address is checked as creating it is.
    let r = p.api(
        "PATCH",
        &format!("/admin/v1/audit/streams/{}", s["id"].as_str().unwrap()),
        Some(&caller),
        Some(&json!({"url": rx.url("/")})),
    );
    assert_eq!(r.status, 400, "{}", r.json);
    // A range lets in what it holds, and no more.
    let q = TestPatgate::start("[audit]\nwebhook_allow = [\"external\", \"127.0.0.1/32\"]\n");
    let caller = stream_admin(&q);
    create_stream(&q, &caller, json!({"name": "ranged", "kind": "webhook", "url": rx.url("/")}));
    rx.wait_for(Duration::from_secs(10), |l| l["action"] == "stream_create");
    let r = q.api(
        "POST",
        "/admin/v1/audit/streams",
        Some(&caller),
        Some(&json!({"name": "other", "kind": "webhook", "url": "http://127.0.0.2/"})),
    );
    assert_eq!(r.status, 400, "{}", r.json);
}
