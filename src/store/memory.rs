//! The in-memory copy of every live token, keyed by hash: the only part of the store that
//! the request path reads. It is filled from a [`super::Snapshot`] at start and kept
//! current by applying the event feed ([`super::follow`]).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::watch;

use super::TokenRecord;
use crate::auth::scope::ScopeSet;
use crate::auth::token::{PassThroughState, TokenHash};
use crate::auth::Orgs;

/// What the request path needs of a live token.
#[derive(Debug)]
pub struct CachedToken {
    pub id: Box<str>,
    pub owner: Box<str>,
    pub orgs: Orgs,
    pub scopes: ScopeSet,
    pub expires_at: i64,
    /// Unix seconds of the last use seen by this process (0: none).
    last_used: AtomicI64,
    /// The value of `last_used` last written back to the store.
    flushed: AtomicI64,
}

impl CachedToken {
    fn from_record(r: &TokenRecord) -> Self {
        let used = r.last_used_at.unwrap_or(0);
        CachedToken {
            id: r.id.as_str().into(),
            owner: r.owner.as_str().into(),
            orgs: r.orgs.clone(),
            scopes: r.scopes,
            expires_at: r.expires_at,
            last_used: AtomicI64::new(used),
            flushed: AtomicI64::new(used),
        }
    }

    /// Notes a use at `now`. Writes only when the second changes, to keep the cache line shared.
    #[inline]
    pub fn touch(&self, now: i64) {
        if self.last_used.load(Ordering::Relaxed) < now {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }
}

/// Live tokens by hash, and each token's current hash by id.
pub struct TokenCache {
    by_hash: DashMap<TokenHash, Arc<CachedToken>, PassThroughState>,
    by_id: DashMap<Box<str>, TokenHash>,
    seq: AtomicI64,
    /// Tells waiters (the admin API's long poll) the sequence number applied.
    seq_tx: watch::Sender<i64>,
    /// Held while reading and applying the feed, so two readers never apply an older
    /// record over a newer one.
    pub(super) apply_lock: tokio::sync::Mutex<()>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            by_hash: DashMap::default(),
            by_id: DashMap::new(),
            seq: AtomicI64::new(0),
            seq_tx: watch::Sender::new(0),
            apply_lock: tokio::sync::Mutex::new(()),
        }
    }
}

impl TokenCache {
    /// The live token with this hash.
    #[inline]
    pub fn get(&self, hash: &TokenHash) -> Option<Arc<CachedToken>> {
        self.by_hash.get(hash).map(|e| Arc::clone(e.value()))
    }

    /// Brings one token up to date with its record at `now`: inserted or replaced when
    /// live, removed when revoked, expired or gone.
    pub fn apply(&self, record: &TokenRecord, now: i64) {
        let live = record.revoked_at.is_none() && record.expires_at > now;
        if let Some((_, old)) = self.by_id.remove(record.id.as_str()) {
            if old != record.hash || !live {
                self.by_hash.remove(&old);
            }
        }
        if live {
            let mut token = CachedToken::from_record(record);
            if let Some(prev) = self.by_hash.get(&record.hash) {
                // Keep uses seen in this process that the store does not have yet.
                let seen = prev.last_used.load(Ordering::Relaxed);
                token.last_used = AtomicI64::new(seen.max(record.last_used_at.unwrap_or(0)));
                token.flushed = AtomicI64::new(prev.flushed.load(Ordering::Relaxed));
            }
            self.by_hash.insert(record.hash, Arc::new(token));
            self.by_id.insert(record.id.as_str().into(), record.hash);
        }
    }

    /// Removes a token that no longer exists in the store.
    pub fn remove_id(&self, id: &str) {
        if let Some((_, hash)) = self.by_id.remove(id) {
            self.by_hash.remove(&hash);
        }
    }

    /// Drops tokens whose expiry has passed; returns how many.
    pub fn prune_expired(&self, now: i64) -> usize {
        let before = self.by_hash.len();
        self.by_hash.retain(|_, t| t.expires_at > now);
        self.by_id.retain(|_, h| self.by_hash.contains_key(h));
        before - self.by_hash.len()
    }

    /// How many live tokens are held.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// True when no token is held.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The sequence number of the last event applied.
    pub fn seq(&self) -> i64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Records that every event up to `seq` has been applied.
    pub fn set_seq(&self, seq: i64) {
        self.seq.store(seq, Ordering::Release);
        self.seq_tx.send_if_modified(|s| {
            let newer = *s != seq;
            *s = seq;
            newer
        });
    }

    /// Follows the sequence number applied, for waiting until it passes a point.
    pub fn watch_seq(&self) -> watch::Receiver<i64> {
        self.seq_tx.subscribe()
    }

    /// Uses not yet written back: `(id, last_used)` pairs, marked as written.
    pub fn take_unflushed_uses(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for e in self.by_hash.iter() {
            let t = e.value();
            let used = t.last_used.load(Ordering::Relaxed);
            if used > t.flushed.swap(used, Ordering::Relaxed) {
                out.push((t.id.to_string(), used));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::TokenSecret;

    fn rec(id: &str, secret: &TokenSecret, expires_at: i64) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            hash: secret.hash(),
            name: "n".into(),
            owner: "o".into(),
            orgs: Orgs::All,
            scopes: ScopeSet::full(),
            created_at: 0,
            expires_at,
            revoked_at: None,
            revoked_by: None,
            last_used_at: None,
        }
    }

    #[test]
    fn apply_inserts_replaces_and_removes() {
        let cache = TokenCache::default();
        let s1 = TokenSecret::generate();
        let mut r = rec("a", &s1, 100);
        cache.apply(&r, 0);
        assert!(cache.get(&s1.hash()).is_some());
        // A new secret under the same id replaces the old one.
        let s2 = TokenSecret::generate();
        r.hash = s2.hash();
        cache.apply(&r, 0);
        assert!(cache.get(&s1.hash()).is_none());
        assert!(cache.get(&s2.hash()).is_some());
        r.revoked_at = Some(5);
        cache.apply(&r, 0);
        assert!(cache.get(&s2.hash()).is_none());
        assert!(cache.is_empty());
        // Already expired records are not held.
        cache.apply(&rec("b", &s1, 10), 10);
        assert!(cache.is_empty());
    }

    #[test]
    fn uses_are_flushed_once_and_pruning_drops_expired() {
        let cache = TokenCache::default();
        let s = TokenSecret::generate();
        cache.apply(&rec("a", &s, 100), 0);
        cache.get(&s.hash()).unwrap().touch(7);
        assert_eq!(cache.take_unflushed_uses(), vec![("a".to_string(), 7)]);
        assert!(cache.take_unflushed_uses().is_empty());
        assert_eq!(cache.prune_expired(100), 1);
        assert!(cache.is_empty());
    }
}
