//! Category 3, the git query: `service` twice with the same or different values, encoded in
//! its name or value, empty or with no value, with NUL, `;`, `+` or capitals; a push endpoint
//! reached with a fetch-looking query, and the other way round. A reader (code:read) gets 400
//! for what could be read two ways, 403 for a push, and git never runs receive-pack for them.

use super::harness::*;
use crate::support::*;

#[test]
fn git_query_tricks() {
    let git = GitRecorder::new();
    let p = TestPatgate::start(&git.toml());
    let bare = p.init_repo("acme", "demo");
    let reader = live(&p, "reader", "code:read", "acme").token;
    let mut bad = run_git_table(p.addr, &git, &cases(&bearer(&reader)));
    bad.extend(receive_pack_runs(&git));
    let refs_after = crate::support::git(&bare, &["for-each-ref"]).ok().stdout;
    assert!(refs_after.contains("refs/heads/main"));
    assert_no_failures("git query", &bad);
}

/// Requests to `acme/demo.git` with the reader's credential line `auth`.
fn cases(auth: &str) -> Vec<Case> {
    let refs = |name: &str, query: &str, want: u16| row(name, "GET", &format!("/acme/demo.git/info/refs?{query}"), auth, want);
    // A POST to a service's endpoint, with that service's content type and an empty request.
    let post = |name: &str, service: &str, query: &str, want: u16| {
        let headers = format!("{auth}Content-Type: application/x-{service}-request\r\nContent-Length: 4\r\n");
        case(
            name,
            req("POST", &format!("/acme/demo.git/{service}{query}"), name, &headers, b"0000"),
            want,
        )
    };
    vec![
        refs("3.01-upload-then-receive", "service=git-upload-pack&service=git-receive-pack", 400),
        refs("3.02-receive-then-upload", "service=git-receive-pack&service=git-upload-pack", 400),
        refs("3.03-same-twice", "service=git-upload-pack&service=git-upload-pack", 400),
        refs("3.04-encoded-name", "%73ervice=git-receive-pack", 400),
        refs("3.05-plain-and-encoded", "service=git-upload-pack&%73ervice=git-receive-pack", 400),
        refs("3.06-encoded-name-middle", "serv%69ce=git-receive-pack", 400),
        refs("3.07-encoded-value", "service=git%2dreceive%2dpack", 400),
        refs("3.08-empty-value", "service=", 400),
        refs("3.09-no-value", "service", 400),
        refs("3.10-nul-in-value", "service=git-upload-pack%00", 400),
        refs("3.11-semicolon", "service=git-receive-pack;service=git-upload-pack", 400),
        refs("3.12-upper-value", "service=GIT-RECEIVE-PACK", 400),
        refs("3.13-plus", "service=git-upload-pack+", 400),
        refs("3.14-nul-in-name", "service%00x=git-receive-pack", 400),
        refs("3.15-receive-needs-write", "service=git-receive-pack", 403),
        refs("3.16-receive-with-extra", "x=1&service=git-receive-pack", 403),
        refs("3.17-upload-after-other", "x=1&service=git-upload-pack", 200)
            .reaching("/acme/demo.git/info/refs?x=1&service=git-upload-pack"),
        post("3.18-push-with-fetch-query", "git-receive-pack", "?service=git-upload-pack", 403),
        post("3.19-push-no-query", "git-receive-pack", "", 403),
        post(
            "3.20-push-encoded-fetch-query",
            "git-receive-pack",
            "?%73ervice=git-upload-pack",
            400,
        ),
        post("3.21-fetch-with-push-query", "git-upload-pack", "?service=git-receive-pack", 200),
    ]
}

/// Whatever ran, git never ran receive-pack for the reader.
fn receive_pack_runs(git: &GitRecorder) -> Vec<String> {
    let mut bad = Vec::new();
    for env in git.all() {
        let path = env.get("PATH_INFO").cloned().unwrap_or_default();
        let query = env.get("QUERY_STRING").cloned().unwrap_or_default();
        // (A POST to git-upload-pack runs upload-pack whatever its query says.)
        if path.contains("receive-pack") || (query.contains("receive-pack") && env["REQUEST_METHOD"] == "GET") {
            bad.push(format!("git http-backend ran receive-pack for a reader: {path}?{query}"));
        }
    }
    bad
}
