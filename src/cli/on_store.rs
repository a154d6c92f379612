//! The token and audit commands carried out on the store directly: no policy applies
//! (this is how the first admin token is made), and a running server applies each change
//! within `store.poll_interval`.

use std::time::Duration;

use anyhow::Context;
use patgate::audit::{Actor, AuditEntry, Outcome};
use patgate::store::{self, NewToken, Store, TokenUpdate};

use super::{AuditListArgs, ChangeSpec, NewTokenSpec, TokenView, Tokens};

/// Who the store's event feed and `revoked_by` name for a change made by the CLI on the
/// store: `cli:USER@HOST`. The user is the login name the environment gives (or the
/// numeric uid): a hint for the audit trail, not an authentication, since whoever can
/// open the store can change any token anyway.
fn actor() -> String {
    use std::os::unix::fs::MetadataExt;
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty() && u.len() <= 64))
        .or_else(|| std::fs::metadata("/proc/self").ok().map(|m| format!("uid {}", m.uid())))
        .unwrap_or_else(|| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() <= 253)
        .unwrap_or_else(|| "unknown".into());
    let clean = |s: &str| -> String { s.chars().filter(|c| !c.is_control()).collect() };
    format!("cli:{}@{}", clean(&user), clean(&host))
}

/// Unix seconds `d` from now.
fn from_now(d: Duration) -> i64 {
    store::now().saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Tokens for Store {
    async fn create(&self, new: NewTokenSpec) -> anyhow::Result<(TokenView, String)> {
        let new = NewToken {
            name: new.name,
            owner: new.owner.context("--owner is needed when working on the store")?,
            orgs: new.orgs,
            repos: new.repos.unwrap_or_default(),
            allow_from: new.allow_from.unwrap_or_default(),
            scopes: new.scopes,
            lifespan: new.expires_in.context("--expires-in is needed when working on the store")?,
        };
        let created = Store::create(self, new, &Actor::named(actor())).await?;
        Ok((TokenView::of(&created.record, store::now()), created.secret.expose().to_owned()))
    }

    async fn list(&self, owner: Option<String>, state: Option<String>) -> anyhow::Result<Vec<TokenView>> {
        let now = store::now();
        let all = self.list_all(owner).await?;
        Ok(all
            .iter()
            .filter(|r| state.as_deref().is_none_or(|s| r.state(now).as_str() == s))
            .map(|r| TokenView::of(r, now))
            .collect())
    }

    async fn get(&self, id: &str) -> anyhow::Result<TokenView> {
        Ok(TokenView::of(&Store::get(self, id).await?, store::now()))
    }

    async fn update(&self, id: &str, change: ChangeSpec) -> anyhow::Result<TokenView> {
        let update = TokenUpdate {
            name: change.name,
            scopes: change.scopes,
            orgs: change.orgs,
            repos: change.repos,
            allow_from: change.allow_from,
            expires_at: change.expires_in.map(from_now),
        };
        let r = Store::update(self, id, update, &Actor::named(actor())).await?;
        Ok(TokenView::of(&r, store::now()))
    }

    async fn regenerate(&self, id: &str) -> anyhow::Result<(TokenView, String)> {
        let c = Store::regenerate(self, id, &Actor::named(actor())).await?;
        Ok((TokenView::of(&c.record, store::now()), c.secret.expose().to_owned()))
    }

    async fn rotate(&self, id: &str, expires_in: Option<Duration>) -> anyhow::Result<(TokenView, String)> {
        let d = expires_in.context("--expires-in is needed when working on the store")?;
        let c = Store::rotate(self, id, from_now(d), &Actor::named(actor())).await?;
        Ok((TokenView::of(&c.record, store::now()), c.secret.expose().to_owned()))
    }

    async fn revoke(&self, id: &str) -> anyhow::Result<()> {
        Store::revoke(self, id, &Actor::named(actor())).await?;
        Ok(())
    }

    async fn revoke_owner(&self, owner: &str) -> anyhow::Result<usize> {
        Ok(Store::revoke_owner(self, owner, &Actor::named(actor())).await?)
    }

    async fn audit(&self, a: &AuditListArgs) -> anyhow::Result<Vec<AuditEntry>> {
        let limit = a.limit as usize;
        let mut query = store::AuditQuery {
            from: a.from.map(|s| s.saturating_mul(1000)),
            to: a.to.map(|s| s.saturating_mul(1000)),
            owner: a.owner.clone(),
            token_id: a.token_id.clone(),
            outcome: a.outcome.as_deref().and_then(Outcome::from_name),
            action: a.action,
            ..store::AuditQuery::default()
        };
        let mut out = Vec::new();
        loop {
            query.limit = (limit - out.len()).min(store::MAX_PAGE);
            let page = self.audit_page(&query).await?;
            out.extend(page.entries);
            match page.next {
                Some(next) if out.len() < limit => query.after = Some(next),
                _ => return Ok(out),
            }
        }
    }
}
