//! Logging set-up: one subscriber writing to standard error, human-readable or JSON.
//! Targets: `patgate::access` (one event per request), `patgate::cgi` (git's own stderr),
//! `patgate::audit` (the audit trail's writer: a full queue, a store that fails).
//! No event carries a secret or an Authorization value: the request path logs token ids.

pub mod metrics;

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
    /// `[metrics] enabled`: the request path counts, and `GET /metrics` answers.
    pub metrics: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            format: Format::Text,
            filter: "info".into(),
            metrics: true,
        }
    }
}

/// Installs the global subscriber. Call once, early.
pub fn init(config: &Config) {
    metrics::metrics().set_enabled(config.metrics);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.format {
        Format::Text => builder.with_ansi(false).try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// A duration in milliseconds as the logs carry it (`duration_ms`): to the microsecond,
/// so that a field reads `0.013`, not `0.013179999999999999`.
pub fn millis(d: std::time::Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_are_logged_to_the_microsecond_in_few_digits() {
        for (nanos, text) in [(13_180, "0.013"), (13_179_999, "13.179"), (0, "0"), (2_500_000_000, "2500")] {
            assert_eq!(millis(Duration::from_nanos(nanos)).to_string(), text);
        }
    }
}
