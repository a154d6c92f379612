//! Test support: a patgate process on an ephemeral port with its own store and
//! repositories, a recording HTTP upstream, the real git client, and raw HTTP.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_patgate");

/// A running `patgate serve`, killed on drop.
pub struct TestPatgate {
    pub dir: TempDir,
    pub addr: SocketAddr,
    /// The admin API's address (none when `[admin] enabled = false`).
    pub admin: Option<SocketAddr>,
    pub config: PathBuf,
    child: Child,
    log: Arc<Mutex<String>>,
}

/// A token made with the CLI.
#[derive(Clone)]
pub struct Minted {
    pub id: String,
    pub token: String,
}

impl TestPatgate {
    /// Starts patgate with the git route, plus `extra` TOML (routes are tried by specificity).
    /// The admin API listens on an ephemeral port unless `extra` has its own `[admin]`.
    pub fn start(extra: &str) -> TestPatgate {
        Self::start_with_env(extra, &[])
    }

    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> TestPatgate {
        Self::start_full("", extra, env)
    }

    /// Starts patgate with `server` lines added to its `[server]` table.
    pub fn start_with_server(server: &str, extra: &str) -> TestPatgate {
        Self::start_full(server, extra, &[])
    }

    /// Starts patgate with its open-file limit (soft and hard) set to `n`, as `prlimit` sets it.
    pub fn start_with_open_files(n: u64, extra: &str) -> TestPatgate {
        Self::start_full("", extra, &[("PATGATE_TEST_NOFILE", &n.to_string())])
    }

