//! Authentication and authorization: from a request's headers to a [`Permit`].
//!
//! [`authenticate`] reads the credential and finds the token in the in-memory copy (never
//! the store); [`authorize`] checks the scope and organization a route asks for. A
//! [`Permit`] can only be built here, and forwarding takes one, so an unauthorized request
//! cannot be forwarded. Nothing in this module logs or does I/O.

pub mod credentials;
pub mod lifespan;
pub mod orgs;
pub mod restrictions;
pub mod rules;
pub mod scope;
pub mod token;

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, StatusCode};

use compact_str::CompactString;

use crate::store::token_cache::{CachedToken, Retired, Rotated, RotatedAway, TokenCache};
use credentials::{Credential, CredentialError};
pub use orgs::{InvalidOrg, Orgs};
use rules::Requirement;
use scope::Scope;
use token::TokenHash;

/// The name of the admin console's session cookie: a credential of the admin listener
/// that the proxy takes out of `Cookie` before forwarding (a browser sends a host's
/// cookies to every port of it).
pub const SESSION_COOKIE: &str = "patgate_session";

/// The value of the console's session cookie if `pair` (one `name=value` of a `Cookie`
/// header) is it: the one reading of that cookie, for the admin listener that reads it
/// and the proxy that takes it out.
pub fn session_cookie_value(pair: &str) -> Option<&str> {
    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
    (name.trim() == SESSION_COOKIE).then(|| value.trim())
}

/// The body of every 401, on the proxy and the admin API alike, whatever the reason.
pub const UNAUTHORIZED_BODY: &str = "authentication required: give a valid patgate token";

/// The `WWW-Authenticate` value sent with every 401.
pub const CHALLENGE: &str = "Basic realm=\"patgate\"";

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The Authorization header could not be read: 400.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// No credential: 401.
    #[error("no credential")]
    Missing,
    /// A credential that is not a well-formed token: 401.
    #[error("malformed token")]
    Malformed,
    /// A well-formed token that is not live (never issued, or revoked and no longer
    /// remembered): 401.
    #[error("unknown or revoked token")]
    Unknown,
    /// A token past its expiry: 401.
    #[error("expired token")]
    Expired { token: KnownToken },
    /// A token revoked lately (see [`TokenCache::retired`]): 401.
    #[error("revoked token")]
    Revoked { token: KnownToken },
    /// The old secret of a token regenerated lately: 401.
    #[error("superseded secret of a regenerated token")]
    Superseded { token: KnownToken },
    /// A secret that a rotation replaced, presented again: 401, and the token (the family
    /// of every secret it had) is revoked, since someone holds a secret they should not.
    #[error("reused secret of a rotated token")]
    RotatedReused { token: KnownToken },
    /// A live token used from an address outside its `allow_from` ranges: 401, as an
    /// unknown token, so that the answer tells nothing of the token.
    #[error("token used from outside its address ranges")]
    OutsideRanges { token: KnownToken },
    /// The token lacks the scope: 403.
    #[error("token lacks scope {scope}")]
    ScopeMissing { scope: Scope },
    /// The token does not cover the organization: 403.
    #[error("token does not cover organization {org}")]
    OrgMissing { org: String },
    /// The token is limited to repositories and does not cover this one: 403.
    #[error("token does not cover repository {org}/{repo}")]
    RepoMissing { org: String, repo: String },
    /// The token is limited to repositories and the route names none, for a scope of
    /// code: 403 (a route that captures no `{repo}` cannot be told apart).
    #[error("token is limited to repositories and route {route} names none")]
    RepoUnnamed { route: String },
}

/// A token that a refused credential named (expired, revoked, superseded), for the logs
/// and the audit trail; never for the answer, which is the same 401 for every credential
/// that is not live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownToken {
    pub id: CompactString,
    pub owner: Arc<str>,
}

impl From<RotatedAway> for KnownToken {
    fn from(t: RotatedAway) -> Self {
        KnownToken { id: t.id, owner: t.owner }
    }
}

