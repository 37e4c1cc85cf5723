//! What an entrypoint's connections are held to between requests: its
//! connection slots (`max_connections`), and each connection's request
//! activity, which decides when it counts as idle. Idle means no request
//! open, on HTTP/1.1 and HTTP/2 alike; bytes (PINGs, a trickled head) do
//! not count.
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// An entrypoint's connection slots (`max_connections`). When they are all
/// taken, connections with no request open are asked to close, so clients
/// that connect and say nothing cannot hold the entrypoint (nginx reuses
/// idle keep-alive connections the same way when it runs out).
pub struct Slots {
    semaphore: Arc<Semaphore>,
    pub(super) pressure: Notify,
}

impl Slots {
    pub fn new(max_connections: usize) -> Arc<Slots> {
        Arc::new(Slots {
            semaphore: Arc::new(Semaphore::new(max_connections)),
            pressure: Notify::new(),
        })
    }

    /// A slot, evicting idle connections while there is none.
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        loop {
            match self.semaphore.clone().try_acquire_owned() {
                Ok(permit) => return Some(permit),
                Err(TryAcquireError::Closed) => return None,
                Err(TryAcquireError::NoPermits) => {}
            }
            self.pressure.notify_waiters();
            let wait = self.semaphore.clone().acquire_owned();
            // Evicted connections free their slots at once; if none was
            // idle, ask again a little later.
            if let Ok(permit) = tokio::time::timeout(Duration::from_millis(100), wait).await {
                return permit.ok();
            }
        }
    }
}

/// Under slot pressure, a connection idle this long is closed for a new one;
/// one between two requests of a busy client is left alone.
pub const EVICTABLE_AFTER: Duration = Duration::from_secs(1);

/// Per-connection request activity, for the idle timeout.
pub struct Activity {
    started: Instant,
    /// Milliseconds after `started` when the last request began or ended.
    last: AtomicU64,
    open: AtomicU64,
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            started: Instant::now(),
            last: AtomicU64::new(0),
            open: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn request_started(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.last.store(self.now(), Ordering::Relaxed);
    }

    pub fn request_ended(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// How long no request has been open, or `None` while one is.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.open.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = self.now().saturating_sub(self.last.load(Ordering::Relaxed));
        Some(Duration::from_millis(since))
    }

    /// When to look again: what is left of `timeout`, or all of it while a
    /// request is open.
    pub fn idle_left(&self, timeout: Duration) -> Duration {
        match self.idle_for() {
            Some(idle) => timeout.saturating_sub(idle).max(Duration::from_millis(10)),
            None => timeout,
        }
    }
}
