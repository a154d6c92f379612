//! Keeping a [`TokenCache`] current: load a snapshot at start, then apply the event feed
//! every poll interval, prune expired tokens, and write back when tokens were last used.
//! With PostgreSQL a listener on a dedicated connection also applies the feed as soon as
//! a change is committed anywhere, and after a lost connection it reconnects with a
//! bounded backoff and catches up. A store that cannot be reached is logged once and
//! retried; serving goes on from memory and never waits on this module.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::postgres::PgStore;
use super::token_cache::TokenCache;
use super::{now, Config, Store, StoreError, TokenRecord};
use crate::telemetry::metrics::metrics;

/// Events applied per read of the feed.
const BATCH: usize = 1000;
/// The first wait before reconnecting the listener, doubled after each failure...
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// ...up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Fills `cache` with every live token; returns how many.
pub async fn load(store: &Store, cache: &Arc<TokenCache>) -> Result<usize, StoreError> {
    let _applying = cache.apply_lock.lock().await;
    let t = now();
    // Reading and parsing rows on one thread while another puts them into memory, in
    // batches through a bounded channel: a million tokens are never held twice.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<TokenRecord>>(LOAD_QUEUE);
    let into = cache.clone();
    let applier = std::thread::Builder::new()
        .name("patgate-load".into())
        .spawn(move || {
            for batch in rx {
                for r in &batch {
                    into.apply(r, t);
                }
            }
        })
        .map_err(|e| StoreError::Database(format!("cannot start loading: {e}")))?;
    let mut batcher = Batcher {
        batch: Vec::with_capacity(LOAD_BATCH),
        tx,
    };
    let read = store.snapshot_each(move |r| batcher.push(r)).await;
    // The reader's end is gone (the remainder sent on drop): the applier finishes.
    let applied = tokio::task::spawn_blocking(move || applier.join().is_ok()).await.unwrap_or(false);
    let (n, seq) = read?;
    if !applied {
        return Err(StoreError::Database("loading tokens into memory failed".into()));
    }
    // Read after the snapshot: a rotation since is in both, which does no harm.
    for (hash, id, at) in store.rotated_away().await? {
        cache.remember_rotated(hash, &id, at);
    }
    cache.set_seq(seq);
    Ok(n)
}

/// Records per batch handed from the reader to the applier at start.
const LOAD_BATCH: usize = 512;
/// Batches in flight at most.
const LOAD_QUEUE: usize = 4;

/// Gathers records into batches for the applier; sends what is left when dropped.
struct Batcher {
    batch: Vec<TokenRecord>,
    tx: std::sync::mpsc::SyncSender<Vec<TokenRecord>>,
}

