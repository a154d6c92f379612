//! SQL text shared by the backends and the audit streams: what more than one of
//! [`super::sqlite`], [`super::postgres`] and [`super::streams`] needs, so that none of
//! them imports another for it. A leaf: it imports nothing.

/// The audit trail's columns, in the order `read_audit` of each backend reads them.
pub const AUDIT_COLUMNS: &str = "seq, time, action, outcome, reason, token_id, owner, actor, client, method, path, route, status, count";

/// The audit streams' tables ([`super::streams`]), for SQLite's `migrate()`.
pub const STREAMS_SQLITE: &str = r#"
CREATE TABLE IF NOT EXISTS audit_streams (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    kind           TEXT NOT NULL,
    target         TEXT NOT NULL,
    secret         TEXT,
    enabled        INTEGER NOT NULL,
    delivered_seq  INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    lease_owner    TEXT,
    lease_until    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS expiry_warnings (
    token_id    TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    warned_at   INTEGER NOT NULL,
    PRIMARY KEY (token_id, expires_at)
);
"#;

/// The audit streams' tables ([`super::streams`]), for PostgreSQL's `migrate()`.
pub const STREAMS_PG: &str = r#"
CREATE TABLE IF NOT EXISTS audit_streams (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    kind           TEXT NOT NULL,
    target         TEXT NOT NULL,
    secret         TEXT,
    enabled        BOOLEAN NOT NULL,
    delivered_seq  BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    lease_owner    TEXT,
    lease_until    BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS expiry_warnings (
    token_id    TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    warned_at   BIGINT NOT NULL,
    PRIMARY KEY (token_id, expires_at)
);
"#;
