//! Running the server: open the store, load every live token into memory, follow the
//! event feed, serve the proxy and the admin API (each on its own listener, sharing the
//! store and the tokens in memory) within limits, and drain both on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{watch, Semaphore};

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::proxy::framing::{FramingWatch, Watched};
use crate::proxy::upstream::Upstream;
use crate::proxy::{self, Proxy};
use crate::store::memory::TokenCache;
use crate::store::{follow, Store, StoreError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Serves until `shutdown` resolves, then stops accepting and lets requests in flight
/// finish for up to the configured grace period.
pub async fn serve(config: Config, shutdown: impl std::future::Future<Output = ()>) -> Result<(), AppError> {
    let store = Store::open(&config.store.location).await?;
    let tokens = Arc::new(TokenCache::default());
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

    let admin = match config.admin.enabled {
        false => None,
        true => {
            let listen = config.admin.listen;
            let listener = TcpListener::bind(listen)
                .await
                .map_err(|source| AppError::Bind { addr: listen, source })?;
            let addr = listener.local_addr().map_err(|source| AppError::Bind { addr: listen, source })?;
            // Not "Listening": that line announces the proxy's address.
            tracing::info!(%addr, "Admin API up");
            let state = AdminState::new(config.admin.clone(), store, tokens.clone(), stop_rx.clone());
            Some(tokio::spawn(admin::serve(listener, state)))
        }
    };

    let workers = config.proxy.workers.max(1);
    let listeners = bind_shared(config.proxy.listen, workers).map_err(|source| AppError::Bind {
        addr: config.proxy.listen,
        source,
    })?;
    let addr = listeners[0].local_addr().map_err(|source| AppError::Bind {
        addr: config.proxy.listen,
        source,
    })?;
    tracing::info!(%addr, workers, config = %config.source.display(), "Listening");
    for route in config.proxy.routes.iter() {
        if let Upstream::GitHttpBackend(root) = &route.target {
            if !root.is_dir() {
                tracing::warn!(route = %route.pattern, folder = %root.display(), "Repository folder does not exist yet");
            }
        }
    }

    let proxy = Proxy::new(Arc::new(config.proxy), tokens);
    let max = proxy.config().max_connections.min(u32::MAX as usize) as u32;
    let grace = proxy.config().shutdown_grace;
    let slots = Arc::new(Semaphore::new(max as usize));
    let (exit_tx, exit_rx) = watch::channel(false);
    let mut threads = Vec::with_capacity(workers);
    for (i, listener) in listeners.into_iter().enumerate() {
        let worker = Worker {
            listener,
            proxy: proxy.for_worker(),
            slots: slots.clone(),
            stop: stop_rx.clone(),
            exit: exit_rx.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("patgate-worker-{i}"))
            .spawn(move || worker.run())
            .map_err(|source| AppError::Bind { addr, source })?;
        threads.push(thread);
    }

    shutdown.await;
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends: all slots back means all drained.
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
    let _ = follower.await;
    tracing::info!("Stopped");
    Ok(())
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
    listener: std::net::TcpListener,
    proxy: Proxy,
    slots: Arc<Semaphore>,
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
            listener,
            proxy,
            slots,
            stop,
            mut exit,
        } = self;
        rt.block_on(async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "Cannot start a worker");
                    return;
                }
            };
            accept_loop(listener, Arc::new(proxy), slots, stop).await;
            // Connections drain on this thread's loop until the server says the grace is over.
            let _ = exit.wait_for(|&e| e).await;
        });
    }
}

async fn accept_loop(listener: TcpListener, proxy: Arc<Proxy>, limit: Arc<Semaphore>, stop: watch::Receiver<bool>) {
    let mut stopping = stop.clone();
    let mut shutdown = std::pin::pin!(stopping.wait_for(|&s| s));
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => return,
            slot = limit.clone().acquire_owned() => match slot { Ok(s) => s, Err(_) => return },
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let proxy = proxy.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let config = proxy.config();
            let framing = FramingWatch::new(config.max_header_bytes);
            let conn_info = Arc::new(proxy::Connection {
                peer,
                framing: framing.clone(),
                upstream: Default::default(),
            });
            let io = TokioIo::new(Watched::new(tcp, framing));
            let service = {
                let proxy = proxy.clone();
                service_fn(move |req| {
                    let proxy = proxy.clone();
                    let conn_info = conn_info.clone();
                    async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, &conn_info).await) }
                })
            };
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(config.header_read_timeout)
                .max_buf_size(config.max_header_bytes)
                .keep_alive(true)
                .serve_connection(io, service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => log_conn_end(r),
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    log_conn_end(conn.await);
                }
            }
            drop(slot);
        });
    }
}

fn log_conn_end(r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "Connection ended with an error");
    }
}
