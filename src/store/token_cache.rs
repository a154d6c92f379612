//! The in-memory copy of every live token, keyed by hash: the only part of the store that
//! the request path reads. It is filled from a [`super::Snapshot`] at start and kept
//! current by applying the event feed ([`super::follow`]).
//!
//! Tokens that stop being live (revoked, regenerated, expired) are remembered a while by
//! their former hash ([`TokenCache::retired`]), so that a refusal can name the token in the
//! logs and the audit trail; the answer is the same 401 either way.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use compact_str::CompactString;
use dashmap::mapref::entry::Entry;
use dashmap::{DashMap, DashSet};
use tokio::sync::watch;

use super::{TokenRecord, TokenUse};
use crate::auth::orgs::Orgs;
use crate::auth::restrictions::{AllowFrom, Repos};
use crate::auth::scope::ScopeSet;
use crate::auth::token::{PassThroughState, TokenHash};

/// What the request path needs of a live token. Kept small, as a million of them may be
/// held: the id inline, the owner and organization list shared among tokens that have
/// the same ones.
#[derive(Debug)]
pub struct CachedToken {
    pub id: CompactString,
    pub owner: Arc<str>,
    pub orgs: Arc<Orgs>,
    pub scopes: ScopeSet,
    pub expires_at: i64,
    /// Its repositories and address ranges, for the few tokens that have either (one
    /// pointer for the rest).
    pub limits: Option<Arc<Limits>>,
    /// The hash it is held under.
    hash: TokenHash,
    /// Unix seconds of the last use seen by this process (0: none).
    last_used: AtomicI64,
    /// The value of `last_used` last written back to the store.
    flushed: AtomicI64,
}

impl CachedToken {
    /// Notes a use at `now`. Writes only when the second changes, to keep the cache line
    /// shared; true when it did (the first use of this second).
    #[inline]
    pub fn touch(&self, now: i64) -> bool {
        if self.last_used.load(Ordering::Relaxed) < now {
            self.last_used.store(now, Ordering::Relaxed);
            return true;
        }
        false
    }
}

/// What narrows a token beyond scopes and organizations.
#[derive(Debug, PartialEq, Eq)]
pub struct Limits {
    pub repos: Repos,
    pub allow_from: AllowFrom,
}

impl Limits {
    /// The limits of `record`, none when it has neither.
    fn of(record: &TokenRecord) -> Option<Arc<Limits>> {
        (!record.repos.is_all() || !record.allow_from.is_anywhere()).then(|| {
            Arc::new(Limits {
                repos: record.repos.clone(),
                allow_from: record.allow_from.clone(),
            })
        })
    }
}

/// A token whose secret a rotation replaced, by that secret's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotatedAway {
    pub id: CompactString,
    pub owner: Arc<str>,
}

/// What a rotated-away secret presented now is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotated {
    /// Presented within the rotation grace: refused, and nothing else (a request that
    /// was under way when its holder rotated the token).
    Lately(RotatedAway),
    /// Presented after it: the token was taken out and queued for revocation.
    Reused(RotatedAway),
}

/// A token in the table by hash: hashed, compared and looked up as its hash alone, so
/// that the table holds one pointer a token and no second copy of the key.
struct ByHash(Arc<CachedToken>);

impl Hash for ByHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash.hash(state)
    }
}

impl PartialEq for ByHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.hash == other.0.hash
    }
}

impl Eq for ByHash {}

impl Borrow<TokenHash> for ByHash {
    fn borrow(&self) -> &TokenHash {
        &self.0.hash
    }
}

/// A token in the table by id, as [`ByHash`] is by hash.
struct ById(Arc<CachedToken>);

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes: lookups are by `&str`.
        self.0.id.as_str().hash(state)
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        self.0.id.as_str()
    }
}

/// Why a token that was live no longer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retired {
    Revoked,
    /// Its secret was replaced; the old one is retired.
    Regenerated,
    Expired,
}

