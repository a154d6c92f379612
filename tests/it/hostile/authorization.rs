//! Category 1, the Authorization header: bad base64, no colon, empty user or password,
//! oversized and non-UTF-8 values, tabs and extra spaces, scheme case, unknown schemes, two
//! headers, a wrong checksum, a token never issued, and credentials in other headers. What
//! cannot be read one way gets 400, what is not a live token the one 401; neither the
//! upstream, nor git, nor the log ever sees the credential.

use patgate::auth::token::TokenSecret;

use super::harness::*;
use crate::support::*;

/// The agents route's path the HTTP cases ask for.
const PATH: &str = "/acme/agents/pools";

#[test]
fn on_an_http_route() {
    let gate = Gate::start();
    let t = live(&gate.p, "alice", "agentpools:read,code:read", "acme").token;
    let never = TokenSecret::generate();
    let bad = run_http_table(gate.p.addr, &gate.rec, &http_cases(&t, never.expose()), Some(&t));
    assert!(!gate.p.log().contains(&t), "the secret reached the log");
    assert_no_failures("authorization", &bad);
}

/// On the git route, a refused credential never starts git.
#[test]
fn on_the_git_route() {
    let gate = Gate::start();
    let t = live(&gate.p, "alice", "agentpools:read,code:read", "acme").token;
    let never = TokenSecret::generate();
    let mut bad = run_git_table(gate.p.addr, &gate.git, &git_cases(&t, never.expose()));
    for env in gate.git.all() {
        if env.keys().any(|k| k == "HTTP_AUTHORIZATION") || env.values().any(|v| v.contains(&t)) {
            bad.push("the credential reached git http-backend".into());
        }
    }
    assert!(!gate.p.log().contains(&t), "the secret reached the log");
    assert_no_failures("authorization on git", &bad);
}

/// The HTTP route's cases, for the live token `t` and a well-formed token `never` that was never issued.
fn http_cases(t: &str, never: &str) -> Vec<Case> {
    let get = |name: &str, headers: &str, want: u16| row(name, "GET", PATH, headers, want);
    vec![
        get("1.01-none", "", 401),
        get("1.02-bad-base64", "Authorization: Basic !!!\r\n", 400),
        get("1.03-base64-half", "Authorization: Basic eDp\r\n", 400),
        get("1.04-no-colon", &basic_of(t.as_bytes()), 400),
        get("1.05-both-empty", &basic_of(b":"), 401),
        get("1.06-empty-password", &basic_of(b"alice:"), 401),
        get("1.07-empty-user-bad", &basic_of(b":hunter2"), 401),
        get("1.08-empty-user-token", &basic_of(format!(":{t}").as_bytes()), 200),
        get("1.09-token-as-user", &basic_of(format!("{t}:").as_bytes()), 200),
        get("1.10-token-twice", &basic_of(format!("{t}:{t}").as_bytes()), 200),
        get("1.11-two-tokens", &basic_of(format!("{t}:{never}").as_bytes()), 400),
        get("1.12-oversized-bearer", &bearer(&"a".repeat(5000)), 400),
        get(
            "1.13-oversized-basic",
            &format!("Authorization: Basic {}\r\n", "QUFB".repeat(1500)),
            400,
        ),
        get_with_value("1.14-non-utf8-header", b"Bearer \xff\xfe\x80", 400),
        get(
            "1.15-non-utf8-basic",
            &basic_of(&[b"\xff\xfe:".as_slice(), t.as_bytes()].concat()),
            400,
        ),
        get("1.16-tabs", &format!("Authorization: Bearer\t\t{t}\t\r\n"), 200),
        get("1.17-spaces", &format!("Authorization:    Bearer    {t}   \r\n"), 200),
        get("1.18-trailing-word", &format!("Authorization: Bearer {t} extra\r\n"), 401),
        get("1.19-lower-scheme", &format!("Authorization: bearer {t}\r\n"), 200),
        get(
            "1.20-upper-basic",
            &format!("Authorization: BASIC {}\r\n", b64(format!("x:{t}").as_bytes())),
            200,
        ),
        get("1.21-unknown-scheme", &format!("Authorization: Token {t}\r\n"), 401),
        get("1.22-negotiate", &format!("Authorization: Negotiate {t}\r\n"), 401),
        get("1.23-digest", &format!("Authorization: Digest username=\"{t}\"\r\n"), 401),
        get("1.24-two-headers", &format!("{}{}", bearer(t), bearer(t)), 400),
        get("1.25-two-headers-mixed", &format!("{}Authorization: Basic !!!\r\n", bearer(t)), 400),
        get("1.26-empty-and-good", &format!("Authorization:\r\n{}", bearer(t)), 400),
        get("1.27-wrong-checksum", &bearer(&wrong_checksum(t)), 401),
        get("1.28-never-issued", &bearer(never), 401),
        get("1.29-never-issued-basic", &basic_of(format!("x:{never}").as_bytes()), 401),
        get("1.30-case-flipped", &bearer(&t.to_uppercase().replacen("PATG_", "patg_", 1)), 401),
        get("1.31-zeros", &bearer(&format!("patg_{}", "0".repeat(46))), 401),
        get(
            "1.32-proxy-authorization-only",
            &format!("Proxy-Authorization: Bearer {t}\r\n"),
            401,
        ),
        get("1.33-x-authorization", &format!("X-Authorization: Bearer {t}\r\n"), 401),
        get("1.34-space-before-colon", &format!("Authorization : Bearer {t}\r\n"), 400),
        get_with_value("1.35-nul-in-value", format!("Bearer {t}\0").as_bytes(), 400),
        get("1.36-newline-in-password", &basic_of(format!("x:{t}\n").as_bytes()), 401),
        get("1.37-percent-encoded", &bearer(&t.replacen('_', "%5F", 1)), 401),
        get("1.38-bearer-nothing", "Authorization: Bearer\r\n", 401),
    ]
}

/// The git route's cases, for the live token `t` and a well-formed token `never` that was never issued.
fn git_cases(t: &str, never: &str) -> Vec<Case> {
    let refs = |name: &str, headers: &str, want: u16| row(name, "GET", INFO_REFS, headers, want);
    vec![
        refs("1.39-git-none", "", 401),
        refs(
            "1.40-git-wrong-checksum",
            &format!("Authorization: {}\r\n", basic("x", &wrong_checksum(t))),
            401,
        ),
        refs("1.41-git-never-issued", &bearer(never), 401),
        refs("1.42-git-bad-base64", "Authorization: Basic ====\r\n", 400),
        refs("1.43-git-good", &format!("Authorization: {}\r\n", basic("", t)), 200),
    ]
}

/// An `Authorization: Basic` line of these bytes, UTF-8 or not.
fn basic_of(b: &[u8]) -> String {
    format!("Authorization: Basic {}\r\n", b64(b))
}

/// A GET of `PATH` whose Authorization value is these bytes, UTF-8 or not.
fn get_with_value(name: &str, value: &[u8], want: u16) -> Case {
    let mut v = format!("GET {PATH} HTTP/1.1\r\nHost: gate.example\r\nX-Case: {name}\r\nAuthorization: ").into_bytes();
    v.extend_from_slice(value);
    v.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    case(name, v, want)
}

/// A token with the right shape and checksum whose last character is changed.
fn wrong_checksum(token: &str) -> String {
    let mut t = token.to_owned();
    let last = t.pop().unwrap();
    t.push(if last == '0' { '1' } else { '0' });
    t
}
