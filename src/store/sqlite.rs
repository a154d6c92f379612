//! The embedded SQLite store: WAL mode, a versioned schema created on first start, and
//! each change written with its event in one transaction. Calls block; [`super::Store`]
//! runs them on tokio's blocking pool.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use super::schema::AUDIT_COLUMNS;
use super::{
    lifecycle, orgs_to_text, page, AuditPage, AuditQuery, Change, EventKind, ListQuery, Page, Snapshot, StoreError, TokenEvent,
    TokenRecord, TokenState, TokenUpdate, TokenUse,
};
use crate::audit::{Action, Actor, AuditEntry, Outcome};
use crate::auth::orgs::Orgs;
use crate::auth::restrictions::{AllowFrom, Repos};
use crate::auth::scope::ScopeSet;
use crate::auth::token::TokenHash;

/// Schema migrations, in order; the position plus one is the version.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    hash          BLOB NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    owner         TEXT NOT NULL,
    orgs          TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    revoked_by    TEXT,
    last_used_at  INTEGER
);
CREATE INDEX tokens_owner ON tokens (owner);
CREATE TABLE token_events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    token_id  TEXT NOT NULL,
    kind      TEXT NOT NULL,
    at        INTEGER NOT NULL,
    actor     TEXT
);
"#,
    // 2: the audit trail. `seq` never goes back, even after the oldest rows are pruned.
    r#"
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    time      INTEGER NOT NULL,
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
    count     INTEGER NOT NULL DEFAULT 1
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
ALTER TABLE tokens ADD COLUMN rotated_at INTEGER;
ALTER TABLE token_events ADD COLUMN rotated_away BLOB;
CREATE INDEX token_events_rotated ON token_events (token_id) WHERE rotated_away IS NOT NULL;
"#,
];

const COLUMNS: &str = "id, hash, name, owner, orgs, scopes, created_at, expires_at, revoked_at, revoked_by, last_used_at, last_used_from, repos, allow_from, rotated_at";

