//! The PostgreSQL store, shared by several patgate instances: its URL (parsed once,
//! shown only with the password masked), a bounded connection pool, a versioned schema
//! migrated under an advisory lock, each change written with its event in one
//! transaction that notifies `patgate_token_events` on commit, and the dedicated
//! listening connection that [`super::follow`] uses to hear of changes at once.
//!
//! Event order: every write transaction takes one transaction-level advisory lock before
//! it draws a sequence number, so sequence order is commit order and a reader that has
//! seen event `n` has seen every event before it. Snapshots read the tokens and the last
//! sequence number in one REPEATABLE READ transaction.
//!
//! It must never let a password into a message, and never wait without a bound: every
//! operation gives up after [`OP_TIMEOUT`] with [`StoreError::Unavailable`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, IsolationLevel, NoTls, Row};

use super::schema::AUDIT_COLUMNS;
use super::{
    lifecycle, AuditPage, AuditQuery, Change, EventKind, ListQuery, Page, Snapshot, StoreError, TokenEvent, TokenRecord, TokenState,
    TokenUpdate, TokenUse,
};
use super::{orgs_to_text, page};
use crate::audit::{Action, Actor, AuditEntry, Outcome};
use crate::auth::orgs::Orgs;
use crate::auth::restrictions::{AllowFrom, Repos};
use crate::auth::scope::ScopeSet;
use crate::auth::token::TokenHash;

/// The longest any one store operation may take, connecting included.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest loading every live token at start may take.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest a new connection may take, unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections in the pool, at most, unless `store.max_connections` says otherwise.
pub const POOL_SIZE: usize = 8;
/// How often an idle listening connection is checked.
const LISTEN_PING: Duration = Duration::from_secs(10);
/// The channel every write notifies on commit.
pub const CHANNEL: &str = "patgate_token_events";
/// Advisory lock keys (per database): schema migrations, and the one writer at a time
/// that keeps sequence order equal to commit order.
const MIGRATE_LOCK: i64 = 0x7061_7467_6174_6501;
const WRITE_LOCK: i64 = 0x7061_7467_6174_6502;

/// Schema migrations, in order; the position plus one is the version.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    hash          BYTEA NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    owner         TEXT NOT NULL,
    orgs          TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    revoked_by    TEXT,
    last_used_at  BIGINT
);
CREATE INDEX tokens_owner ON tokens (owner);
CREATE INDEX tokens_newest ON tokens (created_at DESC, id DESC);
CREATE TABLE token_events (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_id  TEXT NOT NULL,
    kind      TEXT NOT NULL,
    at        BIGINT NOT NULL,
    actor     TEXT
);
"#,
    // 2: the audit trail. Entries are written under the writer lock, as events are, so
    // that `seq` order is commit order.
    r#"
CREATE TABLE audit_log (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time      BIGINT NOT NULL,
    action    TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    reason    TEXT,
    token_id  TEXT,
    owner     TEXT,
    actor     TEXT,
    client    TEXT,
    method    TEXT,
    path      TEXT,
    route     TEXT,
    status    INTEGER,
    count     BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX audit_log_time ON audit_log (time);
CREATE INDEX audit_log_owner ON audit_log (owner, seq);
CREATE INDEX audit_log_token ON audit_log (token_id, seq);
"#,
    // 3: where each token was last used from.
    "ALTER TABLE tokens ADD COLUMN last_used_from TEXT;",
    // 4: repositories, address ranges, rotation; a rotation's event keeps the digest of
    // the secret it replaced.
    r#"
ALTER TABLE tokens ADD COLUMN repos TEXT NOT NULL DEFAULT '*';
ALTER TABLE tokens ADD COLUMN allow_from TEXT NOT NULL DEFAULT '*';
ALTER TABLE tokens ADD COLUMN rotated_at BIGINT;
ALTER TABLE token_events ADD COLUMN rotated_away BYTEA;
CREATE INDEX token_events_rotated ON token_events (token_id) WHERE rotated_away IS NOT NULL;
"#,
];

const COLUMNS: &str = "id, hash, name, owner, orgs, scopes, created_at, expires_at, revoked_at, revoked_by, last_used_at, last_used_from, repos, allow_from, rotated_at";

/// A PostgreSQL connection URL (`postgres://` or `postgresql://`), checked. Display and
/// Debug mask the password: `postgres://user:***@host:5432/db`.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    config: Box<tokio_postgres::Config>,
    shown: String,
}

impl PgUrl {
    /// Parses a `postgres://` or `postgresql://` URL. The error names what is wrong and
    /// never repeats the URL.
    pub fn parse(url: &str) -> Result<PgUrl, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("a PostgreSQL URL starts with postgres:// or postgresql://".into());
        }
        let config = tokio_postgres::Config::from_str(url).map_err(|e| match std::error::Error::source(&e) {
            Some(cause) => format!("not a valid PostgreSQL URL: {cause}"),
            None => format!("not a valid PostgreSQL URL: {e}"),
        })?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err("the PostgreSQL URL names no host".into());
        }
        if config.get_user().is_none_or(str::is_empty) {
            return Err("the PostgreSQL URL names no user".into());
        }
        if config.get_ssl_mode() == SslMode::Require {
            return Err("sslmode=require is not supported: patgate connects to PostgreSQL without TLS".into());
        }
        let shown = show(&config);
        Ok(PgUrl {
            config: Box::new(config),
            shown,
        })
    }

    /// The connection settings, password included: for connecting, never for showing.
    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

