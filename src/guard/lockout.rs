//! Brute-force protection: an address that fails authentication too often is refused for
//! a while before its credential is even looked at.
//!
//! This module owns the failure counts and the blocks, shared by every worker thread. It
//! does not decide what a failure is, nor what answer a blocked client gets: the request
//! path calls [`Lockout::check`] before authenticating and [`Lockout::failed`] after a
//! failed authentication, and answers a [`Blocked`] with 429 and `Retry-After`
//! ([`Blocked::retry_after_secs`]). It keeps no secret and logs none.
//!
//! # The rule
//! - **Fixed window, opened by the first failure.** An address's first failure opens a
//!   window of [`Config::window`]; every failure inside it counts. When the count reaches
//!   [`Config::max_failures`] the address is blocked for [`Config::block`]. A failure after
//!   the window has closed opens a new window and counts 1. A fixed window needs one
//!   counter per address instead of one timestamp per failure; its price is that a client
//!   that times its failures around a window's end gets at most `2 × (max_failures − 1)`
//!   failures in a short burst before it is blocked, and at most `max_failures − 1` per
//!   window on average without ever being blocked. A lockout is a cost for floods, not
//!   what keeps a token secret: tokens cannot be guessed at any of these rates.
//! - **Success does not forgive.** There is no way to reset a count: an attacker holding
//!   one valid token could otherwise interleave it with its guesses and never be blocked.
//!   A count ends only when its window closes, a block only when its time is up.
//! - **A block is not extended** by the failures that concurrent requests of the blocked
//!   address report after it began; it ends [`Config::block`] after it began.
//!   `max_failures` 0 behaves as 1: the first failure blocks.
//! - **Who is an address.** IPv4 addresses count one by one. IPv6 addresses count per
//!   `/64` prefix: one host usually holds a whole `/64` and can change its address inside
//!   it at no cost. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a dual-stack socket
//!   reports an IPv4 peer) counts as its IPv4 address.
//!
//! # Memory
//! At most [`Config::max_tracked`] addresses are tracked (0 tracks nothing, so disables
//! the lockout). Entries are not removed when they expire but swept when a new address
//! finds the table full. A sweep
//! 1. removes every expired entry (a window that has closed with no block, a block that
//!    has ended), then
//! 2. if more than three quarters of the table is still in use, forgets *counting* entries
//!    (not blocked) by failure count, fewest first and a whole count at a time, until at
//!    most three quarters of the table is in use. A forgotten address starts again from
//!    zero; to get an address forgotten, an attacker must first fail from as many fresh
//!    addresses as it takes to fill a quarter of the table.
//!
//! **A block is never evicted before its time.** A block costs an attacker `max_failures`
//! failures from one address (one `/64`), a counting entry one failure; a flood of fresh
//! addresses can only push out counting entries, the cheapest first, so the address that
//! keeps failing stays tracked and is blocked. If the table holds nothing but blocks, new
//! addresses are not tracked until a block ends (fail open for those addresses rather than
//! refuse everyone, and log "Lockout table full"); reaching that state costs
//! `max_tracked × max_failures` failures from `max_tracked` distinct addresses or prefixes,
//! every one of which stays blocked meanwhile.
//!
//! A sweep visits every entry, so it is amortised: it runs only when the table is full, and
//! only once at least a quarter of the table's capacity of new addresses has been admitted
//! since the previous sweep, or one second has passed. One thread sweeps at a time; the
//! others do not wait.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;

use super::client_addr::client_key;

/// Lockout settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Failures within one window that block the address.
    pub max_failures: u32,
    /// How long a window stays open after the failure that opened it.
    pub window: Duration,
    /// How long a block lasts.
    pub block: Duration,
    /// The most addresses (or IPv6 `/64` prefixes) tracked at once.
    pub max_tracked: usize,
}

impl Default for Config {
    /// 20 failures within 1 minute block for 5 minutes; at most 100 000 addresses tracked.
    fn default() -> Self {
        Config {
            max_failures: 20,
            window: Duration::from_secs(60),
            block: Duration::from_secs(300),
            max_tracked: 100_000,
        }
    }
}