/// A SQLite database file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// A second connection for the work behind the scenes (the audit writer, the audit
    /// streams, expiry warnings): while the file is locked, such work waits out its busy
    /// timeout on this one, not in front of an admin write or the feed on `conn`.
    background: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let fail = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(|e| fail(e.to_string()))?;
        // Switching a new file to WAL takes an exclusive lock for which SQLite does not
        // call the busy handler; another process opening the same new store at this
        // moment makes it fail with "database is locked". Retry within the busy timeout.
        let started = std::time::Instant::now();
        while let Err(e) = conn.pragma_update(None, "journal_mode", "WAL") {
            let busy = e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy);
            if !busy || started.elapsed() > Duration::from_secs(5) {
                return Err(fail(e.to_string()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| fail(e.to_string()))?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(|e| fail(e.to_string()))?;
        migrate(&mut conn).map_err(|e| match e {
            StoreError::SchemaTooNew { .. } => e,
            other => fail(other.to_string()),
        })?;
        let background = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        background.busy_timeout(Duration::from_secs(5)).map_err(|e| fail(e.to_string()))?;
        background
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|e| fail(e.to_string()))?;
        background
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| fail(e.to_string()))?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            background: Mutex::new(background),
        })
    }

    /// As [`SqliteStore::with`], on the connection for work behind the scenes.
    pub(super) fn with_background<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = self.background.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        // A panic while holding the lock leaves the connection usable: SQLite rolls back.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    pub(super) fn insert(&self, r: &TokenRecord, actor: &Actor) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                &format!("INSERT INTO tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"),
                params![
                    r.id,
                    &r.hash.0[..],
                    r.name,
                    r.owner,
                    orgs_to_text(&r.orgs),
                    r.scopes.to_string(),
                    r.created_at,
                    r.expires_at,
                    r.revoked_at,
                    r.revoked_by,
                    r.last_used_at,
                    r.last_used_from,
                    r.repos.to_string(),
                    r.allow_from.to_string(),
                    r.rotated_at
                ],
            )?;
            append_event(&tx, &r.id, EventKind::Created, r.created_at, actor)?;
            append_audit(&tx, &[lifecycle(Action::Create, &r.id, &r.owner, actor)])?;
            tx.commit()?;
            Ok(())
        })
    }

    pub(super) fn list(&self, q: &ListQuery, now: i64) -> Result<Page, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM tokens WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(owner) = &q.owner {
            args.push(owner.clone().into());
            sql += &format!(" AND owner = ?{}", args.len());
        }
        match q.state {
            None => {}
            Some(TokenState::Revoked) => sql += " AND revoked_at IS NOT NULL",
            Some(live) => {
                args.push(now.into());
                let op = if live == TokenState::Active { ">" } else { "<=" };
                sql += &format!(" AND revoked_at IS NULL AND expires_at {op} ?{}", args.len());
            }
        }
        if let Some(after) = &q.after {
            args.push(after.created_at.into());
            args.push(after.id.clone().into());
            let (c, i) = (args.len() - 1, args.len());
            sql += &format!(" AND (created_at < ?{c} OR (created_at = ?{c} AND id < ?{i}))");
        }
        // One more than asked tells whether another page follows.
        args.push(((q.limit + 1) as i64).into());
        sql += &format!(" ORDER BY created_at DESC, id DESC LIMIT ?{}", args.len());
        self.with(|c| {
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(args), read_row)?;
            let mut items = rows.map(|r| r?).collect::<Result<Vec<_>, _>>()?;
            Ok(page(&mut items, q.limit))
        })
    }

    pub(super) fn get(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.with(|c| get(c, id))
    }

    pub(super) fn update(&self, id: &str, update: &TokenUpdate, actor: &Actor, now: i64) -> Result<TokenRecord, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = get(&tx, id)?.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
            let next = update.apply_to(&current, now)?;
            tx.execute(
                "UPDATE tokens SET name = ?2, orgs = ?3, scopes = ?4, expires_at = ?5, repos = ?6, allow_from = ?7 WHERE id = ?1",
                params![
                    id,
                    next.name,
                    orgs_to_text(&next.orgs),
                    next.scopes.to_string(),
                    next.expires_at,
                    next.repos.to_string(),
                    next.allow_from.to_string()
                ],
            )?;
            append_event(&tx, id, EventKind::Updated, now, actor)?;
            append_audit(&tx, &[lifecycle(Action::Update, id, &next.owner, actor)])?;
            tx.commit()?;
            Ok(next)
        })
    }

    pub(super) fn regenerate(&self, id: &str, hash: TokenHash, actor: &Actor, now: i64) -> Result<TokenRecord, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut record = get(&tx, id)?.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
            let state = record.state(now);
            if state != TokenState::Active {
                return Err(StoreError::NotLive { id: id.to_owned(), state });
            }
            tx.execute("UPDATE tokens SET hash = ?2 WHERE id = ?1", params![id, &hash.0[..]])?;
            append_event(&tx, id, EventKind::Regenerated, now, actor)?;
            append_audit(&tx, &[lifecycle(Action::Regenerate, id, &record.owner, actor)])?;
            tx.commit()?;
            record.hash = hash;
            Ok(record)
        })
    }

    pub(super) fn rotate(&self, id: &str, hash: TokenHash, expires_at: i64, actor: &Actor, now: i64) -> Result<TokenRecord, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut record = get(&tx, id)?.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
            let state = record.state(now);
            if state != TokenState::Active {
                return Err(StoreError::NotLive { id: id.to_owned(), state });
            }
            tx.execute(
                "UPDATE tokens SET hash = ?2, expires_at = ?3, rotated_at = ?4 WHERE id = ?1",
                params![id, &hash.0[..], expires_at, now],
            )?;
            tx.execute(
                "INSERT INTO token_events (token_id, kind, at, actor, rotated_away) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, EventKind::Rotated.as_str(), now, actor.name, &record.hash.0[..]],
            )?;
            append_audit(&tx, &[lifecycle(Action::Rotate, id, &record.owner, actor)])?;
            tx.commit()?;
            record.hash = hash;
            record.expires_at = expires_at;
            record.rotated_at = Some(now);
            Ok(record)
        })
    }

    pub(super) fn rotated_away(&self, now: i64) -> Result<Vec<(TokenHash, String, i64)>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT e.rotated_away, e.token_id, e.at FROM token_events e JOIN tokens t ON t.id = e.token_id \
                 WHERE e.rotated_away IS NOT NULL AND t.revoked_at IS NULL AND t.expires_at > ?1",
            )?;
            let rows = st.query_map([now], |r| {
                let hash: Vec<u8> = r.get(0)?;
                Ok((
                    <[u8; 32]>::try_from(hash.as_slice()).ok().map(TokenHash),
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                if let (Some(hash), id, at) = row? {
                    out.push((hash, id, at));
                }
            }
            Ok(out)
        })
    }

    pub(super) fn revoke_hashes(&self, hashes: &[TokenHash], actor: &Actor, now: i64) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut ids = Vec::new();
            for h in hashes {
                let revoked: Option<(String, String)> = tx
                    .query_row(
                        "UPDATE tokens SET revoked_at = ?2, revoked_by = ?3 WHERE hash = ?1 AND revoked_at IS NULL RETURNING id, owner",
                        params![&h.0[..], now, actor.name],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((id, owner)) = revoked {
                    append_event(&tx, &id, EventKind::Revoked, now, actor)?;
                    append_audit(&tx, &[lifecycle(Action::LeakReport, &id, &owner, actor)])?;
                    ids.push(id);
                }
            }
            tx.commit()?;
            Ok(ids)
        })
    }

    pub(super) fn revoke(&self, id: &str, actor: &Actor, action: Action, now: i64) -> Result<TokenRecord, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let changed = tx.execute(
                "UPDATE tokens SET revoked_at = ?2, revoked_by = ?3 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, now, actor.name],
            )?;
            let record = get(&tx, id)?.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
            if changed == 1 {
                append_event(&tx, id, EventKind::Revoked, now, actor)?;
                append_audit(&tx, &[lifecycle(action, id, &record.owner, actor)])?;
            }
            tx.commit()?;
            Ok(record)
        })
    }

    pub(super) fn revoke_owner(&self, owner: &str, actor: &Actor, now: i64) -> Result<usize, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let ids: Vec<String> = {
                let mut st = tx.prepare("SELECT id FROM tokens WHERE owner = ?1 AND revoked_at IS NULL")?;
                let rows = st.query_map([owner], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for id in &ids {
                tx.execute(
                    "UPDATE tokens SET revoked_at = ?2, revoked_by = ?3 WHERE id = ?1",
                    params![id, now, actor.name],
                )?;
                append_event(&tx, id, EventKind::Revoked, now, actor)?;
            }
            let entries: Vec<AuditEntry> = ids.iter().map(|id| lifecycle(Action::RevokeAll, id, owner, actor)).collect();
            append_audit(&tx, &entries)?;
            tx.commit()?;
            Ok(ids.len())
        })
    }

    pub(super) fn snapshot(&self, now: i64) -> Result<Snapshot, StoreError> {
        let mut live = Vec::new();
        let (_, seq) = self.snapshot_each(now, &mut |r| live.push(r))?;
        Ok(Snapshot { live, seq })
    }

    /// Calls `f` with every live token as it is read (nothing is gathered), in one read
    /// transaction; returns how many and the sequence number they reflect.
    pub(super) fn snapshot_each(&self, now: i64, f: &mut dyn FnMut(TokenRecord)) -> Result<(usize, i64), StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Deferred)?;
            let seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM token_events", [], |r| r.get(0))?;
            let mut n = 0;
            {
                let mut st = tx.prepare(&format!(
                    "SELECT {COLUMNS} FROM tokens WHERE revoked_at IS NULL AND expires_at > ?1"
                ))?;
                let mut rows = st.query([now])?;
                while let Some(row) = rows.next()? {
                    f(read_row(row)??);
                    n += 1;
                }
            }
            tx.commit()?;
            Ok((n, seq))
        })
    }

    pub(super) fn changes_since(&self, seq: i64, limit: usize) -> Result<Vec<Change>, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Deferred)?;
            let events = {
                let mut st = tx.prepare(
                    "SELECT seq, token_id, kind, at, actor, rotated_away FROM token_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?;
                let rows = st.query_map(params![seq, limit as i64], |r| {
                    let kind: String = r.get(2)?;
                    let rotated_away: Option<Vec<u8>> = r.get(5)?;
                    let event = TokenEvent {
                        seq: r.get(0)?,
                        token_id: r.get(1)?,
                        kind: EventKind::parse(&kind).unwrap_or(EventKind::Updated),
                        at: r.get(3)?,
                        actor: r.get(4)?,
                    };
                    let rotated_away = rotated_away.and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok()).map(TokenHash);
                    Ok((event, rotated_away))
                })?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            let mut out = Vec::with_capacity(events.len());
            for (event, rotated_away) in events {
                let record = get(&tx, &event.token_id)?;
                out.push(Change {
                    event,
                    record,
                    rotated_away,
                });
            }
            tx.commit()?;
            Ok(out)
        })
    }

    pub(super) fn append_audit(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        self.with_background(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            append_audit(&tx, entries)?;
            tx.commit()?;
            Ok(())
        })
    }

    pub(super) fn audit_page(&self, q: &AuditQuery) -> Result<AuditPage, StoreError> {
        let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut filter = |sql: &mut String, cond: &str, v: rusqlite::types::Value| {
            args.push(v);
            *sql += &format!(" AND {cond} ?{}", args.len());
        };
        if let Some(from) = q.from {
            filter(&mut sql, "time >=", from.into());
        }
        if let Some(to) = q.to {
            filter(&mut sql, "time <", to.into());
        }
        if let Some(owner) = &q.owner {
            filter(&mut sql, "owner =", owner.clone().into());
        }
        if let Some(id) = &q.token_id {
            filter(&mut sql, "token_id =", id.clone().into());
        }
        if let Some(outcome) = q.outcome {
            filter(&mut sql, "outcome =", outcome.as_str().to_owned().into());
        }
        if let Some(action) = q.action {
            filter(&mut sql, "action =", action.as_str().to_owned().into());
        }
        if let Some(after) = q.after {
            filter(&mut sql, "seq <", after.into());
        }
        // One more than asked tells whether another page follows.
        args.push(((q.limit + 1) as i64).into());
        sql += &format!(" ORDER BY seq DESC LIMIT ?{}", args.len());
        self.with(|c| {
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(args), read_audit)?;
            let entries = rows.collect::<Result<Vec<_>, _>>()?;
            Ok(AuditPage::of(entries, q.limit))
        })
    }

    /// Deletes at most `batch` audit entries from before `before` (Unix ms), oldest first.
    pub(super) fn prune_audit(&self, before: i64, batch: usize) -> Result<usize, StoreError> {
        self.with_background(|c| {
            Ok(c.execute(
                "DELETE FROM audit_log WHERE seq IN (SELECT seq FROM audit_log WHERE time < ?1 ORDER BY time LIMIT ?2)",
                params![before, batch as i64],
            )?)
        })
    }

    pub(super) fn record_last_used(&self, uses: &[TokenUse]) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut st = tx.prepare(
                    "UPDATE tokens SET last_used_at = ?2, last_used_from = COALESCE(?3, last_used_from) \
                     WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
                )?;
                for u in uses {
                    st.execute(params![u.id, u.at, u.from.map(|ip| ip.to_string())])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }
}

