//! `rate_limit`: GCRA (governor) per client, keyed by the client IP the
//! forwarded-header logic settled on, IPv6 clients optionally grouped by a
//! prefix (a /64 is one subscriber). A rejection is 429 with `Retry-After`.
//!
//! Two parts: [`RateLimit`] is the limiter (the decision per key, and the
//! memory it keeps), and [`RateLimited`] is the middleware that asks it and
//! answers; another limiter (one shared between nodes) slots in beside
//! [`RateLimit`] behind the same middleware shape.
//!
//! governor's own keyed store grows with every key it sees; a flood from
//! spoofed or rotating addresses would grow it without end. [`BoundedStore`]
//! keeps at most `max_keys` keys in least-recently-used order across a few
//! locked shards, so memory stays flat whatever arrives. A key that is
//! forgotten starts again with a full burst, which is what an idle client
//! would have anyway.
use std::{
    hash::{BuildHasher, Hash},
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    num::NonZeroUsize,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use governor::{
    clock::{Clock as _, DefaultClock},
    middleware::NoOpMiddleware,
    nanos::Nanos,
    state::{keyed::ShrinkableKeyedStateStore, StateStore},
    Quota, RateLimiter,
};
use hyper::{header, Request, StatusCode};
use lru::LruCache;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

use super::{
    client_source,
    rate_limit_redis::{RedisLimit, Verdict},
    stack::Middleware,
    ClientSource, RateLimitConfig, StoreFallback,
};
use crate::proxy::{request::ProxyError, upstream::ProxyBody};

/// Locks are per shard, so concurrent clients rarely wait on each other.
const SHARDS: usize = 16;

pub struct RateLimit {
    limiter: RateLimiter<IpAddr, BoundedStore<IpAddr>, DefaultClock, NoOpMiddleware>,
    ipv6_subnet: Option<u8>,
    source: ClientSource,
    /// The shared store, when the limit is cluster-wide (`store: redis`).
    shared: Option<RedisLimit>,
}

impl RateLimit {
    /// `middleware` names the limit in the store's log lines.
    pub fn new(middleware: &str, config: &RateLimitConfig) -> Result<Self> {
        let average = config.average.max(1);
        let every = config.period / average;
        let burst = NonZeroU32::new(config.burst.max(1)).context("burst")?;
        let quota = Quota::with_period(every)
            .context("the period divided by the average is zero")?
            .allow_burst(burst);
        Ok(RateLimit {
            limiter: RateLimiter::new(
                quota,
                BoundedStore::new(config.max_keys),
                DefaultClock::default(),
            ),
            ipv6_subnet: config.ipv6_subnet,
            source: config.source.clone(),
            shared: match &config.store {
                Some(store) => Some(RedisLimit::new(middleware, config, store)?),
                None => None,
            },
        })
    }

    pub fn source(&self) -> &ClientSource {
        &self.source
    }

    /// The decision for one request: `Err` is how long the client must
    /// wait. A shared limit asks its store; when the store gives no answer
    /// in time the fallback decides, and is returned to be counted.
    pub async fn admit(&self, client: IpAddr) -> (Result<(), Duration>, Option<StoreFallback>) {
        let Some(shared) = &self.shared else {
            return (self.check(client), None);
        };
        let fallback = shared.on_error;
        match shared.check(self.key(client)).await {
            Ok(Verdict::Allow) => (Ok(()), None),
            Ok(Verdict::Deny(wait)) => (Err(wait), None),
            Err(_) => match fallback {
                StoreFallback::Local => (self.check(client), Some(fallback)),
                StoreFallback::Allow => (Ok(()), Some(fallback)),
                StoreFallback::Deny => (Err(Duration::from_secs(1)), Some(fallback)),
            },
        }
    }

    /// This node's own decision: `Err` is how long the client must wait
    /// before its next request would pass.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let key = self.key(client);
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Keys remembered now.
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }

    /// Forgets keys whose bucket is full again (indistinguishable from a
    /// client never seen).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
    }

    fn key(&self, client: IpAddr) -> IpAddr {
        match (client.to_canonical(), self.ipv6_subnet) {
            (IpAddr::V6(v6), Some(bits)) if bits < 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
            (ip, _) => ip,
        }
    }
}