impl Batcher {
    fn push(&mut self, r: TokenRecord) {
        self.batch.push(r);
        if self.batch.len() == LOAD_BATCH {
            let full = std::mem::replace(&mut self.batch, Vec::with_capacity(LOAD_BATCH));
            let _ = self.tx.send(full);
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        if !self.batch.is_empty() {
            let _ = self.tx.send(std::mem::take(&mut self.batch));
        }
    }
}

/// A change applied this many seconds or more after its commit is late. Event times are
/// whole seconds, so 2 means certainly more than one second.
const LATE_SECONDS: i64 = 2;

/// Applies every event after the cache's sequence number; returns how many. Sets the
/// feed's lag metrics, and logs changes that arrived late.
pub async fn catch_up(store: &Store, cache: &TokenCache) -> Result<usize, StoreError> {
    let _applying = cache.apply_lock.lock().await;
    let mut applied = 0;
    let mut oldest = 0;
    let mut late = 0;
    let m = metrics();
    loop {
        let changes = store.changes_since(cache.seq(), BATCH).await?;
        let n = changes.len();
        let t = now();
        for c in changes {
            let age = t - c.event.at;
            oldest = oldest.max(age);
            if age >= LATE_SECONDS {
                late += 1;
                if late == 1 {
                    tracing::warn!(
                        token.id = %c.event.token_id,
                        event = ?c.event.kind,
                        seq = c.event.seq,
                        lag_s = age,
                        "Token change applied late"
                    );
                }
            }
            if let Some(old) = c.rotated_away {
                cache.remember_rotated(old, &c.event.token_id, c.event.at);
            }
            match &c.record {
                Some(r) => cache.apply(r, t),
                None => cache.remove_id(&c.event.token_id),
            }
            tracing::debug!(token.id = %c.event.token_id, event = ?c.event.kind, seq = c.event.seq, "Token event applied");
            cache.set_seq(c.event.seq);
        }
        applied += n;
        if n < BATCH {
            m.feed_lag_events.set(applied as i64);
            m.feed_lag_seconds.set(oldest.max(0) as f64);
            if late > 0 {
                m.feed_late_events.inc_by(late);
                if late > 1 {
                    tracing::warn!(count = late, max_lag_s = oldest, "Token changes applied late");
                }
            }
            return Ok(applied);
        }
    }
}

/// What the listener tells the follower.
#[derive(Debug)]
enum Wake {
    /// Changes were committed, or the listener (re)connected: read the feed now.
    Changes,
    /// The listening connection is lost; the listener is reconnecting.
    Lost(StoreError),
}

/// Runs until `shutdown` turns true, then writes back the last uses once more.
///
/// Reading the feed has a task of its own: the write-back of uses and the pruning of
/// expired tokens run beside it (`upkeep`), so that a slow write-back (many tokens
/// used, rows locked by another instance's, a busy database) never holds a revocation
/// back. They used to run in this loop, after the read: a change committed during a
/// write-back of several seconds waited for it to end.
pub async fn follow(store: Store, cache: Arc<TokenCache>, config: Config, mut shutdown: watch::Receiver<bool>) {
    let upkeep = tokio::spawn(upkeep(store.clone(), cache.clone(), config.clone(), shutdown.clone()));
    let reuse = tokio::spawn(revoke_reused(store.clone(), cache.clone(), shutdown.clone()));
    let mut poll = tokio::time::interval(config.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    // Since when the feed could not be read, for the lag metric.
    let mut last_read = Instant::now();
    let m = metrics();
    cache.set_store_reachable(true);
    let (wake_tx, mut wake_rx) = mpsc::channel(16);
    let listener = match &store {
        Store::Postgres(pg) => Some(tokio::spawn(listen(pg.clone(), wake_tx))),
        Store::Sqlite(_) => None,
    };
    loop {
        let wake = tokio::select! {
            _ = poll.tick() => Wake::Changes,
            Some(wake) = wake_rx.recv() => wake,
            _ = shutdown.changed() => break,
        };
        match wake {
            Wake::Lost(e) => {
                if !failing {
                    failing = true;
                    cache.set_store_reachable(false);
                    tracing::warn!(error = %e, "Token store unreachable; serving from memory");
                }
                continue;
            }
            Wake::Changes => {}
        }
        match catch_up(&store, &cache).await {
            Ok(_) => {
                last_read = Instant::now();
                if failing {
                    failing = false;
                    cache.set_store_reachable(true);
                    tracing::info!(seq = cache.seq(), "Token store reachable again");
                }
            }
            Err(e) => {
                // Unread, the feed falls behind by the time since it was last read.
                m.feed_lag_seconds.set(last_read.elapsed().as_secs_f64());
                if !failing {
                    failing = true;
                    cache.set_store_reachable(false);
                    tracing::warn!(error = %e, "Token store unreachable; serving from memory");
                }
            }
        }
    }
    if let Some(listener) = listener {
        listener.abort();
    }
    let _ = reuse.await;
    // The last uses are written once the upkeep has stopped, so that no write-back runs twice at once.
    let _ = upkeep.await;
    flush_uses(&store, &cache).await;
}

/// The actor recorded for a revocation on the reuse of a rotated-away secret.
pub const REUSE_ACTOR: &str = "patgate:rotated-secret-reused";

/// Until `shutdown`: revokes in the store every token whose rotated-away secret was
/// presented ([`TokenCache::rotated_away`] has already taken it out of this instance's
/// memory), retrying while the store cannot be reached, so that every instance refuses
/// it once the feed brings the revocation.
async fn revoke_reused(store: Store, cache: Arc<TokenCache>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let reused = tokio::select! {
            r = cache.take_reused() => r,
            _ = shutdown.changed() => return,
        };
        for token in reused {
            tracing::warn!(
                token.id = %token.id,
                owner = %token.owner,
                "Rotated-away secret presented again; revoking the token"
            );
            let mut wait = BACKOFF_MIN;
            loop {
                match store.revoke_reused(&token.id, &crate::audit::Actor::named(REUSE_ACTOR)).await {
                    Ok(_) => break,
                    Err(StoreError::NotFound(_)) => break,
                    Err(e) => {
                        tracing::warn!(token.id = %token.id, error = %e, "Cannot revoke the token yet; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.changed() => return,
                        }
                        wait = (wait * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
        let _ = catch_up(&store, &cache).await;
    }
}

/// Until `shutdown`: writes back the uses every `last_used_flush_interval`, and drops
/// expired tokens from memory every minute.
async fn upkeep(store: Store, cache: Arc<TokenCache>, config: Config, mut shutdown: watch::Receiver<bool>) {
    let mut flush = tokio::time::interval(config.last_used_flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    flush.tick().await;
    let mut prune = tokio::time::interval(PRUNE_INTERVAL);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    prune.tick().await;
    loop {
        tokio::select! {
            _ = flush.tick() => flush_uses(&store, &cache).await,
            _ = prune.tick() => {
                let n = cache.prune_expired(now());
                if n > 0 {
                    tracing::debug!(count = n, "Expired tokens dropped from memory");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// How often expired tokens are dropped from memory (the request path refuses them at
/// once all the same: it compares each token's expiry with the time).
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Keeps a connection listening for committed changes and wakes the follower on each,
/// and once more whenever it (re)connects, since changes made meanwhile were not heard.
/// Ends when the follower is gone.
async fn listen(pg: Arc<PgStore>, wake: mpsc::Sender<Wake>) {
    let mut backoff = BACKOFF_MIN;
    // A loss is reported once, not at every failed reconnection.
    let mut reported = false;
    loop {
        match pg.listen().await {
            Ok(mut listener) => {
                backoff = BACKOFF_MIN;
                tracing::debug!("Listening for token changes");
                if wake.send(Wake::Changes).await.is_err() {
                    return;
                }
                let lost = loop {
                    match listener.next().await {
                        // A full queue already holds a wake-up that reads this change.
                        Ok(()) => match wake.try_send(Wake::Changes) {
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                        },
                        Err(e) => break e,
                    }
                };
                reported = true;
                if wake.send(Wake::Lost(lost)).await.is_err() {
                    return;
                }
            }
            Err(e) if !reported => {
                reported = true;
                if wake.send(Wake::Lost(e)).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::debug!(error = %e, "Token store listener still cannot connect"),
        }
        if wake.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Writes the uses seen since the last write; on failure they are kept for the next.
async fn flush_uses(store: &Store, cache: &TokenCache) {
    let uses = cache.take_unflushed_uses();
    if uses.is_empty() {
        return;
    }
    if let Err(e) = store.record_last_used(uses.clone()).await {
        tracing::warn!(error = %e, "Could not record token use times; they are kept for the next try");
        cache.return_uses(uses);
    }
}
