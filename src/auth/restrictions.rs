//! What narrows a token beyond its scopes and organizations: the repositories it may
//! reach ([`Repos`]) and the client addresses it may be used from ([`AllowFrom`]). Pure:
//! parsing, matching and the subset checks that keep a change or a minted token from
//! widening what its maker holds. No I/O.
//!
//! In JSON and in the store, `"*"` is "no restriction" for both, as for organizations.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The most repository patterns, or address ranges, one token may carry.
pub const MAX_ENTRIES: usize = 64;
/// The most `*` in one repository pattern: enough for `infra-*-prod*`, few enough that a
/// match stays linear in practice.
pub const MAX_STARS: usize = 4;

/// The repositories a token may reach.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub enum Repos {
    /// Every repository of its organizations (`*`).
    #[default]
    All,
    /// Only those these patterns match.
    List(Vec<RepoPattern>),
}

/// `ORG/NAME`, where `NAME` may hold `*` (any run of characters within the name). A
/// trailing `.git` of the name is not part of it: `acme/app` and `acme/app.git` are the
/// same repository, as git servers serve both.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RepoPattern {
    org: Box<str>,
    name: Box<str>,
}

/// A repository pattern or address range that cannot be used; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestrictionError {
    #[error("invalid repository pattern `{0}`: write ORG/NAME with 1 to 100 of A-Z a-z 0-9 . _ - in each (not starting with '.'), `*` in NAME for any characters (at most {MAX_STARS}), or '*' alone for all")]
    BadRepo(String),
    #[error(
        "invalid address range `{0}`: write an IP address or a network such as 10.0.0.0/8 or 2001:db8::/32, or '*' alone for anywhere"
    )]
    BadRange(String),
    #[error("the address range `{given}` has bits set past its prefix; the network is {network}")]
    HostBits { given: String, network: String },
    #[error("more than {MAX_ENTRIES} entries")]
    TooMany,
    #[error("an empty list: give at least one entry, or '*' for no restriction")]
    Empty,
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')
}

/// The name without one trailing `.git`.
fn without_git(name: &str) -> &str {
    match name.strip_suffix(".git") {
        Some(n) if !n.is_empty() => n,
        _ => name,
    }
}

/// Whether `pattern` (where `*` is any run of bytes, empty too) matches all of `text`.
/// Greedy with one backtrack point: O(len(pattern) × len(text)) at worst, linear in the
/// usual case. A `*` in `text` is matched only by a `*` of `pattern`, which is what makes
/// [`RepoPattern::covers`] a containment test.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl RepoPattern {
    /// Parses `ORG/NAME`.
    pub fn parse(text: &str) -> Result<RepoPattern, RestrictionError> {
        let bad = || RestrictionError::BadRepo(text.to_owned());
        let (org, name) = text.split_once('/').ok_or_else(bad)?;
        let org_ok = (1..=100).contains(&org.len()) && !org.starts_with('.') && org.bytes().all(is_name_char);
        let name = without_git(name);
        let name_ok = (1..=100).contains(&name.len())
            && !name.starts_with('.')
            && name.bytes().all(|c| is_name_char(c) || c == b'*')
            && name.bytes().filter(|&c| c == b'*').count() <= MAX_STARS;
        if !org_ok || !name_ok {
            return Err(bad());
        }
        Ok(RepoPattern {
            org: org.into(),
            name: name.into(),
        })
    }

    /// Whether the repository `repo` (a path segment, as normalized) of `org` matches.
    /// Names compare exactly, as organizations do: the upstream is case-sensitive, and a
    /// differently cased name is refused, never let through.
    pub fn matches(&self, org: &str, repo: &str) -> bool {
        *self.org == *org && glob(self.name.as_bytes(), without_git(repo).as_bytes())
    }

    /// Whether every repository `other` matches is matched by `self` too.
    pub fn covers(&self, other: &RepoPattern) -> bool {
        self.org == other.org && glob(self.name.as_bytes(), other.name.as_bytes())
    }

    /// The organization.
    pub fn org(&self) -> &str {
        &self.org
    }
}

impl fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A name that itself ends in `.git` is written with the `.git` it was read
        // without, so that the text reads back to the same pattern.
        let again = if self.name.ends_with(".git") { ".git" } else { "" };
        write!(f, "{}/{}{again}", self.org, self.name)
    }
}

impl fmt::Debug for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Reads `*` (the whole), or a list, from a comma-separated string.
fn split_list(list: &str) -> Vec<&str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

impl Repos {
    /// Parses a comma-separated list, or `*` for all.
    pub fn parse(list: &str) -> Result<Repos, RestrictionError> {
        Repos::from_names(&split_list(list))
    }

