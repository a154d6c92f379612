//! Configuration in two layers: [`file::FileConfig`] is what the config crate reads
//! (defaults, then the TOML file, then `PATGATE__SECTION__KEY` environment variables);
//! [`Config`] is the validated form the program uses. Every error names the key and where
//! its value came from: the file and its line, or the environment variable.

pub mod file;
pub mod origin;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;

use crate::admin::policy::Policy;
use crate::auth::rules::{Pattern, Route, RouteTable, Rule, Rules, PRESETS};
use crate::auth::scope::{Scope, ScopeSet};
use crate::proxy::upstream::Upstream;
use crate::server::accept;
use crate::server::tls::{self, ListenerTls, TlsFiles};
use crate::{admin, audit, guard, proxy, store, telemetry};
use file::{FileConfig, RulesFile, TlsFile};
use origin::LineStarts;
pub use origin::{Origin, Origins};

/// The program's configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub source: PathBuf,
    pub proxy: proxy::Config,
    /// How the proxy listener accepts connections: TLS, HTTP/2, per-connection limits.
    pub accept: accept::Config,
    pub store: store::Config,
    pub admin: admin::Config,
    pub log: telemetry::Config,
    pub audit: audit::Config,
    /// Where each value came from, for messages about them.
    pub origins: Origins,
}

/// A configuration that cannot be used: which key, where its value came from (a line of
/// the file, or an environment variable), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub file: String,
    /// Where the value came from.
    pub origin: Origin,
    pub key: Option<String>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File { line: Some(l) } => write!(f, "{}:{l}: ", self.file)?,
            Origin::File { line: None } => write!(f, "{}: ", self.file)?,
            Origin::Env(name) => write!(f, "environment variable {name}: ")?,
        }
        match &self.key {
            Some(k) => write!(f, "{k}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// The environment prefix: `PATGATE__SERVER__LISTEN` sets `server.listen`.
pub const ENV_PREFIX: &str = "PATGATE";

/// Reads, merges and validates the configuration at `path`, with the `PATGATE__...`
/// variables of this process's environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_env(path, &origin::env_vars())
}

/// [`load`] with the given `PATGATE__...` variables in place of the process's.
pub fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let whole = |reason: String| ConfigError {
        file: file.clone(),
        origin: Origin::File { line: None },
        key: None,
        reason,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let here = if path.is_relative() {
                std::env::current_dir().map_or_else(|_| String::new(), |d| format!(" under {}", d.display()))
            } else {
                String::new()
            };
            return Err(whole(format!(
                "no such file{here}; name the config file with --config FILE or the PATGATE_CONFIG variable"
            )));
        }
        Err(e) => return Err(whole(format!("cannot be read ({e})"))),
    };
    // The file alone first, so that its mistakes are named by their line.
    if let Err(e) = toml::from_str::<FileConfig>(&text) {
        let at = e.span();
        let (line, column) = at.as_ref().map(|s| LineStarts::new(&text).locate(s.start)).unzip();
        let key = at.as_ref().and_then(|s| origin::key_at(&text, s));
        let mut reason = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        if let (None, Some(c)) = (&key, column) {
            reason = format!("{reason} (column {c})");
        }
        return Err(ConfigError {
            file,
            origin: Origin::File { line },
            key,
            reason,
        });
    }
    let origins = Origins::read(&text, env);
    let raw = merge(&text, env).map_err(|e| {
        // The file alone was good: a variable is to blame. Try each alone to name it.
        let culprit = env
            .iter()
            .find_map(|var| merge(&text, std::slice::from_ref(var)).err().map(|e| (var, e)));
        let (origin, key, e) = match culprit {
            Some(((name, _), e)) => (Origin::Env(name.clone()), Some(origin::env_key(name)), e),
            None => {
                let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
                (Origin::Env(names.join(", ")), None, e)
            }
        };
        ConfigError {
            file: file.clone(),
            origin,
            key,
            reason: config_reason(&e),
        }
    })?;
    Config::from_file(raw, path, origins)
}

/// The file's text with the environment's variables over it, as one [`FileConfig`].
fn merge(text: &str, env: &[(String, String)]) -> Result<FileConfig, config::ConfigError> {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env.iter().cloned().collect())),
        )
        .build()
        .and_then(|c| c.try_deserialize::<FileConfig>())
}

/// A config crate error without the key and origin it appends: the caller names those.
fn config_reason(e: &config::ConfigError) -> String {
    match e {
        config::ConfigError::At { error, .. } => config_reason(error),
        config::ConfigError::Type { unexpected, expected, .. } => format!("invalid type: {unexpected}, expected {expected}"),
        other => other.to_string(),
    }
}

struct Ctx<'a> {
    file: &'a str,
    origins: &'a Origins,
}

impl Ctx<'_> {
    fn err(&self, key: impl Into<String>, reason: impl fmt::Display) -> ConfigError {
        let key = key.into();
        ConfigError {
            file: self.file.to_owned(),
            origin: self.origins.of(&key),
            key: Some(key),
            reason: reason.to_string(),
        }
    }

    fn duration(&self, key: &str, value: &str) -> Result<Duration, ConfigError> {
        let d = humantime::parse_duration(value)
            .map_err(|e| self.err(key, format!("`{value}` is not a duration ({e}); write e.g. 30s, 250ms, 5m")))?;
        if d.is_zero() {
            return Err(self.err(key, "must be more than zero"));
        }
        if d > Duration::from_secs(100 * 365 * 86400) {
            return Err(self.err(key, "must be at most 100 years"));
        }
        Ok(d)
    }

    fn positive(&self, key: &str, value: usize) -> Result<usize, ConfigError> {
        if value == 0 {
            return Err(self.err(key, "must be at least 1"));
        }
        Ok(value)
    }

    /// A listening address: an IP address and a port. Host names are not resolved here:
    /// one name may stand for several addresses, and the listener needs one.
    fn listen(&self, key: &str, value: &str, example: &str) -> Result<SocketAddr, ConfigError> {
        value.parse().map_err(|_| {
            let hint = if value.rsplit_once(':').is_some_and(|(host, port)| {
                port.parse::<u16>().is_ok() && host.parse::<std::net::IpAddr>().is_err() && !host.starts_with('[')
            }) {
                " (a host name is not accepted: write an IP address, e.g. 127.0.0.1 or 0.0.0.0)"
            } else {
                ""
            };
            self.err(key, format!("`{value}` is not an address such as {example}{hint}"))
        })
    }
}

