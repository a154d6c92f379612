//! The PostgreSQL store against a real server: shared database, outages and restarts.
//!
//! Each test runs its own PostgreSQL cluster ([`PgCluster`]: initdb into a temporary
//! folder, a free port, trust authentication) so that it can stop and restart it. No
//! PostgreSQL binaries is a failure, never a skip.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use patgate::audit::Actor;
use patgate::auth::scope::ScopeSet;
use patgate::auth::token::TokenSecret;
use patgate::auth::Orgs;
use patgate::store::token_cache::TokenCache;
use patgate::store::{self, follow, Location, NewToken, Store, StoreError};
use tokio::sync::watch;

/// A private PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 on a free
/// port with trust authentication for user `postgres`. Stopped (and deleted) on drop.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// initdb refuses to run as root: then every tool runs as the `postgres` user.
    as_postgres: bool,
}

impl PgCluster {
    /// Creates and starts a cluster; panics saying what is missing if it cannot.
    pub fn start() -> PgCluster {
        let bin = server_bin_dir();
        let as_postgres = run_quiet(Command::new("id").arg("-u")).trim() == "0";
        let dir = tempfile::Builder::new().prefix("patgate-pg-").tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sock")).unwrap();
        if as_postgres {
            let uid: u32 = run_quiet(Command::new("id").args(["-u", "postgres"])).trim().parse().unwrap();
            let gid: u32 = run_quiet(Command::new("id").args(["-g", "postgres"])).trim().parse().unwrap();
            for p in [dir.path(), &dir.path().join("sock")] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
            }
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cluster = PgCluster {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        let settings = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 50\n",
            cluster.dir.path().join("sock").display()
        );
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text += &settings;
        std::fs::write(&conf, text).unwrap();
        cluster.start_server();
        cluster
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port())
    }

    /// The port it listens on, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (fast shutdown: clients are disconnected); waits until it is down.
    pub fn stop(&self) {
        let data = self.data();
        self.run("pg_ctl", &["-D", path_str(&data), "-m", "fast", "-w", "-t", "30", "stop"]);
    }

    /// Starts the stopped server again, on the same port; waits until it accepts.
    pub fn start_server(&self) {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        self.run("pg_ctl", &["-D", path_str(&data), "-l", path_str(&log), "-w", "-t", "30", "start"]);
    }

    /// Stops and starts the server.
    pub fn restart(&self) {
        self.stop();
        self.start_server();
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!("{tool} {args:?} failed: {}\nserver log:\n{log}", describe(&out));
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", path_str(&data), "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Creates a new, empty database on the server at `url` and returns its URL. The
/// database is left behind (a [`PgCluster`] deletes it with everything else).
pub async fn fresh_database(url: &str) -> String {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} is unreachable: {e}", store::redact_url(url)));
    tokio::spawn(conn);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("patgate_test_{}_{nanos}", std::process::id());
    client.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
    let authority = url.find("://").map_or(0, |i| i + 3);
    let path = url[authority..].find('/').map_or(url.len(), |i| authority + i);
    let query = url[path..].find('?').map_or("", |i| &url[path + i..]);
    format!("{}/{name}{query}", &url[..path])
}

/// The newest PostgreSQL server binaries under /usr/lib/postgresql.
fn server_bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server binaries (initdb, pg_ctl) under {}: install the postgresql package (bash .ci/run does)",
            root.display()
        ),
    }
}

