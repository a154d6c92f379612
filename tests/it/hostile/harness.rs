//! The harness of the hostile-input tests: the recording upstreams, raw requests, the tables
//! of cases and the checks a table runs, and readings of the patgate process under test.
//!
//! Every request carries an `X-Case` header naming its case, so that what reached the
//! recording HTTP upstream (or the recording `git http-backend`, a wrapper script that saves
//! its CGI environment) can be matched to the request that sent it. A case that fails does
//! not stop its table: every failure of a table is reported together.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use patgate::proxy::{CHALLENGE, UNAUTHORIZED_BODY};

use crate::support::*;

// ---------------------------------------------------------------------------------------
// The recording upstreams, and patgate in front of them.
// ---------------------------------------------------------------------------------------

/// The recording upstream (`support::spawn_upstream`), as the tables use it.
pub type Recorder = Upstream;

pub fn spawn_recorder() -> Recorder {
    spawn_upstream(false)
}

/// The HTTP route `/{org}/agents/**` to `rec`: GET needs agentpools:read; POST, PUT and
/// DELETE need agentpools:manage.
pub fn agents_route(rec: &Recorder) -> String {
    format!(
        "[[routes]]\npath = \"/{{org}}/agents/**\"\nupstream = \"http://{}\"\nrules = [ {{ methods = [\"GET\"], scope = \"agentpools:read\" }}, {{ methods = [\"POST\", \"PUT\", \"DELETE\"], scope = \"agentpools:manage\" }} ]\n",
        rec.addr
    )
}

/// The git endpoint that starts a fetch.
pub const INFO_REFS: &str = "/acme/demo.git/info/refs?service=git-upload-pack";

/// patgate with both upstreams: the HTTP route to a recording upstream, and the git route
/// to a recording `git http-backend` that serves `acme/demo.git`.
pub struct Gate {
    // Dropped in this order: patgate first, then its upstreams.
    pub p: TestPatgate,
    pub git: GitRecorder,
    pub rec: Recorder,
}

impl Gate {
    pub fn start() -> Gate {
        Gate::start_with("", &[])
    }

    /// With `head` (whole TOML tables) before the routes, and environment.
    pub fn start_with(head: &str, env: &[(&str, &str)]) -> Gate {
        let rec = spawn_recorder();
        let git = GitRecorder::new();
        let p = TestPatgate::start_with_env(&format!("{head}{}\n{}", agents_route(&rec), git.toml()), env);
        p.init_repo("acme", "demo");
        Gate { p, git, rec }
    }
}

/// A recording `git http-backend`: a wrapper that saves its CGI environment, then runs git.
pub struct GitRecorder {
    dir: tempfile::TempDir,
}

impl GitRecorder {
    pub fn new() -> GitRecorder {
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
    pub fn toml(&self) -> String {
        format!("[git]\nbinary = \"{}\"\n", self.dir.path().join("git-recording").display())
    }

    /// Every CGI environment recorded so far.
    pub fn all(&self) -> Vec<HashMap<String, String>> {
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
    pub fn case(&self, case: &str) -> Vec<HashMap<String, String>> {
        self.all()
            .into_iter()
            .filter(|e| e.get("HTTP_X_CASE").map(String::as_str) == Some(case))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Raw requests.
// ---------------------------------------------------------------------------------------

/// Sends one request on a new connection and reads one answer (status 0: none came).
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> RawResponse {
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
pub fn req(method: &str, target: &str, case: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut v =
        format!("{method} {target} HTTP/1.1\r\nHost: gate.example\r\nX-Case: {case}\r\n{headers}Connection: close\r\n\r\n").into_bytes();
    v.extend_from_slice(body);
    v
}

pub fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ---------------------------------------------------------------------------------------
// Tables of cases.
// ---------------------------------------------------------------------------------------

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

/// One row of a table: a raw request, the status it must get, and what of it may reach
/// the upstream.
pub struct Case {
    name: String,
    raw: Vec<u8>,
    want: u16,
    reach: Reach,
    /// The body the upstream must read, when it is checked.
    body: Option<String>,
}

/// A case: a 2xx must reach the upstream exactly once, anything else never.
pub fn case(name: &str, raw: Vec<u8>, want: u16) -> Case {
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

/// The case of one bodiless request (`req`), named by its `X-Case`.
pub fn row(name: &str, method: &str, target: &str, headers: &str, want: u16) -> Case {
    case(name, req(method, target, name, headers, b""), want)
}

impl Case {
    /// Reaches the upstream exactly once, which reads this URI (path and query); for git,
    /// `PATH_INFO?QUERY_STRING`.
    pub fn reaching(mut self, uri: &str) -> Case {
        self.reach = Reach::Once(Some(uri.to_owned()));
        self
    }

    /// Perhaps its head reaches the upstream, never its whole body.
    pub fn no_whole_body(mut self) -> Case {
        self.reach = Reach::NoWholeBody;
        self
    }

    /// The body the upstream must read whole.
    pub fn with_body(mut self, body: &str) -> Case {
        self.body = Some(body.to_owned());
        self
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
pub fn run_http_table(addr: SocketAddr, rec: &Recorder, cases: &[Case], forbidden_token: Option<&str>) -> Vec<String> {
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
    bad.extend(check_credentials(rec, forbidden_token));
    bad.extend(check_bodies(rec, cases));
    bad
}

/// No credential reached the upstream (nor, when given, the token in any form).
pub fn check_credentials(rec: &Recorder, forbidden_token: Option<&str>) -> Vec<String> {
    let mut bad = Vec::new();
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

/// The upstream read each checked body whole (`Case::with_body`).
fn check_bodies(rec: &Recorder, cases: &[Case]) -> Vec<String> {
    let mut bad = Vec::new();
    for c in cases {
        if let Some(body) = &c.body {
            if let Some(g) = rec.case(&c.name).first() {
                let got = g.body.clone().map(|b| b.map(|b| String::from_utf8_lossy(&b).into_owned()));
                if got.as_ref() != Some(&Ok(body.clone())) {
                    bad.push(format!("[{}] the upstream read the body {got:?}", c.name));
                }
            }
        }
    }
    bad
}

/// What of a case reached the HTTP upstream, against what may.
pub fn check_reach_http(rec: &Recorder, c: &Case) -> Vec<String> {
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
pub fn run_git_table(addr: SocketAddr, git: &GitRecorder, cases: &[Case]) -> Vec<String> {
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

pub fn assert_no_failures(table: &str, bad: &[String]) {
    assert!(bad.is_empty(), "{table}: {} failure(s):\n{}", bad.len(), bad.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Tokens, waiting, and the process under test.
// ---------------------------------------------------------------------------------------

/// Mints a token for `owner` and waits until the running server admits it.
pub fn live(p: &TestPatgate, owner: &str, scopes: &str, orgs: &str) -> Minted {
    let m = p.mint_for(owner, scopes, orgs, "1h");
    wait_live(p, &m.token);
    m
}

pub fn wait_live(p: &TestPatgate, token: &str) {
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

/// Polls `f` every 20 ms for up to `limit`; whether it became true.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
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

/// The pid of this test's `patgate serve` (found by its config path).
pub fn pid_of(p: &TestPatgate) -> u32 {
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

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Reads `rchar` (bytes read through read(2) and friends, sockets and files alike).
pub fn rchar(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The command lines of a process's children.
pub fn children(pid: u32) -> Vec<String> {
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
