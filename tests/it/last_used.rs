//! When a token was last used reaches the store whatever happens to the token next.

use std::time::Duration;

use crate::support::*;

fn last_used(p: &TestPatgate, id: &str) -> serde_json::Value {
    let out = p.cli(&["token", "show", id, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["last_used_at"].clone()
}

#[test]
fn a_use_shows_after_the_token_is_revoked_or_regenerated_before_the_write_back() {
    let p = TestPatgate::start_with_env("", &[("PATGATE__STORE__LAST_USED_FLUSH_INTERVAL", "1s")]);
    let revoked = p.mint_live("code:read", "acme");
    let regenerated = p.mint_live("code:read", "acme");
    for t in [&revoked, &regenerated] {
        for _ in 0..6 {
            let r = http(
                p.addr,
                &format!(
                    "GET /acme/demo.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: h\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
                    basic("x", &t.token)
                ),
            );
            assert_ne!(r.status, 401, "{r:?}");
        }
    }
    // At once, well within the write-back interval.
    assert!(p.cli(&["token", "revoke", &revoked.id]).status.success());
    assert!(p.cli(&["token", "regenerate", &regenerated.id]).status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (a, b) = (last_used(&p, &revoked.id), last_used(&p, &regenerated.id));
        if a.is_string() && b.is_string() {
            for id in [&revoked.id, &regenerated.id] {
                let out = p.cli(&["token", "show", id, "--json"]);
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(v["last_used_from"], "127.0.0.1", "{v}");
            }
            break;
        }
        assert!(std::time::Instant::now() < deadline, "last_used_at still {a} and {b}\n{}", p.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}