impl AuthError {
    /// The status of the answer, the same on the proxy and the admin API: 400 for an
    /// `Authorization` header that cannot be read, 401 for every credential that names
    /// no live token (however it failed: no oracle), 403 for a live token that lacks
    /// the scope or the organization.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Credential(_) => StatusCode::BAD_REQUEST,
            AuthError::Missing
            | AuthError::Malformed
            | AuthError::Unknown
            | AuthError::Expired { .. }
            | AuthError::Revoked { .. }
            | AuthError::Superseded { .. }
            | AuthError::RotatedReused { .. }
            | AuthError::OutsideRanges { .. } => StatusCode::UNAUTHORIZED,
            AuthError::ScopeMissing { .. }
            | AuthError::OrgMissing { .. }
            | AuthError::RepoMissing { .. }
            | AuthError::RepoUnnamed { .. } => StatusCode::FORBIDDEN,
        }
    }

    /// The token the refused credential named, when it is known.
    pub fn known_token(&self) -> Option<&KnownToken> {
        match self {
            AuthError::Expired { token }
            | AuthError::Revoked { token }
            | AuthError::Superseded { token }
            | AuthError::RotatedReused { token }
            | AuthError::OutsideRanges { token } => Some(token),
            AuthError::Credential(_)
            | AuthError::Missing
            | AuthError::Malformed
            | AuthError::Unknown
            | AuthError::ScopeMissing { .. }
            | AuthError::OrgMissing { .. }
            | AuthError::RepoMissing { .. }
            | AuthError::RepoUnnamed { .. } => None,
        }
    }
}

/// A live token, identified by the credential of a request.
#[derive(Clone)]
pub struct Identity(Arc<CachedToken>, FirstUse);

/// Whether this use was the token's first in its second: only then is its client address
/// noted for `last_used_from`.
#[derive(Clone, Copy)]
struct FirstUse(bool);

impl Identity {
    /// Notes `client` as where the token was last used from, once a second at most.
    #[inline]
    pub fn note_client(&self, tokens: &TokenCache, client: std::net::IpAddr) {
        if self.1 .0 {
            tokens.note_client(&self.0, client);
        }
    }

    /// The token's public id.
    pub fn token_id(&self) -> &str {
        &self.0.id
    }

    /// The token's owner.
    pub fn owner(&self) -> &str {
        &self.0.owner
    }
}

/// Proof that a request may be forwarded: only [`authorize`] builds one.
#[derive(Clone)]
pub struct Permit {
    token: Arc<CachedToken>,
}

impl Permit {
    /// The token's public id.
    pub fn token_id(&self) -> &str {
        &self.token.id
    }

    /// The token's owner.
    pub fn owner(&self) -> &str {
        &self.token.owner
    }

    /// The token as held in memory: what it grants, for a caller that would grant
    /// another token no more than its own (the admin API's least privilege).
    pub fn token(&self) -> &CachedToken {
        &self.token
    }

    /// Whether both permits are for the same token, as the store last had it.
    pub fn same_token(&self, other: &Permit) -> bool {
        Arc::ptr_eq(&self.token, &other.token)
    }

    /// Whether the token is still live in `tokens` at `now` (neither revoked, regenerated
    /// nor expired since the request was admitted).
    pub fn still_live(&self, tokens: &TokenCache, now: i64) -> bool {
        tokens.still_admits(&self.token, now)
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("token_id", &self.token_id())
            .field("owner", &self.owner())
            .finish()
    }
}

/// Finds the live token named by the request's credential, for a request from `client`
/// (`None` where no address is known: then a token limited to address ranges is refused).
/// `now` is Unix seconds.
pub fn authenticate(headers: &HeaderMap, tokens: &TokenCache, now: i64, client: Option<IpAddr>) -> Result<Identity, AuthError> {
    let secret = secret(credentials::from_headers(headers)?)?;
    live_token(tokens, &secret.hash(), now, client, || secret.checksum_ok())
}

/// As [`authenticate`], for a credential already reduced to its digest (a console
/// session keeps the digest of the token it was opened with, never the secret). A digest
/// that a rotation replaced is refused as superseded, not reported as reused: the session
/// was opened before the rotation, nobody presented the old secret again.
pub fn authenticate_digest(hash: &TokenHash, tokens: &TokenCache, now: i64, client: Option<IpAddr>) -> Result<Identity, AuthError> {
    if tokens.get(hash).is_none() {
        if let Some(token) = tokens.rotated_away_quietly(hash) {
            return Err(AuthError::Superseded { token: token.into() });
        }
    }
    live_token(tokens, hash, now, client, || true)
}