/// The middleware: asks its limiter about the request's client and keeps
/// the `xdpgate_rate_limit_keys` gauge current.
pub struct RateLimited {
    pub limiter: RateLimit,
    keys: Gauge,
    /// `xdpgate_rate_limit_store_errors_total` for this middleware, by
    /// outcome (`local`, `allow`, `deny`).
    store_errors: [Counter; 3],
}

impl RateLimited {
    pub fn new(limiter: RateLimit, keys: Gauge, store_errors: [Counter; 3]) -> Self {
        RateLimited {
            limiter,
            keys,
            store_errors,
        }
    }

    /// Upkeep: forgets idle clients, then reports how many are left.
    pub fn forget_idle(&self) {
        self.limiter.forget_idle();
        self.keys.set(self.limiter.keys() as i64);
    }
}

impl Middleware for RateLimited {
    async fn request(&self, request: &mut Request<ProxyBody>) -> Result<(), ProxyError> {
        // No address found by the source's strategy: one shared bucket, as
        // Traefik's empty source.
        let client = client_source::resolve(self.limiter.source(), request)?
            .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
        let (decision, fallback) = self.limiter.admit(client).await;
        if let Some(fallback) = fallback {
            self.store_errors[fallback as usize].inc();
        }
        self.keys.set(self.limiter.keys() as i64);
        decision.map_err(too_many)
    }
}

fn too_many(wait: Duration) -> ProxyError {
    // Whole seconds, rounded up: a client that waits what it is told gets in.
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    ProxyError::policy(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit",
        "too many requests",
    )
    .with_header(header::RETRY_AFTER, seconds.into())
}

/// A governor state store that remembers at most `cap` keys, forgetting
/// the least recently used first.
pub struct BoundedStore<K: Hash + Eq> {
    shards: Vec<Mutex<LruCache<K, u64>>>,
    hasher: std::collections::hash_map::RandomState,
    len: AtomicUsize,
}

impl<K: Hash + Eq> BoundedStore<K> {
    pub fn new(cap: usize) -> Self {
        let per_shard = NonZeroUsize::new(cap.div_ceil(SHARDS).max(1)).unwrap_or(NonZeroUsize::MIN);
        BoundedStore {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
            hasher: Default::default(),
            len: AtomicUsize::new(0),
        }
    }

    /// The most keys this store holds.
    pub fn capacity(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).cap().get())
            .sum()
    }
}

