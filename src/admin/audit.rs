//! The audit trail over the admin API: `GET /admin/v1/audit`, and what the other
//! endpoints need to add to it (who acts, from where; policy refusals).
//!
//! Reading needs `auditlog:read` (which `tokens:admin` does not imply: see the scope
//! table). A caller with `tokens:admin` as well reads every owner's entries; any other
//! reads only the entries of its own owner (entries that name no owner, such as refusals
//! of unknown tokens, are for `tokens:admin` callers only). Entries come newest first;
//! `next` is the `after` of the following page, and entries written meanwhile never shift
//! a page, so following `next` reads each entry once.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, State};
use axum::Json;
use http::request::Parts;
use serde::Serialize;

use super::caller::{Access, Caller, Who};
use super::error::AdminError;
use super::policy::PolicyError;
use super::request::{self, redact, Params};
use super::AdminState;
use crate::audit::{now_millis, Action, Actor, AuditEntry, Outcome};
use crate::auth::scope::Scope;
use crate::auth::AuthError;
use crate::store::{AuditQuery, MAX_PAGE};

/// A page of the audit trail.
#[derive(Debug, Serialize)]
pub struct AuditAnswer {
    entries: Vec<AuditEntry>,
    /// The `after` of the next page; none after the last.
    next: Option<String>,
}

/// `GET /admin/v1/audit?from=&to=&owner=&token_id=&outcome=&action=&after=&limit=`.
pub async fn list(State(s): State<AdminState>, caller: Caller, mut q: Params) -> Result<Json<AuditAnswer>, AdminError> {
    let read = Scope::from_name("auditlog:read").expect("the scope table has auditlog:read");
    let permit = caller.require_scope(read)?;
    let admin = caller.require(Access::Admin).is_ok();
    let own = permit.owner();
    let owner = match q.take("owner")? {
        Some(owner) if owner != own => {
            if !admin {
                return Err(AuthError::ScopeMissing {
                    scope: Access::Admin.scope(),
                }
                .into());
            }
            request::owner(&owner)?;
            Some(owner)
        }
        Some(owner) => Some(owner),
        None if admin => None,
        None => Some(own.to_owned()),
    };
    let from = time(&mut q, "from")?;
    let to = time(&mut q, "to")?;
    let token_id = match q.take("token_id")? {
        Some(id) if (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()) => Some(id),
        Some(_) => return Err(AdminError::field("token_id", "not a token id (letters and digits)")),
        None => None,
    };
    let outcome = match q.take("outcome")? {
        Some(o) => Some(Outcome::from_name(&o).ok_or_else(|| AdminError::field("outcome", "must be success or failure"))?),
        None => None,
    };
    let action = match q.take("action")? {
        Some(a) => Some(Action::from_name(&a).ok_or_else(|| {
            let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
            AdminError::field("action", format!("must be one of {}", names.join(", ")))
        })?),
        None => None,
    };
    let after = match q.take("after")? {
        // As `next` writes it: 1 to 18 digits, no leading zero, no sign.
        Some(v) if (1..=18).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()) && !v.starts_with('0') => v.parse().ok(),
        Some(_) => return Err(AdminError::field("after", "not a `next` value of an earlier page")),
        None => None,
    };
    let limit = q.number("limit", 1, MAX_PAGE as i64, 100)? as usize;
    q.done()?;
    let page = s
        .store()
        .audit_page(&AuditQuery {
            from,
            to,
            owner,
            token_id,
            outcome,
            action,
            after,
            limit,
        })
        .await?;
    Ok(Json(AuditAnswer {
        entries: page.entries,
        next: page.next.map(|n| n.to_string()),
    }))
}

/// An RFC 3339 time from the query, as Unix milliseconds.
fn time(q: &mut Params, name: &'static str) -> Result<Option<i64>, AdminError> {
    match q.take(name)? {
        None => Ok(None),
        Some(v) => request::parse_time(&v).map(|secs| Some(secs.saturating_mul(1000))).ok_or_else(|| {
            AdminError::field(
                name,
                format!("`{}` is not an RFC 3339 time such as 2030-01-31T12:00:00Z", redact(&v)),
            )
        }),
    }
}

/// What the audit trail records of an admin request besides its caller: the client's
/// address (none when the request came without a connection, as in tests), the method,
/// the path (never the query) and the route.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub client: Option<IpAddr>,
    pub method: String,
    pub path: String,
    pub route: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestInfo {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AdminError> {
        Ok(RequestInfo {
            client: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()),
            method: parts.method.as_str().to_owned(),
            path: request::clean(parts.uri.path()),
            route: parts.extensions.get::<MatchedPath>().map(|m| m.as_str().to_owned()),
        })
    }
}

impl RequestInfo {
    /// The actor of a change the caller owned by `owner` makes, from this request's client.
    pub fn actor(&self, owner: &str) -> Actor {
        Actor {
            name: Some(owner.to_owned()),
            client: self.client,
        }
    }

    /// Records a change refused by the policy (of token `token_id`, or a new one, of
    /// `owner`), and returns the error to answer with.
    pub fn policy_refusal(&self, s: &AdminState, who: &Who, token_id: Option<&str>, owner: &str, e: PolicyError) -> AdminError {
        let e = AdminError::Policy(e);
        let mut entry = AuditEntry::new(now_millis(), Action::PolicyRefusal, Outcome::Failure);
        entry.reason = Some(e.to_string());
        entry.token_id = token_id.map(str::to_owned);
        entry.owner = Some(owner.to_owned());
        entry.actor = Some(who.owner.clone());
        entry.client = self.client;
        entry.method = Some(self.method.clone());
        entry.path = Some(self.path.clone());
        entry.route = self.route.clone();
        entry.status = Some(e.status().as_u16());
        s.auditor().record(entry);
        e
    }
}
