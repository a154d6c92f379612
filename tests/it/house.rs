//! The layers of `src/` and the rules of which may import which, as ARCHITECTURE.md
//! writes them, checked on the code itself: every `crate::` and `super::` path of the
//! library's files (test modules left out) is resolved to a module, and
//! - a module imports only modules of lower layers, or of its own folder;
//! - the request path ([`patgate::proxy`]) and authentication read of the store only the
//!   in-memory token cache; the admin API does not import the request path;
//! - no import circle, between any two files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layers, lowest first, by module path (the longest prefix decides). Keep in step with
/// ARCHITECTURE.md.
const LAYERS: &[(&str, u8)] = &[
    // 0: the clock and the build's identity.
    ("build_info", 0),
    ("clock", 0),
    // 1: leaves that every layer above may read.
    ("telemetry", 1),
    ("audit", 1), // audit.rs: the trail's entries and the handle that queues them
    ("auth::credentials", 1),
    ("auth::lifespan", 1),
    ("auth::orgs", 1),
    ("auth::restrictions", 1),
    ("auth::rules", 1),
    ("auth::scope", 1),
    ("auth::token", 1),
    ("guard", 1),
    ("server::tls", 1),
    // 2: the token store, its feed, and the in-memory token cache.
    ("store", 2),
    // 3: authentication and authorization (reads the token cache).
    ("auth", 3),
    // 4: the request path.
    ("proxy", 4),
    // 5: the audit trail's delivery, behind the scenes.
    ("audit::writer", 5),
    ("audit::streams", 5),
    ("audit::expiry", 5),
    // 6: the admin API and the console.
    ("admin", 6),
    // 7: where connections come in.
    ("server", 7),
    // 8: the config, which builds every layer's settings; 9: the process.
    ("config", 8),
    ("app", 9),
];

