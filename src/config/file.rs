//! `FileConfig`: the serde structs that the config crate fills from the defaults below,
//! the TOML file and `PATGATE__SECTION__KEY` environment variables. Nothing here is
//! validated; [`super::Config`] is built from it by `TryFrom`. Every default lives here.

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub server: ServerFile,
    pub store: StoreFile,
    pub upstream: UpstreamFile,
    pub git: GitFile,
    pub log: LogFile,
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
}

impl Default for ServerFile {
    fn default() -> Self {
        ServerFile {
            listen: "127.0.0.1:8080".into(),
            header_read_timeout: "30s".into(),
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            shutdown_grace: "30s".into(),
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
}

impl Default for StoreFile {
    fn default() -> Self {
        StoreFile {
            url: "sqlite://data/patgate.db".into(),
            poll_interval: "250ms".into(),
            last_used_flush_interval: "30s".into(),
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
}

impl Default for UpstreamFile {
    fn default() -> Self {
        UpstreamFile {
            connect_timeout: "5s".into(),
            response_timeout: "60s".into(),
            pool_idle_timeout: "90s".into(),
            pool_max_idle_per_host: 64,
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