/// A token no longer live, as remembered under the hash of a secret it had.
#[derive(Debug, Clone)]
pub struct RetiredToken {
    pub id: CompactString,
    pub owner: Arc<str>,
    pub why: Retired,
    /// When it was retired here (Unix seconds).
    at: i64,
}

/// Retired tokens remembered, at most; the oldest go first.
pub const MAX_RETIRED: usize = 100_000;
/// How long a retired token is remembered (seconds).
pub const RETIRED_FOR: i64 = 86_400;

/// Puts `key` in `table`, in place of an equal key if there is one (a plain insert would
/// keep the old key, that is, the old token), in one step under the shard's lock: a
/// reader sees the old token or the new one, never neither.
fn put<K: Hash + Eq, S: std::hash::BuildHasher + Clone>(table: &DashMap<K, (), S>, key: K) {
    match table.entry(key) {
        Entry::Occupied(e) => {
            e.replace_entry(());
        }
        Entry::Vacant(e) => {
            e.insert(());
        }
    }
}

/// Live tokens by hash, and by id.
pub struct TokenCache {
    by_hash: DashMap<ByHash, (), PassThroughState>,
    by_id: DashMap<ById, ()>,
    /// One copy of each owner name and organization list in use.
    owners: DashSet<Arc<str>>,
    org_lists: DashSet<Arc<Orgs>>,
    seq: AtomicI64,
    /// Tells waiters (the admin API's long poll) the sequence number applied.
    seq_tx: watch::Sender<i64>,
    /// Held while reading and applying the feed, so two readers never apply an older
    /// record over a newer one.
    pub(super) apply_lock: tokio::sync::Mutex<()>,
    /// Uses not yet written back of tokens no longer held (revoked, regenerated, expired,
    /// removed), and uses whose write failed: id to the last use. Never touched by the
    /// request path.
    orphaned_uses: std::sync::Mutex<HashMap<String, (i64, Option<IpAddr>)>>,
    /// The client address of each token's latest noted use not yet written back (noted
    /// once a second at most per token, by [`TokenCache::note_client`]).
    last_clients: DashMap<CompactString, IpAddr>,
    /// False while the store cannot be read: the copy is then as of the last read.
    store_reachable: std::sync::atomic::AtomicBool,
    /// Tokens no longer live, by a hash they were held under, read only when a lookup
    /// misses; bounded by [`MAX_RETIRED`] and [`RETIRED_FOR`].
    retired: DashMap<TokenHash, RetiredToken, PassThroughState>,
    /// The order they were retired in, for the bound.
    retired_order: std::sync::Mutex<VecDeque<(TokenHash, i64)>>,
    /// Secrets that rotations replaced, of live tokens: digest to token id and the time of
    /// the rotation (Unix seconds). Kept while the token lives (pruned with
    /// [`TokenCache::prune_expired`]); read only when a lookup misses.
    rotated: DashMap<TokenHash, (CompactString, i64), PassThroughState>,
    /// How long after a rotation its old secret is refused without counting as reuse, in
    /// seconds (`policy.rotation_grace`; none by default here).
    rotation_grace: AtomicI64,
    /// Tokens whose rotated-away secret was presented, to be revoked in the store
    /// ([`TokenCache::take_reused`]), and the wake-up of whoever does it.
    reused: std::sync::Mutex<Vec<RotatedAway>>,
    reused_notify: tokio::sync::Notify,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            by_hash: DashMap::default(),
            by_id: DashMap::new(),
            owners: DashSet::new(),
            org_lists: DashSet::new(),
            seq: AtomicI64::new(0),
            seq_tx: watch::Sender::new(0),
            apply_lock: tokio::sync::Mutex::new(()),
            orphaned_uses: std::sync::Mutex::default(),
            last_clients: DashMap::new(),
            store_reachable: std::sync::atomic::AtomicBool::new(true),
            retired: DashMap::default(),
            retired_order: std::sync::Mutex::default(),
            rotated: DashMap::default(),
            rotation_grace: AtomicI64::new(0),
            reused: std::sync::Mutex::default(),
            reused_notify: tokio::sync::Notify::new(),
        }
    }
}