/// An address is blocked: it failed authentication too often.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed authentications from this address; retry in {} s", self.retry_after_secs())]
pub struct Blocked {
    /// How long the block still lasts.
    pub retry_after: Duration,
}

impl Blocked {
    /// The block's remaining time in whole seconds, rounded up and at least 1: the value
    /// of a `Retry-After` header.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs();
        let secs = if self.retry_after.subsec_nanos() > 0 {
            secs.saturating_add(1)
        } else {
            secs
        };
        secs.max(1)
    }
}

/// Failure counts and blocks per client address. `Send + Sync`: one is shared by all the
/// proxy's workers.
#[derive(Debug)]
pub struct Lockout {
    config: Config,
    entries: DashMap<IpAddr, Entry>,
    /// Entries in `entries`, plus admissions in flight; never above `max_tracked`.
    tracked: AtomicUsize,
    /// New addresses admitted since the start (wrapping).
    admitted: AtomicUsize,
    sweep: Mutex<SweepState>,
}

/// What is known of one address.
#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct SweepState {
    last: Option<Instant>,
    admitted_at_last: usize,
}

/// Counting entries are forgotten by failure count in this many classes; the last class
/// holds every count from its number up.
const FAILURE_CLASSES: usize = 32;

/// A sweep that cannot count on a quarter of the table's admissions runs at most this often.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl Entry {
    fn first(now: Instant, config: &Config) -> Self {
        let mut e = Entry {
            window_start: now,
            failures: 1,
            blocked_at: None,
        };
        if e.failures >= config.max_failures {
            e.blocked_at = Some(now);
        }
        e
    }

    /// The time left of the block in force at `now`, if any.
    fn block_left(&self, now: Instant, config: &Config) -> Option<Duration> {
        let blocked_at = self.blocked_at?;
        let left = config.block.saturating_sub(now.saturating_duration_since(blocked_at));
        (!left.is_zero()).then_some(left)
    }

    fn is_expired(&self, now: Instant, config: &Config) -> bool {
        match self.blocked_at {
            Some(_) => self.block_left(now, config).is_none(),
            None => now.saturating_duration_since(self.window_start) >= config.window,
        }
    }

    /// Counts one failure; true when it blocked the address.
    fn fail(&mut self, now: Instant, config: &Config) -> bool {
        if self.blocked_at.is_some() {
            if self.block_left(now, config).is_some() {
                return false;
            }
            *self = Entry::first(now, config);
            return self.blocked_at.is_some();
        }
        if now.saturating_duration_since(self.window_start) >= config.window {
            *self = Entry::first(now, config);
            return self.blocked_at.is_some();
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= config.max_failures {
            self.blocked_at = Some(now);
            return true;
        }
        false
    }

    fn failure_class(&self) -> usize {
        (self.failures.saturating_sub(1) as usize).min(FAILURE_CLASSES - 1)
    }
}

impl Lockout {
    /// An empty lockout with these settings.
    pub fn new(config: Config) -> Lockout {
        Lockout {
            config,
            entries: DashMap::new(),
            tracked: AtomicUsize::new(0),
            admitted: AtomicUsize::new(0),
            sweep: Mutex::new(SweepState::default()),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `Err(Blocked)` while the address (or its `/64`) is blocked. One map lookup under a
    /// shared shard lock, no allocation; an address with no record costs nothing more.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Blocked> {
        let Some(entry) = self.entries.get(&client_key(ip)) else {
            return Ok(());
        };
        match entry.block_left(now, &self.config) {
            Some(retry_after) => Err(Blocked { retry_after }),
            None => Ok(()),
        }
    }

    /// Counts a failed authentication from `ip`; blocks the address when this failure is the
    /// window's `max_failures`-th, and logs it once.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let key = client_key(ip);
        let blocked = match self.entries.get_mut(&key) {
            Some(mut entry) => entry.fail(now, &self.config),
            None => self.admit(key, now),
        };
        if blocked {
            tracing::warn!(client.ip = %ip, failures = self.config.max_failures.max(1), "Client blocked");
        }
    }