/// Imports no layer rule allows, whatever the layers: (importer prefix, imported prefix,
/// unless the imported module starts with this).
const FORBIDDEN: &[(&str, &str, &str)] = &[
    ("proxy", "store", "store::token_cache"),
    ("auth", "store", "store::token_cache"),
    ("admin", "proxy", "-"),
];

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .filter(|(p, _)| module == *p || module.starts_with(&format!("{p}::")))
        .max_by_key(|(p, _)| p.len())
        .unwrap_or_else(|| panic!("module {module} has no layer: add it to LAYERS and ARCHITECTURE.md"))
        .1
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// The library's modules and their files (the binary's `main.rs` and `cli` left out).
fn modules(src: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, src: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, src, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(src).unwrap().with_extension("");
                let module = rel.to_string_lossy().replace('/', "::");
                if ["lib", "main", "cli"].contains(&top(&module)) {
                    continue;
                }
                out.insert(module, std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    // Files that are test modules (`#[cfg(test)] mod tests;`) are no part of the house.
    let test_only: Vec<String> = out
        .iter()
        .flat_map(|(m, text)| {
            text.split("#[cfg(test)]\n").skip(1).filter_map(move |rest| {
                let line = rest.lines().next()?;
                let name = line.trim_start_matches("pub(crate) ").strip_prefix("mod ")?.strip_suffix(';')?;
                Some(format!("{m}::{name}"))
            })
        })
        .collect();
    for m in test_only {
        out.remove(&m);
    }
    out
}

/// The code of a file without its test module (the last item, by the house's habit) and
/// its comments.
fn code(text: &str) -> String {
    let mut end = text.len();
    let mut from = 0;
    while let Some(i) = text[from..].find("#[cfg(test)]\n") {
        let at = from + i;
        let next = text[at..].lines().nth(1).unwrap_or("");
        if next.trim_end().ends_with('{') {
            end = at;
            break;
        }
        from = at + 1;
    }
    let text = &text[..end];
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The module paths a file names after `crate::` or `super::`, with `{a, b}` groups
/// opened one level.
fn named_paths(code: &str, module: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (anchor, base) in [("crate::", String::new()), ("super::", parent(module))] {
        let mut rest = code;
        while let Some(i) = rest.find(anchor) {
            // `super::super::` counts once per step.
            let before = &rest[..i];
            rest = &rest[i + anchor.len()..];
            if anchor == "super::" && before.ends_with("super::") {
                continue;
            }
            let mut base = base.clone();
            let mut tail = rest;
            while let Some(t) = tail.strip_prefix("super::") {
                base = parent(&base);
                tail = t;
            }
            let path: String = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let path = path.trim_end_matches(':');
            let join = |p: &str| if base.is_empty() { p.to_owned() } else { format!("{base}::{p}") };
            if tail[path.len()..].trim_start_matches(':').starts_with('{') {
                let group = &tail[path.len()..];
                let group = &group[group.find('{').unwrap() + 1..group.find('}').unwrap_or(group.len())];
                if !path.is_empty() {
                    out.push(join(path));
                }
                for item in group.split(',') {
                    let item = item.trim().split("::").next().unwrap_or("");
                    if is_ident(item) && item != "self" {
                        out.push(join(&if path.is_empty() {
                            item.to_owned()
                        } else {
                            format!("{path}::{item}")
                        }));
                    }
                }
            } else if !path.is_empty() {
                out.push(join(path));
            }
        }
    }
    out
}

fn parent(module: &str) -> String {
    module.rsplit_once("::").map(|(p, _)| p.to_owned()).unwrap_or_default()
}

/// The longest prefix of `path` that is a module.
fn resolve(path: &str, modules: &BTreeMap<String, String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|k| parts[..k].join("::"))
        .find(|m| modules.contains_key(m))
}

fn imports(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    modules
        .iter()
        .map(|(m, text)| {
            let to = named_paths(&code(text), m)
                .iter()
                .filter_map(|p| resolve(p, modules))
                .filter(|t| t != m)
                .collect();
            (m.clone(), to)
        })
        .collect()
}

/// What breaks the rules, one line each.
fn broken(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (from, tos) in graph {
        for to in tos {
            if top(from) != top(to) && layer(to) >= layer(from) {
                out.push(format!("{from} (layer {}) imports {to} (layer {})", layer(from), layer(to)));
            }
            for (a, b, unless) in FORBIDDEN {
                let is = |m: &str, p: &str| m == p || m.starts_with(&format!("{p}::"));
                if is(from, a) && is(to, b) && !is(to, unless) {
                    out.push(format!("{from} imports {to}: {a} may not import {b}"));
                }
            }
        }
    }
    out.extend(circles(graph).into_iter().map(|c| format!("import circle: {}", c.join(" -> "))));
    out
}

/// Every import circle (a strongly connected set of more than one file), by Tarjan.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(t: &mut T<'g>, v: &'g str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut set = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                set.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if set.len() > 1 {
                set.sort();
                t.out.push(set);
            }
        }
    }
    let mut t = T {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn the_layers_of_architecture_md_hold_and_no_import_goes_round() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    assert!(modules.len() > 50, "the walk found {} modules", modules.len());
    let graph = imports(&modules);
    // The walk reads imports: a few that must be seen, so that a blind reader cannot pass.
    for (from, to) in [
        ("proxy", "auth"),
        ("proxy::plan", "proxy::connection"),
        ("admin::caller", "admin::sessions"),
        ("store::token_cache", "auth::orgs"),
        ("server::accept", "proxy::connection"),
    ] {
        assert!(graph[from].contains(to), "{from} -> {to} not seen: {:?}", graph[from]);
    }
    let broken = broken(&graph);
    assert!(broken.is_empty(), "ARCHITECTURE.md's rules are broken:\n{}", broken.join("\n"));
}

#[test]
fn the_checker_sees_what_breaks_the_rules() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry((*a).into()).or_default().insert((*b).into());
            g.entry((*b).into()).or_default();
        }
        g
    };
    assert!(broken(&graph(&[("proxy", "auth"), ("admin", "store::token_cache")])).is_empty());
    let b = broken(&graph(&[("store", "proxy")]));
    assert_eq!(b, ["store (layer 2) imports proxy (layer 4)"]);
    let b = broken(&graph(&[("proxy::plan", "store")]));
    assert_eq!(b, ["proxy::plan imports store: proxy may not import store"]);
    let b = broken(&graph(&[("admin::error", "proxy")]));
    assert_eq!(b, ["admin::error imports proxy: admin may not import proxy"]);
    let b = broken(&graph(&[("proxy::a", "proxy::b"), ("proxy::b", "proxy::a")]));
    assert_eq!(b, ["import circle: proxy::a -> proxy::b"]);
    let m: BTreeMap<String, String> = [("proxy::plan", ""), ("proxy::upstream", ""), ("proxy::upstream::exchange", "")]
        .iter()
        .map(|(a, b)| ((*a).into(), (*b).into()))
        .collect();
    let paths = named_paths(
        "use super::upstream::exchange::KeptUpstream;\nuse super::{headers, upstream};",
        "proxy::plan",
    );
    assert_eq!(
        paths,
        ["proxy::upstream::exchange::KeptUpstream", "proxy::headers", "proxy::upstream"]
    );
    assert_eq!(resolve(&paths[0], &m).as_deref(), Some("proxy::upstream::exchange"));
    let paths = named_paths("use crate::proxy::connection::{Activity, InFlight};", "server::accept");
    assert_eq!(paths, ["proxy::connection"]);
}
