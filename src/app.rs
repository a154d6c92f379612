//! Running the server: open the store, load every live token into memory, follow the
//! event feed, deliver the audit trail to its streams and warn of expiring tokens, serve
//! the proxy and the admin API (each on its own listener, sharing the store and the tokens
//! in memory) within limits, and drain both on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Semaphore};

use crate::admin::{self, AdminState};
use crate::audit::{self, streams::Streams};
use crate::config::{self, Config};
use crate::proxy::upstream::Upstream;
use crate::proxy::{LiveConfig, Proxy, Shared};
use crate::server::accept::{self, Listener};
use crate::store::token_cache::TokenCache;
use crate::store::{follow, Store, StoreError};

/// Descriptors kept for everything but proxied connections: the listeners, the store, log
/// files, git http-backend's pipes.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Raises the soft limit on open files to the hard one (as nginx's `worker_rlimit_nofile`
/// and Go's runtime do: a shell starts programs with 1024), and returns how many proxied
/// connections it covers, at two descriptors each (client and upstream), past the admin
/// listener's and the reserve. When that is fewer than `server.max_connections`, it says so
/// once: connections past it wait in the listener's accept queue rather than fail admitted
/// ones with "Too many open files".
fn descriptors_allow(max_connections: usize, admin_connections: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot read or raise the open-file limit");
            return max_connections;
        }
    };
    let spare = limit.saturating_sub(RESERVED_DESCRIPTORS + admin_connections as u64);
    let covered = usize::try_from(spare / 2).unwrap_or(usize::MAX).max(1);
    if covered < max_connections {
        tracing::warn!(
            open_files = limit,
            server.max_connections = max_connections,
            connections = covered,
            "The open-file limit covers fewer connections than server.max_connections; the rest wait to be accepted (raise LimitNOFILE or ulimit -n)"
        );
        return covered;
    }
    tracing::debug!(open_files = limit, "Open-file limit");
    max_connections
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `place` names the key that gave the address, and where it was set.
    #[error("{place}: cannot listen on {addr}")]
    Bind {
        place: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start a proxy worker thread")]
    Thread(#[source] std::io::Error),
    #[error("cannot listen for SIGHUP")]
    Signal(#[source] std::io::Error),
}

/// Serves until `shutdown` resolves, then stops accepting and lets requests in flight
/// finish for up to the configured grace period. SIGHUP reloads the configuration file.
pub async fn serve(config: Config, shutdown: impl std::future::Future<Output = ()>) -> Result<(), AppError> {
    // Before anything else: unhandled, SIGHUP would end the process.
    let mut hangup = signal(SignalKind::hangup()).map_err(AppError::Signal)?;
    let store = Store::open_with(&config.store.location, config.store.max_connections).await?;
    let tokens = Arc::new(TokenCache::default());
    tokens.set_rotation_grace(config.admin.policy.rotation_grace);
    let started = std::time::Instant::now();
    let n = follow::load(&store, &tokens).await?;
    tracing::info!(
        tokens = n,
        seq = tokens.seq(),
        store = %config.store.location,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Tokens loaded"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let follower = tokio::spawn(follow::follow(store.clone(), tokens.clone(), config.store.clone(), stop_rx.clone()));
    // The audit trail's writer: refusals and allowed requests, behind the request path.
    let (auditor, audit_writer) = audit::writer::start(store.clone(), &config.audit);
    // The audit trail to its streams, and the expiry warnings into the trail.
    let (streams, streams_task) = Streams::start(store.clone(), &config.audit, stop_rx.clone());
    let expiry = audit::expiry::start(store.clone(), tokens.clone(), config.audit.expiry_warning, stop_rx.clone());

    let (admin, admin_state) = match config.admin.enabled {
        false => (None, None),
        true => {
            let listen = config.admin.listen;
            let bind_error = |source| AppError::Bind {
                place: config.place("admin.listen"),
                addr: listen,
                source,
            };
            let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
            let addr = listener.local_addr().map_err(bind_error)?;
            // Not "Listening": that line announces the proxy's address.
            tracing::info!(%addr, tls = config.admin.tls.is_some(), "Admin API up");
            let state = AdminState::new(config.admin.clone(), store, tokens.clone(), stop_rx.clone());
            state.set_streams(streams.clone());
            state.set_auditor(auditor.clone());
            (Some(tokio::spawn(admin::serve(listener, state.clone()))), Some(state))
        }
    };

    let workers = config.proxy.workers.max(1);
    let bind_error = |source| AppError::Bind {
        place: config.place("server.listen"),
        addr: config.proxy.listen,
        source,
    };
    let sockets = bind_shared(config.proxy.listen, workers).map_err(bind_error)?;
    let addr = sockets[0].local_addr().map_err(bind_error)?;
    if let Some(admin) = &admin_state {
        admin.proxy_listening();
    }
    let tls = config.accept.tls.is_some();
    tracing::info!(
        %addr,
        workers,
        tls,
        config = %config.source.display(),
        version = crate::build_info::VERSION,
        commit = crate::build_info::COMMIT,
        "Listening"
    );
    for route in config.proxy.routes.iter() {
        if let Upstream::GitHttpBackend(root) = &route.target {
            if !root.is_dir() {
                tracing::warn!(route = %route.pattern, folder = %root.display(), "Repository folder does not exist yet");
            }
        }
    }

    let max = descriptors_allow(config.proxy.max_connections, config.admin.max_connections);
    let max = max.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize) as u32;
    let listener = Arc::new(Listener::new(
        config.accept.clone(),
        max as usize,
        config.proxy.trusted_proxies.clone(),
    ));
    let proxy = Proxy::new(Arc::new(config.proxy.clone()), tokens.clone()).with_auditor(auditor);
    // One table of failed authentications for both listeners.
    if let Some(admin) = &admin_state {
        admin.replace_lockout(proxy.live().load().lockout.clone());
    }
    let mut reload = Reload {
        running: config,
        live: proxy.live().clone(),
        listener: listener.clone(),
        admin: admin_state,
        streams,
        tokens,
    };
    let grace = proxy.config().shutdown_grace;
    let (exit_tx, exit_rx) = watch::channel(false);
    let mut threads = Vec::with_capacity(workers);
    for (i, socket) in sockets.into_iter().enumerate() {
        let worker = Worker {
            socket,
            proxy: proxy.for_worker(),
            listener: listener.clone(),
            stop: stop_rx.clone(),
            exit: exit_rx.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("patgate-worker-{i}"))
            .spawn(move || worker.run())
            .map_err(AppError::Thread)?;
        threads.push(thread);
    }

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hangup.recv() => reload.reload(),
        }
    }
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends: all slots back means all drained.
    let slots = listener.slots();
    if tokio::time::timeout(grace, slots.acquire_many(max)).await.is_err() {
        tracing::warn!(
            connections = max as usize - slots.available_permits(),
            "Shutdown grace ended with connections open"
        );
    }
    let _ = exit_tx.send(true);
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    // Nothing records any more: what the audit queue holds is written before the store closes.
    audit_writer.finish().await;
    let _ = follower.await;
    let _ = streams_task.await;
    let _ = expiry.await;
    tracing::info!("Stopped");
    Ok(())
}