impl TokenCache {
    /// The live token with this hash.
    #[inline]
    pub fn get(&self, hash: &TokenHash) -> Option<Arc<CachedToken>> {
        self.by_hash.get(hash).map(|e| Arc::clone(&e.key().0))
    }

    /// The token that was held under `hash` and was retired less than [`RETIRED_FOR`]
    /// ago: for naming the token of a refused request. Called only when
    /// [`TokenCache::get`] misses.
    pub fn retired(&self, hash: &TokenHash, now: i64) -> Option<RetiredToken> {
        let r = self.retired.get(hash)?;
        (now - r.at < RETIRED_FOR).then(|| r.value().clone())
    }

    /// Remembers that `hash` was a secret of token `id` until a rotation at `at` (Unix
    /// seconds) replaced it.
    pub fn remember_rotated(&self, hash: TokenHash, id: &str, at: i64) {
        self.rotated.insert(hash, (CompactString::from(id), at));
    }

    /// Sets how long after a rotation its old secret is refused without counting as reuse
    /// (whole seconds; a part of one counts as one).
    pub fn set_rotation_grace(&self, grace: std::time::Duration) {
        let whole = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let secs = i64::try_from(whole).unwrap_or(i64::MAX);
        self.rotation_grace.store(secs, Ordering::Relaxed);
    }

    /// The token a rotation took `hash` from, if it is still live. Presented at `now`
    /// within the rotation grace, it is only named; after it, that token is taken out of
    /// this copy at once (every secret of it refused here from now on) and queued to be
    /// revoked in the store ([`TokenCache::take_reused`]). Called only when
    /// [`TokenCache::get`] misses; no I/O.
    pub fn rotated_away(&self, hash: &TokenHash, now: i64) -> Option<Rotated> {
        let (id, at) = self.rotated.get(hash)?.value().clone();
        // Both times are whole seconds, floored: `<=` makes the grace never shorter than
        // set (it may be up to a second longer), so that reuse is only ever more than the
        // grace after the rotation.
        let grace = self.rotation_grace.load(Ordering::Relaxed);
        if grace > 0 && now.saturating_sub(at) <= grace {
            return self.rotated_away_quietly(hash).map(Rotated::Lately);
        }
        let (token, ()) = self.by_id.remove(id.as_str())?;
        let token = token.0;
        self.by_hash.remove(&token.hash);
        self.keep_unflushed_use(&token);
        self.retire(token.hash, &token.id, token.owner.clone(), Retired::Revoked, now);
        let found = RotatedAway {
            id: token.id.clone(),
            owner: token.owner.clone(),
        };
        self.reused.lock().unwrap_or_else(|e| e.into_inner()).push(found.clone());
        self.reused_notify.notify_one();
        Some(Rotated::Reused(found))
    }

    /// The token a rotation took `hash` from, if it is still live, without taking it out or
    /// reporting it: for a digest kept from before the rotation (a console session), which
    /// is no presentation of the old secret.
    pub fn rotated_away_quietly(&self, hash: &TokenHash) -> Option<RotatedAway> {
        let id = self.rotated.get(hash)?.value().0.clone();
        let token = self.by_id.get(id.as_str())?;
        Some(RotatedAway {
            id: token.key().0.id.clone(),
            owner: token.key().0.owner.clone(),
        })
    }

    /// The tokens whose rotated-away secrets were presented since the last call, waiting
    /// until there is one.
    pub async fn take_reused(&self) -> Vec<RotatedAway> {
        loop {
            let taken = std::mem::take(&mut *self.reused.lock().unwrap_or_else(|e| e.into_inner()));
            if !taken.is_empty() {
                return taken;
            }
            self.reused_notify.notified().await;
        }
    }

