//! Routes and rules: path normalization, route matching, the built-in `git` preset, and
//! the decision of which scope a request needs. Pure: no I/O.
//!
//! The path is normalized once, before any matching, and the normalized path is the one
//! that is forwarded: the rules and the upstream read the same bytes. Anything that could
//! be read two ways (dot segments, encoded separators or dots, backslashes, empty
//! segments, `;` parameters, control bytes, invalid UTF-8) is refused, never guessed.

use std::cmp::Ordering;
use std::fmt;

use http::Method;

use super::scope::Scope;

/// The longest request path accepted.
pub const MAX_PATH_LEN: usize = 4096;

/// Why a path was refused. Every variant becomes 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("path holds a '.' or '..' segment")]
    DotSegment,
    #[error("path holds an empty segment")]
    EmptySegment,
    #[error("path holds a backslash")]
    Backslash,
    #[error("path holds a ';' parameter")]
    Semicolon,
    #[error("path holds a control byte")]
    ControlByte,
    #[error("path holds an encoded '/', '\\' or '.'")]
    EncodedSeparator,
    #[error("path holds a malformed percent-encoding")]
    BadEncoding,
    #[error("path holds a double percent-encoding")]
    DoubleEncoding,
    #[error("path does not decode to UTF-8")]
    NotUtf8,
}

/// A path that passed normalization: canonical percent-encoding (unreserved characters
/// decoded, other escapes in upper case), no dot or empty segments (a single trailing
/// slash is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath(String);

impl NormalizedPath {
    /// The canonical text, as it is matched and forwarded.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments between slashes (without a trailing empty one).
    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &str> {
        let s = self.0.strip_prefix('/').unwrap_or(&self.0);
        let s = s.strip_suffix('/').unwrap_or(s);
        s.split('/').filter(|x| !x.is_empty())
    }

    /// The fully decoded path, as a CGI `PATH_INFO`. Decoding cannot create a separator,
    /// a dot segment or a control byte: those escapes were refused.
    pub fn decoded(&self) -> String {
        let b = self.0.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                out.push(hex(b[i + 1]).unwrap_or(0) << 4 | hex(b[i + 2]).unwrap_or(0));
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~')
}

/// Normalizes a request path (without its query).
pub fn normalize(raw: &str) -> Result<NormalizedPath, PathError> {
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let b = raw.as_bytes();
    // The usual path has no escape: it is its own canonical form once its bytes pass.
    let out = if b.iter().all(|&c| c.is_ascii_graphic() && !matches!(c, b'%' | b'\\' | b';')) {
        raw.to_owned()
    } else {
        decode_and_check(b)?
    };
    let body = &out[1..];
    let body = body.strip_suffix('/').unwrap_or(body);
    if !body.is_empty() {
        for seg in body.split('/') {
            match seg {
                "" => return Err(PathError::EmptySegment),
                "." | ".." => return Err(PathError::DotSegment),
                _ => {}
            }
        }
    } else if out.len() > 1 {
        // "//"
        return Err(PathError::EmptySegment);
    }
    Ok(NormalizedPath(out))
}

/// The canonical form of a path with escapes or refused bytes in it.
fn decode_and_check(b: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(b.len());
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'%' => {
                let (Some(h), Some(l)) = (b.get(i + 1).and_then(|&x| hex(x)), b.get(i + 2).and_then(|&x| hex(x))) else {
                    return Err(PathError::BadEncoding);
                };
                let v = h << 4 | l;
                // `%25XX` decodes to another escape: an upstream that decodes twice reads it otherwise.
                if v == b'%' && b.get(i + 3).and_then(|&x| hex(x)).is_some() && b.get(i + 4).and_then(|&x| hex(x)).is_some() {
                    return Err(PathError::DoubleEncoding);
                }
                match v {
                    b'/' | b'\\' | b'.' => return Err(PathError::EncodedSeparator),
                    0..=0x1f | 0x7f => return Err(PathError::ControlByte),
                    b';' => return Err(PathError::Semicolon),
                    _ if is_unreserved(v) => out.push(v as char),
                    _ => {
                        out.push('%');
                        out.push(char::from(b"0123456789ABCDEF"[(v >> 4) as usize]));
                        out.push(char::from(b"0123456789ABCDEF"[(v & 15) as usize]));
                    }
                }
                decoded.push(v);
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Semicolon),
            0..=0x1f | 0x7f => return Err(PathError::ControlByte),
            0x80.. => return Err(PathError::NotUtf8),
            _ => {
                out.push(c as char);
                decoded.push(c);
                i += 1;
            }
        }
    }
    // Overlong and otherwise invalid UTF-8 sequences hide in escapes.
    if std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::NotUtf8);
    }
    // Decoding `%32%65` after a kept `%25` assembles `%252e`: the canonical form itself
    // must not hold an escaped escape, however it came about.
    let o = out.as_bytes();
    if o.windows(5)
        .any(|w| w.starts_with(b"%25") && hex(w[3]).is_some() && hex(w[4]).is_some())
    {
        return Err(PathError::DoubleEncoding);
    }
    Ok(out)
}

