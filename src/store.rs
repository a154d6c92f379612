//! The token store: durable token records, the numbered feed of token events, and the
//! audit trail.
//!
//! Every change (create, revoke) is written with its event and its audit entry in one
//! transaction, so the feed and the trail are complete and a change that answered success
//! is durable. Other audit entries are appended in batches ([`Store::append_audit`], from
//! [`crate::audit::writer`]); the trail is read newest first ([`Store::audit_page`]) and
//! pruned past its retention ([`Store::prune_audit`]). Running servers follow
//! the feed into their in-memory copy ([`token_cache::TokenCache`]); the request path reads
//! only that copy and never waits on this module.
//!
//! SQLite ([`sqlite`]) is the embedded default; its blocking calls run on tokio's blocking
//! pool. PostgreSQL ([`postgres`]) is shared by several instances and is async throughout.

#[cfg(test)]
pub(crate) mod conformance;
pub mod follow;
pub mod postgres;
pub mod schema;
pub mod sqlite;
pub mod streams;
pub mod token_cache;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::audit::{Action, Actor, AuditEntry, Outcome};
use crate::auth::orgs::Orgs;
use crate::auth::restrictions::{AllowFrom, Repos};
use crate::auth::scope::ScopeSet;
use crate::auth::token::{random_base62, TokenHash, TokenSecret};

/// Store settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub location: Location,
    /// How often a server reads new events from the store.
    pub poll_interval: Duration,
    /// How often a server writes `last_used_at` back to the store.
    pub last_used_flush_interval: Duration,
    /// Pooled connections to PostgreSQL, at most (besides the one that listens).
    pub max_connections: usize,
}

/// Where the store lives. Display and Debug never show a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(postgres::PgUrl),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Location::Postgres(url) => url.fmt(f),
        }
    }
}

impl Location {
    /// Parses `sqlite://relative/path.db`, `sqlite:///absolute/path.db`, or a
    /// `postgres://` / `postgresql://` URL. The error never repeats the URL.
    pub fn parse(url: &str) -> Result<Location, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite URL has no path".into());
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return postgres::PgUrl::parse(url).map(Location::Postgres);
        }
        Err("unknown store URL scheme; use sqlite://PATH or postgres://USER@HOST/DB".into())
    }
}

pub use postgres::redact_url;

/// One token as stored: everything but the secret, of which only the hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    pub id: String,
    #[serde(skip)]
    pub hash: TokenHash,
    pub name: String,
    pub owner: String,
    pub orgs: Orgs,
    /// The repositories it may reach (`*`: every one of its organizations).
    pub repos: Repos,
    /// The client addresses it may be used from (`*`: anywhere).
    pub allow_from: AllowFrom,
    #[serde(serialize_with = "scope_names")]
    pub scopes: ScopeSet,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: i64,
    /// When its secret was last rotated: its life is measured from then.
    #[serde(serialize_with = "rfc3339_opt")]
    pub rotated_at: Option<i64>,
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: i64,
    #[serde(serialize_with = "rfc3339_opt")]
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_used_at: Option<i64>,
    /// The client address of that use, through trusted proxies.
    pub last_used_from: Option<String>,
}

/// A token's last use seen by a server, to be written back: when (Unix seconds) and from
/// which client address (none when unknown).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenUse {
    pub id: String,
    pub at: i64,
    pub from: Option<std::net::IpAddr>,
}

impl TokenUse {
    pub fn new(id: impl Into<String>, at: i64, from: Option<std::net::IpAddr>) -> TokenUse {
        TokenUse { id: id.into(), at, from }
    }
}

/// A token's state at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    Active,
    Expired,
    Revoked,
}

impl TokenState {
    /// `active`, `expired` or `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Expired => "expired",
            TokenState::Revoked => "revoked",
        }
    }

    /// Parses `active`, `expired` or `revoked`.
    pub fn parse(s: &str) -> Option<TokenState> {
        Some(match s {
            "active" => TokenState::Active,
            "expired" => TokenState::Expired,
            "revoked" => TokenState::Revoked,
            _ => return None,
        })
    }
}

