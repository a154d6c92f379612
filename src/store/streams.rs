//! Audit streams as stored, shared by every instance: the sinks (`audit_streams`), each
//! with the seq of the last audit entry delivered to it and a lease that says which
//! instance delivers it now; and the expiry warnings already given (`expiry_warnings`),
//! so that a token is warned once per expiry, by one instance, across restarts.
//!
//! The tables ([`super::schema`]) are created (if absent) by each backend's `migrate()`,
//! after its versioned migrations. The delivery itself is [`crate::audit::streams`]; this module only reads
//! and writes rows. A stream's HMAC secret is stored (the signature needs it) but never
//! shown: [`StreamSecret`]'s Debug redacts it, and the admin API says only whether one
//! is set.
//!
//! Creating, changing and deleting a stream is itself audited, in the transaction that
//! makes the change ([`Action::StreamCreate`], [`Action::StreamChange`],
//! [`Action::StreamDelete`]): whoever turns a stream off or points it elsewhere is in the
//! trail that the other streams deliver. The entry names the stream and what changed,
//! never its target (a webhook URL may carry a credential) nor its secret.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use super::schema::AUDIT_COLUMNS;
use super::{Store, StoreError};
use crate::audit::{Action, Actor, AuditEntry, Outcome};

/// The most streams a store holds: each is a task on every instance and a label of
/// the stream metrics.
pub const MAX_STREAMS: usize = 50;

const COLUMNS: &str = "id, name, kind, target, secret, enabled, delivered_seq, created_at, updated_at, lease_owner, lease_until";

/// Where a stream delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// HTTP POSTs of JSON lines.
    Webhook,
    /// JSON lines appended to a file.
    File,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Webhook => "webhook",
            StreamKind::File => "file",
        }
    }

    pub fn parse(s: &str) -> Option<StreamKind> {
        match s {
            "webhook" => Some(StreamKind::Webhook),
            "file" => Some(StreamKind::File),
            _ => None,
        }
    }
}

/// The key a webhook's bodies are signed with. Debug never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamSecret(String);

impl StreamSecret {
    pub fn new(secret: String) -> StreamSecret {
        StreamSecret(secret)
    }

    /// The secret itself: for signing, never for showing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for StreamSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamSecret(<redacted>)")
    }
}

/// One stream as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    pub id: String,
    pub name: String,
    pub kind: StreamKind,
    /// The webhook's URL, or the file's path.
    pub target: String,
    pub secret: Option<StreamSecret>,
    pub enabled: bool,
    /// The seq of the last audit entry delivered: the stream's cursor.
    pub delivered_seq: i64,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
    /// The instance delivering it, until `lease_until` (Unix ms).
    pub lease_owner: Option<String>,
    pub lease_until: i64,
}

/// What a new stream is made of (checked by the caller).
#[derive(Debug, Clone)]
pub struct NewStream {
    pub name: String,
    pub kind: StreamKind,
    pub target: String,
    pub secret: Option<StreamSecret>,
    pub enabled: bool,
}

/// A change to a stream; what is `None` stays.
#[derive(Debug, Clone, Default)]
pub struct StreamChange {
    pub name: Option<String>,
    pub target: Option<String>,
    pub secret: Option<StreamSecret>,
    pub enabled: Option<bool>,
}

/// Why a stream could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("no audit stream with id {0}")]
    NotFound(String),
    #[error("name: another audit stream is named `{0}`")]
    NameTaken(String),
    #[error("there are {MAX_STREAMS} audit streams already, the most there may be")]
    TooMany,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for StreamError {
    fn from(e: rusqlite::Error) -> Self {
        StreamError::Store(e.into())
    }
}

impl From<tokio_postgres::Error> for StreamError {
    fn from(e: tokio_postgres::Error) -> Self {
        StreamError::Store(e.into())
    }
}

fn new_stream_id() -> String {
    crate::auth::token::random_base62(16)
}

// ---------------------------------------------------------------------------------------
// SQLite: functions on a connection, run on the blocking pool.
// ---------------------------------------------------------------------------------------

fn sqlite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StreamRecord> {
    let kind: String = r.get(2)?;
    Ok(StreamRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: StreamKind::parse(&kind).unwrap_or(StreamKind::Webhook),
        target: r.get(3)?,
        secret: r.get::<_, Option<String>>(4)?.map(StreamSecret),
        enabled: r.get(5)?,
        delivered_seq: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        lease_owner: r.get(9)?,
        lease_until: r.get(10)?,
    })
}