/// One segment of a route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Literal(Box<str>),
    /// `{org}`: one segment, the organization the token must cover.
    Org,
    /// `{repo}`: one segment, the repository a token limited to repositories must cover.
    Repo,
    /// `*`: any one segment.
    One,
    /// `**`: any number of segments (zero too); last only.
    Rest,
}

impl Seg {
    /// Literal beats a capture beats `**`.
    fn rank(&self) -> u8 {
        match self {
            Seg::Literal(_) => 3,
            Seg::Org | Seg::Repo | Seg::One => 2,
            Seg::Rest => 1,
        }
    }
}

/// A route pattern such as `/{org}/_apis/distributedtask/**`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: Box<str>,
    segs: Vec<Seg>,
}

/// A route pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("must start with '/'")]
    NotAbsolute,
    #[error("`**` may only be the last segment")]
    RestNotLast,
    #[error("`{{org}}` may appear only once")]
    TwoOrgs,
    #[error("`{{repo}}` may appear only once, after `{{org}}`")]
    RepoPlacement,
    #[error("unknown capture `{0}` (`{{org}}` and `{{repo}}` are known)")]
    UnknownCapture(String),
    #[error("segment `{0}` is not a normalized path segment")]
    BadLiteral(String),
}

impl Pattern {
    /// Parses a pattern.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let body = text.strip_prefix('/').ok_or(PatternError::NotAbsolute)?;
        let mut segs = Vec::new();
        for raw in body.split('/').filter(|s| !s.is_empty()) {
            let seg = match raw {
                "**" => Seg::Rest,
                "*" => Seg::One,
                "{org}" => Seg::Org,
                "{repo}" => Seg::Repo,
                _ if raw.starts_with('{') => return Err(PatternError::UnknownCapture(raw.to_owned())),
                _ => {
                    let n = normalize(&format!("/{raw}")).map_err(|_| PatternError::BadLiteral(raw.to_owned()))?;
                    if n.as_str()[1..] != *raw || raw.contains('*') {
                        return Err(PatternError::BadLiteral(raw.to_owned()));
                    }
                    Seg::Literal(raw.into())
                }
            };
            if segs.last() == Some(&Seg::Rest) {
                return Err(PatternError::RestNotLast);
            }
            if seg == Seg::Org && segs.contains(&Seg::Org) {
                return Err(PatternError::TwoOrgs);
            }
            if seg == Seg::Repo && (segs.contains(&Seg::Repo) || !segs.contains(&Seg::Org)) {
                return Err(PatternError::RepoPlacement);
            }
            segs.push(seg);
        }
        Ok(Pattern { text: text.into(), segs })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Matches a normalized path; on success, the organization and repository segments
    /// where the pattern has them.
    fn matches<'p>(&self, path: &'p NormalizedPath) -> Option<(Option<&'p str>, Option<&'p str>)> {
        let (mut org, mut repo) = (None, None);
        let mut it = path.segments();
        for seg in &self.segs {
            match seg {
                Seg::Rest => return Some((org, repo)),
                Seg::Literal(l) => {
                    if it.next()? != &**l {
                        return None;
                    }
                }
                Seg::One => {
                    it.next()?;
                }
                Seg::Org => org = Some(it.next()?),
                Seg::Repo => repo = Some(it.next()?),
            }
        }
        it.next().is_none().then_some((org, repo))
    }

    /// More specific first: compared segment by segment, literal > capture > `**`, and a
    /// longer pattern before its own prefix.
    fn specificity(&self, other: &Pattern) -> Ordering {
        for (a, b) in self.segs.iter().zip(&other.segs) {
            match b.rank().cmp(&a.rank()) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        other.segs.len().cmp(&self.segs.len())
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One rule of a route: requests with one of `methods` (any method when `None`) need `scope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub methods: Option<Vec<Method>>,
    pub scope: Scope,
}

/// How a route decides which scope a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rules {
    /// The built-in preset for git's smart and dumb HTTP protocols.
    Git,
    /// Rules in order; the first that admits the method decides.
    List(Vec<Rule>),
}

/// The names of the built-in rule presets, for config errors and docs.
pub const PRESETS: &[&str] = &["git"];

impl Rules {
    /// Looks up a preset by name.
    pub fn preset(name: &str) -> Option<Rules> {
        match name {
            "git" => Some(Rules::Git),
            _ => None,
        }
    }
}

/// Why a request was not given a scope to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// No rule of the route admits this request: 403.
    #[error("no rule of this route admits the request")]
    NoRule,
    /// The query could be read two ways: 400.
    #[error(transparent)]
    Query(#[from] QueryError),
}

/// A query that git's `http-backend` could read otherwise than the rules do. Each is 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("query gives `service` more than once")]
    DuplicateService,
    #[error("query gives `service` in an encoded form")]
    EncodedService,
    #[error("query gives an unknown `service`")]
    UnknownService,
}

/// The git services a smart-HTTP request can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    UploadPack,
    ReceivePack,
}

fn percent_decode_query(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (b.get(i + 1).and_then(|&x| hex(x)), b.get(i + 2).and_then(|&x| hex(x))) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    // A C string ends at its first NUL, as git reads it.
    if let Some(n) = out.iter().position(|&c| c == 0) {
        out.truncate(n);
    }
    out
}

/// Reads `service` from a query the way git's `http-backend` does (names and values
/// URL-decoded, a later duplicate winning), refusing any query it could read otherwise
/// than this function.
fn git_service(query: Option<&str>) -> Result<Option<Service>, QueryError> {
    let Some(q) = query else { return Ok(None) };
    let mut service = None;
    for pair in q.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode_query(name) != b"service" {
            continue;
        }
        if name != "service" {
            return Err(QueryError::EncodedService);
        }
        if service.is_some() {
            return Err(QueryError::DuplicateService);
        }
        service = Some(match value {
            "git-upload-pack" => Service::UploadPack,
            "git-receive-pack" => Service::ReceivePack,
            _ => return Err(QueryError::UnknownService),
        });
    }
    Ok(service)
}

fn is_hex(s: &str, lens: &[usize]) -> bool {
    lens.contains(&s.len()) && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// The scope a git smart- or dumb-HTTP request needs, judged on the path's last three
/// segments. Allocates nothing.
fn git_scope(method: &Method, path: &NormalizedPath, query: Option<&str>) -> Result<Scope, RuleError> {
    let service = git_service(query)?;
    let (read, write) = (Scope::CODE_READ, Scope::CODE_WRITE);
    let mut rev = path.segments().rev();
    let (last, second, third) = (rev.next(), rev.next(), rev.next());
    let in_objects = third == Some("objects");
    if method == Method::GET || method == Method::HEAD {
        match (second, last) {
            (Some("info"), Some("refs")) => {
                return Ok(match service {
                    Some(Service::ReceivePack) => write,
                    Some(Service::UploadPack) | None => read,
                })
            }
            (Some("info"), Some("alternates" | "http-alternates" | "packs")) if in_objects => return Ok(read),
            (Some(dir), Some(file)) if in_objects && is_hex(dir, &[2]) && is_hex(file, &[38, 62]) => return Ok(read),
            (Some("pack"), Some(file)) if in_objects => {
                let name = file.strip_suffix(".pack").or_else(|| file.strip_suffix(".idx"));
                if name.and_then(|n| n.strip_prefix("pack-")).is_some_and(|h| is_hex(h, &[40, 64])) {
                    return Ok(read);
                }
            }
            _ => {}
        }
        if last == Some("HEAD") {
            return Ok(read);
        }
    }
    if method == Method::POST {
        match last {
            Some("git-upload-pack") => return Ok(read),
            Some("git-receive-pack") => return Ok(write),
            _ => {}
        }
    }
    Err(RuleError::NoRule)
}

/// A route: a pattern, how its requests map to scopes, and where they go.
#[derive(Debug, Clone)]
pub struct Route<T> {
    pub pattern: Pattern,
    pub rules: Rules,
    pub target: T,
}

/// A matched route and the organization and repository it captured.
#[derive(Debug)]
pub struct RouteMatch<'a, 'p, T> {
    pub route: &'a Route<T>,
    pub org: Option<&'p str>,
    pub repo: Option<&'p str>,
}

impl<T> RouteMatch<'_, '_, T> {
    /// What a request on this route needs, given the scope its rules ask.
    pub fn requirement(&self, scope: Scope) -> Requirement<'_> {
        Requirement {
            scope,
            org: self.org,
            repo: self.repo,
            route: self.route.pattern.as_str(),
        }
    }
}

/// What a request needs: a scope and, when its route names them, an organization and a
/// repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement<'p> {
    pub scope: Scope,
    pub org: Option<&'p str>,
    pub repo: Option<&'p str>,
    /// The route's pattern, to name it in a refusal.
    pub route: &'p str,
}

impl Requirement<'static> {
    /// A scope alone, where no route applies (the admin API).
    pub fn scope(scope: Scope) -> Requirement<'static> {
        Requirement {
            scope,
            org: None,
            repo: None,
            route: "",
        }
    }
}

impl<T> Route<T> {
    /// The scope this route's rules ask of a request.
    pub fn required_scope(&self, method: &Method, path: &NormalizedPath, query: Option<&str>) -> Result<Scope, RuleError> {
        match &self.rules {
            Rules::Git => git_scope(method, path, query),
            Rules::List(rules) => {
                let method = if method == Method::HEAD { &Method::GET } else { method };
                rules
                    .iter()
                    .find(|r| r.methods.as_ref().is_none_or(|ms| ms.contains(method)))
                    .map(|r| r.scope)
                    .ok_or(RuleError::NoRule)
            }
        }
    }
}

/// The routes, most specific first.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    routes: Vec<Route<T>>,
}

impl<T> RouteTable<T> {
    /// Orders routes by specificity; among equals, the order given.
    pub fn new(mut routes: Vec<Route<T>>) -> Self {
        routes.sort_by(|a, b| a.pattern.specificity(&b.pattern));
        RouteTable { routes }
    }

    /// The most specific route matching `path`.
    pub fn find<'a, 'p>(&'a self, path: &'p NormalizedPath) -> Option<RouteMatch<'a, 'p, T>> {
        self.routes
            .iter()
            .find_map(|route| route.pattern.matches(path).map(|(org, repo)| RouteMatch { route, org, repo }))
    }

    /// The routes, most specific first.
    pub fn iter(&self) -> impl Iterator<Item = &Route<T>> {
        self.routes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> NormalizedPath {
        normalize(p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn double_encoding_assembled_by_decoding_is_refused() {
        for p in ["/a/%25%32%65%25%32%65/x", "/x%25%32%66..%25%32%66other", "/a/%25%32e"] {
            assert_eq!(normalize(p), Err(PathError::DoubleEncoding), "{p}");
        }
        assert_eq!(normalize("/a/%25zz").unwrap().as_str(), "/a/%25zz");
    }

    #[test]
    fn plain_paths_pass_unchanged() {
        for p in [
            "/",
            "/acme/demo.git/info/refs",
            "/acme/repo-1_x~y/HEAD",
            "/a/b/",
            "/a%20b/c",
            "/acme/demo.git",
        ] {
            assert_eq!(n(p).as_str(), p);
        }
    }

    #[test]
    fn escapes_of_unreserved_characters_are_decoded_and_others_upper_cased() {
        assert_eq!(n("/%61cme/x").as_str(), "/acme/x");
        assert_eq!(n("/acme/a%7cb").as_str(), "/acme/a%7Cb");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        use PathError::*;
        let cases = [
            ("acme/x", NotAbsolute),
            ("", NotAbsolute),
            ("*", NotAbsolute),
            ("/acme/../x", DotSegment),
            ("/acme/./x", DotSegment),
            ("/..", DotSegment),
            ("/acme/..", DotSegment),
            ("/acme/%2e%2e/x", EncodedSeparator),
            ("/acme/%2E./x", EncodedSeparator),
            ("/acme/.%2e/x", EncodedSeparator),
            ("/acme%2fother/x", EncodedSeparator),
            ("/acme%2Fother/x", EncodedSeparator),
            ("/acme%5cother/x", EncodedSeparator),
            ("/acme\\other/x", Backslash),
            ("//acme/x", EmptySegment),
            ("/acme//x", EmptySegment),
            ("//", EmptySegment),
            ("/acme/x;foo=bar", Semicolon),
            ("/acme/x%3bfoo", Semicolon),
            ("/acme/x%00", ControlByte),
            ("/acme/x%0a", ControlByte),
            ("/acme/x\t", ControlByte),
            ("/acme/%", BadEncoding),
            ("/acme/%252e%252e/x", DoubleEncoding),
            ("/acme/a%252Fb", DoubleEncoding),
            ("/acme/%4", BadEncoding),
            ("/acme/%zz", BadEncoding),
            ("/acme/%c0%ae%c0%ae/x", NotUtf8),
            ("/acme/%ff", NotUtf8),
            ("/acme/\u{e9}", NotUtf8),
        ];
        for (p, want) in cases {
            assert_eq!(normalize(p), Err(want), "{p:?}");
        }
        assert_eq!(normalize(&format!("/{}", "a".repeat(MAX_PATH_LEN))), Err(TooLong));
    }

    #[test]
    fn valid_utf8_escapes_are_kept_canonical() {
        assert_eq!(n("/acme/caf%c3%a9").as_str(), "/acme/caf%C3%A9");
        assert_eq!(n("/acme/caf%c3%a9").decoded(), "/acme/café");
        assert_eq!(n("/acme/a%20b").decoded(), "/acme/a b");
    }

    fn table() -> RouteTable<&'static str> {
        let route = |p: &str, rules: Rules, t| Route {
            pattern: Pattern::parse(p).unwrap(),
            rules,
            target: t,
        };
        let s = |x| Scope::from_name(x).unwrap();
        RouteTable::new(vec![
            route("/{org}/**", Rules::Git, "git"),
            route(
                "/{org}/_apis/distributedtask/**",
                Rules::List(vec![
                    Rule {
                        methods: Some(vec![Method::GET]),
                        scope: s("agentpools:read"),
                    },
                    Rule {
                        methods: None,
                        scope: s("agentpools:manage"),
                    },
                ]),
                "agents",
            ),
            route(
                "/_apis/audit/*",
                Rules::List(vec![Rule {
                    methods: Some(vec![Method::GET]),
                    scope: s("auditlog:read"),
                }]),
                "audit",
            ),
        ])
    }

    #[test]
    fn the_most_specific_route_wins_and_captures_the_org() {
        let t = table();
        let p = n("/acme/_apis/distributedtask/pools");
        let m = t.find(&p).unwrap();
        assert_eq!(m.route.target, "agents");
        assert_eq!(m.org, Some("acme"));
        let p = n("/acme/demo.git/info/refs");
        let m = t.find(&p).unwrap();
        assert_eq!((m.route.target, m.org), ("git", Some("acme")));
        let p = n("/_apis/audit/log");
        let m = t.find(&p).unwrap();
        assert_eq!((m.route.target, m.org), ("audit", None));
        // `*` is exactly one segment.
        let p = n("/_apis/audit/log/more");
        assert_eq!(t.find(&p).unwrap().route.target, "git");
        // `{org}` needs a segment.
        assert!(t.find(&n("/")).is_none());
        // Case matters: the upstream is case-sensitive too.
        let p = n("/acme/_APIS/distributedtask/pools");
        assert_eq!(t.find(&p).unwrap().route.target, "git");
    }

    #[test]
    fn list_rules_take_the_first_that_admits_the_method() {
        let t = table();
        let p = n("/acme/_apis/distributedtask/pools");
        let r = t.find(&p).unwrap().route;
        let name = |m: Method| r.required_scope(&m, &p, None).map(|s| s.name());
        assert_eq!(name(Method::GET), Ok("agentpools:read"));
        assert_eq!(name(Method::HEAD), Ok("agentpools:read"));
        assert_eq!(name(Method::POST), Ok("agentpools:manage"));
        assert_eq!(name(Method::DELETE), Ok("agentpools:manage"));
        let p = n("/_apis/audit/log");
        let r = t.find(&p).unwrap().route;
        assert_eq!(r.required_scope(&Method::POST, &p, None), Err(RuleError::NoRule));
    }

    fn git(method: Method, path: &str, query: Option<&str>) -> Result<&'static str, RuleError> {
        git_scope(&method, &n(path), query).map(|s| s.name())
    }

    #[test]
    fn the_git_preset_tells_fetch_from_push() {
        let sha1 = "0123456789abcdef0123456789abcdef01234567";
        type Case<'a> = (Method, String, Option<&'a str>, Result<&'a str, RuleError>);
        let cases: Vec<Case> = vec![
            (
                Method::GET,
                "/acme/demo.git/info/refs".into(),
                Some("service=git-upload-pack"),
                Ok("code:read"),
            ),
            (
                Method::HEAD,
                "/acme/demo.git/info/refs".into(),
                Some("service=git-upload-pack"),
                Ok("code:read"),
            ),
            (
                Method::GET,
                "/acme/demo.git/info/refs".into(),
                Some("service=git-receive-pack"),
                Ok("code:write"),
            ),
            (Method::GET, "/acme/demo.git/info/refs".into(), None, Ok("code:read")),
            (
                Method::GET,
                "/acme/demo.git/info/refs".into(),
                Some("foo=bar&service=git-receive-pack"),
                Ok("code:write"),
            ),
            (Method::POST, "/acme/demo.git/git-upload-pack".into(), None, Ok("code:read")),
            (Method::POST, "/acme/demo.git/git-receive-pack".into(), None, Ok("code:write")),
            (
                Method::POST,
                "/acme/demo.git/git-receive-pack".into(),
                Some("service=git-upload-pack"),
                Ok("code:write"),
            ),
            (Method::GET, "/acme/demo.git/HEAD".into(), None, Ok("code:read")),
            (Method::GET, "/acme/demo.git/objects/info/packs".into(), None, Ok("code:read")),
            (Method::GET, "/acme/demo.git/objects/info/alternates".into(), None, Ok("code:read")),
            (
                Method::GET,
                "/acme/demo.git/objects/info/http-alternates".into(),
                None,
                Ok("code:read"),
            ),
            (
                Method::GET,
                format!("/acme/demo.git/objects/{}/{}", &sha1[..2], &sha1[2..]),
                None,
                Ok("code:read"),
            ),
            (
                Method::GET,
                format!("/acme/demo.git/objects/pack/pack-{sha1}.pack"),
                None,
                Ok("code:read"),
            ),
            (
                Method::GET,
                format!("/acme/demo.git/objects/pack/pack-{sha1}.idx"),
                None,
                Ok("code:read"),
            ),
            // Denied: wrong method, unknown endpoint, case variants.
            (Method::GET, "/acme/demo.git/git-receive-pack".into(), None, Err(RuleError::NoRule)),
            (Method::PUT, "/acme/demo.git/git-receive-pack".into(), None, Err(RuleError::NoRule)),
            (Method::POST, "/acme/demo.git/info/refs".into(), None, Err(RuleError::NoRule)),
            (Method::GET, "/acme/demo.git/INFO/refs".into(), None, Err(RuleError::NoRule)),
            (Method::POST, "/acme/demo.git/Git-Receive-Pack".into(), None, Err(RuleError::NoRule)),
            (Method::GET, "/acme/demo.git/config".into(), None, Err(RuleError::NoRule)),
            (
                Method::GET,
                "/acme/demo.git/objects/pack/pack-xyz.pack".into(),
                None,
                Err(RuleError::NoRule),
            ),
            (Method::GET, "/acme/demo.git/objects/zz/abc".into(), None, Err(RuleError::NoRule)),
            (Method::OPTIONS, "/acme/demo.git/info/refs".into(), None, Err(RuleError::NoRule)),
        ];
        for (m, p, q, want) in cases {
            assert_eq!(git(m.clone(), &p, q), want, "{m} {p} {q:?}");
        }
    }

    #[test]
    fn ambiguous_service_queries_are_refused() {
        let p = "/acme/demo.git/info/refs";
        for (q, want) in [
            ("service=git-upload-pack&service=git-receive-pack", QueryError::DuplicateService),
            ("service=git-upload-pack&service=git-upload-pack", QueryError::DuplicateService),
            ("service=git-upload-pack&%73ervice=git-receive-pack", QueryError::EncodedService),
            ("servic%65=git-receive-pack", QueryError::EncodedService),
            ("service%00x=git-receive-pack", QueryError::EncodedService),
            ("service=git%2dreceive-pack", QueryError::UnknownService),
            ("service=git-upload-pack%00", QueryError::UnknownService),
            ("service=", QueryError::UnknownService),
            ("service", QueryError::UnknownService),
            ("service=git-upload-archive", QueryError::UnknownService),
        ] {
            assert_eq!(git(Method::GET, p, Some(q)), Err(RuleError::Query(want)), "{q}");
        }
    }

    #[test]
    fn patterns_are_checked() {
        assert_eq!(Pattern::parse("x/**"), Err(PatternError::NotAbsolute));
        assert_eq!(Pattern::parse("/**/x"), Err(PatternError::RestNotLast));
        assert_eq!(Pattern::parse("/{org}/{org}"), Err(PatternError::TwoOrgs));
        assert_eq!(Pattern::parse("/{repo}"), Err(PatternError::RepoPlacement));
        assert_eq!(Pattern::parse("/{org}/{repo}/{repo}"), Err(PatternError::RepoPlacement));
        assert_eq!(Pattern::parse("/{team}"), Err(PatternError::UnknownCapture("{team}".into())));
        assert!(Pattern::parse("/{org}/{repo}/**").is_ok());
        assert_eq!(Pattern::parse("/a..b/../x"), Err(PatternError::BadLiteral("..".into())));
        assert!(Pattern::parse("/{org}/_apis/distributedtask/**").is_ok());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn normalize_never_panics(p in "\\PC{0,64}") {
            let _ = normalize(&p);
        }

        #[test]
        fn normalized_paths_are_fixed_points_without_ambiguity(p in "/[a-zA-Z0-9%./\\\\;_~-]{0,40}") {
            if let Ok(n) = normalize(&p) {
                let again = normalize(n.as_str());
                prop_assert_eq!(again.as_ref(), Ok(&n));
                let d = n.decoded();
                prop_assert!(!d.contains('\\') && !d.contains("/./") && !d.contains("/../") && !d.contains("//"));
                prop_assert_eq!(d.split('/').count(), n.as_str().split('/').count());
            }
        }

        #[test]
        fn git_queries_never_panic(q in "[a-z%0-9=&+-]{0,40}") {
            let _ = git_service(Some(&q));
        }
    }
}