impl std::fmt::Display for TokenState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TokenRecord {
    /// When its current secret's life began: its rotation, or its creation.
    pub fn life_from(&self) -> i64 {
        self.rotated_at.unwrap_or(self.created_at)
    }

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

pub use crate::clock::now;

/// What a new token is made of.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: String,
    pub owner: String,
    pub orgs: Orgs,
    pub repos: Repos,
    pub allow_from: AllowFrom,
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
    #[error("scopes: may only be narrowed: every scope must already be granted")]
    ScopesWidened,
    #[error("organizations: may only be narrowed: every organization must already be covered")]
    OrgsWidened,
    #[error("repos: may only be narrowed: every pattern must lie within one already granted")]
    ReposWidened,
    #[error("allow_from: may only be narrowed: every range must lie within one already granted")]
    AllowFromWidened,
    #[error("repos: {0} is outside the token's organizations")]
    RepoOutsideOrgs(String),
    #[error("expires_at: must be in the future")]
    ExpiresAt,
    #[error("nothing to change: give at least one of name, scopes, organizations, repos, allow_from, expires_at")]
    NoChange,
}

/// Refuses repository patterns outside `orgs`.
fn repos_within(repos: &Repos, orgs: &Orgs) -> Result<(), InvalidToken> {
    match repos.outside(|o| orgs.covers(o)).next() {
        Some(p) => Err(InvalidToken::RepoOutsideOrgs(p.to_string())),
        None => Ok(()),
    }
}

/// True for a name or owner: 1 to 200 characters, no control characters, no surrounding
/// whitespace.
pub fn is_label(s: &str) -> bool {
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
        repos_within(&self.repos, &self.orgs)
    }
}

/// A token just created: its record and, this once, its secret.
#[derive(Debug)]
pub struct Created {
    pub record: TokenRecord,
    pub secret: TokenSecret,
}

/// A change to a token: rename it, narrow its scopes, organizations, repositories or
/// address ranges, move its expiry. Fields left `None` stay as they are.
#[derive(Debug, Clone, Default)]
pub struct TokenUpdate {
    pub name: Option<String>,
    pub scopes: Option<ScopeSet>,
    pub orgs: Option<Orgs>,
    pub repos: Option<Repos>,
    pub allow_from: Option<AllowFrom>,
    pub expires_at: Option<i64>,
}

impl TokenUpdate {
    /// The record after this update, or why the update cannot be made to `current` at `now`.
    /// Scopes and organizations may only narrow; the new expiry must be in the future.
    pub fn apply_to(&self, current: &TokenRecord, now: i64) -> Result<TokenRecord, StoreError> {
        let state = current.state(now);
        if state != TokenState::Active {
            return Err(StoreError::NotLive {
                id: current.id.clone(),
                state,
            });
        }
        if self.name.is_none()
            && self.scopes.is_none()
            && self.orgs.is_none()
            && self.repos.is_none()
            && self.allow_from.is_none()
            && self.expires_at.is_none()
        {
            return Err(InvalidToken::NoChange.into());
        }
        let mut next = current.clone();
        if let Some(name) = &self.name {
            if !is_label(name) {
                return Err(InvalidToken::Name.into());
            }
            next.name = name.clone();
        }
        if let Some(scopes) = self.scopes {
            if scopes.is_empty() {
                return Err(InvalidToken::NoScopes.into());
            }
            if !scopes.is_subset_of(current.scopes) {
                return Err(InvalidToken::ScopesWidened.into());
            }
            next.scopes = scopes;
        }
        if let Some(orgs) = &self.orgs {
            if !orgs.is_subset_of(&current.orgs) {
                return Err(InvalidToken::OrgsWidened.into());
            }
            next.orgs = orgs.clone();
        }
        if let Some(repos) = &self.repos {
            if !repos.is_subset_of(&current.repos) {
                return Err(InvalidToken::ReposWidened.into());
            }
            next.repos = repos.clone();
        }
        repos_within(&next.repos, &next.orgs)?;
        if let Some(ranges) = &self.allow_from {
            if !ranges.is_subset_of(&current.allow_from) {
                return Err(InvalidToken::AllowFromWidened.into());
            }
            next.allow_from = ranges.clone();
        }
        if let Some(at) = self.expires_at {
            if at <= now {
                return Err(InvalidToken::ExpiresAt.into());
            }
            next.expires_at = at;
        }
        Ok(next)
    }
}

