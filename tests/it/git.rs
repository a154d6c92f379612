//! The real git client against `patgate serve` with the built-in git upstream.

use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn clone_with_a_read_token_works_in_both_url_forms() {
    let p = TestPatgate::start("");
    p.init_repo("acme", "demo");
    let t = p.mint_live("code:read", "acme");
    let work = p.dir.path();
    // The token as the password, with any username.
    git(
        work,
        &["clone", "-q", &p.url(&format!("build:{}@", t.token), "/acme/demo.git"), "c1"],
    )
    .ok();
    assert_eq!(std::fs::read_to_string(work.join("c1/README")).unwrap(), "hello\n");
    // The token as the username.
    git(work, &["clone", "-q", &p.url(&format!("{}@", t.token), "/acme/demo.git"), "c2"]).ok();
    assert!(work.join("c2/README").exists());
    // Through a credential helper, with a plain URL.
    let helper = format!("!f() {{ echo username=ci; echo password={}; }}; f", t.token);
    git(
        work,
        &[
            "-c",
            &format!("credential.helper={helper}"),
            "clone",
            "-q",
            &p.url("", "/acme/demo.git"),
            "c3",
        ],
    )
    .ok();
    assert!(work.join("c3/README").exists());
    assert!(!p.log().contains(&t.token), "the secret reached the log");
}

#[test]
fn push_needs_code_write() {
    let p = TestPatgate::start("");
    let bare = p.init_repo("acme", "demo");
    let reader = p.mint_live("code:read", "acme");
    let writer = p.mint_live("code:write", "acme");
    let work = p.dir.path();
    git(
        work,
        &["clone", "-q", &p.url(&format!("x:{}@", reader.token), "/acme/demo.git"), "w"],
    )
    .ok();
    let w = work.join("w");
    // A few MiB of incompressible data: git sends it chunked.
    let mut data = Vec::with_capacity(3 << 20);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    while data.len() < 3 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(w.join("blob.bin"), &data).unwrap();
    git(&w, &["add", "blob.bin"]).ok();
    git(&w, &["commit", "-q", "-m", "add blob"]).ok();

    let denied = git(&w, &["push", "-q", "origin", "main"]);
    assert!(!denied.ok, "push with code:read succeeded");
    assert!(denied.stderr.contains("403"), "{}", denied.stderr);

    let url = p.url(&format!("x:{}@", writer.token), "/acme/demo.git");
    git(&w, &["push", "-q", &url, "main"]).ok();
    let local = git(&w, &["rev-parse", "HEAD"]).ok().stdout;
    let remote = git(&bare, &["rev-parse", "main"]).ok().stdout;
    assert_eq!(local.trim(), remote.trim());
    assert!(
        p.log_shows("POST url.path=/acme/demo.git/git-receive-pack http.version=HTTP/1.1 http.status=200"),
        "{}",
        p.log()
    );
}

#[test]
fn no_token_gets_401_and_git_fails_without_hanging() {
    let p = TestPatgate::start("");
    p.init_repo("acme", "demo");
    let started = Instant::now();
    let r = git(p.dir.path(), &["clone", "-q", &p.url("", "/acme/demo.git"), "c"]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("could not read Username") || r.stderr.contains("Authentication failed"),
        "{}",
        r.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(p.log_shows("http.status=401"), "{}", p.log());
}

#[test]
fn a_token_for_another_organization_gets_403() {
    let p = TestPatgate::start("");
    p.init_repo("acme", "demo");
    p.init_repo("other", "demo");
    let t = p.mint_live("code:read", "other");
    let r = git(
        p.dir.path(),
        &["clone", "-q", &p.url(&format!("x:{}@", t.token), "/acme/demo.git"), "c"],
    );
    assert!(!r.ok);
    assert!(r.stderr.contains("403"), "{}", r.stderr);
    // The same token reads its own organization.
    git(
        p.dir.path(),
        &["clone", "-q", &p.url(&format!("x:{}@", t.token), "/other/demo.git"), "d"],
    )
    .ok();
}

#[test]
fn an_expired_token_gets_401() {
    let p = TestPatgate::start("");
    p.init_repo("acme", "demo");
    // Live in the server first, so that the expiry itself is what refuses it.
    let t = p.mint_live_for("code:read", "acme", "3s");
    std::thread::sleep(Duration::from_millis(3100));
    let r = git(
        p.dir.path(),
        &["clone", "-q", &p.url(&format!("x:{}@", t.token), "/acme/demo.git"), "c"],
    );
    assert!(!r.ok);
    assert!(
        r.stderr.contains("401") || r.stderr.contains("Authentication failed"),
        "{}",
        r.stderr
    );
    assert!(p.log_shows("reason=expired token"), "{}", p.log());
}

#[test]
fn a_token_revoked_with_the_cli_is_refused_within_a_second() {
    let p = TestPatgate::start("");
    p.init_repo("acme", "demo");
    let t = p.mint_live("code:read", "acme");
    let req = format!(
        "GET /acme/demo.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        basic("", &t.token)
    );
    assert_eq!(http(p.addr, &req).status, 200);
    let out = p.cli(&["token", "revoke", &t.id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let revoked = Instant::now();
    loop {
        if http(p.addr, &req).status == 401 {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "still admitted after {:?}",
            revoked.elapsed()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = git(
        p.dir.path(),
        &["clone", "-q", &p.url(&format!("x:{}@", t.token), "/acme/demo.git"), "c"],
    );
    assert!(!r.ok);
}

#[test]
fn a_stalled_upload_cannot_hold_the_git_backend() {
    let p = TestPatgate::start("[upstream]\nresponse_timeout = \"1s\"\n\n[git]\nmax_processes = 1\n");
    p.init_repo("acme", "demo");
    let t = p.mint_live("code:read", "acme");
    // Announce a body and never send it: git waits for it, patgate does not wait for git.
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    use std::io::Write;
    write!(
        s,
        "POST /acme/demo.git/git-upload-pack HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\nContent-Type: application/x-git-upload-pack-request\r\nContent-Length: 100000\r\n\r\n",
        t.token
    )
    .unwrap();
    // git answers its headers first, then waits for the body: patgate cuts it after 1 s of silence.
    let mut answer = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let ended = std::io::Read::read_to_end(&mut s, &mut answer);
    assert!(ended.is_ok(), "the connection was not closed: {ended:?}");
    assert!(p.log_shows("git http-backend silent too long"), "{}", p.log());
    // The only process slot is free again.
    git(
        p.dir.path(),
        &["clone", "-q", &p.url(&format!("x:{}@", t.token), "/acme/demo.git"), "c"],
    )
    .ok();
}

#[test]
fn a_slow_upload_is_not_cut_while_bytes_flow() {
    let p = TestPatgate::start("[upstream]\nresponse_timeout = \"1s\"\n");
    p.init_repo("acme", "demo");
    let t = p.mint_live("code:write", "acme");
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    use std::io::Write;
    write!(
        s,
        "POST /acme/demo.git/git-receive-pack HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\nContent-Type: application/x-git-receive-pack-request\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        t.token
    )
    .unwrap();
    // One pkt-line announced as 256 bytes, sent a byte every 100 ms for 3 s: git waits, bytes flow.
    s.write_all(b"4\r\n0100\r\n").unwrap();
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(b"1\r\na\r\n").unwrap();
    }
    assert!(!p.log().contains("silent too long"), "{}", p.log());
    let _ = s.write_all(b"0\r\n\r\n");
}