    /// Addresses (and `/64` prefixes) blocked at `now`. Walks the table: for a scrape,
    /// not for the request path.
    pub fn blocked(&self, now: Instant) -> usize {
        self.entries
            .iter()
            .filter(|e| e.value().block_left(now, &self.config).is_some())
            .count()
    }

    /// Addresses (and `/64` prefixes) tracked, expired or not.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counts the first failure of an address with no entry, if there is room for it;
    /// true when that failure blocked it.
    fn admit(&self, key: IpAddr, now: Instant) -> bool {
        if !self.reserve(now) {
            return false;
        }
        match self.entries.entry(key) {
            MapEntry::Occupied(mut o) => {
                // Another thread admitted it meanwhile.
                self.tracked.fetch_sub(1, Ordering::AcqRel);
                o.get_mut().fail(now, &self.config)
            }
            MapEntry::Vacant(v) => {
                self.admitted.fetch_add(1, Ordering::Relaxed);
                v.insert(Entry::first(now, &self.config)).blocked_at.is_some()
            }
        }
    }

    /// Takes a place in the table for a new entry; sweeps if the table is full and a
    /// sweep is due. False when there is no room.
    fn reserve(&self, now: Instant) -> bool {
        let max = self.config.max_tracked;
        if max == 0 {
            return false;
        }
        for attempt in 0..2 {
            if self.tracked.fetch_add(1, Ordering::AcqRel) < max {
                return true;
            }
            self.tracked.fetch_sub(1, Ordering::AcqRel);
            if attempt == 0 && !self.sweep_if_due(now) {
                return false;
            }
        }
        false
    }

    /// Runs a sweep unless one is running or the last one was too recent; true if it ran.
    fn sweep_if_due(&self, now: Instant) -> bool {
        let mut state = match self.sweep.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        let admitted = self.admitted.load(Ordering::Relaxed);
        if let Some(last) = state.last {
            let quarter = (self.config.max_tracked / 4).max(1);
            let since = admitted.wrapping_sub(state.admitted_at_last);
            if since < quarter && now.saturating_duration_since(last) < SWEEP_INTERVAL {
                return false;
            }
        }
        state.last = Some(now);
        state.admitted_at_last = admitted;
        self.sweep(now);
        true
    }

