//! `FileConfig`: the serde structs that the config crate fills from the defaults below,
//! the TOML file and `PATGATE__SECTION__KEY` environment variables. Nothing here is
//! validated; [`super::Config`] is built from it by `TryFrom`. Every default lives here.

use serde::Deserialize;

use crate::auth::scope::Scope;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub server: ServerFile,
    pub http2: Http2File,
    pub brute_force: BruteForceFile,
    pub store: StoreFile,
    pub upstream: UpstreamFile,
    pub git: GitFile,
    pub log: LogFile,
    pub admin: AdminFile,
    pub policy: PolicyFile,
    pub audit: AuditFile,
    pub metrics: MetricsFile,
    pub console: ConsoleFile,
    pub routes: Vec<RouteFile>,
}

/// `[server]`: the proxy listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerFile {
    pub listen: String,
    /// The longest a client may take to send a request's headers.
    pub header_read_timeout: String,
    /// The most bytes of request line and headers (at least 8192).
    pub max_header_bytes: usize,
    /// The most client connections open at once.
    pub max_connections: usize,
    /// How long requests in flight may run on after a shutdown signal.
    pub shutdown_grace: String,
    /// Proxy worker threads, each with its own event loop, listener socket and upstream
    /// connections; 0 means one per CPU.
    pub workers: usize,
    /// The most connections open at once from one client address (IPv6: one /64).
    pub max_connections_per_ip: usize,
    /// A connection with no request in flight and no byte moving either way is closed
    /// after this long.
    pub idle_timeout: String,
    /// Request bodies must arrive at least this fast (bytes per second) while the upstream
    /// waits for them ...
    pub body_min_rate: u64,
    /// ... once the upstream has waited this long in all.
    pub body_rate_grace: String,
    /// Peers whose `X-Forwarded-For` names the client: addresses or CIDR blocks.
    pub trusted_proxies: Vec<String>,
    /// TLS for the proxy listener; off while `cert_file` is empty.
    pub tls: TlsFile,
}

impl Default for ServerFile {
    fn default() -> Self {
        ServerFile {
            listen: "127.0.0.1:8080".into(),
            header_read_timeout: "30s".into(),
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            shutdown_grace: "30s".into(),
            workers: 0,
            max_connections_per_ip: 256,
            idle_timeout: "60s".into(),
            body_min_rate: 1024,
            body_rate_grace: "10s".into(),
            trusted_proxies: Vec::new(),
            tls: TlsFile::default(),
        }
    }
}

/// `[server.tls]` and `[admin.tls]`: PEM files, reloaded on SIGHUP.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFile {
    /// The certificate chain, leaf first.
    pub cert_file: String,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// The longest a client may take to finish the TLS handshake.
    pub handshake_timeout: String,
    /// Admin listener only: client certificates must chain to a CA in this file (mTLS).
    pub client_ca_file: String,
}

impl Default for TlsFile {
    fn default() -> Self {
        TlsFile {
            cert_file: String::new(),
            key_file: String::new(),
            handshake_timeout: "10s".into(),
            client_ca_file: String::new(),
        }
    }
}

/// `[http2]`: limits on HTTP/2 connections (offered over TLS by ALPN).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http2File {
    /// Streams open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Streams a client may open and reset before they are served; past it, GOAWAY
    /// (rapid reset).
    pub max_pending_resets: usize,
    /// Streams the server may reset for a client's protocol errors; past it, GOAWAY.
    pub max_local_error_resets: usize,
    /// How often an idle connection is pinged, and how long the answer may take.
    pub keep_alive_interval: String,
    pub keep_alive_timeout: String,
}

impl Default for Http2File {
    fn default() -> Self {
        Http2File {
            max_concurrent_streams: 100,
            max_pending_resets: 20,
            max_local_error_resets: 256,
            keep_alive_interval: "30s".into(),
            keep_alive_timeout: "20s".into(),
        }
    }
}

/// `[brute_force]`: failed authentications counted per client address.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BruteForceFile {
    pub enabled: bool,
    /// Failures within `window` that block the address.
    pub max_failures: u32,
    pub window: String,
    /// How long a blocked address gets 429.
    pub block: String,
    /// Addresses remembered at most.
    pub max_tracked: usize,
}

impl Default for BruteForceFile {
    fn default() -> Self {
        BruteForceFile {
            enabled: true,
            max_failures: 20,
            window: "1m".into(),
            block: "5m".into(),
            max_tracked: 100_000,
        }
    }
}

/// `[store]`: where tokens are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreFile {
    pub url: String,
    pub poll_interval: String,
    pub last_used_flush_interval: String,
    /// Pooled connections to PostgreSQL an instance holds at most (one more listens).
    pub max_connections: usize,
}

impl Default for StoreFile {
    fn default() -> Self {
        StoreFile {
            url: "sqlite://data/patgate.db".into(),
            poll_interval: "250ms".into(),
            last_used_flush_interval: "30s".into(),
            max_connections: 8,
        }
    }
}

/// `[upstream]`: how HTTP upstreams are reached.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamFile {
    pub connect_timeout: String,
    /// The longest wait for an upstream's response headers (routes may override it).
    pub response_timeout: String,
    pub pool_idle_timeout: String,
    pub pool_max_idle_per_host: usize,
    /// The most bytes of an upstream's answer head (each interim `1xx` head held to it too).
    pub max_response_head_bytes: usize,
    /// A PEM bundle of CA certificates that https upstreams are verified against, instead
    /// of the system's root certificates; empty: the system's.
    pub ca_file: String,
}