/// Which tokens to list, and where a page starts.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub owner: Option<String>,
    pub state: Option<TokenState>,
    /// The `next` cursor of the previous page.
    pub after: Option<Cursor>,
    /// The most records in one page (1 to [`MAX_PAGE`]).
    pub limit: usize,
}

/// The largest page a list returns.
pub const MAX_PAGE: usize = 1000;

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            owner: None,
            state: None,
            after: None,
            limit: MAX_PAGE,
        }
    }
}

/// A position in the list order (newest first): the last record of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: String,
}

impl Cursor {
    /// The cursor as it travels in a URL: `CREATED_AT.ID`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at, self.id)
    }

    /// Parses what [`Cursor::encode`] made.
    pub fn decode(s: &str) -> Option<Cursor> {
        let (at, id) = s.split_once('.')?;
        let ok_id = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric());
        ok_id.then_some(())?;
        Some(Cursor {
            created_at: at.parse().ok()?,
            id: id.to_owned(),
        })
    }
}

/// One page of a list, and where the next one starts (none: this was the last).
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<TokenRecord>,
    pub next: Option<Cursor>,
}

/// What happened to a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Created,
    Updated,
    Regenerated,
    /// A new secret and a new expiry; the old secret is remembered, and its use revokes
    /// the token.
    Rotated,
    Revoked,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::Regenerated => "regenerated",
            EventKind::Rotated => "rotated",
            EventKind::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> Option<EventKind> {
        Some(match s {
            "created" => EventKind::Created,
            "updated" => EventKind::Updated,
            "regenerated" => EventKind::Regenerated,
            "rotated" => EventKind::Rotated,
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
    /// For a rotation: the digest of the secret it replaced.
    pub rotated_away: Option<TokenHash>,
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
    #[error("token {id} is {state}")]
    NotLive { id: String, state: TokenState },
    #[error("the token store is unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Database(String),
    #[error("the store task stopped")]
    TaskStopped,
    #[error(transparent)]
    Invalid(#[from] InvalidToken),
}

impl StoreError {
    /// True when the store could not be reached, as opposed to refusing the operation.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::TaskStopped)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            // Another process holds the database past the busy wait: retry later, as with a
            // PostgreSQL server that does not answer in time.
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// A handle on the token store; cheap to clone.
#[derive(Clone)]
pub enum Store {
    Sqlite(Arc<sqlite::SqliteStore>),
    Postgres(Arc<postgres::PgStore>),
}

impl Store {
    /// Opens the store, creating it and migrating its schema as needed.
    pub async fn open(location: &Location) -> Result<Store, StoreError> {
        Self::open_with(location, postgres::POOL_SIZE).await
    }

    /// As [`Store::open`], with at most `pool_size` pooled connections to PostgreSQL
    /// (`store.max_connections`; SQLite has one connection).
    pub async fn open_with(location: &Location, pool_size: usize) -> Result<Store, StoreError> {
        match location {
            Location::Sqlite(path) => {
                let path = path.clone();
                let s = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path))
                    .await
                    .map_err(|_| StoreError::TaskStopped)??;
                Ok(Store::Sqlite(Arc::new(s)))
            }
            Location::Postgres(url) => Ok(Store::Postgres(Arc::new(postgres::PgStore::open(url, pool_size).await?))),
        }
    }

    /// Runs a blocking SQLite call on tokio's blocking pool.
    async fn blocking<T, F>(s: &Arc<sqlite::SqliteStore>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&sqlite::SqliteStore) -> Result<T, StoreError> + Send + 'static,
    {
        let s = s.clone();
        tokio::task::spawn_blocking(move || f(&s))
            .await
            .map_err(|_| StoreError::TaskStopped)?
    }

    /// Mints a secret and stores the new token with its `created` event and its audit
    /// entry ([`Action::Create`], by `actor`).
    pub async fn create(&self, new: NewToken, actor: &Actor) -> Result<Created, StoreError> {
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
            repos: new.repos,
            allow_from: new.allow_from,
            scopes: new.scopes,
            created_at: now,
            rotated_at: None,
            expires_at: now.saturating_add(lifespan),
            revoked_at: None,
            revoked_by: None,
            last_used_at: None,
            last_used_from: None,
        };
        let actor = actor.clone();
        match self {
            Store::Sqlite(s) => {
                let r = record.clone();
                Self::blocking(s, move |s| s.insert(&r, &actor)).await?
            }
            Store::Postgres(p) => p.insert(&record, &actor).await?,
        }
        Ok(Created { record, secret })
    }

    /// A page of tokens, newest first.
    pub async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        let limit = query.limit.clamp(1, MAX_PAGE);
        let query = ListQuery { limit, ..query };
        match self {
            Store::Sqlite(s) => Self::blocking(s, move |s| s.list(&query, now())).await,
            Store::Postgres(p) => p.list(&query, now()).await,
        }
    }

    /// Every token, newest first, page by page.
    pub async fn list_all(&self, owner: Option<String>) -> Result<Vec<TokenRecord>, StoreError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .list(ListQuery {
                    owner: owner.clone(),
                    after,
                    ..ListQuery::default()
                })
                .await?;
            out.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// One token by id.
    pub async fn get(&self, id: &str) -> Result<TokenRecord, StoreError> {
        let found = match self {
            Store::Sqlite(s) => {
                let id = id.to_owned();
                Self::blocking(s, move |s| s.get(&id)).await?
            }
            Store::Postgres(p) => p.get(id).await?,
        };
        found.ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }

    /// Changes a live token (see [`TokenUpdate::apply_to`]) and records an `updated` event
    /// and an [`Action::Update`] audit entry.
    pub async fn update(&self, id: &str, update: TokenUpdate, actor: &Actor) -> Result<TokenRecord, StoreError> {
        let actor = actor.clone();
        match self {
            Store::Sqlite(s) => {
                let id = id.to_owned();
                Self::blocking(s, move |s| s.update(&id, &update, &actor, now())).await
            }
            Store::Postgres(p) => p.update(id, &update, &actor, now()).await,
        }
    }

    /// Gives a live token a new secret under the same id; the old secret stops working.
    /// Audited as [`Action::Regenerate`].
    pub async fn regenerate(&self, id: &str, actor: &Actor) -> Result<Created, StoreError> {
        let secret = TokenSecret::generate();
        let hash = secret.hash();
        let actor = actor.clone();
        let record = match self {
            Store::Sqlite(s) => {
                let id = id.to_owned();
                Self::blocking(s, move |s| s.regenerate(&id, hash, &actor, now())).await?
            }
            Store::Postgres(p) => p.regenerate(id, hash, &actor, now()).await?,
        };
        Ok(Created { record, secret })
    }

    /// Gives a live token a new secret and the expiry `expires_at` under the same id, in
    /// one step; the old secret stops working and is remembered, so that its use later
    /// revokes the token ([`crate::auth::AuthError::RotatedReused`]). Audited as
    /// [`Action::Rotate`].
    pub async fn rotate(&self, id: &str, expires_at: i64, actor: &Actor) -> Result<Created, StoreError> {
        let secret = TokenSecret::generate();
        let hash = secret.hash();
        let actor = actor.clone();
        let now = now();
        if expires_at <= now {
            return Err(InvalidToken::ExpiresAt.into());
        }
        let record = match self {
            Store::Sqlite(s) => {
                let id = id.to_owned();
                Self::blocking(s, move |s| s.rotate(&id, hash, expires_at, &actor, now)).await?
            }
            Store::Postgres(p) => p.rotate(id, hash, expires_at, &actor, now).await?,
        };
        Ok(Created { record, secret })
    }

    /// The digests of the secrets that rotations replaced, of tokens live at `now`, with
    /// their token ids and the rotations' times: for the in-memory copy, after a snapshot.
    pub async fn rotated_away(&self) -> Result<Vec<(TokenHash, String, i64)>, StoreError> {
        match self {
            Store::Sqlite(s) => Self::blocking(s, |s| s.rotated_away(now())).await,
            Store::Postgres(p) => p.rotated_away(now()).await,
        }
    }

    /// Revokes one token, audited as [`Action::Revoke`]. Revoking a revoked token changes
    /// nothing (no event, no audit entry) and succeeds.
    pub async fn revoke(&self, id: &str, actor: &Actor) -> Result<TokenRecord, StoreError> {
        self.revoke_as(id, actor, Action::Revoke).await
    }

    /// Revokes a token whose rotated-away secret was presented, audited as
    /// [`Action::RotatedSecretReused`].
    pub async fn revoke_reused(&self, id: &str, actor: &Actor) -> Result<TokenRecord, StoreError> {
        self.revoke_as(id, actor, Action::RotatedSecretReused).await
    }

    async fn revoke_as(&self, id: &str, actor: &Actor, action: Action) -> Result<TokenRecord, StoreError> {
        let actor = actor.clone();
        match self {
            Store::Sqlite(s) => {
                let id = id.to_owned();
                Self::blocking(s, move |s| s.revoke(&id, &actor, action, now())).await
            }
            Store::Postgres(p) => p.revoke(id, &actor, action, now()).await,
        }
    }

    /// Revokes every live token of an owner; returns how many. Audited as
    /// [`Action::RevokeAll`], one entry a token.
    pub async fn revoke_owner(&self, owner: &str, actor: &Actor) -> Result<usize, StoreError> {
        let actor = actor.clone();
        match self {
            Store::Sqlite(s) => {
                let owner = owner.to_owned();
                Self::blocking(s, move |s| s.revoke_owner(&owner, &actor, now())).await
            }
            Store::Postgres(p) => p.revoke_owner(owner, &actor, now()).await,
        }
    }

    /// Revokes the live tokens whose secrets hash to these (a leak report); returns the
    /// ids revoked. Audited as [`Action::LeakReport`], one entry a token.
    pub async fn revoke_hashes(&self, hashes: Vec<TokenHash>, actor: &Actor) -> Result<Vec<String>, StoreError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let actor = actor.clone();
        match self {
            Store::Sqlite(s) => Self::blocking(s, move |s| s.revoke_hashes(&hashes, &actor, now())).await,
            Store::Postgres(p) => p.revoke_hashes(&hashes, &actor, now()).await,
        }
    }

    /// Appends entries to the audit trail, in one transaction, in their order.
    pub async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        match self {
            Store::Sqlite(s) => Self::blocking(s, move |s| s.append_audit(&entries)).await,
            Store::Postgres(p) => p.append_audit(&entries).await,
        }
    }

    /// A page of the audit trail, newest first (by `seq`), as [`AuditQuery`] filters it.
    pub async fn audit_page(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let query = AuditQuery {
            limit: query.limit.clamp(1, MAX_PAGE),
            ..query.clone()
        };
        match self {
            Store::Sqlite(s) => Self::blocking(s, move |s| s.audit_page(&query)).await,
            Store::Postgres(p) => p.audit_page(&query).await,
        }
    }

    /// Deletes the audit entries from before `before` (Unix ms), a batch at a time so
    /// that no one transaction holds the store long; returns how many.
    pub async fn prune_audit(&self, before: i64) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = match self {
                Store::Sqlite(s) => Self::blocking(s, move |s| s.prune_audit(before, PRUNE_BATCH)).await?,
                Store::Postgres(p) => p.prune_audit(before, PRUNE_BATCH).await?,
            };
            total += n;
            if n < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Every live token and the event sequence they reflect, read consistently.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        match self {
            Store::Sqlite(s) => Self::blocking(s, |s| s.snapshot(now())).await,
            Store::Postgres(p) => p.snapshot(now()).await,
        }
    }

    /// Calls `f` with every live token as it is read, without gathering them; returns
    /// how many and the event sequence number they reflect, read consistently.
    pub async fn snapshot_each<F>(&self, mut f: F) -> Result<(usize, i64), StoreError>
    where
        F: FnMut(TokenRecord) + Send + 'static,
    {
        match self {
            Store::Sqlite(s) => Self::blocking(s, move |s| s.snapshot_each(now(), &mut f)).await,
            Store::Postgres(p) => p.snapshot_each(now(), &mut f).await,
        }
    }

    /// Events after `seq`, in order, at most `limit`, with each token's current record.
    pub async fn changes_since(&self, seq: i64, limit: usize) -> Result<Vec<Change>, StoreError> {
        match self {
            Store::Sqlite(s) => Self::blocking(s, move |s| s.changes_since(seq, limit)).await,
            Store::Postgres(p) => p.changes_since(seq, limit).await,
        }
    }

    /// Writes back when tokens were last used (advisory; not an event).
    pub async fn record_last_used(&self, uses: Vec<TokenUse>) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        match self {
            Store::Sqlite(s) => Self::blocking(s, move |s| s.record_last_used(&uses)).await,
            Store::Postgres(p) => p.record_last_used(&uses).await,
        }
    }
}

