//! Token policy: what a token made or changed through the admin API may be (`[policy]`).
//! Pure checks, no I/O. The CLI working on the store directly is not held to it: it mints
//! the first admin token.
//!
//! Callers with `tokens:admin` are exempt from `grantable_scopes` only. Callers without it
//! grant no more than their own token holds (least privilege): scopes, organizations,
//! repositories and address ranges.

use std::time::Duration;

use crate::auth::restrictions::{AllowFrom, Repos};
use crate::auth::scope::ScopeSet;
use crate::auth::Orgs;
use crate::store::token_cache::CachedToken;
use crate::store::TokenRecord;

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
    /// How long after a rotation its old secret is refused without counting as reuse.
    pub rotation_grace: Duration,
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
    #[error("{field}: the calling token does not hold {what}; without tokens:admin a token grants no more than it holds")]
    Exceeds { field: &'static str, what: String },
}

/// What a token grants: scopes, organizations, repositories, address ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub scopes: ScopeSet,
    pub orgs: Orgs,
    pub repos: Repos,
    pub allow_from: AllowFrom,
}

impl Grant {
    /// What a stored token grants.
    pub fn of(record: &TokenRecord) -> Grant {
        Grant {
            scopes: record.scopes,
            orgs: record.orgs.clone(),
            repos: record.repos.clone(),
            allow_from: record.allow_from.clone(),
        }
    }

    /// What a token held in memory grants.
    pub fn of_cached(token: &CachedToken) -> Grant {
        let (repos, allow_from) = match &token.limits {
            Some(l) => (l.repos.clone(), l.allow_from.clone()),
            None => (Repos::All, AllowFrom::Anywhere),
        };
        Grant {
            scopes: token.scopes,
            orgs: Orgs::clone(&token.orgs),
            repos,
            allow_from,
        }
    }

    /// `Exceeds` naming the first part of `self` that `holder` does not hold.
    fn within(&self, holder: &Grant) -> Result<(), PolicyError> {
        if !self.scopes.is_subset_of(holder.scopes) {
            return Err(PolicyError::Exceeds {
                field: "scopes",
                what: self.scopes.without(holder.scopes).to_string(),
            });
        }
        if !self.orgs.is_subset_of(&holder.orgs) {
            let what = match &self.orgs {
                Orgs::All => "every organization (*)".to_owned(),
                Orgs::List(l) => l.iter().filter(|o| !holder.orgs.covers(o)).cloned().collect::<Vec<_>>().join(","),
            };
            return Err(PolicyError::Exceeds {
                field: "orgs",
                what: format!("organization {what}"),
            });
        }
        if !self.repos.is_subset_of(&holder.repos) {
            return Err(PolicyError::Exceeds {
                field: "repos",
                what: format!("repositories {} (it holds {})", self.repos, holder.repos),
            });
        }
        if !self.allow_from.is_subset_of(&holder.allow_from) {
            return Err(PolicyError::Exceeds {
                field: "allow_from",
                what: format!("address ranges {} (it holds {})", self.allow_from, holder.allow_from),
            });
        }
        Ok(())
    }
}

