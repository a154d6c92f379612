//! Expiry warnings: a live token that expires within `audit.expiry_warning` gets one
//! [`Action::ExpiryWarning`] entry in the audit trail (its id, owner, and `expires
//! <RFC 3339 time>`), which the audit streams deliver like any other entry; and the
//! gauge `patgate_tokens_expiring{within}` counts such tokens when scraped.
//!
//! A token is warned once per expiry: the warning is noted in the store with the entry,
//! in one transaction, so that one instance warns, a restart does not warn again, and a
//! token whose expiry moves is warned again for the new one. The scan reads the
//! in-memory copy of the live tokens, at start, every few minutes, and shortly after
//! tokens change; it never touches the request path.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Action, AuditEntry, Outcome};
use crate::store::token_cache::TokenCache;
use crate::store::{self, Store};
use crate::telemetry::metrics::metrics;

/// How often live tokens are scanned, to warn of those that entered the window.
const SCAN_EVERY: Duration = Duration::from_secs(300);
/// How long after a change to the tokens they are scanned (changes often come in bursts)...
const AFTER_CHANGE: Duration = Duration::from_secs(1);
/// ...and at least this long after the last scan (each reads every live token).
const MIN_GAP: Duration = Duration::from_secs(5);
/// Warnings written per scan at most; the rest wait for the next scan.
const MAX_PER_SCAN: usize = 1000;

/// Starts warning of tokens expiring within `window`, until `stop` turns true.
pub fn start(store: Store, tokens: Arc<TokenCache>, window: Duration, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    metrics().set_expiry_window(window);
    tokio::spawn(run(store, tokens, window, stop))
}

/// How many live tokens expire within `window` from now: the gauge, when scraped.
pub fn expiring(tokens: &TokenCache, window: Duration) -> usize {
    let now = store::now();
    let mut n = 0;
    tokens.for_each_expiring(now, until(now, window), |_| n += 1);
    n
}

fn until(now: i64, window: Duration) -> i64 {
    now.saturating_add(i64::try_from(window.as_secs()).unwrap_or(i64::MAX))
}

async fn run(store: Store, tokens: Arc<TokenCache>, window: Duration, mut stop: watch::Receiver<bool>) {
    // (token id, expiry) already warned of, or found warned in the store: not asked again.
    let mut done: HashSet<(String, i64)> = HashSet::new();
    let mut applied = tokens.watch_seq();
    let mut failing = false;
    let mut forgot: Option<tokio::time::Instant> = None;
    loop {
        let scanned = tokio::time::Instant::now();
        let forget = forgot.is_none_or(|at| scanned.duration_since(at) >= SCAN_EVERY);
        if forget {
            forgot = Some(scanned);
        }
        match scan(&store, &tokens, window, &mut done, forget).await {
            Ok(n) => {
                if failing {
                    failing = false;
                    tracing::info!("Expiry warnings are written again");
                }
                if n > 0 {
                    tracing::info!(tokens = n, within = %crate::telemetry::metrics::short_duration(window), "Tokens expiring soon; warnings in the audit trail");
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "Cannot write expiry warnings; retrying");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(SCAN_EVERY) => {}
            changed = applied.changed() => {
                if changed.is_err() {
                    return;
                }
                let at = (scanned + MIN_GAP).max(tokio::time::Instant::now() + AFTER_CHANGE);
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    stopping = stop.changed() => if stopping.is_err() { return },
                }
            }
            stopping = stop.changed() => if stopping.is_err() { return },
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Warns of each live token in the window not warned of yet; returns how many. With
/// `forget`, also drops the notes of expiries past.
async fn scan(
    store: &Store,
    tokens: &TokenCache,
    window: Duration,
    done: &mut HashSet<(String, i64)>,
    forget: bool,
) -> Result<usize, store::StoreError> {
    let now = store::now();
    let mut due = Vec::new();
    tokens.for_each_expiring(now, until(now, window), |t| {
        if due.len() < MAX_PER_SCAN && !done.contains(&(t.id.to_string(), t.expires_at)) {
            due.push((t.id.to_string(), t.owner.to_string(), t.expires_at));
        }
    });
    let mut warned = 0;
    for (id, owner, expires_at) in due {
        let mut entry = AuditEntry::new(super::now_millis(), Action::ExpiryWarning, Outcome::Success);
        entry.token_id = Some(id.clone());
        entry.owner = Some(owner);
        entry.reason = Some(format!("expires {}", store::format_time(expires_at)));
        if store.warn_expiry(entry, expires_at).await? {
            warned += 1;
        }
        done.insert((id, expires_at));
    }
    // Expired: neither this set nor the store needs them any more.
    done.retain(|(_, at)| *at > now);
    if forget {
        store.forget_expiry_warnings(now).await?;
    }
    Ok(warned)
}
