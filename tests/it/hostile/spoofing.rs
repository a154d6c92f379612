//! Category 5, header spoofing: identity headers a client sends (`X-Patgate-User`,
//! `X-Patgate-Token-Id`, `X-Forwarded-*`, `X-Remote-User`, `Forwarded`, ...), hop-by-hop
//! tricks (`Connection: X-Patgate-User`), an upgrade to a protocol that would carry requests
//! past the rules, and headers that can be read two ways. The upstream reads identity from
//! patgate only; on the git route, no header stands in for a CGI variable patgate sets.

use std::path::PathBuf;

use super::harness::*;

/// An HTTP row: its name, the headers the client adds, and for each header name the
/// values the upstream must read (none: the header is gone).
type Spoof<'a> = (&'a str, &'a str, Vec<(&'a str, Vec<&'a str>)>);

/// A git row: its name, the headers the client adds, and the CGI variables git must read
/// (`None`: unset).
type GitSpoof = (&'static str, &'static str, &'static [(&'static str, Option<&'static str>)]);

#[test]
fn client_identity_headers_never_reach_an_http_upstream() {
    let gate = Gate::start();
    let t = live(&gate.p, "alice", "agentpools:read,code:read", "acme");
    let auth = bearer(&t.token);
    let mut bad = Vec::new();
    for spoof in http_spoofs(&t.id) {
        bad.extend(check_http_spoof(&gate, &auth, &spoof));
    }
    bad.extend(check_credentials(&gate.rec, Some(&t.token)));
    assert_no_failures("header spoofing", &bad);
}

/// Headers that cannot be read one way only are refused whole.
#[test]
fn headers_read_two_ways_are_refused() {
    let gate = Gate::start();
    let t = live(&gate.p, "alice", "agentpools:read,code:read", "acme");
    let auth = bearer(&t.token);
    let get = |name: &str, headers: &str| row(name, "GET", "/acme/agents/x", &format!("{auth}{headers}"), 400);
    let cases = vec![
        get("5.23-obs-fold", "X-Foo: a\r\n X-Patgate-User: root\r\n"),
        get("5.24-space-before-colon", "X-Patgate-User : root\r\n"),
    ];
    let bad = run_http_table(gate.p.addr, &gate.rec, &cases, Some(&t.token));
    assert_no_failures("headers read two ways", &bad);
}

/// The git upstream reads headers as CGI variables: none may stand in for patgate's.
#[test]
fn client_identity_headers_never_reach_git() {
    let gate = Gate::start();
    let t = live(&gate.p, "alice", "agentpools:read,code:read", "acme");
    let auth = bearer(&t.token);
    let mut bad = Vec::new();
    for spoof in GIT_SPOOFS {
        bad.extend(check_git_spoof(&gate, &auth, spoof));
    }
    assert_no_failures("header spoofing on git", &bad);
}

/// The HTTP rows, for alice's token whose id is `id`.
fn http_spoofs(id: &str) -> Vec<Spoof<'_>> {
    vec![
        ("5.01-user", "X-Patgate-User: root\r\n", vec![("x-patgate-user", vec!["alice"])]),
        (
            "5.02-token-id",
            "X-Patgate-Token-Id: forged\r\n",
            vec![("x-patgate-token-id", vec![id])],
        ),
        (
            "5.03-user-twice-cased",
            "x-patgate-user: root\r\nX-PATGATE-USER: admin\r\n",
            vec![("x-patgate-user", vec!["alice"])],
        ),
        (
            "5.04-xff",
            "X-Forwarded-For: 10.0.0.1\r\n",
            vec![("x-forwarded-for", vec!["127.0.0.1"])],
        ),
        (
            "5.05-xff-twice",
            "X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n",
            vec![("x-forwarded-for", vec!["127.0.0.1"])],
        ),
        (
            "5.06-xfh",
            "X-Forwarded-Host: evil.example\r\n",
            vec![("x-forwarded-host", vec!["gate.example"])],
        ),
        (
            "5.07-xfp",
            "X-Forwarded-Proto: https\r\n",
            vec![("x-forwarded-proto", vec!["http"])],
        ),
        ("5.08-x-remote-user", "X-Remote-User: root\r\n", vec![("x-remote-user", vec![])]),
        ("5.09-remote-user", "Remote-User: root\r\n", vec![("remote-user", vec![])]),
        (
            "5.10-forwarded",
            "Forwarded: for=1.2.3.4;host=evil;proto=https\r\n",
            vec![("forwarded", vec![])],
        ),
        ("5.11-x-real-ip", "X-Real-IP: 1.2.3.4\r\n", vec![("x-real-ip", vec![])]),
        (
            "5.12-connection-names-user",
            "Connection: X-Patgate-User\r\nX-Patgate-User: root\r\n",
            vec![("x-patgate-user", vec!["alice"])],
        ),
        (
            "5.13-connection-names-identity",
            "Connection: keep-alive, X-Forwarded-For, X-Patgate-Token-Id\r\nX-Forwarded-For: 10.0.0.1\r\n",
            vec![("x-forwarded-for", vec!["127.0.0.1"]), ("x-patgate-token-id", vec![id])],
        ),
        (
            "5.14-underscore",
            "X_Patgate_User: root\r\nX_Forwarded_For: 10.0.0.1\r\n",
            vec![
                ("x_patgate_user", vec![]),
                ("x_forwarded_for", vec![]),
                ("x-patgate-user", vec!["alice"]),
            ],
        ),
        (
            "5.15-proxy-authorization",
            "Proxy-Authorization: Basic eDp5\r\n",
            vec![("proxy-authorization", vec![])],
        ),
        (
            "5.16-original-url",
            "X-Original-URL: /other/agents/x\r\n",
            vec![("x-original-url", vec![])],
        ),
        (
            "5.17-method-override",
            "X-HTTP-Method-Override: DELETE\r\n",
            vec![("x-http-method-override", vec![])],
        ),
        (
            // A WebSocket upgrade is passed on (tests/it/upgrade.rs); one to a protocol
            // that carries HTTP requests past the rules is not.
            "5.19-upgrade",
            "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nTE: trailers\r\n",
            vec![("upgrade", vec![]), ("http2-settings", vec![]), ("te", vec![])],
        ),
        (
            "5.20-hop-by-hop",
            "Keep-Alive: timeout=999\r\nProxy-Connection: keep-alive\r\n",
            vec![("keep-alive", vec![]), ("proxy-connection", vec![])],
        ),
        (
            "5.21-x-patgate-other",
            "X-Patgate-Admin: true\r\n",
            vec![("x-patgate-admin", vec![])],
        ),
        (
            "5.22-x-forwarded-user",
            "X-Forwarded-User: root\r\n",
            vec![("x-forwarded-user", vec![])],
        ),
    ]
}