fn sqlite_get(c: &Connection, id: &str) -> Result<Option<StreamRecord>, StoreError> {
    let mut st = c.prepare_cached(&format!("SELECT {COLUMNS} FROM audit_streams WHERE id = ?1"))?;
    Ok(st.query_row([id], sqlite_row).optional()?)
}

fn sqlite_name_taken(c: &Connection, name: &str, not_id: &str) -> Result<bool, StoreError> {
    let n: i64 = c.query_row(
        "SELECT COUNT(*) FROM audit_streams WHERE name = ?1 AND id <> ?2",
        params![name, not_id],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

fn sqlite_create(c: &mut Connection, new: &NewStream, now: i64, actor: &Actor) -> Result<StreamRecord, StreamError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let count: i64 = tx.query_row("SELECT COUNT(*) FROM audit_streams", [], |r| r.get(0))?;
    if count as usize >= MAX_STREAMS {
        return Err(StreamError::TooMany);
    }
    if sqlite_name_taken(&tx, &new.name, "")? {
        return Err(StreamError::NameTaken(new.name.clone()));
    }
    // A new stream starts at the end of the trail: it delivers what happens from now on,
    // beginning with its own creation (appended below).
    let tail: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM audit_log", [], |r| r.get(0))?;
    let record = StreamRecord {
        id: new_stream_id(),
        name: new.name.clone(),
        kind: new.kind,
        target: new.target.clone(),
        secret: new.secret.clone(),
        enabled: new.enabled,
        delivered_seq: tail,
        created_at: now,
        updated_at: now,
        lease_owner: None,
        lease_until: 0,
    };
    tx.execute(
        &format!("INSERT INTO audit_streams ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, 0)"),
        params![
            record.id,
            record.name,
            record.kind.as_str(),
            record.target,
            record.secret.as_ref().map(StreamSecret::expose),
            record.enabled,
            record.delivered_seq,
            record.created_at,
            record.updated_at
        ],
    )?;
    super::sqlite::append_audit(&tx, &[stream_entry(Action::StreamCreate, &record, String::new(), actor)])?;
    tx.commit()?;
    Ok(record)
}

fn sqlite_change(c: &mut Connection, id: &str, change: &StreamChange, now: i64, actor: &Actor) -> Result<StreamRecord, StreamError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut r = sqlite_get(&tx, id)?.ok_or_else(|| StreamError::NotFound(id.to_owned()))?;
    if let Some(name) = &change.name {
        if sqlite_name_taken(&tx, name, id)? {
            return Err(StreamError::NameTaken(name.clone()));
        }
    }
    let what = changes(&r, change);
    apply(&mut r, change, now);
    tx.execute(
        "UPDATE audit_streams SET name = ?2, target = ?3, secret = ?4, enabled = ?5, updated_at = ?6 WHERE id = ?1",
        params![
            id,
            r.name,
            r.target,
            r.secret.as_ref().map(StreamSecret::expose),
            r.enabled,
            r.updated_at
        ],
    )?;
    super::sqlite::append_audit(&tx, &[stream_entry(Action::StreamChange, &r, what, actor)])?;
    tx.commit()?;
    Ok(r)
}

fn sqlite_delete(c: &mut Connection, id: &str, actor: &Actor) -> Result<StreamRecord, StreamError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let r = sqlite_get(&tx, id)?.ok_or_else(|| StreamError::NotFound(id.to_owned()))?;
    tx.execute("DELETE FROM audit_streams WHERE id = ?1", [id])?;
    super::sqlite::append_audit(&tx, &[stream_entry(Action::StreamDelete, &r, String::new(), actor)])?;
    tx.commit()?;
    Ok(r)
}

/// The audit entry of a change to stream `r` (as it is after the change), by `actor`:
/// `reason` names the stream, its id and kind, then `what` changed, if anything.
fn stream_entry(action: Action, r: &StreamRecord, what: String, actor: &Actor) -> AuditEntry {
    let mut e = AuditEntry::new(crate::audit::now_millis(), action, Outcome::Success);
    let state = if r.enabled { "enabled" } else { "disabled" };
    let mut reason = format!("stream {} (id {}, {}, {state})", r.name, r.id, r.kind.as_str());
    if !what.is_empty() {
        reason.push_str(": changed ");
        reason.push_str(&what);
    }
    e.reason = Some(reason);
    e.actor = actor.name.clone();
    e.client = actor.client;
    e
}

