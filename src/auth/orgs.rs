//! The organizations a token covers: `*` for all, or a list of names compared exactly.
//! A leaf of the auth layer: the store and the in-memory copy read it without importing
//! the rest of [`crate::auth`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// The organizations a token covers. In JSON: `"*"` or a list of names.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Orgs {
    /// Every organization (`*`).
    All,
    /// Only these.
    List(Vec<String>),
}

impl Serialize for Orgs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Orgs::All => s.serialize_str("*"),
            Orgs::List(l) => l.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Orgs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let names = match Raw::deserialize(d)? {
            Raw::One(s) => vec![s],
            Raw::Many(v) => v,
        };
        Orgs::from_names(&names).map_err(serde::de::Error::custom)
    }
}

/// An organization name that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid organization `{0}`: use 1 to 100 of A-Z a-z 0-9 . _ - (not starting with '.'), or '*' alone for all")]
pub struct InvalidOrg(pub String);

impl Orgs {
    /// Parses a comma-separated list, or `*` for all.
    pub fn parse(list: &str) -> Result<Orgs, InvalidOrg> {
        let items: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        Orgs::from_names(&items)
    }

    /// Builds from names; `["*"]` is all.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Orgs, InvalidOrg> {
        if names.len() == 1 && names[0].as_ref() == "*" {
            return Ok(Orgs::All);
        }
        if names.is_empty() {
            return Err(InvalidOrg(String::new()));
        }
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            let n = n.as_ref();
            let ok = (1..=100).contains(&n.len())
                && !n.starts_with('.')
                && n.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
            if !ok {
                return Err(InvalidOrg(n.to_owned()));
            }
            if !out.iter().any(|o| o == n) {
                out.push(n.to_owned());
            }
        }
        Ok(Orgs::List(out))
    }

    /// True when every organization `self` covers is covered by `other`.
    pub fn is_subset_of(&self, other: &Orgs) -> bool {
        match (self, other) {
            (_, Orgs::All) => true,
            (Orgs::All, Orgs::List(_)) => false,
            (Orgs::List(mine), Orgs::List(_)) => mine.iter().all(|o| other.covers(o)),
        }
    }

    /// True when `org` is covered. Names compare exactly: the upstream is case-sensitive.
    pub fn covers(&self, org: &str) -> bool {
        match self {
            Orgs::All => true,
            Orgs::List(list) => list.iter().any(|o| o == org),
        }
    }
}

impl fmt::Debug for Orgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Orgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Orgs::All => f.write_str("*"),
            Orgs::List(l) => f.write_str(&l.join(",")),
        }
    }
}
