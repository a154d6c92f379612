//! Category 2, paths: dot segments plain and percent-encoded, encoded slashes and
//! backslashes, doubled slashes, `;` parameters, NUL and control bytes, overlong and invalid
//! UTF-8, double encoding, case variants of the git endpoints, and organization segments
//! that differ only by case or encoding. What could be read two ways gets 400; the rest is
//! judged on its one reading, and the upstream reads the path the rules read.

use super::harness::*;
use crate::support::*;

#[test]
fn on_an_http_route() {
    let gate = Gate::start();
    let t = live(&gate.p, "alice", "agentpools:read,code:read", "acme").token;
    let cases = http_cases(&bearer(&t));
    assert_no_failures("paths", &run_http_table(gate.p.addr, &gate.rec, &cases, None));
}

#[test]
fn on_the_git_route() {
    let gate = Gate::start();
    let t = live(&gate.p, "alice", "agentpools:read,code:read", "acme").token;
    let cases = git_cases(&bearer(&t));
    assert_no_failures("paths on git", &run_git_table(gate.p.addr, &gate.git, &cases));
}

/// `%25%32%65` is `%25` (an escaped `%`) followed by `2` and `e` written as escapes of
/// unreserved characters. Normalization decodes the latter and forwards `%252e`: the very
/// double encoding of `.` that patgate refuses when a client sends it as such.
#[test]
fn double_encoding_assembled_by_normalization() {
    let rec = spawn_recorder();
    let p = TestPatgate::start(&agents_route(&rec));
    let auth = bearer(&live(&p, "alice", "agentpools:read", "acme").token);
    let cases = vec![
        row("2.58-assembled-double-dot", "GET", "/acme/agents/%25%32%65%25%32%65/x", &auth, 400),
        row(
            "2.59-assembled-double-slash",
            "GET",
            "/acme/agents/x%25%32%66..%25%32%66other",
            &auth,
            400,
        ),
    ];
    assert_no_failures("assembled double encoding", &run_http_table(p.addr, &rec, &cases, None));
}

