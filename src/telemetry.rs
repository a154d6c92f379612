//! Logging set-up: one subscriber writing to standard error, human-readable or JSON.
//! Targets: `patgate::access` (one event per request), `patgate::cgi` (git's own stderr).
//! No event carries a secret or an Authorization value: the request path logs token ids.

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Logging settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub format: Format,
    /// A tracing filter; `RUST_LOG` overrides it.
    pub filter: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            format: Format::Text,
            filter: "info".into(),
        }
    }
}

/// Installs the global subscriber. Call once, early.
pub fn init(config: &Config) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.format {
        Format::Text => builder.with_ansi(false).try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
}
