//! Many live tokens: how long `patgate serve` takes to load them and how much memory it
//! holds, then what a flood of well-formed but unknown tokens does to that memory.
//!
//! Writes N live tokens (default 1 000 000; `PATGATE_BENCH_TOKENS`) into a new SQLite
//! store in one transaction, starts the release binary on it, reads the load time from its
//! "Tokens loaded" line and its resident memory from /proc, compares with an empty store,
//! then sends 20 000 requests with random unknown tokens and reads the memory again.
//!
//! Run: `cargo bench --bench tokens`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use patgate::auth::token::TokenSecret;
use patgate::store::{Location, Store};

const BIN: &str = env!("CARGO_BIN_EXE_patgate");
const FLOOD: usize = 20_000;

struct Server {
    child: Child,
    addr: SocketAddr,
    load_ms: u64,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let n: usize = std::env::var("PATGATE_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();

    let empty = dir.path().join("empty.db");
    let full = dir.path().join("full.db");
    rt.block_on(async {
        Store::open(&Location::Sqlite(empty.clone())).await.unwrap();
        Store::open(&Location::Sqlite(full.clone())).await.unwrap();
    });
    let t = Instant::now();
    fill(&full, n);
    eprintln!("wrote {n} tokens in {:.1} s", t.elapsed().as_secs_f64());

    let base = start(dir.path(), &empty);
    let base_rss = rss_kib(&base.child);
    drop(base);
    let server = start(dir.path(), &full);
    let loaded_rss = rss_kib(&server.child);

    let before = rss_kib(&server.child);
    let refused = rt.block_on(flood(server.addr));
    let after = rss_kib(&server.child);

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("{n} live tokens, SQLite store, release build");
    println!("  load at start        {} ms", server.load_ms);
    println!("  RSS, empty store     {:.1} MiB", mib(base_rss));
    println!(
        "  RSS, {n} tokens  {:.1} MiB ({:.0} bytes per token)",
        mib(loaded_rss),
        (loaded_rss - base_rss.min(loaded_rss)) as f64 * 1024.0 / n.max(1) as f64
    );
    println!(
        "  unknown-token flood  {refused}/{FLOOD} answered 401; RSS {:.1} -> {:.1} MiB",
        mib(before),
        mib(after)
    );
    assert_eq!(refused, FLOOD, "every unknown token must get 401");
}

/// Inserts `n` live tokens straight into the store's tables, in one transaction.
fn fill(path: &Path, n: usize) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut st = tx
            .prepare(
                "INSERT INTO tokens (id, hash, name, owner, orgs, scopes, created_at, expires_at) \
                 VALUES (?1, ?2, 'bench', ?3, '[\"acme\"]', 'code:read', ?4, ?5)",
            )
            .unwrap();
        let now = patgate::store::now();
        for i in 0..n {
            let hash = TokenSecret::generate().hash();
            st.execute(rusqlite::params![
                format!("bench{i:010}"),
                &hash.0[..],
                format!("owner{}", i % 1000),
                now,
                now + 86_400
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

fn start(dir: &Path, db: &Path) -> Server {
    let config = dir.join(format!("{}.toml", db.file_stem().unwrap().to_string_lossy()));
    std::fs::write(
        &config,
        format!(
            // The flood comes from one address: the lockout would answer it 429 after 20
            // failures, and the token path under test would go unused.
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nenabled = false\n[brute_force]\nenabled = false\n[store]\nurl = \"sqlite://{}\"\n\n[[routes]]\npath = \"/agents/**\"\nupstream = \"http://127.0.0.1:9\"\nrules = [{{ scope = \"agentpools:read\" }}]\n",
            db.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("RUST_LOG", "info,patgate::access=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let field = |name: &str| {
                line.split(&format!("{name}="))
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .map(str::to_owned)
            };
            if line.contains("Tokens loaded") {
                let _ = tx.send(("load", field("elapsed_ms").unwrap_or_default()));
            } else if line.contains("Listening") {
                let _ = tx.send(("addr", field("addr").unwrap_or_default()));
            }
        }
    });
    let (mut load_ms, mut addr) = (None, None);
    while load_ms.is_none() || addr.is_none() {
        let (what, v) = rx.recv_timeout(Duration::from_secs(120)).expect("patgate did not start");
        match what {
            "load" => load_ms = v.parse().ok(),
            _ => addr = v.parse().ok(),
        }
    }
    Server {
        child,
        addr: addr.unwrap(),
        load_ms: load_ms.unwrap(),
    }
}

/// Sends FLOOD requests with random well-formed tokens; returns how many got 401.
async fn flood(addr: SocketAddr) -> usize {
    let http: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut refused = 0;
    for _ in 0..FLOOD {
        let req = Request::get(format!("http://{addr}/agents/pool"))
            .header("authorization", format!("Bearer {}", TokenSecret::generate().expose()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = http.request(req).await.unwrap();
        if res.status() == 401 {
            refused += 1;
        }
        let _ = res.into_body().collect().await;
    }
    refused
}

/// The process's resident memory in KiB, after a moment to settle.
fn rss_kib(child: &Child) -> u64 {
    std::thread::sleep(Duration::from_millis(500));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