    /// Builds from patterns; `["*"]` is all.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Repos, RestrictionError> {
        if names.len() == 1 && names[0].as_ref() == "*" {
            return Ok(Repos::All);
        }
        if names.is_empty() {
            return Err(RestrictionError::Empty);
        }
        if names.len() > MAX_ENTRIES {
            return Err(RestrictionError::TooMany);
        }
        let mut out: Vec<RepoPattern> = Vec::with_capacity(names.len());
        for n in names {
            let p = RepoPattern::parse(n.as_ref())?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Ok(Repos::List(out))
    }

    /// True when there is no restriction.
    pub fn is_all(&self) -> bool {
        matches!(self, Repos::All)
    }

    /// Whether repository `repo` of `org` may be reached.
    pub fn admits(&self, org: &str, repo: &str) -> bool {
        match self {
            Repos::All => true,
            Repos::List(l) => l.iter().any(|p| p.matches(org, repo)),
        }
    }

    /// True when every repository `self` reaches is reached by `other`.
    pub fn is_subset_of(&self, other: &Repos) -> bool {
        match (self, other) {
            (_, Repos::All) => true,
            (Repos::All, Repos::List(_)) => false,
            (Repos::List(mine), Repos::List(theirs)) => mine.iter().all(|m| theirs.iter().any(|t| t.covers(m))),
        }
    }

    /// Those of the patterns whose organization `covers` accepts; all of them if none
    /// does (so that the check that follows names one that is outside).
    pub fn within(&self, covers: impl Fn(&str) -> bool) -> Repos {
        match self {
            Repos::All => Repos::All,
            Repos::List(l) => {
                let kept: Vec<RepoPattern> = l.iter().filter(|p| covers(p.org())).cloned().collect();
                Repos::List(if kept.is_empty() { l.clone() } else { kept })
            }
        }
    }

    /// The patterns whose organization `covers` refuses: a pattern must lie within the
    /// token's organizations.
    pub fn outside<'a>(&'a self, covers: impl Fn(&str) -> bool + 'a) -> impl Iterator<Item = &'a RepoPattern> + 'a {
        let list: &[RepoPattern] = match self {
            Repos::All => &[],
            Repos::List(l) => l,
        };
        list.iter().filter(move |p| !covers(p.org()))
    }
}

impl fmt::Display for Repos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repos::All => f.write_str("*"),
            Repos::List(l) => {
                for (i, p) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    fmt::Display::fmt(p, f)?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Repos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The client addresses a token may be used from.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub enum AllowFrom {
    /// Anywhere (`*`).
    #[default]
    Anywhere,
    /// Only from these networks.
    Ranges(Vec<IpNet>),
}

/// Parses one range: an address (a network of one) or `ADDRESS/PREFIX` without host bits.
fn parse_range(text: &str) -> Result<IpNet, RestrictionError> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip.to_canonical()),
            Err(_) => return Err(RestrictionError::BadRange(text.to_owned())),
        },
    };
    if net.trunc() != net {
        return Err(RestrictionError::HostBits {
            given: text.to_owned(),
            network: net.trunc().to_string(),
        });
    }
    Ok(net)
}

impl AllowFrom {
    /// Parses a comma-separated list, or `*` for anywhere.
    pub fn parse(list: &str) -> Result<AllowFrom, RestrictionError> {
        AllowFrom::from_names(&split_list(list))
    }

    /// Builds from ranges; `["*"]` is anywhere.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<AllowFrom, RestrictionError> {
        if names.len() == 1 && names[0].as_ref() == "*" {
            return Ok(AllowFrom::Anywhere);
        }
        if names.is_empty() {
            return Err(RestrictionError::Empty);
        }
        if names.len() > MAX_ENTRIES {
            return Err(RestrictionError::TooMany);
        }
        let mut out: Vec<IpNet> = Vec::with_capacity(names.len());
        for n in names {
            let net = parse_range(n.as_ref().trim())?;
            if !out.contains(&net) {
                out.push(net);
            }
        }
        Ok(AllowFrom::Ranges(out))
    }

    /// True when there is no restriction.
    pub fn is_anywhere(&self) -> bool {
        matches!(self, AllowFrom::Anywhere)
    }

    /// Whether a request from `client` may use the token. An IPv4-mapped IPv6 address is
    /// judged as its IPv4 address.
    pub fn admits(&self, client: IpAddr) -> bool {
        match self {
            AllowFrom::Anywhere => true,
            AllowFrom::Ranges(nets) => {
                let ip = client.to_canonical();
                nets.iter().any(|n| n.contains(&ip))
            }
        }
    }

    /// True when every address `self` admits is admitted by `other`.
    pub fn is_subset_of(&self, other: &AllowFrom) -> bool {
        match (self, other) {
            (_, AllowFrom::Anywhere) => true,
            (AllowFrom::Anywhere, AllowFrom::Ranges(_)) => false,
            (AllowFrom::Ranges(mine), AllowFrom::Ranges(theirs)) => mine.iter().all(|m| theirs.iter().any(|t| t.contains(m))),
        }
    }
}