    fn start_full(server: &str, extra: &str, env: &[(&str, &str)]) -> TestPatgate {
        let dir = tempfile::tempdir().unwrap();
        let repos = dir.path().join("repos");
        std::fs::create_dir_all(&repos).unwrap();
        let config = dir.path().join("patgate.toml");
        let listen_in_file = if env.iter().any(|(k, _)| *k == "PATGATE__SERVER__LISTEN") {
            "not-an-address"
        } else {
            "127.0.0.1:0"
        };
        // Tests send many bad secrets from one address on purpose; tests/it/limits.rs
        // covers the lockout.
        let brute_force = if extra.contains("[brute_force]") {
            ""
        } else {
            "[brute_force]\nmax_failures = 1000000\n"
        };
        let admin = if extra.contains("[admin]") {
            ""
        } else {
            "[admin]\nlisten = \"127.0.0.1:0\"\n"
        };
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"{listen_in_file}\"\nshutdown_grace = \"2s\"\n{server}\n\n[store]\nurl = \"sqlite://{}\"\npoll_interval = \"100ms\"\n\n{brute_force}{admin}\n{extra}\n\n[[routes]]\npath = \"/{{org}}/{{repo}}/**\"\nupstream = \"git-http-backend:{}\"\nrules = \"git\"\n",
                dir.path().join("patgate.db").display(),
                repos.display()
            ),
        )
        .unwrap();
        let (child, addr, admin, log) = launch(&config, env);
        TestPatgate {
            dir,
            addr,
            admin,
            config,
            child,
            log,
        }
    }

    /// Kills the process at once (SIGKILL: nothing is drained or flushed) and waits for it.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts a new process on the same config and store, once this one has ended
    /// ([`TestPatgate::kill9`], [`TestPatgate::terminate`]); its addresses are new.
    pub fn restart(&mut self) {
        assert!(self.child.try_wait().unwrap().is_some(), "patgate still runs");
        let (child, addr, admin, log) = launch(&self.config, &[]);
        (self.child, self.addr, self.admin, self.log) = (child, addr, admin, log);
    }

    pub fn repos(&self) -> PathBuf {
        self.dir.path().join("repos")
    }

    pub fn url(&self, userinfo: &str, path: &str) -> String {
        format!("http://{userinfo}{}{path}", self.addr)
    }

    /// Sends SIGTERM and waits for the process to end; its exit status and the time it took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        let ok = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
        let deadline = started + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(Instant::now() < deadline, "patgate did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGHUP: reload the config file. Returns once the log says how it went, with
    /// the line ("Configuration reloaded" or "Reload refused").
    pub fn reload(&self) -> String {
        let before = self.log().matches("Configuration reloaded").count() + self.log().matches("Reload refused").count();
        let ok = Command::new("kill").arg("-HUP").arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("Configuration reloaded") || l.contains("Reload refused"))
                .collect();
            if lines.len() > before {
                return lines[lines.len() - 1].to_owned();
            }
            assert!(Instant::now() < deadline, "no reload in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to 5 s for `needle` to appear in the log (it is read by another thread).
    pub fn log_shows(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Runs a CLI command against this instance's store.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN).arg("--config").arg(&self.config).args(args).output().unwrap()
    }

    pub fn mint(&self, scopes: &str, orgs: &str, expires_in: &str) -> Minted {
        self.mint_for("alice", scopes, orgs, expires_in)
    }

    /// Mints a token for `owner` with the CLI, on the store.
    pub fn mint_for(&self, owner: &str, scopes: &str, orgs: &str, expires_in: &str) -> Minted {
        let out = self.cli(&[
            "token",
            "create",
            "--name",
            "test",
            "--owner",
            owner,
            "--scopes",
            scopes,
            "--orgs",
            orgs,
            "--expires-in",
            expires_in,
            "--json",
        ]);
        assert!(
            out.status.success(),
            "token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v["expires_at"].is_string());
        Minted {
            id: v["id"].as_str().unwrap().to_owned(),
            token: v["token"].as_str().unwrap().to_owned(),
        }
    }

    /// Mints a token and waits until the running server admits it.
    pub fn mint_live(&self, scopes: &str, orgs: &str) -> Minted {
        self.mint_live_for(scopes, orgs, "1h")
    }

    /// Mints a token with a lifespan and waits until the running server admits it.
    pub fn mint_live_for(&self, scopes: &str, orgs: &str, expires_in: &str) -> Minted {
        // Asked through the admin API's readiness (how many tokens it holds) where there is
        // one: a probe with the new token, failing until it is loaded, would count against
        // this address's failed authentications.
        let before = self.admin.map(|_| self.loaded_tokens());
        let m = self.mint(scopes, orgs, expires_in);
        let deadline = Instant::now() + Duration::from_secs(5);
        if let Some(before) = before {
            while self.loaded_tokens() <= before {
                assert!(Instant::now() < deadline, "token never became live");
                std::thread::sleep(Duration::from_millis(20));
            }
            return m;
        }
        loop {
            let r = http(
                self.addr,
                &format!(
                    "GET /nope-org/x.git/HEAD HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                    m.token
                ),
            );
            if r.status != 401 {
                return m;
            }
            assert!(Instant::now() < deadline, "token never became live");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Mints a token for `owner` with the CLI and waits until the admin API admits it.
    pub fn mint_caller(&self, owner: &str, scopes: &str) -> Minted {
        let before = self.loaded_tokens();
        let m = self.mint_for(owner, scopes, "*", "1h");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.loaded_tokens() <= before {
            assert!(Instant::now() < deadline, "token never became live");
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    /// The admin API's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.expect("the admin API is not enabled")
    }

    /// One admin API request: `Authorization: Bearer TOKEN` when given, and a JSON body.
    pub fn api(&self, method: &str, path: &str, token: Option<&str>, body: Option<&serde_json::Value>) -> Api {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n");
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        self.api_raw(format!("{head}{body}").as_bytes())
    }

    /// How many live tokens the running server holds (its admin API's readiness answer).
    pub fn loaded_tokens(&self) -> u64 {
        let r = self.api("GET", "/admin/v1/ready", None, None);
        r.json["tokens"].as_u64().unwrap_or_else(|| panic!("no token count in {}", r.json))
    }

    /// True once the running server holds `token` in memory: its admin API no longer
    /// answers 401 to it (for listeners a plain-HTTP probe cannot reach).
    pub fn admin_sees(&self, token: &str) -> bool {
        self.api("GET", "/admin/v1/tokens", Some(token), None).status != 401
    }

    /// Sends raw bytes to the admin API and reads its JSON answer.
    pub fn api_raw(&self, raw: &[u8]) -> Api {
        Api::from(http_bytes(self.admin_addr(), raw))
    }

    /// Creates `repos/{org}/{name}.git` with one commit on `main`.
    pub fn init_repo(&self, org: &str, name: &str) -> PathBuf {
        let bare = self.repos().join(org).join(format!("{name}.git"));
        std::fs::create_dir_all(&bare).unwrap();
        run_git(&self.repos(), &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()]);
        let work = self.dir.path().join(format!("seed-{org}-{name}"));
        run_git(self.dir.path(), &["init", "-q", "-b", "main", work.to_str().unwrap()]);
        std::fs::write(work.join("README"), "hello\n").unwrap();
        run_git(&work, &["add", "README"]);
        run_git(&work, &["commit", "-q", "-m", "init"]);
        run_git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
        bare
    }
}

impl Drop for TestPatgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `patgate serve` on `config` and waits until it listens: the process, the proxy's
/// and the admin API's addresses, and its log as it is read.
fn launch(config: &Path, env: &[(&str, &str)]) -> (Child, SocketAddr, Option<SocketAddr>, Arc<Mutex<String>>) {
    let mut cmd = match env.iter().find(|(k, _)| *k == "PATGATE_TEST_NOFILE") {
        Some((_, n)) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    cmd.arg("--config")
        .arg(config)
        .arg("serve")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // The admin API announces itself before the proxy's "Listening".
            let mut admin = None;
            let addr_of = |line: &str| {
                let text = line.split("addr=").nth(1).and_then(|r| r.split_whitespace().next());
                let json = line.split("\"addr\":\"").nth(1).and_then(|r| r.split('"').next());
                text.or(json).map(str::to_owned)
            };
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.is_some() && line.contains("Admin API up") {
                    admin = addr_of(&line);
                }
                if line.contains("Listening") {
                    if let Some(addr) = addr_of(&line) {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send((addr, admin.take()));
                        }
                    }
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    let (addr, admin) = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok((a, admin)) => (a.parse().unwrap(), admin.map(|a| a.parse().unwrap())),
        Err(_) => {
            let _ = child.kill();
            panic!("patgate did not start:\n{}", log.lock().unwrap());
        }
    };
    (child, addr, admin, log)
}

/// The result of a git command.
pub struct GitRun {
    pub ok: bool,
    pub stderr: String,
    pub stdout: String,
}

impl GitRun {
    pub fn ok(self) -> GitRun {
        assert!(self.ok, "git failed: {}", self.stderr);
        self
    }
}

/// Runs the real git with no prompts, no user config, and a 120 s limit.
pub fn git(cwd: &Path, args: &[&str]) -> GitRun {
    git_env(cwd, args, &[])
}

/// The real git client with more environment (`GIT_SSL_CAINFO`, say).
pub fn git_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> GitRun {
    let out = Command::new("timeout")
        .arg("120")
        .arg("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ASKPASS", "")
        .env("SSH_ASKPASS", "")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(124), "git {args:?} hung");
    GitRun {
        ok: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
    }
}

fn run_git(cwd: &Path, args: &[&str]) {
    git(cwd, args);
}

/// A parsed HTTP/1.1 answer.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Sends raw bytes and reads one answer (the request should ask to close).
pub fn http(addr: SocketAddr, raw: &str) -> RawResponse {
    http_bytes(addr, raw.as_bytes())
}

pub fn http_bytes(addr: SocketAddr, raw: &[u8]) -> RawResponse {
    http_on(TcpStream::connect(addr).unwrap(), raw)
}

/// A connection to `addr` from the local address `from` (any 127.0.0.0/8 address works on
/// loopback): another client, as patgate counts clients.
pub fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    let s = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        socket.connect(addr).await.unwrap()
    });
    let s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

/// Sends `raw` on `s` and reads one answer.
pub fn http_on(s: TcpStream, raw: &[u8]) -> RawResponse {
    let mut c = Conn::on(s);
    c.s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.head = raw.starts_with(b"HEAD ");
    c.s.write_all(raw).unwrap();
    c.answer()
        .unwrap_or_else(|| panic!("no complete answer: {:?}", String::from_utf8_lossy(&c.buf)))
}

// ---------------------------------------------------------------------------------------
// Raw HTTP/1.1 over one connection, answers read one by one (keep-alive and pipelining).
// ---------------------------------------------------------------------------------------

/// The one raw HTTP/1.1 client of the tests.
pub struct Conn {
    pub s: TcpStream,
    pub buf: Vec<u8>,
    pub eof: bool,
    /// The next answer is to a HEAD request: no body follows its head.
    pub head: bool,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        Conn::on(TcpStream::connect(addr).unwrap())
    }

    /// The client of a connection already open.
    pub fn on(s: TcpStream) -> Conn {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Conn {
            s,
            buf: Vec::new(),
            eof: false,
            head: false,
        }
    }

    pub fn send(&mut self, raw: &[u8]) -> bool {
        self.s.write_all(raw).is_ok()
    }

    /// Reads more bytes; false at the end of the stream (or a reset, or the read timeout).
    pub fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 16384];
        match self.s.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => {
                self.eof = true;
                false
            }
        }
    }

    /// The next answer, or `None` when the connection ended (or stalled) before a whole one.
    pub fn answer(&mut self) -> Option<RawResponse> {
        loop {
            if let Some((r, used)) = parse_answer(&self.buf, self.eof, self.head) {
                self.buf.drain(..used);
                return Some(r);
            }
            if !self.fill() {
                // Stalled or closed: an answer without framing ends at the close.
                let r = parse_answer(&self.buf, true, self.head);
                if let Some((r, used)) = r {
                    if self.eof {
                        self.buf.drain(..used);
                        return Some(r);
                    }
                }
                return None;
            }
        }
    }

    /// Waits up to `limit` for the server to close the connection; true if it did.
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        self.s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        while Instant::now() < deadline {
            self.fill();
            if self.eof {
                return true;
            }
        }
        false
    }
}