/// As [`authenticate`], for a request on a connection whose last credential is in `last`:
/// the same `Authorization` value again is not parsed and hashed again. The token is
/// looked up all the same, so a revocation or an expiry acts on the next request.
pub fn authenticate_on(
    headers: &HeaderMap,
    tokens: &TokenCache,
    now: i64,
    client: IpAddr,
    last: &LastCredential,
) -> Result<Identity, AuthError> {
    let Some(value) = credentials::authorization(headers)? else {
        return Err(AuthError::Missing);
    };
    if let Some(hash) = last.recall(value.as_bytes()) {
        // It named a token once, so its checksum is right: a miss now is a revocation.
        return live_token(tokens, &hash, now, Some(client), || true);
    }
    let secret = secret(credentials::parse(value.as_bytes())?)?;
    let hash = secret.hash();
    let identity = live_token(tokens, &hash, now, Some(client), || secret.checksum_ok())?;
    last.keep(value.as_bytes(), hash);
    Ok(identity)
}

/// The token secret a credential carries.
fn secret(credential: Credential) -> Result<token::TokenSecret, AuthError> {
    match credential {
        Credential::Missing => Err(AuthError::Missing),
        Credential::Malformed => Err(AuthError::Malformed),
        Credential::Token(secret) => Ok(secret),
    }
}

/// The live token with digest `hash`, used from `client`. On a miss, a rotated-away
/// secret is reported for its token to be revoked (past the rotation grace; within it,
/// it is only superseded), a token retired lately is named, and
/// `checksum_ok` tells a mistyped token from one never issued (all get the same 401).
fn live_token(
    tokens: &TokenCache,
    hash: &TokenHash,
    now: i64,
    client: Option<IpAddr>,
    checksum_ok: impl FnOnce() -> bool,
) -> Result<Identity, AuthError> {
    let Some(token) = tokens.get(hash) else {
        match tokens.rotated_away(hash, now) {
            Some(Rotated::Reused(t)) => return Err(AuthError::RotatedReused { token: t.into() }),
            Some(Rotated::Lately(t)) => return Err(AuthError::Superseded { token: t.into() }),
            None => {}
        }
        if let Some(r) = tokens.retired(hash, now) {
            let token = KnownToken { id: r.id, owner: r.owner };
            return Err(match r.why {
                Retired::Revoked => AuthError::Revoked { token },
                Retired::Regenerated => AuthError::Superseded { token },
                Retired::Expired => AuthError::Expired { token },
            });
        }
        // Every stored token was minted with a correct checksum, so it is checked only now.
        return Err(if checksum_ok() { AuthError::Unknown } else { AuthError::Malformed });
    };
    if now >= token.expires_at {
        return Err(AuthError::Expired {
            token: KnownToken {
                id: token.id.clone(),
                owner: token.owner.clone(),
            },
        });
    }
    if let Some(limits) = &token.limits {
        if !limits.allow_from.is_anywhere() && !client.is_some_and(|ip| limits.allow_from.admits(ip)) {
            return Err(AuthError::OutsideRanges {
                token: KnownToken {
                    id: token.id.clone(),
                    owner: token.owner.clone(),
                },
            });
        }
    }
    let first = token.touch(now);
    Ok(Identity(token, FirstUse(first)))
}

/// The last `Authorization` value that named a live token on one connection, with the
/// token's digest. Clients send the same value with every request of a connection.
/// Values are compared whole and in constant time; values over [`LastCredential::MAX_LEN`]
/// bytes are not kept.
#[derive(Default)]
pub struct LastCredential(Mutex<Option<(Box<[u8]>, TokenHash)>>);

impl LastCredential {
    /// The longest value kept: a Basic pair of a long user name and a token fits.
    pub const MAX_LEN: usize = 512;

    fn recall(&self, value: &[u8]) -> Option<TokenHash> {
        let last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match last.as_ref() {
            Some((kept, hash)) if equal_in_constant_time(kept, value) => Some(*hash),
            _ => None,
        }
    }

