//! The web token console in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs), driven over WebDriver with fantoccini:
//! sign-in, create (the secret shown once), a real `git clone` with the new token, edit,
//! regenerate, revoke, a policy error next to its field, CSRF, a cross-site form post,
//! session expiry and sign-out. Screenshots of the main pages go to
//! `target/console-screenshots/`. The tests fail, never skip, without the browser.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::support::*;

const INSTALL: &str = "the console tests need Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver (bash .ci/run installs them)";

/// The path of `name` on PATH (or in /usr/bin).
fn tool(name: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/lib/chromium")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: {INSTALL}"))
}

/// A chromedriver and one headless Chromium session; both end on drop.
struct Browser {
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let chromium = tool("chromium");
        let chromedriver = tool("chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--window-size=1000,720", "--lang=en-US",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let serde_json::Value::Object(caps) = caps else { unreachable!() };
        let mut last = String::new();
        // chromedriver takes no port 0: take a free port, let it go, and retry on a race.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut driver = Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("chromedriver did not start ({e}): {INSTALL}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut up = false;
            while Instant::now() < deadline {
                if driver.try_wait().unwrap().is_some() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            if !up {
                let _ = driver.kill();
                let _ = driver.wait();
                last = format!("chromedriver did not listen on port {port}");
                continue;
            }
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => {
                    return Browser {
                        client: Some(client),
                        driver,
                        _profile: profile,
                    }
                }
                Err(e) => {
                    let _ = driver.kill();
                    let _ = driver.wait();
                    last = format!("no browser session: {e}");
                }
            }
        }
        panic!("{last}: {INSTALL}");
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// Ends the browser session (Chromium exits with it).
    async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }

    async fn goto(&self, url: &str) {
        self.c().goto(url).await.unwrap();
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    async fn js(&self, script: &str) -> Value {
        self.c().execute(script, vec![]).await.unwrap()
    }

    /// Waits up to 20 s for `script` to return true.
    async fn until(&self, script: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.js(script).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let body = self.js("return document.body.innerText").await;
                panic!(
                    "timed out waiting for {what}; the page shows:\n{}",
                    body.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn visible(&self, id: &str) {
        let script =
            format!("const e = document.getElementById('{id}'); return !!e && e.getClientRects().length > 0 && !e.closest('[hidden]');");
        self.until(&script, &format!("#{id} to show")).await;
    }

    async fn click(&self, css: &str) {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    async fn type_into(&self, id: &str, text: &str) {
        let e = self.c().find(Locator::Id(id)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    async fn text(&self, id: &str) -> String {
        let v = self.js(&format!("return document.getElementById('{id}').textContent")).await;
        v.as_str().unwrap_or_default().to_owned()
    }

    async fn value(&self, id: &str) -> String {
        let v = self.js(&format!("return document.getElementById('{id}').value")).await;
        v.as_str().unwrap_or_default().to_owned()
    }

    async fn dialog_open(&self, id: &str) -> bool {
        self.js(&format!("return document.getElementById('{id}').open")).await == json!(true)
    }

    /// The session cookie, as the browser holds it (HttpOnly: the page cannot read it).
    async fn session_cookie(&self) -> String {
        let cookies = self.c().get_all_cookies().await.unwrap();
        let c = cookies
            .iter()
            .find(|c| c.name() == "patgate_session")
            .expect("the session cookie is set");
        assert_eq!(c.http_only(), Some(true));
        assert_eq!(format!("{:?}", c.same_site()), "Some(Strict)");
        c.value().to_owned()
    }

    /// Saves a PNG of the page under target/console-screenshots/.
    async fn screenshot(&self, name: &str) {
        let png = self.c().screenshot().await.unwrap();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
        let dir = target.join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn sign_in(&self, token: &str) {
        self.visible("sign-in-token").await;
        self.type_into("sign-in-token", token).await;
        self.click("#sign-in-submit").await;
        self.visible("list-view").await;
    }

    /// Records the text of every answer the page's own fetches get from now on.
    async fn record_answers(&self) {
        self.js(
            "window.__answers = []; const f = window.__realFetch || window.fetch; window.__realFetch = f; \
             window.fetch = async (...a) => { const r = await f(...a); r.clone().text().then(t => window.__answers.push(t)); return r; }; \
             return true;",
        )
        .await;
    }

    async fn answers(&self) -> Vec<String> {
        let v = self.js("return window.__answers || []").await;
        v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect()
    }

    /// Reads the secret out of the open secret dialog, checks the dialog, then closes it.
    async fn take_secret(&self) -> String {
        self.visible("secret-dialog").await;
        let secret = self.value("secret-value").await;
        assert!(secret.starts_with("patg_"), "{secret}");
        assert!(self.text("secret-warning").await.contains("will not be shown again"));
        assert!(self.text("use-password").await.contains(&secret));
        assert!(self.text("use-url").await.contains(&format!("https://{secret}@")));
        secret
    }

    async fn close_secret(&self, secret: &str) {
        self.click("#secret-close").await;
        // The close event (where the page also forgets the secret) comes in a task of its own.
        self.until(
            "return !document.getElementById('secret-dialog').open && document.getElementById('secret-value').value === ''",
            "the secret dialog to close",
        )
        .await;
        let html = self.c().source().await.unwrap();
        assert!(!html.contains(secret), "the secret stays in the page after its dialog closed");
        let shown = self
            .js("return document.body.innerText + document.getElementById('secret-value').value")
            .await;
        assert!(!shown.as_str().unwrap().contains(secret));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// An admin API request with the session cookie, and `X-CSRF-Token` when given.
fn with_cookie(p: &TestPatgate, method: &str, path: &str, cookie: &str, csrf: Option<&str>, body: Option<&Value>) -> Api {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nCookie: patgate_session={cookie}\r\n");
    if let Some(c) = csrf {
        head.push_str(&format!("X-CSRF-Token: {c}\r\n"));
    }
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    p.api_raw(format!("{head}{body}").as_bytes())
}

/// The status of a git fetch's first request with `token` (as git sends it: Basic).
fn git_status(p: &TestPatgate, token: &str) -> u16 {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x:{token}"));
    http(
        p.addr,
        &format!("GET /acme/demo.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {basic}\r\nConnection: close\r\n\r\n"),
    )
    .status
}

/// Serves `html` to every request on a port of its own: another origin than the console's.
fn serve_page(html: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    addr
}

/// Whether `html` has an attribute such as `onclick=`.
fn has_handler(html: &str) -> bool {
    html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let name = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        name > 0 && rest[name..].starts_with('=')
    })
}

const POLICY: &str = "[policy]\nmax_lifespan = \"100d\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_create_use_edit_regenerate_revoke_in_chromium() {
    let started = Instant::now();
    let p = TestPatgate::start(POLICY);
    p.init_repo("acme", "demo");
    let alice = p.mint_caller("alice", "code:write,tokens:manage");
    let console = format!("http://{}/console/", p.admin_addr());
    let b = Browser::start().await;

    // Sign in: the pasted token becomes a session cookie; the page keeps no token.
    b.goto(&console).await;
    b.visible("sign-in-view").await;
    b.screenshot("sign-in").await;
    b.sign_in(&alice.token).await;
    let cookie = b.session_cookie().await;
    assert!(b.text("who").await.contains("alice"));
    let stored = b
        .js("return JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + location.href")
        .await;
    assert!(
        !stored.as_str().unwrap().contains(&alice.token),
        "the token was kept by the browser"
    );
    assert!(!b.c().source().await.unwrap().contains(&alice.token));

    // New token: code:write on acme, 30 days.
    b.record_answers().await;
    b.click("#new-token").await;
    b.visible("token-dialog").await;
    b.until(
        "return document.activeElement.id === 'tf-name'",
        "focus in the dialog's first field",
    )
    .await;
    // Least privilege: alice's token holds no agentpools scope, so she cannot grant one.
    let offered = b
        .js("return [...document.querySelectorAll('#tf-scopes input:not([disabled])')].map(i => i.value).filter(v => v).join(' ')")
        .await;
    assert_eq!(offered, json!("code:read code:write tokens:read tokens:manage"));
    assert!(
        b.js("return document.getElementById('tf-full-label').hidden").await == json!(true),
        "policy.allow_full is off"
    );
    b.type_into("tf-name", "ci").await;
    b.type_into("tf-orgs", "acme").await;
    b.type_into("tf-allow-from", "127.0.0.0/8").await;
    b.click("input[name='scope-code'][value='code:write']").await;
    b.screenshot("new-token").await;
    b.click("#tf-submit").await;
    let secret = b.take_secret().await;
    b.screenshot("secret").await;
    b.close_secret(&secret).await;
    // Focus returns to the button that opened the dialog.
    b.until("return document.activeElement.id === 'new-token'", "focus back on New token")
        .await;
    b.visible("token-rows").await;
    b.until(
        "return [...document.querySelectorAll('#token-rows th')].some(th => th.textContent === 'ci')",
        "the new token in the list",
    )
    .await;
    b.screenshot("list").await;

    // The one answer with the secret was the create; every later one is without it.
    let answers = b.answers().await;
    assert_eq!(answers.iter().filter(|a| a.contains(&secret)).count(), 1, "{answers:?}");
    b.js("window.__answers = []; return true").await;
    b.click("#filter-apply").await;
    b.until("return window.__answers.length > 0", "the list to reload").await;
    let list = with_cookie(&p, "GET", "/admin/v1/tokens", &cookie, None, None);
    assert_eq!(list.status, 200);
    assert!(!list.raw.body.contains(&secret));
    let id = list.json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .unwrap();

    // The token works with the real git client through the proxy.
    let work = p.dir.path();
    git(work, &["clone", "-q", &p.url(&format!("x:{secret}@"), "/acme/demo.git"), "c1"]).ok();
    assert!(work.join("c1/README").exists());

    // Edit: rename and narrow to code:read.
    b.click(&format!("#token-rows tr[data-id='{id}'] button.edit")).await;
    b.visible("token-dialog").await;
    assert_eq!(b.value("tf-name").await, "ci");
    let checked = b
        .js("return document.querySelector(\"input[name='scope-code']:checked\").value")
        .await;
    assert_eq!(checked, json!("code:write"), "the dialog shows the token's scopes");
    b.type_into("tf-name", "ci-read").await;
    b.click("input[name='scope-code'][value='code:read']").await;
    b.click("#tf-submit").await;
    b.until("return !document.getElementById('token-dialog').open", "the edit to save")
        .await;
    b.until(
        &format!("const r = document.querySelector(\"#token-rows tr[data-id='{id}']\"); return !!r && r.querySelector('th').textContent === 'ci-read' && r.querySelector('.scopes').textContent === 'code:read';"),
        "the edited row",
    )
    .await;
    let t = with_cookie(&p, "GET", &format!("/admin/v1/tokens/{id}"), &cookie, None, None);
    assert_eq!(
        (t.json["name"].as_str(), &t.json["scopes"]),
        (Some("ci-read"), &json!(["code:read"]))
    );
    assert_eq!(t.json["allow_from"], json!(["127.0.0.0/8"]), "an unchanged limit is left alone");

    // A policy error shows next to its field: a date beyond policy.max_lifespan (100d).
    b.click("#new-token").await;
    b.visible("token-dialog").await;
    b.type_into("tf-name", "too-long").await;
    b.type_into("tf-orgs", "acme").await;
    b.click("input[name='scope-code'][value='code:read']").await;
    b.js("const s = document.getElementById('tf-expiry'); s.value = 'custom'; s.dispatchEvent(new Event('change')); document.getElementById('tf-date').value = '2099-01-01'; return true;")
        .await;
    b.click("#tf-submit").await;
    b.until(
        "return document.getElementById('err-expires').textContent !== ''",
        "the expiry error",
    )
    .await;
    assert!(
        b.text("err-expires").await.starts_with("policy.max_lifespan:"),
        "{}",
        b.text("err-expires").await
    );
    assert_eq!(b.text("err-form").await, "");
    assert!(b.dialog_open("token-dialog").await, "the dialog stays open to fix the field");
    b.screenshot("policy-error").await;
    // Esc closes a dialog.
    b.c().active_element().await.unwrap().send_keys("\u{e00c}").await.unwrap();
    b.until("return !document.getElementById('token-dialog').open", "Esc to close the dialog")
        .await;

    // A field the API cannot read is named, and shown under that field.
    b.click("#new-token").await;
    b.visible("token-dialog").await;
    b.type_into("tf-name", "bad-range").await;
    b.type_into("tf-orgs", "acme").await;
    b.type_into("tf-allow-from", "not-an-address").await;
    b.click("input[name='scope-code'][value='code:read']").await;
    b.click("#tf-submit").await;
    b.until(
        "return document.getElementById('err-allow_from').textContent !== ''",
        "the address error",
    )
    .await;
    assert!(
        b.text("err-allow_from").await.starts_with("allow_from"),
        "{}",
        b.text("err-allow_from").await
    );
    assert_eq!(b.text("err-form").await, "");
    b.click("#tf-cancel").await;
    b.until("return !document.getElementById('token-dialog').open", "Cancel to close the dialog")
        .await;

    // Regenerate: a new secret, shown once; the old one is refused at once.
    b.click(&format!("#token-rows tr[data-id='{id}'] button.regenerate")).await;
    b.visible("confirm-dialog").await;
    b.click("#confirm-ok").await;
    let fresh = b.take_secret().await;
    assert_ne!(fresh, secret);
    b.close_secret(&fresh).await;
    assert_eq!(git_status(&p, &secret), 401, "the old secret is refused");
    assert_eq!(git_status(&p, &fresh), 200, "the new secret works");

    // Rotate: a new secret and a new expiry; the secret before it must not be shown again
    // (presenting it would revoke the token: rotation's reuse detection).
    b.click(&format!("#token-rows tr[data-id='{id}'] button.rotate")).await;
    b.visible("confirm-dialog").await;
    assert!(b.text("confirm-text").await.contains("expires in 30 days"));
    b.click("#confirm-ok").await;
    let live = b.take_secret().await;
    assert!(live != fresh && live != secret);
    b.close_secret(&live).await;
    assert_eq!(git_status(&p, &live), 200, "the rotated secret works");

    // CSRF: a write with the session cookie needs the session's X-CSRF-Token.
    let revoke = format!("/admin/v1/tokens/{id}/revoke");
    for csrf in [None, Some("wrong")] {
        let a = with_cookie(&p, "POST", &revoke, &cookie, csrf, None);
        assert_eq!((a.status, a.error()), (403, "csrf: missing or wrong X-CSRF-Token"), "{csrf:?}");
    }
    // A form on another origin posting with the browser's cookie is refused too.
    let admin = p.admin_addr();
    let page = serve_page(format!(
        "<!doctype html><form id=f method=post action=\"http://{admin}/admin/v1/owners/alice/revoke\"><button id=go>go</button></form>"
    ));
    b.goto(&format!("http://{page}/")).await;
    b.click("#go").await;
    b.until("return document.body.innerText.includes('error')", "the cross-site post's answer")
        .await;
    let shown = b.js("return document.body.innerText").await;
    assert!(shown.as_str().unwrap().contains("requests from web pages"), "{shown}");
    assert_eq!(git_status(&p, &live), 200, "nothing was revoked");

    // Revoke through the confirmation dialog: the next git request is refused.
    b.goto(&console).await;
    b.visible("list-view").await;
    b.click(&format!("#token-rows tr[data-id='{id}'] button.revoke")).await;
    b.visible("confirm-dialog").await;
    assert!(b.text("confirm-text").await.contains("ci-read"));
    b.click("#confirm-ok").await;
    b.until(
        &format!("return !document.querySelector(\"#token-rows tr[data-id='{id}']\")"),
        "the revoked token to leave the active list",
    )
    .await;
    assert_eq!(git_status(&p, &live), 401, "a revoked token is refused");
    let denied = git(work, &["clone", "-q", &p.url(&format!("x:{live}@"), "/acme/demo.git"), "c2"]);
    assert!(
        !denied.ok && (denied.stderr.contains("401") || denied.stderr.contains("Authentication failed")),
        "{}",
        denied.stderr
    );

    // Sign out: the session ends on the server too.
    b.click("#sign-out").await;
    b.visible("sign-in-view").await;
    assert_eq!(with_cookie(&p, "GET", "/admin/v1/tokens", &cookie, None, None).status, 401);
    for s in [&alice.token, &secret, &fresh, &live] {
        assert!(!p.log().contains(s.as_str()), "a secret reached the log");
    }
    assert!(!p.log().contains(&cookie), "the session id reached the log");
    b.close().await;
    eprintln!("console end-to-end flow: {:.1}s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_admins_see_every_owner_and_revoke_all_of_one() {
    let p = TestPatgate::start("");
    let root = p.mint_caller("root", "tokens:admin");
    let bob = p.mint_caller("bob", "code:read");
    let b = Browser::start().await;
    b.goto(&format!("http://{}/console/", p.admin_addr())).await;
    b.sign_in(&root.token).await;
    // Admins list every owner, and may pick one.
    b.visible("owner-filter").await;
    b.until(
        &format!("return !!document.querySelector(\"#token-rows tr[data-id='{}']\")", bob.id),
        "bob's token in root's list",
    )
    .await;
    b.type_into("filter-owner", "bob").await;
    b.click("#filter-apply").await;
    b.until(
        &format!("return !document.querySelector(\"#token-rows tr[data-id='{}']\")", root.id),
        "only bob's tokens",
    )
    .await;
    // Revoke all of an owner, after a confirmation.
    b.click("#revoke-owner").await;
    b.visible("confirm-dialog").await;
    assert_eq!(b.value("confirm-owner").await, "bob");
    b.click("#confirm-ok").await;
    b.until(
        "return document.getElementById('list-notice').textContent.includes('Revoked 1 token of bob')",
        "the owner's revoke",
    )
    .await;
    assert_eq!(p.api("GET", "/admin/v1/tokens", Some(&bob.token), None).status, 401);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sessions_end_when_idle() {
    let p = TestPatgate::start("[console]\nsession_idle = \"2s\"\n");
    let alice = p.mint_caller("alice", "tokens:read");
    let b = Browser::start().await;
    b.goto(&format!("http://{}/console/", p.admin_addr())).await;
    b.sign_in(&alice.token).await;
    let cookie = b.session_cookie().await;
    // Read only: nothing to create or change.
    let hidden = b
        .js("return document.getElementById('new-token').hidden && !document.querySelector('#token-rows button')")
        .await;
    assert_eq!(hidden, json!(true));
    // Unused for longer than session_idle, the session ends: the next action signs out.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    b.click("#filter-apply").await;
    b.visible("sign-in-view").await;
    assert!(b.text("sign-in-notice").await.contains("session has ended"));
    assert_eq!(with_cookie(&p, "GET", "/admin/v1/tokens", &cookie, None, None).status, 401);
    b.close().await;
}

#[test]
fn console_answers_carry_the_security_headers() {
    let p = TestPatgate::start("");
    let admin = p.admin_addr();
    let get = |method: &str, path: &str, extra: &str| {
        http(
            admin,
            &format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n{extra}Content-Length: 0\r\n\r\n"),
        )
    };
    let cases = [
        ("GET", "/console/", "", 200),
        ("GET", "/console/console.js", "", 200),
        ("GET", "/console/console.css", "", 200),
        ("GET", "/console", "", 308),
        ("GET", "/console/session", "", 401),
        ("GET", "/console/session", "Cookie: patgate_session=nosuchsession\r\n", 401),
        ("DELETE", "/console/session", "", 204),
        ("GET", "/console/config.json", "", 401),
        ("GET", "/console/nope", "", 404),
        ("POST", "/console/session", "", 415),
    ];
    for (method, path, extra, status) in cases {
        let r = get(method, path, extra);
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{method} {path}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(r.header("referrer-policy").as_deref(), Some("no-referrer"), "{method} {path}");
        assert_eq!(r.header("x-content-type-options").as_deref(), Some("nosniff"), "{method} {path}");
        assert_eq!(r.header("cache-control").as_deref(), Some("no-store"), "{method} {path}");
    }
    let page = get("GET", "/console/", "");
    let page_csp = page.header("content-security-policy");
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(!page.body.contains("style="), "no inline style");
    assert!(!has_handler(&page.body), "no inline event handler");
    assert!(!page.body.contains("<script>"), "no inline script");
    let js = get("GET", "/console/console.js", "");
    assert!(js.header("content-type").unwrap().starts_with("text/javascript"));
    assert!(!js.body.contains("localStorage") && !js.body.contains("sessionStorage"));
    // A sign-in from another origin is refused before the token is read (login CSRF).
    let alice = p.mint_caller("alice", "tokens:read");
    let body = json!({"token": alice.token}).to_string();
    let r = http(
        admin,
        &format!("POST /console/session HTTP/1.1\r\nHost: {admin}\r\nOrigin: http://evil.example\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.header("content-security-policy").as_deref(),
        page_csp.as_deref(),
        "the refusal carries the headers too"
    );
    assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
    // From the listener's own origin it is accepted: the cookie is HttpOnly and SameSite=Strict.
    let r = http(
        admin,
        &format!("POST /console/session HTTP/1.1\r\nHost: {admin}\r\nOrigin: http://{admin}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let cookie = r.header("set-cookie").unwrap();
    assert!(
        cookie.starts_with("patgate_session=") && cookie.contains("; HttpOnly; SameSite=Strict") && !cookie.contains("Secure"),
        "{cookie}"
    );
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (v["owner"].as_str(), v["admin"].as_bool(), v["manage"].as_bool()),
        (Some("alice"), Some(false), Some(false))
    );
    assert!(!r.body.contains(&alice.token));
    // Signing in again from that browser ends the session it held.
    let first = cookie.trim_start_matches("patgate_session=").split(';').next().unwrap().to_owned();
    assert_eq!(with_cookie(&p, "GET", "/console/session", &first, None, None).status, 200);
    let again = http(
        admin,
        &format!("POST /console/session HTTP/1.1\r\nHost: {admin}\r\nCookie: patgate_session={first}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
    );
    assert_eq!(again.status, 201, "{}", again.body);
    let second = again.header("set-cookie").unwrap();
    let second = second.trim_start_matches("patgate_session=").split(';').next().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(with_cookie(&p, "GET", "/console/session", &first, None, None).status, 401);
    assert_eq!(with_cookie(&p, "GET", "/console/session", &second, None, None).status, 200);
    // A token without tokens:read gets no session.
    let reader = p.mint_caller("carol", "code:read");
    let body = json!({"token": reader.token}).to_string();
    let r = http(
        admin,
        &format!("POST /console/session HTTP/1.1\r\nHost: admin\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.header("set-cookie").is_none());
}
