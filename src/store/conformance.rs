//! What every store must do, written once and run against each backend (SQLite here;
//! PostgreSQL in its own module's tests).

use std::time::Duration;

use super::*;
use crate::audit::Actor;

fn new(owner: &str, scopes: &[&str]) -> NewToken {
    NewToken {
        repos: Default::default(),
        allow_from: Default::default(),
        name: "ci".into(),
        owner: owner.into(),
        orgs: Orgs::parse("acme,globex").unwrap(),
        scopes: ScopeSet::parse(scopes).unwrap(),
        lifespan: Duration::from_secs(3600),
    }
}

/// Runs every check on an empty store.
pub async fn run_all(store: Store) {
    lifecycle_and_feed(&store).await;
    paging_and_filters(&store).await;
    updates_narrow_only(&store).await;
    regenerate_and_leaks(&store).await;
    restrictions_and_rotation(&store).await;
    audit_lifecycle(&store).await;
    audit_filters_paging_and_pruning(&store).await;
}

async fn lifecycle_and_feed(store: &Store) {
    let base = store.snapshot().await.unwrap().seq;
    let a = store.create(new("alice", &["code:read"]), &Actor::named("cli")).await.unwrap();
    let b = store.create(new("alice", &["code:read"]), &Actor::default()).await.unwrap();
    let c = store.create(new("bob", &["code:read"]), &Actor::default()).await.unwrap();
    assert_eq!(a.record.hash, a.secret.hash());
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.seq, base + 3);
    assert!(snap.live.iter().any(|r| r.id == c.record.id));
    assert_eq!(store.get(&a.record.id).await.unwrap(), a.record);

    let r = store.revoke(&b.record.id, &Actor::named("admin")).await.unwrap();
    assert!(r.revoked_at.is_some());
    assert_eq!(r.revoked_by.as_deref(), Some("admin"));
    // Idempotent: no second event.
    store.revoke(&b.record.id, &Actor::default()).await.unwrap();
    assert_eq!(store.revoke_owner("alice", &Actor::default()).await.unwrap(), 1);
    assert!(matches!(
        store.revoke("nope", &Actor::default()).await,
        Err(StoreError::NotFound(_))
    ));

    let changes = store.changes_since(base + 3, 100).await.unwrap();
    let seen: Vec<(i64, &str, EventKind)> = changes
        .iter()
        .map(|c| (c.event.seq, c.event.token_id.as_str(), c.event.kind))
        .collect();
    assert_eq!(
        seen,
        vec![
            (base + 4, b.record.id.as_str(), EventKind::Revoked),
            (base + 5, a.record.id.as_str(), EventKind::Revoked)
        ]
    );
    assert_eq!(changes[0].event.actor.as_deref(), Some("admin"));
    assert!(changes[1].record.as_ref().unwrap().revoked_at.is_some());
    let limited = store.changes_since(base, 2).await.unwrap();
    assert_eq!(limited.iter().map(|c| c.event.seq).collect::<Vec<_>>(), vec![base + 1, base + 2]);

    let from: std::net::IpAddr = "192.0.2.9".parse().unwrap();
    store
        .record_last_used(vec![TokenUse::new(&c.record.id, 42, Some(from))])
        .await
        .unwrap();
    store.record_last_used(vec![TokenUse::new(&c.record.id, 41, None)]).await.unwrap();
    let r = store.get(&c.record.id).await.unwrap();
    assert_eq!((r.last_used_at, r.last_used_from.as_deref()), (Some(42), Some("192.0.2.9")));
    store.record_last_used(vec![TokenUse::new(&c.record.id, 43, None)]).await.unwrap();
    let r = store.get(&c.record.id).await.unwrap();
    assert_eq!(
        (r.last_used_at, r.last_used_from.as_deref()),
        (Some(43), Some("192.0.2.9")),
        "an unknown address keeps the last one"
    );
    store.revoke(&c.record.id, &Actor::default()).await.unwrap();
}

