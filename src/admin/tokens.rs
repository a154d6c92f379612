//! The token endpoints: create, list, read, update, regenerate, rotate and revoke tokens,
//! and revoke every token of an owner. Each checks the caller's access, then the request,
//! then the policy, writes to the store, and applies the change to this instance's memory
//! before it answers.
//!
//! Another owner's token is 404 to a caller without `tokens:admin`, as if it did not exist.
//! A token that is changed or regenerated here must be one the caller could create now
//! (see [`Policy`](super::policy::Policy)): otherwise `tokens:manage` could take the secret
//! of a same-owner token holding `tokens:admin`. Revoking is always allowed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::audit::RequestInfo;
use super::caller::{Access, Caller, Who};
use super::error::AdminError;
use super::policy::{Grant, Grantor};
use super::request::{self, Body, Expiry, Params, Segment};
use super::AdminState;
use crate::auth::restrictions::{AllowFrom, Repos};
use crate::auth::scope::ScopeSet;
use crate::auth::Orgs;
use crate::store::{self, Created, Cursor, ListQuery, NewToken, StoreError, TokenRecord, TokenState, TokenUpdate, MAX_PAGE};

/// A token as the admin API shows it: the record (never its hash) and its state now.
#[derive(Debug, Serialize)]
pub struct TokenJson {
    #[serde(flatten)]
    record: TokenRecord,
    state: TokenState,
}

impl TokenJson {
    pub fn new(record: TokenRecord) -> TokenJson {
        let state = record.state(store::now());
        TokenJson { record, state }
    }
}

/// A token with its secret: the answer of create and regenerate, the only ones that
/// ever hold a secret.
#[derive(Serialize)]
pub struct WithSecret {
    token: TokenJson,
    secret: String,
}

impl From<Created> for WithSecret {
    fn from(c: Created) -> Self {
        WithSecret {
            secret: c.secret.expose().to_owned(),
            token: TokenJson::new(c.record),
        }
    }
}

/// A page of tokens.
#[derive(Serialize)]
pub struct TokenPage {
    tokens: Vec<TokenJson>,
    next: Option<String>,
}

/// How many tokens a revoke by owner revoked.
#[derive(Serialize)]
pub struct Revoked {
    pub revoked: usize,
}

/// The body of `POST /admin/v1/tokens`. An optional member is left out, never null.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    #[serde(default, deserialize_with = "request::not_null")]
    owner: Option<String>,
    scopes: Vec<String>,
    orgs: Orgs,
    #[serde(default, deserialize_with = "request::not_null")]
    repos: Option<Repos>,
    #[serde(default, deserialize_with = "request::not_null")]
    allow_from: Option<AllowFrom>,
    #[serde(default, deserialize_with = "request::not_null")]
    expires_in: Option<String>,
    #[serde(default, deserialize_with = "request::not_null")]
    expires_at: Option<String>,
}

/// The body of `POST /admin/v1/tokens/{id}/rotate`, which may be empty: the new expiry,
/// `policy.default_lifespan` from now when left out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    #[serde(default, deserialize_with = "request::not_null")]
    expires_in: Option<String>,
    #[serde(default, deserialize_with = "request::not_null")]
    expires_at: Option<String>,
}

/// The body of `PATCH /admin/v1/tokens/{id}`; what is left out stays as it is, and no
/// member may be null.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[serde(default, deserialize_with = "request::not_null")]
    name: Option<String>,
    #[serde(default, deserialize_with = "request::not_null")]
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "request::not_null")]
    orgs: Option<Orgs>,
    #[serde(default, deserialize_with = "request::not_null")]
    repos: Option<Repos>,
    #[serde(default, deserialize_with = "request::not_null")]
    allow_from: Option<AllowFrom>,
    #[serde(default, deserialize_with = "request::not_null")]
    expires_in: Option<String>,
    #[serde(default, deserialize_with = "request::not_null")]
    expires_at: Option<String>,
}

fn scopes(names: &[String]) -> Result<ScopeSet, AdminError> {
    ScopeSet::parse(names).map_err(|e| AdminError::field("scopes", e))
}

