//! Token policy: what a token made or changed through the admin API may be (`[policy]`).
//! Pure checks, no I/O. The CLI working on the store directly is not held to it: it mints
//! the first admin token.
//!
//! Callers with `tokens:admin` are exempt from `grantable_scopes` only.

use std::time::Duration;

use crate::auth::scope::ScopeSet;
use crate::auth::Orgs;

/// `[policy]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The longest a token may live, from its creation to its expiry.
    pub max_lifespan: Duration,
    /// The lifespan of a token created without one.
    pub default_lifespan: Duration,
    /// The scopes callers without `tokens:admin` may grant (implications applied).
    pub grantable_scopes: ScopeSet,
    /// Whether a token may cover every organization (`*`).
    pub allow_all_orgs: bool,
    /// Whether a token may hold every scope.
    pub allow_full: bool,
}

/// A token that breaks a policy; the message names the policy's key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy.max_lifespan: tokens may live at most {}", short(*.max))]
    Lifespan { max: Duration },
    #[error("policy.grantable_scopes: {denied} may only be granted with tokens:admin (grantable: {grantable})")]
    NotGrantable { denied: ScopeSet, grantable: ScopeSet },
    #[error("policy.allow_all_orgs: a token must list its organizations; \"*\" is not allowed")]
    AllOrgs,
    #[error("policy.allow_full: a token may not hold every scope")]
    Full,
}

/// A duration in its largest whole unit: `365d`, `12h`, `90s`.
fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 86400 && s % 86400 == 0 => format!("{}d", s / 86400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl Policy {
    /// Checks the scopes and organizations of a new token, granted by an admin caller
    /// (`tokens:admin`) or not.
    pub fn check_grant(&self, scopes: ScopeSet, orgs: &Orgs, by_admin: bool) -> Result<(), PolicyError> {
        if !by_admin && !scopes.is_subset_of(self.grantable_scopes) {
            return Err(PolicyError::NotGrantable {
                denied: scopes.without(self.grantable_scopes),
                grantable: self.grantable_scopes,
            });
        }
        if !self.allow_full && scopes.is_full() {
            return Err(PolicyError::Full);
        }
        if !self.allow_all_orgs && *orgs == Orgs::All {
            return Err(PolicyError::AllOrgs);
        }
        Ok(())
    }

    /// Checks a token's life, from `created_at` to `expires_at` (Unix seconds).
    pub fn check_life(&self, created_at: i64, expires_at: i64) -> Result<(), PolicyError> {
        let max = i64::try_from(self.max_lifespan.as_secs()).unwrap_or(i64::MAX);
        if expires_at.saturating_sub(created_at) > max {
            return Err(PolicyError::Lifespan { max: self.max_lifespan });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86400;

    fn policy() -> Policy {
        Policy {
            max_lifespan: Duration::from_secs(365 * DAY),
            default_lifespan: Duration::from_secs(30 * DAY),
            grantable_scopes: crate::admin::tests::all_but_admin(),
            allow_all_orgs: true,
            allow_full: false,
        }
    }

    fn scopes(names: &[&str]) -> ScopeSet {
        ScopeSet::parse(names).unwrap()
    }

    #[test]
    fn grantable_scopes_bind_only_callers_without_admin() {
        let p = policy();
        let acme = Orgs::parse("acme").unwrap();
        assert_eq!(p.check_grant(scopes(&["code:write", "tokens:manage"]), &acme, false), Ok(()));
        let e = p.check_grant(scopes(&["code:read", "tokens:admin"]), &acme, false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("policy.grantable_scopes: tokens:admin may only be granted with tokens:admin"),
            "{e}"
        );
        assert_eq!(p.check_grant(scopes(&["tokens:admin"]), &acme, true), Ok(()));
        let narrow = Policy {
            grantable_scopes: scopes(&["code:write"]),
            ..policy()
        };
        let e = narrow.check_grant(scopes(&["code:manage"]), &acme, false).unwrap_err();
        assert_eq!(
            e,
            PolicyError::NotGrantable {
                denied: scopes(&["code:manage"]).without(scopes(&["code:write"])),
                grantable: scopes(&["code:write"]),
            }
        );
        assert!(e.to_string().contains("code:manage may only"), "{e}");
    }

    #[test]
    fn full_and_all_orgs_bind_admins_too() {
        let p = policy();
        assert_eq!(p.check_grant(ScopeSet::full(), &Orgs::All, true), Err(PolicyError::Full));
        assert_eq!(PolicyError::Full.to_string(), "policy.allow_full: a token may not hold every scope");
        let open = Policy {
            allow_full: true,
            ..policy()
        };
        assert_eq!(open.check_grant(ScopeSet::full(), &Orgs::All, true), Ok(()));
        let closed = Policy {
            allow_all_orgs: false,
            ..policy()
        };
        assert_eq!(
            closed.check_grant(scopes(&["code:read"]), &Orgs::All, true),
            Err(PolicyError::AllOrgs)
        );
        assert!(PolicyError::AllOrgs.to_string().starts_with("policy.allow_all_orgs: "));
        assert_eq!(closed.check_grant(scopes(&["code:read"]), &Orgs::parse("a").unwrap(), true), Ok(()));
    }

    #[test]
    fn life_is_measured_from_creation() {
        let p = policy();
        let max = 365 * DAY as i64;
        assert_eq!(p.check_life(100, 100 + max), Ok(()));
        let e = p.check_life(100, 101 + max).unwrap_err();
        assert_eq!(e.to_string(), "policy.max_lifespan: tokens may live at most 365d");
        assert!(p.check_life(i64::MIN, i64::MAX).is_err());
    }

    #[test]
    fn durations_print_in_their_largest_whole_unit() {
        assert_eq!(short(Duration::from_secs(365 * DAY)), "365d");
        assert_eq!(short(Duration::from_secs(36 * 3600)), "36h");
        assert_eq!(short(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(short(Duration::from_secs(59)), "59s");
        assert_eq!(short(Duration::from_secs(0)), "0s");
    }
}
