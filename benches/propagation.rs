//! How fast a revocation reaches other instances sharing one PostgreSQL store.
//!
//! Starts three `patgate serve` processes on a new database, makes N tokens through the
//! first instance's admin API, then revokes them one at a time through that API and, for
//! each, polls the other two instances' proxies until they refuse the token. Prints the
//! p50, p99 and worst time from sending the revoke to the refusal, over 2·N samples.
//!
//! Run: `cargo bench --bench propagation` (N = 200). `PATGATE_BENCH_POSTGRES` names the
//! server (default `postgres://postgres@127.0.0.1:5432/postgres`); a database
//! `patgate_bench_*` is made on it and dropped afterwards.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

const BIN: &str = env!("CARGO_BIN_EXE_patgate");
const INSTANCES: usize = 3;

type Http = Client<HttpConnector, Full<Bytes>>;

struct Instance {
    child: Child,
    proxy: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let n: usize = std::env::var("PATGATE_BENCH_REVOCATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(n));
}

async fn run(n: usize) {
    let server = std::env::var("PATGATE_BENCH_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = format!("patgate_bench_{}", std::process::id());
    admin_sql(&server, &format!("CREATE DATABASE {db}")).await;
    let url = with_database(&server, &db);
    let dir = tempfile::tempdir().unwrap();
    let upstream = spawn_upstream().await;

    let mut instances = Vec::new();
    for i in 0..INSTANCES {
        let config = dir.path().join(format!("patgate-{i}.toml"));
        // Every revoked token is polled until it is refused: hundreds of failed
        // authentications from one address, which the lockout would answer with 429.
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"{url}\"\n[brute_force]\nenabled = false\n\n[[routes]]\npath = \"/agents/**\"\nupstream = \"http://{upstream}\"\nrules = [{{ scope = \"agentpools:read\" }}]\n"
            ),
        )
        .unwrap();
        instances.push(start(&config));
    }
    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("patgate-0.toml"))
        .args([
            "token",
            "create",
            "--name",
            "bench",
            "--owner",
            "bench",
            "--scopes",
            "tokens:admin",
            "--orgs",
            "*",
            "--expires-in",
            "1h",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let admin_token = v["token"].as_str().unwrap().to_owned();

    let http: Http = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let first = &instances[0];
    // The CLI wrote the admin token to the store; the first instance learns of it from the
    // event feed, within its poll interval.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, v) = call(&http, "GET", first.admin, "/admin/v1/tokens?limit=1", &admin_token, None).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first instance still refuses the admin token: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let body =
            serde_json::json!({"name": format!("t{i}"), "owner": "bench", "scopes": ["agentpools:read"], "orgs": "*", "expires_in": "1h"});
        let (status, v) = call(&http, "POST", first.admin, "/admin/v1/tokens", &admin_token, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        tokens.push((
            v["token"]["id"].as_str().unwrap().to_owned(),
            v["secret"].as_str().unwrap().to_owned(),
        ));
    }
    // Every token is live everywhere before the clock starts.
    for (_, secret) in &tokens {
        for inst in &instances[1..] {
            wait_for(&http, inst.proxy, secret, StatusCode::OK).await;
        }
    }
    eprintln!("{n} tokens live on {INSTANCES} instances; revoking one at a time through the first");

    let mut samples = Vec::with_capacity(2 * n);
    for (id, secret) in &tokens {
        let sent = Instant::now();
        let (status, v) = call(
            &http,
            "POST",
            first.admin,
            &format!("/admin/v1/tokens/{id}/revoke"),
            &admin_token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        for inst in &instances[1..] {
            wait_for(&http, inst.proxy, secret, StatusCode::UNAUTHORIZED).await;
            samples.push(sent.elapsed());
        }
    }
    drop(instances);
    admin_sql(&server, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;

    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1];
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    println!(
        "revocation propagation, {n} revocations x {} other instances ({} samples)",
        INSTANCES - 1,
        samples.len()
    );
    println!("  p50  {}", ms(pct(0.50)));
    println!("  p99  {}", ms(pct(0.99)));
    println!("  max  {}", ms(*samples.last().unwrap()));
}

/// Polls `proxy` with `secret` until it answers `want` (10 s at most).
async fn wait_for(http: &Http, proxy: SocketAddr, secret: &str, want: StatusCode) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let req = Request::get(format!("http://{proxy}/agents/pool"))
            .header("authorization", format!("Bearer {secret}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = http.request(req).await.unwrap();
        let status = res.status();
        let _ = res.into_body().collect().await;
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "{proxy} still answers {status}, not {want}");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn call(
    http: &Http,
    method: &str,
    admin: SocketAddr,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
        .unwrap();
    let res = http.request(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

/// Starts `patgate serve` and reads its proxy and admin addresses from its log.
fn start(config: &std::path::Path) -> Instance {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env("RUST_LOG", "info,patgate::access=warn,patgate::admin=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let addr = line
                .split("addr=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_owned);
            if let Some(addr) = addr {
                let which = if line.contains("Admin API up") { "admin" } else { "proxy" };
                let _ = tx.send((which, addr));
            }
        }
    });
    let (mut proxy, mut admin) = (None, None);
    while proxy.is_none() || admin.is_none() {
        let (which, addr) = rx.recv_timeout(Duration::from_secs(30)).expect("patgate did not start");
        let addr: SocketAddr = addr.parse().unwrap();
        if which == "admin" {
            admin = Some(addr);
        } else {
            proxy = Some(addr);
        }
    }
    Instance {
        child,
        proxy: proxy.unwrap(),
        admin: admin.unwrap(),
    }
}

/// An upstream that answers 200 to everything.
async fn spawn_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

async fn admin_sql(server: &str, sql: &str) {
    let (client, conn) = tokio_postgres::connect(server, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {server}: {e}"));
    tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// `server` with its database name replaced by `db`.
fn with_database(server: &str, db: &str) -> String {
    let (base, _) = server.rsplit_once('/').expect("a postgres URL ends in /DATABASE");
    format!("{base}/{db}")
}
