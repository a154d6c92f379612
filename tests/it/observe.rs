//! What an operator sees: Prometheus metrics read by a real OpenMetrics parser, and the
//! health and readiness endpoints of a running server.

use openmetrics_parser::{MetricNumber, OpenMetricsValue};

use crate::support::*;

type Exposition = openmetrics_parser::MetricsExposition<openmetrics_parser::OpenMetricsType, OpenMetricsValue>;

fn scrape(p: &TestPatgate) -> (String, Exposition) {
    let r = http(p.admin_addr(), "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/openmetrics-text"),
        "{r:?}"
    );
    let parsed =
        openmetrics_parser::openmetrics::parse_openmetrics(&r.body).unwrap_or_else(|e| panic!("not OpenMetrics text: {e:?}\n{}", r.body));
    (r.body, parsed)
}

/// The value of the sample of `family` whose labels are `labels` (name, value).
fn sample(m: &Exposition, family: &str, labels: &[(&str, &str)]) -> f64 {
    let f = m.families.get(family).unwrap_or_else(|| panic!("no family {family}"));
    let s = f
        .iter_samples()
        .find(|s| {
            let set = s.get_labelset().unwrap();
            labels.iter().all(|(k, v)| set.get_label_value(k) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {family} sample with {labels:?}"));
    let number = match &s.value {
        OpenMetricsValue::Counter(c) => c.value,
        OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => *n,
        OpenMetricsValue::Histogram(h) => MetricNumber::Int(h.count.unwrap_or(0) as i64),
        other => panic!("{family}: unexpected {other:?}"),
    };
    match number {
        MetricNumber::Int(i) => i as f64,
        MetricNumber::Float(f) => f,
    }
}

#[test]
fn metrics_count_requests_and_outcomes_with_bounded_labels() {
    let p = TestPatgate::start("");
    let reader = p.mint_live("code:read", "acme");
    let get = |auth: Option<&str>, path: &str| {
        let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        http(
            p.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: h\r\n{auth}Connection: close\r\n\r\n"),
        )
    };
    let refs = "/acme/demo.git/info/refs?service=git-upload-pack";
    let push = "/acme/demo.git/info/refs?service=git-receive-pack";
    assert_ne!(get(Some(&basic("x", &reader.token)), refs).status, 401);
    assert_eq!(get(None, refs).status, 401);
    assert_eq!(get(Some("Bearer patg_nope"), refs).status, 401);
    assert_eq!(get(Some(&basic("x", &reader.token)), push).status, 403);
    assert_eq!(
        get(
            Some(&basic("x", &reader.token)),
            "/other/demo.git/info/refs?service=git-upload-pack"
        )
        .status,
        403
    );

    let (text, m) = scrape(&p);
    for (outcome, n) in [
        ("allowed", 1.0),
        ("no_credential", 1.0),
        ("malformed", 1.0),
        ("lacks_scope", 1.0),
        ("lacks_org", 1.0),
        ("expired", 0.0),
    ] {
        assert_eq!(sample(&m, "patgate_auth", &[("outcome", outcome)]), n, "{outcome}\n{text}");
    }
    // Refused before routing: no route is named (no route oracle before authentication).
    assert_eq!(
        sample(&m, "patgate_requests", &[("route", "-"), ("method", "read"), ("status", "401")]),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            "patgate_requests",
            &[("route", "/{org}/{repo}/**"), ("method", "read"), ("status", "403")]
        ),
        2.0
    );
    assert_eq!(
        sample(&m, "patgate_request_duration_seconds", &[("route", "/{org}/{repo}/**")]),
        3.0,
        "{text}"
    );
    assert!(sample(&m, "patgate_tokens_live", &[]) >= 1.0);
    assert_eq!(sample(&m, "patgate_store_reachable", &[]), 1.0);
    assert_eq!(sample(&m, "patgate_lockouts_active", &[]), 0.0);
    // The last client's connection is closed by now, but the server counts it closed only
    // once its task has ended: on a busy machine, a moment later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (text, m) = scrape(&p);
        let open = sample(&m, "patgate_connections_open", &[]);
        if open == 0.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "connections still open: {open}\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(m.families.contains_key("patgate_build"), "{text}");
    // No label value is a secret, a token id or a client address.
    for secret in [&reader.token, &reader.id, "patg_", "127.0.0.1"] {
        assert!(!text.contains(secret), "{secret} in\n{text}");
    }
    // A revoked token is counted as such once the server has the revocation.
    assert!(p.cli(&["token", "revoke", &reader.id]).status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(Some(&basic("x", &reader.token)), refs).status != 401 {
        assert!(std::time::Instant::now() < deadline, "the revocation never arrived");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (_, m) = scrape(&p);
    assert_eq!(sample(&m, "patgate_auth", &[("outcome", "revoked")]), 1.0);
    // A reload counts.
    p.reload();
    let (_, m) = scrape(&p);
    assert_eq!(sample(&m, "patgate_reloads", &[("result", "ok")]), 1.0);
}

#[test]
fn health_and_readiness_answer_with_the_version() {
    let p = TestPatgate::start("");
    let r = http(p.admin_addr(), "GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.body.trim()), (200, r#"{"status":"ok"}"#));
    for path in ["/readyz", "/admin/v1/ready"] {
        let a = p.api("GET", path, None, None);
        assert_eq!(a.status, 200, "{:?}", a.raw);
        assert_eq!(a.json["status"], "ready");
        assert_eq!(a.json["store"], "reachable");
        let version = String::from_utf8(std::process::Command::new(BIN).arg("--version").output().unwrap().stdout).unwrap();
        let commit = a.json["commit"].as_str().unwrap();
        assert!(version.contains(commit), "{version} vs {commit}");
    }
}

#[test]
fn metrics_can_be_turned_off() {
    let p = TestPatgate::start("[metrics]\nenabled = false\n");
    let r = http(p.admin_addr(), "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body.contains("[metrics] enabled = false"), "{r:?}");
}