/// Parses one answer from the front of `buf`; the bytes it used. With `at_eof`, an answer
/// with neither length nor chunking ends where the bytes end.
pub fn parse_answer(buf: &[u8], at_eof: bool, head_request: bool) -> Option<(RawResponse, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut r = RawResponse {
        status,
        head,
        body: String::new(),
    };
    let start = end + 4;
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Some((r, start));
    }
    if let Some(len) = r.header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        if buf.len() < start + len {
            return None;
        }
        r.body = String::from_utf8_lossy(&buf[start..start + len]).into_owned();
        return Some((r, start + len));
    }
    if r.header("transfer-encoding").is_some() {
        let mut at = start;
        let mut body = Vec::new();
        loop {
            let line_end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size_text = String::from_utf8_lossy(&buf[at..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                // No trailers from patgate: the final CRLF.
                if buf.len() < at + 2 {
                    return None;
                }
                r.body = String::from_utf8_lossy(&body).into_owned();
                return Some((r, at + 2));
            }
            if buf.len() < at + size + 2 {
                return None;
            }
            body.extend_from_slice(&buf[at..at + size]);
            at += size + 2;
        }
    }
    if at_eof {
        r.body = String::from_utf8_lossy(&buf[start..]).into_owned();
        return Some((r, buf.len()));
    }
    None
}

