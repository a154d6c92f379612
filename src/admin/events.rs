//! The event feed: `GET /admin/v1/events?since=SEQ&limit=N&wait=DURATION`.
//!
//! Events after `since`, oldest first, with the owner of each token. With nothing new and
//! a `wait`, the request waits (at most `[admin] max_wait`) until this instance applies a
//! newer event, then reads again; it ends at once on shutdown. Only so many requests may
//! wait at once ([`AdminState::waiters`]); beyond that, one that would wait is answered
//! 429 with `Retry-After`. Callers without
//! `tokens:admin` see only their own tokens' events; `next` still moves past the others,
//! so following it never reads them twice.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use tokio::time::Instant;

use super::caller::{Access, Caller};
use super::error::AdminError;
use super::request::{redact, Params};
use super::AdminState;
use crate::store::{TokenEvent, MAX_PAGE};

/// One event as the feed shows it.
#[derive(Debug, Serialize)]
pub struct EventJson {
    #[serde(flatten)]
    event: TokenEvent,
    /// The token's owner (none when the token no longer exists).
    owner: Option<String>,
}

/// A page of the feed; `next` is the `since` of the following request.
#[derive(Debug, Serialize)]
pub struct EventPage {
    events: Vec<EventJson>,
    next: i64,
}

/// `GET /admin/v1/events`.
pub async fn events(State(s): State<AdminState>, caller: Caller, mut q: Params) -> Result<Json<EventPage>, AdminError> {
    let who = caller.require(Access::Read)?;
    let since = q.number("since", 0, i64::MAX, 0)?;
    let limit = q.number("limit", 1, MAX_PAGE as i64, 100)? as usize;
    let max_wait = s.config().max_wait;
    let wait = match q.take("wait")? {
        None => Duration::ZERO,
        Some(w) if w == "0" => Duration::ZERO,
        Some(w) => match humantime::parse_duration(&w) {
            Ok(d) => d.min(max_wait),
            // Longer than a Duration holds: longer than the most we wait.
            Err(humantime::DurationError::NumberOverflow) => max_wait,
            Err(_) => {
                return Err(AdminError::field(
                    "wait",
                    format!("`{}` is not a duration; write e.g. 30s", redact(&w)),
                ))
            }
        },
    };
    q.done()?;
    let deadline = Instant::now() + wait;
    let mut applied = s.tokens().watch_seq();
    let mut stop = s.stop();
    let mut next = since;
    let mut slot = None;
    loop {
        // Whatever is applied after this point wakes the wait below.
        applied.borrow_and_update();
        let changes = s.store().changes_since(next, limit).await?;
        let full = changes.len() >= limit;
        let mut events = Vec::new();
        for c in changes {
            next = next.max(c.event.seq);
            let owner = c.record.map(|r| r.owner);
            if who.admin || owner.as_deref() == Some(who.owner.as_str()) {
                events.push(EventJson { event: c.event, owner });
            }
        }
        // A full page of others' events is answered too, so that one request reads at most one page.
        if !events.is_empty() || full || Instant::now() >= deadline || *stop.borrow() {
            return Ok(Json(EventPage { events, next }));
        }
        if slot.is_none() {
            slot = Some(s.waiters().clone().try_acquire_owned().map_err(|_| AdminError::TooManyWaiting {
                retry_after: Duration::from_secs(1),
            })?);
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return Ok(Json(EventPage { events, next })) },
            _ = tokio::time::sleep_until(deadline) => {}
            stopping = stop.changed() => if stopping.is_err() { return Ok(Json(EventPage { events, next })) },
        }
    }
}