impl<K: Hash + Eq + Clone> StateStore for BoundedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let shard = (self.hasher.hash_one(key) as usize) % self.shards.len();
        let mut map = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
        let before = map.len();
        let previous = map.get(key).copied().map(Nanos::from);
        let (outcome, next) = f(previous)?;
        map.put(key.clone(), next.into());
        let after = map.len();
        if after > before {
            self.len.fetch_add(after - before, Ordering::Relaxed);
        }
        Ok(outcome)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for BoundedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        let drop_below = u64::from(drop_below);
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            let idle: Vec<K> = map
                .iter()
                .filter(|(_, &tat)| tat < drop_below)
                .map(|(k, _)| k.clone())
                .collect();
            for key in &idle {
                map.pop(key);
            }
            self.len.fetch_sub(idle.len(), Ordering::Relaxed);
        }
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    fn is_empty(&self) -> bool {
        self.len.load(Ordering::Relaxed) == 0
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn limit(average: u32, period: Duration, burst: u32, max_keys: usize) -> RateLimit {
        RateLimit::new(
            "test",
            &RateLimitConfig {
                average,
                period,
                burst,
                ipv6_subnet: Some(64),
                max_keys,
                source: Default::default(),
                store: None,
            },
        )
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_burst_passes_then_429_with_retry_after_then_recovery() {
        // One request every 100ms, three at once.
        let limit = limit(10, Duration::from_secs(1), 3, 1024);
        let client = ip("192.0.2.1");
        for n in 0..3 {
            assert!(limit.check(client).is_ok(), "request {n} of the burst");
        }
        let refused = too_many(limit.check(client).unwrap_err()).into_response();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
        assert!(
            limit.check(ip("192.0.2.2")).is_ok(),
            "another client is not limited"
        );
        std::thread::sleep(Duration::from_millis(150));
        assert!(limit.check(client).is_ok(), "one request refilled");
        assert!(limit.check(client).is_err());
    }

    #[test]
    fn retry_after_counts_whole_seconds_up() {
        // One request a minute: the next is 60s away.
        let limit = limit(1, Duration::from_secs(60), 1, 1024);
        let client = ip("192.0.2.1");
        assert!(limit.check(client).is_ok());
        let refused = too_many(limit.check(client).unwrap_err()).into_response();
        assert_eq!(refused.headers()[header::RETRY_AFTER], "60");
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let limit = limit(1, Duration::from_secs(60), 1, 1024);
        assert!(limit.check(ip("2001:db8:1:2::1")).is_ok());
        assert!(limit.check(ip("2001:db8:1:2:ffff::9")).is_err(), "same /64");
        assert!(limit.check(ip("2001:db8:1:3::1")).is_ok(), "next /64");
        // Mapped IPv4 is keyed as the IPv4 address, not grouped.
        assert!(limit.check(ip("::ffff:192.0.2.7")).is_ok());
        assert!(limit.check(ip("192.0.2.7")).is_err());
        assert!(limit.check(ip("192.0.2.8")).is_ok());
    }

    #[test]
    fn idle_clients_are_forgotten() {
        let limit = limit(100, Duration::from_secs(1), 1, 1024);
        for i in 0..100u32 {
            assert!(limit
                .check(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
                .is_ok());
        }
        assert_eq!(limit.keys(), 100);
        std::thread::sleep(Duration::from_millis(30));
        limit.forget_idle();
        assert_eq!(limit.keys(), 0, "every bucket refilled after 10ms");
    }

    fn rss_kib() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// A flood from 1,000,000 distinct addresses (each one request, as a
    /// spoofed or rotating flood looks) leaves the store at its cap, and
    /// memory grows by what the cap allows, not by what arrived.
    #[test]
    fn a_million_distinct_clients_stay_within_max_keys() {
        const CAP: usize = 65_536;
        const CLIENTS: u32 = 1_000_000;
        let before = rss_kib();
        let limit = limit(100, Duration::from_secs(60), 200, CAP);
        // The same sharding as the limiter's own store: the cap rounded up
        // to a whole number of keys per shard.
        let capacity = BoundedStore::<IpAddr>::new(CAP).capacity();
        assert!((CAP..CAP + SHARDS).contains(&capacity), "{capacity}");
        let started = std::time::Instant::now();
        for i in 0..CLIENTS {
            // Half IPv4, half IPv6 /64s.
            let client = if i % 2 == 0 {
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
            } else {
                IpAddr::V6(Ipv6Addr::from(
                    (0x2001_0db8_u128 << 96) | (u128::from(i) << 64),
                ))
            };
            assert!(
                limit.check(client).is_ok(),
                "client {i} is new: full bucket"
            );
        }
        let elapsed = started.elapsed();
        let keys = limit.keys();
        let after = rss_kib();
        let growth = after.zip(before).map(|(a, b)| a.saturating_sub(b));
        println!(
            "rate_limit: {CLIENTS} distinct clients in {elapsed:?}; keys held {keys} (cap \
             {capacity}); RSS before {before:?} KiB, after {after:?} KiB, growth {growth:?} KiB"
        );
        assert!(keys <= capacity, "{keys} keys past the cap {capacity}");
        assert!(keys >= CAP * 9 / 10, "the store fills to its cap: {keys}");
        // 65,536 keys at ~100 bytes is ~6.5 MiB; an unbounded store would
        // hold 1,000,000 (~100 MiB).
        if let Some(growth) = growth {
            assert!(growth < 48 * 1024, "RSS grew by {growth} KiB");
        }
    }
}
