//! Path normalization, route matching and the rules (`patgate::auth::rules`): never panic;
//! a normalized path is a fixed point and decodes to no separator, dot segment or control
//! byte; route lookup and the scope decision hold for every method and query; route
//! patterns parse without panicking.
//!
//! Input: one byte picks the method, the rest is a request target `PATH[?QUERY]`.
#![no_main]

use std::sync::OnceLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use patgate::auth::rules::{normalize, Pattern, Route, RouteTable, Rule, RuleError, Rules, MAX_PATH_LEN};
use patgate::auth::scope::Scope;

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"];

/// The shipped config's routes, plus one with a literal prefix and a `*`.
fn table() -> &'static RouteTable<&'static str> {
    static TABLE: OnceLock<RouteTable<&'static str>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let scope = |name| Scope::from_name(name).expect("known scope");
        let route = |path, rules, target| Route {
            pattern: Pattern::parse(path).expect("valid pattern"),
            rules,
            target,
        };
        RouteTable::new(vec![
            route("/{org}/**", Rules::Git, "git"),
            route(
                "/{org}/_apis/distributedtask/**",
                Rules::List(vec![
                    Rule {
                        methods: Some(vec![Method::GET, Method::HEAD]),
                        scope: scope("agentpools:read"),
                    },
                    Rule {
                        methods: None,
                        scope: scope("agentpools:manage"),
                    },
                ]),
                "agents",
            ),
            route(
                "/_apis/audit/*",
                Rules::List(vec![Rule {
                    methods: Some(vec![Method::GET]),
                    scope: scope("auditlog:read"),
                }]),
                "audit",
            ),
        ])
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else { return };
    let Ok(target) = std::str::from_utf8(rest) else { return };
    let method = Method::from_bytes(METHODS[usize::from(m) % METHODS.len()].as_bytes()).unwrap();

    // Any text as a route pattern: no panic, and a valid one reads back the same.
    if let Ok(p) = Pattern::parse(target) {
        assert_eq!(p.as_str(), target);
        assert!(Pattern::parse(p.as_str()).is_ok());
    }

    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let Ok(n) = normalize(path) else { return };
    let s = n.as_str();
    assert!(path.len() <= MAX_PATH_LEN);
    assert!(s.starts_with('/') && s.len() <= path.len(), "normalizing grew {path:?} to {s:?}");
    assert_eq!(normalize(s).as_ref(), Ok(&n), "not a fixed point: {path:?} -> {s:?}");
    for c in [";", "\\", "//"] {
        assert!(!s.contains(c), "{s:?} holds {c:?}");
    }
    let decoded = n.decoded();
    assert!(!decoded.contains('\\') && !decoded.contains("//"), "{s:?} decodes to {decoded:?}");
    assert!(!decoded.bytes().any(|b| b < 0x20 || b == 0x7f), "{s:?} decodes to a control byte");
    assert_eq!(decoded.split('/').count(), s.split('/').count(), "{s:?} decodes to more segments");
    for seg in n.segments() {
        assert!(!seg.is_empty() && seg != "." && seg != "..", "{s:?} has segment {seg:?}");
    }

    let Some(found) = table().find(&n) else {
        // Only `/` itself matches no route: every other path has an org segment.
        assert_eq!(s, "/", "{s:?} matched no route");
        return;
    };
    if let Some(org) = found.org {
        assert_eq!(n.segments().next(), Some(org), "the org is not the first segment");
    }
    match found.route.required_scope(&method, &n, query) {
        Ok(scope) => {
            if found.route.target == "git" {
                // The git preset asks for code:read or code:write, for GET, HEAD or POST only.
                assert!(scope == Scope::CODE_READ || scope == Scope::CODE_WRITE);
                assert!(method == Method::GET || method == Method::HEAD || method == Method::POST);
                if method == Method::HEAD {
                    assert_eq!(found.route.required_scope(&Method::GET, &n, query), Ok(scope));
                }
            }
        }
        Err(RuleError::NoRule | RuleError::Query(_)) => {}
    }
});
