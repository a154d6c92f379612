//! Hostile input over raw sockets: each request gets the safe answer, and the upstream never
//! receives what the rules forbid.
//!
//! One test per category of `SECURITY.md`, each a table of raw requests and the answer they
//! must get. Every request carries an `X-Case` header naming its case, so that what reached
//! the recording HTTP upstream (or the recording `git http-backend`, a wrapper script that
//! saves its CGI environment) can be matched to the request that sent it. A case that fails
//! does not stop its table: every failure of a table is reported together.
//!
//! Category 8 (HTTP/2) is not covered: patgate serves HTTP/1.1 only.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use patgate::auth::token::TokenSecret;
use patgate::proxy::{CHALLENGE, UNAUTHORIZED_BODY};

use crate::support::*;

/// The recording upstream (`support::spawn_upstream`), as the tables use it.
type Recorder = Upstream;

fn spawn_recorder() -> Recorder {
    spawn_upstream(false)
}

fn agents_route(rec: &Recorder) -> String {
    format!(
        "[[routes]]\npath = \"/{{org}}/agents/**\"\nupstream = \"http://{}\"\nrules = [ {{ methods = [\"GET\"], scope = \"agentpools:read\" }}, {{ methods = [\"POST\", \"PUT\", \"DELETE\"], scope = \"agentpools:manage\" }} ]\n",
        rec.addr
    )
}

// ---------------------------------------------------------------------------------------
// A recording `git http-backend`: a wrapper that saves its CGI environment, then runs git.
// ---------------------------------------------------------------------------------------

struct GitRecorder {
    dir: tempfile::TempDir,
}

impl GitRecorder {
    fn new() -> GitRecorder {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("git-recording");
        let log = dir.path().join("env");
        std::fs::create_dir_all(&log).unwrap();
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nf=\"{}/$$\"\nenv > \"$f.tmp\" && mv \"$f.tmp\" \"$f.env\"\nexec git \"$@\"\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        GitRecorder { dir }
    }

    /// The `[git]` table that makes patgate run the wrapper.
    fn toml(&self) -> String {
        format!("[git]\nbinary = \"{}\"\n", self.dir.path().join("git-recording").display())
    }

    /// Every CGI environment recorded so far.
    fn all(&self) -> Vec<HashMap<String, String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.dir.path().join("env")).unwrap() {
            let path = e.unwrap().path();
            if path.extension().and_then(|x| x.to_str()) != Some("env") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            out.push(
                text.lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            );
        }
        out
    }

    /// The CGI environments of one case.
    fn case(&self, case: &str) -> Vec<HashMap<String, String>> {
        self.all()
            .into_iter()
            .filter(|e| e.get("HTTP_X_CASE").map(String::as_str) == Some(case))
            .collect()
    }
}

/// Sends one request on a new connection and reads one answer (status 0: none came).
fn exchange(addr: SocketAddr, raw: &[u8]) -> RawResponse {
    let mut c = Conn::open(addr);
    c.head = raw.starts_with(b"HEAD ");
    c.send(raw);
    c.answer().unwrap_or(RawResponse {
        status: 0,
        head: String::new(),
        body: String::new(),
    })
}

