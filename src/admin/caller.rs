//! Who is calling: the token from `Authorization` (Basic or Bearer, as on the proxy),
//! found in the in-memory copy, and how much of the admin API its scopes open.
//!
//! `tokens:read` reads the caller's own tokens, `tokens:manage` also changes them, and
//! `tokens:admin` does both for every owner. The level is established through
//! [`auth::authorize`], so only a permit from the auth module opens anything.

use std::sync::{Arc, LazyLock, OnceLock};

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts};
use http::request::Parts;

use super::error::AdminError;
use super::policy::{Grant, Grantor};
use super::AdminState;
use crate::auth::rules::Requirement;
use crate::auth::scope::Scope;
use crate::auth::{self, AuthError, Identity, Permit};

/// How much of the admin API a token opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// `tokens:read`: list and read one's own tokens and their events.
    Read,
    /// `tokens:manage`: also create, change, regenerate and revoke them.
    Manage,
    /// `tokens:admin`: all of that for every owner.
    Admin,
}

static SCOPES: LazyLock<[Scope; 3]> = LazyLock::new(|| {
    ["tokens:read", "tokens:manage", "tokens:admin"].map(|n| Scope::from_name(n).expect("the scope table has the tokens scopes"))
});

impl Access {
    /// The scope that grants this access.
    pub fn scope(self) -> Scope {
        SCOPES[self as usize]
    }
}

/// The token id and owner of the request, for the request log and the audit trail (a
/// request extension filled once the caller is known).
#[derive(Debug, Clone, Default)]
pub struct LogSlot(Arc<OnceLock<(String, String)>>);

impl LogSlot {
    /// The token id, once known.
    pub fn token_id(&self) -> Option<&str> {
        self.0.get().map(|(id, _)| id.as_str())
    }

    /// The token's owner, once known.
    pub fn owner(&self) -> Option<&str> {
        self.0.get().map(|(_, owner)| owner.as_str())
    }
}

/// An authenticated caller, with the most its token opens (none when it holds no
/// `tokens:` scope).
pub struct Caller {
    grant: Option<(Access, Permit)>,
    /// The token, for scopes outside the `tokens:` family ([`Caller::require_scope`]).
    identity: Option<Identity>,
}

/// A caller allowed to go on: whose tokens it may touch.
#[derive(Debug, Clone)]
pub struct Who {
    /// The caller's owner, recorded as the actor of its writes.
    pub owner: String,
    /// True with `tokens:admin`: every owner's tokens.
    pub admin: bool,
    /// What the caller's own token grants: without `tokens:admin`, the most it may grant.
    pub holds: Grant,
}

impl Who {
    /// 403 naming `tokens:admin` unless the caller has it.
    pub fn require_admin(&self) -> Result<(), AdminError> {
        if self.admin {
            Ok(())
        } else {
            Err(AuthError::ScopeMissing {
                scope: Access::Admin.scope(),
            }
            .into())
        }
    }

    /// Who grants, for [`Policy::check_grant`](super::policy::Policy::check_grant).
    pub fn grantor(&self) -> Grantor<'_> {
        if self.admin {
            Grantor::Admin
        } else {
            Grantor::Holder(&self.holds)
        }
    }

    /// True when the caller may see and touch tokens of `owner`.
    pub fn may_touch(&self, owner: &str) -> bool {
        self.admin || self.owner == owner
    }
}

impl Caller {
    /// The caller, if its token opens `need`; 403 naming the scope otherwise.
    pub fn require(&self, need: Access) -> Result<Who, AdminError> {
        match &self.grant {
            Some((has, permit)) if *has >= need => Ok(Who {
                owner: permit.owner().to_owned(),
                admin: *has == Access::Admin,
                holds: Grant::of_cached(permit.token()),
            }),
            _ => Err(AuthError::ScopeMissing { scope: need.scope() }.into()),
        }
    }

    /// The caller's permit for a scope outside the `tokens:` family (`auditstreams:manage`,
    /// say), as the scope table grants it (`full` does, `tokens:admin` does not); 403
    /// naming the scope otherwise.
    pub fn require_scope(&self, scope: Scope) -> Result<Permit, AdminError> {
        match &self.identity {
            Some(identity) => Ok(auth::authorize(identity.clone(), Requirement::scope(scope))?),
            None => Err(AuthError::ScopeMissing { scope }.into()),
        }
    }
}

impl FromRequestParts<AdminState> for Caller {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, AdminError> {
        // Wrong secrets count against the address, in the proxy's table: one budget for both.
        let lockout = state.lockout();
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let counted = lockout.as_ref().zip(peer);
        if let Some((lockout, ip)) = counted {
            lockout.check(ip, Instant::now())?;
        }
        // A console session stands in for Authorization (see super::console).
        let identity = match super::sessions::session_caller(parts, state)? {
            Some(identity) => identity,
            None => auth::authenticate(&parts.headers, state.tokens(), crate::clock::now(), peer).inspect_err(|e| {
                if let (Some((lockout, ip)), false) = (counted, matches!(e, AuthError::Missing)) {
                    lockout.failed(ip, Instant::now());
                }
            })?,
        };
        if let Some(ip) = peer {
            identity.note_client(state.tokens(), ip);
        }
        if let Some(slot) = parts.extensions.get::<LogSlot>() {
            let _ = slot.0.set((identity.token_id().to_owned(), identity.owner().to_owned()));
        }
        let grant = [Access::Admin, Access::Manage, Access::Read].into_iter().find_map(|a| {
            auth::authorize(identity.clone(), Requirement::scope(a.scope()))
                .ok()
                .map(|p| (a, p))
        });
        Ok(Caller {
            grant,
            identity: Some(identity),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_levels_follow_the_scope_table() {
        assert_eq!(Access::Read.scope().name(), "tokens:read");
        assert_eq!(Access::Manage.scope().name(), "tokens:manage");
        assert_eq!(Access::Admin.scope().name(), "tokens:admin");
        assert!(Access::Read < Access::Manage && Access::Manage < Access::Admin);
    }

    #[test]
    fn who_touches_its_own_unless_admin() {
        let holds = Grant {
            scopes: crate::auth::scope::ScopeSet::full(),
            orgs: crate::auth::Orgs::All,
            repos: crate::auth::restrictions::Repos::All,
            allow_from: crate::auth::restrictions::AllowFrom::Anywhere,
        };
        let alice = Who {
            owner: "alice".into(),
            admin: false,
            holds: holds.clone(),
        };
        assert!(alice.may_touch("alice") && !alice.may_touch("bob"));
        assert_eq!(alice.require_admin().unwrap_err().to_string(), "token lacks scope tokens:admin");
        let root = Who {
            owner: "root".into(),
            admin: true,
            holds,
        };
        assert!(root.may_touch("bob") && root.require_admin().is_ok());
        let nobody = Caller {
            grant: None,
            identity: None,
        };
        assert_eq!(
            nobody.require(Access::Read).unwrap_err().to_string(),
            "token lacks scope tokens:read"
        );
    }
}
