//! The connections of a shared rate limit's store: `pool` slots taken in
//! turn, each a redis `ConnectionManager` (one multiplexed connection that
//! starts a new one, without waiting, after an I/O error). What this adds is
//! the case the manager leaves alone: a connection attempt that failed for
//! another reason than I/O (credentials refused, a server still loading its
//! data when `SELECT` ran) stays that manager's answer for good, so the slot
//! swaps in a fresh manager, at most once per [`RENEW_EVERY`] so that a
//! refused password does not become a connection per request. The retry
//! policy itself (which error earns a second try) is the caller's.
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    Client, RedisResult,
};

/// How often one slot may throw its manager away and start over.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

pub struct StorePool {
    slots: Vec<Slot>,
    next: AtomicUsize,
    client: Client,
    config: ConnectionManagerConfig,
}

struct Slot {
    manager: ArcSwap<ConnectionManager>,
    renewed: Mutex<Option<Instant>>,
}

impl StorePool {
    /// `size` lazy managers: nothing connects before the first request.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(client: Client, config: ConnectionManagerConfig, size: usize) -> RedisResult<Self> {
        let slots = (0..size.max(1))
            .map(|_| {
                let manager =
                    ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
                Ok(Slot {
                    manager: ArcSwap::from_pointee(manager),
                    renewed: Mutex::new(None),
                })
            })
            .collect::<RedisResult<Vec<_>>>()?;
        Ok(StorePool {
            slots,
            next: AtomicUsize::new(0),
            client,
            config,
        })
    }

    /// The next slot in turn and its connection (a cheap handle; the
    /// connection behind it is shared).
    pub fn take(&self) -> (usize, ConnectionManager) {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        (
            index,
            ConnectionManager::clone(&self.slots[index].manager.load()),
        )
    }

    /// Replaces slot `index`'s manager with a fresh one, unless it was
    /// replaced less than [`RENEW_EVERY`] ago.
    pub fn renew(&self, index: usize) {
        let slot = &self.slots[index];
        let Ok(mut renewed) = slot.renewed.lock() else {
            return;
        };
        if renewed.is_some_and(|at| at.elapsed() < RENEW_EVERY) {
            return;
        }
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()) {
            Ok(manager) => {
                slot.manager.store(Arc::new(manager));
                *renewed = Some(Instant::now());
            }
            Err(error) => tracing::debug!("renewing a store connection: {error}"),
        }
    }
}