/// `postgres://user[:***]@host:port[,host:port]/db[?host=/socket/dir]`
fn show(c: &tokio_postgres::Config) -> String {
    let mut out = String::from("postgres://");
    out += c.get_user().unwrap_or_default();
    if c.get_password().is_some() {
        out += ":***";
    }
    out.push('@');
    let ports = c.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut tcp = Vec::new();
    let mut sockets = Vec::new();
    for (i, h) in c.get_hosts().iter().enumerate() {
        match h {
            Host::Tcp(name) if name.contains(':') => tcp.push(format!("[{name}]:{}", port(i))),
            Host::Tcp(name) => tcp.push(format!("{name}:{}", port(i))),
            #[cfg(unix)]
            Host::Unix(path) => sockets.push(path.display().to_string()),
        }
    }
    if tcp.is_empty() {
        tcp.extend(c.get_hostaddrs().iter().enumerate().map(|(i, a)| match a {
            std::net::IpAddr::V6(a) => format!("[{a}]:{}", port(i)),
            std::net::IpAddr::V4(a) => format!("{a}:{}", port(i)),
        }));
    }
    out += &tcp.join(",");
    if let Some(db) = c.get_dbname() {
        out.push('/');
        out += db;
    }
    if !sockets.is_empty() {
        out += "?host=";
        out += &sockets.join(",");
    }
    out
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", self.shown)
    }
}

