//! Keeping a [`TokenCache`] current: load a snapshot at start, then apply the event feed
//! every poll interval, prune expired tokens, and write back when tokens were last used.
//! A store that cannot be reached is logged and retried; serving goes on from memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::memory::TokenCache;
use super::{now, Config, Store, StoreError};

/// Events applied per read of the feed.
const BATCH: usize = 1000;

/// Fills `cache` with every live token; returns how many.
pub async fn load(store: &Store, cache: &TokenCache) -> Result<usize, StoreError> {
    let _applying = cache.apply_lock.lock().await;
    let snap = store.snapshot().await?;
    let t = now();
    for r in &snap.live {
        cache.apply(r, t);
    }
    cache.set_seq(snap.seq);
    Ok(snap.live.len())
}

/// Applies every event after the cache's sequence number; returns how many.
pub async fn catch_up(store: &Store, cache: &TokenCache) -> Result<usize, StoreError> {
    let _applying = cache.apply_lock.lock().await;
    let mut applied = 0;
    loop {
        let changes = store.changes_since(cache.seq(), BATCH).await?;
        let n = changes.len();
        let t = now();
        for c in changes {
            match &c.record {
                Some(r) => cache.apply(r, t),
                None => cache.remove_id(&c.event.token_id),
            }
            tracing::debug!(token.id = %c.event.token_id, event = ?c.event.kind, seq = c.event.seq, "Token event applied");
            cache.set_seq(c.event.seq);
        }
        applied += n;
        if n < BATCH {
            return Ok(applied);
        }
    }
}

/// Runs until `shutdown` turns true, then writes back the last uses once more.
pub async fn follow(store: Store, cache: Arc<TokenCache>, config: Config, mut shutdown: watch::Receiver<bool>) {
    let mut poll = tokio::time::interval(config.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_flush = Instant::now();
    let mut last_prune = Instant::now();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = poll.tick() => {}
            _ = shutdown.changed() => break,
        }
        match catch_up(&store, &cache).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!(seq = cache.seq(), "Token store reachable again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "Token store unreachable; serving from memory");
            }
            Err(_) => {}
        }
        if last_prune.elapsed() >= Duration::from_secs(60) {
            last_prune = Instant::now();
            let n = cache.prune_expired(now());
            if n > 0 {
                tracing::debug!(count = n, "Expired tokens dropped from memory");
            }
        }
        if last_flush.elapsed() >= config.last_used_flush_interval {
            last_flush = Instant::now();
            flush_uses(&store, &cache).await;
        }
    }
    flush_uses(&store, &cache).await;
}

async fn flush_uses(store: &Store, cache: &TokenCache) {
    let uses = cache.take_unflushed_uses();
    if let Err(e) = store.record_last_used(uses).await {
        tracing::warn!(error = %e, "Could not record token use times");
    }
}
