//! SIGHUP: routes, rules and the admin policy are replaced as one; a config that does not
//! load is refused with a log line naming the file and key, and the running one serves on.

use serde_json::json;

use crate::support::{basic, http, spawn_upstream, TestPatgate};

fn get(p: &TestPatgate, path: &str, token: &str) -> u16 {
    http(
        p.addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            basic("x", token)
        ),
    )
    .status
}

#[test]
fn sighup_swaps_routes_and_policy_and_refuses_a_bad_config() {
    let upstream = spawn_upstream(false);
    let agents = format!(
        "[[routes]]\npath = \"/{{org}}/_apis/distributedtask/**\"\nupstream = \"http://{}\"\nrules = [ {{ scope = \"agentpools:read\" }} ]\n",
        upstream.addr
    );
    let p = TestPatgate::start("");
    let agent = p.mint_live("agentpools:read", "acme");
    let admin = p.mint_caller("alice", "tokens:manage,code:manage,agentpools:manage");
    let pools = "/acme/_apis/distributedtask/pools";
    // Without the agents route the path falls to the git route, whose rules refuse the scope.
    assert_eq!(get(&p, pools, &agent.token), 403);

    let original = std::fs::read_to_string(&p.config).unwrap();
    let with_agents = original.replace(
        "[[routes]]",
        &format!("[policy]\nmax_lifespan = \"7d\"\ndefault_lifespan = \"1d\"\n\n{agents}\n[[routes]]"),
    );
    std::fs::write(&p.config, &with_agents).unwrap();
    let line = p.reload();
    assert!(line.contains("Configuration reloaded") && line.contains("routes=2"), "{line}");
    assert_eq!(get(&p, pools, &agent.token), 200);
    assert_eq!(upstream.seen.lock().unwrap().len(), 1);
    // The new policy binds the admin API at once.
    let long = p.api(
        "POST",
        "/admin/v1/tokens",
        Some(&admin.token),
        Some(&json!({"name": "ci", "scopes": ["code:read"], "orgs": ["acme"], "expires_in": "30d"})),
    );
    assert_eq!(long.status, 400, "{}", long.json);
    assert!(long.error().starts_with("policy.max_lifespan"), "{}", long.error());

    // A broken file is refused, naming the file and key; the routes in force stay.
    std::fs::write(
        &p.config,
        with_agents.replace("rules = [ { scope = \"agentpools:read\" } ]", "rules = \"svn\""),
    )
    .unwrap();
    let line = p.reload();
    assert!(
        line.contains("Reload refused") && line.contains("routes[0].rules: unknown preset `svn`"),
        "{line}"
    );
    assert!(line.contains(&p.config.display().to_string()), "{line}");
    assert_eq!(get(&p, pools, &agent.token), 200);
    std::fs::write(&p.config, "this is = = not toml").unwrap();
    assert!(p.reload().contains("Reload refused"));
    assert_eq!(get(&p, pools, &agent.token), 200);

    // A key that needs a restart is named, and the rest is still put in.
    std::fs::write(
        &p.config,
        original.replace(
            "shutdown_grace = \"2s\"",
            "shutdown_grace = \"3s\"\nworkers = 1\ntrusted_proxies = [\"10.0.0.0/8\"]",
        ),
    )
    .unwrap();
    let line = p.reload();
    assert!(line.contains("Configuration reloaded") && line.contains("routes=1"), "{line}");
    assert!(p.log_shows("key=\"server.workers\""), "{}", p.log());
    // Trusted proxies are put in by the reload itself (tests/it/limits.rs checks it).
    assert!(!p.log().contains("key=\"server.trusted_proxies\""), "{}", p.log());
    assert_eq!(get(&p, pools, &agent.token), 403);
}