/// The most proxy worker threads.
const MAX_WORKERS: usize = 256;

impl Config {
    /// Validates a [`FileConfig`] read from `source`, whose values came from `origins`.
    pub fn from_file(f: FileConfig, source: &Path, origins: Origins) -> Result<Config, ConfigError> {
        let file = source.display().to_string();
        let cx = Ctx {
            file: &file,
            origins: &origins,
        };
        let listen = cx.listen("server.listen", &f.server.listen, "127.0.0.1:8080")?;
        if f.server.max_header_bytes < 8192 {
            return Err(cx.err("server.max_header_bytes", "must be at least 8192"));
        }
        if f.server.max_header_bytes > 1024 * 1024 {
            return Err(cx.err("server.max_header_bytes", "must be at most 1048576"));
        }
        if !(8192..=1024 * 1024).contains(&f.upstream.max_response_head_bytes) {
            return Err(cx.err("upstream.max_response_head_bytes", "must be from 8192 to 1048576"));
        }
        let upstream = proxy::upstream::Config {
            connect_timeout: cx.duration("upstream.connect_timeout", &f.upstream.connect_timeout)?,
            response_timeout: cx.duration("upstream.response_timeout", &f.upstream.response_timeout)?,
            pool_idle_timeout: cx.duration("upstream.pool_idle_timeout", &f.upstream.pool_idle_timeout)?,
            pool_max_idle_per_host: f.upstream.pool_max_idle_per_host,
            max_response_head_bytes: f.upstream.max_response_head_bytes,
            trust: match f.upstream.ca_file.as_str() {
                "" => proxy::upstream::Trust::System,
                ca => proxy::upstream::Trust::bundle(Path::new(ca)).map_err(|e| cx.err("upstream.ca_file", format!("`{ca}` {e}")))?,
            },
        };
        if f.git.binary.trim().is_empty() {
            return Err(cx.err("git.binary", "must name the git executable"));
        }
        let git = proxy::cgi::Config {
            binary: PathBuf::from(&f.git.binary),
            max_processes: cx.positive("git.max_processes", f.git.max_processes)?,
            response_timeout: upstream.response_timeout,
        };
        if f.routes.is_empty() {
            return Err(cx.err("routes", "at least one [[routes]] entry is needed"));
        }
        let mut routes = Vec::with_capacity(f.routes.len());
        let mut seen = Vec::new();
        for (i, r) in f.routes.iter().enumerate() {
            let key = |k: &str| format!("routes[{i}].{k}");
            let pattern = Pattern::parse(&r.path).map_err(|e| cx.err(key("path"), format!("`{}`: {e}", r.path)))?;
            if seen.contains(&r.path) {
                return Err(cx.err(key("path"), format!("`{}` is already the path of another route", r.path)));
            }
            seen.push(r.path.clone());
            let rules = match &r.rules {
                RulesFile::Preset(name) => Rules::preset(name)
                    .ok_or_else(|| cx.err(key("rules"), format!("unknown preset `{name}` (known: {})", PRESETS.join(", "))))?,
                RulesFile::List(list) => {
                    if list.is_empty() {
                        return Err(cx.err(key("rules"), "no rule: every request would be denied"));
                    }
                    let mut rules = Vec::with_capacity(list.len());
                    for (j, rule) in list.iter().enumerate() {
                        let rkey = |k: &str| format!("routes[{i}].rules[{j}].{k}");
                        let scope = Scope::from_name(&rule.scope).ok_or_else(|| {
                            let known: Vec<&str> = Scope::all().map(Scope::name).collect();
                            cx.err(
                                rkey("scope"),
                                format!("unknown scope `{}` (known: {})", rule.scope, known.join(", ")),
                            )
                        })?;
                        let methods = match &rule.methods {
                            None => None,
                            Some(ms) if ms.is_empty() => return Err(cx.err(rkey("methods"), "empty: leave it out to match every method")),
                            Some(ms) => Some(
                                ms.iter()
                                    .map(|m| {
                                        let upper = m.to_ascii_uppercase();
                                        Method::from_bytes(upper.as_bytes())
                                            .map_err(|_| cx.err(rkey("methods"), format!("`{m}` is not an HTTP method")))
                                    })
                                    .collect::<Result<Vec<_>, _>>()?,
                            ),
                        };
                        rules.push(Rule { methods, scope });
                    }
                    Rules::List(rules)
                }
            };
            let response_timeout = match &r.response_timeout {
                Some(t) => cx.duration(&key("response_timeout"), t)?,
                None => upstream.response_timeout,
            };
            let target =
                Upstream::parse(&r.upstream, response_timeout).map_err(|e| cx.err(key("upstream"), format!("`{}`: {e}", r.upstream)))?;
            routes.push(Route { pattern, rules, target });
        }
        let proxy = proxy::Config {
            listen,
            header_read_timeout: cx.duration("server.header_read_timeout", &f.server.header_read_timeout)?,
            max_header_bytes: f.server.max_header_bytes,
            max_connections: cx.positive("server.max_connections", f.server.max_connections)?,
            shutdown_grace: cx.duration("server.shutdown_grace", &f.server.shutdown_grace)?,
            workers: match f.server.workers {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n if n > MAX_WORKERS => return Err(cx.err("server.workers", format!("must be at most {MAX_WORKERS}"))),
                n => n,
            },
            routes: RouteTable::new(routes),
            upstream,
            git,
            body_rate: guard::body_rate::MinRate {
                bytes_per_sec: f.server.body_min_rate,
                grace: cx.duration("server.body_rate_grace", &f.server.body_rate_grace)?,
            },
            trusted_proxies: guard::client_addr::TrustedProxies::parse(&f.server.trusted_proxies)
                .map_err(|e| cx.err(format!("server.trusted_proxies[{}]", e.index), &e))?,
            brute_force: brute_force(&cx, &f.brute_force)?,
        };
        let store = store::Config {
            location: store::Location::parse(&f.store.url)
                .map_err(|e| cx.err("store.url", format!("`{}`: {e}", store::redact_url(&f.store.url))))?,
            poll_interval: cx.duration("store.poll_interval", &f.store.poll_interval)?,
            last_used_flush_interval: cx.duration("store.last_used_flush_interval", &f.store.last_used_flush_interval)?,
            max_connections: match cx.positive("store.max_connections", f.store.max_connections)? {
                n if n > 1000 => return Err(cx.err("store.max_connections", "must be at most 1000")),
                n => n,
            },
        };
        let audit = audit_config(&cx, &f.audit)?;
        let accept = accept_config(&cx, &f, &proxy)?;
        let admin = admin_config(&cx, &f, &proxy)?;
        let format = match f.log.format.as_str() {
            "text" => telemetry::Format::Text,
            "json" => telemetry::Format::Json,
            other => return Err(cx.err("log.format", format!("`{other}`: use text or json"))),
        };
        tracing_subscriber::EnvFilter::try_new(&f.log.level).map_err(|e| cx.err("log.level", format!("`{}`: {e}", f.log.level)))?;
        let log = telemetry::Config {
            format,
            filter: f.log.level.clone(),
            metrics: f.metrics.enabled,
        };
        Ok(Config {
            source: source.to_owned(),
            proxy,
            accept,
            store,
            admin,
            log,
            audit,
            origins,
        })
    }

