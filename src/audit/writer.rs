//! The audit trail's writer: entries from the request path and the admin API go through
//! an [`Auditor`] into a bounded queue, and one task writes them to the store in batches,
//! so that no request ever waits on the trail.
//!
//! - [`Auditor::record`] never waits: when the queue (`audit.queue` entries) is full, the
//!   entry is dropped, counted in `patgate_audit_dropped_total`, and logged once (a warn,
//!   then not again until the queue has drained).
//! - Allowed requests are recorded as `audit.allowed_requests` says: `per_minute` counts
//!   them in memory per token ([`Auditor::allowed`]: one map lookup and one atomic add for a
//!   token already counted this minute, no allocation) and the writer turns each minute's
//!   counts into one [`Action::Access`] entry per token; `each` queues one entry per
//!   request; `none` records nothing.
//! - Requests refused because their address is locked out ([`Auditor::blocked`]) are
//!   counted the same way, per address and minute: a client that keeps knocking after its
//!   block makes one entry a minute, not one a request (its failed authentications, which
//!   the lockout bounds, are each an entry).
//! - The writer takes up to [`BATCH`] entries, or what came within [`FLUSH_EVERY`] of the
//!   first, into one [`Store::append_audit`]. A store that fails is retried with back-off
//!   (the queue fills meanwhile, and drops past its bound); at shutdown
//!   ([`Writer::finish`]) the queue is closed and drained, with this minute's counts,
//!   before the store closes, trying for at most [`SHUTDOWN_RETRY`].
//! - The same task deletes entries older than `audit.retention`, at start and every
//!   [`PRUNE_EVERY`], in a task of its own, so that a long deletion holds no batch back.
//!
//! Lifecycle entries (create, revoke, ...) do not come this way: the store writes them in
//! the transaction of the change.

use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use compact_str::CompactString;
use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{now_millis, Action, AllowedRequests, AuditEntry, Config, Outcome};
use crate::store::Store;
use crate::telemetry::metrics::metrics;

/// The most entries written in one transaction.
pub const BATCH: usize = 500;
/// The longest an entry waits for others to share its transaction.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// How often entries past the retention are deleted (and once at start).
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// The first wait after a failed write, doubled after each failure up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long a store that fails is tried once shutdown began, before what is left is lost.
pub const SHUTDOWN_RETRY: Duration = Duration::from_secs(5);
/// Milliseconds in a minute.
const MINUTE_MS: i64 = 60_000;

/// A handle on the audit trail's queue; cheap to clone. [`Auditor::off`] records nothing.
#[derive(Clone)]
pub struct Auditor(Option<Arc<Inner>>);

struct Inner {
    queue: mpsc::Sender<AuditEntry>,
    allowed: AllowedRequests,
    /// Requests allowed this minute, per token id (`per_minute`).
    minute: DashMap<CompactString, Counted, BuildHasherDefault<IdHasher>>,
    /// Requests refused this minute because their address is locked out, per address.
    blocked: DashMap<IpAddr, AtomicU32>,
    /// Set once a full queue's drop was logged; cleared when the queue has drained.
    warned: AtomicBool,
}

/// One token's allowed requests in the current minute.
struct Counted {
    count: AtomicU32,
    owner: Arc<str>,
    /// The client of its first request in the minute.
    client: IpAddr,
}

/// A hasher for token ids in the per-minute counts: a multiply-rotate over 8-byte words
/// (as rustc's FxHash), a few cycles for an id. Ids are random and minted by patgate, and
/// only tokens that authenticated are counted, so no client chooses the keys.
#[derive(Default)]
pub struct IdHasher(u64);