/// GETs of the agents route with the credential line `auth`. The targets are sent as
/// written: a control byte, a tab, a space or a non-ASCII letter in one is sent raw.
fn http_cases(auth: &str) -> Vec<Case> {
    let get = |name: &str, target: &str, want: u16| row(name, "GET", target, auth, want);
    vec![
        get("2.01-dotdot", "/acme/agents/../x", 400),
        get("2.02-dot", "/acme/agents/./x", 400),
        get("2.03-dotdot-up", "/acme/agents/../../other/agents/x", 400),
        get("2.04-trailing-dotdot", "/acme/agents/x/..", 400),
        get("2.05-encoded-dotdot", "/acme/agents/%2e%2e/x", 400),
        get("2.06-mixed-dotdot", "/acme/agents/%2E./x", 400),
        get("2.07-mixed-dotdot-2", "/acme/agents/.%2E/x", 400),
        get("2.08-encoded-dot", "/acme/agents/%2e", 400),
        get("2.09-encoded-slash", "/acme/agents%2fx", 400),
        get("2.10-encoded-slash-upper", "/acme%2Fagents/x", 400),
        get("2.11-encoded-backslash", "/acme/agents/%5c..%5cx", 400),
        get("2.12-backslash", "/acme/agents/a\\..\\b", 400),
        get("2.13-double-slash", "/acme//agents/x", 400),
        get("2.14-leading-double-slash", "//acme/agents/x", 400),
        get("2.15-semicolon", "/acme/agents/x;a=b", 400),
        get("2.16-semicolon-segment", "/acme/agents;/x", 400),
        get("2.17-encoded-semicolon", "/acme/agents/x%3bjsessionid=1", 400),
        get("2.18-encoded-nul", "/acme/agents/%00x", 400),
        get("2.19-encoded-crlf", "/acme/agents/%0d%0aX-Patgate-User:%20root", 400),
        get("2.20-encoded-del", "/acme/agents/%7f", 400),
        get("2.21-raw-control", "/acme/agents/\x01x", 400),
        get("2.22-raw-tab", "/acme/agents/\tx", 400),
        get("2.23-overlong-dot", "/acme/agents/%c0%ae%c0%ae/x", 400),
        get("2.24-overlong-3byte", "/acme/agents/%e0%80%ae", 400),
        get("2.25-overlong-slash", "/acme/agents/%c0%af", 400),
        get("2.26-invalid-utf8", "/acme/agents/%ff", 400),
        get("2.27-raw-non-ascii", "/acme/agents/é", 400),
        get("2.28-double-encoded-dots", "/acme/agents/%252e%252e/x", 400),
        get("2.29-double-encoded-slash", "/acme/agents%252fx", 400),
        get("2.30-bare-percent", "/acme/agents/%", 400),
        get("2.31-bad-hex", "/acme/agents/%g1", 400),
        get("2.32-too-long", &format!("/acme/agents/{}", "a".repeat(5000)), 400),
        get("2.33-org-upper", "/ACME/agents/x", 403),
        get("2.34-org-capital", "/Acme/agents/x", 403),
        get("2.35-org-encoded-capital", "/%41cme/agents/x", 403),
        get("2.36-org-encoded", "/%61cme/agents/x", 200).reaching("/acme/agents/x"),
        get("2.37-literal-encoded", "/acme/%61gents/x", 200).reaching("/acme/agents/x"),
        get("2.38-literal-case", "/acme/AGENTS/x", 403),
        get("2.39-other-org", "/other/agents/x", 403),
        get("2.40-org-trailing-dot", "/acme./agents/x", 403),
        get("2.41-org-encoded-nul", "/acme%00/agents/x", 400),
        get("2.42-space", "/acme/agents/a b", 400),
        get("2.43-control", "/acme/agents/x", 200).reaching("/acme/agents/x"),
    ]
}

/// Requests to `acme/demo.git` with the credential line `auth`.
fn git_cases(auth: &str) -> Vec<Case> {
    let send = |name: &str, method: &str, target: &str, want: u16| row(name, method, target, auth, want);
    vec![
        send("2.44-git-dotdot-push", "POST", "/acme/demo.git/info/../git-receive-pack", 400),
        send("2.45-git-encoded-dotdot", "GET", "/acme/demo.git/%2e%2e/demo.git/info/refs", 400),
        send(
            "2.46-git-upper-info-refs",
            "GET",
            "/acme/demo.git/INFO/REFS?service=git-upload-pack",
            403,
        ),
        send(
            "2.47-git-mixed-refs",
            "GET",
            "/acme/demo.git/info/Refs?service=git-receive-pack",
            403,
        ),
        send("2.48-git-upper-receive", "POST", "/acme/demo.git/GIT-RECEIVE-PACK", 403),
        send("2.49-git-mixed-upload", "POST", "/acme/demo.git/Git-Upload-Pack", 403),
        send("2.50-git-receive-nul", "POST", "/acme/demo.git/git-receive-pack%00", 400),
        send("2.51-git-receive-slash", "POST", "/acme/demo.git/git-receive-pack/", 403),
        send("2.52-git-receive-encoded", "POST", "/acme/demo.git/git%2dreceive%2dpack", 403),
        send(
            "2.53-git-encoded-slash",
            "GET",
            "/acme/demo.git/info%2frefs?service=git-upload-pack",
            400,
        ),
        send("2.54-git-org-upper", "GET", "/ACME/demo.git/info/refs?service=git-upload-pack", 403),
        send("2.55-git-config", "GET", "/acme/demo.git/config", 403),
        send("2.56-git-objects-escape", "GET", "/acme/demo.git/objects/info/../../config", 400),
        send("2.57-git-control", "GET", INFO_REFS, 200).reaching("/acme/demo.git/info/refs?service=git-upload-pack"),
    ]
}