/// `POST /admin/v1/tokens`.
pub async fn create(
    State(s): State<AdminState>,
    caller: Caller,
    info: RequestInfo,
    body: Body,
) -> Result<(StatusCode, Json<WithSecret>), AdminError> {
    let who = caller.require(Access::Manage)?;
    let b: CreateBody = body.parse()?;
    let owner = match b.owner {
        Some(owner) if owner != who.owner => {
            who.require_admin()?;
            owner
        }
        Some(owner) => owner,
        None => who.owner.clone(),
    };
    let scopes = scopes(&b.scopes)?;
    let policy = s.policy();
    let now = store::now();
    let expires_at = match Expiry::from_fields(b.expires_in.as_deref(), b.expires_at.as_deref())? {
        Some(e) => e.at(now),
        None => Expiry::In(policy.default_lifespan).at(now),
    };
    if expires_at <= now {
        return Err(AdminError::field("expires_at", "must be in the future"));
    }
    // Left out, repositories and address ranges are those of the caller's own token (its
    // patterns within the new token's organizations): a token limited to them mints
    // tokens limited alike without being told.
    let (held_repos, held_ranges) = match who.grantor() {
        Grantor::Admin => (Repos::All, AllowFrom::Anywhere),
        Grantor::Holder(holds) => (holds.repos.within(|o| b.orgs.covers(o)), holds.allow_from.clone()),
    };
    let grant = Grant {
        scopes,
        orgs: b.orgs,
        repos: b.repos.unwrap_or(held_repos),
        allow_from: b.allow_from.unwrap_or(held_ranges),
    };
    let refused = |e| info.policy_refusal(&s, &who, None, &owner, e);
    policy.check_grant(&grant, who.grantor()).map_err(refused)?;
    policy.check_life(now, expires_at).map_err(refused)?;
    let new = NewToken {
        name: b.name,
        owner,
        orgs: grant.orgs,
        repos: grant.repos,
        allow_from: grant.allow_from,
        scopes,
        lifespan: std::time::Duration::from_secs(expires_at.abs_diff(now)),
    };
    let created = s.store().create(new, &info.actor(&who.owner)).await?;
    s.applied().await;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// `GET /admin/v1/tokens?owner=&state=&limit=&after=`.
pub async fn list(State(s): State<AdminState>, caller: Caller, mut q: Params) -> Result<Json<TokenPage>, AdminError> {
    let who = caller.require(Access::Read)?;
    let owner = match q.take("owner")? {
        Some(owner) if owner != who.owner => {
            who.require_admin()?;
            request::owner(&owner)?;
            Some(owner)
        }
        Some(owner) => Some(owner),
        None if who.admin => None,
        None => Some(who.owner.clone()),
    };
    let state = match q.take("state")? {
        None => None,
        Some(v) => Some(TokenState::parse(&v).ok_or_else(|| AdminError::field("state", "must be active, expired or revoked"))?),
    };
    let limit = q.number("limit", 1, MAX_PAGE as i64, 100)? as usize;
    let after = match q.take("after")? {
        None => None,
        Some(v) => Some(Cursor::decode(&v).ok_or_else(|| AdminError::field("after", "not a `next` value of an earlier page"))?),
    };
    q.done()?;
    let page = s
        .store()
        .list(ListQuery {
            owner,
            state,
            after,
            limit,
        })
        .await?;
    Ok(Json(TokenPage {
        tokens: page.items.into_iter().map(TokenJson::new).collect(),
        next: page.next.map(|c| c.encode()),
    }))
}

/// The token `id` if the caller may see it; 404 alike for a missing token and another
/// owner's.
async fn visible(s: &AdminState, who: &Who, id: &str) -> Result<TokenRecord, AdminError> {
    let record = s.store().get(request::token_id(id)?).await?;
    if !who.may_touch(&record.owner) {
        return Err(StoreError::NotFound(id.to_owned()).into());
    }
    Ok(record)
}

/// `GET /admin/v1/tokens/{id}`.
pub async fn get(State(s): State<AdminState>, caller: Caller, Segment(id): Segment) -> Result<Json<TokenJson>, AdminError> {
    let who = caller.require(Access::Read)?;
    Ok(Json(TokenJson::new(visible(&s, &who, &id).await?)))
}

/// `PATCH /admin/v1/tokens/{id}`: rename, narrow, or move the expiry (within policy). The
/// token as changed is checked as a create would be (`grantable_scopes` for callers
/// without `tokens:admin`, `allow_full`, `allow_all_orgs`); a new expiry must keep its
/// life within `max_lifespan` from its creation.
pub async fn update(
    State(s): State<AdminState>,
    caller: Caller,
    Segment(id): Segment,
    info: RequestInfo,
    body: Body,
) -> Result<Json<TokenJson>, AdminError> {
    let who = caller.require(Access::Manage)?;
    let b: UpdateBody = body.parse()?;
    let scopes = b.scopes.as_deref().map(scopes).transpose()?;
    let expiry = Expiry::from_fields(b.expires_in.as_deref(), b.expires_at.as_deref())?;
    let current = visible(&s, &who, &id).await?;
    // The token as changed must be one the caller could create; its life counts from its
    // creation, or its last rotation.
    let grant = Grant {
        scopes: scopes.unwrap_or(current.scopes),
        orgs: b.orgs.clone().unwrap_or_else(|| current.orgs.clone()),
        repos: b.repos.clone().unwrap_or_else(|| current.repos.clone()),
        allow_from: b.allow_from.clone().unwrap_or_else(|| current.allow_from.clone()),
    };
    let policy = s.policy();
    let refused = |e| info.policy_refusal(&s, &who, Some(&current.id), &current.owner, e);
    policy.check_grant(&grant, who.grantor()).map_err(refused)?;
    let expires_at = expiry.map(|e| e.at(store::now()));
    if let Some(at) = expires_at {
        policy.check_life(current.life_from(), at).map_err(refused)?;
    }
    let update = TokenUpdate {
        name: b.name,
        scopes,
        orgs: b.orgs,
        repos: b.repos,
        allow_from: b.allow_from,
        expires_at,
    };
    let record = s.store().update(&id, update, &info.actor(&who.owner)).await?;
    s.applied().await;
    Ok(Json(TokenJson::new(record)))
}

/// `POST /admin/v1/tokens/{id}/regenerate`: a new secret under the same id, for a token
/// the policy would let the caller create (so `tokens:manage` cannot take over a
/// same-owner `tokens:admin` token).
pub async fn regenerate(
    State(s): State<AdminState>,
    caller: Caller,
    Segment(id): Segment,
    info: RequestInfo,
) -> Result<Json<WithSecret>, AdminError> {
    let who = caller.require(Access::Manage)?;
    let current = visible(&s, &who, &id).await?;
    // A new secret is a new credential: only for a token the caller could create now.
    let policy = s.policy();
    let refused = |e| info.policy_refusal(&s, &who, Some(&current.id), &current.owner, e);
    policy.check_grant(&Grant::of(&current), who.grantor()).map_err(refused)?;
    policy.check_life(current.life_from(), current.expires_at).map_err(refused)?;
    let created = s.store().regenerate(&id, &info.actor(&who.owner)).await?;
    s.applied().await;
    Ok(Json(created.into()))
}

/// `POST /admin/v1/tokens/{id}/rotate`: a new secret and a new expiry in one step, for a
/// token the caller could create now (a token with `tokens:manage` may rotate itself, so
/// an agent renews its own token). The old secret is refused at once, and its use later
/// revokes the token: the one who presents it holds a secret they should not.
pub async fn rotate(
    State(s): State<AdminState>,
    caller: Caller,
    Segment(id): Segment,
    info: RequestInfo,
    body: Body,
) -> Result<Json<WithSecret>, AdminError> {
    let who = caller.require(Access::Manage)?;
    let b: RotateBody = body.parse_or_empty()?;
    let expiry = Expiry::from_fields(b.expires_in.as_deref(), b.expires_at.as_deref())?;
    let current = visible(&s, &who, &id).await?;
    let policy = s.policy();
    let now = store::now();
    let expires_at = expiry.unwrap_or(Expiry::In(policy.default_lifespan)).at(now);
    if expires_at <= now {
        return Err(AdminError::field("expires_at", "must be in the future"));
    }
    let refused = |e| info.policy_refusal(&s, &who, Some(&current.id), &current.owner, e);
    policy.check_grant(&Grant::of(&current), who.grantor()).map_err(refused)?;
    policy.check_life(now, expires_at).map_err(refused)?;
    let created = s.store().rotate(&id, expires_at, &info.actor(&who.owner)).await?;
    s.applied().await;
    Ok(Json(created.into()))
}

/// `POST /admin/v1/tokens/{id}/revoke` (idempotent).
pub async fn revoke(
    State(s): State<AdminState>,
    caller: Caller,
    Segment(id): Segment,
    info: RequestInfo,
) -> Result<Json<TokenJson>, AdminError> {
    let who = caller.require(Access::Manage)?;
    visible(&s, &who, &id).await?;
    let record = s.store().revoke(&id, &info.actor(&who.owner)).await?;
    s.applied().await;
    Ok(Json(TokenJson::new(record)))
}

/// `POST /admin/v1/owners/{owner}/revoke`: every live token of an owner.
pub async fn revoke_owner(
    State(s): State<AdminState>,
    caller: Caller,
    Segment(owner): Segment,
    info: RequestInfo,
) -> Result<Json<Revoked>, AdminError> {
    let who = caller.require(Access::Manage)?;
    if owner != who.owner {
        who.require_admin()?;
        request::owner(&owner)?;
    }
    let revoked = s.store().revoke_owner(&owner, &info.actor(&who.owner)).await?;
    s.applied().await;
    Ok(Json(Revoked { revoked }))
}
