//! Where each configured value came from: a line of the TOML file, an environment
//! variable, or the defaults. An error names it, so that the reader goes to the right place.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The config file: at this line (1-based), when the value is written there.
    File { line: Option<usize> },
    /// The environment variable of this name (it overrides the file).
    Env(String),
}

/// The origin of every key that the file or the environment sets.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// Dotted keys (`server.listen`, `routes[0].path`) to the line that writes them.
    lines: HashMap<String, usize>,
    /// Dotted keys to the environment variable that sets them.
    env: HashMap<String, String>,
}

impl Origins {
    /// Reads where the keys of `text` are. Text that does not parse has no lines; its
    /// error is reported by the parse itself.
    pub fn read(text: &str, env: &[(String, String)]) -> Origins {
        let mut lines = HashMap::new();
        if let Ok(doc) = DeTable::parse(text) {
            let starts = LineStarts::new(text);
            walk_table(doc.get_ref(), "", &starts, &mut lines);
        }
        let env = env.iter().map(|(name, _)| (env_key(name), name.clone())).collect();
        Origins { lines, env }
    }

    /// Where `key` came from: the environment, a line of the file, or (when neither sets
    /// it) the file without a line, since the defaults stand in for what it leaves out.
    pub fn of(&self, key: &str) -> Origin {
        if let Some(name) = self.env.get(key) {
            return Origin::Env(name.clone());
        }
        Origin::File {
            line: self.lines.get(key).copied(),
        }
    }
}

/// The dotted key an environment variable sets: `PATGATE__SERVER__LISTEN` → `server.listen`.
pub fn env_key(name: &str) -> String {
    let rest = name.strip_prefix(super::ENV_PREFIX).unwrap_or(name);
    let rest = rest.strip_prefix("__").unwrap_or(rest);
    rest.split("__").map(str::to_ascii_lowercase).collect::<Vec<_>>().join(".")
}

/// The variables of the environment that set config keys: `PATGATE__...`, sorted.
pub fn env_vars() -> Vec<(String, String)> {
    let prefix = format!("{}__", super::ENV_PREFIX);
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().unwrap_or_default())))
        .filter(|(k, _)| k.starts_with(&prefix))
        .collect();
    vars.sort();
    vars
}

/// Byte offsets where lines start, to turn a span into a line number.
pub struct LineStarts(Vec<usize>);

impl LineStarts {
    pub fn new(text: &str) -> LineStarts {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineStarts(starts)
    }

    /// The 1-based line and column of byte `offset`.
    pub fn locate(&self, offset: usize) -> (usize, usize) {
        let line = self.0.partition_point(|&s| s <= offset).max(1);
        (line, offset - self.0[line - 1] + 1)
    }
}

fn walk_table(table: &DeTable<'_>, prefix: &str, starts: &LineStarts, lines: &mut HashMap<String, usize>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        lines.insert(path.clone(), starts.locate(key.span().start).0);
        walk_value(value.get_ref(), &path, starts, lines);
    }
}

fn walk_value(value: &DeValue<'_>, path: &str, starts: &LineStarts, lines: &mut HashMap<String, usize>) {
    match value {
        DeValue::Table(t) => walk_table(t, path, starts, lines),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{path}[{i}]");
                lines.insert(path.clone(), starts.locate(item.span().start).0);
                walk_value(item.get_ref(), &path, starts, lines);
            }
        }
        _ => {}
    }
}

/// The innermost key of `text` whose key or value holds the byte span `at`, to name the
/// key of a deserialization error that gives only a position.
pub fn key_at(text: &str, at: &Range<usize>) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    let mut found = None;
    find_in_table(doc.get_ref(), "", at, &mut found);
    found
}

fn find_in_table(table: &DeTable<'_>, prefix: &str, at: &Range<usize>, found: &mut Option<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        let (k, v) = (key.span(), value.span());
        if contains(&k, at) || contains(&v, at) {
            *found = Some(path.clone());
        }
        find_in_value(value.get_ref(), &path, at, found);
    }
}

fn find_in_value(value: &DeValue<'_>, path: &str, at: &Range<usize>, found: &mut Option<String>) {
    match value {
        DeValue::Table(t) => find_in_table(t, path, at, found),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{path}[{i}]");
                if contains(&item.span(), at) {
                    *found = Some(path.clone());
                }
                find_in_value(item.get_ref(), &path, at, found);
            }
        }
        _ => {}
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end.max(outer.start + 1)
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { line: Some(l) } => write!(f, "line {l}"),
            Origin::File { line: None } => f.write_str("the file"),
            Origin::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_their_lines() {
        let text = "# a comment\n[server]\nlisten = \"x\"\ntrusted_proxies = [\n  \"a\",\n  \"b\",\n]\n\n[[routes]]\npath = \"/p\"\n\n[[routes]]\npath = \"/q\"\nrules = [ { scope = \"code:read\" } ]\n";
        let o = Origins::read(text, &[]);
        let line = |k: &str| match o.of(k) {
            Origin::File { line } => line,
            Origin::Env(_) => panic!("{k} is not from the environment"),
        };
        assert_eq!(line("server"), Some(2));
        assert_eq!(line("server.listen"), Some(3));
        assert_eq!(line("server.trusted_proxies"), Some(4));
        assert_eq!(line("server.trusted_proxies[1]"), Some(6));
        assert_eq!(line("routes[1].path"), Some(13));
        assert_eq!(line("routes[1].rules[0].scope"), Some(14));
        assert_eq!(line("server.workers"), None);
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let env = [("PATGATE__SERVER__LISTEN".to_owned(), "x".to_owned())];
        let o = Origins::read("[server]\nlisten = \"y\"\n", &env);
        assert_eq!(o.of("server.listen"), Origin::Env("PATGATE__SERVER__LISTEN".into()));
        assert_eq!(env_key("PATGATE__ADMIN__TLS__CERT_FILE"), "admin.tls.cert_file");
    }

    #[test]
    fn a_span_names_its_key() {
        let text = "[server]\nlisten = \"x\"\nlistn = 1\n";
        let at = text.find("listn").unwrap();
        assert_eq!(key_at(text, &(at..at + 5)).as_deref(), Some("server.listn"));
        let starts = LineStarts::new(text);
        assert_eq!(starts.locate(at), (3, 1));
        assert_eq!(starts.locate(0), (1, 1));
    }
}