    /// Where `key` was set, for a message about its value: `FILE:LINE: KEY`,
    /// `FILE: KEY` (a default), or `environment variable NAME: KEY`.
    pub fn place(&self, key: &str) -> String {
        ConfigError {
            file: self.source.display().to_string(),
            origin: self.origins.of(key),
            key: None,
            reason: key.to_owned(),
        }
        .to_string()
    }
}

fn audit_config(cx: &Ctx<'_>, a: &file::AuditFile) -> Result<audit::Config, ConfigError> {
    let allowed_requests = audit::AllowedRequests::from_name(&a.allowed_requests).ok_or_else(|| {
        cx.err(
            "audit.allowed_requests",
            format!("`{}`: use {}", a.allowed_requests, audit::AllowedRequests::NAMES.join(", ")),
        )
    })?;
    Ok(audit::Config {
        retention: cx.duration("audit.retention", &a.retention)?,
        allowed_requests,
        queue: cx.positive("audit.queue", a.queue)?,
        stream_backlog: cx.positive("audit.stream_backlog", a.stream_backlog)?,
        expiry_warning: cx.duration("audit.expiry_warning", &a.expiry_warning)?,
        stream_dir: match a.stream_dir.as_str() {
            "" => None,
            dir if Path::new(dir).is_absolute() => Some(PathBuf::from(dir)),
            dir => return Err(cx.err("audit.stream_dir", format!("`{dir}` is not an absolute path"))),
        },
        webhook_allow: audit::webhook_allow::WebhookAllow::parse(&a.webhook_allow)
            .map_err(|e| cx.err(format!("audit.webhook_allow[{}]", e.index), &e))?,
    })
}

fn brute_force(cx: &Ctx<'_>, b: &file::BruteForceFile) -> Result<Option<guard::lockout::Config>, ConfigError> {
    let config = guard::lockout::Config {
        max_failures: cx.positive("brute_force.max_failures", b.max_failures as usize)? as u32,
        window: cx.duration("brute_force.window", &b.window)?,
        block: cx.duration("brute_force.block", &b.block)?,
        max_tracked: cx.positive("brute_force.max_tracked", b.max_tracked)?,
    };
    Ok(b.enabled.then_some(config))
}

/// True when two listen addresses would take the same port: the same port (not 0) on the
/// same address, or on an address and the wildcard of its family.
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}

/// A listener's `[SECTION.tls]`, its files read and checked now, so that a bad one is
/// named with its key at start and on reload alike.
fn tls_config(cx: &Ctx<'_>, section: &str, t: &TlsFile, alpn: &[&[u8]], client_ca: bool) -> Result<Option<ListenerTls>, ConfigError> {
    let key = |k: &str| format!("{section}.tls.{k}");
    let handshake_timeout = cx.duration(&key("handshake_timeout"), &t.handshake_timeout)?;
    match (t.cert_file.is_empty(), t.key_file.is_empty()) {
        (true, true) => {
            if client_ca && !t.client_ca_file.is_empty() {
                return Err(cx.err(
                    key("client_ca_file"),
                    "needs cert_file and key_file: client certificates are asked for over TLS",
                ));
            }
            return Ok(None);
        }
        (false, true) => return Err(cx.err(key("key_file"), "is needed with cert_file")),
        (true, false) => return Err(cx.err(key("cert_file"), "is needed with key_file")),
        (false, false) => {}
    }
    if !client_ca && !t.client_ca_file.is_empty() {
        return Err(cx.err(
            key("client_ca_file"),
            "client certificates are asked for on the admin listener only",
        ));
    }
    let files = TlsFiles {
        cert: PathBuf::from(&t.cert_file),
        key: PathBuf::from(&t.key_file),
        client_ca: (!t.client_ca_file.is_empty()).then(|| PathBuf::from(&t.client_ca_file)),
    };
    let config = tls::server_config(&files, alpn).map_err(|e| {
        let k = match &e {
            tls::TlsError::Read { path, .. } | tls::TlsError::NoCertificate(path) | tls::TlsError::BadPem { path, .. }
                if *path == files.cert =>
            {
                "cert_file"
            }
            tls::TlsError::ClientCa { .. } => "client_ca_file",
            tls::TlsError::Read { path, .. } | tls::TlsError::NoCertificate(path) | tls::TlsError::BadPem { path, .. }
                if Some(path) == files.client_ca.as_ref() =>
            {
                "client_ca_file"
            }
            tls::TlsError::Rejected(_) => "cert_file",
            _ => "key_file",
        };
        cx.err(key(k), e)
    })?;
    Ok(Some(ListenerTls {
        files,
        config,
        handshake_timeout,
    }))
}