/// Masks the password of a store URL as written, for messages about a URL that may not
/// parse: the user-info after the first `:` and any `password=` value become `***`.
pub fn redact_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return mask_password_params(url);
    };
    if url.starts_with("sqlite://") {
        return url.to_owned();
    }
    let rest = &url[start..];
    let masked = match rest.rfind('@') {
        Some(at) => match rest[..at].find(':') {
            // Everything from the colon to the last `@` is masked, even if a path or
            // query held an `@`: masking too much is safe.
            Some(colon) => format!("{}{}:***{}", &url[..start], &rest[..colon], &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    mask_password_params(&masked)
}

fn mask_password_params(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("password=") {
        let value = i + "password=".len();
        out += &rest[..value];
        out += "***";
        let end = rest[value..].find(['&', ' ']).map_or(rest.len(), |e| value + e);
        rest = &rest[end..];
    }
    out += rest;
    out
}

/// A PostgreSQL database shared by every patgate instance that names it.
pub struct PgStore {
    pool: Pool,
    /// The connection settings with patgate's defaults, for the listening connection.
    config: tokio_postgres::Config,
}

/// Runs `$body` (an async block's statements, with `$c: &mut Object`) on a pooled
/// connection, all of it within [`OP_TIMEOUT`]. A connection that was cut off mid-way
/// is closed rather than returned to the pool.
macro_rules! with_client {
    ($store:expr, |$c:ident| $body:block) => {{
        let store: &PgStore = $store;
        let mut slot: Option<Object> = None;
        let r = tokio::time::timeout(OP_TIMEOUT, async {
            let $c: &mut Object = slot.insert(store.client().await?);
            $body
        })
        .await;
        settle(&mut slot, r)
    }};
}

pub(super) fn settle<T>(slot: &mut Option<Object>, r: Result<Result<T, StoreError>, tokio::time::error::Elapsed>) -> Result<T, StoreError> {
    match r {
        Ok(r) => r,
        Err(_) => {
            if let Some(c) = slot.take() {
                drop(Object::take(c));
            }
            Err(StoreError::Unavailable(format!(
                "no answer from PostgreSQL within {}s",
                OP_TIMEOUT.as_secs()
            )))
        }
    }
}

impl PgStore {
    /// Connects with a pool of at most `pool_size` connections (and one more, to listen
    /// for changes) and migrates the schema (once, however many instances start at once).
    /// An unreachable server is an [`StoreError::Open`] naming the URL, password masked.
    pub async fn open(url: &PgUrl, pool_size: usize) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = url.config().clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("patgate");
        }
        if config.get_tcp_user_timeout().is_none() {
            // Sent data unacknowledged this long: the connection is dead.
            config.tcp_user_timeout(OP_TIMEOUT * 2);
        }
        let fail = |reason: String| StoreError::Open {
            path: url.to_string(),
            reason,
        };
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(OP_TIMEOUT))
            .create_timeout(Some(OP_TIMEOUT))
            .recycle_timeout(Some(OP_TIMEOUT))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let store = PgStore { pool, config };
        store.migrate().await.map_err(|e| match e {
            StoreError::Unavailable(reason) | StoreError::Database(reason) => fail(reason),
            other => other,
        })?;
        Ok(store)
    }

    pub(super) async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            StoreError::Unavailable(match e {
                PoolError::Timeout(_) => "no PostgreSQL connection free or made in time".into(),
                PoolError::Backend(e) => reason(&e),
                PoolError::Closed => "the PostgreSQL connection pool is closed".into(),
                PoolError::NoRuntimeSpecified => "the PostgreSQL connection pool has no runtime".into(),
                PoolError::PostCreateHook(e) => one_line(&e.to_string()),
            })
        })
    }

    /// Applies pending migrations in one transaction under an advisory lock, so
    /// instances opening a new database at once apply each migration once.
    async fn migrate(&self) -> Result<(), StoreError> {
        with_client!(self, |c| {
            let known = MIGRATIONS.len() as i64;
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK]).await?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
                .await?;
            let current: i64 = tx
                .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])
                .await?
                .try_get(0)?;
            if current > known {
                return Err(StoreError::SchemaTooNew { found: current, known });
            }
            for version in current..known {
                tx.batch_execute(MIGRATIONS[version as usize]).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    &[&(version + 1), &super::now()],
                )
                .await?;
            }
            // The audit streams' tables, outside the versioned migrations (see super::streams).
            tx.batch_execute(super::schema::STREAMS_PG).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub(super) async fn insert(&self, r: &TokenRecord, actor: &Actor) -> Result<(), StoreError> {
        with_client!(self, |c| {
            let tx = write_tx(c).await?;
            let st = tx
                .prepare_cached(&format!(
                    "INSERT INTO tokens ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
                ))
                .await?;
            tx.execute(
                &st,
                &[
                    &r.id,
                    &&r.hash.0[..],
                    &r.name,
                    &r.owner,
                    &orgs_to_text(&r.orgs),
                    &r.scopes.to_string(),
                    &r.created_at,
                    &r.expires_at,
                    &r.revoked_at,
                    &r.revoked_by,
                    &r.last_used_at,
                    &r.last_used_from,
                    &r.repos.to_string(),
                    &r.allow_from.to_string(),
                    &r.rotated_at,
                ],
            )
            .await?;
            append_events(&tx, std::slice::from_ref(&r.id), EventKind::Created, r.created_at, actor).await?;
            append_audit(&tx, &[lifecycle(Action::Create, &r.id, &r.owner, actor)]).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub(super) async fn list(&self, q: &ListQuery, now: i64) -> Result<Page, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM tokens WHERE TRUE");
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        if let Some(owner) = &q.owner {
            args.push(Box::new(owner.clone()));
            sql += &format!(" AND owner = ${}", args.len());
        }
        match q.state {
            None => {}
            Some(TokenState::Revoked) => sql += " AND revoked_at IS NOT NULL",
            Some(live) => {
                args.push(Box::new(now));
                let op = if live == TokenState::Active { ">" } else { "<=" };
                sql += &format!(" AND revoked_at IS NULL AND expires_at {op} ${}", args.len());
            }
        }
        if let Some(after) = &q.after {
            args.push(Box::new(after.created_at));
            args.push(Box::new(after.id.clone()));
            let (c, i) = (args.len() - 1, args.len());
            sql += &format!(" AND (created_at < ${c} OR (created_at = ${c} AND id < ${i}))");
        }
        // One more than asked tells whether another page follows.
        args.push(Box::new((q.limit + 1) as i64));
        sql += &format!(" ORDER BY created_at DESC, id DESC LIMIT ${}", args.len());
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
        with_client!(self, |c| {
            let st = c.prepare_cached(&sql).await?;
            let rows = c.query(&st, &params).await?;
            let mut items = rows.iter().map(|r| read_record(r, 0)).collect::<Result<Vec<_>, _>>()?;
            Ok(page(&mut items, q.limit))
        })
    }

    pub(super) async fn get(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        with_client!(self, |c| {
            let st = c.prepare_cached(&format!("SELECT {COLUMNS} FROM tokens WHERE id = $1")).await?;
            c.query_opt(&st, &[&id]).await?.map(|r| read_record(&r, 0)).transpose()
        })
    }

    pub(super) async fn update(&self, id: &str, update: &TokenUpdate, actor: &Actor, now: i64) -> Result<TokenRecord, StoreError> {
        with_client!(self, |c| {
            let tx = write_tx(c).await?;
            let current = get_for_update(&tx, id).await?;
            let next = update.apply_to(&current, now)?;
            tx.execute(
                "UPDATE tokens SET name = $2, orgs = $3, scopes = $4, expires_at = $5, repos = $6, allow_from = $7 WHERE id = $1",
                &[
                    &id,
                    &next.name,
                    &orgs_to_text(&next.orgs),
                    &next.scopes.to_string(),
                    &next.expires_at,
                    &next.repos.to_string(),
                    &next.allow_from.to_string(),
                ],
            )
            .await?;
            append_events(&tx, &[id.to_owned()], EventKind::Updated, now, actor).await?;
            append_audit(&tx, &[lifecycle(Action::Update, id, &next.owner, actor)]).await?;
            tx.commit().await?;
            Ok(next)
        })
    }

    pub(super) async fn regenerate(&self, id: &str, hash: TokenHash, actor: &Actor, now: i64) -> Result<TokenRecord, StoreError> {
        with_client!(self, |c| {
            let tx = write_tx(c).await?;
            let mut record = get_for_update(&tx, id).await?;
            let state = record.state(now);
            if state != TokenState::Active {
                return Err(StoreError::NotLive { id: id.to_owned(), state });
            }
            tx.execute("UPDATE tokens SET hash = $2 WHERE id = $1", &[&id, &&hash.0[..]])
                .await?;
            append_events(&tx, &[id.to_owned()], EventKind::Regenerated, now, actor).await?;
            append_audit(&tx, &[lifecycle(Action::Regenerate, id, &record.owner, actor)]).await?;
            tx.commit().await?;
            record.hash = hash;
            Ok(record)
        })
    }

    pub(super) async fn rotate(
        &self,
        id: &str,
        hash: TokenHash,
        expires_at: i64,
        actor: &Actor,
        now: i64,
    ) -> Result<TokenRecord, StoreError> {
        with_client!(self, |c| {
            let tx = write_tx(c).await?;
            let mut record = get_for_update(&tx, id).await?;
            let state = record.state(now);
            if state != TokenState::Active {
                return Err(StoreError::NotLive { id: id.to_owned(), state });
            }
            tx.execute(
                "UPDATE tokens SET hash = $2, expires_at = $3, rotated_at = $4 WHERE id = $1",
                &[&id, &&hash.0[..], &expires_at, &now],
            )
            .await?;
            tx.execute(
                "INSERT INTO token_events (token_id, kind, at, actor, rotated_away) VALUES ($1, $2, $3, $4, $5)",
                &[&id, &EventKind::Rotated.as_str(), &now, &actor.name, &&record.hash.0[..]],
            )
            .await?;
            tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).await?;
            append_audit(&tx, &[lifecycle(Action::Rotate, id, &record.owner, actor)]).await?;
            tx.commit().await?;
            record.hash = hash;
            record.expires_at = expires_at;
            record.rotated_at = Some(now);
            Ok(record)
        })
    }

    pub(super) async fn rotated_away(&self, now: i64) -> Result<Vec<(TokenHash, String, i64)>, StoreError> {
        with_client!(self, |c| {
            let rows = c
                .query(
                    "SELECT e.rotated_away, e.token_id, e.at FROM token_events e JOIN tokens t ON t.id = e.token_id \
                     WHERE e.rotated_away IS NOT NULL AND t.revoked_at IS NULL AND t.expires_at > $1",
                    &[&now],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let hash: Vec<u8> = r.try_get(0)?;
                if let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) {
                    out.push((TokenHash(hash), r.try_get(1)?, r.try_get(2)?));
                }
            }
            Ok(out)
        })
    }

    pub(super) async fn revoke_hashes(&self, hashes: &[TokenHash], actor: &Actor, now: i64) -> Result<Vec<String>, StoreError> {
        with_client!(self, |c| {
            let tx = write_tx(c).await?;
            let st = tx
                .prepare_cached(
                    "UPDATE tokens SET revoked_at = $2, revoked_by = $3 WHERE hash = $1 AND revoked_at IS NULL RETURNING id, owner",
                )
                .await?;
            let mut ids = Vec::new();
            let mut entries = Vec::new();
            for h in hashes {
                if let Some(row) = tx.query_opt(&st, &[&&h.0[..], &now, &actor.name]).await? {
                    let (id, owner): (String, String) = (row.try_get(0)?, row.try_get(1)?);
                    entries.push(lifecycle(Action::LeakReport, &id, &owner, actor));
                    ids.push(id);
                }
            }
            append_events(&tx, &ids, EventKind::Revoked, now, actor).await?;
            append_audit(&tx, &entries).await?;
            tx.commit().await?;
            Ok(ids)
        })
    }

    pub(super) async fn revoke(&self, id: &str, actor: &Actor, action: Action, now: i64) -> Result<TokenRecord, StoreError> {
        with_client!(self, |c| {
            let tx = write_tx(c).await?;
            let changed = tx
                .execute(
                    "UPDATE tokens SET revoked_at = $2, revoked_by = $3 WHERE id = $1 AND revoked_at IS NULL",
                    &[&id, &now, &actor.name],
                )
                .await?;
            let record = get_for_update(&tx, id).await?;
            if changed == 1 {
                append_events(&tx, &[id.to_owned()], EventKind::Revoked, now, actor).await?;
                append_audit(&tx, &[lifecycle(action, id, &record.owner, actor)]).await?;
            }
            tx.commit().await?;
            Ok(record)
        })
    }

    pub(super) async fn revoke_owner(&self, owner: &str, actor: &Actor, now: i64) -> Result<usize, StoreError> {
        with_client!(self, |c| {
            let tx = write_tx(c).await?;
            let rows = tx
                .query(
                    "UPDATE tokens SET revoked_at = $2, revoked_by = $3 WHERE owner = $1 AND revoked_at IS NULL RETURNING id",
                    &[&owner, &now, &actor.name],
                )
                .await?;
            let ids = rows.iter().map(|r| r.try_get(0)).collect::<Result<Vec<String>, _>>()?;
            append_events(&tx, &ids, EventKind::Revoked, now, actor).await?;
            let entries: Vec<AuditEntry> = ids.iter().map(|id| lifecycle(Action::RevokeAll, id, owner, actor)).collect();
            append_audit(&tx, &entries).await?;
            tx.commit().await?;
            Ok(ids.len())
        })
    }

    pub(super) async fn snapshot(&self, now: i64) -> Result<Snapshot, StoreError> {
        let mut live = Vec::new();
        let (_, seq) = self.snapshot_each(now, &mut |r| live.push(r)).await?;
        Ok(Snapshot { live, seq })
    }

    /// Calls `f` with every live token as rows arrive (nothing is gathered), in one
    /// snapshot; returns how many and the sequence number they reflect. Bounded by
    /// [`LOAD_TIMEOUT`], not the per-operation timeout: a large store takes a while.
    pub(super) async fn snapshot_each(&self, now: i64, f: &mut (dyn FnMut(TokenRecord) + Send)) -> Result<(usize, i64), StoreError> {
        use futures_util::TryStreamExt;
        let mut slot: Option<Object> = None;
        let r = tokio::time::timeout(LOAD_TIMEOUT, async {
            let c: &mut Object = slot.insert(self.client().await?);
            let tx = c
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let seq: i64 = tx
                .query_one("SELECT COALESCE(MAX(seq), 0) FROM token_events", &[])
                .await?
                .try_get(0)?;
            let st = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM tokens WHERE revoked_at IS NULL AND expires_at > $1"
                ))
                .await?;
            let rows = tx.query_raw(&st, [&now as &(dyn ToSql + Sync)]).await?;
            let mut rows = std::pin::pin!(rows);
            let mut n = 0;
            while let Some(row) = rows.try_next().await? {
                f(read_record(&row, 0)?);
                n += 1;
            }
            tx.commit().await?;
            Ok((n, seq))
        })
        .await;
        settle(&mut slot, r)
    }

    pub(super) async fn changes_since(&self, seq: i64, limit: usize) -> Result<Vec<Change>, StoreError> {
        let sql = format!(
            "SELECT e.seq, e.token_id, e.kind, e.at, e.actor, e.rotated_away, {} FROM token_events e LEFT JOIN tokens t ON t.id = e.token_id \
             WHERE e.seq > $1 ORDER BY e.seq LIMIT $2",
            COLUMNS.split(", ").map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ")
        );
        with_client!(self, |c| {
            // One statement: the events and the records come from one snapshot.
            let st = c.prepare_cached(&sql).await?;
            let rows = c.query(&st, &[&seq, &(limit as i64)]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let kind: String = r.try_get(2)?;
                let event = TokenEvent {
                    seq: r.try_get(0)?,
                    token_id: r.try_get(1)?,
                    kind: EventKind::parse(&kind).unwrap_or(EventKind::Updated),
                    at: r.try_get(3)?,
                    actor: r.try_get(4)?,
                };
                let rotated_away: Option<Vec<u8>> = r.try_get(5)?;
                let rotated_away = rotated_away.and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok()).map(TokenHash);
                let present: Option<String> = r.try_get(6)?;
                let record = match present {
                    Some(_) => Some(read_record(r, 6)?),
                    None => None,
                };
                out.push(Change {
                    event,
                    record,
                    rotated_away,
                });
            }
            Ok(out)
        })
    }

    pub(super) async fn append_audit(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        with_client!(self, |c| {
            let tx = write_tx(c).await?;
            append_audit(&tx, entries).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub(super) async fn audit_page(&self, q: &AuditQuery) -> Result<AuditPage, StoreError> {
        let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE TRUE");
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut filter = |sql: &mut String, cond: &str, v: Box<dyn ToSql + Sync + Send>| {
            args.push(v);
            *sql += &format!(" AND {cond} ${}", args.len());
        };
        if let Some(from) = q.from {
            filter(&mut sql, "time >=", Box::new(from));
        }
        if let Some(to) = q.to {
            filter(&mut sql, "time <", Box::new(to));
        }
        if let Some(owner) = &q.owner {
            filter(&mut sql, "owner =", Box::new(owner.clone()));
        }
        if let Some(id) = &q.token_id {
            filter(&mut sql, "token_id =", Box::new(id.clone()));
        }
        if let Some(outcome) = q.outcome {
            filter(&mut sql, "outcome =", Box::new(outcome.as_str()));
        }
        if let Some(action) = q.action {
            filter(&mut sql, "action =", Box::new(action.as_str()));
        }
        if let Some(after) = q.after {
            filter(&mut sql, "seq <", Box::new(after));
        }
        // One more than asked tells whether another page follows.
        args.push(Box::new((q.limit + 1) as i64));
        sql += &format!(" ORDER BY seq DESC LIMIT ${}", args.len());
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
        with_client!(self, |c| {
            let st = c.prepare_cached(&sql).await?;
            let rows = c.query(&st, &params).await?;
            let entries = rows.iter().map(read_audit).collect::<Result<Vec<_>, _>>()?;
            Ok(AuditPage::of(entries, q.limit))
        })
    }

    /// Deletes at most `batch` audit entries from before `before` (Unix ms), oldest first.
    pub(super) async fn prune_audit(&self, before: i64, batch: usize) -> Result<usize, StoreError> {
        with_client!(self, |c| {
            let st = c
                .prepare_cached("DELETE FROM audit_log WHERE seq IN (SELECT seq FROM audit_log WHERE time < $1 ORDER BY time LIMIT $2)")
                .await?;
            let n = c.execute(&st, &[&before, &(batch as i64)]).await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    pub(super) async fn record_last_used(&self, uses: &[TokenUse]) -> Result<(), StoreError> {
        let mut uses = uses.to_vec();
        // The latest use of each token, in id order.
        uses.sort_by(|a, b| a.id.cmp(&b.id).then(b.at.cmp(&a.at)));
        uses.dedup_by(|b, a| a.id == b.id);
        let ids: Vec<String> = uses.iter().map(|u| u.id.clone()).collect();
        let ats: Vec<i64> = uses.iter().map(|u| u.at).collect();
        let froms: Vec<Option<String>> = uses.iter().map(|u| u.from.map(|ip| ip.to_string())).collect();
        with_client!(self, |c| {
            let tx = c.transaction().await?;
            // Rows are locked in id order, so two instances writing back at once cannot deadlock.
            tx.query("SELECT id FROM tokens WHERE id = ANY($1) ORDER BY id FOR UPDATE", &[&ids])
                .await?;
            tx.execute(
                "UPDATE tokens SET last_used_at = u.at, last_used_from = COALESCE(u.from_ip, tokens.last_used_from) \
                 FROM unnest($1::text[], $2::bigint[], $3::text[]) AS u(id, at, from_ip) \
                 WHERE tokens.id = u.id AND (tokens.last_used_at IS NULL OR tokens.last_used_at < u.at)",
                &[&ids, &ats, &froms],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Opens a dedicated connection that listens for committed changes.
    pub async fn listen(&self) -> Result<EventListener, StoreError> {
        let connect = async {
            let (client, mut conn) = self.config.connect(NoTls).await?;
            let wake = Arc::new(Notify::new());
            let notify = wake.clone();
            let driver = tokio::spawn(async move {
                loop {
                    match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                        Some(Ok(AsyncMessage::Notification(_))) => notify.notify_one(),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return reason(&e),
                        None => return "the connection was closed".to_owned(),
                    }
                }
            });
            let listener = EventListener {
                client,
                wake,
                driver,
                lost: None,
            };
            listener.client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
            Ok::<_, StoreError>(listener)
        };
        tokio::time::timeout(OP_TIMEOUT, connect)
            .await
            .map_err(|_| StoreError::Unavailable(format!("no answer from PostgreSQL within {}s", OP_TIMEOUT.as_secs())))?
    }
}

/// A connection that LISTENs on [`CHANNEL`]: [`EventListener::next`] returns when
/// changes were committed, or says that the connection is lost.
pub struct EventListener {
    client: tokio_postgres::Client,
    wake: Arc<Notify>,
    driver: JoinHandle<String>,
    lost: Option<String>,
}

impl EventListener {
    /// Waits until a change is committed (several may be reported at once), or fails
    /// with [`StoreError::Unavailable`] once the connection is lost; then open another.
    pub async fn next(&mut self) -> Result<(), StoreError> {
        loop {
            if let Some(reason) = &self.lost {
                return Err(StoreError::Unavailable(reason.clone()));
            }
            tokio::select! {
                _ = self.wake.notified() => return Ok(()),
                r = &mut self.driver => {
                    self.lost = Some(r.unwrap_or_else(|_| "the connection task stopped".to_owned()));
                }
                _ = tokio::time::sleep(LISTEN_PING) => {
                    // A quiet connection may be dead without knowing it: ask.
                    match tokio::time::timeout(OP_TIMEOUT, self.client.simple_query("")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => self.lost = Some(reason(&e)),
                        Err(_) => self.lost = Some(format!("no answer from PostgreSQL within {}s", OP_TIMEOUT.as_secs())),
                    }
                }
            }
        }
    }
}

impl Drop for EventListener {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Starts a write transaction: the writer lock first, so that sequence numbers are
/// drawn, and become visible, in commit order.
pub(super) async fn write_tx(c: &mut Object) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    let tx = c.transaction().await?;
    let st = tx.prepare_cached("SELECT pg_advisory_xact_lock($1)").await?;
    tx.execute(&st, &[&WRITE_LOCK]).await?;
    Ok(tx)
}

/// Records one event per id and notifies the listeners, both on commit.
async fn append_events(
    tx: &deadpool_postgres::Transaction<'_>,
    ids: &[String],
    kind: EventKind,
    at: i64,
    actor: &Actor,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let actor = actor.name.as_deref();
    let st = tx
        .prepare_cached(
            "INSERT INTO token_events (token_id, kind, at, actor) SELECT id, $2, $3, $4 FROM unnest($1::text[]) WITH ORDINALITY AS u(id, n) ORDER BY n",
        )
        .await?;
    tx.execute(&st, &[&ids, &kind.as_str(), &at, &actor]).await?;
    let st = tx.prepare_cached("SELECT pg_notify($1, '')").await?;
    tx.execute(&st, &[&CHANNEL]).await?;
    Ok(())
}

/// Appends audit entries within `tx` (which holds the writer lock), in their order, in
/// one statement.
pub(super) async fn append_audit(tx: &deadpool_postgres::Transaction<'_>, entries: &[AuditEntry]) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let text = |f: fn(&AuditEntry) -> Option<&str>| entries.iter().map(f).collect::<Vec<Option<&str>>>();
    let times: Vec<i64> = entries.iter().map(|e| e.time).collect();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    let outcomes: Vec<&str> = entries.iter().map(|e| e.outcome.as_str()).collect();
    let clients: Vec<Option<String>> = entries.iter().map(|e| e.client.map(|c| c.to_string())).collect();
    let statuses: Vec<Option<i32>> = entries.iter().map(|e| e.status.map(i32::from)).collect();
    let counts: Vec<i64> = entries.iter().map(|e| i64::from(e.count)).collect();
    let st = tx
        .prepare_cached(
            "INSERT INTO audit_log (time, action, outcome, reason, token_id, owner, actor, client, method, path, route, status, count) \
             SELECT time, action, outcome, reason, token_id, owner, actor, client, method, path, route, status, count \
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
                         $9::text[], $10::text[], $11::text[], $12::int[], $13::bigint[]) \
             WITH ORDINALITY AS u(time, action, outcome, reason, token_id, owner, actor, client, method, path, route, status, count, n) \
             ORDER BY n",
        )
        .await?;
    tx.execute(
        &st,
        &[
            &times,
            &actions,
            &outcomes,
            &text(|e| e.reason.as_deref()),
            &text(|e| e.token_id.as_deref()),
            &text(|e| e.owner.as_deref()),
            &text(|e| e.actor.as_deref()),
            &clients,
            &text(|e| e.method.as_deref()),
            &text(|e| e.path.as_deref()),
            &text(|e| e.route.as_deref()),
            &statuses,
            &counts,
        ],
    )
    .await?;
    Ok(())
}

/// One audit entry in [`AUDIT_COLUMNS`], read as [`super::sqlite`] reads it.
pub(super) fn read_audit(r: &Row) -> Result<AuditEntry, StoreError> {
    let action: String = r.try_get(2)?;
    let outcome: String = r.try_get(3)?;
    let client: Option<String> = r.try_get(8)?;
    let status: Option<i32> = r.try_get(12)?;
    let count: i64 = r.try_get(13)?;
    Ok(AuditEntry {
        seq: r.try_get(0)?,
        time: r.try_get(1)?,
        action: Action::from_name(&action).unwrap_or(Action::Access),
        outcome: Outcome::from_name(&outcome).unwrap_or(Outcome::Failure),
        reason: r.try_get(4)?,
        token_id: r.try_get(5)?,
        owner: r.try_get(6)?,
        actor: r.try_get(7)?,
        client: client.and_then(|c| c.parse().ok()),
        method: r.try_get(9)?,
        path: r.try_get(10)?,
        route: r.try_get(11)?,
        status: status.and_then(|s| u16::try_from(s).ok()),
        count: u32::try_from(count).unwrap_or(u32::MAX),
    })
}

async fn get_for_update(tx: &deadpool_postgres::Transaction<'_>, id: &str) -> Result<TokenRecord, StoreError> {
    let st = tx
        .prepare_cached(&format!("SELECT {COLUMNS} FROM tokens WHERE id = $1 FOR UPDATE"))
        .await?;
    match tx.query_opt(&st, &[&id]).await? {
        Some(row) => read_record(&row, 0),
        None => Err(StoreError::NotFound(id.to_owned())),
    }
}

/// The token record in the [`COLUMNS`] starting at column `at`.
fn read_record(r: &Row, at: usize) -> Result<TokenRecord, StoreError> {
    let id: String = r.try_get(at)?;
    let corrupt = |what: &str| StoreError::Database(format!("token {id}: stored {what} cannot be read"));
    let hash: Vec<u8> = r.try_get(at + 1)?;
    let orgs: String = r.try_get(at + 4)?;
    let scopes: String = r.try_get(at + 5)?;
    let hash = <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| corrupt("hash"))?;
    let orgs = serde_json::from_str::<Orgs>(&orgs).map_err(|_| corrupt("organizations"))?;
    let names: Vec<&str> = scopes.split(',').filter(|s| !s.is_empty()).collect();
    let scopes = ScopeSet::parse(&names).map_err(|_| corrupt("scopes"))?;
    let repos: String = r.try_get(at + 12)?;
    let repos = Repos::parse(&repos).map_err(|_| corrupt("repos"))?;
    let allow_from: String = r.try_get(at + 13)?;
    let allow_from = AllowFrom::parse(&allow_from).map_err(|_| corrupt("allow_from"))?;
    Ok(TokenRecord {
        hash: TokenHash(hash),
        name: r.try_get(at + 2)?,
        owner: r.try_get(at + 3)?,
        orgs,
        scopes,
        created_at: r.try_get(at + 6)?,
        expires_at: r.try_get(at + 7)?,
        revoked_at: r.try_get(at + 8)?,
        revoked_by: r.try_get(at + 9)?,
        last_used_at: r.try_get(at + 10)?,
        last_used_from: r.try_get(at + 11)?,
        repos,
        allow_from,
        rotated_at: r.try_get(at + 14)?,
        id,
    })
}

/// Classes of SQLSTATE that mean the server cannot serve now (connection exception,
/// operator intervention, insufficient resources), as opposed to refusing the statement.
fn is_outage(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57") || code.starts_with("53")
}

/// A one-line reason for a PostgreSQL error: the server's message and SQLSTATE, never
/// its DETAIL (which may quote stored values).
fn reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => one_line(&format!("{} ({})", db.message(), db.code().code())),
        None => one_line(&e.to_string()),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A refusal by the server is a database error; anything else (no connection, a lost
/// connection, an outage code) means the store is unavailable.
impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) if !is_outage(db.code().code()) => StoreError::Database(reason(&e)),
            _ => StoreError::Unavailable(reason(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Location, Store};
    use super::*;

    /// A fresh database on the test server (`PATGATE_TEST_POSTGRES`), dropped on drop.
    /// No server is a failure, never a skip.
    struct TestDb {
        server: String,
        name: String,
        url: PgUrl,
    }

    impl TestDb {
        async fn new() -> TestDb {
            let server = std::env::var("PATGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let name = format!("patgate_test_{}", crate::auth::token::random_base62(12).to_lowercase());
            let (client, conn) = tokio_postgres::connect(&server, NoTls)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL for tests at {} is unreachable: {e}", redact_url(&server)));
            tokio::spawn(conn);
            client.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
            let mut config = tokio_postgres::Config::from_str(&server).unwrap();
            config.dbname(&name);
            let url = PgUrl {
                shown: show(&config),
                config: Box::new(config),
            };
            TestDb { server, name, url }
        }
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            let (server, name) = (self.server.clone(), self.name.clone());
            // Best effort, on a runtime of its own: the test's runtime may be gone.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                rt.block_on(async {
                    let (client, conn) = tokio_postgres::connect(&server, NoTls).await.ok()?;
                    tokio::spawn(conn);
                    client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await
                        .ok()
                })
            })
            .join();
        }
    }

    #[tokio::test]
    async fn conformance() {
        let db = TestDb::new().await;
        let store = Store::open(&Location::Postgres(db.url.clone())).await.unwrap();
        super::super::conformance::run_all(store).await;
    }

    /// `store.max_connections`: the pool holds no more connections than it says, and a
    /// pool of one still serves one operation after another.
    #[tokio::test]
    async fn the_pool_is_as_large_as_configured() {
        let db = TestDb::new().await;
        let store = PgStore::open(&db.url, 2).await.unwrap();
        assert_eq!(store.pool.status().max_size, 2);
        let one = Store::open_with(&Location::Postgres(db.url.clone()), 1).await.unwrap();
        for _ in 0..3 {
            one.audit_tail().await.unwrap();
        }
        let Store::Postgres(p) = &one else { unreachable!() };
        assert_eq!(p.pool.status().max_size, 1);
    }

    #[tokio::test]
    async fn instances_opening_a_new_database_at_once_migrate_it_once() {
        let db = TestDb::new().await;
        let opens: Vec<_> = (0..4).map(|_| PgStore::open(&db.url, POOL_SIZE)).collect();
        let stores = futures_util::future::join_all(opens).await;
        for s in &stores {
            assert!(s.is_ok(), "{:?}", s.as_ref().err());
        }
        let (client, conn) = db.url.config().connect(NoTls).await.unwrap();
        tokio::spawn(conn);
        let n: i64 = client
            .query_one("SELECT COUNT(*) FROM schema_migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, MIGRATIONS.len() as i64);
    }

    #[tokio::test]
    async fn events_are_numbered_in_commit_order_under_concurrent_writers() {
        let db = TestDb::new().await;
        let store = Store::open(&Location::Postgres(db.url.clone())).await.unwrap();
        let new = || super::super::NewToken {
            repos: Default::default(),
            allow_from: Default::default(),
            name: "n".into(),
            owner: "o".into(),
            orgs: Orgs::All,
            scopes: ScopeSet::full(),
            lifespan: Duration::from_secs(60),
        };
        let writes: Vec<_> = (0..40)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.create(new(), &crate::audit::Actor::default()).await.map(|_| ()) })
            })
            .collect();
        // A follower reading while the writers commit must never skip an event.
        let mut seen = 0;
        let mut last = 0;
        while seen < 40 {
            for c in store.changes_since(last, 1000).await.unwrap() {
                assert_eq!(c.event.seq, last + 1, "events appear in sequence order, without gaps");
                last = c.event.seq;
                seen += 1;
            }
        }
        for w in writes {
            w.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_later_event_never_becomes_visible_before_an_earlier_one() {
        let db = TestDb::new().await;
        let store = Store::open(&Location::Postgres(db.url.clone())).await.unwrap();
        // Another writer draws event 1 and has not committed yet.
        let (mut client, conn) = db.url.config().connect(NoTls).await.unwrap();
        tokio::spawn(conn);
        let tx = client.transaction().await.unwrap();
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK]).await.unwrap();
        tx.execute("INSERT INTO token_events (token_id, kind, at) VALUES ('x', 'updated', 0)", &[])
            .await
            .unwrap();
        let new = super::super::NewToken {
            repos: Default::default(),
            allow_from: Default::default(),
            name: "n".into(),
            owner: "o".into(),
            orgs: Orgs::All,
            scopes: ScopeSet::full(),
            lifespan: Duration::from_secs(60),
        };
        let s = store.clone();
        let create = tokio::spawn(async move { s.create(new, &crate::audit::Actor::default()).await.map(|c| c.record.id) });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            store.changes_since(0, 10).await.unwrap().is_empty(),
            "event 2 committed before event 1"
        );
        tx.commit().await.unwrap();
        let id = create.await.unwrap().unwrap();
        let seen: Vec<_> = store
            .changes_since(0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.event.seq, c.event.token_id))
            .collect();
        assert_eq!(seen, vec![(1, "x".to_owned()), (2, id)]);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_quick_clear_error_without_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = Location::parse(&format!("postgres://patgate:hunter2@127.0.0.1:{port}/db")).unwrap();
        let started = std::time::Instant::now();
        let e = Store::open(&url).await.err().unwrap();
        assert!(started.elapsed() < OP_TIMEOUT + Duration::from_secs(1));
        let text = e.to_string();
        assert!(matches!(e, StoreError::Open { .. }), "{text}");
        assert!(text.contains(&format!("postgres://patgate:***@127.0.0.1:{port}/db")), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn urls_parse_and_never_show_the_password() {
        let l = Location::parse("postgres://patgate:s3cret@db.internal:6543/tokens").unwrap();
        assert_eq!(l.to_string(), "postgres://patgate:***@db.internal:6543/tokens");
        assert!(!format!("{l:?}").contains("s3cret"));
        let Location::Postgres(url) = &l else { panic!("{l:?}") };
        assert_eq!(url.config().get_password(), Some(&b"s3cret"[..]));

        let l = Location::parse("postgresql://postgres@127.0.0.1/test").unwrap();
        assert_eq!(l.to_string(), "postgres://postgres@127.0.0.1:5432/test");
        let l = Location::parse("postgresql://u:p@%2Fvar%2Frun%2Fpostgresql/db").unwrap();
        assert_eq!(l.to_string(), "postgres://u:***@/db?host=/var/run/postgresql");
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_the_url() {
        for (url, want) in [
            ("postgres://u:pw@host:notaport/db", "invalid value for option `port`"),
            ("postgres://u:pw@host/db?bogus=1", "unknown option `bogus`"),
            ("postgres://u:pw@host/db?sslmode=require", "sslmode=require is not supported"),
            ("postgres:///db", "names no host"),
            ("postgres://host/db", "names no user"),
        ] {
            let e = Location::parse(url).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
            assert!(!e.contains("pw"), "{url}: {e}");
        }
    }

    #[test]
    fn redaction_of_urls_as_written() {
        for (url, want) in [
            ("postgres://u:pw@host/db", "postgres://u:***@host/db"),
            ("postgres://u:p/w@d@host/db", "postgres://u:***@host/db"),
            ("postgres://u@host/db?password=pw&x=1", "postgres://u@host/db?password=***&x=1"),
            ("mysql://u:pw@host", "mysql://u:***@host"),
            ("sqlite://data/a:b@c.db", "sqlite://data/a:b@c.db"),
        ] {
            assert_eq!(redact_url(url), want);
        }
    }
}