    /// Remembers a token that stopped being live; the oldest remembered go first.
    fn retire(&self, hash: TokenHash, id: &str, owner: Arc<str>, why: Retired, now: i64) {
        let mut order = self.retired_order.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&(h, at)) = order.front() {
            if order.len() < MAX_RETIRED && now - at < RETIRED_FOR {
                break;
            }
            order.pop_front();
            // Unless it was retired again since (expired, then revoked).
            self.retired.remove_if(&h, |_, r| r.at == at);
        }
        order.push_back((hash, now));
        self.retired.insert(
            hash,
            RetiredToken {
                id: CompactString::from(id),
                owner,
                why,
                at: now,
            },
        );
    }

    /// Whether `token`, admitted earlier, would still be admitted at `now`: its secret
    /// still held (not revoked, not regenerated) and not expired. For long-lived uses,
    /// such as a WebSocket tunnel, that must end when the token does.
    pub fn still_admits(&self, token: &CachedToken, now: i64) -> bool {
        now < token.expires_at && self.by_hash.contains_key(&token.hash)
    }

    /// Brings one token up to date with its record at `now`: inserted or replaced when
    /// live, removed when revoked, expired or gone.
    pub fn apply(&self, record: &TokenRecord, now: i64) {
        let live = record.revoked_at.is_none() && record.expires_at > now;
        let ended = match record.revoked_at {
            Some(_) => Retired::Revoked,
            None => Retired::Expired,
        };
        let prev = self.by_id.remove(record.id.as_str()).map(|(t, ())| t.0);
        if let Some(old) = &prev {
            if old.hash != record.hash || !live {
                self.by_hash.remove(&old.hash);
                // Its uses would go with it: a token used and revoked before the next
                // write-back must still show when it was last used.
                self.keep_unflushed_use(old);
                let why = if old.hash != record.hash { Retired::Regenerated } else { ended };
                self.retire(old.hash, &old.id, old.owner.clone(), why, now);
            }
        }
        if !live {
            // Also a token never held live here (revoked before this instance saw it).
            if prev.as_ref().is_none_or(|p| p.hash != record.hash) {
                self.retire(record.hash, &record.id, self.owner(&record.owner), ended, now);
            }
            return;
        }
        self.retired.remove(&record.hash);
        let used = record.last_used_at.unwrap_or(0);
        // Keep uses seen in this process that the store does not have yet.
        let (seen, flushed) = match prev.as_deref().filter(|p| p.hash == record.hash) {
            Some(p) => (p.last_used.load(Ordering::Relaxed).max(used), p.flushed.load(Ordering::Relaxed)),
            None => (used, used),
        };
        let token = Arc::new(CachedToken {
            id: CompactString::from(record.id.as_str()),
            owner: self.owner(&record.owner),
            orgs: self.org_list(&record.orgs),
            scopes: record.scopes,
            expires_at: record.expires_at,
            limits: Limits::of(record),
            hash: record.hash,
            last_used: AtomicI64::new(seen),
            flushed: AtomicI64::new(flushed),
        });
        put(&self.by_hash, ByHash(token.clone()));
        put(&self.by_id, ById(token));
    }

    fn owner(&self, name: &str) -> Arc<str> {
        if let Some(o) = self.owners.get(name) {
            return o.key().clone();
        }
        let o: Arc<str> = name.into();
        self.owners.insert(o.clone());
        o
    }

    fn org_list(&self, orgs: &Orgs) -> Arc<Orgs> {
        if let Some(o) = self.org_lists.get(orgs) {
            return o.key().clone();
        }
        let o = Arc::new(orgs.clone());
        self.org_lists.insert(o.clone());
        o
    }

    /// Removes a token that no longer exists in the store.
    pub fn remove_id(&self, id: &str) {
        if let Some((t, ())) = self.by_id.remove(id) {
            self.by_hash.remove(&t.0.hash);
            self.keep_unflushed_use(&t.0);
        }
    }

    /// Drops tokens whose expiry has passed; returns how many.
    pub fn prune_expired(&self, now: i64) -> usize {
        let before = self.by_hash.len();
        self.by_hash.retain(|t, ()| {
            let keep = t.0.expires_at > now;
            if !keep {
                self.keep_unflushed_use(&t.0);
                self.retire(t.0.hash, &t.0.id, t.0.owner.clone(), Retired::Expired, now);
            }
            keep
        });
        self.by_id.retain(|t, ()| t.0.expires_at > now);
        // Rotated-away secrets of tokens no longer live.
        self.rotated.retain(|_, (id, _)| self.by_id.contains_key(id.as_str()));
        // Names and lists no token refers to any more.
        self.owners.retain(|o| Arc::strong_count(o) > 1);
        self.org_lists.retain(|o| Arc::strong_count(o) > 1);
        before - self.by_hash.len()
    }

    /// Calls `f` with each live token held that expires after `now` and by `until` (Unix
    /// seconds): for the expiry warnings and their gauge, off the request path.
    pub fn for_each_expiring(&self, now: i64, until: i64, mut f: impl FnMut(&CachedToken)) {
        for e in self.by_id.iter() {
            let t = &e.key().0;
            if t.expires_at > now && t.expires_at <= until {
                f(t);
            }
        }
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

    /// Whether the store answered its last read ([`super::follow`] says so).
    pub fn store_reachable(&self) -> bool {
        self.store_reachable.load(Ordering::Relaxed)
    }

    pub(super) fn set_store_reachable(&self, reachable: bool) {
        self.store_reachable.store(reachable, Ordering::Relaxed);
    }

    /// Follows the sequence number applied, for waiting until it passes a point.
    pub fn watch_seq(&self) -> watch::Receiver<i64> {
        self.seq_tx.subscribe()
    }

    /// Notes the client address of a use that [`CachedToken::touch`] found the first of
    /// its second: written back with the use.
    pub fn note_client(&self, token: &CachedToken, client: IpAddr) {
        self.last_clients.insert(token.id.clone(), client);
    }

    /// Uses not yet written back, of the tokens held and of those no longer held, with
    /// their client addresses where noted, marked as written. Give them back with
    /// [`TokenCache::return_uses`] if the write fails.
    pub fn take_unflushed_uses(&self) -> Vec<TokenUse> {
        let mut uses = std::mem::take(&mut *self.orphaned_uses.lock().unwrap_or_else(|e| e.into_inner()));
        for e in self.by_hash.iter() {
            let t = &e.key().0;
            let used = t.last_used.load(Ordering::Relaxed);
            if used > t.flushed.swap(used, Ordering::Relaxed) {
                let from = self.last_clients.remove(t.id.as_str()).map(|(_, ip)| ip);
                merge_use(&mut uses, t.id.to_string(), used, from);
            }
        }
        let mut out: Vec<TokenUse> = uses.into_iter().map(|(id, (at, from))| TokenUse { id, at, from }).collect();
        out.sort();
        out
    }

    /// Takes back uses whose write failed, to be written with the next ones.
    pub fn return_uses(&self, uses: Vec<TokenUse>) {
        let mut kept = self.orphaned_uses.lock().unwrap_or_else(|e| e.into_inner());
        for u in uses {
            merge_use(&mut kept, u.id, u.at, u.from);
        }
    }

    /// Keeps the use of a token leaving the cache that was not written back yet.
    fn keep_unflushed_use(&self, token: &CachedToken) {
        let used = token.last_used.load(Ordering::Relaxed);
        if used > token.flushed.swap(used, Ordering::Relaxed) {
            let from = self.last_clients.remove(token.id.as_str()).map(|(_, ip)| ip);
            self.return_uses(vec![TokenUse {
                id: token.id.to_string(),
                at: used,
                from,
            }]);
        }
    }
}