impl Default for UpstreamFile {
    fn default() -> Self {
        UpstreamFile {
            connect_timeout: "5s".into(),
            response_timeout: "60s".into(),
            pool_idle_timeout: "90s".into(),
            pool_max_idle_per_host: 64,
            max_response_head_bytes: 16 * 1024,
            ca_file: String::new(),
        }
    }
}

/// `[git]`: the built-in `git-http-backend:DIR` upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitFile {
    /// The git executable.
    pub binary: String,
    /// The most `git http-backend` processes running at once; more requests wait.
    pub max_processes: usize,
}

impl Default for GitFile {
    fn default() -> Self {
        GitFile {
            binary: "git".into(),
            max_processes: 32,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogFile {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter such as `info` or `patgate=debug`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogFile {
    fn default() -> Self {
        LogFile {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// `[admin]`: the admin API's own listener and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminFile {
    /// Whether the admin API listens at all.
    pub enabled: bool,
    pub listen: String,
    /// The largest request body read.
    pub max_body_bytes: usize,
    /// The longest an event-feed request may wait for new events.
    pub max_wait: String,
    /// Leak reports accepted per client address per minute.
    pub leak_reports_per_minute: u32,
    /// Secrets one leak report may carry.
    pub max_secrets_per_report: usize,
    /// Admin connections open at once (long polls included); more wait to be accepted.
    pub max_connections: usize,
    /// Admin connections open at once from one client address (IPv6: one /64); more get
    /// 503 and are closed.
    pub max_connections_per_ip: usize,
    /// TLS for the admin listener, and with `client_ca_file` client certificates (mTLS).
    pub tls: TlsFile,
}

impl Default for AdminFile {
    fn default() -> Self {
        AdminFile {
            enabled: true,
            listen: "127.0.0.1:9090".into(),
            max_body_bytes: 64 * 1024,
            max_wait: "60s".into(),
            leak_reports_per_minute: 10,
            max_secrets_per_report: 100,
            max_connections: 256,
            max_connections_per_ip: 64,
            tls: TlsFile::default(),
        }
    }
}

/// `[policy]`: what tokens made through the admin API may be.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyFile {
    /// The longest a token may live, from its creation.
    pub max_lifespan: String,
    /// The lifespan of a token created without `expires_in` or `expires_at`.
    pub default_lifespan: String,
    /// The scopes that callers without `tokens:admin` may grant.
    pub grantable_scopes: Vec<String>,
    /// Whether a token may cover every organization (`*`).
    pub allow_all_orgs: bool,
    /// Whether a token may hold every scope.
    pub allow_full: bool,
    /// How long after a rotation its old secret is refused without revoking the token
    /// (a request under way when its holder rotated); after it, the token is revoked.
    pub rotation_grace: String,
}

impl Default for PolicyFile {
    fn default() -> Self {
        PolicyFile {
            max_lifespan: "365d".into(),
            default_lifespan: "30d".into(),
            grantable_scopes: Scope::all()
                .filter(|s| s.name() != "tokens:admin")
                .map(|s| s.name().to_owned())
                .collect(),
            allow_all_orgs: true,
            allow_full: false,
            rotation_grace: "10s".into(),
        }
    }
}

/// `[metrics]`: the Prometheus metrics at the admin listener's `GET /metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsFile {
    /// Whether the request path counts requests (off: /metrics answers 404).
    pub enabled: bool,
}

impl Default for MetricsFile {
    fn default() -> Self {
        MetricsFile { enabled: true }
    }
}

/// `[console]`: the web token console on the admin listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleFile {
    /// Whether the admin listener serves the console at `/console/`.
    pub enabled: bool,
    /// A session unused this long ends.
    pub session_idle: String,
    /// A session ends this long after sign-in, used or not.
    pub session_max: String,
    /// Sessions at once; more sign-ins end the oldest.
    pub max_sessions: usize,
}

impl Default for ConsoleFile {
    fn default() -> Self {
        ConsoleFile {
            enabled: true,
            session_idle: "30m".into(),
            session_max: "12h".into(),
            max_sessions: 10_000,
        }
    }
}

/// `[audit]`: the audit trail and its streams.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditFile {
    /// How long entries are kept in the store.
    pub retention: String,
    /// Allowed requests in the trail: `per_minute` (one entry per token and minute, with
    /// a count), `each` (one per request), or `none`.
    pub allowed_requests: String,
    /// Entries waiting to be written, at most; more are dropped and counted.
    pub queue: usize,
    /// Entries waiting for one stream (sink), at most; more are dropped and counted.
    pub stream_backlog: usize,
    /// Tokens that expire within this long are warned of once (a stream event and a metric).
    pub expiry_warning: String,
    /// The folder file streams may write in (empty: file streams are refused).
    pub stream_dir: String,
    /// The addresses webhook streams may be delivered to: `external`, `private`,
    /// `loopback`, and address ranges.
    pub webhook_allow: Vec<String>,
}

impl Default for AuditFile {
    fn default() -> Self {
        AuditFile {
            retention: "90d".into(),
            allowed_requests: "per_minute".into(),
            queue: 10_000,
            stream_backlog: 10_000,
            expiry_warning: "7d".into(),
            stream_dir: String::new(),
            webhook_allow: vec!["external".into()],
        }
    }
}

/// `[[routes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub path: String,
    pub upstream: String,
    pub rules: RulesFile,
    #[serde(default)]
    pub response_timeout: Option<String>,
}

/// `rules = "git"` or `rules = [ { methods = [...], scope = "..." }, ... ]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RulesFile {
    Preset(String),
    List(Vec<RuleFile>),
}

/// One rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    pub scope: String,
}