/// What `change` changes of `r` (before it), in words: the old name, which members moved,
/// never a target or a secret.
fn changes(r: &StreamRecord, change: &StreamChange) -> String {
    let mut what = Vec::new();
    if let Some(name) = &change.name {
        if *name != r.name {
            what.push(format!("name (was {})", r.name));
        }
    }
    if change.target.as_ref().is_some_and(|t| *t != r.target) {
        what.push(
            match r.kind {
                StreamKind::Webhook => "url",
                StreamKind::File => "path",
            }
            .to_owned(),
        );
    }
    if change.secret.is_some() {
        what.push("secret".to_owned());
    }
    if let Some(enabled) = change.enabled {
        if enabled != r.enabled {
            what.push(if enabled { "enabled" } else { "disabled" }.to_owned());
        }
    }
    if what.is_empty() {
        "nothing".to_owned()
    } else {
        what.join(", ")
    }
}

fn apply(r: &mut StreamRecord, change: &StreamChange, now: i64) {
    if let Some(name) = &change.name {
        r.name = name.clone();
    }
    if let Some(target) = &change.target {
        r.target = target.clone();
    }
    if let Some(secret) = &change.secret {
        r.secret = Some(secret.clone());
    }
    if let Some(enabled) = change.enabled {
        r.enabled = enabled;
    }
    r.updated_at = now;
}

// ---------------------------------------------------------------------------------------
// PostgreSQL.
// ---------------------------------------------------------------------------------------

/// Runs `$body` with `$c: &mut Object` on a pooled connection within the store's
/// operation timeout, as the PostgreSQL store's own operations do.
macro_rules! pg {
    ($p:expr, |$c:ident| $body:block) => {{
        let p: &super::postgres::PgStore = $p;
        let mut slot: Option<deadpool_postgres::Object> = None;
        let r = tokio::time::timeout(super::postgres::OP_TIMEOUT, async {
            let $c: &mut deadpool_postgres::Object = slot.insert(p.client().await?);
            $body
        })
        .await;
        super::postgres::settle(&mut slot, r)
    }};
}

fn pg_row(r: &tokio_postgres::Row) -> Result<StreamRecord, StoreError> {
    let kind: String = r.try_get(2)?;
    Ok(StreamRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        kind: StreamKind::parse(&kind).unwrap_or(StreamKind::Webhook),
        target: r.try_get(3)?,
        secret: r.try_get::<_, Option<String>>(4)?.map(StreamSecret),
        enabled: r.try_get(5)?,
        delivered_seq: r.try_get(6)?,
        created_at: r.try_get(7)?,
        updated_at: r.try_get(8)?,
        lease_owner: r.try_get(9)?,
        lease_until: r.try_get(10)?,
    })
}

// ---------------------------------------------------------------------------------------
// The store's methods.
// ---------------------------------------------------------------------------------------

impl Store {
    /// Stores a new stream, its cursor at the end of the audit trail: the first entry it
    /// delivers is that of its own creation, by `actor`.
    pub async fn create_stream(&self, new: NewStream, actor: &Actor) -> Result<StreamRecord, StreamError> {
        let now = super::now();
        let actor = actor.clone();
        match self {
            Store::Sqlite(s) => {
                let out = Self::blocking(s, move |s| s.with(|c| Ok(sqlite_create(c, &new, now, &actor))));
                out.await?
            }
            Store::Postgres(p) => pg!(p, |c| {
                // The writer lock, as for every entry of the trail, then the streams'.
                let tx = super::postgres::write_tx(c).await?;
                // One creator at a time: the count and the name are checked, then inserted.
                tx.execute("LOCK TABLE audit_streams IN SHARE ROW EXCLUSIVE MODE", &[]).await?;
                let count: i64 = tx.query_one("SELECT COUNT(*) FROM audit_streams", &[]).await?.try_get(0)?;
                if count as usize >= MAX_STREAMS {
                    return Ok(Err(StreamError::TooMany));
                }
                let taken: i64 = tx
                    .query_one("SELECT COUNT(*) FROM audit_streams WHERE name = $1", &[&new.name])
                    .await?
                    .try_get(0)?;
                if taken > 0 {
                    return Ok(Err(StreamError::NameTaken(new.name.clone())));
                }
                let tail: i64 = tx
                    .query_one("SELECT COALESCE(MAX(seq), 0)::BIGINT FROM audit_log", &[])
                    .await?
                    .try_get(0)?;
                let row = tx
                    .query_one(
                        &format!(
                            "INSERT INTO audit_streams ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, NULL, 0) RETURNING {COLUMNS}"
                        ),
                        &[
                            &new_stream_id(),
                            &new.name,
                            &new.kind.as_str(),
                            &new.target,
                            &new.secret.as_ref().map(StreamSecret::expose),
                            &new.enabled,
                            &tail,
                            &now,
                        ],
                    )
                    .await?;
                let record = pg_row(&row)?;
                let entry = stream_entry(Action::StreamCreate, &record, String::new(), &actor);
                super::postgres::append_audit(&tx, &[entry]).await?;
                tx.commit().await?;
                Ok(Ok(record))
            })?,
        }
    }

