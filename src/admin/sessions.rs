//! The console's browser sessions ([`Sessions`]) and how the admin API reads its caller
//! from one ([`session_caller`]): a session holds the token's hash, never its secret, is
//! looked up again on every request, and ends when idle, when old, or when its token is no
//! longer live. Writes need the session's CSRF token. `[console]` is [`Config`]. Below
//! both the console's pages ([`super::console`]) and the caller ([`super::caller`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use base64::Engine;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Method};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use super::error::AdminError;
use super::AdminState;
use crate::auth::token::TokenHash;
use crate::auth::{self, AuthError, Identity};

/// The session cookie's name.
pub const COOKIE: &str = auth::SESSION_COOKIE;
/// The header a session's writes carry its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// `[console]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Whether the admin listener serves the console (and accepts its sessions).
    pub enabled: bool,
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub session_max: Duration,
    /// Sessions at once; signing in beyond ends the oldest.
    pub max_sessions: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
            max_sessions: 10_000,
        }
    }
}

/// One signed-in browser.
struct Session {
    /// The token it signed in with: its hash, looked up on every request.
    token: TokenHash,
    csrf: String,
    created: Instant,
    seen: Instant,
}

/// A live session, as a request finds it.
#[derive(Clone)]
pub struct Found {
    pub token: TokenHash,
    pub csrf: String,
}

/// The sessions of this process, keyed by the SHA-256 of their ids.
pub struct Sessions {
    config: Config,
    table: Mutex<HashMap<[u8; 32], Session>>,
    rng: SystemRandom,
}

fn key(id: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, id.as_bytes()).as_ref());
    out
}

impl Sessions {
    pub fn new(config: Config) -> Sessions {
        Sessions {
            config,
            table: Mutex::new(HashMap::new()),
            rng: SystemRandom::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// 32 random bytes, base64url.
    fn random(&self) -> String {
        let mut bytes = [0u8; 32];
        self.rng.fill(&mut bytes).expect("the system's random source works");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn live(&self, s: &Session, now: Instant) -> bool {
        now.saturating_duration_since(s.seen) < self.config.session_idle
            && now.saturating_duration_since(s.created) < self.config.session_max
    }

    /// A new session for `token`: its id and its CSRF token. A token holds at most
    /// [`PER_TOKEN`] sessions (its oldest goes first), so that one token signing in again
    /// and again cannot push everyone else's out. Ended sessions are dropped next; when
    /// the table is still full, the oldest goes.
    pub fn create(&self, token: TokenHash, now: Instant) -> (String, String) {
        let (id, csrf) = (self.random(), self.random());
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        while table.values().filter(|s| s.token == token).count() >= PER_TOKEN {
            let oldest = table
                .iter()
                .filter(|(_, s)| s.token == token)
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                table.remove(&k);
            }
        }
        if table.len() >= self.config.max_sessions {
            table.retain(|_, s| self.live(s, now));
        }
        while !table.is_empty() && table.len() >= self.config.max_sessions.max(1) {
            let oldest = table.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k);
            if let Some(k) = oldest {
                table.remove(&k);
            }
        }
        let session = Session {
            token,
            csrf: csrf.clone(),
            created: now,
            seen: now,
        };
        table.insert(key(&id), session);
        (id, csrf)
    }

    /// The live session `id`, marked as used at `now`; an ended one is removed.
    pub fn get(&self, id: &str, now: Instant) -> Option<Found> {
        let k = key(id);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let s = table.get_mut(&k)?;
        if !self.live(s, now) {
            table.remove(&k);
            return None;
        }
        s.seen = now;
        Some(Found {
            token: s.token,
            csrf: s.csrf.clone(),
        })
    }

    /// Ends session `id`.
    pub fn remove(&self, id: &str) {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).remove(&key(id));
    }

    /// Sessions held, ended ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Equal in time that does not depend on where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    auth::equal_in_constant_time(a, b)
}

/// The session id in the request's `Cookie` headers; none when there are two different
/// ones (a cookie planted by another page of the same host would otherwise be read
/// first, and sign the browser in as someone else).
pub fn session_id(headers: &HeaderMap) -> Option<&str> {
    let mut ids = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(auth::session_cookie_value)
        .filter(|id| !id.is_empty());
    let first = ids.next()?;
    ids.all(|other| other == first).then_some(first)
}

/// The most sessions one token holds at once.
pub const PER_TOKEN: usize = 16;

/// True when the request's `Origin` is this listener itself (the console's page): its
/// scheme and the `Host` the request was sent to. A page of any other origin, a
/// different port included, is not.
pub fn same_origin(headers: &HeaderMap, tls: bool) -> bool {
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST)) else {
        return false;
    };
    let scheme = if tls { "https://" } else { "http://" };
    let site_ok = headers.get("sec-fetch-site").is_none_or(|v| v.as_bytes() == b"same-origin");
    site_ok
        && origin
            .as_bytes()
            .strip_prefix(scheme.as_bytes())
            .is_some_and(|rest| !host.is_empty() && rest == host.as_bytes())
}

/// The caller of an admin API request by its console session, for
/// [`Caller`](super::caller::Caller): none when the request carries `Authorization` or no
/// session cookie (the token is read as usual then). A session that ended is 401, a write
/// without the session's CSRF token 403, and the session's token is authenticated by its
/// hash as a pasted token would be.
pub fn session_caller(parts: &Parts, state: &AdminState) -> Result<Option<Identity>, AdminError> {
    if !state.config().console.enabled || parts.headers.contains_key(header::AUTHORIZATION) {
        return Ok(None);
    }
    let Some(id) = session_id(&parts.headers) else {
        return Ok(None);
    };
    let sessions = state.sessions();
    let Some(found) = sessions.get(id, Instant::now()) else {
        return Err(AuthError::Missing.into());
    };
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let identity = match auth::authenticate_digest(&found.token, state.tokens(), crate::clock::now(), peer) {
        Ok(identity) => identity,
        Err(e) => {
            sessions.remove(id);
            return Err(e.into());
        }
    };
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let sent = parts.headers.get(CSRF_HEADER).map(HeaderValue::as_bytes).unwrap_or_default();
        if !same_secret(sent, found.csrf.as_bytes()) {
            return Err(AdminError::Csrf);
        }
    }
    Ok(Some(identity))
}