/// What SIGHUP reloads: the routes with their rules, the trusted proxies, the body rate
/// and the brute-force limits, the admin policy (with the rotation grace), and the
/// listeners' certificates; and it
/// makes file audit streams reopen their files. Each is replaced whole, in one store, so a request sees the old set or
/// the new one, never a mix. Other keys take effect at the next start; a change to one is
/// logged. A config that does not load is refused with its error, and the running one stays.
struct Reload {
    running: Config,
    live: Shared,
    listener: Arc<Listener>,
    admin: Option<AdminState>,
    streams: Streams,
    tokens: Arc<TokenCache>,
}

impl Reload {
    fn reload(&mut self) {
        // Whatever the file holds: logrotate sends SIGHUP once it has moved the files away.
        self.streams.reopen();
        let new = match config::load(&self.running.source) {
            Ok(c) => c,
            Err(e) => {
                crate::telemetry::metrics::metrics().reload(false);
                tracing::error!(error = %e, "Reload refused; the running configuration stays");
                return;
            }
        };
        for key in restart_needed(&self.running, &new) {
            tracing::warn!(key, "Changed in the file; takes effect at the next start");
        }
        let live = LiveConfig::new(&new.proxy, Some(&self.live.load()));
        if let Some(admin) = &self.admin {
            admin.replace_lockout(live.lockout.clone());
        }
        self.live.store(Arc::new(live));
        self.listener.replace_trusted(new.proxy.trusted_proxies.clone());
        if let Some(tls) = &new.accept.tls {
            self.listener.replace_tls(tls);
        }
        self.tokens.set_rotation_grace(new.admin.policy.rotation_grace);
        if let Some(admin) = &self.admin {
            admin.replace_policy(new.admin.policy.clone());
            if let Some(tls) = &new.admin.tls {
                admin.replace_tls(tls);
            }
        }
        crate::telemetry::metrics::metrics().reload(true);
        tracing::info!(routes = new.proxy.routes.iter().count(), config = %new.source.display(), "Configuration reloaded");
        // What is reported next time as needing a restart is measured against what runs.
        self.running.proxy.routes = new.proxy.routes;
        self.running.proxy.trusted_proxies = new.proxy.trusted_proxies;
        self.running.proxy.body_rate = new.proxy.body_rate;
        self.running.proxy.brute_force = new.proxy.brute_force;
        self.running.admin.policy = new.admin.policy;
        self.running.accept.tls = self.running.accept.tls.take().and(new.accept.tls);
        self.running.admin.tls = self.running.admin.tls.take().and(new.admin.tls);
    }
}