/// Who grants a token: an admin (`tokens:admin`), held to the policy alone, or a token
/// holder, held to the policy and to what its own token grants.
#[derive(Debug, Clone, Copy)]
pub enum Grantor<'a> {
    Admin,
    Holder(&'a Grant),
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
    /// Checks what a token made, changed, regenerated or rotated by `by` grants.
    pub fn check_grant(&self, grant: &Grant, by: Grantor<'_>) -> Result<(), PolicyError> {
        let (scopes, orgs) = (grant.scopes, &grant.orgs);
        let by_admin = matches!(by, Grantor::Admin);
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
        match by {
            Grantor::Admin => Ok(()),
            Grantor::Holder(holder) => grant.within(holder),
        }
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
            rotation_grace: Duration::from_secs(10),
        }
    }

    /// Checks a grant of `scopes` to `orgs` by an admin, or by a holder of everything.
    fn check(p: &Policy, scopes: ScopeSet, orgs: &Orgs, admin: bool) -> Result<(), PolicyError> {
        let grant = Grant {
            scopes,
            orgs: orgs.clone(),
            repos: Repos::All,
            allow_from: AllowFrom::Anywhere,
        };
        let everything = Grant {
            scopes: ScopeSet::full(),
            ..grant.clone()
        };
        let everything = Grant {
            orgs: Orgs::All,
            ..everything
        };
        p.check_grant(&grant, if admin { Grantor::Admin } else { Grantor::Holder(&everything) })
    }

    fn scopes(names: &[&str]) -> ScopeSet {
        ScopeSet::parse(names).unwrap()
    }

    #[test]
    fn grantable_scopes_bind_only_callers_without_admin() {
        let p = policy();
        let acme = Orgs::parse("acme").unwrap();
        assert_eq!(check(&p, scopes(&["code:write", "tokens:manage"]), &acme, false), Ok(()));
        let e = check(&p, scopes(&["code:read", "tokens:admin"]), &acme, false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("policy.grantable_scopes: tokens:admin may only be granted with tokens:admin"),
            "{e}"
        );
        assert_eq!(check(&p, scopes(&["tokens:admin"]), &acme, true), Ok(()));
        let narrow = Policy {
            grantable_scopes: scopes(&["code:write"]),
            ..policy()
        };
        let e = check(&narrow, scopes(&["code:manage"]), &acme, false).unwrap_err();
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
        assert_eq!(check(&p, ScopeSet::full(), &Orgs::All, true), Err(PolicyError::Full));
        assert_eq!(PolicyError::Full.to_string(), "policy.allow_full: a token may not hold every scope");
        let open = Policy {
            allow_full: true,
            ..policy()
        };
        assert_eq!(check(&open, ScopeSet::full(), &Orgs::All, true), Ok(()));
        let closed = Policy {
            allow_all_orgs: false,
            ..policy()
        };
        assert_eq!(check(&closed, scopes(&["code:read"]), &Orgs::All, true), Err(PolicyError::AllOrgs));
        assert!(PolicyError::AllOrgs.to_string().starts_with("policy.allow_all_orgs: "));
        assert_eq!(check(&closed, scopes(&["code:read"]), &Orgs::parse("a").unwrap(), true), Ok(()));
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
    fn a_holder_grants_no_more_than_it_holds() {
        let p = Policy {
            allow_full: true,
            ..policy()
        };
        let holder = Grant {
            scopes: scopes(&["code:write", "tokens:manage"]),
            orgs: Orgs::parse("acme,beta").unwrap(),
            repos: Repos::parse("acme/infra-*,beta/*").unwrap(),
            allow_from: AllowFrom::parse("10.0.0.0/8").unwrap(),
        };
        let by = Grantor::Holder(&holder);
        let ok = Grant {
            scopes: scopes(&["code:read"]),
            orgs: Orgs::parse("acme").unwrap(),
            repos: Repos::parse("acme/infra-net").unwrap(),
            allow_from: AllowFrom::parse("10.1.0.0/16").unwrap(),
        };
        assert_eq!(p.check_grant(&ok, by), Ok(()));
        assert_eq!(p.check_grant(&holder, by), Ok(()), "all it holds");
        let cases = [
            (
                Grant {
                    scopes: scopes(&["code:manage"]),
                    ..ok.clone()
                },
                "scopes: the calling token does not hold code:manage;",
            ),
            (
                Grant {
                    orgs: Orgs::parse("acme,gamma").unwrap(),
                    ..ok.clone()
                },
                "orgs: the calling token does not hold organization gamma;",
            ),
            (
                Grant {
                    orgs: Orgs::All,
                    ..ok.clone()
                },
                "orgs: the calling token does not hold organization every organization (*);",
            ),
            (
                Grant {
                    repos: Repos::All,
                    ..ok.clone()
                },
                "repos: the calling token does not hold repositories * (it holds acme/infra-*,beta/*);",
            ),
            (
                Grant {
                    repos: Repos::parse("acme/*").unwrap(),
                    ..ok.clone()
                },
                "repos: ",
            ),
            (
                Grant {
                    allow_from: AllowFrom::Anywhere,
                    ..ok.clone()
                },
                "allow_from: the calling token does not hold address ranges * (it holds 10.0.0.0/8);",
            ),
            (
                Grant {
                    allow_from: AllowFrom::parse("11.0.0.0/8").unwrap(),
                    ..ok.clone()
                },
                "allow_from: ",
            ),
        ];
        for (grant, message) in cases {
            let e = p.check_grant(&grant, by).unwrap_err();
            assert!(e.to_string().starts_with(message), "{e}");
        }
        // An admin is held to the policy alone.
        assert_eq!(
            p.check_grant(
                &Grant {
                    scopes: ScopeSet::full(),
                    orgs: Orgs::All,
                    repos: Repos::All,
                    allow_from: AllowFrom::Anywhere
                },
                Grantor::Admin
            ),
            Ok(())
        );
    }

    #[test]
    fn durations_print_in_their_largest_whole_unit() {
        assert_eq!(short(Duration::from_secs(365 * DAY)), "365d");
        assert_eq!(short(Duration::from_secs(36 * 3600)), "36h");
        assert_eq!(short(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(short(Duration::from_secs(59)), "59s");
        assert_eq!(short(Duration::from_secs(0)), "0s");
    }

    fn scope_set() -> impl proptest::strategy::Strategy<Value = ScopeSet> {
        use proptest::prelude::*;
        let all: Vec<&'static str> = crate::auth::scope::Scope::all().map(|s| s.name()).collect();
        proptest::sample::subsequence(all, 0..=4).prop_map(|names| ScopeSet::parse(&names).unwrap_or_default())
    }

    fn org_set() -> impl proptest::strategy::Strategy<Value = Orgs> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Orgs::All),
            proptest::sample::subsequence(vec!["a", "b", "c", "d"], 1..=3).prop_map(|o| Orgs::from_names(&o).unwrap()),
        ]
    }

    proptest::proptest! {
        /// Whatever a holder asks for, what the policy lets it grant is within what it holds.
        #[test]
        fn a_minted_token_never_exceeds_its_minter(
            held_scopes in scope_set(), held_orgs in org_set(),
            want_scopes in scope_set(), want_orgs in org_set(),
            held_net in 0u8..=3, want_net in 0u8..=3,
        ) {
            let net = |n: u8| match n {
                0 => AllowFrom::Anywhere,
                1 => AllowFrom::parse("10.0.0.0/8").unwrap(),
                2 => AllowFrom::parse("10.1.0.0/16").unwrap(),
                _ => AllowFrom::parse("192.0.2.0/24").unwrap(),
            };
            let p = Policy { allow_full: true, grantable_scopes: ScopeSet::full(), ..policy() };
            let holder = Grant { scopes: held_scopes, orgs: held_orgs, repos: Repos::All, allow_from: net(held_net) };
            let want = Grant { scopes: want_scopes, orgs: want_orgs, repos: Repos::All, allow_from: net(want_net) };
            if p.check_grant(&want, Grantor::Holder(&holder)).is_ok() {
                proptest::prop_assert!(want.scopes.is_subset_of(holder.scopes));
                proptest::prop_assert!(want.orgs.is_subset_of(&holder.orgs));
                proptest::prop_assert!(want.allow_from.is_subset_of(&holder.allow_from));
                for s in crate::auth::scope::Scope::all() {
                    proptest::prop_assert!(!want.scopes.allows(s) || holder.scopes.allows(s), "{s}");
                }
                for o in ["a", "b", "c", "d", "zz"] {
                    proptest::prop_assert!(!want.orgs.covers(o) || holder.orgs.covers(o), "{o}");
                }
            } else {
                // Refused only when it asks for more than is held.
                proptest::prop_assert!(!(want.scopes.is_subset_of(holder.scopes) && want.orgs.is_subset_of(&holder.orgs) && want.allow_from.is_subset_of(&holder.allow_from)));
            }
        }
    }
}