/// An organization list as stored: its JSON.
pub(crate) fn orgs_to_text(o: &Orgs) -> String {
    serde_json::to_string(o).unwrap_or_else(|_| "[]".into())
}

/// Cuts `items` (fetched with one extra) to `limit` and says where the next page starts.
pub(crate) fn page(items: &mut Vec<TokenRecord>, limit: usize) -> Page {
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|r| Cursor {
            created_at: r.created_at,
            id: r.id.clone(),
        })
    } else {
        None
    };
    Page {
        items: std::mem::take(items),
        next,
    }
}

fn new_token_id() -> String {
    random_base62(16)
}

/// Audit entries deleted in one transaction when pruning.
const PRUNE_BATCH: usize = 10_000;

/// Which audit entries to read, and where a page starts. Filters that are `None` let
/// everything through; `time` bounds are Unix milliseconds, `from` inclusive, `to`
/// exclusive.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub owner: Option<String>,
    pub token_id: Option<String>,
    pub outcome: Option<Outcome>,
    pub action: Option<Action>,
    /// Only entries older than this `seq`: the `next` of the previous page.
    pub after: Option<i64>,
    /// The most entries in one page (1 to [`MAX_PAGE`]).
    pub limit: usize,
}

impl Default for AuditQuery {
    fn default() -> Self {
        AuditQuery {
            from: None,
            to: None,
            owner: None,
            token_id: None,
            outcome: None,
            action: None,
            after: None,
            limit: MAX_PAGE,
        }
    }
}

/// A page of the audit trail, newest first, and the `after` of the next page (none: this
/// was the last).
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next: Option<i64>,
}

impl AuditPage {
    /// Cuts `entries` (read with one extra) to `limit` and says where the next page starts.
    fn of(mut entries: Vec<AuditEntry>, limit: usize) -> AuditPage {
        let next = if entries.len() > limit {
            entries.truncate(limit);
            entries.last().map(|e| e.seq)
        } else {
            None
        };
        AuditPage { entries, next }
    }
}

/// The audit entry of a change the store makes to token `id` of `owner`, by `actor`.
fn lifecycle(action: Action, id: &str, owner: &str, actor: &Actor) -> AuditEntry {
    let mut e = AuditEntry::new(crate::audit::now_millis(), action, Outcome::Success);
    e.token_id = Some(id.to_owned());
    e.owner = Some(owner.to_owned());
    e.actor = actor.name.clone();
    e.client = actor.client;
    e
}
