//! Scopes: the one table of every scope patgate knows, what each implies, and the
//! [`ScopeSet`] bitset a token carries in memory. A check is one AND.
//!
//! Scopes follow Azure DevOps. Within a family, `manage` implies `write` implies `read`
//! (and `tokens:admin` implies `tokens:manage`); `full` is every scope.

use std::fmt;

/// One scope, as a bit index into [`ScopeSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Scope(u8);

/// The area of the product a scope belongs to, as Azure DevOps groups them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Area {
    Code,
    AgentPools,
    AuditLog,
    AuditStreams,
    Tokens,
}

impl Area {
    /// The area's name, as a person reads it: `Code`, `Agent pools`...
    pub fn title(self) -> &'static str {
        match self {
            Area::Code => "Code",
            Area::AgentPools => "Agent pools",
            Area::AuditLog => "Audit log",
            Area::AuditStreams => "Audit streams",
            Area::Tokens => "Tokens",
        }
    }
}

struct ScopeDef {
    name: &'static str,
    area: Area,
    /// Scopes this one grants besides itself (direct implications; the closure is taken).
    implies: &'static [&'static str],
    summary: &'static str,
}

/// The single source of truth for scopes. The position in this table is the bit.
const TABLE: &[ScopeDef] = &[
    ScopeDef {
        name: "code:read",
        area: Area::Code,
        implies: &[],
        summary: "clone and fetch repositories",
    },
    ScopeDef {
        name: "code:write",
        area: Area::Code,
        implies: &["code:read"],
        summary: "push to repositories",
    },
    ScopeDef {
        name: "code:manage",
        area: Area::Code,
        implies: &["code:write"],
        summary: "create, delete and administer repositories",
    },
    ScopeDef {
        name: "agentpools:read",
        area: Area::AgentPools,
        implies: &[],
        summary: "read agent pools and agents",
    },
    ScopeDef {
        name: "agentpools:manage",
        area: Area::AgentPools,
        implies: &["agentpools:read"],
        summary: "register agents and manage pools",
    },
    ScopeDef {
        name: "auditlog:read",
        area: Area::AuditLog,
        implies: &[],
        summary: "read the audit log",
    },
    ScopeDef {
        name: "auditstreams:manage",
        area: Area::AuditStreams,
        implies: &[],
        summary: "manage audit streams",
    },
    ScopeDef {
        name: "tokens:read",
        area: Area::Tokens,
        implies: &[],
        summary: "list and read one's own tokens",
    },
    ScopeDef {
        name: "tokens:manage",
        area: Area::Tokens,
        implies: &["tokens:read"],
        summary: "create, change and revoke one's own tokens",
    },
    ScopeDef {
        name: "tokens:admin",
        area: Area::Tokens,
        implies: &["tokens:manage"],
        summary: "manage every owner's tokens",
    },
];

/// The name that stands for every scope.
pub const FULL: &str = "full";

impl Scope {
    /// `code:read`, named for the built-in git preset (position 0 of the table; tested).
    pub const CODE_READ: Scope = Scope(0);
    /// `code:write`, named for the built-in git preset (position 1 of the table; tested).
    pub const CODE_WRITE: Scope = Scope(1);

    /// Looks a scope up by its name (`code:read`). `full` is not a single scope: see
    /// [`ScopeSet::parse`].
    pub fn from_name(name: &str) -> Option<Scope> {
        TABLE.iter().position(|d| d.name == name).map(|i| Scope(i as u8))
    }