/// The keys whose new values need a restart.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.proxy, &new.proxy);
    let checks = [
        ("server.listen", o.listen != n.listen),
        ("server.workers", o.workers != n.workers),
        ("server.max_connections", o.max_connections != n.max_connections),
        ("server.header_read_timeout", o.header_read_timeout != n.header_read_timeout),
        ("server.max_header_bytes", o.max_header_bytes != n.max_header_bytes),
        ("server.shutdown_grace", o.shutdown_grace != n.shutdown_grace),
        (
            "server.max_connections_per_ip",
            old.accept.max_connections_per_ip != new.accept.max_connections_per_ip,
        ),
        ("server.idle_timeout", old.accept.idle_timeout != new.accept.idle_timeout),
        ("server.tls", old.accept.tls.is_some() != new.accept.tls.is_some()),
        (
            "server.tls.handshake_timeout",
            handshake(&old.accept.tls) != handshake(&new.accept.tls),
        ),
        ("http2", old.accept.http2 != new.accept.http2),
        ("upstream", o.upstream != n.upstream),
        ("git", o.git != n.git),
        ("store", old.store != new.store),
        ("admin.listen", old.admin.listen != new.admin.listen),
        ("admin.enabled", old.admin.enabled != new.admin.enabled),
        ("admin.tls", old.admin.tls.is_some() != new.admin.tls.is_some()),
        (
            "admin.tls.handshake_timeout",
            handshake(&old.admin.tls) != handshake(&new.admin.tls),
        ),
        ("admin.max_body_bytes", old.admin.max_body_bytes != new.admin.max_body_bytes),
        ("admin.max_wait", old.admin.max_wait != new.admin.max_wait),
        (
            "admin.leak_reports_per_minute",
            old.admin.leak_reports_per_minute != new.admin.leak_reports_per_minute,
        ),
        (
            "admin.max_secrets_per_report",
            old.admin.max_secrets_per_report != new.admin.max_secrets_per_report,
        ),
        ("admin.max_connections", old.admin.max_connections != new.admin.max_connections),
        ("log", old.log != new.log),
        ("audit", old.audit != new.audit),
    ];
    checks.into_iter().filter(|(_, changed)| *changed).map(|(k, _)| k).collect()
}

fn handshake(tls: &Option<crate::server::tls::ListenerTls>) -> Option<std::time::Duration> {
    tls.as_ref().map(|t| t.handshake_timeout)
}

/// Binds the proxy's listening socket once and hands each of `n` workers a handle on it.
/// Every worker waits on the same socket, so a new connection goes to whichever worker
/// is free first. (`SO_REUSEPORT` would spread connections by hash instead, also onto a
/// busy worker, and would let a second process bind the same port without an error.)
fn bind_shared(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(1024)?.into_std()?;
    let mut out = Vec::with_capacity(n);
    for _ in 1..n {
        out.push(listener.try_clone()?);
    }
    out.push(listener);
    Ok(out)
}

/// One proxy worker: a thread with its own single-threaded event loop, its own handle on
/// the listening socket and its own upstream connection pool, as nginx and Pingora run one per core.
/// Connections never move between workers, so nothing on the request path is shared
/// but the token copy, the config and the limits.
struct Worker {
    socket: std::net::TcpListener,
    proxy: Proxy,
    listener: Arc<Listener>,
    /// Turns true when accepting stops and connections should finish.
    stop: watch::Receiver<bool>,
    /// Turns true when the grace period is over: the worker ends, dropping what is left.
    exit: watch::Receiver<bool>,
}

impl Worker {
    fn run(self) {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "Cannot start a worker");
                return;
            }
        };
        let Worker {
            socket,
            proxy,
            listener,
            stop,
            mut exit,
        } = self;
        rt.block_on(async move {
            let socket = match TcpListener::from_std(socket) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "Cannot start a worker");
                    return;
                }
            };
            accept::accept_loop(socket, Arc::new(proxy), listener, stop).await;
            // Connections drain on this thread's loop until the server says the grace is over.
            let _ = exit.wait_for(|&e| e).await;
        });
    }
}