impl fmt::Display for AllowFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowFrom::Anywhere => f.write_str("*"),
            AllowFrom::Ranges(l) => {
                for (i, n) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    fmt::Display::fmt(n, f)?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for AllowFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `"*"` or a list of strings, as organizations are written.
#[derive(Deserialize)]
#[serde(untagged)]
enum StarOrList {
    One(String),
    Many(Vec<String>),
}

impl StarOrList {
    fn names(self) -> Vec<String> {
        match self {
            StarOrList::One(s) => vec![s],
            StarOrList::Many(v) => v,
        }
    }
}

macro_rules! star_or_list_serde {
    ($t:ty, $all:path, $list:path) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $all => s.serialize_str("*"),
                    $list(l) => s.collect_seq(l.iter().map(|x| x.to_string())),
                }
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let names = StarOrList::deserialize(d)?.names();
                <$t>::from_names(&names).map_err(serde::de::Error::custom)
            }
        }
    };
}

star_or_list_serde!(Repos, Repos::All, Repos::List);
star_or_list_serde!(AllowFrom, AllowFrom::Anywhere, AllowFrom::Ranges);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn repos(s: &str) -> Repos {
        Repos::parse(s).unwrap()
    }

    #[test]
    fn repository_patterns_match_exactly_and_ignore_dot_git() {
        let r = repos("acme/infra-*,acme/app.git");
        assert!(r.admits("acme", "infra-net"));
        assert!(r.admits("acme", "infra-net.git"));
        assert!(r.admits("acme", "infra-"));
        assert!(r.admits("acme", "app") && r.admits("acme", "app.git"));
        assert!(!r.admits("acme", "App"), "case counts");
        assert!(!r.admits("acme", "INFRA-net"));
        assert!(!r.admits("Acme", "app"));
        assert!(!r.admits("other", "app"));
        assert!(!r.admits("acme", "app2"));
        assert!(!r.admits("acme", "xinfra-net"));
        // An escape the normalizer kept is only ever matched by `*`.
        assert!(!r.admits("acme", "a%70p"));
        assert!(r.admits("acme", "infra-%C3%A9"));
        assert!(Repos::All.admits("x", "y"));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_pattern_named() {
        for bad in [
            "app",
            "/app",
            "acme/",
            "acme/.git",
            "acme/.hidden",
            "*/app",
            "ac*me/app",
            "acme/a/b",
            "acme/..",
            "acme/a%2fb",
            "acme/a b",
            "acme/*a*b*c*d*",
        ] {
            let e = Repos::parse(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("`{bad}`")), "{bad}: {e}");
        }
        assert_eq!(Repos::parse(""), Err(RestrictionError::Empty));
        assert_eq!(Repos::parse("*").unwrap(), Repos::All);
        assert!(Repos::parse("*,acme/a").is_err());
        let many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("a/r{i}")).collect();
        assert_eq!(Repos::from_names(&many), Err(RestrictionError::TooMany));
        assert_eq!(repos("acme/a, acme/a.git").to_string(), "acme/a");
        // `x.git.git` is the repository `x.git`, not `x`, and prints so.
        let r = repos("acme/x.git.git");
        assert_eq!(r.to_string(), "acme/x.git.git");
        assert_eq!(Repos::parse(&r.to_string()).unwrap(), r);
        assert!(r.admits("acme", "x.git.git") && !r.admits("acme", "x.git") && !r.admits("acme", "x"));
    }

    #[test]
    fn containment_of_patterns() {
        assert!(repos("acme/infra-net").is_subset_of(&repos("acme/infra-*")));
        assert!(repos("acme/infra-n*").is_subset_of(&repos("acme/infra-*")));
        assert!(repos("acme/infra-*").is_subset_of(&repos("acme/*")));
        assert!(!repos("acme/infra-*").is_subset_of(&repos("acme/infra-n*")));
        assert!(!repos("acme/*").is_subset_of(&repos("acme/infra-*")));
        assert!(!repos("acme/a").is_subset_of(&repos("other/a")));
        assert!(repos("acme/a").is_subset_of(&Repos::All));
        assert!(!Repos::All.is_subset_of(&repos("acme/*")));
        let org = |o: &str| o == "acme";
        let r = repos("acme/a,evil/b");
        assert_eq!(r.outside(org).map(|p| p.to_string()).collect::<Vec<_>>(), ["evil/b"]);
    }

    #[test]
    fn address_ranges_admit_their_networks_only() {
        let a = AllowFrom::parse("10.0.0.0/8, 2001:db8::/32, 192.0.2.7").unwrap();
        assert!(a.admits("10.1.2.3".parse().unwrap()));
        assert!(a.admits("::ffff:10.1.2.3".parse().unwrap()), "a mapped address is its IPv4 address");
        assert!(a.admits("2001:db8::1".parse().unwrap()));
        assert!(a.admits("192.0.2.7".parse().unwrap()));
        assert!(!a.admits("192.0.2.8".parse().unwrap()));
        assert!(!a.admits("11.0.0.1".parse().unwrap()));
        assert!(!a.admits("2001:db9::1".parse().unwrap()));
        assert_eq!(a.to_string(), "10.0.0.0/8,2001:db8::/32,192.0.2.7/32");
        let e = AllowFrom::parse("10.0.0.1/8").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the address range `10.0.0.1/8` has bits set past its prefix; the network is 10.0.0.0/8"
        );
        for bad in ["ten", "10.0.0.0/33", "10.0.0.0/", "fe80::1%eth0", "10.0.0.0/8/8", "::/129"] {
            assert!(AllowFrom::parse(bad).is_err(), "{bad}");
        }
        assert!(AllowFrom::parse("*").unwrap().admits("1.2.3.4".parse().unwrap()));
        assert!(AllowFrom::parse("10.2.0.0/16")
            .unwrap()
            .is_subset_of(&AllowFrom::parse("10.0.0.0/8").unwrap()));
        assert!(!AllowFrom::parse("10.0.0.0/8")
            .unwrap()
            .is_subset_of(&AllowFrom::parse("10.2.0.0/16").unwrap()));
        assert!(!AllowFrom::Anywhere.is_subset_of(&AllowFrom::parse("0.0.0.0/0").unwrap()));
    }

    #[test]
    fn json_is_a_star_or_a_list() {
        let r: Repos = serde_json::from_str(r#"["acme/a", "acme/b-*"]"#).unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"["acme/a","acme/b-*"]"#);
        assert_eq!(serde_json::to_string(&Repos::All).unwrap(), r#""*""#);
        let a: AllowFrom = serde_json::from_str(r#""*""#).unwrap();
        assert_eq!(a, AllowFrom::Anywhere);
        assert!(serde_json::from_str::<AllowFrom>(r#"["10.0.0.1/8"]"#).is_err());
        assert!(serde_json::from_str::<Repos>("[]").is_err());
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-c*]{1,6}".prop_filter("at most MAX_STARS stars", |s| s.matches('*').count() <= MAX_STARS)
    }

    proptest! {
        /// Containment is sound: whatever the narrower pattern matches, the wider does.
        #[test]
        fn a_covered_pattern_matches_nothing_its_cover_does_not(wide in name(), narrow in name(), repo in "[a-c]{1,8}") {
            let w = RepoPattern::parse(&format!("o/{wide}")).unwrap();
            let n = RepoPattern::parse(&format!("o/{narrow}")).unwrap();
            if w.covers(&n) && n.matches("o", &repo) {
                prop_assert!(w.matches("o", &repo), "{w} covers {n} but not {repo}");
            }
        }

        /// The glob agrees with a plain recursive reading of `*`.
        #[test]
        fn glob_agrees_with_a_reference(p in "[ab*]{0,6}", t in "[ab]{0,8}") {
            fn reference(p: &[u8], t: &[u8]) -> bool {
                match p.split_first() {
                    None => t.is_empty(),
                    Some((b'*', rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
                    Some((c, rest)) => t.first() == Some(c) && reference(rest, &t[1..]),
                }
            }
            prop_assert_eq!(glob(p.as_bytes(), t.as_bytes()), reference(p.as_bytes(), t.as_bytes()));
        }

        #[test]
        fn ranges_within_a_range_admit_nothing_it_does_not(len in 8u8..=32, sub in 0u8..=24, a in any::<u32>(), probe in any::<u32>()) {
            let wide = IpNet::from(ipnet::Ipv4Net::new(a.into(), len).unwrap()).trunc();
            let narrow_len = (len + sub).min(32);
            let narrow = IpNet::from(ipnet::Ipv4Net::new(a.into(), narrow_len).unwrap()).trunc();
            let w = AllowFrom::Ranges(vec![wide]);
            let n = AllowFrom::Ranges(vec![narrow]);
            prop_assert!(n.is_subset_of(&w));
            let ip = IpAddr::V4(probe.into());
            prop_assert!(!n.admits(ip) || w.admits(ip));
        }
    }
}
