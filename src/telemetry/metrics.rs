//! Prometheus metrics: one registry for the process, served by the admin listener at
//! `GET /metrics` in the Prometheus text format (by `prometheus-client`).
//!
//! No label carries a secret, a token id or a client address: every label's values are
//! bounded by the config (routes, upstreams) or by the code (outcomes, method classes,
//! statuses). The request path adds to counters and a histogram once a request is
//! answered; the gauges that describe state (live tokens, lockouts) are read when
//! scraped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// A route's pattern and its upstream, as labels: shared, so that counting a request
/// copies no string.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RouteLabel {
    pub route: Arc<String>,
    pub upstream: Arc<String>,
}

/// `patgate_requests_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<String>,
    /// `read` (GET, HEAD, OPTIONS) or `write` (every other method).
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    route: Arc<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: Arc<String>,
    /// `error` (unreachable or broken) or `timeout`.
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// An audit stream, by its name (bounded: a store holds at most
/// [`crate::store::streams::MAX_STREAMS`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: String,
}

/// The expiry warning window as configured, e.g. `7d`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WithinLabels {
    within: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

/// How authentication ended for a request that reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(strum::EnumIter))]
pub enum AuthOutcome {
    Allowed,
    NoCredential,
    Malformed,
    Unknown,
    Expired,
    /// A revoked token (remembered a while after its revocation).
    Revoked,
    /// A secret a regenerate replaced.
    Superseded,
    /// A secret a rotation replaced, presented again (the token is revoked).
    RotatedReused,
    /// A live token used from outside its address ranges.
    OutsideRanges,
    LacksScope,
    LacksOrg,
    /// A token limited to repositories, on another repository or a route naming none.
    LacksRepo,
    NoRule,
    LockedOut,
}

impl AuthOutcome {
    /// Every outcome, for the tests and for listing them at zero.
    pub const ALL: [AuthOutcome; 14] = [
        AuthOutcome::Allowed,
        AuthOutcome::NoCredential,
        AuthOutcome::Malformed,
        AuthOutcome::Unknown,
        AuthOutcome::Expired,
        AuthOutcome::Revoked,
        AuthOutcome::Superseded,
        AuthOutcome::RotatedReused,
        AuthOutcome::OutsideRanges,
        AuthOutcome::LacksScope,
        AuthOutcome::LacksOrg,
        AuthOutcome::LacksRepo,
        AuthOutcome::NoRule,
        AuthOutcome::LockedOut,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthOutcome::Allowed => "allowed",
            AuthOutcome::NoCredential => "no_credential",
            AuthOutcome::Malformed => "malformed",
            AuthOutcome::Unknown => "unknown",
            AuthOutcome::Expired => "expired",
            AuthOutcome::Revoked => "revoked",
            AuthOutcome::Superseded => "superseded",
            AuthOutcome::RotatedReused => "rotated_reused",
            AuthOutcome::OutsideRanges => "outside_ranges",
            AuthOutcome::LacksScope => "lacks_scope",
            AuthOutcome::LacksOrg => "lacks_org",
            AuthOutcome::LacksRepo => "lacks_repo",
            AuthOutcome::NoRule => "no_rule",
            AuthOutcome::LockedOut => "locked_out",
        }
    }
}

/// How an upstream failed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFault {
    Error,
    Timeout,
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteOnly, Histogram>,
    auth: Family<AuthLabels, Counter>,
    upstream_faults: Family<UpstreamLabels, Counter>,
    /// Client connections open on the proxy listener.
    pub connections_open: Gauge,
    /// Live tokens held in memory; set when scraped.
    pub tokens_live: Gauge,
    /// Addresses blocked by the lockout; set when scraped.
    pub lockouts_active: Gauge,
    /// How far the instance's copy is behind the store's event feed.
    pub feed_lag_seconds: Gauge<f64, AtomicU64>,
    pub feed_lag_events: Gauge,
    /// Changes that reached this instance more than a second after their commit.
    pub feed_late_events: Counter,
    /// Audit entries lost: the queue to the store was full, or the store could not be
    /// written before shutdown.
    pub audit_dropped: Counter,
    /// 1 while the store answers, 0 while the instance serves from memory alone; set
    /// when scraped.
    pub store_reachable: Gauge,
    reloads: Family<ResultLabels, Counter>,
    /// Route labels by pattern, made once.
    routes: RwLock<HashMap<String, RouteLabel>>,
    /// `[metrics] enabled`: when false, the request path counts nothing.
    enabled: AtomicBool,
    stream_delivered: Family<StreamLabels, Counter>,
    stream_dropped: Family<StreamLabels, Counter>,
    tokens_expiring: Family<WithinLabels, Gauge>,
    /// `audit.expiry_warning`, once the expiry task runs: the window of `tokens_expiring`.
    expiry_window: RwLock<Option<(std::time::Duration, WithinLabels)>>,
}