fn run_quiet(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn token(owner: &str) -> NewToken {
    NewToken {
        repos: Default::default(),
        allow_from: Default::default(),
        name: "ci".into(),
        owner: owner.into(),
        orgs: Orgs::parse("acme").unwrap(),
        scopes: ScopeSet::parse(&["code:read"]).unwrap(),
        lifespan: Duration::from_secs(3600),
    }
}

/// How long `f` took to hold, polling, or `None` if it did not within `limit`.
async fn within(limit: Duration, f: impl Fn() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asserts that an operation fails as unavailable, and soon.
macro_rules! unavailable {
    ($op:expr) => {{
        let started = Instant::now();
        let r = $op.await;
        let took = started.elapsed();
        match r {
            Err(e) => assert!(e.is_unavailable(), "{}: {e}", stringify!($op)),
            Ok(_) => panic!("{} succeeded with the server down", stringify!($op)),
        }
        assert!(took < Duration::from_secs(7), "{} took {took:?}", stringify!($op));
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_server_down_operations_fail_fast_and_work_again_after_a_restart() {
    let pg = PgCluster::start();
    let url = fresh_database(&pg.url()).await;
    let store = Store::open(&Location::parse(&url).unwrap()).await.unwrap();
    let t = store.create(token("alice"), &Actor::default()).await.unwrap().record;

    pg.stop();
    unavailable!(store.create(token("alice"), &Actor::default()));
    unavailable!(store.get(&t.id));
    unavailable!(store.list(store::ListQuery::default()));
    unavailable!(store.revoke(&t.id, &Actor::default()));
    unavailable!(store.revoke_owner("alice", &Actor::default()));
    unavailable!(store.snapshot());
    unavailable!(store.changes_since(0, 10));
    unavailable!(store.record_last_used(vec![patgate::store::TokenUse::new(&t.id, 1, None)]));
    let entry = patgate::audit::AuditEntry::new(0, patgate::audit::Action::AuthRefused, patgate::audit::Outcome::Failure);
    unavailable!(store.append_audit(vec![entry]));
    unavailable!(store.audit_page(&store::AuditQuery::default()));
    let e = store.revoke(&t.id, &Actor::default()).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
    assert!(!e.to_string().contains('\n'), "one line: {e}");

    // The same handle works again as soon as the server is back: no reopening.
    pg.start_server();
    assert!(store.get(&t.id).await.unwrap().revoked_at.is_none());
    store.revoke(&t.id, &Actor::named("admin")).await.unwrap();
    let again = store.create(token("alice"), &Actor::default()).await.unwrap().record;
    assert_eq!(
        store
            .snapshot()
            .await
            .unwrap()
            .live
            .iter()
            .map(|r| r.id.clone())
            .collect::<Vec<_>>(),
        vec![again.id]
    );
}

/// A follower over its own store handle, as one patgate instance runs it. The poll
/// interval is an hour, so only the listener can bring changes in promptly.
struct Instance {
    cache: Arc<TokenCache>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Instance {
    async fn start(location: &Location) -> Instance {
        let store = Store::open(location).await.unwrap();
        let cache = Arc::new(TokenCache::default());
        follow::load(&store, &cache).await.unwrap();
        let config = store::Config {
            location: location.clone(),
            poll_interval: Duration::from_secs(3600),
            last_used_flush_interval: Duration::from_secs(3600),
            max_connections: 8,
        };
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(follow::follow(store, cache.clone(), config, stop_rx));
        Instance { cache, stop, task }
    }

    fn has(&self, secret: &TokenSecret) -> bool {
        self.cache.get(&secret.hash()).is_some()
    }

    /// Waits until the listener is connected: a change made after the follower's first
    /// (and, for an hour, only) poll reaches the cache.
    async fn wait_listening(&self, other: &Store) {
        for _ in 0..2 {
            let probe = other.create(token("probe"), &Actor::default()).await.unwrap();
            let seen = within(Duration::from_secs(15), || self.has(&probe.secret)).await;
            assert!(seen.is_some(), "the follower did not hear of a new token");
        }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_another_instance_reaches_the_cache_within_a_second_also_after_a_restart() {
    let pg = PgCluster::start();
    let location = Location::parse(&fresh_database(&pg.url()).await).unwrap();
    let other = Store::open(&location).await.unwrap();
    let kept = other.create(token("bob"), &Actor::default()).await.unwrap();
    let here = Instance::start(&location).await;
    assert!(here.has(&kept.secret));
    here.wait_listening(&other).await;

    let t = other.create(token("alice"), &Actor::default()).await.unwrap();
    assert!(within(Duration::from_secs(1), || here.has(&t.secret)).await.is_some());
    other.revoke(&t.record.id, &Actor::default()).await.unwrap();
    let took = within(Duration::from_secs(1), || !here.has(&t.secret)).await;
    assert!(took.is_some(), "the revocation did not reach the cache within 1 s");

    // While the server is down the cache goes on serving; after the restart the
    // listener reconnects by itself and revocations are prompt again.
    pg.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(here.has(&kept.secret), "serving from memory while the store is down");
    pg.start_server();
    here.wait_listening(&other).await;
    let t = other.create(token("alice"), &Actor::default()).await.unwrap();
    assert!(within(Duration::from_secs(1), || here.has(&t.secret)).await.is_some());
    other.revoke(&t.record.id, &Actor::default()).await.unwrap();
    let took = within(Duration::from_secs(1), || !here.has(&t.secret)).await;
    assert!(took.is_some(), "after a restart, the revocation did not reach the cache within 1 s");

    here.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_made_while_the_listener_was_cut_off_is_applied_when_it_reconnects() {
    let pg = PgCluster::start();
    let location = Location::parse(&fresh_database(&pg.url()).await).unwrap();
    let other = Store::open(&location).await.unwrap();
    let here = Instance::start(&location).await;
    here.wait_listening(&other).await;
    let t = other.create(token("alice"), &Actor::default()).await.unwrap();
    assert!(within(Duration::from_secs(1), || here.has(&t.secret)).await.is_some());

    // Cut the listening connection and revoke before it is back: the notification is
    // lost, the catch-up from the event sequence is not.
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let cut = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN patgate_token_events%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(cut.len(), 1, "one listening connection");
    other.revoke(&t.record.id, &Actor::default()).await.unwrap();
    let took = within(Duration::from_secs(5), || !here.has(&t.secret)).await;
    assert!(took.is_some(), "the revocation was missed across the reconnect");

    // And across a restart of the server.
    let u = other.create(token("alice"), &Actor::default()).await.unwrap();
    assert!(within(Duration::from_secs(1), || here.has(&u.secret)).await.is_some());
    pg.restart();
    other.revoke(&u.record.id, &Actor::default()).await.unwrap();
    let took = within(Duration::from_secs(5), || !here.has(&u.secret)).await;
    assert!(took.is_some(), "the revocation was missed across the restart");

    here.stop().await;
}