    fn keep(&self, value: &[u8], hash: TokenHash) {
        if value.len() <= Self::MAX_LEN {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((value.into(), hash));
        }
    }
}

impl fmt::Debug for LastCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LastCredential(<redacted>)")
    }
}

/// Whether `a` and `b` are equal, in a time that depends on their lengths only.
pub fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && std::hint::black_box(a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y))) == 0
}

/// Checks that the token allows what the route's rule requires: the organization, the
/// scope, and, for a token limited to repositories, the repository.
pub fn authorize(identity: Identity, need: Requirement<'_>) -> Result<Permit, AuthError> {
    let token = identity.0;
    if let Some(org) = need.org {
        if !token.orgs.covers(org) {
            return Err(AuthError::OrgMissing { org: org.to_owned() });
        }
    }
    if !token.scopes.allows(need.scope) {
        return Err(AuthError::ScopeMissing { scope: need.scope });
    }
    if let Some(limits) = token.limits.as_deref().filter(|l| !l.repos.is_all()) {
        match need.repo {
            Some(repo) => {
                let org = need.org.unwrap_or_default();
                if !limits.repos.admits(org, repo) {
                    return Err(AuthError::RepoMissing {
                        org: org.to_owned(),
                        repo: repo.to_owned(),
                    });
                }
            }
            None if need.scope.area() == scope::Area::Code => {
                return Err(AuthError::RepoUnnamed {
                    route: need.route.to_owned(),
                });
            }
            None => {}
        }
    }
    Ok(Permit { token })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TokenRecord;
    use base64::Engine;
    use http::header::AUTHORIZATION;
    use restrictions::{AllowFrom, Repos};
    use scope::ScopeSet;
    use token::TokenSecret;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn record(secret: &TokenSecret, scopes: &[&str], orgs: Orgs, expires_at: i64) -> TokenRecord {
        TokenRecord {
            id: "t1".into(),
            hash: secret.hash(),
            name: "ci".into(),
            owner: "alice".into(),
            orgs,
            repos: Repos::All,
            allow_from: AllowFrom::Anywhere,
            scopes: ScopeSet::parse(scopes).unwrap(),
            created_at: 0,
            rotated_at: None,
            expires_at,
            revoked_at: None,
            revoked_by: None,
            last_used_at: None,
            last_used_from: None,
        }
    }

    fn bearer(s: &TokenSecret) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, format!("Bearer {}", s.expose()).parse().unwrap());
        h
    }

    fn need(scope: &str, org: Option<&'static str>) -> Requirement<'static> {
        Requirement {
            scope: Scope::from_name(scope).unwrap(),
            org,
            repo: None,
            route: "/{org}/**",
        }
    }

    #[test]
    fn a_live_token_with_the_scope_and_org_gets_a_permit() {
        let s = TokenSecret::generate();
        let cache = TokenCache::default();
        cache.apply(&record(&s, &["code:write"], Orgs::parse("acme").unwrap(), 100), 0);
        let id = authenticate(&bearer(&s), &cache, 50, None).unwrap();
        let p = authorize(id.clone(), need("code:read", Some("acme"))).unwrap();
        assert_eq!((p.token_id(), p.owner()), ("t1", "alice"));
        assert_eq!(
            authorize(id.clone(), need("code:manage", Some("acme"))).unwrap_err(),
            AuthError::ScopeMissing {
                scope: Scope::from_name("code:manage").unwrap()
            }
        );
        assert_eq!(
            authorize(id.clone(), need("code:read", Some("other"))).unwrap_err(),
            AuthError::OrgMissing { org: "other".into() }
        );
        assert_eq!(
            authorize(id.clone(), need("code:read", Some("ACME"))).unwrap_err(),
            AuthError::OrgMissing { org: "ACME".into() }
        );
        assert!(authorize(id, need("code:read", None)).is_ok());
    }

    #[test]
    fn expiry_is_exclusive_and_unknown_tokens_fail() {
        let s = TokenSecret::generate();
        let cache = TokenCache::default();
        cache.apply(&record(&s, &["full"], Orgs::All, 100), 0);
        assert!(authenticate(&bearer(&s), &cache, 99, None).is_ok());
        let known = KnownToken {
            id: "t1".into(),
            owner: "alice".into(),
        };
        assert_eq!(
            authenticate(&bearer(&s), &cache, 100, None).err(),
            Some(AuthError::Expired { token: known.clone() })
        );
        // Pruned, it is still named.
        assert_eq!(cache.prune_expired(100), 1);
        assert_eq!(
            authenticate(&bearer(&s), &cache, 101, None).err(),
            Some(AuthError::Expired { token: known })
        );
        let other = TokenSecret::generate();
        assert_eq!(authenticate(&bearer(&other), &cache, 0, None).err(), Some(AuthError::Unknown));
        assert_eq!(authenticate(&HeaderMap::new(), &cache, 0, None).err(), Some(AuthError::Missing));
        // The right shape with a wrong checksum is told apart only after the lookup missed.
        let mut typo = other.expose().to_owned();
        let last = typo.pop().unwrap();
        typo.push(if last == 'a' { 'b' } else { 'a' });
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, format!("Bearer {typo}").parse().unwrap());
        assert_eq!(authenticate(&h, &cache, 0, None).err(), Some(AuthError::Malformed));
    }

    #[test]
    fn a_connection_remembers_its_credential_and_still_sees_revocation() {
        let s = TokenSecret::generate();
        let cache = TokenCache::default();
        let mut rec = record(&s, &["full"], Orgs::All, 100);
        cache.apply(&rec, 0);
        let last = LastCredential::default();
        let h = bearer(&s);
        assert!(authenticate_on(&h, &cache, 10, LOCAL, &last).is_ok());
        assert!(last.recall(h[AUTHORIZATION].as_bytes()).is_some());
        // Again from the remembered digest; then expiry and revocation act as ever.
        assert!(authenticate_on(&h, &cache, 11, LOCAL, &last).is_ok());
        let known = KnownToken {
            id: "t1".into(),
            owner: "alice".into(),
        };
        assert_eq!(
            authenticate_on(&h, &cache, 100, LOCAL, &last).err(),
            Some(AuthError::Expired { token: known.clone() })
        );
        rec.revoked_at = Some(20);
        cache.apply(&rec, 0);
        assert_eq!(
            authenticate_on(&h, &cache, 21, LOCAL, &last).err(),
            Some(AuthError::Revoked { token: known.clone() })
        );
        // Past the time revoked tokens are remembered, it is a token like any unknown one.
        let later = crate::store::token_cache::RETIRED_FOR;
        assert_eq!(authenticate_on(&h, &cache, later, LOCAL, &last).err(), Some(AuthError::Unknown));
        // Another value is parsed and judged on its own, and replaces nothing when refused.
        let other = TokenSecret::generate();
        assert_eq!(
            authenticate_on(&bearer(&other), &cache, 21, LOCAL, &last).err(),
            Some(AuthError::Unknown)
        );
        assert!(last.recall(h[AUTHORIZATION].as_bytes()).is_some());
        assert!(last.recall(bearer(&other)[AUTHORIZATION].as_bytes()).is_none());
        // A value that differs in one byte, or only in length, is not the one remembered.
        let v = h[AUTHORIZATION].as_bytes();
        let mut changed = v.to_vec();
        *changed.last_mut().unwrap() ^= 1;
        assert!(last.recall(&changed).is_none());
        assert!(last.recall(&v[..v.len() - 1]).is_none());
        // Two values are refused as before, whatever is remembered.
        let mut two = h.clone();
        two.append(AUTHORIZATION, h[AUTHORIZATION].clone());
        assert!(matches!(
            authenticate_on(&two, &cache, 21, LOCAL, &last),
            Err(AuthError::Credential(_))
        ));
        assert_eq!(
            authenticate_on(&HeaderMap::new(), &cache, 21, LOCAL, &last).err(),
            Some(AuthError::Missing)
        );
    }

    #[test]
    fn long_values_are_not_remembered() {
        let s = TokenSecret::generate();
        let cache = TokenCache::default();
        cache.apply(&record(&s, &["full"], Orgs::All, 100), 0);
        let last = LastCredential::default();
        let user = "u".repeat(LastCredential::MAX_LEN);
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", s.expose()));
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, format!("Basic {basic}").parse().unwrap());
        assert!(authenticate_on(&h, &cache, 10, LOCAL, &last).is_ok());
        assert!(last.recall(h[AUTHORIZATION].as_bytes()).is_none());
    }

    #[test]
    fn address_ranges_refuse_with_the_401_of_an_unknown_token() {
        let s = TokenSecret::generate();
        let cache = TokenCache::default();
        let mut rec = record(&s, &["code:read"], Orgs::All, 100);
        rec.allow_from = AllowFrom::parse("10.0.0.0/8,2001:db8::/32").unwrap();
        cache.apply(&rec, 0);
        let inside: IpAddr = "10.9.8.7".parse().unwrap();
        assert!(authenticate(&bearer(&s), &cache, 1, Some(inside)).is_ok());
        assert!(authenticate(&bearer(&s), &cache, 1, Some("::ffff:10.9.8.7".parse().unwrap())).is_ok());
        assert!(authenticate(&bearer(&s), &cache, 1, Some("2001:db8::7".parse().unwrap())).is_ok());
        let known = KnownToken {
            id: "t1".into(),
            owner: "alice".into(),
        };
        for outside in ["11.0.0.1", "127.0.0.1", "2001:db9::1"] {
            let e = authenticate(&bearer(&s), &cache, 1, Some(outside.parse().unwrap())).err().unwrap();
            assert_eq!(e, AuthError::OutsideRanges { token: known.clone() }, "{outside}");
            assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        }
        // No address known: refused, never waved through.
        assert!(authenticate(&bearer(&s), &cache, 1, None).is_err());
        // Remembered on a connection, it is judged again on every request.
        let last = LastCredential::default();
        assert!(authenticate_on(&bearer(&s), &cache, 1, inside, &last).is_ok());
        assert!(authenticate_on(&bearer(&s), &cache, 1, "11.0.0.1".parse().unwrap(), &last).is_err());
    }

    #[test]
    fn repositories_bind_routes_that_name_them_and_code_on_those_that_do_not() {
        let s = TokenSecret::generate();
        let cache = TokenCache::default();
        let mut rec = record(&s, &["code:write", "agentpools:read"], Orgs::parse("acme").unwrap(), 100);
        rec.repos = Repos::parse("acme/infra-*,acme/app").unwrap();
        cache.apply(&rec, 0);
        let id = authenticate(&bearer(&s), &cache, 1, None).unwrap();
        let on = |scope: &str, repo: Option<&'static str>| Requirement {
            scope: Scope::from_name(scope).unwrap(),
            org: Some("acme"),
            repo,
            route: "/{org}/{repo}/**",
        };
        assert!(authorize(id.clone(), on("code:read", Some("infra-net.git"))).is_ok());
        assert!(authorize(id.clone(), on("code:write", Some("app.git"))).is_ok());
        assert!(authorize(id.clone(), on("code:write", Some("app"))).is_ok());
        for other in ["App.git", "apps.git", "infra", "x"] {
            assert_eq!(
                authorize(id.clone(), on("code:read", Some(other))).unwrap_err(),
                AuthError::RepoMissing {
                    org: "acme".into(),
                    repo: other.into()
                }
            );
        }
        // A route that names no repository: code is refused, other areas are not.
        let e = authorize(
            id.clone(),
            Requirement {
                route: "/{org}/**",
                ..on("code:read", None)
            },
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "token is limited to repositories and route /{org}/** names none");
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert!(authorize(id.clone(), on("agentpools:read", None)).is_ok());
        // The scope and the organization are checked first, as for any token.
        assert!(matches!(
            authorize(id, on("code:manage", Some("app"))),
            Err(AuthError::ScopeMissing { .. })
        ));
    }

    #[test]
    fn a_rotated_away_secret_takes_its_token_out_and_is_reported() {
        let old = TokenSecret::generate();
        let new = TokenSecret::generate();
        let cache = TokenCache::default();
        let mut rec = record(&old, &["code:read"], Orgs::All, i64::MAX);
        cache.apply(&rec, 0);
        // The rotation: the feed brings the old digest, then the record with the new one.
        cache.remember_rotated(old.hash(), "t1", 0);
        rec.hash = new.hash();
        cache.apply(&rec, 0);
        assert!(authenticate(&bearer(&new), &cache, 1, None).is_ok());
        let known = KnownToken {
            id: "t1".into(),
            owner: "alice".into(),
        };
        assert_eq!(
            authenticate(&bearer(&old), &cache, 1, None).err(),
            Some(AuthError::RotatedReused { token: known.clone() })
        );
        // The token is out at once, under its new secret too, and queued for revocation.
        assert_eq!(
            authenticate(&bearer(&new), &cache, 1, None).err(),
            Some(AuthError::Revoked { token: known })
        );
        let reused = futures_util::FutureExt::now_or_never(cache.take_reused()).unwrap();
        assert_eq!(reused.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["t1"]);
        // Again: the token is gone, so nothing more is queued.
        assert!(authenticate(&bearer(&old), &cache, 1, None).is_err());
        assert!(futures_util::FutureExt::now_or_never(cache.take_reused()).is_none());
    }

    #[test]
    fn within_the_rotation_grace_an_old_secret_is_refused_and_nothing_more() {
        let old = TokenSecret::generate();
        let new = TokenSecret::generate();
        let cache = TokenCache::default();
        cache.set_rotation_grace(std::time::Duration::from_secs(10));
        let mut rec = record(&old, &["code:read"], Orgs::All, i64::MAX);
        cache.apply(&rec, 0);
        cache.remember_rotated(old.hash(), "t1", 100);
        rec.hash = new.hash();
        cache.apply(&rec, 0);
        // A request under way when the token was rotated, up to 10 whole seconds later:
        // refused.
        for now in [100, 109, 110] {
            assert!(matches!(
                authenticate(&bearer(&old), &cache, now, None),
                Err(AuthError::Superseded { .. })
            ));
        }
        assert!(authenticate(&bearer(&new), &cache, 110, None).is_ok());
        assert!(futures_util::FutureExt::now_or_never(cache.take_reused()).is_none());
        // More than 10 s later, it is reuse.
        assert!(matches!(
            authenticate(&bearer(&old), &cache, 111, None),
            Err(AuthError::RotatedReused { .. })
        ));
        assert!(authenticate(&bearer(&new), &cache, 111, None).is_err());
        assert!(futures_util::FutureExt::now_or_never(cache.take_reused()).is_some());
    }

    #[test]
    fn a_digest_kept_from_before_a_rotation_is_superseded_not_reused() {
        let old = TokenSecret::generate();
        let new = TokenSecret::generate();
        let cache = TokenCache::default();
        let mut rec = record(&old, &["tokens:read"], Orgs::All, i64::MAX);
        cache.apply(&rec, 0);
        cache.remember_rotated(old.hash(), "t1", 0);
        rec.hash = new.hash();
        cache.apply(&rec, 0);
        // A console session opened with the old secret keeps its digest: refused, and
        // nothing else happens to the token.
        assert!(matches!(
            authenticate_digest(&old.hash(), &cache, 1, None),
            Err(AuthError::Superseded { .. })
        ));
        assert!(authenticate_digest(&new.hash(), &cache, 1, None).is_ok());
        assert!(authenticate(&bearer(&new), &cache, 1, None).is_ok());
        assert!(futures_util::FutureExt::now_or_never(cache.take_reused()).is_none());
    }

    #[test]
    fn orgs_parse_and_cover_exactly() {
        assert_eq!(Orgs::parse("*").unwrap(), Orgs::All);
        assert_eq!(Orgs::parse("a, b,a").unwrap(), Orgs::List(vec!["a".into(), "b".into()]));
        assert!(Orgs::parse("").is_err());
        assert!(Orgs::parse("a/b").is_err());
        assert!(Orgs::parse("..").is_err());
        assert!(Orgs::parse("a%2fb").is_err());
        assert!(Orgs::parse("*,a").is_err());
        assert!(Orgs::All.covers("x"));
        assert!(!Orgs::parse("acme").unwrap().covers("Acme"));
    }
}