/// An admin API answer: its status, its JSON body, and the raw answer.
#[derive(Debug)]
pub struct Api {
    pub status: u16,
    pub json: serde_json::Value,
    pub raw: RawResponse,
}

impl Api {
    /// The `error` of an error answer.
    pub fn error(&self) -> &str {
        self.json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in a {} answer: {}", self.status, self.raw.body))
    }
}

impl From<RawResponse> for Api {
    fn from(raw: RawResponse) -> Api {
        let json = serde_json::from_str(&raw.body).unwrap_or_else(|_| panic!("not JSON: {raw:?}"));
        Api {
            status: raw.status,
            json,
            raw,
        }
    }
}

/// What a recording upstream saw of one request: the head as soon as it arrived, the body
/// once it ended (`None` while it still streams in, `Some(Err)` when it ended broken).
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    pub body: Option<Result<Vec<u8>, String>>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect()
    }

    /// The `X-Case` header the hostile-input tables name their requests with.
    pub fn case(&self) -> Option<String> {
        self.header("x-case").into_iter().next()
    }
}

/// The one recording HTTP upstream of the tests: records every request and answers 200
/// "ok" once its body is whole, or never answers when `hang` is set.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    /// What reached the upstream for one `X-Case`.
    pub fn case(&self, case: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.case().as_deref() == Some(case))
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

pub fn spawn_upstream(hang: bool) -> Upstream {
    use http_body_util::BodyExt;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let rec = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let rec = rec.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let rec = rec.clone();
                        async move {
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                                .collect();
                            let index = {
                                let mut r = rec.lock().unwrap();
                                r.push(Seen {
                                    method: req.method().to_string(),
                                    uri: req.uri().to_string(),
                                    headers,
                                    body_len: 0,
                                    body: None,
                                });
                                r.len() - 1
                            };
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .map_err(|e| e.to_string());
                            {
                                let mut r = rec.lock().unwrap();
                                r[index].body_len = body.as_ref().map_or(0, Vec::len);
                                r[index].body = Some(body);
                            }
                            if hang {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
                                b"ok\n",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
    });
    Upstream { addr, seen }
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
