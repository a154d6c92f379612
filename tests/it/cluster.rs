//! Three patgate instances sharing one PostgreSQL store: a revocation or a regeneration
//! made through one instance's admin API is enforced by the other two within a second,
//! and still is after PostgreSQL was restarted under them.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::postgres::{fresh_database, PgCluster};
use crate::support::*;

/// The server the machine runs (`PATGATE_TEST_POSTGRES`), as the store tests use it.
fn shared_server() -> String {
    std::env::var("PATGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Three instances on the database at `url`, each with an agents route to `upstream`.
fn three_on(url: &str, upstream: &Upstream) -> Vec<TestPatgate> {
    let extra = format!(
        "[[routes]]\npath = \"/agents/**\"\nupstream = \"http://{}\"\nrules = [{{ scope = \"agentpools:read\" }}]\n",
        upstream.addr
    );
    (0..3)
        .map(|_| TestPatgate::start_with_env(&extra, &[("PATGATE__STORE__URL", url)]))
        .collect()
}

/// The first admin token, made with the CLI on the shared store.
fn admin_token(p: &TestPatgate, url: &str) -> String {
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&p.config)
        .args(["token", "create", "--name", "root", "--owner", "root", "--scopes", "tokens:admin"])
        .args(["--orgs", "*", "--expires-in", "1h", "--json"])
        .env("PATGATE__STORE__URL", url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = v["token"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.api("GET", "/admin/v1/tokens?limit=1", Some(&token), None).status != 200 {
        assert!(Instant::now() < deadline, "the admin token never became live");
        std::thread::sleep(Duration::from_millis(20));
    }
    token
}

/// Creates an agent token through `p`'s admin API; returns (id, secret).
fn create_agent_token(p: &TestPatgate, admin: &str) -> (String, String) {
    let body = json!({"name": "agent", "owner": "agent", "scopes": ["agentpools:read"], "orgs": "*", "expires_in": "1h"});
    let r = p.api("POST", "/admin/v1/tokens", Some(admin), Some(&body));
    assert_eq!(r.status, 201, "{}", r.raw.body);
    (
        r.json["token"]["id"].as_str().unwrap().to_owned(),
        r.json["secret"].as_str().unwrap().to_owned(),
    )
}

fn probe(p: &TestPatgate, secret: &str) -> u16 {
    let req = format!("GET /agents/pool HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {secret}\r\nConnection: close\r\n\r\n");
    http(p.addr, &req).status
}

/// Waits until every instance answers `want` for `secret`; panics after `within`.
fn all_answer(instances: &[&TestPatgate], secret: &str, want: u16, within: Duration) -> Duration {
    let start = Instant::now();
    for p in instances {
        loop {
            let got = probe(p, secret);
            if got == want {
                break;
            }
            assert!(
                start.elapsed() < within,
                "{} still answers {got}, not {want}, after {:?}",
                p.addr,
                start.elapsed()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    start.elapsed()
}

#[test]
fn a_revocation_or_regeneration_through_one_instance_bites_on_the_other_two_within_a_second() {
    let server = shared_server();
    let url = block_on(fresh_database(&server));
    let upstream = spawn_upstream(false);
    let ps = three_on(&url, &upstream);
    let admin = admin_token(&ps[0], &url);
    let all: Vec<&TestPatgate> = ps.iter().collect();
    let others = [&ps[1], &ps[2]];

    let (id, secret) = create_agent_token(&ps[0], &admin);
    all_answer(&all, &secret, 200, Duration::from_secs(5));
    let r = ps[0].api("POST", &format!("/admin/v1/tokens/{id}/revoke"), Some(&admin), None);
    assert_eq!(r.status, 200, "{}", r.raw.body);
    // In force on the instance that answered, at once.
    assert_eq!(probe(&ps[0], &secret), 401);
    all_answer(&others, &secret, 401, Duration::from_secs(1));

    // Regenerate through the third instance: the old secret stops everywhere, the new one works.
    let (id, old) = create_agent_token(&ps[1], &admin);
    all_answer(&all, &old, 200, Duration::from_secs(5));
    let r = ps[2].api("POST", &format!("/admin/v1/tokens/{id}/regenerate"), Some(&admin), None);
    assert_eq!(r.status, 200, "{}", r.raw.body);
    let new = r.json["secret"].as_str().unwrap().to_owned();
    all_answer(&[&ps[0], &ps[1]], &old, 401, Duration::from_secs(1));
    all_answer(&[&ps[0], &ps[1]], &new, 200, Duration::from_secs(1));

    // Revoking all of an owner's tokens through one instance.
    let (_, a) = create_agent_token(&ps[0], &admin);
    let (_, b) = create_agent_token(&ps[0], &admin);
    all_answer(&all, &a, 200, Duration::from_secs(5));
    all_answer(&all, &b, 200, Duration::from_secs(5));
    let r = ps[1].api("POST", "/admin/v1/owners/agent/revoke", Some(&admin), None);
    assert_eq!((r.status, r.json["revoked"].as_u64()), (200, Some(3)), "{}", r.raw.body);
    all_answer(&[&ps[0], &ps[2]], &a, 401, Duration::from_secs(1));
    all_answer(&[&ps[0], &ps[2]], &b, 401, Duration::from_secs(1));
    all_answer(&all, &new, 401, Duration::from_secs(1));

    drop(ps);
    block_on(drop_database(&server, &url));
}

#[test]
fn after_postgresql_restarts_under_them_the_instances_serve_on_and_revocations_still_propagate() {
    let cluster = PgCluster::start();
    let url = block_on(fresh_database(&cluster.url()));
    let upstream = spawn_upstream(false);
    let ps = three_on(&url, &upstream);
    let admin = admin_token(&ps[0], &url);
    let all: Vec<&TestPatgate> = ps.iter().collect();
    let (id, secret) = create_agent_token(&ps[0], &admin);
    let (regen_id, old) = create_agent_token(&ps[0], &admin);
    all_answer(&all, &secret, 200, Duration::from_secs(5));
    all_answer(&all, &old, 200, Duration::from_secs(5));

    cluster.stop();
    // Serving goes on from memory; admin writes fail clearly.
    all_answer(&all, &secret, 200, Duration::from_secs(1));
    let r = ps[1].api("POST", &format!("/admin/v1/tokens/{id}/revoke"), Some(&admin), None);
    assert_eq!(r.status, 503, "{}", r.raw.body);
    assert!(r.error().contains("unavailable"), "{}", r.error());
    assert_eq!(probe(&ps[1], &secret), 200, "a failed revoke changed nothing");

    cluster.start_server();
    // The first write after the restart may meet a pool that has not noticed yet.
    let deadline = Instant::now() + Duration::from_secs(15);
    let r = loop {
        let r = ps[0].api("POST", &format!("/admin/v1/tokens/{id}/revoke"), Some(&admin), None);
        if r.status != 503 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(r.status, 200, "{}", r.raw.body);
    assert_eq!(probe(&ps[0], &secret), 401);
    all_answer(&[&ps[1], &ps[2]], &secret, 401, Duration::from_secs(1));

    let r = ps[2].api("POST", &format!("/admin/v1/tokens/{regen_id}/regenerate"), Some(&admin), None);
    assert_eq!(r.status, 200, "{}", r.raw.body);
    let new = r.json["secret"].as_str().unwrap().to_owned();
    all_answer(&[&ps[0], &ps[1]], &old, 401, Duration::from_secs(1));
    all_answer(&all, &new, 200, Duration::from_secs(1));
    for p in &ps {
        assert!(p.log_shows("Token store reachable again"), "{}", p.log());
    }
}

async fn drop_database(server: &str, url: &str) {
    let name = url.rsplit('/').next().unwrap().to_owned();
    if let Ok((client, conn)) = tokio_postgres::connect(server, tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await;
    }
}
