//! `rate_limit.store`: the Redis store of a cluster-wide rate limit, its
//! defaults, and where each refusal points.
use std::{path::PathBuf, time::Duration};

use super::proxy_tests::{proxy, refused, with_entrypoints};
use crate::proxy::{MiddlewareConfig, RedisStoreConfig, RedisTlsConfig, StoreFallback};

fn store_of(middleware: &str) -> Option<RedisStoreConfig> {
    let p = proxy(&with_entrypoints(&format!(
        "routes:\n  - {{ service: \"api:8000\", middlewares: [limit] }}\nmiddlewares:\n  limit: {{ rate_limit: {{ average: 5, {middleware} }} }}\n"
    )));
    match &p.middlewares["limit"] {
        MiddlewareConfig::RateLimit(config) => config.store.clone(),
        other => panic!("not a rate limit: {other:?}"),
    }
}

fn store_refused(store: &str) -> super::ConfigError {
    refused(&with_entrypoints(&format!(
        "routes:\n  - {{ service: \"api:8000\", middlewares: [limit] }}\nmiddlewares:\n  limit: {{ rate_limit: {{ average: 5, store: {store} }} }}\n"
    )))
}

#[test]
fn a_redis_store_reads_with_its_defaults_and_every_setting() {
    assert_eq!(store_of("store: local"), None);
    assert_eq!(
        store_of("store: { redis: { address: \"redis.infra:6379\" } }"),
        Some(RedisStoreConfig {
            address: "redis.infra:6379".into(),
            tls: None,
            username_file: None,
            password_file: None,
            db: 0,
            timeout: Duration::from_millis(20),
            on_error: StoreFallback::Local,
            pool: 4,
            key_prefix: "xdpgate:rate_limit:limit:".into(),
        })
    );
    let full = store_of(
        "store: { redis: { address: \"10.0.0.9:6380\", tls: { ca: /etc/xdpgate/redis-ca.pem }, \
         username_file: /run/secrets/user, password_file: /run/secrets/pass, db: 2, \
         timeout: 5ms, on_error: deny, pool: 8, key_prefix: \"shop:\" } }",
    )
    .expect("a store");
    assert_eq!(
        full.tls,
        Some(RedisTlsConfig {
            ca: Some(PathBuf::from("/etc/xdpgate/redis-ca.pem"))
        })
    );
    assert_eq!(full.password_file, Some(PathBuf::from("/run/secrets/pass")));
    assert_eq!(full.username_file, Some(PathBuf::from("/run/secrets/user")));
    assert_eq!(
        (full.db, full.timeout, full.on_error, full.pool),
        (2, Duration::from_millis(5), StoreFallback::Deny, 8)
    );
    assert_eq!(full.key_prefix, "shop:");
}

#[test]
fn a_bad_store_is_refused_at_its_key() {
    for (store, key, says) in [
        ("{ redis: {} }", "redis", "no `address`"),
        (
            "{ redis: { address: redis } }",
            "redis.address",
            "has no port",
        ),
        (
            "{ redis: { address: \"r:6379\", on_error: fail } }",
            "redis.on_error",
            "not a fallback",
        ),
        (
            "{ redis: { address: \"r:6379\", on_error: alow } }",
            "redis.on_error",
            "did you mean `allow`?",
        ),
        (
            "{ redis: { address: \"r:6379\", timeout: 0s } }",
            "redis.timeout",
            "out of range",
        ),
        (
            "{ redis: { address: \"r:6379\", timeout: 5s } }",
            "redis.timeout",
            "out of range",
        ),
        (
            "{ redis: { address: \"r:6379\", pool: 0 } }",
            "redis.pool",
            "too small",
        ),
        (
            "{ redis: { address: \"r:6379\", password: hunter2 } }",
            "redis.password",
            "write `password_file:",
        ),
        ("{ memcached: {} }", "memcached", "unknown key"),
        ("{}", "", "`store` needs `redis`"),
    ] {
        let e = store_refused(store);
        let want = format!("proxy.middlewares.limit.rate_limit.store.{key}");
        assert_eq!(e.key, want.trim_end_matches('.'), "{store}: {e}");
        assert!(e.message.contains(says), "{store}: {e}");
        assert!(
            !e.to_string().contains("hunter2"),
            "a secret is not echoed: {e}"
        );
    }
}
