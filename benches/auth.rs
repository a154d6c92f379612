//! The request path's decisions, timed with criterion:
//! - `auth_decision`: header → credential → SHA-256 → in-memory lookup → scope and
//!   organization check, with 1 thousand and 1 million live tokens;
//!   `basic_again` is the same Basic value again on one connection ([`authenticate_on`]:
//!   the digest remembered, the token still looked up);
//! - `request_decision`: the same plus path normalization, route match and the git rule;
//! - `audit_allowed_per_minute`: what an allowed request adds for the audit trail with
//!   `audit.allowed_requests = "per_minute"` (its token already counted this minute);
//! - the parts on their own.
//!
//! Run: `cargo bench --bench auth` (add `-- --quick` for a short run).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::header::AUTHORIZATION;
use http::{HeaderMap, Method};
use patgate::audit::AuditEntry;
use patgate::auth::credentials;
use patgate::auth::rules::{normalize, Pattern, Requirement, Route, RouteTable, Rules};
use patgate::auth::scope::{Scope, ScopeSet};
use patgate::auth::token::TokenSecret;
use patgate::auth::{authenticate, authenticate_on, authorize, LastCredential, Orgs};
use patgate::store::token_cache::TokenCache;
use patgate::store::{Location, Store, TokenRecord};

/// The client address of every request measured.
const CLIENT: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn record(i: usize, secret: &TokenSecret) -> TokenRecord {
    TokenRecord {
        id: format!("id{i}"),
        hash: secret.hash(),
        name: "bench".into(),
        owner: format!("owner{}", i % 1000),
        orgs: Orgs::List(vec!["acme".into()]),
        repos: Default::default(),
        allow_from: Default::default(),
        scopes: ScopeSet::parse(&["code:write"]).unwrap(),
        created_at: 0,
        rotated_at: None,
        expires_at: i64::MAX,
        revoked_at: None,
        revoked_by: None,
        last_used_at: None,
        last_used_from: None,
    }
}

fn cache_with(n: usize) -> (TokenCache, TokenSecret) {
    let cache = TokenCache::default();
    let mut last = TokenSecret::generate();
    for i in 0..n {
        last = TokenSecret::generate();
        cache.apply(&record(i, &last), 0);
    }
    (cache, last)
}

fn routes() -> RouteTable<()> {
    let route = |p: &str, rules| Route {
        pattern: Pattern::parse(p).unwrap(),
        rules,
        target: (),
    };
    RouteTable::new(vec![
        route("/{org}/{repo}/**", Rules::Git),
        route("/{org}/_apis/distributedtask/**", Rules::List(vec![])),
        route("/_apis/audit/**", Rules::List(vec![])),
    ])
}

fn basic_header(secret: &TokenSecret) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("git:{}", secret.expose()));
    headers.insert(AUTHORIZATION, format!("Basic {basic}").parse().unwrap());
    headers
}

fn decision(c: &mut Criterion) {
    let table = routes();
    for n in [1_000usize, 1_000_000] {
        let (cache, secret) = cache_with(n);
        let basic = basic_header(&secret);
        let mut bearer = HeaderMap::new();
        bearer.insert(AUTHORIZATION, format!("Bearer {}", secret.expose()).parse().unwrap());
        let need = Requirement {
            scope: Scope::CODE_READ,
            org: Some("acme"),
            repo: Some("demo.git"),
            route: "/{org}/{repo}/**",
        };
        let mut group = c.benchmark_group("auth_decision");
        for (form, headers) in [("basic", &basic), ("bearer", &bearer)] {
            group.bench_with_input(BenchmarkId::new(form, n), &n, |b, _| {
                b.iter(|| {
                    let id = authenticate(black_box(headers), &cache, 1, Some(CLIENT)).unwrap();
                    black_box(authorize(id, black_box(need)).unwrap());
                })
            });
        }
        // A well-formed token never issued: the lookup misses.
        let mut stranger = HeaderMap::new();
        stranger.insert(
            AUTHORIZATION,
            format!("Bearer {}", TokenSecret::generate().expose()).parse().unwrap(),
        );
        group.bench_with_input(BenchmarkId::new("unknown", n), &n, |b, _| {
            b.iter(|| black_box(authenticate(black_box(&stranger), &cache, 1, Some(CLIENT)).err()))
        });
        let last = LastCredential::default();
        authenticate_on(&basic, &cache, 1, CLIENT, &last).unwrap();
        group.bench_with_input(BenchmarkId::new("basic_again", n), &n, |b, _| {
            b.iter(|| {
                let id = authenticate_on(black_box(&basic), &cache, 1, CLIENT, &last).unwrap();
                black_box(authorize(id, black_box(need)).unwrap());
            })
        });
        group.finish();

        let method = Method::GET;
        let mut group = c.benchmark_group("request_decision");
        group.bench_with_input(BenchmarkId::new("git_basic", n), &n, |b, _| {
            b.iter(|| {
                let path = normalize(black_box("/acme/demo.git/info/refs")).unwrap();
                let id = authenticate(black_box(&basic), &cache, 1, Some(CLIENT)).unwrap();
                let m = table.find(&path).unwrap();
                let scope = m.route.required_scope(&method, &path, Some("service=git-upload-pack")).unwrap();
                black_box(authorize(id, m.requirement(scope)).unwrap());
            })
        });
        group.finish();
    }
}

fn audit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (auditor, _writer) = rt.block_on(async {
        let store = Store::open(&Location::Sqlite(dir.path().join("bench.db"))).await.unwrap();
        patgate::audit::writer::start(store, &patgate::audit::Config::default())
    });
    let ip: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    let never = || -> AuditEntry { unreachable!("per_minute makes no entry per request") };
    // Other tokens counted this minute, and this one.
    for i in 0..1000 {
        auditor.allowed(&format!("{i:016}"), "owner", ip, never);
    }
    c.bench_function("audit_allowed_per_minute", |b| {
        b.iter(|| auditor.allowed(black_box("0000000000000500"), black_box("owner"), ip, never))
    });
}

fn parts(c: &mut Criterion) {
    let secret = TokenSecret::generate();
    let value = format!("Bearer {}", secret.expose());
    c.bench_function("credential_parse_bearer", |b| {
        b.iter(|| black_box(credentials::parse(black_box(value.as_bytes())).unwrap()))
    });
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("git:{}", secret.expose()))
    );
    c.bench_function("credential_parse_basic", |b| {
        b.iter(|| black_box(credentials::parse(black_box(basic.as_bytes())).unwrap()))
    });
    c.bench_function("token_hash", |b| b.iter(|| black_box(black_box(&secret).hash())));
    c.bench_function("token_shape", |b| {
        b.iter(|| black_box(patgate::auth::token::has_valid_shape(black_box(secret.expose()))))
    });
    let table = routes();
    let path = normalize("/acme/_apis/distributedtask/pools/7/agents").unwrap();
    c.bench_function("route_match", |b| b.iter(|| black_box(table.find(black_box(&path)).is_some())));
    c.bench_function("path_normalize", |b| {
        b.iter(|| black_box(normalize(black_box("/acme/demo.git/objects/pack/pack-0123.pack"))))
    });
}

criterion_group!(benches, decision, audit, parts);
criterion_main!(benches);