impl IdHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        let mut last = [0u8; 8];
        let rest = chunks.remainder();
        last[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 56));
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Auditor {
    /// An auditor that records nothing (the admin API's and the proxy's until one is set,
    /// and tests that do not look at the trail).
    pub fn off() -> Auditor {
        Auditor(None)
    }

    /// The shared auditor that records nothing.
    pub fn off_ref() -> &'static Auditor {
        static OFF: LazyLock<Auditor> = LazyLock::new(Auditor::off);
        &OFF
    }

    /// Queues an entry for the trail; never waits. A full queue drops it (counted, logged once).
    pub fn record(&self, entry: AuditEntry) {
        let Some(inner) = &self.0 else { return };
        match inner.queue.try_send(entry) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics().audit_dropped.inc();
                if !inner.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target: "patgate::audit",
                        queue = inner.queue.max_capacity(),
                        "Audit queue full; entries are dropped until it drains (patgate_audit_dropped_total counts them)"
                    );
                }
            }
            // The writer has finished (shutdown): too late for the trail.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics().audit_dropped.inc();
            }
        }
    }

    /// Records an allowed request of token `token_id` of `owner` from `client`, as
    /// `audit.allowed_requests` says: counted for this minute, or one entry (made by
    /// `each` only then), or not at all.
    #[inline]
    pub fn allowed(&self, token_id: &str, owner: &str, client: IpAddr, each: impl FnOnce() -> AuditEntry) {
        let Some(inner) = &self.0 else { return };
        match inner.allowed {
            AllowedRequests::None => {}
            AllowedRequests::Each => self.record(each()),
            AllowedRequests::PerMinute => {
                if let Some(c) = inner.minute.get(token_id) {
                    c.count.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // First request of this token this minute.
                inner
                    .minute
                    .entry(CompactString::from(token_id))
                    .or_insert_with(|| Counted {
                        count: AtomicU32::new(0),
                        owner: owner.into(),
                        client,
                    })
                    .count
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts a request refused because `client` is locked out (`[brute_force]`); the
    /// writer makes one [`Action::AuthRefused`] entry (429) per address and minute.
    /// `client` is the address as the lockout counts it (an IPv6 address by its /64), so
    /// that a blocked /64 sending from ever new addresses fills one entry, not millions.
    pub fn blocked(&self, client: IpAddr) {
        let Some(inner) = &self.0 else { return };
        if let Some(c) = inner.blocked.get(&client) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        inner.blocked.entry(client).or_default().fetch_add(1, Ordering::Relaxed);
    }

    /// The counts of the minute that began at `window` (Unix ms) as entries, zeroed:
    /// [`Action::Access`] per token, [`Action::AuthRefused`] per locked-out address.
    /// Tokens and addresses that made no request since the last call are forgotten.
    fn take_minute(&self, window: i64) -> Vec<AuditEntry> {
        let Some(inner) = &self.0 else { return Vec::new() };
        let mut out = Vec::new();
        inner.blocked.retain(|client, c| {
            let n = c.swap(0, Ordering::Relaxed);
            if n > 0 {
                let mut e = AuditEntry::new(window, Action::AuthRefused, Outcome::Failure);
                e.reason = Some("too many failed authentications from this address: refused while blocked".into());
                e.client = Some(*client);
                e.status = Some(429);
                e.count = n;
                out.push(e);
            }
            n > 0
        });
        inner.minute.retain(|id, c| {
            let n = c.count.swap(0, Ordering::Relaxed);
            if n > 0 {
                let mut e = AuditEntry::new(window, Action::Access, Outcome::Success);
                e.token_id = Some(id.to_string());
                e.owner = Some(c.owner.to_string());
                e.client = Some(c.client);
                e.count = n;
                out.push(e);
            }
            n > 0
        });
        out
    }
}

/// The writer task, to be finished at shutdown.
pub struct Writer {
    close: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Writer {
    /// Stops taking entries and writes what is queued and counted, then returns. Call it
    /// once nothing records any more (the listeners have drained), before the store closes.
    pub async fn finish(mut self) {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Starts the writer over `store` with the `[audit]` settings; returns the auditor that
/// feeds it.
pub fn start(store: Store, config: &Config) -> (Auditor, Writer) {
    let (tx, rx) = mpsc::channel(config.queue.max(1));
    let inner = Arc::new(Inner {
        queue: tx,
        allowed: config.allowed_requests,
        minute: DashMap::default(),
        blocked: DashMap::new(),
        warned: AtomicBool::new(false),
    });
    let auditor = Auditor(Some(inner));
    let (close_tx, close_rx) = oneshot::channel();
    let task = Task {
        store,
        auditor: auditor.clone(),
        retention: config.retention,
        close: Some(close_rx),
        give_up: None,
        failing: false,
    };
    let task = tokio::spawn(task.run(rx));
    (
        auditor,
        Writer {
            close: Some(close_tx),
            task,
        },
    )
}

/// The start of the minute `ms` falls in.
fn minute_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(MINUTE_MS)
}

/// What woke the writer.
enum Wake {
    Entries,
    Due,
    Minute,
    Prune,
    Closed,
}

struct Task {
    store: Store,
    auditor: Auditor,
    retention: Duration,
    /// Resolves when shutdown begins; `None` once it has.
    close: Option<oneshot::Receiver<()>>,
    /// Once shutdown began: when a failing store is given up on.
    give_up: Option<Instant>,
    /// The last write failed (logged once, until one succeeds).
    failing: bool,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<AuditEntry>) {
        let mut batch: Vec<AuditEntry> = Vec::with_capacity(BATCH);
        let mut due: Option<Instant> = None;
        // Counts are taken at each minute's turn, and stamped with the minute they fell in.
        let now = now_millis();
        let mut window = minute_of(now);
        let to_next = Duration::from_millis(u64::try_from(window + MINUTE_MS - now).unwrap_or(0));
        let mut minute = tokio::time::interval_at(Instant::now() + to_next, Duration::from_secs(60));
        minute.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pruning: Option<JoinHandle<()>> = None;
        while let Some(close) = self.close.as_mut() {
            let wake = tokio::select! {
                n = rx.recv_many(&mut batch, BATCH), if batch.len() < BATCH => match n {
                    0 => Wake::Closed,
                    _ => Wake::Entries,
                },
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => Wake::Due,
                _ = minute.tick() => Wake::Minute,
                _ = prune.tick() => Wake::Prune,
                _ = close => Wake::Closed,
            };
            match wake {
                Wake::Entries => {
                    due.get_or_insert_with(|| Instant::now() + FLUSH_EVERY);
                }
                Wake::Due => {}
                Wake::Minute => {
                    let now = now_millis();
                    batch.extend(self.auditor.take_minute(window));
                    window = minute_of(now);
                    if !batch.is_empty() {
                        due = Some(Instant::now());
                    }
                }
                Wake::Prune => {
                    if pruning.as_ref().is_none_or(|p| p.is_finished()) {
                        pruning = Some(tokio::spawn(prune_past(self.store.clone(), self.retention)));
                    }
                }
                Wake::Closed => break,
            }
            if batch.len() >= BATCH || due.is_some_and(|d| d <= Instant::now()) {
                self.write(std::mem::take(&mut batch)).await;
                due = None;
                if rx.is_empty() {
                    if let Some(inner) = &self.auditor.0 {
                        inner.warned.store(false, Ordering::Relaxed);
                    }
                }
            }
        }
        // Shutdown: nothing more is taken; what is queued and this minute's counts are written.
        // A deletion under way stops (the next start prunes again).
        if let Some(p) = pruning {
            p.abort();
        }
        self.close = None;
        self.give_up.get_or_insert_with(|| Instant::now() + SHUTDOWN_RETRY);
        rx.close();
        while let Some(e) = rx.recv().await {
            batch.push(e);
        }
        batch.extend(self.auditor.take_minute(window));
        self.write(batch).await;
    }

    /// Writes `entries`, [`BATCH`] to a transaction, retrying a failing store with
    /// back-off; after shutdown began, only until [`SHUTDOWN_RETRY`] has passed.
    async fn write(&mut self, entries: Vec<AuditEntry>) {
        for chunk in entries.chunks(BATCH) {
            let mut wait = RETRY_FIRST;
            loop {
                match self.store.append_audit(chunk.to_vec()).await {
                    Ok(()) => {
                        if std::mem::take(&mut self.failing) {
                            tracing::info!(target: "patgate::audit", "Audit entries are written again");
                        }
                        break;
                    }
                    Err(e) if !self.failing => {
                        self.failing = true;
                        tracing::warn!(target: "patgate::audit", error = %e, entries = chunk.len(), "Audit entries cannot be written; retrying");
                    }
                    Err(_) => {}
                }
                if self.give_up.is_some_and(|g| Instant::now() >= g) {
                    metrics().audit_dropped.inc_by(chunk.len() as u64);
                    tracing::error!(
                        target: "patgate::audit",
                        entries = chunk.len(),
                        "Audit entries lost: the store could not be written before shutdown"
                    );
                    break;
                }
                match self.close.as_mut() {
                    Some(close) => tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = close => {
                            self.close = None;
                            self.give_up = Some(Instant::now() + SHUTDOWN_RETRY);
                        }
                    },
                    None => tokio::time::sleep(wait).await,
                }
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Deletes the entries older than `retention`.
async fn prune_past(store: Store, retention: Duration) {
    let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    match store.prune_audit(now_millis().saturating_sub(keep)).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(target: "patgate::audit", entries = n, "Audit entries past the retention deleted"),
        Err(e) => tracing::warn!(target: "patgate::audit", error = %e, "Audit entries past the retention could not be deleted"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditQuery, Location};

    fn config(queue: usize, allowed: AllowedRequests) -> Config {
        Config {
            queue,
            allowed_requests: allowed,
            ..Config::default()
        }
    }

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Location::Sqlite(dir.path().join("a.db"))).await.unwrap();
        (dir, store)
    }

    fn refused(n: usize) -> AuditEntry {
        let mut e = AuditEntry::new(now_millis(), Action::AuthRefused, Outcome::Failure);
        e.reason = Some(format!("refusal {n}"));
        e
    }

    /// Every entry, oldest first.
    async fn all(store: &Store) -> Vec<AuditEntry> {
        let mut out = Vec::new();
        let mut q = AuditQuery::default();
        loop {
            let page = store.audit_page(&q).await.unwrap();
            out.extend(page.entries);
            match page.next {
                Some(n) => q.after = Some(n),
                None => break,
            }
        }
        out.reverse();
        out
    }

    #[tokio::test]
    async fn entries_are_written_in_batches_in_their_order() {
        let (_dir, store) = store().await;
        let (auditor, writer) = start(store.clone(), &config(10_000, AllowedRequests::Each));
        for n in 0..1200 {
            auditor.record(refused(n));
        }
        writer.finish().await;
        let written = all(&store).await;
        assert_eq!(written.len(), 1200);
        let reasons: Vec<String> = written.iter().map(|e| e.reason.clone().unwrap()).collect();
        assert_eq!(reasons, (0..1200).map(|n| format!("refusal {n}")).collect::<Vec<_>>());
        // Seqs rise without gaps across the batches.
        assert!(written.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    }

    #[tokio::test]
    async fn entries_wait_at_most_the_flush_interval() {
        let (_dir, store) = store().await;
        let (auditor, writer) = start(store.clone(), &config(10, AllowedRequests::Each));
        auditor.record(refused(1));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while all(&store).await.is_empty() {
            assert!(std::time::Instant::now() < deadline, "the entry was never written");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        writer.finish().await;
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_never_waits() {
        // No runtime runs the writer: the queue only fills.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (_dir, store) = rt.block_on(store());
        let (auditor, _writer) = rt.block_on(async { start(store, &config(3, AllowedRequests::Each)) });
        let before = metrics().audit_dropped.get();
        let started = std::time::Instant::now();
        for n in 0..10 {
            auditor.record(refused(n));
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        // Other tests may drop entries at the same time: at least these seven.
        assert!(metrics().audit_dropped.get() - before >= 7);
        let inner = auditor.0.as_ref().unwrap();
        assert!(inner.warned.load(Ordering::Relaxed), "the drop was logged");
    }

    #[test]
    fn allowed_requests_are_counted_per_token_and_minute() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (_dir, store) = rt.block_on(store());
        let (auditor, _writer) = rt.block_on(async { start(store, &config(10, AllowedRequests::PerMinute)) });
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let never = || -> AuditEntry { panic!("per_minute makes no entry per request") };
        for _ in 0..5 {
            auditor.allowed("tokA", "alice", ip, never);
        }
        auditor.allowed("tokB", "bob", ip, never);
        let mut got = auditor.take_minute(120_000);
        got.sort_by(|a, b| a.token_id.cmp(&b.token_id));
        let summary: Vec<_> = got
            .iter()
            .map(|e| (e.token_id.as_deref(), e.owner.as_deref(), e.count, e.time, e.action))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some("tokA"), Some("alice"), 5, 120_000, Action::Access),
                (Some("tokB"), Some("bob"), 1, 120_000, Action::Access)
            ]
        );
        assert_eq!(got[0].client, Some(ip));
        // Counted and zeroed: an idle minute makes no entry and forgets the token.
        assert!(auditor.take_minute(180_000).is_empty());
        assert_eq!(auditor.0.as_ref().unwrap().minute.len(), 0);
        // Queued nothing meanwhile.
        assert_eq!(auditor.0.as_ref().unwrap().queue.capacity(), 10);
    }

    #[test]
    fn locked_out_requests_are_counted_per_address_and_minute() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (_dir, store) = rt.block_on(store());
        let (auditor, _writer) = rt.block_on(async { start(store, &config(10, AllowedRequests::None)) });
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.7".parse().unwrap(), "2001:db8::1".parse().unwrap());
        for _ in 0..1000 {
            auditor.blocked(a);
        }
        auditor.blocked(b);
        let mut got = auditor.take_minute(60_000);
        got.sort_by_key(|e| e.count);
        let summary: Vec<_> = got.iter().map(|e| (e.client, e.count, e.status, e.action, e.outcome)).collect();
        assert_eq!(
            summary,
            vec![
                (Some(b), 1, Some(429), Action::AuthRefused, Outcome::Failure),
                (Some(a), 1000, Some(429), Action::AuthRefused, Outcome::Failure)
            ]
        );
        assert!(auditor.take_minute(120_000).is_empty());
        assert_eq!(auditor.0.as_ref().unwrap().queue.capacity(), 10, "nothing queued per request");
    }

    #[test]
    fn each_and_none_record_one_entry_or_nothing() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (_dir, store) = rt.block_on(store());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let (each, _w1) = rt.block_on(async { start(store.clone(), &config(10, AllowedRequests::Each)) });
        each.allowed("tokA", "alice", ip, || refused(0));
        each.allowed("tokA", "alice", ip, || refused(1));
        assert_eq!(each.0.as_ref().unwrap().queue.capacity(), 8);
        let (none, _w2) = rt.block_on(async { start(store, &config(10, AllowedRequests::None)) });
        none.allowed("tokA", "alice", ip, || panic!("none makes no entry"));
        assert_eq!(none.0.as_ref().unwrap().queue.capacity(), 10);
        assert!(none.take_minute(0).is_empty());
        Auditor::off().allowed("tokA", "alice", ip, || panic!("off makes no entry"));
        Auditor::off().record(refused(0));
    }

    #[tokio::test]
    async fn a_failing_store_is_retried_and_nothing_is_lost() {
        let (dir, store) = store().await;
        let (auditor, writer) = start(store.clone(), &config(100, AllowedRequests::Each));
        // Another connection holds the write lock: writes fail as busy for a while.
        let path = dir.path().join("a.db");
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let blocker = std::thread::spawn(move || {
            let mut c = rusqlite::Connection::open(path).unwrap();
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive).unwrap();
            locked_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_secs(7));
            tx.commit().unwrap();
        });
        locked_rx.recv().unwrap();
        for n in 0..3 {
            auditor.record(refused(n));
        }
        tokio::task::spawn_blocking(move || blocker.join().unwrap()).await.unwrap();
        writer.finish().await;
        assert_eq!(all(&store).await.len(), 3);
    }

    #[tokio::test]
    async fn the_writer_prunes_past_the_retention_at_start() {
        let (_dir, store) = store().await;
        let old = AuditEntry::new(now_millis() - 2 * 86_400_000, Action::AuthRefused, Outcome::Failure);
        let new = AuditEntry::new(now_millis(), Action::AuthRefused, Outcome::Failure);
        store.append_audit(vec![old, new]).await.unwrap();
        let c = Config {
            retention: Duration::from_secs(86_400),
            ..Config::default()
        };
        let (_auditor, writer) = start(store.clone(), &c);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while all(&store).await.len() != 1 {
            assert!(std::time::Instant::now() < deadline, "never pruned");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        writer.finish().await;
    }

    #[test]
    fn ids_hash_apart() {
        use std::hash::BuildHasher;
        let s = BuildHasherDefault::<IdHasher>::default();
        let a = s.hash_one("0123456789abcdef");
        let b = s.hash_one("0123456789abcdeg");
        let c = s.hash_one("0123456789abcdef0");
        assert!(a != b && a != c && b != c);
    }
}