    /// Every stream, oldest first.
    pub async fn streams(&self) -> Result<Vec<StreamRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM audit_streams ORDER BY created_at, id");
        match self {
            Store::Sqlite(s) => {
                Self::blocking(s, move |s| {
                    s.with(|c| {
                        let mut st = c.prepare_cached(&sql)?;
                        let rows = st.query_map([], sqlite_row)?;
                        Ok(rows.collect::<Result<Vec<_>, _>>()?)
                    })
                })
                .await
            }
            Store::Postgres(p) => pg!(p, |c| {
                let st = c.prepare_cached(&sql).await?;
                c.query(&st, &[]).await?.iter().map(pg_row).collect()
            }),
        }
    }

    /// One stream by id.
    pub async fn stream(&self, id: &str) -> Result<StreamRecord, StreamError> {
        let found = match self {
            Store::Sqlite(s) => {
                let id = id.to_owned();
                Self::blocking(s, move |s| s.with(|c| sqlite_get(c, &id))).await?
            }
            Store::Postgres(p) => pg!(p, |c| {
                let st = c
                    .prepare_cached(&format!("SELECT {COLUMNS} FROM audit_streams WHERE id = $1"))
                    .await?;
                c.query_opt(&st, &[&id]).await?.as_ref().map(pg_row).transpose()
            })?,
        };
        found.ok_or_else(|| StreamError::NotFound(id.to_owned()))
    }

    /// Changes a stream, by `actor`; its cursor stays.
    pub async fn change_stream(&self, id: &str, change: StreamChange, actor: &Actor) -> Result<StreamRecord, StreamError> {
        let now = super::now();
        let actor = actor.clone();
        match self {
            Store::Sqlite(s) => {
                let id = id.to_owned();
                Self::blocking(s, move |s| s.with(|c| Ok(sqlite_change(c, &id, &change, now, &actor)))).await?
            }
            Store::Postgres(p) => pg!(p, |c| {
                let tx = super::postgres::write_tx(c).await?;
                tx.execute("LOCK TABLE audit_streams IN SHARE ROW EXCLUSIVE MODE", &[]).await?;
                let row = tx
                    .query_opt(&format!("SELECT {COLUMNS} FROM audit_streams WHERE id = $1"), &[&id])
                    .await?;
                let Some(row) = row else {
                    return Ok(Err(StreamError::NotFound(id.to_owned())));
                };
                let mut r = pg_row(&row)?;
                if let Some(name) = &change.name {
                    let taken: i64 = tx
                        .query_one("SELECT COUNT(*) FROM audit_streams WHERE name = $1 AND id <> $2", &[name, &id])
                        .await?
                        .try_get(0)?;
                    if taken > 0 {
                        return Ok(Err(StreamError::NameTaken(name.clone())));
                    }
                }
                let what = changes(&r, &change);
                apply(&mut r, &change, now);
                tx.execute(
                    "UPDATE audit_streams SET name = $2, target = $3, secret = $4, enabled = $5, updated_at = $6 WHERE id = $1",
                    &[
                        &id,
                        &r.name,
                        &r.target,
                        &r.secret.as_ref().map(StreamSecret::expose),
                        &r.enabled,
                        &r.updated_at,
                    ],
                )
                .await?;
                super::postgres::append_audit(&tx, &[stream_entry(Action::StreamChange, &r, what, &actor)]).await?;
                tx.commit().await?;
                Ok(Ok(r))
            })?,
        }
    }

    /// Deletes a stream, by `actor`; returns it as it was.
    pub async fn delete_stream(&self, id: &str, actor: &Actor) -> Result<StreamRecord, StreamError> {
        let actor = actor.clone();
        match self {
            Store::Sqlite(s) => {
                let id = id.to_owned();
                Self::blocking(s, move |s| s.with(|c| Ok(sqlite_delete(c, &id, &actor)))).await?
            }
            Store::Postgres(p) => pg!(p, |c| {
                let tx = super::postgres::write_tx(c).await?;
                let row = tx
                    .query_opt(&format!("DELETE FROM audit_streams WHERE id = $1 RETURNING {COLUMNS}"), &[&id])
                    .await?;
                let Some(row) = row else {
                    return Ok(Err(StreamError::NotFound(id.to_owned())));
                };
                let r = pg_row(&row)?;
                super::postgres::append_audit(&tx, &[stream_entry(Action::StreamDelete, &r, String::new(), &actor)]).await?;
                tx.commit().await?;
                Ok(Ok(r))
            })?,
        }
    }

    /// Takes or renews the lease on a stream for `owner` until `until` (Unix ms): true
    /// when `owner` holds it now. A lease past its time is anyone's.
    pub async fn claim_stream(&self, id: &str, owner: &str, now_ms: i64, until: i64) -> Result<bool, StoreError> {
        let changed = match self {
            Store::Sqlite(s) => {
                let (id, owner) = (id.to_owned(), owner.to_owned());
                Self::blocking(s, move |s| {
                    s.with_background(|c| {
                        Ok(c.execute(
                            "UPDATE audit_streams SET lease_owner = ?2, lease_until = ?4 \
                             WHERE id = ?1 AND enabled AND (lease_owner IS NULL OR lease_owner = ?2 OR lease_until < ?3)",
                            params![id, owner, now_ms, until],
                        )? as u64)
                    })
                })
                .await?
            }
            Store::Postgres(p) => pg!(p, |c| {
                Ok(c.execute(
                    "UPDATE audit_streams SET lease_owner = $2, lease_until = $4 \
                     WHERE id = $1 AND enabled AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < $3)",
                    &[&id, &owner, &now_ms, &until],
                )
                .await?)
            })?,
        };
        Ok(changed == 1)
    }

    /// Gives up every lease `owner` holds (at shutdown), so that another instance, or
    /// this one restarted, takes the streams over at once.
    pub async fn release_streams(&self, owner: &str) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => {
                let owner = owner.to_owned();
                Self::blocking(s, move |s| {
                    s.with_background(|c| {
                        c.execute(
                            "UPDATE audit_streams SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = ?1",
                            [&owner],
                        )?;
                        Ok(())
                    })
                })
                .await
            }
            Store::Postgres(p) => pg!(p, |c| {
                c.execute(
                    "UPDATE audit_streams SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = $1",
                    &[&owner],
                )
                .await?;
                Ok(())
            }),
        }
    }

    /// Moves a stream's cursor from `from` to `to`, if it is still at `from` (compare and
    /// set): false when another instance moved it first.
    pub async fn advance_stream(&self, id: &str, from: i64, to: i64) -> Result<bool, StoreError> {
        let changed = match self {
            Store::Sqlite(s) => {
                let id = id.to_owned();
                Self::blocking(s, move |s| {
                    s.with_background(|c| {
                        Ok(c.execute(
                            "UPDATE audit_streams SET delivered_seq = ?3 WHERE id = ?1 AND delivered_seq = ?2",
                            params![id, from, to],
                        )? as u64)
                    })
                })
                .await?
            }
            Store::Postgres(p) => pg!(p, |c| {
                Ok(c.execute(
                    "UPDATE audit_streams SET delivered_seq = $3 WHERE id = $1 AND delivered_seq = $2",
                    &[&id, &from, &to],
                )
                .await?)
            })?,
        };
        Ok(changed == 1)
    }

    /// The seq of the newest audit entry (0 for none).
    pub async fn audit_tail(&self) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(s) => {
                Self::blocking(s, |s| {
                    s.with_background(|c| Ok(c.query_row("SELECT COALESCE(MAX(seq), 0) FROM audit_log", [], |r| r.get(0))?))
                })
                .await
            }
            Store::Postgres(p) => pg!(p, |c| {
                let st = c.prepare_cached("SELECT COALESCE(MAX(seq), 0)::BIGINT FROM audit_log").await?;
                Ok(c.query_one(&st, &[]).await?.try_get(0)?)
            }),
        }
    }

    /// How many audit entries have a seq after `after` and up to `upto`.
    pub async fn audit_count(&self, after: i64, upto: i64) -> Result<u64, StoreError> {
        let n: i64 = match self {
            Store::Sqlite(s) => {
                Self::blocking(s, move |s| {
                    s.with_background(|c| {
                        Ok(c.query_row(
                            "SELECT COUNT(*) FROM audit_log WHERE seq > ?1 AND seq <= ?2",
                            params![after, upto],
                            |r| r.get(0),
                        )?)
                    })
                })
                .await?
            }
            Store::Postgres(p) => pg!(p, |c| {
                let st = c
                    .prepare_cached("SELECT COUNT(*) FROM audit_log WHERE seq > $1 AND seq <= $2")
                    .await?;
                Ok(c.query_one(&st, &[&after, &upto]).await?.try_get(0)?)
            })?,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Audit entries after `seq`, oldest first, at most `limit`.
    pub async fn audit_since(&self, seq: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match self {
            Store::Sqlite(s) => {
                Self::blocking(s, move |s| {
                    s.with_background(|c| {
                        let mut st = c.prepare_cached(&format!(
                            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                        ))?;
                        let rows = st.query_map(params![seq, limit], super::sqlite::read_audit)?;
                        Ok(rows.collect::<Result<Vec<_>, _>>()?)
                    })
                })
                .await
            }
            Store::Postgres(p) => pg!(p, |c| {
                let st = c
                    .prepare_cached(&format!(
                        "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
                    ))
                    .await?;
                c.query(&st, &[&seq, &limit])
                    .await?
                    .iter()
                    .map(super::postgres::read_audit)
                    .collect()
            }),
        }
    }

    /// Warns of a token's expiry at `expires_at` once: notes the warning and appends
    /// `entry` (an [`crate::audit::Action::ExpiryWarning`]) to the audit trail in one
    /// transaction, unless that expiry of that token was warned of already (by this
    /// instance before a restart, or by another). True when this call warned.
    pub async fn warn_expiry(&self, entry: AuditEntry, expires_at: i64) -> Result<bool, StoreError> {
        let now = super::now();
        let token_id = entry.token_id.clone().unwrap_or_default();
        match self {
            Store::Sqlite(s) => {
                Self::blocking(s, move |s| {
                    s.with_background(|c| {
                        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                        let noted = tx.execute(
                            "INSERT INTO expiry_warnings (token_id, expires_at, warned_at) VALUES (?1, ?2, ?3) \
                             ON CONFLICT DO NOTHING",
                            params![token_id, expires_at, now],
                        )?;
                        if noted == 1 {
                            super::sqlite::append_audit(&tx, std::slice::from_ref(&entry))?;
                        }
                        tx.commit()?;
                        Ok(noted == 1)
                    })
                })
                .await
            }
            Store::Postgres(p) => pg!(p, |c| {
                // The store's writer lock, as for every entry of the trail: seqs become
                // visible in commit order, so no stream reads past one still uncommitted.
                let tx = super::postgres::write_tx(c).await?;
                let noted = tx
                    .execute(
                        "INSERT INTO expiry_warnings (token_id, expires_at, warned_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        &[&token_id, &expires_at, &now],
                    )
                    .await?;
                if noted == 1 {
                    super::postgres::append_audit(&tx, std::slice::from_ref(&entry)).await?;
                }
                tx.commit().await?;
                Ok(noted == 1)
            }),
        }
    }

    /// Forgets the warnings of expiries before `before` (Unix seconds): those tokens have expired.
    pub async fn forget_expiry_warnings(&self, before: i64) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => {
                Self::blocking(s, move |s| {
                    s.with_background(|c| {
                        c.execute("DELETE FROM expiry_warnings WHERE expires_at < ?1", [before])?;
                        Ok(())
                    })
                })
                .await
            }
            Store::Postgres(p) => pg!(p, |c| {
                c.execute("DELETE FROM expiry_warnings WHERE expires_at < $1", &[&before]).await?;
                Ok(())
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Action, Outcome};
    use crate::store::Location;

    fn webhook(name: &str) -> NewStream {
        NewStream {
            name: name.into(),
            kind: StreamKind::Webhook,
            target: "http://127.0.0.1:9/in".into(),
            secret: Some(StreamSecret::new("0123456789abcdef".into())),
            enabled: true,
        }
    }

    /// What both backends must do with streams, leases, cursors and expiry warnings.
    async fn conformance(store: &Store) {
        let actor = Actor {
            name: Some("root".into()),
            client: Some("192.0.2.7".parse().unwrap()),
        };
        // A new stream starts at the end of the trail.
        store
            .append_audit(vec![AuditEntry::new(1, Action::Create, Outcome::Success)])
            .await
            .unwrap();
        let tail = store.audit_tail().await.unwrap();
        assert!(tail > 0);
        let a = store.create_stream(webhook("a"), &actor).await.unwrap();
        assert_eq!(a.delivered_seq, tail, "the stream delivers its own creation first");
        // The creation is in the trail, by its actor, naming the stream but not its target
        // or secret.
        let created = store.audit_since(tail, 10).await.unwrap();
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].action, Action::StreamCreate);
        assert_eq!(created[0].actor.as_deref(), Some("root"));
        assert_eq!(created[0].client, actor.client);
        assert_eq!(
            created[0].reason.as_deref(),
            Some(format!("stream a (id {}, webhook, enabled)", a.id).as_str())
        );
        assert!(!format!("{a:?}").contains("0123456789abcdef"), "Debug shows no secret");
        assert!(matches!(store.create_stream(webhook("a"), &actor).await, Err(StreamError::NameTaken(n)) if n == "a"));
        let b = store.create_stream(webhook("b"), &actor).await.unwrap();
        let mut ids: Vec<String> = store.streams().await.unwrap().into_iter().map(|s| s.id).collect();
        let mut want = vec![a.id.clone(), b.id.clone()];
        ids.sort();
        want.sort();
        assert_eq!(ids, want);
        assert_eq!(store.stream(&a.id).await.unwrap(), a);
        assert!(matches!(store.stream("nope").await, Err(StreamError::NotFound(_))));
        // Changes keep the cursor; names stay unique.
        let change = StreamChange {
            name: Some("a2".into()),
            target: Some("https://siem.example/in".into()),
            secret: Some(StreamSecret::new("fedcba9876543210".into())),
            enabled: Some(false),
        };
        let before_change = store.audit_tail().await.unwrap();
        let changed = store.change_stream(&a.id, change, &actor).await.unwrap();
        let entry = store.audit_since(before_change, 10).await.unwrap();
        assert_eq!(entry.len(), 1);
        assert_eq!(entry[0].action, Action::StreamChange);
        let reason = entry[0].reason.clone().unwrap();
        assert_eq!(
            reason,
            format!(
                "stream a2 (id {}, webhook, disabled): changed name (was a), url, secret, disabled",
                a.id
            )
        );
        assert!(!reason.contains("siem.example") && !reason.contains("fedcba"), "{reason}");
        assert_eq!(
            (
                changed.name.as_str(),
                changed.target.as_str(),
                changed.enabled,
                changed.delivered_seq
            ),
            ("a2", "https://siem.example/in", false, tail)
        );
        assert_eq!(changed.secret.as_ref().map(StreamSecret::expose), Some("fedcba9876543210"));
        assert_eq!(store.stream(&a.id).await.unwrap(), changed);
        let taken = StreamChange {
            name: Some("b".into()),
            ..StreamChange::default()
        };
        let before_refused = store.audit_tail().await.unwrap();
        assert!(matches!(
            store.change_stream(&a.id, taken, &actor).await,
            Err(StreamError::NameTaken(_))
        ));
        assert!(matches!(
            store.change_stream("nope", StreamChange::default(), &actor).await,
            Err(StreamError::NotFound(_))
        ));
        assert_eq!(
            store.audit_tail().await.unwrap(),
            before_refused,
            "a refused change is not in the trail"
        );
        // A disabled stream cannot be leased.
        assert!(!store.claim_stream(&a.id, "one", 1000, 2000).await.unwrap());
        // One holder at a time, until the lease lapses or is given up.
        assert!(store.claim_stream(&b.id, "one", 1000, 2000).await.unwrap());
        assert!(!store.claim_stream(&b.id, "two", 1500, 2500).await.unwrap());
        assert!(store.claim_stream(&b.id, "one", 1500, 2500).await.unwrap(), "renewed");
        assert!(store.claim_stream(&b.id, "two", 2600, 3600).await.unwrap(), "lapsed");
        store.release_streams("two").await.unwrap();
        assert!(store.claim_stream(&b.id, "one", 2700, 3700).await.unwrap(), "given up");
        // The cursor moves by compare-and-set.
        let at = b.delivered_seq;
        assert!(!store.advance_stream(&b.id, at - 1, at + 5).await.unwrap());
        assert!(store.advance_stream(&b.id, at, at + 5).await.unwrap());
        assert_eq!(store.stream(&b.id).await.unwrap().delivered_seq, at + 5);
        // The trail, tailed oldest first.
        let tail = store.audit_tail().await.unwrap();
        let mut e = AuditEntry::new(1_765_038_000_123, Action::AuthRefused, Outcome::Failure);
        e.client = Some("2001:db8::1".parse().unwrap());
        e.status = Some(401);
        e.path = Some("/acme/x.git/info/refs".into());
        store.append_audit(vec![e.clone(), e.clone(), e.clone()]).await.unwrap();
        let got = store.audit_since(tail, 2).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].seq, tail + 1);
        assert_eq!(AuditEntry { seq: 0, ..got[1].clone() }, e);
        assert_eq!(store.audit_since(tail, 100).await.unwrap().len(), 3);
        assert_eq!(store.audit_tail().await.unwrap(), tail + 3);
        assert_eq!(store.audit_count(tail, tail + 2).await.unwrap(), 2);
        // Deleted, and in the trail.
        let deleted = store.delete_stream(&a.id, &actor).await.unwrap();
        assert_eq!(deleted, changed);
        let entry = store.audit_since(tail + 3, 10).await.unwrap();
        assert_eq!(entry.len(), 1);
        assert_eq!(entry[0].action, Action::StreamDelete);
        assert_eq!(
            entry[0].reason.as_deref(),
            Some(format!("stream a2 (id {}, webhook, disabled)", a.id).as_str())
        );
        assert!(matches!(store.delete_stream(&a.id, &actor).await, Err(StreamError::NotFound(_))));
        // Bounded.
        for i in 1..MAX_STREAMS {
            store.create_stream(webhook(&format!("s{i}")), &actor).await.unwrap();
        }
        assert!(matches!(
            store.create_stream(webhook("over"), &actor).await,
            Err(StreamError::TooMany)
        ));
        // Warned once per token and expiry, with an entry in the trail.
        let warning = |id: &str| {
            let mut w = AuditEntry::new(5, Action::ExpiryWarning, Outcome::Success);
            w.token_id = Some(id.into());
            w.owner = Some("alice".into());
            w.reason = Some("expires 2030-01-01T00:00:00Z".into());
            w
        };
        let before = store.audit_tail().await.unwrap();
        assert!(store.warn_expiry(warning("t1"), 100).await.unwrap());
        assert!(!store.warn_expiry(warning("t1"), 100).await.unwrap());
        assert!(
            store.warn_expiry(warning("t1"), 200).await.unwrap(),
            "a moved expiry is warned of again"
        );
        let written = store.audit_since(before, 10).await.unwrap();
        assert_eq!(written.len(), 2);
        assert_eq!(
            AuditEntry {
                seq: 0,
                ..written[0].clone()
            },
            warning("t1")
        );
        store.forget_expiry_warnings(150).await.unwrap();
        assert!(store.warn_expiry(warning("t1"), 100).await.unwrap(), "forgotten once expired");
        assert!(!store.warn_expiry(warning("t1"), 200).await.unwrap());
    }

    #[tokio::test]
    async fn sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Location::Sqlite(dir.path().join("s.db"))).await.unwrap();
        conformance(&store).await;
        // Reopening keeps the tables and their rows.
        drop(store);
        let store = Store::open(&Location::Sqlite(dir.path().join("s.db"))).await.unwrap();
        assert_eq!(store.streams().await.unwrap().len(), MAX_STREAMS);
    }

    #[tokio::test]
    async fn postgres() {
        let server = std::env::var("PATGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("patgate_test_{}", crate::auth::token::random_base62(12).to_lowercase());
        let (client, conn) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL for tests is unreachable: {e}"));
        tokio::spawn(conn);
        client.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
        let (base, _) = server.rsplit_once('/').unwrap();
        let store = Store::open(&Location::parse(&format!("{base}/{name}")).unwrap()).await.unwrap();
        conformance(&store).await;
        drop(store);
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await
            .unwrap();
    }
}
