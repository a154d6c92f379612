//! The PostgreSQL store, shared by several patgate instances: its URL (parsed once,
//! shown only with the password masked), a bounded connection pool, a versioned schema
//! migrated under an advisory lock, each change written with its event in one
//! transaction that notifies `patgate_token_events` on commit, and the dedicated
//! listening connection that [`super::follow`] uses to hear of changes at once.
//!
//! It must never let a password into a message, and never wait without a bound: every
//! operation gives up after a few seconds with [`StoreError::Unavailable`].

use std::fmt;
use std::str::FromStr;

use tokio_postgres::config::{Host, SslMode};

/// A PostgreSQL connection URL (`postgres://` or `postgresql://`), checked. Display and
/// Debug mask the password: `postgres://user:***@host:5432/db`.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    config: tokio_postgres::Config,
    shown: String,
}

impl PgUrl {
    /// Parses a `postgres://` or `postgresql://` URL. The error names what is wrong and
    /// never repeats the URL.
    pub fn parse(url: &str) -> Result<PgUrl, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("a PostgreSQL URL starts with postgres:// or postgresql://".into());
        }
        let config = tokio_postgres::Config::from_str(url).map_err(|e| match std::error::Error::source(&e) {
            Some(cause) => format!("not a valid PostgreSQL URL: {cause}"),
            None => format!("not a valid PostgreSQL URL: {e}"),
        })?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err("the PostgreSQL URL names no host".into());
        }
        if config.get_user().is_none_or(str::is_empty) {
            return Err("the PostgreSQL URL names no user".into());
        }
        if config.get_ssl_mode() == SslMode::Require {
            return Err("sslmode=require is not supported: patgate connects to PostgreSQL without TLS".into());
        }
        let shown = show(&config);
        Ok(PgUrl { config, shown })
    }

    /// The connection settings, password included: for connecting, never for showing.
    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

/// `postgres://user[:***]@host:port[,host:port]/db[?host=/socket/dir]`
fn show(c: &tokio_postgres::Config) -> String {
    let mut out = String::from("postgres://");
    out += c.get_user().unwrap_or_default();
    if c.get_password().is_some() {
        out += ":***";
    }
    out.push('@');
    let ports = c.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut tcp = Vec::new();
    let mut sockets = Vec::new();
    for (i, h) in c.get_hosts().iter().enumerate() {
        match h {
            Host::Tcp(name) if name.contains(':') => tcp.push(format!("[{name}]:{}", port(i))),
            Host::Tcp(name) => tcp.push(format!("{name}:{}", port(i))),
            #[cfg(unix)]
            Host::Unix(path) => sockets.push(path.display().to_string()),
        }
    }
    if tcp.is_empty() {
        tcp.extend(c.get_hostaddrs().iter().enumerate().map(|(i, a)| match a {
            std::net::IpAddr::V6(a) => format!("[{a}]:{}", port(i)),
            std::net::IpAddr::V4(a) => format!("{a}:{}", port(i)),
        }));
    }
    out += &tcp.join(",");
    if let Some(db) = c.get_dbname() {
        out.push('/');
        out += db;
    }
    if !sockets.is_empty() {
        out += "?host=";
        out += &sockets.join(",");
    }
    out
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", self.shown)
    }
}

/// Masks the password of a store URL as written, for messages about a URL that may not
/// parse: the user-info after the first `:` and any `password=` value become `***`.
pub fn redact_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return mask_password_params(url);
    };
    if url.starts_with("sqlite://") {
        return url.to_owned();
    }
    let rest = &url[start..];
    let masked = match rest.rfind('@') {
        Some(at) => match rest[..at].find(':') {
            // Everything from the colon to the last `@` is masked, even if a path or
            // query held an `@`: masking too much is safe.
            Some(colon) => format!("{}{}:***{}", &url[..start], &rest[..colon], &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    mask_password_params(&masked)
}

fn mask_password_params(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("password=") {
        let value = i + "password=".len();
        out += &rest[..value];
        out += "***";
        let end = rest[value..].find(['&', ' ']).map_or(rest.len(), |e| value + e);
        rest = &rest[end..];
    }
    out += rest;
    out
}

#[cfg(test)]
mod tests {
    use super::super::Location;
    use super::*;

    #[test]
    fn urls_parse_and_never_show_the_password() {
        let l = Location::parse("postgres://patgate:s3cret@db.internal:6543/tokens").unwrap();
        assert_eq!(l.to_string(), "postgres://patgate:***@db.internal:6543/tokens");
        assert!(!format!("{l:?}").contains("s3cret"));
        let Location::Postgres(url) = &l else { panic!("{l:?}") };
        assert_eq!(url.config().get_password(), Some(&b"s3cret"[..]));

        let l = Location::parse("postgresql://postgres@127.0.0.1/test").unwrap();
        assert_eq!(l.to_string(), "postgres://postgres@127.0.0.1:5432/test");
        let l = Location::parse("postgresql://u:p@%2Fvar%2Frun%2Fpostgresql/db").unwrap();
        assert_eq!(l.to_string(), "postgres://u:***@/db?host=/var/run/postgresql");
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_the_url() {
        for (url, want) in [
            ("postgres://u:pw@host:notaport/db", "invalid value for option `port`"),
            ("postgres://u:pw@host/db?bogus=1", "unknown option `bogus`"),
            ("postgres://u:pw@host/db?sslmode=require", "sslmode=require is not supported"),
            ("postgres:///db", "names no host"),
            ("postgres://host/db", "names no user"),
        ] {
            let e = Location::parse(url).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
            assert!(!e.contains("pw"), "{url}: {e}");
        }
    }

    #[test]
    fn redaction_of_urls_as_written() {
        for (url, want) in [
            ("postgres://u:pw@host/db", "postgres://u:***@host/db"),
            ("postgres://u:p/w@d@host/db", "postgres://u:***@host/db"),
            ("postgres://u@host/db?password=pw&x=1", "postgres://u@host/db?password=***&x=1"),
            ("mysql://u:pw@host", "mysql://u:***@host"),
            ("sqlite://data/a:b@c.db", "sqlite://data/a:b@c.db"),
        ] {
            assert_eq!(redact_url(url), want);
        }
    }
}