/// Applies pending migrations, one transaction each. The version is read inside the
/// write transaction, so processes opening a new store at once never apply one twice.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")?;
        let current: i64 = tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))?;
        if current > known {
            return Err(StoreError::SchemaTooNew { found: current, known });
        }
        if current == known {
            // The audit streams' tables, outside the versioned migrations (see super::streams).
            tx.execute_batch(super::schema::STREAMS_SQLITE)?;
            tx.commit()?;
            return Ok(());
        }
        tx.execute_batch(MIGRATIONS[current as usize])?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![current + 1, super::now()],
        )?;
        tx.commit()?;
    }
}

fn append_event(tx: &Transaction<'_>, id: &str, kind: EventKind, at: i64, actor: &Actor) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO token_events (token_id, kind, at, actor) VALUES (?1, ?2, ?3, ?4)",
        params![id, kind.as_str(), at, actor.name],
    )?;
    Ok(())
}

/// Appends audit entries within `tx`, in their order.
pub(super) fn append_audit(tx: &Transaction<'_>, entries: &[AuditEntry]) -> Result<(), StoreError> {
    let mut st = tx.prepare_cached(
        "INSERT INTO audit_log (time, action, outcome, reason, token_id, owner, actor, client, method, path, route, status, count) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    for e in entries {
        st.execute(params![
            e.time,
            e.action.as_str(),
            e.outcome.as_str(),
            e.reason,
            e.token_id,
            e.owner,
            e.actor,
            e.client.map(|c| c.to_string()),
            e.method,
            e.path,
            e.route,
            e.status,
            e.count
        ])?;
    }
    Ok(())
}