/// Puts a use in `uses`: the later one of a token wins, with its address, or the earlier
/// one's address when the later has none.
fn merge_use(uses: &mut HashMap<String, (i64, Option<IpAddr>)>, id: String, at: i64, from: Option<IpAddr>) {
    let e = uses.entry(id).or_insert((at, from));
    if at > e.0 {
        *e = (at, from.or(e.1));
    } else if e.1.is_none() {
        e.1 = from;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::TokenSecret;

    fn rec(id: &str, secret: &TokenSecret, expires_at: i64) -> TokenRecord {
        TokenRecord {
            repos: Default::default(),
            allow_from: Default::default(),
            rotated_at: None,
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
            last_used_from: None,
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
    fn a_changed_token_with_the_same_secret_is_replaced_in_both_tables() {
        let cache = TokenCache::default();
        let s = TokenSecret::generate();
        let mut r = rec("a", &s, 100);
        cache.apply(&r, 0);
        let old = cache.get(&s.hash()).unwrap();
        r.scopes = ScopeSet::parse(&["code:read"]).unwrap();
        r.expires_at = 200;
        cache.apply(&r, 0);
        let new = cache.get(&s.hash()).unwrap();
        assert!(!Arc::ptr_eq(&old, &new));
        assert_eq!((new.scopes, new.expires_at), (r.scopes, 200));
        assert_eq!(cache.len(), 1);
        // The table by id holds the new one too: past the old expiry it stays there, so
        // removing it by id still removes it by hash.
        assert_eq!(cache.prune_expired(150), 0);
        cache.remove_id("a");
        assert!(cache.get(&s.hash()).is_none() && cache.is_empty());
    }

    #[test]
    fn uses_are_flushed_once_and_pruning_drops_expired() {
        let cache = TokenCache::default();
        let s = TokenSecret::generate();
        cache.apply(&rec("a", &s, 100), 0);
        cache.get(&s.hash()).unwrap().touch(7);
        assert_eq!(cache.take_unflushed_uses(), vec![TokenUse::new("a", 7, None)]);
        assert!(cache.take_unflushed_uses().is_empty());
        assert_eq!(cache.prune_expired(100), 1);
        assert!(cache.is_empty());
    }

    #[test]
    fn tokens_that_stop_being_live_are_remembered_a_while_by_their_hash() {
        let cache = TokenCache::default();
        let why = |s: &TokenSecret, now| cache.retired(&s.hash(), now).map(|r| (r.id.to_string(), r.why));
        // Revoked.
        let s1 = TokenSecret::generate();
        let mut r = rec("a", &s1, 100);
        cache.apply(&r, 0);
        assert!(why(&s1, 0).is_none());
        r.revoked_at = Some(5);
        cache.apply(&r, 5);
        assert_eq!(why(&s1, 6), Some(("a".into(), Retired::Revoked)));
        assert_eq!(cache.retired(&s1.hash(), 6).unwrap().owner.as_ref(), "o");
        // Regenerated: the old secret is superseded, the new one is live.
        let (s2, s3) = (TokenSecret::generate(), TokenSecret::generate());
        let mut r = rec("b", &s2, 100);
        cache.apply(&r, 0);
        r.hash = s3.hash();
        cache.apply(&r, 7);
        assert_eq!(why(&s2, 8), Some(("b".into(), Retired::Regenerated)));
        assert!(why(&s3, 8).is_none() && cache.get(&s3.hash()).is_some());
        // Expired and pruned; and revoked before this copy ever held it.
        let s4 = TokenSecret::generate();
        cache.apply(&rec("c", &s4, 10), 0);
        assert_eq!(cache.prune_expired(10), 1);
        assert_eq!(why(&s4, 11), Some(("c".into(), Retired::Expired)));
        let s5 = TokenSecret::generate();
        let mut r = rec("d", &s5, 100);
        r.revoked_at = Some(1);
        cache.apply(&r, 12);
        assert_eq!(why(&s5, 13), Some(("d".into(), Retired::Revoked)));
        // Forgotten after a day.
        assert!(why(&s1, 5 + RETIRED_FOR).is_none());
    }

    #[test]
    fn retired_tokens_are_bounded_oldest_out() {
        let cache = TokenCache::default();
        let first = TokenSecret::generate();
        let mut r = rec("first", &first, 100);
        r.revoked_at = Some(1);
        cache.apply(&r, 1);
        for i in 0..MAX_RETIRED {
            let mut r = rec(&format!("t{i}"), &TokenSecret::generate(), 100);
            r.revoked_at = Some(2);
            cache.apply(&r, 2);
        }
        assert_eq!(cache.retired.len(), MAX_RETIRED);
        assert!(cache.retired(&first.hash(), 3).is_none(), "the oldest went first");
        // Retired again later (expired, then revoked), a hash outlives its first retirement.
        let again = TokenSecret::generate();
        cache.apply(&rec("again", &again, 10), 0);
        cache.prune_expired(10);
        let mut r = rec("again", &again, 10);
        r.revoked_at = Some(11);
        cache.apply(&r, 11);
        assert_eq!(cache.retired(&again.hash(), 12).unwrap().why, Retired::Revoked);
        // A day later, one retirement sweeps out everything older than a day.
        let late = TokenSecret::generate();
        let mut r = rec("late", &late, RETIRED_FOR + 100);
        r.revoked_at = Some(1);
        cache.apply(&r, 12 + RETIRED_FOR);
        assert_eq!(cache.retired.len(), 1);
    }

    #[test]
    fn a_use_outlives_its_token_leaving_the_cache() {
        let cache = TokenCache::default();
        let s = TokenSecret::generate();
        // Revoked before the write-back.
        let mut r = rec("a", &s, 100);
        cache.apply(&r, 0);
        cache.get(&s.hash()).unwrap().touch(7);
        r.revoked_at = Some(8);
        cache.apply(&r, 8);
        assert!(cache.is_empty());
        assert_eq!(cache.take_unflushed_uses(), vec![TokenUse::new("a", 7, None)]);
        // Regenerated: the old secret's use stays the token's.
        let mut r = rec("b", &s, 100);
        cache.apply(&r, 0);
        cache.get(&s.hash()).unwrap().touch(9);
        r.hash = TokenSecret::generate().hash();
        cache.apply(&r, 9);
        assert_eq!(cache.take_unflushed_uses(), vec![TokenUse::new("b", 9, None)]);
        // Expired and pruned, or gone from the store.
        cache.apply(&rec("c", &s, 100), 0);
        cache.get(&s.hash()).unwrap().touch(10);
        assert_eq!(cache.prune_expired(100), 2);
        let s2 = TokenSecret::generate();
        cache.apply(&rec("d", &s2, 100), 0);
        cache.get(&s2.hash()).unwrap().touch(11);
        cache.remove_id("d");
        let mut uses = cache.take_unflushed_uses();
        uses.sort();
        assert_eq!(uses, vec![TokenUse::new("c", 10, None), TokenUse::new("d", 11, None)]);
        // A failed write gives them back; a later use of the same token wins.
        cache.return_uses(vec![TokenUse::new("c", 10, None)]);
        cache.return_uses(vec![TokenUse::new("c", 12, None), TokenUse::new("c", 3, None)]);
        assert_eq!(cache.take_unflushed_uses(), vec![TokenUse::new("c", 12, None)]);
        assert!(cache.take_unflushed_uses().is_empty());
    }

    #[test]
    fn a_use_is_written_back_with_its_client_address() {
        let cache = TokenCache::default();
        let s = TokenSecret::generate();
        cache.apply(&rec("a", &s, 100), 0);
        let t = cache.get(&s.hash()).unwrap();
        let (one, two): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(t.touch(7));
        cache.note_client(&t, one);
        assert!(!t.touch(7), "the same second again is not a first use");
        assert!(t.touch(8));
        cache.note_client(&t, two);
        assert_eq!(cache.take_unflushed_uses(), vec![TokenUse::new("a", 8, Some(two))]);
        // Revoked before the write-back: the address goes with the use.
        assert!(t.touch(9));
        cache.note_client(&t, one);
        let mut r = rec("a", &s, 100);
        r.revoked_at = Some(9);
        cache.apply(&r, 9);
        assert_eq!(cache.take_unflushed_uses(), vec![TokenUse::new("a", 9, Some(one))]);
        // A later use without an address keeps the earlier one's.
        cache.return_uses(vec![TokenUse::new("b", 5, Some(one)), TokenUse::new("b", 6, None)]);
        assert_eq!(cache.take_unflushed_uses(), vec![TokenUse::new("b", 6, Some(one))]);
    }
}