fn accept_config(cx: &Ctx<'_>, f: &FileConfig, proxy: &proxy::Config) -> Result<accept::Config, ConfigError> {
    let s = &f.server;
    let h = &f.http2;
    if h.max_concurrent_streams == 0 {
        return Err(cx.err("http2.max_concurrent_streams", "must be at least 1"));
    }
    Ok(accept::Config {
        tls: tls_config(cx, "server", &s.tls, tls::ALPN_PROXY, false)?,
        max_connections_per_ip: cx.positive("server.max_connections_per_ip", s.max_connections_per_ip)?,
        idle_timeout: cx.duration("server.idle_timeout", &s.idle_timeout)?,
        header_read_timeout: proxy.header_read_timeout,
        max_header_bytes: proxy.max_header_bytes,
        http2: accept::Http2Limits {
            max_concurrent_streams: h.max_concurrent_streams,
            max_pending_resets: cx.positive("http2.max_pending_resets", h.max_pending_resets)?,
            max_local_error_resets: cx.positive("http2.max_local_error_resets", h.max_local_error_resets)?,
            keep_alive_interval: cx.duration("http2.keep_alive_interval", &h.keep_alive_interval)?,
            keep_alive_timeout: cx.duration("http2.keep_alive_timeout", &h.keep_alive_timeout)?,
        },
    })
}

fn admin_config(cx: &Ctx<'_>, f: &FileConfig, proxy: &proxy::Config) -> Result<admin::Config, ConfigError> {
    let a = &f.admin;
    let listen = cx.listen("admin.listen", &a.listen, "127.0.0.1:9090")?;
    if a.enabled && same_socket(listen, proxy.listen) {
        return Err(cx.err(
            "admin.listen",
            format!("`{listen}` is the proxy's address (server.listen); give the admin API its own"),
        ));
    }
    if !(1024..=16 * 1024 * 1024).contains(&a.max_body_bytes) {
        return Err(cx.err("admin.max_body_bytes", "must be from 1024 to 16777216"));
    }
    let leak_reports_per_minute = std::num::NonZeroU32::new(a.leak_reports_per_minute)
        .ok_or_else(|| cx.err("admin.leak_reports_per_minute", "must be at least 1"))?;
    let p = &f.policy;
    let max_lifespan = cx.duration("policy.max_lifespan", &p.max_lifespan)?;
    let default_lifespan = cx.duration("policy.default_lifespan", &p.default_lifespan)?;
    if max_lifespan < Duration::from_secs(1) {
        return Err(cx.err("policy.max_lifespan", "must be at least 1s"));
    }
    if default_lifespan < Duration::from_secs(1) {
        return Err(cx.err("policy.default_lifespan", "must be at least 1s"));
    }
    if default_lifespan > max_lifespan {
        return Err(cx.err(
            "policy.default_lifespan",
            format!("`{}` is longer than policy.max_lifespan (`{}`)", p.default_lifespan, p.max_lifespan),
        ));
    }
    let grantable_scopes = ScopeSet::parse(&p.grantable_scopes).map_err(|e| cx.err("policy.grantable_scopes", e))?;
    Ok(admin::Config {
        enabled: a.enabled,
        listen,
        max_body_bytes: a.max_body_bytes,
        max_wait: cx.duration("admin.max_wait", &a.max_wait)?,
        leak_reports_per_minute,
        max_secrets_per_report: cx.positive("admin.max_secrets_per_report", a.max_secrets_per_report)?,
        max_connections: cx.positive("admin.max_connections", a.max_connections)?,
        max_connections_per_ip: cx.positive("admin.max_connections_per_ip", a.max_connections_per_ip)?,
        header_read_timeout: proxy.header_read_timeout,
        max_header_bytes: proxy.max_header_bytes,
        shutdown_grace: proxy.shutdown_grace,
        tls: tls_config(cx, "admin", &a.tls, tls::ALPN_ADMIN, true)?,
        policy: Policy {
            max_lifespan,
            default_lifespan,
            grantable_scopes,
            allow_all_orgs: p.allow_all_orgs,
            allow_full: p.allow_full,
            rotation_grace: rotation_grace(cx, &p.rotation_grace)?,
        },
        console: console_config(cx, &f.console)?,
    })
}

/// `policy.rotation_grace`: from none (`0s`) to an hour; longer would let a stolen
/// secret be tried again for long without revoking its token.
fn rotation_grace(cx: &Ctx<'_>, value: &str) -> Result<Duration, ConfigError> {
    const KEY: &str = "policy.rotation_grace";
    let d = humantime::parse_duration(value).map_err(|e| cx.err(KEY, format!("`{value}` is not a duration ({e}); write e.g. 10s, 0s")))?;
    if d > Duration::from_secs(3600) {
        return Err(cx.err(KEY, "must be at most 1h"));
    }
    if d.subsec_nanos() != 0 {
        return Err(cx.err(
            KEY,
            format!("`{value}`: must be whole seconds (the rotation's time is kept in seconds)"),
        ));
    }
    Ok(d)
}