/// One audit entry in [`AUDIT_COLUMNS`]. A value this patgate does not know (an action
/// of a newer version, say) reads as the nearest it knows rather than failing the page.
pub(super) fn read_audit(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let action: String = r.get(2)?;
    let outcome: String = r.get(3)?;
    let client: Option<String> = r.get(8)?;
    let status: Option<i64> = r.get(12)?;
    let count: i64 = r.get(13)?;
    Ok(AuditEntry {
        seq: r.get(0)?,
        time: r.get(1)?,
        action: Action::from_name(&action).unwrap_or(Action::Access),
        outcome: Outcome::from_name(&outcome).unwrap_or(Outcome::Failure),
        reason: r.get(4)?,
        token_id: r.get(5)?,
        owner: r.get(6)?,
        actor: r.get(7)?,
        client: client.and_then(|c| c.parse().ok()),
        method: r.get(9)?,
        path: r.get(10)?,
        route: r.get(11)?,
        status: status.and_then(|s| u16::try_from(s).ok()),
        count: u32::try_from(count).unwrap_or(u32::MAX),
    })
}

fn get(c: &Connection, id: &str) -> Result<Option<TokenRecord>, StoreError> {
    let mut st = c.prepare_cached(&format!("SELECT {COLUMNS} FROM tokens WHERE id = ?1"))?;
    st.query_row([id], read_row).optional()?.transpose()
}