async fn paging_and_filters(store: &Store) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            store
                .create(new("pager", &["code:read"]), &Actor::default())
                .await
                .unwrap()
                .record
                .id,
        );
    }
    store.revoke(&ids[0], &Actor::default()).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = store
            .list(ListQuery {
                owner: Some("pager".into()),
                after,
                limit: 2,
                ..ListQuery::default()
            })
            .await
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|r| r.id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut want = ids.clone();
    want.sort();
    let mut got = seen.clone();
    got.sort();
    assert_eq!(got, want, "every token exactly once across pages");

    let only = |state| ListQuery {
        owner: Some("pager".into()),
        state: Some(state),
        ..ListQuery::default()
    };
    let revoked = store.list(only(TokenState::Revoked)).await.unwrap().items;
    assert_eq!(revoked.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![ids[0].clone()]);
    assert_eq!(store.list(only(TokenState::Active)).await.unwrap().items.len(), 4);
    assert_eq!(store.list(only(TokenState::Expired)).await.unwrap().items.len(), 0);
    let nobody = store
        .list(ListQuery {
            owner: Some("nobody".into()),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert!(nobody.items.is_empty() && nobody.next.is_none());
    assert_eq!(store.revoke_owner("pager", &Actor::default()).await.unwrap(), 4);
}

async fn updates_narrow_only(store: &Store) {
    let t = store.create(new("carol", &["code:write"]), &Actor::default()).await.unwrap().record;
    let narrowed = store
        .update(
            &t.id,
            TokenUpdate {
                name: Some("renamed".into()),
                scopes: Some(ScopeSet::parse(&["code:read"]).unwrap()),
                orgs: Some(Orgs::parse("acme").unwrap()),
                expires_at: Some(now() + 7200),
                ..TokenUpdate::default()
            },
            &Actor::named("carol"),
        )
        .await
        .unwrap();
    assert_eq!(narrowed.name, "renamed");
    assert_eq!(narrowed.scopes, ScopeSet::parse(&["code:read"]).unwrap());
    assert_eq!(store.get(&t.id).await.unwrap(), narrowed);
    let seq = store.snapshot().await.unwrap().seq;
    assert_eq!(store.changes_since(seq - 1, 10).await.unwrap()[0].event.kind, EventKind::Updated);

    let widen = |u: TokenUpdate| {
        let id = t.id.clone();
        async move { store.update(&id, u, &Actor::default()).await.unwrap_err() }
    };
    let e = widen(TokenUpdate {
        scopes: Some(ScopeSet::parse(&["code:write"]).unwrap()),
        ..TokenUpdate::default()
    })
    .await;
    assert!(matches!(e, StoreError::Invalid(InvalidToken::ScopesWidened)), "{e}");
    let e = widen(TokenUpdate {
        orgs: Some(Orgs::All),
        ..TokenUpdate::default()
    })
    .await;
    assert!(matches!(e, StoreError::Invalid(InvalidToken::OrgsWidened)), "{e}");
    let e = widen(TokenUpdate {
        expires_at: Some(now() - 1),
        ..TokenUpdate::default()
    })
    .await;
    assert!(matches!(e, StoreError::Invalid(InvalidToken::ExpiresAt)), "{e}");
    let e = widen(TokenUpdate::default()).await;
    assert!(matches!(e, StoreError::Invalid(InvalidToken::NoChange)), "{e}");
    assert!(matches!(
        store.update("nope", TokenUpdate::default(), &Actor::default()).await,
        Err(StoreError::NotFound(_))
    ));
    store.revoke(&t.id, &Actor::default()).await.unwrap();
    let e = widen(TokenUpdate {
        name: Some("x".into()),
        ..TokenUpdate::default()
    })
    .await;
    assert!(
        matches!(
            e,
            StoreError::NotLive {
                state: TokenState::Revoked,
                ..
            }
        ),
        "{e}"
    );
}

async fn restrictions_and_rotation(store: &Store) {
    use crate::auth::restrictions::{AllowFrom, Repos};
    let mut n = new("gina", &["code:write"]);
    n.repos = Repos::parse("acme/infra-*,globex/app").unwrap();
    n.allow_from = AllowFrom::parse("10.0.0.0/8,2001:db8::/32").unwrap();
    let t = store.create(n, &Actor::default()).await.unwrap();
    assert_eq!(store.get(&t.record.id).await.unwrap(), t.record, "kept as given");
    // A pattern outside the token's organizations is refused.
    let mut outside = new("gina", &["code:read"]);
    outside.repos = Repos::parse("evil/app").unwrap();
    assert!(matches!(
        store.create(outside, &Actor::default()).await,
        Err(StoreError::Invalid(InvalidToken::RepoOutsideOrgs(p))) if p == "evil/app"
    ));
    // Narrowing only.
    let narrow = |repos: &str, ranges: &str| TokenUpdate {
        repos: Some(Repos::parse(repos).unwrap()),
        allow_from: Some(AllowFrom::parse(ranges).unwrap()),
        ..TokenUpdate::default()
    };
    let u = store
        .update(&t.record.id, narrow("acme/infra-net", "10.1.0.0/16"), &Actor::default())
        .await
        .unwrap();
    assert_eq!(
        (u.repos.to_string(), u.allow_from.to_string()),
        ("acme/infra-net".into(), "10.1.0.0/16".into())
    );
    for (repos, ranges, want) in [
        ("acme/infra-*", "10.1.0.0/16", InvalidToken::ReposWidened),
        ("*", "10.1.0.0/16", InvalidToken::ReposWidened),
        ("acme/infra-net", "10.0.0.0/8", InvalidToken::AllowFromWidened),
        ("acme/infra-net", "*", InvalidToken::AllowFromWidened),
    ] {
        let e = store
            .update(&t.record.id, narrow(repos, ranges), &Actor::default())
            .await
            .unwrap_err();
        assert!(matches!(&e, StoreError::Invalid(i) if *i == want), "{repos} {ranges}: {e}");
    }
    // Narrowing the organizations must keep the patterns inside them.
    let orgs_only = TokenUpdate {
        orgs: Some(Orgs::parse("globex").unwrap()),
        ..TokenUpdate::default()
    };
    assert!(matches!(
        store.update(&t.record.id, orgs_only, &Actor::default()).await,
        Err(StoreError::Invalid(InvalidToken::RepoOutsideOrgs(_)))
    ));

    // Rotation: a new secret and expiry, the old digest in the feed and remembered.
    let seq = store.snapshot().await.unwrap().seq;
    let at = now() + 7200;
    let r = store.rotate(&t.record.id, at, &Actor::named("gina")).await.unwrap();
    assert_eq!((r.record.id.as_str(), r.record.expires_at), (t.record.id.as_str(), at));
    assert_eq!(r.record.hash, r.secret.hash());
    assert!(r.record.rotated_at.is_some());
    assert_eq!(store.get(&t.record.id).await.unwrap(), r.record);
    let changes = store.changes_since(seq, 10).await.unwrap();
    let c = changes.iter().find(|c| c.event.kind == EventKind::Rotated).unwrap();
    assert_eq!(c.rotated_away, Some(t.secret.hash()));
    assert!(changes
        .iter()
        .filter(|c| c.event.kind != EventKind::Rotated)
        .all(|c| c.rotated_away.is_none()));
    let again = store.rotate(&t.record.id, at + 1, &Actor::default()).await.unwrap();
    let away = store.rotated_away().await.unwrap();
    let mine: Vec<_> = away.iter().filter(|(_, id, _)| *id == t.record.id).map(|(h, _, _)| *h).collect();
    assert_eq!(mine.len(), 2);
    let rotated_at = |h: TokenHash| away.iter().find(|(a, _, _)| *a == h).map(|(_, _, at)| *at);
    assert_eq!(
        rotated_at(t.secret.hash()),
        Some(c.event.at),
        "each digest with its rotation's time"
    );
    assert!(mine.contains(&t.secret.hash()) && mine.contains(&r.secret.hash()));
    assert!(!mine.contains(&again.secret.hash()));
    assert!(matches!(
        store.rotate(&t.record.id, now() - 1, &Actor::default()).await,
        Err(StoreError::Invalid(InvalidToken::ExpiresAt))
    ));
    // Revoked for reuse: audited as such, and no longer remembered.
    store.revoke_reused(&t.record.id, &Actor::named("patgate")).await.unwrap();
    let page = store
        .audit_page(&AuditQuery {
            token_id: Some(t.record.id.clone()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let actions: Vec<Action> = page.entries.iter().map(|e| e.action).collect();
    assert_eq!(actions[..3], [Action::RotatedSecretReused, Action::Rotate, Action::Rotate]);
    assert!(store.rotated_away().await.unwrap().iter().all(|(_, id, _)| *id != t.record.id));
    assert!(matches!(
        store.rotate(&t.record.id, at, &Actor::default()).await,
        Err(StoreError::NotLive { .. })
    ));
}

async fn regenerate_and_leaks(store: &Store) {
    let t = store.create(new("dave", &["code:read"]), &Actor::default()).await.unwrap();
    let again = store.regenerate(&t.record.id, &Actor::named("dave")).await.unwrap();
    assert_eq!(again.record.id, t.record.id);
    assert_ne!(again.record.hash, t.record.hash);
    assert_eq!(again.record.hash, again.secret.hash());
    let snap = store.snapshot().await.unwrap();
    let live = snap.live.iter().find(|r| r.id == t.record.id).unwrap();
    assert_eq!(live.hash, again.secret.hash());

    // The old secret is not a live token any more: reporting it revokes nothing.
    assert!(store
        .revoke_hashes(vec![t.secret.hash()], &Actor::default())
        .await
        .unwrap()
        .is_empty());
    let other = store.create(new("erin", &["code:read"]), &Actor::default()).await.unwrap();
    let ids = store
        .revoke_hashes(
            vec![again.secret.hash(), other.secret.hash(), TokenHash([7; 32])],
            &Actor::named("leak report"),
        )
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert!(store.get(&other.record.id).await.unwrap().revoked_at.is_some());
    assert!(matches!(
        store.regenerate(&t.record.id, &Actor::default()).await,
        Err(StoreError::NotLive { .. })
    ));
    assert!(matches!(
        store.regenerate("nope", &Actor::default()).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn audit_lifecycle(store: &Store) {
    use crate::audit::Action;
    let root = Actor {
        name: Some("root".into()),
        client: Some("192.0.2.1".parse().unwrap()),
    };
    let t = store.create(new("auditee", &["code:write"]), &root).await.unwrap().record;
    let update = TokenUpdate {
        name: Some("renamed".into()),
        ..TokenUpdate::default()
    };
    store.update(&t.id, update, &root).await.unwrap();
    store.regenerate(&t.id, &root).await.unwrap();
    store.revoke(&t.id, &root).await.unwrap();
    // Revoking again changes nothing, and adds nothing to the trail.
    store.revoke(&t.id, &root).await.unwrap();
    let u = store.create(new("auditee", &["code:read"]), &root).await.unwrap().record;
    assert_eq!(store.revoke_owner("auditee", &root).await.unwrap(), 1);
    let v = store.create(new("auditee", &["code:read"]), &root).await.unwrap();
    let reporter = Actor {
        name: Some("leak report".into()),
        client: Some("2001:db8::7".parse().unwrap()),
    };
    store.revoke_hashes(vec![v.secret.hash()], &reporter).await.unwrap();
    // A refused change leaves no entry.
    assert!(store.regenerate(&t.id, &root).await.is_err());

    let page = store
        .audit_page(&AuditQuery {
            owner: Some("auditee".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(page.next.is_none());
    let v = v.record.id;
    let seen: Vec<(Action, &str)> = page.entries.iter().map(|e| (e.action, e.token_id.as_deref().unwrap())).collect();
    assert_eq!(
        seen,
        vec![
            (Action::LeakReport, v.as_str()),
            (Action::Create, v.as_str()),
            (Action::RevokeAll, u.id.as_str()),
            (Action::Create, u.id.as_str()),
            (Action::Revoke, t.id.as_str()),
            (Action::Regenerate, t.id.as_str()),
            (Action::Update, t.id.as_str()),
            (Action::Create, t.id.as_str()),
        ],
        "newest first"
    );
    assert!(page.entries.windows(2).all(|w| w[0].seq > w[1].seq));
    for e in &page.entries {
        assert_eq!(e.outcome, Outcome::Success);
        assert_eq!(e.owner.as_deref(), Some("auditee"));
        assert_eq!(e.count, 1);
        assert!((e.time - crate::audit::now_millis()).abs() < 60_000, "{e:?}");
        let who = if e.action == Action::LeakReport { &reporter } else { &root };
        assert_eq!((&e.actor, e.client), (&who.name, who.client), "{e:?}");
    }
}

async fn audit_filters_paging_and_pruning(store: &Store) {
    use crate::audit::{Action, AuditEntry};
    let entry = |time: i64, action: Action, outcome: Outcome, owner: &str, token: &str| {
        let mut e = AuditEntry::new(time, action, outcome);
        e.owner = Some(owner.into());
        e.token_id = Some(token.into());
        e
    };
    let refused = {
        let mut e = entry(1_000, Action::AuthRefused, Outcome::Failure, "filt", "tokA");
        e.reason = Some("expired token".into());
        e.client = Some("2001:db8::1".parse().unwrap());
        e.method = Some("GET".into());
        e.path = Some("/acme/x.git/info/refs".into());
        e.route = Some("/{org}/**".into());
        e.status = Some(401);
        e
    };
    let mut access = entry(2_000, Action::Access, Outcome::Success, "filt", "tokB");
    access.count = 7;
    let others = entry(3_000, Action::AuthRefused, Outcome::Failure, "else", "tokC");
    store
        .append_audit(vec![refused.clone(), access.clone(), others.clone()])
        .await
        .unwrap();
    let q = |f: fn(&mut AuditQuery)| {
        let mut q = AuditQuery::default();
        f(&mut q);
        async move {
            let mut entries = store.audit_page(&q).await.unwrap().entries;
            for e in &mut entries {
                e.seq = 0;
            }
            entries
        }
    };
    // Every field reads back as written.
    assert_eq!(q(|q| q.token_id = Some("tokA".into())).await, vec![refused.clone()]);
    assert_eq!(q(|q| q.token_id = Some("tokB".into())).await, vec![access.clone()]);
    assert_eq!(
        q(|q| {
            q.owner = Some("filt".into());
            q.outcome = Some(Outcome::Failure);
        })
        .await,
        vec![refused.clone()]
    );
    assert_eq!(q(|q| q.action = Some(Action::Access)).await, vec![access.clone()]);
    // `from` is inclusive, `to` exclusive.
    assert_eq!(
        q(|q| {
            q.from = Some(1_000);
            q.to = Some(3_000);
        })
        .await,
        vec![access.clone(), refused.clone()]
    );
    assert_eq!(
        q(|q| {
            q.from = Some(1_001);
            q.to = Some(3_001);
        })
        .await,
        vec![others, access]
    );
    assert!(q(|q| q.owner = Some("nobody".into())).await.is_empty());

    // Paging: newest first, each entry once, no gaps, whatever is written meanwhile.
    let batch: Vec<AuditEntry> = (0..5)
        .map(|i| entry(10_000 + i, Action::AuthRefused, Outcome::Failure, "pages", &format!("p{i}")))
        .collect();
    store.append_audit(batch).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = store
            .audit_page(&AuditQuery {
                owner: Some("pages".into()),
                after,
                limit: 2,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        pages += 1;
        assert!(page.entries.len() <= 2);
        seen.extend(page.entries.iter().map(|e| e.token_id.clone().unwrap()));
        if pages == 1 {
            // Written after the first page: it comes before it, so it is not seen.
            let late = entry(20_000, Action::AuthRefused, Outcome::Failure, "pages", "late");
            store.append_audit(vec![late]).await.unwrap();
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, vec!["p4", "p3", "p2", "p1", "p0"]);

    // Pruning deletes what is older than the cut, nothing else.
    let old = vec![
        entry(10, Action::AuthRefused, Outcome::Failure, "old", "o1"),
        entry(20, Action::AuthRefused, Outcome::Failure, "old", "o2"),
    ];
    store.append_audit(old).await.unwrap();
    assert_eq!(store.prune_audit(25).await.unwrap(), 2);
    assert!(q(|q| q.owner = Some("old".into())).await.is_empty());
    assert_eq!(q(|q| q.token_id = Some("tokA".into())).await, vec![refused]);
    assert_eq!(store.prune_audit(25).await.unwrap(), 0);
    store.append_audit(Vec::new()).await.unwrap();
}