const GIT_SPOOFS: &[GitSpoof] = &[
    (
        "5.25-git-user",
        "X-Patgate-User: root\r\n",
        &[("HTTP_X_PATGATE_USER", Some("alice")), ("REMOTE_USER", Some("alice"))],
    ),
    (
        "5.26-git-remote-user",
        "Remote-User: root\r\n",
        &[("HTTP_REMOTE_USER", None), ("REMOTE_USER", Some("alice"))],
    ),
    (
        "5.27-git-remote-user-underscore",
        "Remote_User: root\r\n",
        &[("HTTP_REMOTE_USER", None), ("REMOTE_USER", Some("alice"))],
    ),
    ("5.28-git-httpoxy", "Proxy: http://127.0.0.1:1\r\n", &[("HTTP_PROXY", None)]),
    (
        "5.29-git-xff",
        "X-Forwarded-For: 10.0.0.1\r\n",
        &[("HTTP_X_FORWARDED_FOR", Some("127.0.0.1"))],
    ),
    (
        "5.30-git-project-root",
        "Git_Project_Root: /\r\nPath-Info: /other/x.git\r\n",
        &[("HTTP_GIT_PROJECT_ROOT", None), ("PATH_INFO", Some("/acme/demo.git/info/refs"))],
    ),
    (
        "5.31-git-connection-trick",
        "Connection: X-Patgate-User, Remote-User\r\nX-Patgate-User: root\r\n",
        &[("HTTP_X_PATGATE_USER", Some("alice")), ("REMOTE_USER", Some("alice"))],
    ),
    ("5.32-git-auth-type", "Auth_Type: None\r\n", &[("HTTP_AUTH_TYPE", None)]),
];

/// Sends one HTTP row with the credential line `auth`; the problems found.
fn check_http_spoof(gate: &Gate, auth: &str, (name, headers, checks): &Spoof) -> Vec<String> {
    let raw = req("GET", "/acme/agents/x", name, &format!("{auth}{headers}"), b"");
    let r = exchange(gate.p.addr, &raw);
    if r.status != 200 {
        return vec![format!("[{name}] status {}", r.status)];
    }
    let got = gate.rec.case(name);
    let Some(g) = got.first() else {
        return vec![format!("[{name}] never reached the upstream")];
    };
    let mut bad = Vec::new();
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
    bad
}

/// Sends one git row with the credential line `auth`; the problems found.
fn check_git_spoof(gate: &Gate, auth: &str, (name, headers, checks): &GitSpoof) -> Vec<String> {
    let r = exchange(gate.p.addr, &req("GET", INFO_REFS, name, &format!("{auth}{headers}"), b""));
    if r.status != 200 {
        return vec![format!("[{name}] status {}", r.status)];
    }
    let envs = gate.git.case(name);
    let Some(env) = envs.first() else {
        return vec![format!("[{name}] git never ran")];
    };
    let mut bad = Vec::new();
    for (var, want) in checks.iter() {
        if env.get(*var).map(String::as_str) != *want {
            bad.push(format!("[{name}] git read {var}={:?}, want {want:?}", env.get(*var)));
        }
    }
    if env.get("GIT_PROJECT_ROOT").map(PathBuf::from) != Some(gate.p.repos()) {
        bad.push(format!("[{name}] GIT_PROJECT_ROOT is {:?}", env.get("GIT_PROJECT_ROOT")));
    }
    if env.contains_key("HTTP_AUTHORIZATION") {
        bad.push(format!("[{name}] the credential reached git"));
    }
    bad
}