/// Seconds, for the request latency histogram: 1 ms to about 65 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("patgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Proxied requests answered, by route (- when none matched), method class (read: GET, HEAD, OPTIONS; write: others) and status",
            requests.clone(),
        );
        let duration = Family::<RouteOnly, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        // Units are in the names, without `# UNIT` lines, which some parsers refuse on histograms.
        registry.register(
            "request_duration_seconds",
            "Time from a request's head to its answer's head, in seconds, by route",
            duration.clone(),
        );
        let auth = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth",
            "Authentication outcomes on the proxy listener: allowed, or the reason of the refusal",
            auth.clone(),
        );
        let upstream_faults = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_faults",
            "Requests an upstream failed: unreachable or broken (error), or no answer within its response_timeout (timeout)",
            upstream_faults.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open on the proxy listener",
            connections_open.clone(),
        );
        let tokens_live = Gauge::default();
        registry.register("tokens_live", "Live tokens held in memory", tokens_live.clone());
        let lockouts_active = Gauge::default();
        registry.register(
            "lockouts_active",
            "Client addresses blocked for failed authentications",
            lockouts_active.clone(),
        );
        let feed_lag_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "feed_lag_seconds",
            "How old, in seconds, the oldest change was when this instance last read the store's event feed; while the feed cannot be read, the time since it last was",
            feed_lag_seconds.clone(),
        );
        let feed_lag_events = Gauge::default();
        registry.register(
            "feed_lag_events",
            "Events of the store's feed that this instance applied at its last read: how far behind it was",
            feed_lag_events.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "audit_dropped",
            "Audit entries lost: dropped when the queue to the store (audit.queue) was full, or not written before shutdown",
            audit_dropped.clone(),
        );
        let feed_late_events = Counter::default();
        registry.register(
            "feed_late_events",
            "Changes applied here more than one second after their commit",
            feed_late_events.clone(),
        );
        let store_reachable = Gauge::default();
        registry.register(
            "store_reachable",
            "1 while the token store answers; 0 while this instance serves from memory",
            store_reachable.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register("reloads", "Configuration reloads (SIGHUP) by result: ok or failed", reloads.clone());
        let stream_delivered = Family::<StreamLabels, Counter>::default();
        registry.register(
            "audit_stream_delivered",
            "Audit entries delivered to an audit stream (webhook or file), by stream name",
            stream_delivered.clone(),
        );
        let stream_dropped = Family::<StreamLabels, Counter>::default();
        registry.register(
            "audit_stream_dropped",
            "Audit entries an audit stream skipped, by stream name: it fell more than audit.stream_backlog entries behind",
            stream_dropped.clone(),
        );
        let tokens_expiring = Family::<WithinLabels, Gauge>::default();
        registry.register(
            "tokens_expiring",
            "Live tokens that expire within the window of audit.expiry_warning (the label)",
            tokens_expiring.clone(),
        );
        registry.register(
            "build",
            "The version and commit this binary was built from",
            Info::new(BuildLabels {
                version: crate::build_info::VERSION,
                commit: crate::build_info::COMMIT,
            }),
        );
        // Listed at zero from the start, so that a rate over them is defined.
        for outcome in AuthOutcome::ALL {
            auth.get_or_create(&AuthLabels { outcome: outcome.as_str() }).inc_by(0);
        }
        for result in ["ok", "failed"] {
            reloads.get_or_create(&ResultLabels { result }).inc_by(0);
        }
        Metrics {
            registry,
            requests,
            duration,
            auth,
            upstream_faults,
            connections_open,
            tokens_live,
            lockouts_active,
            feed_lag_seconds,
            feed_lag_events,
            feed_late_events,
            audit_dropped,
            store_reachable,
            reloads,
            routes: RwLock::default(),
            enabled: AtomicBool::new(true),
            stream_delivered,
            stream_dropped,
            tokens_expiring,
            expiry_window: RwLock::new(None),
        }
    }

    /// Whether the request path counts (`[metrics] enabled`).
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Turns counting on the request path on or off, at start.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// The labels of the route with this pattern and upstream.
    pub fn route(&self, pattern: &str, upstream: impl FnOnce() -> String) -> RouteLabel {
        if let Some(l) = self.routes.read().unwrap_or_else(|e| e.into_inner()).get(pattern) {
            return l.clone();
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes
            .entry(pattern.to_owned())
            .or_insert_with(|| RouteLabel {
                route: Arc::new(pattern.to_owned()),
                upstream: Arc::new(upstream()),
            })
            .clone()
    }

    /// Counts one answered request: `route` is `None` when no route matched.
    pub fn request(&self, route: Option<&RouteLabel>, method: &http::Method, status: u16, seconds: f64) {
        let route = route.map_or_else(no_route, |r| r.route.clone());
        let class = match *method {
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS => "read",
            _ => "write",
        };
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                method: class,
                status,
            })
            .inc();
        self.duration.get_or_create(&RouteOnly { route }).observe(seconds);
    }

    /// Counts an authentication outcome.
    pub fn auth(&self, outcome: AuthOutcome) {
        self.auth.get_or_create(&AuthLabels { outcome: outcome.as_str() }).inc();
    }

    /// Counts a request that an upstream failed.
    pub fn upstream_fault(&self, route: &RouteLabel, fault: UpstreamFault) {
        let kind = match fault {
            UpstreamFault::Error => "error",
            UpstreamFault::Timeout => "timeout",
        };
        self.upstream_faults
            .get_or_create(&UpstreamLabels {
                upstream: route.upstream.clone(),
                kind,
            })
            .inc();
    }

    /// Counts a configuration reload.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts audit entries delivered to a stream.
    pub fn stream_delivered(&self, stream: &str, n: u64) {
        let labels = StreamLabels { stream: stream.to_owned() };
        self.stream_delivered.get_or_create(&labels).inc_by(n);
        // Listed, at zero, once the stream runs.
        self.stream_dropped.get_or_create(&labels).inc_by(0);
    }

    /// Counts audit entries a stream skipped.
    pub fn stream_dropped(&self, stream: &str, n: u64) {
        let labels = StreamLabels { stream: stream.to_owned() };
        self.stream_dropped.get_or_create(&labels).inc_by(n);
        self.stream_delivered.get_or_create(&labels).inc_by(0);
    }

    /// Drops the series of a stream that was deleted or renamed.
    pub fn forget_stream(&self, stream: &str) {
        let labels = StreamLabels { stream: stream.to_owned() };
        self.stream_delivered.remove(&labels);
        self.stream_dropped.remove(&labels);
    }

    /// Sets the window of `patgate_tokens_expiring` (`audit.expiry_warning`), at start.
    pub fn set_expiry_window(&self, window: std::time::Duration) {
        let labels = WithinLabels {
            within: short_duration(window),
        };
        self.tokens_expiring.get_or_create(&labels).set(0);
        *self.expiry_window.write().unwrap_or_else(|e| e.into_inner()) = Some((window, labels));
    }

    /// The window of `patgate_tokens_expiring`, once set.
    pub fn expiry_window(&self) -> Option<std::time::Duration> {
        self.expiry_window
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(w, _)| *w)
    }

    /// Sets how many live tokens expire within the window; when scraped.
    pub fn set_tokens_expiring(&self, n: usize) {
        if let Some((_, labels)) = &*self.expiry_window.read().unwrap_or_else(|e| e.into_inner()) {
            self.tokens_expiring.get_or_create(labels).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The whole registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A duration as config files write it, in its largest whole unit: `7d`, `36h`, `90s`.
pub fn short_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn no_route() -> Arc<String> {
    static NONE: LazyLock<Arc<String>> = LazyLock::new(|| Arc::new("-".to_owned()));
    NONE.clone()
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_outcome_once() {
        use strum::IntoEnumIterator;
        let every: Vec<AuthOutcome> = AuthOutcome::iter().collect();
        assert_eq!(
            AuthOutcome::ALL.to_vec(),
            every,
            "AuthOutcome::ALL must list every outcome, in order"
        );
        let mut names: Vec<&str> = every.iter().map(|o| o.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), every.len(), "two outcomes share a label");
    }

    #[test]
    fn counts_show_in_the_text_with_bounded_labels() {
        let m = Metrics::new();
        let r = m.route("/{org}/**", || "git-http-backend".into());
        m.request(Some(&r), &http::Method::GET, 200, 0.003);
        m.request(Some(&r), &http::Method::POST, 403, 0.001);
        m.request(None, &http::Method::GET, 401, 0.0001);
        m.auth(AuthOutcome::Expired);
        m.upstream_fault(&r, UpstreamFault::Timeout);
        m.reload(false);
        m.stream_delivered("siem", 3);
        m.stream_dropped("siem", 2);
        m.set_expiry_window(std::time::Duration::from_secs(7 * 86_400));
        m.set_tokens_expiring(4);
        let text = m.encode();
        for line in [
            "patgate_requests_total{route=\"/{org}/**\",method=\"read\",status=\"200\"} 1",
            "patgate_requests_total{route=\"/{org}/**\",method=\"write\",status=\"403\"} 1",
            "patgate_requests_total{route=\"-\",method=\"read\",status=\"401\"} 1",
            "patgate_auth_total{outcome=\"expired\"} 1",
            "patgate_auth_total{outcome=\"allowed\"} 0",
            "patgate_upstream_faults_total{upstream=\"git-http-backend\",kind=\"timeout\"} 1",
            "patgate_reloads_total{result=\"failed\"} 1",
            "patgate_request_duration_seconds_count{route=\"/{org}/**\"} 2",
            "patgate_audit_stream_delivered_total{stream=\"siem\"} 3",
            "patgate_audit_stream_dropped_total{stream=\"siem\"} 2",
            "patgate_tokens_expiring{within=\"7d\"} 4",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(text.contains("patgate_build_info{version="), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        // One label set a route, made once.
        assert!(Arc::ptr_eq(&r.route, &m.route("/{org}/**", || unreachable!()).route));
    }
}