    /// Removes expired entries, then forgets counting entries, fewest failures first, until
    /// at most three quarters of the table is in use.
    fn sweep(&self, now: Instant) {
        let config = &self.config;
        let mut classes = [0usize; FAILURE_CLASSES];
        let mut removed = 0;
        self.entries.retain(|_, e| {
            if e.is_expired(now, config) {
                removed += 1;
                return false;
            }
            if e.blocked_at.is_none() {
                classes[e.failure_class()] += 1;
            }
            true
        });
        let mut in_use = self.tracked.fetch_sub(removed, Ordering::AcqRel) - removed;
        let low_water = config.max_tracked - (config.max_tracked / 4).max(1).min(config.max_tracked);
        if in_use > low_water {
            // The smallest failure class that, with every class below it, frees enough.
            let mut need = in_use - low_water;
            let mut up_to = None;
            for (class, &n) in classes.iter().enumerate() {
                if n == 0 {
                    continue;
                }
                up_to = Some(class);
                if n >= need {
                    break;
                }
                need -= n;
            }
            if let Some(up_to) = up_to {
                let mut forgotten = 0;
                self.entries.retain(|_, e| {
                    let forget = e.blocked_at.is_none() && e.failure_class() <= up_to;
                    forgotten += usize::from(forget);
                    !forget
                });
                in_use = self.tracked.fetch_sub(forgotten, Ordering::AcqRel) - forgotten;
            }
        }
        if in_use >= config.max_tracked {
            tracing::warn!(
                tracked = in_use,
                "Lockout table full of blocked addresses; new addresses are not counted"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use std::net::Ipv6Addr;

    use proptest::prelude::*;

    use super::*;

    fn config() -> Config {
        Config {
            max_failures: 3,
            window: Duration::from_secs(60),
            block: Duration::from_secs(300),
            max_tracked: 100,
        }
    }

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn is_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<Lockout>();
    }

    #[test]
    fn defaults_are_the_leads() {
        let c = Config::default();
        assert_eq!(
            (c.max_failures, c.window, c.block, c.max_tracked),
            (20, secs(60), secs(300), 100_000)
        );
    }

    #[test]
    fn blocks_when_failures_reach_the_limit() {
        let l = Lockout::new(config());
        let t = Instant::now();
        let a = ip("192.0.2.1");
        l.failed(a, t);
        l.failed(a, t + secs(1));
        assert_eq!(l.check(a, t + secs(2)), Ok(()));
        l.failed(a, t + secs(10));
        assert_eq!(l.check(a, t + secs(10)), Err(Blocked { retry_after: secs(300) }));
        assert_eq!(l.check(a, t + secs(11)), Err(Blocked { retry_after: secs(299) }));
        // Others are not affected.
        assert_eq!(l.check(ip("192.0.2.2"), t + secs(11)), Ok(()));
    }

    #[test]
    fn a_block_ends_on_time_and_is_not_extended() {
        let l = Lockout::new(config());
        let t = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            l.failed(a, t);
        }
        // Late reports from requests that passed the check before the block.
        l.failed(a, t + secs(100));
        l.failed(a, t + secs(200));
        assert!(l.check(a, t + secs(299)).is_err());
        assert_eq!(l.check(a, t + secs(300)), Ok(()));
        // The slate is clean: a fresh window starts with the next failure.
        l.failed(a, t + secs(301));
        l.failed(a, t + secs(302));
        assert_eq!(l.check(a, t + secs(303)), Ok(()));
        l.failed(a, t + secs(303));
        assert!(l.check(a, t + secs(303)).is_err());
    }

    #[test]
    fn the_window_is_fixed_from_its_first_failure() {
        let l = Lockout::new(config());
        let t = Instant::now();
        let a = ip("192.0.2.1");
        l.failed(a, t);
        l.failed(a, t + secs(59));
        // The window opened at t has closed: this failure opens a new one and counts 1.
        l.failed(a, t + secs(60));
        l.failed(a, t + secs(61));
        assert_eq!(l.check(a, t + secs(62)), Ok(()));
        l.failed(a, t + secs(119));
        assert!(l.check(a, t + secs(119)).is_err());
    }

    #[test]
    fn success_does_not_forgive() {
        // There is no success call: checks between failures (as a valid token would make)
        // change nothing.
        let l = Lockout::new(config());
        let t = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..3 {
            assert_eq!(l.check(a, t + secs(i)), Ok(()));
            l.failed(a, t + secs(i));
        }
        assert!(l.check(a, t + secs(3)).is_err());
    }

    #[test]
    fn max_failures_zero_or_one_blocks_on_the_first_failure() {
        for max_failures in [0, 1] {
            let l = Lockout::new(Config { max_failures, ..config() });
            let t = Instant::now();
            l.failed(ip("192.0.2.1"), t);
            assert!(l.check(ip("192.0.2.1"), t).is_err(), "{max_failures}");
        }
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let l = Lockout::new(config());
        let t = Instant::now();
        l.failed(ip("2001:db8:1:2::1"), t);
        l.failed(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), t);
        l.failed(ip("2001:db8:1:2:dead:beef::7"), t);
        assert!(l.check(ip("2001:db8:1:2::42"), t).is_err());
        assert_eq!(l.check(ip("2001:db8:1:3::1"), t), Ok(()));
        assert_eq!(l.len(), 1);

        l.failed(ip("198.51.100.7"), t);
        l.failed(ip("::ffff:198.51.100.7"), t);
        l.failed(ip("198.51.100.7"), t);
        assert!(l.check(ip("::ffff:198.51.100.7"), t).is_err());
        assert!(l.check(ip("198.51.100.7"), t).is_err());
        assert_eq!(l.check(ip("198.51.100.8"), t), Ok(()));
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn keys() {
        assert_eq!(client_key(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(client_key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(client_key(ip("2001:db8::1:2:3:4")), ip("2001:db8::"));
        assert_eq!(client_key(ip("::1")), ip("::"));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_of_at_least_one() {
        let cases = [
            (Duration::ZERO, 1),
            (Duration::from_millis(1), 1),
            (Duration::from_millis(999), 1),
            (secs(1), 1),
            (Duration::from_millis(1001), 2),
            (secs(299) + Duration::from_nanos(1), 300),
            (Duration::MAX, u64::MAX),
        ];
        for (retry_after, want) in cases {
            assert_eq!(Blocked { retry_after }.retry_after_secs(), want, "{retry_after:?}");
        }
        let b = Blocked {
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(b.to_string(), "too many failed authentications from this address; retry in 2 s");
    }

    #[test]
    fn the_table_is_bounded_and_expired_entries_are_swept() {
        let l = Lockout::new(Config {
            max_tracked: 8,
            ..config()
        });
        let t = Instant::now();
        for n in 0..1000 {
            l.failed(v4(n), t);
            assert!(l.len() <= 8);
        }
        // After the window, the old entries expire and new addresses are counted again.
        let later = t + secs(61);
        for n in 1000..1003 {
            for _ in 0..3 {
                l.failed(v4(n), later);
            }
        }
        for n in 1000..1003 {
            assert!(l.check(v4(n), later).is_err(), "{n}");
        }
        assert!(l.len() <= 8);
    }

    #[test]
    fn a_flood_of_new_addresses_does_not_evict_blocks() {
        let l = Lockout::new(Config {
            max_tracked: 16,
            ..config()
        });
        let t = Instant::now();
        let blocked: Vec<IpAddr> = (0..8).map(|n| v4(0xc000_0200 + n)).collect();
        for &a in &blocked {
            for _ in 0..3 {
                l.failed(a, t);
            }
        }
        for (i, n) in (0..100_000u32).enumerate() {
            // Past the sweep interval now and then, so sweeps are due by time too.
            let now = t + Duration::from_millis(i as u64 / 10);
            l.failed(v4(n), now);
            assert!(l.len() <= 16);
        }
        let now = t + secs(299);
        for &a in &blocked {
            assert!(l.check(a, now).is_err(), "{a}");
        }
    }

    #[test]
    fn the_address_that_keeps_failing_stays_tracked_through_a_flood() {
        let l = Lockout::new(Config {
            max_failures: 20,
            max_tracked: 64,
            ..config()
        });
        let t = Instant::now();
        let flooder = ip("203.0.113.9");
        for n in 0..10_000u32 {
            // One failure from a fresh address, one from the flooder, alternately.
            l.failed(v4(n), t);
            if n % 4 == 0 {
                l.failed(flooder, t);
            }
        }
        assert!(l.check(flooder, t).is_err());
    }

    #[test]
    fn a_table_of_blocks_admits_nobody_new_until_one_ends() {
        let l = Lockout::new(Config {
            max_failures: 1,
            max_tracked: 4,
            ..config()
        });
        let t = Instant::now();
        for n in 0..4 {
            l.failed(v4(n), t);
        }
        l.failed(v4(99), t + secs(2));
        assert_eq!(l.check(v4(99), t + secs(2)), Ok(()));
        assert_eq!(l.len(), 4);
        // The blocks end; a sweep makes room.
        l.failed(v4(99), t + secs(300));
        assert!(l.check(v4(99), t + secs(300)).is_err());
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn max_tracked_zero_tracks_nothing() {
        let l = Lockout::new(Config {
            max_tracked: 0,
            ..config()
        });
        let t = Instant::now();
        for _ in 0..10 {
            l.failed(v4(1), t);
        }
        assert_eq!(l.check(v4(1), t), Ok(()));
        assert!(l.is_empty());
    }

    #[test]
    fn threads_share_one_count_and_one_bound() {
        let l = Arc::new(Lockout::new(Config {
            max_failures: 1000,
            max_tracked: 256,
            ..config()
        }));
        let t = Instant::now();
        let threads: Vec<_> = (0..8u32)
            .map(|k| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for n in 0..5000u32 {
                        l.failed(v4(1), t);
                        l.failed(v4(k * 1_000_000 + n + 2), t);
                        let _ = l.check(v4(n), t);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert!(l.len() <= 256);
        assert!(l.check(v4(1), t).is_err());
    }

    #[test]
    fn logs_one_line_when_an_address_becomes_blocked() {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let l = Lockout::new(config());
            let t = Instant::now();
            for _ in 0..10 {
                l.failed(ip("192.0.2.77"), t);
            }
        });
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains("WARN") && out.contains("Client blocked"), "{out}");
        assert!(out.contains("client.ip=192.0.2.77") && out.contains("failures=3"), "{out}");
    }

    /// The same rule, written plainly, for a table that never fills.
    #[derive(Default)]
    struct Model {
        entries: HashMap<IpAddr, (Instant, u32, Option<Instant>)>,
    }

    impl Model {
        fn failed(&mut self, c: &Config, key: IpAddr, now: Instant) {
            let e = self.entries.entry(key).or_insert((now, 0, None));
            if let Some(b) = e.2 {
                if now < b + c.block {
                    return;
                }
                *e = (now, 0, None);
            }
            if now >= e.0 + c.window {
                *e = (now, 0, None);
            }
            e.1 += 1;
            if e.1 >= c.max_failures {
                e.2 = Some(now);
            }
        }

        fn check(&self, c: &Config, key: IpAddr, now: Instant) -> Result<(), Blocked> {
            match self.entries.get(&key) {
                Some(&(_, _, Some(b))) if now < b + c.block => Err(Blocked {
                    retry_after: b + c.block - now,
                }),
                _ => Ok(()),
            }
        }
    }

    fn addresses() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u32..4).prop_map(|n| v4(0x0a00_0000 + n)),
            (0u32..4).prop_map(|n| IpAddr::V6(Ipv4Addr::from(0x0a00_0000 + n).to_ipv6_mapped())),
            (0u128..3, any::<u64>()).prop_map(|(p, h)| IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | (p << 64) | h as u128))),
        ]
    }

    proptest! {
        #[test]
        fn agrees_with_the_plain_rule(
            max_failures in 1u32..6,
            window in 1u64..20,
            block in 1u64..40,
            steps in prop::collection::vec((addresses(), 0u64..8, any::<bool>()), 1..200),
        ) {
            let c = Config { max_failures, window: secs(window), block: secs(block), max_tracked: 1000 };
            let l = Lockout::new(c);
            let mut m = Model::default();
            let mut now = Instant::now();
            for (a, dt, fail) in steps {
                now += secs(dt);
                if fail {
                    l.failed(a, now);
                    m.failed(&c, client_key(a), now);
                }
                prop_assert_eq!(l.check(a, now), m.check(&c, client_key(a), now));
            }
        }

        #[test]
        fn never_tracks_more_than_the_bound(
            max_tracked in 0usize..24,
            steps in prop::collection::vec((0u32..64, 0u64..3000), 1..400),
        ) {
            let l = Lockout::new(Config { max_failures: 2, max_tracked, ..config() });
            let mut now = Instant::now();
            for (n, dt) in steps {
                now += Duration::from_millis(dt);
                l.failed(v4(n), now);
                prop_assert!(l.len() <= max_tracked);
            }
        }

        #[test]
        fn a_64_is_one_address(a in any::<u128>(), b in any::<u64>()) {
            let x = Ipv6Addr::from(a);
            let y = Ipv6Addr::from((a & !u128::from(u64::MAX)) | u128::from(b));
            if x.to_ipv4_mapped().is_none() && y.to_ipv4_mapped().is_none() {
                prop_assert_eq!(client_key(IpAddr::V6(x)), client_key(IpAddr::V6(y)));
            }
        }
    }
}
