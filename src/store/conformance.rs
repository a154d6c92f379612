//! What every store must do, written once and run against each backend (SQLite here;
//! PostgreSQL in its own module's tests).

use std::time::Duration;

use super::*;

fn new(owner: &str, scopes: &[&str]) -> NewToken {
    NewToken {
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
}

async fn lifecycle_and_feed(store: &Store) {
    let base = store.snapshot().await.unwrap().seq;
    let a = store.create(new("alice", &["code:read"]), Some("cli".into())).await.unwrap();
    let b = store.create(new("alice", &["code:read"]), None).await.unwrap();
    let c = store.create(new("bob", &["code:read"]), None).await.unwrap();
    assert_eq!(a.record.hash, a.secret.hash());
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.seq, base + 3);
    assert!(snap.live.iter().any(|r| r.id == c.record.id));
    assert_eq!(store.get(&a.record.id).await.unwrap(), a.record);

    let r = store.revoke(&b.record.id, Some("admin".into())).await.unwrap();
    assert!(r.revoked_at.is_some());
    assert_eq!(r.revoked_by.as_deref(), Some("admin"));
    // Idempotent: no second event.
    store.revoke(&b.record.id, None).await.unwrap();
    assert_eq!(store.revoke_owner("alice", None).await.unwrap(), 1);
    assert!(matches!(store.revoke("nope", None).await, Err(StoreError::NotFound(_))));

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

    store.record_last_used(vec![(c.record.id.clone(), 42)]).await.unwrap();
    store.record_last_used(vec![(c.record.id.clone(), 41)]).await.unwrap();
    assert_eq!(store.get(&c.record.id).await.unwrap().last_used_at, Some(42));
    store.revoke(&c.record.id, None).await.unwrap();
}

async fn paging_and_filters(store: &Store) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(store.create(new("pager", &["code:read"]), None).await.unwrap().record.id);
    }
    store.revoke(&ids[0], None).await.unwrap();
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
    assert_eq!(store.revoke_owner("pager", None).await.unwrap(), 4);
}

async fn updates_narrow_only(store: &Store) {
    let t = store.create(new("carol", &["code:write"]), None).await.unwrap().record;
    let narrowed = store
        .update(
            &t.id,
            TokenUpdate {
                name: Some("renamed".into()),
                scopes: Some(ScopeSet::parse(&["code:read"]).unwrap()),
                orgs: Some(Orgs::parse("acme").unwrap()),
                expires_at: Some(now() + 7200),
            },
            Some("carol".into()),
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
        async move { store.update(&id, u, None).await.unwrap_err() }
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
        store.update("nope", TokenUpdate::default(), None).await,
        Err(StoreError::NotFound(_))
    ));
    store.revoke(&t.id, None).await.unwrap();
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

async fn regenerate_and_leaks(store: &Store) {
    let t = store.create(new("dave", &["code:read"]), None).await.unwrap();
    let again = store.regenerate(&t.record.id, Some("dave".into())).await.unwrap();
    assert_eq!(again.record.id, t.record.id);
    assert_ne!(again.record.hash, t.record.hash);
    assert_eq!(again.record.hash, again.secret.hash());
    let snap = store.snapshot().await.unwrap();
    let live = snap.live.iter().find(|r| r.id == t.record.id).unwrap();
    assert_eq!(live.hash, again.secret.hash());

    // The old secret is not a live token any more: reporting it revokes nothing.
    assert!(store.revoke_hashes(vec![t.secret.hash()], None).await.unwrap().is_empty());
    let other = store.create(new("erin", &["code:read"]), None).await.unwrap();
    let ids = store
        .revoke_hashes(
            vec![again.secret.hash(), other.secret.hash(), TokenHash([7; 32])],
            Some("leak report".into()),
        )
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert!(store.get(&other.record.id).await.unwrap().revoked_at.is_some());
    assert!(matches!(
        store.regenerate(&t.record.id, None).await,
        Err(StoreError::NotLive { .. })
    ));
    assert!(matches!(store.regenerate("nope", None).await, Err(StoreError::NotFound(_))));
}
