//! Keeping a pool current: its background task re-resolves the service's
//! target every `resolve_interval` (keeping the last good address list when
//! a lookup fails or comes back empty) and closes connections that have been
//! idle for `idle_timeout`. The lookup itself is behind [`Resolve`] so that
//! tests can change the answer.
use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{atomic::Ordering, Arc, Weak},
    time::{Duration, Instant},
};

use super::{endpoint::Endpoint, Upstream};
use crate::proxy::config::ServiceConfig;

/// Turns a service target (`host:port`) into addresses.
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(
        &'a self,
        target: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;
}

/// The system resolver, through `tokio::net::lookup_host`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        target: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

/// A lookup that has not answered in this long counts as failed.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);

/// The pool's background task. Holds the pool only weakly, so it ends with
/// the pool as well as when aborted.
pub(super) async fn maintain(pool: Weak<Upstream>, config: ServiceConfig) {
    let resolving = async {
        loop {
            // A fixed endpoint list (from EndpointSlices) is the answer, once:
            // a change to it is a new service config and so a new pool.
            if let Some(fixed) = &config.endpoints {
                if let Some(pool) = pool.upgrade() {
                    pool.apply_resolution(Ok(fixed.clone()));
                }
                return;
            }
            let Some(resolver) = pool.upgrade().map(|p| p.resolver.clone()) else {
                return;
            };
            let lookup = resolver.resolve(&config.target);
            let answer = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(answer) => answer,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "lookup timed out")),
            };
            match pool.upgrade() {
                Some(pool) => pool.apply_resolution(answer),
                None => return,
            }
            // Config rejects zero; a floor keeps hand-built configs from spinning.
            tokio::time::sleep(config.resolve_interval.max(Duration::from_millis(10))).await;
        }
    };
    let sweeping = async {
        let every =
            (config.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(pool) = pool.upgrade() else { return };
            let now = Instant::now();
            for endpoint in pool.endpoints.load().iter() {
                endpoint.sweep(now, config.idle_timeout);
            }
        }
    };
    tokio::join!(resolving, sweeping);
}

impl Upstream {
    /// Takes a lookup's answer: a non-empty list replaces the endpoints
    /// (keeping the state of addresses still present), anything else keeps
    /// the last good list.
    pub(super) fn apply_resolution(&self, answer: io::Result<Vec<SocketAddr>>) {
        let service = &self.config.name;
        let target = &self.config.target;
        let mut addresses = match answer {
            Ok(addresses) if !addresses.is_empty() => addresses,
            failed => {
                let reason = match failed {
                    Err(error) => error.to_string(),
                    Ok(_) => "no addresses".to_string(),
                };
                let kept = self.endpoints.load().len();
                if !self.resolve_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%service, %target, kept, "resolving failed, keeping the last good addresses: {reason}");
                } else {
                    tracing::debug!(%service, %target, kept, "resolving still fails: {reason}");
                }
                self.resolved.send_replace(true);
                return;
            }
        };
        if self.resolve_failing.swap(false, Ordering::Relaxed) {
            tracing::info!(%service, %target, "resolving works again");
        }
        let mut seen = std::collections::HashSet::new();
        addresses.retain(|address| seen.insert(*address));

        let current = self.endpoints.load_full();
        let unchanged =
            current.len() == addresses.len() && current.iter().all(|e| seen.contains(&e.address));
        if !unchanged {
            let endpoints: Vec<Arc<Endpoint>> = addresses
                .iter()
                .map(|address| {
                    current
                        .iter()
                        .find(|e| e.address == *address)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Endpoint::new(*address)))
                })
                .collect();
            tracing::info!(%service, %target, ?addresses, "upstream addresses changed");
            self.endpoints.store(Arc::new(endpoints));
        }
        self.resolved.send_replace(true);
    }
}