    /// The scope's name.
    pub fn name(self) -> &'static str {
        TABLE[self.0 as usize].name
    }

    /// The area it belongs to.
    pub fn area(self) -> Area {
        TABLE[self.0 as usize].area
    }

    /// What the scope allows, in a few words.
    pub fn summary(self) -> &'static str {
        TABLE[self.0 as usize].summary
    }

    /// Every scope, in table order.
    pub fn all() -> impl Iterator<Item = Scope> {
        (0..TABLE.len() as u8).map(Scope)
    }

    const fn bit(self) -> u16 {
        1 << self.0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of granted scopes with their implications already applied.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet(u16);

/// A scope name that is not in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{0}` (known: full, {known})", known = known_names())]
pub struct UnknownScope(pub String);

fn known_names() -> String {
    TABLE.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
}

impl ScopeSet {
    /// No scope at all.
    pub const EMPTY: ScopeSet = ScopeSet(0);

    /// Every scope.
    pub fn full() -> ScopeSet {
        ScopeSet(((1u32 << TABLE.len()) - 1) as u16)
    }

    /// Grants `scope` and everything it implies.
    pub fn grant(&mut self, scope: Scope) {
        if self.0 & scope.bit() != 0 {
            return;
        }
        self.0 |= scope.bit();
        for implied in TABLE[scope.0 as usize].implies {
            let s = Scope::from_name(implied).expect("scope table implies a scope it lacks");
            self.grant(s);
        }
    }

    /// Parses names such as `["code:read", "agentpools:manage"]`; `full` grants all.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<ScopeSet, UnknownScope> {
        let mut set = ScopeSet::EMPTY;
        for name in names {
            let name = name.as_ref().trim();
            if name == FULL {
                set = ScopeSet::full();
                continue;
            }
            let scope = Scope::from_name(name).ok_or_else(|| UnknownScope(name.to_owned()))?;
            set.grant(scope);
        }
        Ok(set)
    }

    /// True when the set allows `scope`: one AND.
    #[inline]
    pub fn allows(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// True when every scope of `self` is also in `other`.
    pub fn is_subset_of(self, other: ScopeSet) -> bool {
        self.0 & !other.0 == 0
    }

    /// The scopes of `self` that are not in `other`.
    pub fn without(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & !other.0)
    }

    /// True when no scope is granted.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every scope is granted.
    pub fn is_full(self) -> bool {
        self == ScopeSet::full()
    }

    /// The shortest list of names that grants exactly this set (`full` when it is all),
    /// omitting scopes implied by others in the list.
    pub fn names(self) -> Vec<&'static str> {
        if self.is_full() {
            return vec![FULL];
        }
        let mut out = Vec::new();
        for s in Scope::all().filter(|&s| self.allows(s)) {
            let implied_by_other = Scope::all().any(|o| {
                o != s && self.allows(o) && {
                    let mut only = ScopeSet::EMPTY;
                    only.grant(o);
                    only.allows(s)
                }
            });
            if !implied_by_other {
                out.push(s.name());
            }
        }
        out
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> ScopeSet {
        ScopeSet::parse(names).unwrap()
    }

    fn s(name: &str) -> Scope {
        Scope::from_name(name).unwrap()
    }

    #[test]
    fn the_table_fits_the_bitset_and_names_are_unique() {
        assert!(TABLE.len() <= 16);
        for (i, d) in TABLE.iter().enumerate() {
            assert_eq!(Scope::from_name(d.name), Some(Scope(i as u8)));
            for imp in d.implies {
                assert!(Scope::from_name(imp).is_some(), "{} implies unknown {imp}", d.name);
            }
        }
    }

    #[test]
    fn named_constants_match_the_table() {
        assert_eq!(Scope::CODE_READ.name(), "code:read");
        assert_eq!(Scope::CODE_WRITE.name(), "code:write");
    }

    #[test]
    fn manage_implies_write_implies_read() {
        let m = set(&["code:manage"]);
        assert!(m.allows(s("code:read")) && m.allows(s("code:write")) && m.allows(s("code:manage")));
        let w = set(&["code:write"]);
        assert!(w.allows(s("code:read")) && w.allows(s("code:write")));
        assert!(!w.allows(s("code:manage")));
        let r = set(&["code:read"]);
        assert!(r.allows(s("code:read")) && !r.allows(s("code:write")));
        let a = set(&["agentpools:manage"]);
        assert!(a.allows(s("agentpools:read")));
        let t = set(&["tokens:admin"]);
        assert!(t.allows(s("tokens:manage")) && t.allows(s("tokens:read")));
    }

    #[test]
    fn implication_never_crosses_families() {
        let m = set(&["code:manage", "tokens:admin", "agentpools:manage"]);
        assert!(!m.allows(s("auditlog:read")));
        assert!(!m.allows(s("auditstreams:manage")));
        let r = set(&["auditstreams:manage"]);
        assert!(!r.allows(s("auditlog:read")));
    }

    #[test]
    fn full_is_everything() {
        let f = set(&["full"]);
        assert!(Scope::all().all(|x| f.allows(x)));
        assert_eq!(f.names(), vec!["full"]);
        assert_eq!(set(&[]).names(), Vec::<&str>::new());
    }

    #[test]
    fn unknown_scopes_are_named() {
        let e = ScopeSet::parse(&["code:read", "code:delete"]).unwrap_err();
        assert_eq!(e.0, "code:delete");
        assert!(e.to_string().contains("code:delete"));
    }

    #[test]
    fn names_round_trip_to_the_minimal_list() {
        let x = set(&["code:read", "code:write", "agentpools:read", "tokens:manage"]);
        assert_eq!(x.names(), vec!["code:write", "agentpools:read", "tokens:manage"]);
        assert_eq!(ScopeSet::parse(&x.names()).unwrap(), x);
    }
}
