//! The token store: durable token records and the numbered feed of token events.
//!
//! Every change (create, revoke) is written with its event in one transaction, so the
//! feed is complete and a change that answered success is durable. Running servers follow
//! the feed into their in-memory copy ([`memory::TokenCache`]); the request path reads
//! only that copy and never waits on this module.
//!
//! SQLite is the embedded default. The API is async so that a networked store can stand
//! behind the same calls.

pub mod follow;
pub mod memory;
pub mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::auth::scope::ScopeSet;
use crate::auth::token::{random_base62, TokenHash, TokenSecret};
use crate::auth::Orgs;

/// Store settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub location: Location,
    /// How often a server reads new events from the store.
    pub poll_interval: Duration,
    /// How often a server writes `last_used_at` back to the store.
    pub last_used_flush_interval: Duration,
}

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
        }
    }
}

impl Location {
    /// Parses `sqlite://relative/path.db` or `sqlite:///absolute/path.db`.
    pub fn parse(url: &str) -> Result<Location, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite URL has no path".into());
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Err("the PostgreSQL store is not available in this version; use sqlite://PATH".into());
        }
        Err("unknown store URL scheme; use sqlite://PATH".into())
    }
}

/// One token as stored: everything but the secret, of which only the hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    pub id: String,
    #[serde(skip)]
    pub hash: TokenHash,
    pub name: String,
    pub owner: String,
    pub orgs: Orgs,
    #[serde(serialize_with = "scope_names")]
    pub scopes: ScopeSet,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: i64,
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: i64,
    #[serde(serialize_with = "rfc3339_opt")]
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_used_at: Option<i64>,
}

/// A token's state at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    Active,
    Expired,
    Revoked,
}

impl TokenRecord {
    /// Active, expired or revoked at `now` (Unix seconds).
    pub fn state(&self, now: i64) -> TokenState {
        if self.revoked_at.is_some() {
            TokenState::Revoked
        } else if now >= self.expires_at {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }
}

fn scope_names<S: serde::Serializer>(s: &ScopeSet, ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_seq(s.names())
}

/// Formats Unix seconds as RFC 3339 (UTC).
pub fn format_time(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn rfc3339<S: serde::Serializer>(t: &i64, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&format_time(*t))
}

fn rfc3339_opt<S: serde::Serializer>(t: &Option<i64>, ser: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser.serialize_str(&format_time(*t)),
        None => ser.serialize_none(),
    }
}

/// The current time in Unix seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What a new token is made of.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: String,
    pub owner: String,
    pub orgs: Orgs,
    pub scopes: ScopeSet,
    pub lifespan: Duration,
}

/// A field of a new token that cannot be used; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    #[error("name: must be 1 to 200 characters without control characters")]
    Name,
    #[error("owner: must be 1 to 200 characters without control characters")]
    Owner,
    #[error("scopes: at least one scope is needed")]
    NoScopes,
    #[error("lifespan: must be at least one second")]
    Lifespan,
}

fn is_label(s: &str) -> bool {
    let n = s.chars().count();
    (1..=200).contains(&n) && !s.chars().any(char::is_control) && s.trim() == s
}

impl NewToken {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), InvalidToken> {
        if !is_label(&self.name) {
            return Err(InvalidToken::Name);
        }
        if !is_label(&self.owner) {
            return Err(InvalidToken::Owner);
        }
        if self.scopes.is_empty() {
            return Err(InvalidToken::NoScopes);
        }
        if self.lifespan.as_secs() == 0 {
            return Err(InvalidToken::Lifespan);
        }
        Ok(())
    }
}

/// A token just created: its record and, this once, its secret.
#[derive(Debug)]
pub struct Created {
    pub record: TokenRecord,
    pub secret: TokenSecret,
}

/// What happened to a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Created,
    Updated,
    Regenerated,
    Revoked,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::Regenerated => "regenerated",
            EventKind::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> Option<EventKind> {
        Some(match s {
            "created" => EventKind::Created,
            "updated" => EventKind::Updated,
            "regenerated" => EventKind::Regenerated,
            "revoked" => EventKind::Revoked,
            _ => return None,
        })
    }
}