fn read_row(r: &Row<'_>) -> rusqlite::Result<Result<TokenRecord, StoreError>> {
    // Hash, organizations and scopes are read in place, without copies.
    let id: String = r.get(0)?;
    let hash = <[u8; 32]>::try_from(r.get_ref(1)?.as_blob().unwrap_or_default()).ok();
    let orgs = r.get_ref(4)?.as_str().ok().and_then(|t| serde_json::from_str::<Orgs>(t).ok());
    let scopes = r.get_ref(5)?.as_str().ok().and_then(|t| {
        let names: Vec<&str> = t.split(',').filter(|s| !s.is_empty()).collect();
        ScopeSet::parse(&names).ok()
    });
    let repos = r.get_ref(12)?.as_str().ok().and_then(|t| Repos::parse(t).ok());
    let allow_from = r.get_ref(13)?.as_str().ok().and_then(|t| AllowFrom::parse(t).ok());
    let what = match (&hash, &orgs, &scopes, &repos, &allow_from) {
        (None, ..) => "hash",
        (_, None, ..) => "organizations",
        (_, _, None, ..) => "scopes",
        (_, _, _, None, _) => "repos",
        (.., None) => "allow_from",
        _ => "",
    };
    let (Some(hash), Some(orgs), Some(scopes), Some(repos), Some(allow_from)) = (hash, orgs, scopes, repos, allow_from) else {
        return Ok(Err(StoreError::Database(format!("token {id}: stored {what} cannot be read"))));
    };
    Ok(Ok(TokenRecord {
        id,
        hash: TokenHash(hash),
        name: r.get(2)?,
        owner: r.get(3)?,
        orgs,
        scopes,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        revoked_at: r.get(8)?,
        revoked_by: r.get(9)?,
        last_used_at: r.get(10)?,
        last_used_from: r.get(11)?,
        repos,
        allow_from,
        rotated_at: r.get(14)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::{NewToken, Store};
    use super::*;

    fn new(owner: &str) -> NewToken {
        NewToken {
            name: "ci".into(),
            owner: owner.into(),
            orgs: Orgs::parse("acme").unwrap(),
            repos: Repos::All,
            allow_from: AllowFrom::Anywhere,
            scopes: ScopeSet::parse(&["code:read"]).unwrap(),
            lifespan: Duration::from_secs(3600),
        }
    }

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&super::super::Location::Sqlite(dir.path().join("sub/p.db")))
            .await
            .unwrap();
        super::super::conformance::run_all(store).await;
    }

    #[tokio::test]
    async fn reopening_keeps_everything_and_does_not_migrate_twice() {
        let dir = tempfile::tempdir().unwrap();
        let loc = super::super::Location::Sqlite(dir.path().join("p.db"));
        let id = {
            let store = Store::open(&loc).await.unwrap();
            store.create(new("alice"), &crate::audit::Actor::default()).await.unwrap().record.id
        };
        let store = Store::open(&loc).await.unwrap();
        assert_eq!(store.get(&id).await.unwrap().owner, "alice");
    }

    #[test]
    fn processes_opening_a_new_store_at_once_migrate_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || SqliteStore::open(&path).map(|_| ()))
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0)).unwrap();
        assert_eq!(n, MIGRATIONS.len() as i64);
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let err = Store::open(&super::super::Location::Sqlite(path)).await.err().unwrap();
        assert!(err.to_string().contains("p.db"), "{err}");
    }
}