/// A request with `X-Case` and `Connection: close`; `headers` are whole lines with CRLF.
fn req(method: &str, target: &str, case: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut v =
        format!("{method} {target} HTTP/1.1\r\nHost: gate.example\r\nX-Case: {case}\r\n{headers}Connection: close\r\n\r\n").into_bytes();
    v.extend_from_slice(body);
    v
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What must have reached the upstream for a case.
#[derive(Debug, Clone, PartialEq)]
enum Reach {
    /// Nothing: not the head, not a byte of the body.
    Never,
    /// Exactly one request, with this URI (path and query) when given.
    Once(Option<String>),
    /// Perhaps the head, but never a whole body.
    NoWholeBody,
}

struct Case {
    name: String,
    raw: Vec<u8>,
    want: u16,
    reach: Reach,
    /// The body the upstream must read, when it is checked.
    body: Option<String>,
}

fn case(name: &str, raw: Vec<u8>, want: u16) -> Case {
    let reach = if (200..300).contains(&want) {
        Reach::Once(None)
    } else {
        Reach::Never
    };
    Case {
        name: name.to_owned(),
        raw,
        want,
        reach,
        body: None,
    }
}

fn case_to(name: &str, raw: Vec<u8>, want: u16, uri: &str) -> Case {
    Case {
        name: name.to_owned(),
        raw,
        want,
        reach: Reach::Once(Some(uri.to_owned())),
        body: None,
    }
}

/// Checks the answer to a case; the problems found.
fn check_answer(c: &Case, r: &RawResponse) -> Vec<String> {
    let mut bad = Vec::new();
    let shown = String::from_utf8_lossy(&c.raw).chars().take(300).collect::<String>();
    if r.status != c.want {
        bad.push(format!(
            "[{}] status {} (want {}) for {shown:?}; answer {:?}",
            c.name, r.status, c.want, r.head
        ));
    }
    if r.status == 401 {
        if r.body != format!("{UNAUTHORIZED_BODY}\n") {
            bad.push(format!("[{}] 401 body differs: {:?}", c.name, r.body));
        }
        if r.header("www-authenticate").as_deref() != Some(CHALLENGE) {
            bad.push(format!("[{}] 401 without the challenge: {:?}", c.name, r.head));
        }
    }
    bad
}

/// Runs a table against the HTTP upstream route; every failure is returned.
fn run_http_table(addr: SocketAddr, rec: &Recorder, cases: &[Case], forbidden_token: Option<&str>) -> Vec<String> {
    let mut bad = Vec::new();
    for c in cases {
        let r = exchange(addr, &c.raw);
        bad.extend(check_answer(c, &r));
        bad.extend(check_reach_http(rec, c));
    }
    // Late arrivals: look again once everything is answered.
    std::thread::sleep(Duration::from_millis(100));
    for c in cases {
        if c.reach == Reach::Never && !rec.case(&c.name).is_empty() {
            bad.push(format!("[{}] reached the upstream late", c.name));
        }
    }
    for g in rec.all() {
        if g.header("authorization").len() + g.header("proxy-authorization").len() > 0 {
            bad.push(format!("a credential reached the upstream: {g:?}"));
        }
        if let Some(t) = forbidden_token {
            if format!("{g:?}").contains(t) {
                bad.push(format!("the token reached the upstream: {g:?}"));
            }
        }
    }
    bad
}

fn check_reach_http(rec: &Recorder, c: &Case) -> Vec<String> {
    let got = rec.case(&c.name);
    let mut bad = Vec::new();
    match &c.reach {
        Reach::Never => {
            if !got.is_empty() {
                bad.push(format!("[{}] reached the upstream: {:?}", c.name, got));
            }
        }
        Reach::Once(uri) => {
            if got.len() != 1 {
                bad.push(format!("[{}] reached the upstream {} times", c.name, got.len()));
            } else if let Some(u) = uri {
                if &got[0].uri != u {
                    bad.push(format!("[{}] the upstream read {:?}, not {u:?}", c.name, got[0].uri));
                }
            }
        }
        Reach::NoWholeBody => {
            if let Some(g) = got.iter().find(|g| matches!(g.body, Some(Ok(_)))) {
                bad.push(format!("[{}] a whole body reached the upstream: {g:?}", c.name));
            }
        }
    }
    bad
}

/// Runs a table against the git route; every failure is returned.
fn run_git_table(addr: SocketAddr, git: &GitRecorder, cases: &[Case]) -> Vec<String> {
    let mut bad = Vec::new();
    for c in cases {
        let r = exchange(addr, &c.raw);
        bad.extend(check_answer(c, &r));
        let got = git.case(&c.name);
        match &c.reach {
            Reach::Never | Reach::NoWholeBody => {
                if !got.is_empty() {
                    bad.push(format!("[{}] git http-backend ran: {:?}", c.name, got[0].get("PATH_INFO")));
                }
            }
            Reach::Once(uri) => {
                if got.len() != 1 {
                    bad.push(format!("[{}] git http-backend ran {} times", c.name, got.len()));
                } else if let Some(u) = uri {
                    let seen = format!("{}?{}", got[0]["PATH_INFO"], got[0]["QUERY_STRING"]);
                    if &seen != u {
                        bad.push(format!("[{}] git read {seen:?}, not {u:?}", c.name));
                    }
                }
            }
        }
    }
    bad
}

fn assert_no_failures(table: &str, bad: &[String]) {
    assert!(bad.is_empty(), "{table}: {} failure(s):\n{}", bad.len(), bad.join("\n"));
}

/// Mints a token for `owner` and waits until the running server admits it.
fn live(p: &TestPatgate, owner: &str, scopes: &str, orgs: &str) -> Minted {
    let m = p.mint_for(owner, scopes, orgs, "1h");
    wait_live(p, &m.token);
    m
}

fn wait_live(p: &TestPatgate, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = http(
            p.addr,
            &format!("GET /nope-org/x.git/HEAD HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
        );
        if r.status != 401 {
            return;
        }
        assert!(Instant::now() < deadline, "token never became live");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A token with the right shape and checksum whose last character is changed.
fn wrong_checksum(token: &str) -> String {
    let mut t = token.to_owned();
    let last = t.pop().unwrap();
    t.push(if last == '0' { '1' } else { '0' });
    t
}

/// The pid of this test's `patgate serve` (found by its config path).
fn pid_of(p: &TestPatgate) -> u32 {
    let needle = p.config.to_str().unwrap().to_owned();
    for e in std::fs::read_dir("/proc").unwrap() {
        let e = e.unwrap();
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.contains(&needle) && args.iter().any(|a| a == "serve") {
            return pid;
        }
    }
    panic!("no patgate process for {needle}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// The command lines of a process's children.
fn children(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for kid in kids.split_whitespace() {
            let cmd = std::fs::read(format!("/proc/{kid}/cmdline")).unwrap_or_default();
            out.push(String::from_utf8_lossy(&cmd).replace('\0', " "));
        }
    }
    out
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A git spoofing case: its name, the headers sent, and the CGI variables git must read.
type GitSpoof<'a> = (&'a str, &'a str, Vec<(&'a str, Option<&'a str>)>);

/// A pipelining case: its name, the requests sent in one write, the answers wanted.
type Pipeline<'a> = (&'a str, Vec<Vec<u8>>, Vec<u16>);

const INFO_REFS: &str = "/acme/demo.git/info/refs?service=git-upload-pack";

// ---------------------------------------------------------------------------------------
// 1. The Authorization header.
// ---------------------------------------------------------------------------------------

#[test]
fn authorization_header_abuse() {
    let rec = spawn_recorder();
    let git = GitRecorder::new();
    let p = TestPatgate::start(&format!("{}\n{}", agents_route(&rec), git.toml()));
    p.init_repo("acme", "demo");
    let t = live(&p, "alice", "agentpools:read,code:read", "acme").token;
    let other = TokenSecret::generate();
    let never = other.expose();
    let path = "/acme/agents/pools";
    let get = |case: &str, auth: &str| req("GET", path, case, auth, b"");
    let auth_bytes = |case: &str, value: &[u8]| {
        let mut v = format!("GET {path} HTTP/1.1\r\nHost: gate.example\r\nX-Case: {case}\r\nAuthorization: ").into_bytes();
        v.extend_from_slice(value);
        v.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        v
    };
    let basic_of = |b: &[u8]| format!("Authorization: Basic {}\r\n", b64(b));
    let cases = vec![
        case("1.01-none", get("1.01-none", ""), 401),
        case("1.02-bad-base64", get("1.02-bad-base64", "Authorization: Basic !!!\r\n"), 400),
        case("1.03-base64-half", get("1.03-base64-half", "Authorization: Basic eDp\r\n"), 400),
        case("1.04-no-colon", get("1.04-no-colon", &basic_of(t.as_bytes())), 400),
        case("1.05-both-empty", get("1.05-both-empty", &basic_of(b":")), 401),
        case("1.06-empty-password", get("1.06-empty-password", &basic_of(b"alice:")), 401),
        case("1.07-empty-user-bad", get("1.07-empty-user-bad", &basic_of(b":hunter2")), 401),
        case(
            "1.08-empty-user-token",
            get("1.08-empty-user-token", &basic_of(format!(":{t}").as_bytes())),
            200,
        ),
        case(
            "1.09-token-as-user",
            get("1.09-token-as-user", &basic_of(format!("{t}:").as_bytes())),
            200,
        ),
        case(
            "1.10-token-twice",
            get("1.10-token-twice", &basic_of(format!("{t}:{t}").as_bytes())),
            200,
        ),
        case(
            "1.11-two-tokens",
            get("1.11-two-tokens", &basic_of(format!("{t}:{never}").as_bytes())),
            400,
        ),
        case(
            "1.12-oversized-bearer",
            get("1.12-oversized-bearer", &bearer(&"a".repeat(5000))),
            400,
        ),
        case(
            "1.13-oversized-basic",
            get("1.13-oversized-basic", &format!("Authorization: Basic {}\r\n", "QUFB".repeat(1500))),
            400,
        ),
        case(
            "1.14-non-utf8-header",
            auth_bytes("1.14-non-utf8-header", b"Bearer \xff\xfe\x80"),
            400,
        ),
        case(
            "1.15-non-utf8-basic",
            get("1.15-non-utf8-basic", &basic_of(&[b"\xff\xfe:".as_slice(), t.as_bytes()].concat())),
            400,
        ),
        case("1.16-tabs", get("1.16-tabs", &format!("Authorization: Bearer\t\t{t}\t\r\n")), 200),
        case(
            "1.17-spaces",
            get("1.17-spaces", &format!("Authorization:    Bearer    {t}   \r\n")),
            200,
        ),
        case(
            "1.18-trailing-word",
            get("1.18-trailing-word", &format!("Authorization: Bearer {t} extra\r\n")),
            401,
        ),
        case(
            "1.19-lower-scheme",
            get("1.19-lower-scheme", &format!("Authorization: bearer {t}\r\n")),
            200,
        ),
        case(
            "1.20-upper-basic",
            get(
                "1.20-upper-basic",
                &format!("Authorization: BASIC {}\r\n", b64(format!("x:{t}").as_bytes())),
            ),
            200,
        ),
        case(
            "1.21-unknown-scheme",
            get("1.21-unknown-scheme", &format!("Authorization: Token {t}\r\n")),
            401,
        ),
        case(
            "1.22-negotiate",
            get("1.22-negotiate", &format!("Authorization: Negotiate {t}\r\n")),
            401,
        ),
        case(
            "1.23-digest",
            get("1.23-digest", &format!("Authorization: Digest username=\"{t}\"\r\n")),
            401,
        ),
        case(
            "1.24-two-headers",
            get("1.24-two-headers", &format!("{}{}", bearer(&t), bearer(&t))),
            400,
        ),
        case(
            "1.25-two-headers-mixed",
            get("1.25-two-headers-mixed", &format!("{}Authorization: Basic !!!\r\n", bearer(&t))),
            400,
        ),
        case(
            "1.26-empty-and-good",
            get("1.26-empty-and-good", &format!("Authorization:\r\n{}", bearer(&t))),
            400,
        ),
        case("1.27-wrong-checksum", get("1.27-wrong-checksum", &bearer(&wrong_checksum(&t))), 401),
        case("1.28-never-issued", get("1.28-never-issued", &bearer(never)), 401),
        case(
            "1.29-never-issued-basic",
            get("1.29-never-issued-basic", &basic_of(format!("x:{never}").as_bytes())),
            401,
        ),
        case(
            "1.30-case-flipped",
            get("1.30-case-flipped", &bearer(&t.to_uppercase().replacen("PATG_", "patg_", 1))),
            401,
        ),
        case("1.31-zeros", get("1.31-zeros", &bearer(&format!("patg_{}", "0".repeat(46)))), 401),
        case(
            "1.32-proxy-authorization-only",
            get("1.32-proxy-authorization-only", &format!("Proxy-Authorization: Bearer {t}\r\n")),
            401,
        ),
        case(
            "1.33-x-authorization",
            get("1.33-x-authorization", &format!("X-Authorization: Bearer {t}\r\n")),
            401,
        ),
        case(
            "1.34-space-before-colon",
            get("1.34-space-before-colon", &format!("Authorization : Bearer {t}\r\n")),
            400,
        ),
        case(
            "1.35-nul-in-value",
            auth_bytes("1.35-nul-in-value", format!("Bearer {t}\0").as_bytes()),
            400,
        ),
        case(
            "1.36-newline-in-password",
            get("1.36-newline-in-password", &basic_of(format!("x:{t}\n").as_bytes())),
            401,
        ),
        case(
            "1.37-percent-encoded",
            get("1.37-percent-encoded", &bearer(&t.replacen('_', "%5F", 1))),
            401,
        ),
        case("1.38-bearer-nothing", get("1.38-bearer-nothing", "Authorization: Bearer\r\n"), 401),
    ];
    let mut bad = run_http_table(p.addr, &rec, &cases, Some(&t));
    // On the git route, a refused credential never starts git.
    let git_cases = vec![
        case("1.39-git-none", req("GET", INFO_REFS, "1.39-git-none", "", b""), 401),
        case(
            "1.40-git-wrong-checksum",
            req(
                "GET",
                INFO_REFS,
                "1.40-git-wrong-checksum",
                &format!("Authorization: {}\r\n", basic("x", &wrong_checksum(&t))),
                b"",
            ),
            401,
        ),
        case(
            "1.41-git-never-issued",
            req("GET", INFO_REFS, "1.41-git-never-issued", &bearer(never), b""),
            401,
        ),
        case(
            "1.42-git-bad-base64",
            req("GET", INFO_REFS, "1.42-git-bad-base64", "Authorization: Basic ====\r\n", b""),
            400,
        ),
        case(
            "1.43-git-good",
            req(
                "GET",
                INFO_REFS,
                "1.43-git-good",
                &format!("Authorization: {}\r\n", basic("", &t)),
                b"",
            ),
            200,
        ),
    ];
    bad.extend(run_git_table(p.addr, &git, &git_cases));
    for env in git.all() {
        if env.keys().any(|k| k == "HTTP_AUTHORIZATION") || env.values().any(|v| v.contains(&t)) {
            bad.push("the credential reached git http-backend".into());
        }
    }
    assert!(!p.log().contains(&t), "the secret reached the log");
    assert_no_failures("authorization", &bad);
}

// ---------------------------------------------------------------------------------------
// 2. Paths.
// ---------------------------------------------------------------------------------------

#[test]
fn path_tricks() {
    let rec = spawn_recorder();
    let git = GitRecorder::new();
    let p = TestPatgate::start(&format!("{}\n{}", agents_route(&rec), git.toml()));
    p.init_repo("acme", "demo");
    let t = live(&p, "alice", "agentpools:read,code:read", "acme").token;
    let auth = bearer(&t);
    let get = |case: &str, path: &str| req("GET", path, case, &auth, b"");
    let raw_path = |case: &str, path: &[u8]| {
        let mut v = b"GET ".to_vec();
        v.extend_from_slice(path);
        v.extend_from_slice(format!(" HTTP/1.1\r\nHost: gate.example\r\nX-Case: {case}\r\n{auth}Connection: close\r\n\r\n").as_bytes());
        v
    };
    let long = format!("/acme/agents/{}", "a".repeat(5000));
    let cases = vec![
        case("2.01-dotdot", get("2.01-dotdot", "/acme/agents/../x"), 400),
        case("2.02-dot", get("2.02-dot", "/acme/agents/./x"), 400),
        case("2.03-dotdot-up", get("2.03-dotdot-up", "/acme/agents/../../other/agents/x"), 400),
        case("2.04-trailing-dotdot", get("2.04-trailing-dotdot", "/acme/agents/x/.."), 400),
        case("2.05-encoded-dotdot", get("2.05-encoded-dotdot", "/acme/agents/%2e%2e/x"), 400),
        case("2.06-mixed-dotdot", get("2.06-mixed-dotdot", "/acme/agents/%2E./x"), 400),
        case("2.07-mixed-dotdot-2", get("2.07-mixed-dotdot-2", "/acme/agents/.%2E/x"), 400),
        case("2.08-encoded-dot", get("2.08-encoded-dot", "/acme/agents/%2e"), 400),
        case("2.09-encoded-slash", get("2.09-encoded-slash", "/acme/agents%2fx"), 400),
        case("2.10-encoded-slash-upper", get("2.10-encoded-slash-upper", "/acme%2Fagents/x"), 400),
        case(
            "2.11-encoded-backslash",
            get("2.11-encoded-backslash", "/acme/agents/%5c..%5cx"),
            400,
        ),
        case("2.12-backslash", get("2.12-backslash", "/acme/agents/a\\..\\b"), 400),
        case("2.13-double-slash", get("2.13-double-slash", "/acme//agents/x"), 400),
        case(
            "2.14-leading-double-slash",
            get("2.14-leading-double-slash", "//acme/agents/x"),
            400,
        ),
        case("2.15-semicolon", get("2.15-semicolon", "/acme/agents/x;a=b"), 400),
        case("2.16-semicolon-segment", get("2.16-semicolon-segment", "/acme/agents;/x"), 400),
        case(
            "2.17-encoded-semicolon",
            get("2.17-encoded-semicolon", "/acme/agents/x%3bjsessionid=1"),
            400,
        ),
        case("2.18-encoded-nul", get("2.18-encoded-nul", "/acme/agents/%00x"), 400),
        case(
            "2.19-encoded-crlf",
            get("2.19-encoded-crlf", "/acme/agents/%0d%0aX-Patgate-User:%20root"),
            400,
        ),
        case("2.20-encoded-del", get("2.20-encoded-del", "/acme/agents/%7f"), 400),
        case("2.21-raw-control", raw_path("2.21-raw-control", b"/acme/agents/\x01x"), 400),
        case("2.22-raw-tab", raw_path("2.22-raw-tab", b"/acme/agents/\tx"), 400),
        case("2.23-overlong-dot", get("2.23-overlong-dot", "/acme/agents/%c0%ae%c0%ae/x"), 400),
        case("2.24-overlong-3byte", get("2.24-overlong-3byte", "/acme/agents/%e0%80%ae"), 400),
        case("2.25-overlong-slash", get("2.25-overlong-slash", "/acme/agents/%c0%af"), 400),
        case("2.26-invalid-utf8", get("2.26-invalid-utf8", "/acme/agents/%ff"), 400),
        case(
            "2.27-raw-non-ascii",
            raw_path("2.27-raw-non-ascii", "/acme/agents/é".as_bytes()),
            400,
        ),
        case(
            "2.28-double-encoded-dots",
            get("2.28-double-encoded-dots", "/acme/agents/%252e%252e/x"),
            400,
        ),
        case(
            "2.29-double-encoded-slash",
            get("2.29-double-encoded-slash", "/acme/agents%252fx"),
            400,
        ),
        case("2.30-bare-percent", get("2.30-bare-percent", "/acme/agents/%"), 400),
        case("2.31-bad-hex", get("2.31-bad-hex", "/acme/agents/%g1"), 400),
        case("2.32-too-long", get("2.32-too-long", &long), 400),
        case("2.33-org-upper", get("2.33-org-upper", "/ACME/agents/x"), 403),
        case("2.34-org-capital", get("2.34-org-capital", "/Acme/agents/x"), 403),
        case("2.35-org-encoded-capital", get("2.35-org-encoded-capital", "/%41cme/agents/x"), 403),
        case_to(
            "2.36-org-encoded",
            get("2.36-org-encoded", "/%61cme/agents/x"),
            200,
            "/acme/agents/x",
        ),
        case_to(
            "2.37-literal-encoded",
            get("2.37-literal-encoded", "/acme/%61gents/x"),
            200,
            "/acme/agents/x",
        ),
        case("2.38-literal-case", get("2.38-literal-case", "/acme/AGENTS/x"), 403),
        case("2.39-other-org", get("2.39-other-org", "/other/agents/x"), 403),
        case("2.40-org-trailing-dot", get("2.40-org-trailing-dot", "/acme./agents/x"), 403),
        case("2.41-org-encoded-nul", get("2.41-org-encoded-nul", "/acme%00/agents/x"), 400),
        case("2.42-space", raw_path("2.42-space", b"/acme/agents/a b"), 400),
        case_to("2.43-control", get("2.43-control", "/acme/agents/x"), 200, "/acme/agents/x"),
    ];
    let mut bad = run_http_table(p.addr, &rec, &cases, None);
    let git_cases = vec![
        case(
            "2.44-git-dotdot-push",
            req(
                "POST",
                "/acme/demo.git/info/../git-receive-pack",
                "2.44-git-dotdot-push",
                &auth,
                b"",
            ),
            400,
        ),
        case(
            "2.45-git-encoded-dotdot",
            get("2.45-git-encoded-dotdot", "/acme/demo.git/%2e%2e/demo.git/info/refs"),
            400,
        ),
        case(
            "2.46-git-upper-info-refs",
            get("2.46-git-upper-info-refs", "/acme/demo.git/INFO/REFS?service=git-upload-pack"),
            403,
        ),
        case(
            "2.47-git-mixed-refs",
            get("2.47-git-mixed-refs", "/acme/demo.git/info/Refs?service=git-receive-pack"),
            403,
        ),
        case(
            "2.48-git-upper-receive",
            req("POST", "/acme/demo.git/GIT-RECEIVE-PACK", "2.48-git-upper-receive", &auth, b""),
            403,
        ),
        case(
            "2.49-git-mixed-upload",
            req("POST", "/acme/demo.git/Git-Upload-Pack", "2.49-git-mixed-upload", &auth, b""),
            403,
        ),
        case(
            "2.50-git-receive-nul",
            req("POST", "/acme/demo.git/git-receive-pack%00", "2.50-git-receive-nul", &auth, b""),
            400,
        ),
        case(
            "2.51-git-receive-slash",
            req("POST", "/acme/demo.git/git-receive-pack/", "2.51-git-receive-slash", &auth, b""),
            403,
        ),
        case(
            "2.52-git-receive-encoded",
            req(
                "POST",
                "/acme/demo.git/git%2dreceive%2dpack",
                "2.52-git-receive-encoded",
                &auth,
                b"",
            ),
            403,
        ),
        case(
            "2.53-git-encoded-slash",
            get("2.53-git-encoded-slash", "/acme/demo.git/info%2frefs?service=git-upload-pack"),
            400,
        ),
        case(
            "2.54-git-org-upper",
            get("2.54-git-org-upper", "/ACME/demo.git/info/refs?service=git-upload-pack"),
            403,
        ),
        case("2.55-git-config", get("2.55-git-config", "/acme/demo.git/config"), 403),
        case(
            "2.56-git-objects-escape",
            get("2.56-git-objects-escape", "/acme/demo.git/objects/info/../../config"),
            400,
        ),
        case_to(
            "2.57-git-control",
            get("2.57-git-control", INFO_REFS),
            200,
            "/acme/demo.git/info/refs?service=git-upload-pack",
        ),
    ];
    bad.extend(run_git_table(p.addr, &git, &git_cases));
    assert_no_failures("paths", &bad);
}

/// `%25%32%65` is `%25` (an escaped `%`) followed by `2` and `e` written as escapes of
/// unreserved characters. Normalization decodes the latter and forwards `%252e`: the very
/// double encoding of `.` that patgate refuses when a client sends it as such.
#[test]
fn double_encoding_assembled_by_normalization() {
    let rec = spawn_recorder();
    let p = TestPatgate::start(&agents_route(&rec));
    let t = live(&p, "alice", "agentpools:read", "acme").token;
    let auth = bearer(&t);
    let cases = vec![
        case(
            "2.58-assembled-double-dot",
            req("GET", "/acme/agents/%25%32%65%25%32%65/x", "2.58-assembled-double-dot", &auth, b""),
            400,
        ),
        case(
            "2.59-assembled-double-slash",
            req(
                "GET",
                "/acme/agents/x%25%32%66..%25%32%66other",
                "2.59-assembled-double-slash",
                &auth,
                b"",
            ),
            400,
        ),
    ];
    assert_no_failures("assembled double encoding", &run_http_table(p.addr, &rec, &cases, None));
}

// ---------------------------------------------------------------------------------------
// 3. The git query.
// ---------------------------------------------------------------------------------------

#[test]
fn git_query_tricks() {
    let git = GitRecorder::new();
    let p = TestPatgate::start(&git.toml());
    let bare = p.init_repo("acme", "demo");
    let reader = live(&p, "reader", "code:read", "acme").token;
    let auth = bearer(&reader);
    let refs = |case: &str, query: &str| req("GET", &format!("/acme/demo.git/info/refs?{query}"), case, &auth, b"");
    let upload_post = |case: &str, query: &str| {
        req(
            "POST",
            &format!("/acme/demo.git/git-upload-pack{query}"),
            case,
            &format!("{auth}Content-Type: application/x-git-upload-pack-request\r\nContent-Length: 4\r\n"),
            b"0000",
        )
    };
    let receive_post = |case: &str, query: &str| {
        req(
            "POST",
            &format!("/acme/demo.git/git-receive-pack{query}"),
            case,
            &format!("{auth}Content-Type: application/x-git-receive-pack-request\r\nContent-Length: 4\r\n"),
            b"0000",
        )
    };
    let cases = vec![
        case(
            "3.01-upload-then-receive",
            refs("3.01-upload-then-receive", "service=git-upload-pack&service=git-receive-pack"),
            400,
        ),
        case(
            "3.02-receive-then-upload",
            refs("3.02-receive-then-upload", "service=git-receive-pack&service=git-upload-pack"),
            400,
        ),
        case(
            "3.03-same-twice",
            refs("3.03-same-twice", "service=git-upload-pack&service=git-upload-pack"),
            400,
        ),
        case("3.04-encoded-name", refs("3.04-encoded-name", "%73ervice=git-receive-pack"), 400),
        case(
            "3.05-plain-and-encoded",
            refs("3.05-plain-and-encoded", "service=git-upload-pack&%73ervice=git-receive-pack"),
            400,
        ),
        case(
            "3.06-encoded-name-middle",
            refs("3.06-encoded-name-middle", "serv%69ce=git-receive-pack"),
            400,
        ),
        case(
            "3.07-encoded-value",
            refs("3.07-encoded-value", "service=git%2dreceive%2dpack"),
            400,
        ),
        case("3.08-empty-value", refs("3.08-empty-value", "service="), 400),
        case("3.09-no-value", refs("3.09-no-value", "service"), 400),
        case("3.10-nul-in-value", refs("3.10-nul-in-value", "service=git-upload-pack%00"), 400),
        case(
            "3.11-semicolon",
            refs("3.11-semicolon", "service=git-receive-pack;service=git-upload-pack"),
            400,
        ),
        case("3.12-upper-value", refs("3.12-upper-value", "service=GIT-RECEIVE-PACK"), 400),
        case("3.13-plus", refs("3.13-plus", "service=git-upload-pack+"), 400),
        case("3.14-nul-in-name", refs("3.14-nul-in-name", "service%00x=git-receive-pack"), 400),
        case(
            "3.15-receive-needs-write",
            refs("3.15-receive-needs-write", "service=git-receive-pack"),
            403,
        ),
        case(
            "3.16-receive-with-extra",
            refs("3.16-receive-with-extra", "x=1&service=git-receive-pack"),
            403,
        ),
        case_to(
            "3.17-upload-after-other",
            refs("3.17-upload-after-other", "x=1&service=git-upload-pack"),
            200,
            "/acme/demo.git/info/refs?x=1&service=git-upload-pack",
        ),
        case(
            "3.18-push-with-fetch-query",
            receive_post("3.18-push-with-fetch-query", "?service=git-upload-pack"),
            403,
        ),
        case("3.19-push-no-query", receive_post("3.19-push-no-query", ""), 403),
        case(
            "3.20-push-encoded-fetch-query",
            receive_post("3.20-push-encoded-fetch-query", "?%73ervice=git-upload-pack"),
            400,
        ),
        case(
            "3.21-fetch-with-push-query",
            upload_post("3.21-fetch-with-push-query", "?service=git-receive-pack"),
            200,
        ),
    ];
    let mut bad = run_git_table(p.addr, &git, &cases);
    // Whatever ran, git never ran receive-pack for the reader.
    for env in git.all() {
        let path = env.get("PATH_INFO").cloned().unwrap_or_default();
        let query = env.get("QUERY_STRING").cloned().unwrap_or_default();
        // (A POST to git-upload-pack runs upload-pack whatever its query says.)
        if path.contains("receive-pack") || (query.contains("receive-pack") && env["REQUEST_METHOD"] == "GET") {
            bad.push(format!("git http-backend ran receive-pack for a reader: {path}?{query}"));
        }
    }
    let refs_after = git_out(&bare, &["for-each-ref"]);
    assert!(refs_after.contains("refs/heads/main"));
    assert_no_failures("git query", &bad);
}

fn git_out(dir: &Path, args: &[&str]) -> String {
    git(dir, args).ok().stdout
}

// ---------------------------------------------------------------------------------------
// 4. Methods and request-target forms.
// ---------------------------------------------------------------------------------------

#[test]
fn method_tricks() {
    let rec = spawn_recorder();
    let git = GitRecorder::new();
    let p = TestPatgate::start(&format!("{}\n{}", agents_route(&rec), git.toml()));
    p.init_repo("acme", "demo");
    let reader = live(&p, "alice", "agentpools:read,code:read", "acme").token;
    let manager = live(&p, "bob", "agentpools:manage,code:write", "acme").token;
    let r = bearer(&reader);
    let m = bearer(&manager);
    let x = "/acme/agents/x";
    let here = p.addr;
    let cases = vec![
        case("4.01-options", req("OPTIONS", x, "4.01-options", &m, b""), 403),
        case("4.02-options-star", req("OPTIONS", "*", "4.02-options-star", &m, b""), 400),
        case("4.03-trace", req("TRACE", x, "4.03-trace", &m, b""), 405),
        case(
            "4.04-connect-authority",
            req("CONNECT", &here.to_string(), "4.04-connect-authority", &m, b""),
            400,
        ),
        case("4.05-connect-origin", req("CONNECT", x, "4.05-connect-origin", &m, b""), 405),
        case(
            "4.06-absolute-self",
            req("GET", &format!("http://{here}{x}"), "4.06-absolute-self", &r, b""),
            400,
        ),
        case(
            "4.07-absolute-other",
            req("GET", &format!("http://evil.example{x}"), "4.07-absolute-other", &r, b""),
            400,
        ),
        case(
            "4.08-absolute-upper",
            req("GET", &format!("HTTP://evil.example{x}"), "4.08-absolute-upper", &r, b""),
            400,
        ),
        case("4.09-patch", req("PATCH", x, "4.09-patch", &m, b""), 403),
        case("4.10-unknown-method", req("FOO", x, "4.10-unknown-method", &m, b""), 403),
        case("4.11-lower-get", req("get", x, "4.11-lower-get", &r, b""), 403),
        case(
            "4.12-method-override",
            req(
                "POST",
                x,
                "4.12-method-override",
                &format!("{r}X-HTTP-Method-Override: GET\r\nContent-Length: 0\r\n"),
                b"",
            ),
            403,
        ),
        case("4.13-delete-reader", req("DELETE", x, "4.13-delete-reader", &r, b""), 403),
        case(
            "4.14-put-reader",
            req("PUT", x, "4.14-put-reader", &format!("{r}Content-Length: 2\r\n"), b"{}"),
            403,
        ),
        case("4.15-delete-manager", req("DELETE", x, "4.15-delete-manager", &m, b""), 200),
        case("4.16-head-reader", req("HEAD", x, "4.16-head-reader", &r, b""), 200),
    ];
    let mut bad = run_http_table(p.addr, &rec, &cases, None);
    if let Some(g) = rec.case("4.16-head-reader").first() {
        if g.method != "HEAD" {
            bad.push(format!("HEAD reached the upstream as {}", g.method));
        }
    }
    let rp = "/acme/demo.git/git-receive-pack";
    let git_cases = vec![
        case(
            "4.17-git-put-receive",
            req("PUT", rp, "4.17-git-put-receive", &format!("{m}Content-Length: 0\r\n"), b""),
            403,
        ),
        case("4.18-git-get-receive", req("GET", rp, "4.18-git-get-receive", &m, b""), 403),
        case(
            "4.19-git-delete-refs",
            req("DELETE", "/acme/demo.git/info/refs", "4.19-git-delete-refs", &m, b""),
            403,
        ),
        case("4.20-git-options", req("OPTIONS", INFO_REFS, "4.20-git-options", &r, b""), 403),
        case(
            "4.21-git-head-receive",
            req(
                "HEAD",
                "/acme/demo.git/info/refs?service=git-receive-pack",
                "4.21-git-head-receive",
                &r,
                b"",
            ),
            403,
        ),
        case("4.22-git-trace", req("TRACE", INFO_REFS, "4.22-git-trace", &r, b""), 405),
        case(
            "4.23-git-propfind",
            req("PROPFIND", "/acme/demo.git/", "4.23-git-propfind", &m, b""),
            403,
        ),
        case(
            "4.24-git-mkcol",
            req("MKCOL", "/acme/demo.git/objects/ab/", "4.24-git-mkcol", &m, b""),
            403,
        ),
        case(
            "4.25-git-put-object",
            req(
                "PUT",
                "/acme/demo.git/objects/ab/cdef0123456789abcdef0123456789abcdef01",
                "4.25-git-put-object",
                &format!("{m}Content-Length: 0\r\n"),
                b"",
            ),
            403,
        ),
        case(
            "4.26-git-absolute",
            req("GET", &format!("http://{here}{INFO_REFS}"), "4.26-git-absolute", &r, b""),
            400,
        ),
        case(
            "4.27-git-post-refs",
            req("POST", INFO_REFS, "4.27-git-post-refs", &format!("{m}Content-Length: 0\r\n"), b""),
            403,
        ),
    ];
    bad.extend(run_git_table(p.addr, &git, &git_cases));
    assert_no_failures("methods", &bad);
}

// ---------------------------------------------------------------------------------------
// 5. Header spoofing.
// ---------------------------------------------------------------------------------------

#[test]
fn header_spoofing() {
    let rec = spawn_recorder();
    let git = GitRecorder::new();
    let p = TestPatgate::start(&format!("{}\n{}", agents_route(&rec), git.toml()));
    p.init_repo("acme", "demo");
    let t = live(&p, "alice", "agentpools:read,code:read", "acme");
    let auth = bearer(&t.token);
    let id = t.id.as_str();
    // (case, spoofing headers, then for each header name the values the upstream must see)
    type Spoof<'a> = (&'a str, String, Vec<(&'a str, Vec<&'a str>)>);
    let table: Vec<Spoof> = vec![
        (
            "5.01-user",
            "X-Patgate-User: root\r\n".into(),
            vec![("x-patgate-user", vec!["alice"])],
        ),
        (
            "5.02-token-id",
            "X-Patgate-Token-Id: forged\r\n".into(),
            vec![("x-patgate-token-id", vec![id])],
        ),
        (
            "5.03-user-twice-cased",
            "x-patgate-user: root\r\nX-PATGATE-USER: admin\r\n".into(),
            vec![("x-patgate-user", vec!["alice"])],
        ),
        (
            "5.04-xff",
            "X-Forwarded-For: 10.0.0.1\r\n".into(),
            vec![("x-forwarded-for", vec!["127.0.0.1"])],
        ),
        (
            "5.05-xff-twice",
            "X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n".into(),
            vec![("x-forwarded-for", vec!["127.0.0.1"])],
        ),
        (
            "5.06-xfh",
            "X-Forwarded-Host: evil.example\r\n".into(),
            vec![("x-forwarded-host", vec!["gate.example"])],
        ),
        (
            "5.07-xfp",
            "X-Forwarded-Proto: https\r\n".into(),
            vec![("x-forwarded-proto", vec!["http"])],
        ),
        (
            "5.08-x-remote-user",
            "X-Remote-User: root\r\n".into(),
            vec![("x-remote-user", vec![])],
        ),
        ("5.09-remote-user", "Remote-User: root\r\n".into(), vec![("remote-user", vec![])]),
        (
            "5.10-forwarded",
            "Forwarded: for=1.2.3.4;host=evil;proto=https\r\n".into(),
            vec![("forwarded", vec![])],
        ),
        ("5.11-x-real-ip", "X-Real-IP: 1.2.3.4\r\n".into(), vec![("x-real-ip", vec![])]),
        (
            "5.12-connection-names-user",
            "Connection: X-Patgate-User\r\nX-Patgate-User: root\r\n".into(),
            vec![("x-patgate-user", vec!["alice"])],
        ),
        (
            "5.13-connection-names-identity",
            "Connection: keep-alive, X-Forwarded-For, X-Patgate-Token-Id\r\nX-Forwarded-For: 10.0.0.1\r\n".into(),
            vec![("x-forwarded-for", vec!["127.0.0.1"]), ("x-patgate-token-id", vec![id])],
        ),
        (
            "5.14-underscore",
            "X_Patgate_User: root\r\nX_Forwarded_For: 10.0.0.1\r\n".into(),
            vec![
                ("x_patgate_user", vec![]),
                ("x_forwarded_for", vec![]),
                ("x-patgate-user", vec!["alice"]),
            ],
        ),
        (
            "5.15-proxy-authorization",
            "Proxy-Authorization: Basic eDp5\r\n".into(),
            vec![("proxy-authorization", vec![])],
        ),
        (
            "5.16-original-url",
            "X-Original-URL: /other/agents/x\r\n".into(),
            vec![("x-original-url", vec![])],
        ),
        (
            "5.17-method-override",
            "X-HTTP-Method-Override: DELETE\r\n".into(),
            vec![("x-http-method-override", vec![])],
        ),
        (
            // A WebSocket upgrade is passed on (tests/it/upgrade.rs); one to a protocol
            // that carries HTTP requests past the rules is not.
            "5.19-upgrade",
            "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nTE: trailers\r\n".into(),
            vec![("upgrade", vec![]), ("http2-settings", vec![]), ("te", vec![])],
        ),
        (
            "5.20-hop-by-hop",
            "Keep-Alive: timeout=999\r\nProxy-Connection: keep-alive\r\n".into(),
            vec![("keep-alive", vec![]), ("proxy-connection", vec![])],
        ),
        (
            "5.21-x-patgate-other",
            "X-Patgate-Admin: true\r\n".into(),
            vec![("x-patgate-admin", vec![])],
        ),
        (
            "5.22-x-forwarded-user",
            "X-Forwarded-User: root\r\n".into(),
            vec![("x-forwarded-user", vec![])],
        ),
    ];
    let mut bad = Vec::new();
    for (name, headers, checks) in &table {
        let raw = req("GET", "/acme/agents/x", name, &format!("{auth}{headers}"), b"");
        let r = exchange(p.addr, &raw);
        if r.status != 200 {
            bad.push(format!("[{name}] status {}", r.status));
            continue;
        }
        let got = rec.case(name);
        let Some(g) = got.first() else {
            bad.push(format!("[{name}] never reached the upstream"));
            continue;
        };
        for (header, want) in checks {
            if g.header(header) != *want {
                bad.push(format!("[{name}] upstream read {header}: {:?}, want {want:?}", g.header(header)));
            }
        }
        for (n, v) in &g.headers {
            if n == "connection" && v.to_ascii_lowercase().contains("x-") {
                bad.push(format!("[{name}] a client's Connection list reached the upstream: {v}"));
            }
        }
        if !g.header("authorization").is_empty() {
            bad.push(format!("[{name}] the credential reached the upstream"));
        }
    }
    // Headers that cannot be read one way only are refused whole.
    let refused = vec![
        case(
            "5.23-obs-fold",
            req(
                "GET",
                "/acme/agents/x",
                "5.23-obs-fold",
                &format!("{auth}X-Foo: a\r\n X-Patgate-User: root\r\n"),
                b"",
            ),
            400,
        ),
        case(
            "5.24-space-before-colon",
            req(
                "GET",
                "/acme/agents/x",
                "5.24-space-before-colon",
                &format!("{auth}X-Patgate-User : root\r\n"),
                b"",
            ),
            400,
        ),
    ];
    bad.extend(run_http_table(p.addr, &rec, &refused, Some(&t.token)));

    // The git upstream reads headers as CGI variables: none may stand in for patgate's.
    let git_table: Vec<GitSpoof> = vec![
        (
            "5.25-git-user",
            "X-Patgate-User: root\r\n",
            vec![("HTTP_X_PATGATE_USER", Some("alice")), ("REMOTE_USER", Some("alice"))],
        ),
        (
            "5.26-git-remote-user",
            "Remote-User: root\r\n",
            vec![("HTTP_REMOTE_USER", None), ("REMOTE_USER", Some("alice"))],
        ),
        (
            "5.27-git-remote-user-underscore",
            "Remote_User: root\r\n",
            vec![("HTTP_REMOTE_USER", None), ("REMOTE_USER", Some("alice"))],
        ),
        ("5.28-git-httpoxy", "Proxy: http://127.0.0.1:1\r\n", vec![("HTTP_PROXY", None)]),
        (
            "5.29-git-xff",
            "X-Forwarded-For: 10.0.0.1\r\n",
            vec![("HTTP_X_FORWARDED_FOR", Some("127.0.0.1"))],
        ),
        (
            "5.30-git-project-root",
            "Git_Project_Root: /\r\nPath-Info: /other/x.git\r\n",
            vec![("HTTP_GIT_PROJECT_ROOT", None), ("PATH_INFO", Some("/acme/demo.git/info/refs"))],
        ),
        (
            "5.31-git-connection-trick",
            "Connection: X-Patgate-User, Remote-User\r\nX-Patgate-User: root\r\n",
            vec![("HTTP_X_PATGATE_USER", Some("alice")), ("REMOTE_USER", Some("alice"))],
        ),
        ("5.32-git-auth-type", "Auth_Type: None\r\n", vec![("HTTP_AUTH_TYPE", None)]),
    ];
    let repos = p.repos();
    for (name, headers, checks) in &git_table {
        let r = exchange(p.addr, &req("GET", INFO_REFS, name, &format!("{auth}{headers}"), b""));
        if r.status != 200 {
            bad.push(format!("[{name}] status {}", r.status));
            continue;
        }
        let envs = git.case(name);
        let Some(env) = envs.first() else {
            bad.push(format!("[{name}] git never ran"));
            continue;
        };
        for (var, want) in checks {
            if env.get(*var).map(String::as_str) != *want {
                bad.push(format!("[{name}] git read {var}={:?}, want {want:?}", env.get(*var)));
            }
        }
        if env.get("GIT_PROJECT_ROOT").map(PathBuf::from) != Some(repos.clone()) {
            bad.push(format!("[{name}] GIT_PROJECT_ROOT is {:?}", env.get("GIT_PROJECT_ROOT")));
        }
        if env.contains_key("HTTP_AUTHORIZATION") {
            bad.push(format!("[{name}] the credential reached git"));
        }
    }
    assert_no_failures("header spoofing", &bad);
}

// ---------------------------------------------------------------------------------------
// 6. Framing.
// ---------------------------------------------------------------------------------------

#[test]
fn framing_tricks() {
    let rec = spawn_recorder();
    let p = TestPatgate::start(&agents_route(&rec));
    let m = live(&p, "bob", "agentpools:manage", "acme").token;
    let reader = live(&p, "alice", "agentpools:read", "acme").token;
    let auth = bearer(&m);
    let post = |case: &str, headers: &str, body: &[u8]| req("POST", "/acme/agents/x", case, &format!("{auth}{headers}"), body);
    let whole = |name: &str, raw: Vec<u8>, body: &str| case(name, raw, 200).with_body(body);
    // A second request hidden in the first one's body, complete with a good token.
    let smuggled =
        |case: &str| format!("GET /acme/agents/smuggled HTTP/1.1\r\nHost: gate.example\r\nX-Case: {case}-inner\r\n{auth}\r\n").into_bytes();
    let inner = smuggled("6.x");
    let cases = vec![
        case(
            "6.01-cl-then-te",
            post(
                "6.01-cl-then-te",
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                b"0\r\n\r\n",
            ),
            400,
        ),
        case(
            "6.02-te-then-cl",
            post(
                "6.02-te-then-cl",
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                b"0\r\n\r\n",
            ),
            400,
        ),
        case(
            "6.03-te-then-cl-cased",
            post(
                "6.03-te-then-cl-cased",
                "Transfer-Encoding: chunked\r\ncontent-LENGTH: 5\r\n",
                b"0\r\n\r\n",
            ),
            400,
        ),
        case(
            "6.04-te-then-bad-cl",
            post(
                "6.04-te-then-bad-cl",
                "Transfer-Encoding: chunked\r\nContent-Length: x\r\n",
                b"0\r\n\r\n",
            ),
            400,
        ),
        case(
            "6.05-two-cls",
            post("6.05-two-cls", "Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
            400,
        ),
        case("6.06-cl-list", post("6.06-cl-list", "Content-Length: 5, 6\r\n", b"hello!"), 400),
        // Two lines, even when they agree: one reading, no guess (RFC 9112 §6.3 lets a
        // server refuse; nginx does too).
        case(
            "6.07-same-cl-twice",
            post("6.07-same-cl-twice", "Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
            400,
        ),
        case("6.08-cl-plus", post("6.08-cl-plus", "Content-Length: +5\r\n", b"hello"), 400),
        case(
            "6.09-cl-negative",
            post("6.09-cl-negative", "Content-Length: -1\r\n", b"hello"),
            400,
        ),
        case("6.10-cl-hex", post("6.10-cl-hex", "Content-Length: 0x5\r\n", b"hello"), 400),
        case(
            "6.11-cl-huge",
            post("6.11-cl-huge", "Content-Length: 99999999999999999999999\r\n", b"hello"),
            400,
        ),
        case(
            "6.12-te-xchunked",
            post("6.12-te-xchunked", "Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
            501,
        ),
        case(
            "6.13-te-chunked-identity",
            post("6.13-te-chunked-identity", "Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"),
            501,
        ),
        case(
            "6.14-te-identity",
            post("6.14-te-identity", "Transfer-Encoding: identity\r\n", b"hello"),
            501,
        ),
        case(
            "6.15-te-space-before-colon",
            post("6.15-te-space-before-colon", "Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
            400,
        ),
        case(
            "6.16-te-vertical-tab",
            post("6.16-te-vertical-tab", "Transfer-Encoding:\x0bchunked\r\n", b"0\r\n\r\n"),
            400,
        ),
        case(
            "6.17-te-http10",
            {
                let mut v = post(
                    "6.17-te-http10",
                    "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                    b"0\r\n\r\n",
                );
                let at = v.windows(8).position(|w| w == b"HTTP/1.1").unwrap();
                v[at..at + 8].copy_from_slice(b"HTTP/1.0");
                v
            },
            400,
        ),
        whole(
            "6.18-chunk-extension",
            post(
                "6.18-chunk-extension",
                "Transfer-Encoding: chunked\r\n",
                b"5;ext=1\r\nhello\r\n0\r\n\r\n",
            ),
            "hello",
        ),
        case(
            "6.19-bad-chunk-size",
            post("6.19-bad-chunk-size", "Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n"),
            400,
        )
        .no_whole_body(),
        case(
            "6.20-overflowing-chunk-size",
            post(
                "6.20-overflowing-chunk-size",
                "Transfer-Encoding: chunked\r\n",
                b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            ),
            400,
        )
        .no_whole_body(),
        case(
            "6.21-negative-chunk-size",
            post(
                "6.21-negative-chunk-size",
                "Transfer-Encoding: chunked\r\n",
                b"-5\r\nhello\r\n0\r\n\r\n",
            ),
            400,
        )
        .no_whole_body(),
        case(
            "6.22-chunk-too-long",
            post("6.22-chunk-too-long", "Transfer-Encoding: chunked\r\n", b"3\r\nhello\r\n0\r\n\r\n"),
            400,
        )
        .no_whole_body(),
        // Refused before its body is read: the body is drained or the connection closed, never
        // read as a request of its own.
        case(
            "6.23-body-after-401",
            {
                let mut v = req(
                    "POST",
                    "/acme/agents/x",
                    "6.23-body-after-401",
                    &format!("Content-Length: {}\r\n", inner.len()),
                    b"",
                )
                .to_vec();
                v = String::from_utf8(v).unwrap().replace("Connection: close\r\n", "").into_bytes();
                v.extend_from_slice(&inner);
                v
            },
            401,
        ),
        case(
            "6.24-body-after-403",
            {
                let v = req(
                    "POST",
                    "/acme/agents/x",
                    "6.24-body-after-403",
                    &format!("{}Content-Length: {}\r\n", bearer(&reader), inner.len()),
                    b"",
                );
                let mut v = String::from_utf8(v).unwrap().replace("Connection: close\r\n", "").into_bytes();
                v.extend_from_slice(&inner);
                v
            },
            403,
        ),
        case(
            "6.25-body-after-400",
            {
                let v = req(
                    "POST",
                    "/acme/agents/../x",
                    "6.25-body-after-400",
                    &format!("{auth}Content-Length: {}\r\n", inner.len()),
                    b"",
                );
                let mut v = String::from_utf8(v).unwrap().replace("Connection: close\r\n", "").into_bytes();
                v.extend_from_slice(&inner);
                v
            },
            400,
        ),
        // RFC 9112 §3.2: one valid Host on HTTP/1.1, or 400; X-Forwarded-Host is only ever one.
        case(
            "6.28-two-hosts",
            String::from_utf8(post("6.28-two-hosts", "", b""))
                .unwrap()
                .replace("Host: gate.example\r\n", "Host: gate.example\r\nHost: evil.example\r\n")
                .into_bytes(),
            400,
        ),
        case(
            "6.29-no-host",
            String::from_utf8(post("6.29-no-host", "", b""))
                .unwrap()
                .replace("Host: gate.example\r\n", "")
                .into_bytes(),
            400,
        ),
        case(
            "6.30-host-userinfo",
            String::from_utf8(post("6.30-host-userinfo", "", b""))
                .unwrap()
                .replace("Host: gate.example\r\n", "Host: u:p@evil.example\r\n")
                .into_bytes(),
            400,
        ),
        case(
            "6.31-host-space",
            String::from_utf8(post("6.31-host-space", "", b""))
                .unwrap()
                .replace("Host: gate.example\r\n", "Host: ex ample\r\n")
                .into_bytes(),
            400,
        ),
        case(
            "6.32-host-slash",
            String::from_utf8(post("6.32-host-slash", "", b""))
                .unwrap()
                .replace("Host: gate.example\r\n", "Host: a/b\r\n")
                .into_bytes(),
            400,
        ),
        case(
            "6.33-host-port",
            String::from_utf8(post("6.33-host-port", "", b""))
                .unwrap()
                .replace("Host: gate.example\r\n", "Host: x.example:99999\r\n")
                .into_bytes(),
            400,
        ),
        // A GET with a body: forwarded with it, never silently without.
        whole(
            "6.34-get-with-chunked-body",
            req(
                "GET",
                "/acme/agents/x",
                "6.34-get-with-chunked-body",
                &format!("{auth}Transfer-Encoding: chunked\r\n"),
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
            "hello",
        ),
    ];
    let mut bad = run_http_table(p.addr, &rec, &cases, None);
    for c in &cases {
        if let Some(body) = &c.body {
            if let Some(g) = rec.case(&c.name).first() {
                let got = g.body.clone().map(|b| b.map(|b| String::from_utf8_lossy(&b).into_owned()));
                if got.as_ref() != Some(&Ok(body.clone())) {
                    bad.push(format!("[{}] the upstream read the body {got:?}", c.name));
                }
            }
        }
    }
    if rec.all().iter().any(|g| g.uri.contains("smuggled")) {
        bad.push("a request hidden in a refused request's body reached the upstream".into());
    }
    // Bodies that end early, then the client goes away: the upstream never reads a whole one.
    for (name, headers, body) in [
        ("6.26-short-body", "Content-Length: 10\r\n", b"hello".as_slice()),
        (
            "6.27-unterminated-chunks",
            "Transfer-Encoding: chunked\r\n",
            b"5\r\nhello\r\n".as_slice(),
        ),
    ] {
        let mut c = Conn::open(p.addr);
        c.send(&post(name, headers, body));
        c.s.shutdown(Shutdown::Write).unwrap();
        let answer = c.answer();
        if let Some(r) = &answer {
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
    assert_no_failures("framing", &bad);
}

/// The ways a lenient chunked reader loses a connection's framing, each followed on the
/// same connection by a request that must never be read as one: a chunk extension with a
/// control byte, a trailer line ending in a bare LF, an empty line that is a bare LF. Each
/// gets 400 and the connection closes; the upstream sees neither request, nor one hidden in
/// a body.
#[test]
fn a_chunked_body_that_is_not_strictly_chunked_ends_the_connection() {
    let rec = spawn_recorder();
    let p = TestPatgate::start(&agents_route(&rec));
    let m = live(&p, "bob", "agentpools:manage", "acme").token;
    let auth = bearer(&m);
    let head = |case: &str, extra: &str| {
        format!("POST /acme/agents/x HTTP/1.1\r\nHost: gate.example\r\nX-Case: {case}\r\n{auth}{extra}\r\n").into_bytes()
    };
    let next = |case: &str| {
        let body = "0\r\n\r\nGET /acme/agents/hidden HTTP/1.1\r\nHost: gate.example\r\n\r\n";
        let mut v = head(
            &format!("{case}-next"),
            &format!("Content-Length: {}\r\nTransfer-Encoding: chunked\r\n", body.len()),
        );
        v.extend_from_slice(body.as_bytes());
        v
    };
    let mut bad = Vec::new();
    for (case, body) in [
        ("7.01-ext-control", b"5;\x01\r\nhello\r\n0\r\n\r\n".as_slice()),
        ("7.02-ext-nul", b"5;\x00\r\nhello\r\n0\r\n\r\n".as_slice()),
        ("7.03-ext-del", b"5;a\x7fb\r\nhello\r\n0\r\n\r\n".as_slice()),
        ("7.04-trailer-bare-lf", b"0\r\nX-T: 1\n\r\n".as_slice()),
        ("7.05-trailer-host-bare-lf", b"0\r\nHost: evil\n\r\n".as_slice()),
        ("7.06-end-bare-lf", b"0\r\n\n".as_slice()),
    ] {
        let mut raw = head(case, "Transfer-Encoding: chunked\r\n");
        raw.extend_from_slice(body);
        raw.extend_from_slice(&next(case));
        let mut c = Conn::open(p.addr);
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
    }
    if rec.all().iter().any(|g| g.uri.contains("hidden")) {
        bad.push("a request hidden in a body reached the upstream".into());
    }
    assert_no_failures("strict chunks", &bad);
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

/// Content-Length next to Transfer-Encoding is found by looking up the request line in the
/// bytes read; a chunked body that repeats the request line hides the real head.
#[test]
fn content_length_with_transfer_encoding_hidden_by_the_body() {
    let rec = spawn_recorder();
    let p = TestPatgate::start(&agents_route(&rec));
    let m = live(&p, "bob", "agentpools:manage", "acme").token;
    let data = b"POST /acme/agents/x HTTP/1.1\r\n\r\n";
    let mut body = format!("{:x}\r\n", data.len()).into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    let raw = req(
        "POST",
        "/acme/agents/x",
        "6.28-cl-te-hidden",
        &format!("{}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", bearer(&m)),
        &body,
    );
    let cases = vec![case("6.28-cl-te-hidden", raw, 400)];
    assert_no_failures("hidden CL+TE", &run_http_table(p.addr, &rec, &cases, None));
}

impl Case {
    fn no_whole_body(mut self) -> Case {
        self.reach = Reach::NoWholeBody;
        self
    }

    /// The body the upstream must read whole.
    fn with_body(mut self, body: &str) -> Case {
        self.body = Some(body.to_owned());
        self
    }
}

// ---------------------------------------------------------------------------------------
// 7. Slow and large.
// ---------------------------------------------------------------------------------------

/// Headers one byte at a time, a client that sends nothing, bodies that never end (HTTP
/// and git upstreams, and refused), and idle clients filling a small connection limit.
#[test]
fn slow_clients_are_cut_off_and_never_hold_an_upstream() {
    let rec = spawn_recorder();
    let git = GitRecorder::new();
    let p = TestPatgate::start_with_env(
        &format!("[upstream]\nresponse_timeout = \"2s\"\n\n{}\n{}", agents_route(&rec), git.toml()),
        &[
            ("PATGATE__SERVER__HEADER_READ_TIMEOUT", "1s"),
            ("PATGATE__SERVER__MAX_CONNECTIONS", "8"),
        ],
    );
    p.init_repo("acme", "demo");
    let t = live(&p, "alice", "agentpools:manage,code:read", "acme").token;
    let pid = pid_of(&p);
    let mut bad = Vec::new();

    // 7.01: one byte every 400 ms, far past the 1 s header timeout.
    let slow_head = req("GET", "/acme/agents/x", "7.01-slow-headers", &bearer(&t), b"");
    let addr = p.addr;
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
    // Meanwhile another client is served at once.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let r = exchange(p.addr, &req("GET", "/acme/agents/x", "7.02-meanwhile", &bearer(&t), b""));
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
    if !rec.case("7.01-slow-headers").is_empty() {
        bad.push("[7.01] slow headers reached the upstream".into());
    }

    // 7.03: a client that connects and sends nothing.
    let mut idle = Conn::open(p.addr);
    if !idle.closed_within(Duration::from_secs(5)) {
        bad.push("[7.03] a silent client was not cut off within 5 s".into());
    }

    // 7.04: a body announced and never completed, HTTP upstream: bounded by the route's
    // response timeout, and the upstream is let go.
    let mut c = Conn::open(p.addr);
    let head = req(
        "POST",
        "/acme/agents/x",
        "7.04-endless-body",
        &format!("{}Content-Length: 100000\r\n", bearer(&t)),
        b"0123456789",
    );
    let head = String::from_utf8(head).unwrap().replace("Connection: close\r\n", "").into_bytes();
    let started = Instant::now();
    c.send(&head);
    let r = c.answer();
    let waited = started.elapsed();
    eprintln!("7.04: endless body answered {:?} after {waited:?}", r.as_ref().map(|r| r.status));
    match &r {
        Some(r) if r.status == 504 && waited < Duration::from_secs(10) => {}
        _ => bad.push(format!("[7.04] endless body: {:?} after {waited:?}", r.map(|r| r.status))),
    }
    let released = wait_until(Duration::from_secs(5), || {
        rec.case("7.04-endless-body").iter().all(|g| matches!(g.body, Some(Err(_))))
    });
    if !released {
        bad.push(format!(
            "[7.04] the upstream still waits for the body after the 504: {:?}",
            rec.case("7.04-endless-body")
        ));
    }
    if rec.case("7.04-endless-body").iter().any(|g| matches!(g.body, Some(Ok(_)))) {
        bad.push("[7.04] the upstream read a whole body".into());
    }
    drop(c);

    // 7.07: the same body, refused (no token): answered at once, and the connection is not
    // held open waiting for a body nobody reads.
    let mut c = Conn::open(p.addr);
    let head = req(
        "POST",
        "/acme/agents/x",
        "7.07-endless-refused",
        "Content-Length: 100000\r\n",
        b"0123456789",
    );
    let head = String::from_utf8(head).unwrap().replace("Connection: close\r\n", "").into_bytes();
    let started = Instant::now();
    c.send(&head);
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
    if !rec.case("7.07-endless-refused").is_empty() {
        bad.push("[7.07] reached the upstream".into());
    }

    // 7.05: the same against git http-backend: the process is ended, its slot freed.
    let mut c = Conn::open(p.addr);
    let head = req(
        "POST",
        "/acme/demo.git/git-upload-pack",
        "7.05-endless-git-body",
        &format!(
            "{}Content-Type: application/x-git-upload-pack-request\r\nContent-Length: 100000\r\n",
            bearer(&t)
        ),
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

    // 7.06: more silent clients than connection slots: each is cut after the header
    // timeout, so a normal client waiting behind them is served within seconds.
    let idle: Vec<TcpStream> = (0..24).map(|_| TcpStream::connect(p.addr).unwrap()).collect();
    let started = Instant::now();
    let mut c = Conn::open(p.addr);
    c.send(&req("GET", "/acme/agents/x", "7.06-behind-idle", &bearer(&t), b""));
    let r = c.answer();
    eprintln!("7.06: served behind idle clients after {:?}", started.elapsed());
    if r.as_ref().map(|r| r.status) != Some(200) || started.elapsed() > Duration::from_secs(12) {
        bad.push(format!(
            "[7.06] a request behind 24 idle clients (8 slots): {:?} after {:?}",
            r.map(|r| r.status),
            started.elapsed()
        ));
    }
    drop(idle);
    assert_no_failures("slow clients", &bad);
}

/// Huge header sections, pipelined requests, and hundreds of idle connections.
#[test]
fn large_heads_pipelining_and_idle_connections() {
    let rec = spawn_recorder();
    let p = TestPatgate::start(&agents_route(&rec));
    let t = live(&p, "alice", "agentpools:read", "acme").token;
    let auth = bearer(&t);
    let mut bad = Vec::new();

    // 7.10..7.14: too many headers, too large a head: 431 (or 400), never forwarded.
    let many = |n: usize| (0..n).map(|i| format!("X-H{i}: v\r\n")).collect::<String>();
    let large = vec![
        (
            "7.10-150-headers",
            req("GET", "/acme/agents/x", "7.10-150-headers", &format!("{auth}{}", many(150)), b""),
        ),
        (
            "7.11-5000-headers",
            req("GET", "/acme/agents/x", "7.11-5000-headers", &format!("{auth}{}", many(5000)), b""),
        ),
        (
            "7.12-huge-value",
            req(
                "GET",
                "/acme/agents/x",
                "7.12-huge-value",
                &format!("{auth}X-Big: {}\r\n", "a".repeat(20000)),
                b"",
            ),
        ),
        (
            "7.13-huge-target",
            req(
                "GET",
                &format!("/acme/agents/{}", "a".repeat(20000)),
                "7.13-huge-target",
                &auth,
                b"",
            ),
        ),
        (
            "7.14-just-over",
            req(
                "GET",
                "/acme/agents/x",
                "7.14-just-over",
                &format!("{auth}X-Big: {}\r\n", "a".repeat(16384)),
                b"",
            ),
        ),
    ];
    for (name, raw) in &large {
        let r = exchange(p.addr, raw);
        if ![400, 414, 431].contains(&r.status) {
            bad.push(format!("[{name}] status {} (want 431 or 400)", r.status));
        }
        if !rec.case(name).is_empty() {
            bad.push(format!("[{name}] reached the upstream"));
        }
    }
    // Headers up to the limit still pass.
    let r = exchange(
        p.addr,
        &req(
            "GET",
            "/acme/agents/x",
            "7.15-under-limit",
            &format!("{auth}X-Big: {}\r\n", "a".repeat(8000)),
            b"",
        ),
    );
    if r.status != 200 {
        bad.push(format!("[7.15] an 8 KB header: {}", r.status));
    }

    // Pipelining: each request on its own merits, in order.
    let keep = |method: &str, path: &str, case: &str, headers: &str| {
        format!("{method} {path} HTTP/1.1\r\nHost: gate.example\r\nX-Case: {case}\r\n{headers}\r\n").into_bytes()
    };
    let pipelines: Vec<Pipeline> = vec![
        (
            "7.16",
            vec![
                keep("GET", "/acme/agents/a", "7.16-a", &auth),
                keep("GET", "/acme/agents/b", "7.16-b", &format!("{auth}Connection: close\r\n")),
            ],
            vec![200, 200],
        ),
        (
            "7.17",
            vec![
                keep("GET", "/acme/agents/a", "7.17-a", ""),
                keep("GET", "/acme/agents/b", "7.17-b", &format!("{auth}Connection: close\r\n")),
            ],
            vec![401, 200],
        ),
        (
            "7.18",
            vec![
                keep("GET", "/acme/agents/a", "7.18-a", &auth),
                keep("GET", "/acme/agents/b", "7.18-b", "Connection: close\r\n"),
            ],
            vec![200, 401],
        ),
        (
            "7.19",
            vec![
                keep("GET", "/acme/agents/../a", "7.19-a", &auth),
                keep("GET", "/acme/agents/b", "7.19-b", &format!("{auth}Connection: close\r\n")),
            ],
            vec![400],
        ),
        (
            "7.20",
            vec![
                keep("POST", "/acme/agents/a", "7.20-a", &format!("{auth}Content-Length: 0\r\n")),
                keep("GET", "/acme/agents/b", "7.20-b", &format!("{auth}Connection: close\r\n")),
            ],
            vec![403, 200],
        ),
    ];
    for (name, requests, want) in &pipelines {
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
    }
    // 7.21: a hundred requests in one write, all answered in order.
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

    // 7.22: 200 idle connections (half silent, half with a partial head) while a normal
    // request is served at once.
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
    assert_no_failures("large heads and pipelining", &bad);
}

// ---------------------------------------------------------------------------------------
// 9. Token store abuse.
// ---------------------------------------------------------------------------------------

/// Reads `rchar` (bytes read through read(2) and friends, sockets and files alike).
fn rchar(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
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

#[test]
fn a_revocation_racing_with_use_bites_once_it_answered() {
    let rec = spawn_recorder();
    let p = TestPatgate::start(&agents_route(&rec));
    let caller = p.mint_caller("alice", "tokens:manage");
    let by_api = live(&p, "alice", "agentpools:read", "acme");
    let by_cli = live(&p, "alice", "agentpools:read", "acme");
    let mut bad = Vec::new();
    for (how, token) in [("9.10-api", &by_api), ("9.11-cli", &by_cli)] {
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..3)
            .map(|i| {
                let (addr, tok, stop) = (p.addr, token.token.clone(), stop.clone());
                let case = format!("{how}-{i}");
                std::thread::spawn(move || hammer(addr, &tok, &case, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let answered = if how == "9.10-api" {
            let a = p.api("POST", &format!("/admin/v1/tokens/{}/revoke", token.id), Some(&caller.token), None);
            assert_eq!(a.status, 200, "{:?}", a.json);
            Instant::now()
        } else {
            let out = p.cli(&["token", "revoke", &token.id]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            Instant::now()
        };
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        let results: Vec<(Instant, u16, String)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        // The admin API applies a revoke before answering; the CLI writes the store, which
        // a running server follows within its poll interval (100 ms here; 1 s allowed).
        let grace = if how == "9.10-api" {
            Duration::ZERO
        } else {
            Duration::from_secs(1)
        };
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
        let admitted: std::collections::HashSet<&str> =
            results.iter().filter(|(_, st, _)| *st == 200).map(|(_, _, n)| n.as_str()).collect();
        for g in rec.all() {
            if let Some(c) = g.case().filter(|c| c.starts_with(how)) {
                if !admitted.contains(c.as_str()) {
                    bad.push(format!("[{how}] {c} reached the upstream without a 200"));
                }
            }
        }
    }
    assert_no_failures("revocation race", &bad);
}

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
    let expires_text = v["expires_at"].as_str().unwrap();
    let expires_at = humantime::parse_rfc3339_weak(expires_text).unwrap();
    // Until a second past the expiry: (sent, answered, status).
    let mut seen: Vec<(SystemTime, SystemTime, u16)> = Vec::new();
    let mut c = Conn::open(p.addr);
    while SystemTime::now() < expires_at + Duration::from_millis(1200) {
        let raw = format!("GET /acme/agents/x HTTP/1.1\r\nHost: gate.example\r\nX-Case: 9.20\r\nAuthorization: Bearer {token}\r\n\r\n");
        let sent = SystemTime::now();
        if !c.send(raw.as_bytes()) {
            c = Conn::open(p.addr);
            continue;
        }
        let Some(r) = c.answer() else {
            c = Conn::open(p.addr);
            continue;
        };
        seen.push((sent, SystemTime::now(), r.status));
        std::thread::sleep(Duration::from_millis(10));
    }
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
    let mut bad = Vec::new();
    // Expiry is whole seconds: refused from `expires_at` on, admitted strictly before
    // (once the server has loaded the token).
    let first_ok = seen.iter().position(|(_, _, s)| *s == 200);
    let Some(first_ok) = first_ok else {
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
    assert_no_failures("expiry", &bad);
}

// ---------------------------------------------------------------------------------------
// 10. Admin API: cases tests/it/admin.rs does not already cover.
// ---------------------------------------------------------------------------------------

#[test]
fn admin_api_hostile_bodies_and_callers() {
    let p = TestPatgate::start("[admin]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 2048\n");
    let alice = p.mint_caller("alice", "tokens:manage");
    let mut bad = Vec::new();
    let post = |headers: &str, body: &[u8]| {
        let mut v = format!(
            "POST /admin/v1/tokens HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n{headers}Connection: close\r\n\r\n",
            alice.token
        )
        .into_bytes();
        v.extend_from_slice(body);
        v
    };
    // 10.01: a chunked body past the limit (no Content-Length to refuse up front).
    let big = format!(
        "{{\"name\": \"{}\", \"scopes\": [\"code:read\"], \"orgs\": \"*\"}}",
        "x".repeat(4000)
    );
    let mut chunked = Vec::new();
    for part in big.as_bytes().chunks(500) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = exchange(p.admin_addr(), &post("Transfer-Encoding: chunked\r\n", &chunked));
    if r.status != 413 {
        bad.push(format!("[10.01] chunked oversized body: {}", r.status));
    }
    // 10.02: an enormous announced body is refused without waiting for it.
    let started = Instant::now();
    let r = exchange(p.admin_addr(), &post("Content-Length: 10000000000\r\n", b"{"));
    if r.status != 413 || started.elapsed() > Duration::from_secs(5) {
        bad.push(format!("[10.02] 10 GB announced: {} after {:?}", r.status, started.elapsed()));
    }
    // 10.03: duplicate keys could be read two ways.
    let r = exchange(
        p.admin_addr(),
        &post(
            "Content-Length: 84\r\n",
            br#"{"name": "a", "name": "b", "scopes": ["code:read"], "orgs": "*", "expires_in": "1h"} "#,
        ),
    );
    if r.status != 400 {
        bad.push(format!("[10.03] duplicate keys: {} {}", r.status, r.body));
    }
    // 10.04: tokens:admin written with a JSON escape is still tokens:admin (not grantable).
    let body = br#"{"name": "a", "scopes": ["tokens:\u0061dmin"], "orgs": "*"}"#;
    let r = exchange(p.admin_addr(), &post(&format!("Content-Length: {}\r\n", body.len()), body));
    if r.status != 400 {
        bad.push(format!("[10.04] escaped tokens:admin: {} {}", r.status, r.body));
    }
    // 10.05: deep nesting is a 400, not a crash.
    let deep = format!("{{\"name\": {}{}}}", "[".repeat(600), "]".repeat(600));
    let r = exchange(
        p.admin_addr(),
        &post(&format!("Content-Length: {}\r\n", deep.len()), deep.as_bytes()),
    );
    if r.status != 400 {
        bad.push(format!("[10.05] deep nesting: {}", r.status));
    }
    // 10.06: a revoked or expired caller gets the same 401 as an unknown one.
    let unknown = p.api("GET", "/admin/v1/tokens", Some(TokenSecret::generate().expose()), None);
    let revoked = p.mint_caller("alice", "tokens:manage");
    let a = p.api("POST", &format!("/admin/v1/tokens/{}/revoke", revoked.id), Some(&alice.token), None);
    assert_eq!(a.status, 200);
    let short = p.mint_for("alice", "tokens:manage", "*", "1s");
    std::thread::sleep(Duration::from_millis(2100));
    for (name, tok) in [("10.06-revoked", &revoked.token), ("10.07-expired", &short.token)] {
        let a = p.api("GET", "/admin/v1/tokens", Some(tok), None);
        if (a.status, &a.raw.body, a.raw.header("www-authenticate")) != (401, &unknown.raw.body, unknown.raw.header("www-authenticate")) {
            bad.push(format!("[{name}] {} {:?}, unlike an unknown token's 401", a.status, a.raw.body));
        }
    }
    // 10.08: after creation, no read gives the secret back, in any field.
    let a = p.api(
        "POST",
        "/admin/v1/tokens",
        Some(&alice.token),
        Some(&serde_json::json!({"name": "s", "scopes": ["code:read"], "orgs": "*"})),
    );
    assert_eq!(a.status, 201, "{:?}", a.json);
    let (id, secret) = (
        a.json["token"]["id"].as_str().unwrap().to_owned(),
        a.json["secret"].as_str().unwrap().to_owned(),
    );
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
    // 10.09: paths that climb out of a token's id reach no other endpoint.
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
    assert_no_failures("admin API", &bad);
}