/// One entry of the append-only event feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenEvent {
    pub seq: i64,
    pub token_id: String,
    pub kind: EventKind,
    #[serde(serialize_with = "rfc3339")]
    pub at: i64,
    pub actor: Option<String>,
}

/// An event together with the token's record as it is now (if it still exists).
#[derive(Debug, Clone)]
pub struct Change {
    pub event: TokenEvent,
    pub record: Option<TokenRecord>,
}

/// Every live token and the sequence number they are current at.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub live: Vec<TokenRecord>,
    pub seq: i64,
}

/// A store operation that failed. Messages never hold a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("the store's schema is version {found}, newer than this patgate knows ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("no token with id {0}")]
    NotFound(String),
    #[error("store error: {0}")]
    Database(String),
    #[error("the store task stopped")]
    TaskStopped,
    #[error(transparent)]
    Invalid(#[from] InvalidToken),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// A handle on the token store; cheap to clone.
#[derive(Clone)]
pub enum Store {
    Sqlite(Arc<sqlite::SqliteStore>),
}

impl Store {
    /// Opens the store, creating it and migrating its schema as needed.
    pub async fn open(location: &Location) -> Result<Store, StoreError> {
        match location {
            Location::Sqlite(path) => {
                let path = path.clone();
                let s = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path))
                    .await
                    .map_err(|_| StoreError::TaskStopped)??;
                Ok(Store::Sqlite(Arc::new(s)))
            }
        }
    }

    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&sqlite::SqliteStore) -> Result<T, StoreError> + Send + 'static,
    {
        match self {
            Store::Sqlite(s) => {
                let s = s.clone();
                tokio::task::spawn_blocking(move || f(&s))
                    .await
                    .map_err(|_| StoreError::TaskStopped)?
            }
        }
    }

    /// Mints a secret and stores the new token with its `created` event.
    pub async fn create(&self, new: NewToken, actor: Option<String>) -> Result<Created, StoreError> {
        new.validate()?;
        let secret = TokenSecret::generate();
        let now = now();
        let lifespan = i64::try_from(new.lifespan.as_secs()).unwrap_or(i64::MAX);
        let record = TokenRecord {
            id: new_token_id(),
            hash: secret.hash(),
            name: new.name,
            owner: new.owner,
            orgs: new.orgs,
            scopes: new.scopes,
            created_at: now,
            expires_at: now.saturating_add(lifespan),
            revoked_at: None,
            revoked_by: None,
            last_used_at: None,
        };
        let r = record.clone();
        self.run(move |s| s.insert(&r, actor.as_deref())).await?;
        Ok(Created { record, secret })
    }

    /// Every token, newest first.
    pub async fn list(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.run(|s| s.list()).await
    }

    /// One token by id.
    pub async fn get(&self, id: &str) -> Result<TokenRecord, StoreError> {
        let id = id.to_owned();
        self.run(move |s| s.get(&id)?.ok_or(StoreError::NotFound(id))).await
    }

    /// Revokes one token. Revoking a revoked token changes nothing and succeeds.
    pub async fn revoke(&self, id: &str, actor: Option<String>) -> Result<TokenRecord, StoreError> {
        let id = id.to_owned();
        self.run(move |s| s.revoke(&id, actor.as_deref(), now())).await
    }

    /// Revokes every live token of an owner; returns how many.
    pub async fn revoke_owner(&self, owner: &str, actor: Option<String>) -> Result<usize, StoreError> {
        let owner = owner.to_owned();
        self.run(move |s| s.revoke_owner(&owner, actor.as_deref(), now())).await
    }

    /// Every live token and the event sequence they reflect, read consistently.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.run(|s| s.snapshot(now())).await
    }

    /// Events after `seq`, in order, at most `limit`, with each token's current record.
    pub async fn changes_since(&self, seq: i64, limit: usize) -> Result<Vec<Change>, StoreError> {
        self.run(move |s| s.changes_since(seq, limit)).await
    }

    /// Writes back when tokens were last used (advisory; not an event).
    pub async fn record_last_used(&self, uses: Vec<(String, i64)>) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        self.run(move |s| s.record_last_used(&uses)).await
    }
}

fn new_token_id() -> String {
    random_base62(16)
}
