//! Pooling and balancing: round robin, keep-alive reuse and its limits,
//! re-resolution, rebuilds that keep unchanged pools, fixed endpoints.
use super::*;

#[tokio::test]
async fn requests_alternate_round_robin_between_endpoints() {
    let (a, b) = (named("a").await, named("b").await);
    let (_upstreams, upstream) = pool(service("rr"), TestResolver::new(&[a.address, b.address]));
    let mut answered = Vec::new();
    for _ in 0..4 {
        let (response, endpoint) = upstream.send(get()).await.unwrap();
        answered.push((body_text(response).await, endpoint));
    }
    assert_eq!(
        answered,
        [
            ("a", a.address),
            ("b", b.address),
            ("a", a.address),
            ("b", b.address)
        ]
        .map(|(name, address)| (name.to_string(), address))
    );
}

#[tokio::test]
async fn sequential_requests_reuse_one_keep_alive_connection() {
    let a = named("a").await;
    let (_upstreams, upstream) = pool(service("keepalive"), TestResolver::new(&[a.address]));
    for _ in 0..20 {
        let (response, _) = upstream.send(get()).await.unwrap();
        assert_eq!(body_text(response).await, "a");
    }
    assert_eq!(a.connections.load(SeqCst), 1);
    assert_eq!(upstream.endpoints()[0].idle_connections, 1);
}

#[tokio::test]
async fn max_idle_connections_caps_what_is_kept_for_reuse() {
    let a = named("a").await;
    let config = ServiceConfig {
        max_idle_connections: 0,
        ..service("no-pool")
    };
    let (_upstreams, upstream) = pool(config, TestResolver::new(&[a.address]));
    for _ in 0..5 {
        let (response, _) = upstream.send(get()).await.unwrap();
        assert_eq!(body_text(response).await, "a");
    }
    assert_eq!(a.connections.load(SeqCst), 5, "a connection per request");
    assert_eq!(upstream.endpoints()[0].idle_connections, 0);
}

#[tokio::test]
async fn idle_connections_are_closed_after_idle_timeout() {
    let a = named("a").await;
    let config = ServiceConfig {
        idle_timeout: Duration::from_millis(200),
        ..service("idle")
    };
    let (_upstreams, upstream) = pool(config, TestResolver::new(&[a.address]));
    body_text(upstream.send(get()).await.unwrap().0).await;
    assert_eq!(upstream.endpoints()[0].idle_connections, 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(upstream.endpoints()[0].idle_connections, 0);
    body_text(upstream.send(get()).await.unwrap().0).await;
    assert_eq!(a.connections.load(SeqCst), 2);
}

async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_changed_resolution_moves_traffic_and_a_failed_one_keeps_the_last() {
    let (a, b) = (named("a").await, named("b").await);
    let resolver = TestResolver::new(&[a.address]);
    let (_upstreams, upstream) = pool(service("dns"), resolver.clone());
    assert_eq!(upstream.send(get()).await.unwrap().1, a.address);

    resolver.answer(Ok(vec![b.address]));
    let addresses = || {
        upstream
            .endpoints()
            .iter()
            .map(|e| e.address)
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(|| addresses() == [b.address]).await,
        "{:?}",
        addresses()
    );
    for _ in 0..3 {
        assert_eq!(upstream.send(get()).await.unwrap().1, b.address);
    }

    resolver.answer(Err("SERVFAIL".to_string()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(addresses(), [b.address]);
    assert_eq!(upstream.send(get()).await.unwrap().1, b.address);
}

#[tokio::test]
async fn rebuild_keeps_unchanged_pools_and_their_resolvers() {
    let (a, b) = (named("a").await, named("b").await);
    let resolver = TestResolver::new(&[a.address]);
    let mut services = BTreeMap::from([
        ("kept".to_string(), service("kept")),
        ("changed".to_string(), service("changed")),
    ]);
    let old = Upstreams::with_resolver(&services, resolver.clone());
    let kept = old.get("kept").unwrap();
    kept.send(get()).await.unwrap();

    services.get_mut("changed").unwrap().eject_for = Duration::from_secs(1);
    let new = old.rebuild(&services);
    assert!(Arc::ptr_eq(&kept, &new.get("kept").unwrap()));
    assert!(!Arc::ptr_eq(
        &old.get("changed").unwrap(),
        &new.get("changed").unwrap()
    ));
    assert_eq!(kept.endpoints()[0].idle_connections, 1);

    // The shared pool keeps resolving after the old set is gone...
    drop(old);
    resolver.answer(Ok(vec![b.address]));
    assert!(eventually(|| kept.endpoints()[0].address == b.address).await);
    // ...and stops once the last user shuts down.
    new.shutdown();
    resolver.answer(Ok(vec![a.address]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(kept.endpoints()[0].address, b.address);
}

#[test]
fn pools_are_shareable_and_send_futures_are_send() {
    fn assert_shareable<T: Send + Sync>() {}
    assert_shareable::<Upstreams>();
    assert_shareable::<Upstream>();
    fn assert_send<T: Send>(_: &T) {}
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (_upstreams, upstream) = pool(service("send"), TestResolver::new(&[]));
        let future = upstream.send(get());
        assert_send(&future);
    });
}

#[tokio::test]
async fn fixed_endpoints_are_used_and_the_resolver_is_not_asked() {
    let a = named("a").await;
    let b = named("b").await;
    let config = ServiceConfig {
        endpoints: Some(vec![a.address, b.address]),
        ..service("fixed")
    };
    // The resolver would fail: only the fixed list can make requests work.
    let resolver = TestResolver::new(&[]);
    resolver.answer(Err("the resolver must not be asked".to_string()));
    let (_upstreams, upstream) = pool(config, resolver);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (response, _) = upstream.send(get()).await.unwrap();
        seen.push(body_text(response).await);
    }
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"]);
}
