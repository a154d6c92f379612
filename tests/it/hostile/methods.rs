//! Category 4, methods and request-target forms: `OPTIONS` (also `*`), `TRACE`, `CONNECT`
//! (authority and origin form), absolute-form targets, unknown and lower-case methods, a
//! method override header, WebDAV methods on a repository, and push endpoints reached with
//! an unexpected method, sent by a reader (agentpools:read, code:read) or a manager
//! (agentpools:manage, code:write). What the rules do not grant gets 400, 403 or 405 and
//! reaches neither the upstream nor git; a HEAD reaches the upstream as a HEAD.

use std::net::SocketAddr;

use super::harness::*;
use crate::support::*;

#[test]
fn on_an_http_route() {
    let gate = Gate::start();
    let (r, m) = reader_and_manager(&gate.p);
    let mut bad = run_http_table(gate.p.addr, &gate.rec, &http_cases(gate.p.addr, &r, &m), None);
    if let Some(g) = gate.rec.case("4.16-head-reader").first() {
        if g.method != "HEAD" {
            bad.push(format!("HEAD reached the upstream as {}", g.method));
        }
    }
    assert_no_failures("methods", &bad);
}

#[test]
fn on_the_git_route() {
    let gate = Gate::start();
    let (r, m) = reader_and_manager(&gate.p);
    let cases = git_cases(gate.p.addr, &r, &m);
    assert_no_failures("methods on git", &run_git_table(gate.p.addr, &gate.git, &cases));
}

/// The credential lines of a reader and of a manager of `acme`.
fn reader_and_manager(p: &TestPatgate) -> (String, String) {
    let reader = live(p, "alice", "agentpools:read,code:read", "acme").token;
    let manager = live(p, "bob", "agentpools:manage,code:write", "acme").token;
    (bearer(&reader), bearer(&manager))
}

/// Requests to the agents route of patgate at `here`, as the reader `r` or the manager `m`.
fn http_cases(here: SocketAddr, r: &str, m: &str) -> Vec<Case> {
    let x = "/acme/agents/x";
    vec![
        row("4.01-options", "OPTIONS", x, m, 403),
        row("4.02-options-star", "OPTIONS", "*", m, 400),
        row("4.03-trace", "TRACE", x, m, 405),
        row("4.04-connect-authority", "CONNECT", &here.to_string(), m, 400),
        row("4.05-connect-origin", "CONNECT", x, m, 405),
        row("4.06-absolute-self", "GET", &format!("http://{here}{x}"), r, 400),
        row("4.07-absolute-other", "GET", &format!("http://evil.example{x}"), r, 400),
        row("4.08-absolute-upper", "GET", &format!("HTTP://evil.example{x}"), r, 400),
        row("4.09-patch", "PATCH", x, m, 403),
        row("4.10-unknown-method", "FOO", x, m, 403),
        row("4.11-lower-get", "get", x, r, 403),
        row(
            "4.12-method-override",
            "POST",
            x,
            &format!("{r}X-HTTP-Method-Override: GET\r\nContent-Length: 0\r\n"),
            403,
        ),
        row("4.13-delete-reader", "DELETE", x, r, 403),
        case(
            "4.14-put-reader",
            req("PUT", x, "4.14-put-reader", &format!("{r}Content-Length: 2\r\n"), b"{}"),
            403,
        ),
        row("4.15-delete-manager", "DELETE", x, m, 200),
        row("4.16-head-reader", "HEAD", x, r, 200),
    ]
}

/// Requests to `acme/demo.git` on patgate at `here`, as the reader `r` or the manager `m`.
fn git_cases(here: SocketAddr, r: &str, m: &str) -> Vec<Case> {
    let rp = "/acme/demo.git/git-receive-pack";
    let m_empty = format!("{m}Content-Length: 0\r\n");
    vec![
        row("4.17-git-put-receive", "PUT", rp, &m_empty, 403),
        row("4.18-git-get-receive", "GET", rp, m, 403),
        row("4.19-git-delete-refs", "DELETE", "/acme/demo.git/info/refs", m, 403),
        row("4.20-git-options", "OPTIONS", INFO_REFS, r, 403),
        row(
            "4.21-git-head-receive",
            "HEAD",
            "/acme/demo.git/info/refs?service=git-receive-pack",
            r,
            403,
        ),
        row("4.22-git-trace", "TRACE", INFO_REFS, r, 405),
        row("4.23-git-propfind", "PROPFIND", "/acme/demo.git/", m, 403),
        row("4.24-git-mkcol", "MKCOL", "/acme/demo.git/objects/ab/", m, 403),
        row(
            "4.25-git-put-object",
            "PUT",
            "/acme/demo.git/objects/ab/cdef0123456789abcdef0123456789abcdef01",
            &m_empty,
            403,
        ),
        row("4.26-git-absolute", "GET", &format!("http://{here}{INFO_REFS}"), r, 400),
        row("4.27-git-post-refs", "POST", INFO_REFS, &m_empty, 403),
    ]
}