fn console_config(cx: &Ctx<'_>, c: &file::ConsoleFile) -> Result<admin::sessions::Config, ConfigError> {
    let session_idle = cx.duration("console.session_idle", &c.session_idle)?;
    let session_max = cx.duration("console.session_max", &c.session_max)?;
    if session_idle > session_max {
        return Err(cx.err(
            "console.session_idle",
            format!("`{}` is longer than console.session_max (`{}`)", c.session_idle, c.session_max),
        ));
    }
    Ok(admin::sessions::Config {
        enabled: c.enabled,
        session_idle,
        session_max,
        max_sessions: cx.positive("console.max_sessions", c.max_sessions)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("patgate.toml");
        std::fs::write(&path, toml).unwrap();
        load_with_env(&path, &[]).map_err(|mut e| {
            e.file = "patgate.toml".into();
            e
        })
    }

    const ROUTE: &str = "[[routes]]\npath = \"/{org}/**\"\nupstream = \"git-http-backend:repos\"\nrules = \"git\"\n";

    fn err(toml: &str) -> String {
        parse(toml).unwrap_err().to_string()
    }

    #[test]
    fn the_shipped_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/patgate.toml");
        let c = load(&path).unwrap();
        assert_eq!(c.proxy.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.proxy.routes.iter().count(), 2);
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
        // The commented grantable_scopes is the default, spelled out.
        let text = std::fs::read_to_string(&path).unwrap();
        let line = text.lines().find(|l| l.starts_with("# grantable_scopes = ")).unwrap();
        let names: Vec<String> = line["# grantable_scopes = ".len()..]
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|n| n.trim().trim_matches('"').to_owned())
            .collect();
        assert_eq!(ScopeSet::parse(&names).unwrap(), c.admin.policy.grantable_scopes);
    }

    #[test]
    fn defaults_fill_what_the_file_leaves_out() {
        let c = parse(ROUTE).unwrap();
        assert_eq!(c.proxy.header_read_timeout, Duration::from_secs(30));
        assert_eq!(c.store.poll_interval, Duration::from_millis(250));
        assert_eq!(c.store.location, store::Location::Sqlite("data/patgate.db".into()));
        assert_eq!(c.log.format, telemetry::Format::Text);
        assert!(c.admin.enabled);
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.admin.max_body_bytes, 64 * 1024);
        assert_eq!(c.admin.max_wait, Duration::from_secs(60));
        assert_eq!(c.admin.leak_reports_per_minute.get(), 10);
        assert_eq!(c.admin.max_secrets_per_report, 100);
        assert_eq!(c.audit, audit::Config::default());
        let p = &c.admin.policy;
        assert_eq!(p.max_lifespan, Duration::from_secs(365 * 86400));
        assert_eq!(p.default_lifespan, Duration::from_secs(30 * 86400));
        let admin = Scope::from_name("tokens:admin").unwrap();
        assert!(!p.grantable_scopes.allows(admin));
        assert!(Scope::all().filter(|&s| s != admin).all(|s| p.grantable_scopes.allows(s)));
        assert!(p.allow_all_orgs && !p.allow_full);
    }

    #[test]
    fn the_admin_api_may_share_no_port_with_the_proxy_unless_disabled_or_ephemeral() {
        let both = |server: &str, admin: &str| format!("[server]\nlisten = \"{server}\"\n[admin]\nlisten = \"{admin}\"\n{ROUTE}");
        assert!(parse(&both("127.0.0.1:8080", "127.0.0.1:8081")).is_ok());
        assert!(parse(&both("127.0.0.1:0", "127.0.0.1:0")).is_ok());
        assert!(parse(&both("127.0.0.1:8080", "[::1]:8080")).is_ok());
        assert!(parse(&both("[::]:8080", "[::1]:8080")).is_err());
        let off = format!("[admin]\nenabled = false\nlisten = \"127.0.0.1:8080\"\n{ROUTE}");
        assert!(!parse(&off).unwrap().admin.enabled);
    }

    #[test]
    fn policy_reads_its_scopes_with_their_implications() {
        let c = parse(&format!(
            "[policy]\ngrantable_scopes = [\"code:write\"]\nallow_all_orgs = false\nallow_full = true\n{ROUTE}"
        ))
        .unwrap();
        let p = c.admin.policy;
        assert_eq!(p.grantable_scopes, ScopeSet::parse(&["code:write", "code:read"]).unwrap());
        assert!(!p.allow_all_orgs && p.allow_full);
    }

    #[test]
    fn each_rule_names_the_file_and_key() {
        let cases: &[(&str, &str)] = &[
            (
                "[server]\nlisten = \"nowhere\"\n",
                "patgate.toml:2: server.listen: `nowhere` is not an address",
            ),
            (
                "[server]\nheader_read_timeout = \"soon\"\n",
                "patgate.toml:2: server.header_read_timeout: `soon` is not a duration",
            ),
            (
                "[server]\nmax_header_bytes = 100\n",
                "patgate.toml:2: server.max_header_bytes: must be at least 8192",
            ),
            (
                "[server]\nmax_connections = 0\n",
                "patgate.toml:2: server.max_connections: must be at least 1",
            ),
            ("[server]\nworkers = 1000\n", "patgate.toml:2: server.workers: must be at most 256"),
            (
                "[store]\nurl = \"mysql://x\"\n",
                "patgate.toml:2: store.url: `mysql://x`: unknown store URL scheme",
            ),
            (
                "[store]\npoll_interval = \"0s\"\n",
                "patgate.toml:2: store.poll_interval: must be more than zero",
            ),
            ("[log]\nformat = \"xml\"\n", "patgate.toml:2: log.format: `xml`: use text or json"),
            (
                "[git]\nmax_processes = 0\n",
                "patgate.toml:2: git.max_processes: must be at least 1",
            ),
            (
                "[admin]\nlisten = \"nowhere\"\n",
                "patgate.toml:2: admin.listen: `nowhere` is not an address",
            ),
            (
                "[admin]\nlisten = \"127.0.0.1:8080\"\n",
                "patgate.toml:2: admin.listen: `127.0.0.1:8080` is the proxy's address",
            ),
            (
                "[server]\nlisten = \"0.0.0.0:7000\"\n[admin]\nlisten = \"127.0.0.1:7000\"\n",
                "patgate.toml:4: admin.listen: `127.0.0.1:7000` is the proxy's address",
            ),
            (
                "[admin]\nmax_body_bytes = 10\n",
                "patgate.toml:2: admin.max_body_bytes: must be from 1024",
            ),
            (
                "[admin]\nmax_wait = \"0s\"\n",
                "patgate.toml:2: admin.max_wait: must be more than zero",
            ),
            (
                "[admin]\nleak_reports_per_minute = 0\n",
                "patgate.toml:2: admin.leak_reports_per_minute: must be at least 1",
            ),
            (
                "[admin]\nmax_secrets_per_report = 0\n",
                "patgate.toml:2: admin.max_secrets_per_report: must be at least 1",
            ),
            (
                "[admin]\nmax_connections = 0\n",
                "patgate.toml:2: admin.max_connections: must be at least 1",
            ),
            (
                "[policy]\nmax_lifespan = \"forever\"\n",
                "patgate.toml:2: policy.max_lifespan: `forever` is not a duration",
            ),
            (
                "[policy]\nmax_lifespan = \"10ms\"\n",
                "patgate.toml:2: policy.max_lifespan: must be at least 1s",
            ),
            (
                "[policy]\ndefault_lifespan = \"500ms\"\n",
                "patgate.toml:2: policy.default_lifespan: must be at least 1s",
            ),
            (
                "[policy]\nmax_lifespan = \"7d\"\n",
                "patgate.toml: policy.default_lifespan: `30d` is longer than policy.max_lifespan (`7d`)",
            ),
            (
                "[policy]\ngrantable_scopes = [\"code:read\", \"code:delete\"]\n",
                "patgate.toml:2: policy.grantable_scopes: unknown scope `code:delete`",
            ),
            (
                "[server]\nmax_connections_per_ip = 0\n",
                "patgate.toml:2: server.max_connections_per_ip: must be at least 1",
            ),
            (
                "[server]\nidle_timeout = \"0s\"\n",
                "patgate.toml:2: server.idle_timeout: must be more than zero",
            ),
            (
                "[server.tls]\ncert_file = \"c.pem\"\n",
                "patgate.toml: server.tls.key_file: is needed with cert_file",
            ),
            (
                "[server.tls]\nkey_file = \"k.pem\"\n",
                "patgate.toml: server.tls.cert_file: is needed with key_file",
            ),
            (
                "[server.tls]\ncert_file = \"/nonexistent/c.pem\"\nkey_file = \"/nonexistent/k.pem\"\n",
                "patgate.toml:2: server.tls.cert_file: cannot read /nonexistent/c.pem",
            ),
            (
                "[server.tls]\nhandshake_timeout = \"soon\"\n",
                "patgate.toml:2: server.tls.handshake_timeout: `soon` is not a duration",
            ),
            (
                "[server.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nclient_ca_file = \"ca.pem\"\n",
                "patgate.toml:4: server.tls.client_ca_file: client certificates are asked for on the admin listener only",
            ),
            (
                "[admin.tls]\nclient_ca_file = \"ca.pem\"\n",
                "patgate.toml:2: admin.tls.client_ca_file: needs cert_file and key_file",
            ),
            (
                "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.1/8\"]\n",
                "patgate.toml:2: server.trusted_proxies[1]: \"10.0.0.1/8\"",
            ),
            (
                "[server]\nbody_rate_grace = \"0s\"\n",
                "patgate.toml:2: server.body_rate_grace: must be more than zero",
            ),
            (
                "[brute_force]\nmax_failures = 0\n",
                "patgate.toml:2: brute_force.max_failures: must be at least 1",
            ),
            (
                "[brute_force]\nblock = \"forever\"\n",
                "patgate.toml:2: brute_force.block: `forever` is not a duration",
            ),
            (
                "[upstream]\nresponse_timeout = \"300000000000y\"\n",
                "patgate.toml:2: upstream.response_timeout: must be at most 100 years",
            ),
            (
                "[brute_force]\nmax_tracked = 0\n",
                "patgate.toml:2: brute_force.max_tracked: must be at least 1",
            ),
            (
                "[http2]\nmax_concurrent_streams = 0\n",
                "patgate.toml:2: http2.max_concurrent_streams: must be at least 1",
            ),
            (
                "[http2]\nmax_pending_resets = 0\n",
                "patgate.toml:2: http2.max_pending_resets: must be at least 1",
            ),
            (
                "[audit]\nallowed_requests = \"some\"\n",
                "patgate.toml:2: audit.allowed_requests: `some`: use per_minute, each, none",
            ),
            (
                "[audit]\nretention = \"0s\"\n",
                "patgate.toml:2: audit.retention: must be more than zero",
            ),
            ("[audit]\nqueue = 0\n", "patgate.toml:2: audit.queue: must be at least 1"),
            (
                "[store]\nmax_connections = 0\n",
                "patgate.toml:2: store.max_connections: must be at least 1",
            ),
            (
                "[store]\nmax_connections = 5000\n",
                "patgate.toml:2: store.max_connections: must be at most 1000",
            ),
            (
                "[policy]\nrotation_grace = \"2h\"\n",
                "patgate.toml:2: policy.rotation_grace: must be at most 1h",
            ),
            (
                "[policy]\nrotation_grace = \"500ms\"\n",
                "patgate.toml:2: policy.rotation_grace: `500ms`: must be whole seconds (the rotation's time is kept in seconds)",
            ),
            (
                "[audit]\nstream_dir = \"logs\"\n",
                "patgate.toml:2: audit.stream_dir: `logs` is not an absolute path",
            ),
            (
                "[audit]\nwebhook_allow = [\"external\", \"intranet\"]\n",
                "patgate.toml:2: audit.webhook_allow[1]: `intranet`: use external, private, loopback or an address range such as 10.1.0.0/16",
            ),
            (
                "[http2]\nkeep_alive_interval = \"often\"\n",
                "patgate.toml:2: http2.keep_alive_interval: `often` is not a duration",
            ),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .map(|(extra, want)| (err(&format!("{extra}{ROUTE}")), want))
            .filter(|(e, want)| !e.starts_with(*want))
            .map(|(e, want)| format!("{e}\n  wanted: {want}"))
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn tls_files_are_read_at_load_and_a_bad_one_is_named_by_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        let tls = |section: &str, cert: &Path, key: &Path, ca: &str| {
            format!(
                "[{section}.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{ca}\"\n{ROUTE}",
                cert.display(),
                key.display()
            )
        };
        let on = parse(&tls("server", &cert, &key, "")).unwrap();
        let t = on.accept.tls.unwrap();
        assert_eq!(t.handshake_timeout, Duration::from_secs(10));
        assert_eq!(t.config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        let admin = parse(&tls("admin", &cert, &key, cert.to_str().unwrap())).unwrap();
        let t = admin.admin.tls.unwrap();
        assert_eq!(t.files.client_ca.as_deref(), Some(cert.as_path()));
        assert_eq!(t.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let e = parse(&tls("server", &cert, &cert, "")).unwrap_err().to_string();
        assert!(e.starts_with("patgate.toml:3: server.tls.key_file: "), "{e}");
        let e = parse(&tls("server", &key, &key, "")).unwrap_err().to_string();
        assert!(e.starts_with("patgate.toml:2: server.tls.cert_file: "), "{e}");
        let e = parse(&tls("admin", &cert, &key, key.to_str().unwrap())).unwrap_err().to_string();
        assert!(e.starts_with("patgate.toml:4: admin.tls.client_ca_file: "), "{e}");
        // Defaults: TLS off, HTTP/2 limits on.
        let off = parse(ROUTE).unwrap();
        assert!(off.accept.tls.is_none() && off.admin.tls.is_none());
        assert_eq!(off.accept.http2.max_concurrent_streams, 100);
        assert_eq!(off.accept.max_connections_per_ip, 256);
        assert_eq!(off.accept.idle_timeout, Duration::from_secs(60));
        assert_eq!(off.proxy.body_rate.bytes_per_sec, 1024);
        assert_eq!(off.proxy.brute_force.unwrap().max_failures, 20);
        assert!(off.proxy.trusted_proxies.is_empty());
    }

    #[test]
    fn route_errors_name_the_route() {
        let e = err("[[routes]]\npath = \"x\"\nupstream = \"http://127.0.0.1:1\"\nrules = \"git\"\n");
        assert!(e.starts_with("patgate.toml:2: routes[0].path: `x`: must start with '/'"), "{e}");
        let e = err("[[routes]]\npath = \"/x\"\nupstream = \"ftp://h\"\nrules = \"git\"\n");
        assert!(e.starts_with("patgate.toml:3: routes[0].upstream: `ftp://h`"), "{e}");
        let e = err("[[routes]]\npath = \"/x\"\nupstream = \"http://127.0.0.1:1\"\nrules = \"svn\"\n");
        assert!(e.starts_with("patgate.toml:4: routes[0].rules: unknown preset `svn`"), "{e}");
        let e = err("[[routes]]\npath = \"/x\"\nupstream = \"http://127.0.0.1:1\"\nrules = [{ scope = \"code:delete\" }]\n");
        assert!(
            e.starts_with("patgate.toml:4: routes[0].rules[0].scope: unknown scope `code:delete`"),
            "{e}"
        );
        let e =
            err("[[routes]]\npath = \"/x\"\nupstream = \"http://127.0.0.1:1\"\nrules = [{ methods = [\"G T\"], scope = \"code:read\" }]\n");
        assert!(
            e.starts_with("patgate.toml:4: routes[0].rules[0].methods: `G T` is not an HTTP method"),
            "{e}"
        );
        let e = err("");
        assert!(e.starts_with("patgate.toml: routes: at least one"), "{e}");
        let e = err(&format!("{ROUTE}{ROUTE}"));
        assert!(e.starts_with("patgate.toml:6: routes[1].path:"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors_that_name_them() {
        let e = err(&format!("[server]\nlisten_on = \"x\"\n{ROUTE}"));
        assert!(
            e.starts_with("patgate.toml:2: server.listen_on: unknown field `listen_on`, expected one of `listen`"),
            "{e}"
        );
        let e = err(&format!("{ROUTE}\n[sever]\n"));
        assert!(e.starts_with("patgate.toml:6: sever: unknown field `sever`"), "{e}");
        let e = err(&format!("[server]\nworkers = \"two\"\n{ROUTE}"));
        assert!(e.starts_with("patgate.toml:2: server.workers: invalid type: string \"two\""), "{e}");
    }

    #[test]
    fn upstream_ca_file_must_hold_a_certificate() {
        use crate::proxy::upstream::{Trust, Upstream};
        let c = parse(&format!(
            "[[routes]]\npath = \"/x\"\nupstream = \"https://git.example.com\"\nrules = \"git\"\n{ROUTE}"
        ))
        .unwrap();
        assert_eq!(c.proxy.upstream.trust, Trust::System);
        let Some(Upstream::Http(target)) = c.proxy.routes.iter().map(|r| &r.target).find(|t| matches!(t, Upstream::Http(_))) else {
            panic!("no https route")
        };
        assert!(target.tls);
        let dir = tempfile::tempdir().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let pem = ca.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, pem).unwrap();
        let c = parse(&format!("[upstream]\nca_file = \"{}\"\n{ROUTE}", good.display())).unwrap();
        assert!(matches!(&c.proxy.upstream.trust, Trust::Bundle { file, certs } if *file == good && certs.len() == 1));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = err(&format!("[upstream]\nca_file = \"{}\"\n{ROUTE}", empty.display()));
        assert_eq!(
            e,
            format!(
                "patgate.toml:2: upstream.ca_file: `{}` holds no certificate (no `BEGIN CERTIFICATE` section)",
                empty.display()
            )
        );
        let e = err(&format!("[upstream]\nca_file = \"/nonexistent/ca.pem\"\n{ROUTE}"));
        assert!(
            e.starts_with("patgate.toml:2: upstream.ca_file: `/nonexistent/ca.pem` cannot be read ("),
            "{e}"
        );
    }

    fn env_err(toml: &str, env: &[(&str, &str)]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("patgate.toml");
        std::fs::write(&path, toml).unwrap();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let e = load_with_env(&path, &env).unwrap_err();
        assert_eq!(e.file, path.display().to_string());
        e.to_string()
    }

    #[test]
    fn a_variable_s_mistake_names_the_variable_not_the_file() {
        let e = env_err(ROUTE, &[("PATGATE__LOG__LEVEL", "info"), ("PATGATE__SERVER__LISTN", "1")]);
        assert!(
            e.starts_with("environment variable PATGATE__SERVER__LISTN: server.listn: unknown field `listn`, expected one of `listen`"),
            "{e}"
        );
        let e = env_err(ROUTE, &[("PATGATE__SERVER__LISTEN", "localhost:22080")]);
        assert_eq!(
            e,
            "environment variable PATGATE__SERVER__LISTEN: server.listen: `localhost:22080` is not an address such as \
             127.0.0.1:8080 (a host name is not accepted: write an IP address, e.g. 127.0.0.1 or 0.0.0.0)"
        );
        let e = env_err(ROUTE, &[("PATGATE__SERVER__WORKERS", "two")]);
        assert!(
            e.starts_with("environment variable PATGATE__SERVER__WORKERS: server.workers: invalid type: "),
            "{e}"
        );
        // The variable wins over the file, and the message says so.
        let e = env_err(
            &format!("[admin]\nlisten = \"127.0.0.1:9091\"\n{ROUTE}"),
            &[("PATGATE__ADMIN__LISTEN", "nowhere")],
        );
        assert!(
            e.starts_with("environment variable PATGATE__ADMIN__LISTEN: admin.listen: `nowhere`"),
            "{e}"
        );
    }

    #[test]
    fn a_syntax_error_is_one_line_with_its_place() {
        let e = err(&format!("{ROUTE}[server]\nlisten = \"127.0.0.1:8080\n"));
        assert!(e.starts_with("patgate.toml:6: "), "{e}");
        assert!(e.ends_with(')') && e.contains("(column "), "{e}");
        assert!(!e.contains('\n') && !e.contains("` in "), "{e}");
        let e = err("[server\n");
        assert!(e.starts_with("patgate.toml:1: "), "{e}");
    }

    #[test]
    fn a_host_name_is_refused_with_the_reason() {
        let e = err(&format!("[server]\nlisten = \"localhost:8080\"\n{ROUTE}"));
        assert!(e.contains("a host name is not accepted"), "{e}");
        let e = err(&format!("[server]\nlisten = \"127.0.0.1\"\n{ROUTE}"));
        assert!(!e.contains("host name"), "{e}");
    }

    #[test]
    fn place_names_the_key_and_where_it_was_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("patgate.toml");
        std::fs::write(&path, format!("[admin]\nlisten = \"127.0.0.1:9091\"\n{ROUTE}")).unwrap();
        let env = [("PATGATE__SERVER__LISTEN".to_owned(), "127.0.0.1:8081".to_owned())];
        let c = load_with_env(&path, &env).unwrap();
        assert_eq!(c.place("admin.listen"), format!("{}:2: admin.listen", path.display()));
        assert_eq!(
            c.place("server.listen"),
            "environment variable PATGATE__SERVER__LISTEN: server.listen"
        );
        assert_eq!(c.place("log.level"), format!("{}: log.level", path.display()));
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = load(Path::new("/nonexistent/patgate.toml")).unwrap_err().to_string();
        assert_eq!(
            e,
            "/nonexistent/patgate.toml: no such file; name the config file with --config FILE or the PATGATE_CONFIG variable"
        );
        let e = load(Path::new("config/nowhere.toml")).unwrap_err().to_string();
        let here = std::env::current_dir().unwrap();
        assert!(
            e.starts_with(&format!("config/nowhere.toml: no such file under {}; ", here.display())),
            "{e}"
        );
    }

    #[test]
    fn the_console_section_has_defaults_and_is_checked() {
        let c = parse(ROUTE).unwrap();
        assert_eq!(c.admin.console, admin::sessions::Config::default());
        assert!(c.admin.console.enabled);
        assert_eq!(c.admin.console.session_idle, Duration::from_secs(30 * 60));
        assert_eq!(c.admin.console.session_max, Duration::from_secs(12 * 3600));
        assert_eq!(c.admin.console.max_sessions, 10_000);
        let set = parse(&format!(
            "[console]\nenabled = false\nsession_idle = \"5m\"\nsession_max = \"1h\"\nmax_sessions = 7\n{ROUTE}"
        ))
        .unwrap();
        let want = admin::sessions::Config {
            enabled: false,
            session_idle: Duration::from_secs(300),
            session_max: Duration::from_secs(3600),
            max_sessions: 7,
        };
        assert_eq!(set.admin.console, want);
        for (toml, want) in [
            (
                "[console]\nsession_idle = \"0s\"\n",
                "patgate.toml:2: console.session_idle: must be more than zero",
            ),
            (
                "[console]\nsession_max = \"soon\"\n",
                "patgate.toml:2: console.session_max: `soon` is not a duration",
            ),
            (
                "[console]\nsession_idle = \"2h\"\nsession_max = \"1h\"\n",
                "patgate.toml:2: console.session_idle: `2h` is longer than console.session_max (`1h`)",
            ),
            (
                "[console]\nmax_sessions = 0\n",
                "patgate.toml:2: console.max_sessions: must be at least 1",
            ),
            ("[console]\nsessions = 1\n", "console"),
        ] {
            let got = err(&format!("{toml}{ROUTE}"));
            assert!(
                got.starts_with(want) || (want == "console" && got.contains("sessions")),
                "{toml}: {got}"
            );
        }
    }
}
