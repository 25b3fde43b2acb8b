//! The registry as the broker's parts share it: one lock, a clock for heartbeat times, and a
//! signal that wakes whoever waits for services to appear.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use moleculer_core::middleware::{ActionHandler, EventHandler};
use moleculer_core::{ContextTarget, MoleculerError, Result};
use moleculer_registry::Registry;
use tokio::sync::watch;
use tokio::time::Instant;

/// A local action as the registry holds it: the (middleware-wrapped) handler and the target its
/// contexts share.
#[derive(Clone)]
pub struct LocalAction {
    /// The handler.
    pub handler: ActionHandler,
    /// Shared by every context of this action.
    pub target: Arc<ContextTarget>,
}

/// A local event subscription as the registry holds it.
#[derive(Clone)]
pub struct LocalSubscription {
    /// The handler.
    pub handler: EventHandler,
    /// Shared by every context of this subscription.
    pub target: Arc<ContextTarget>,
}

impl std::fmt::Debug for LocalAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAction")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LocalSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSubscription")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The registry as the broker holds it.
pub type BrokerRegistry = Registry<LocalAction, LocalSubscription>;

/// The registry behind a lock every part of the broker shares.
pub(crate) struct SharedRegistry {
    /// Sharded so that concurrent callers on different cores never touch the same lock word.
    lock: ShardedLock<BrokerRegistry>,
    /// Bumped on every change that can make a service appear or vanish.
    changes: watch::Sender<u64>,
    /// The registry's time base (heartbeat and offline times are seconds on it).
    clock: Instant,
}

impl SharedRegistry {
    pub fn new(registry: BrokerRegistry) -> Self {
        Self {
            lock: ShardedLock::new(registry),
            changes: watch::channel(0).0,
            clock: Instant::now(),
        }
    }

    /// Reads the registry (keep it short, never await while holding it).
    #[inline]
    pub fn read(&self) -> ShardedLockReadGuard<'_, BrokerRegistry> {
        self.lock
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the registry (keep it short, never await while holding it).
    pub fn write(&self) -> ShardedLockWriteGuard<'_, BrokerRegistry> {
        self.lock
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seconds on the registry's clock (tokio's, so paused-time tests control it).
    pub fn now(&self) -> f64 {
        self.clock.elapsed().as_secs_f64()
    }

    /// Wakes whoever waits for services.
    pub fn changed(&self) {
        self.changes.send_modify(|g| *g += 1);
    }

    /// Waits until every named service (full names, e.g. `v2.posts`) runs somewhere in the
    /// cluster; `None` waits forever. Woken by registry changes, with `interval` as a safety
    /// net. A timeout answers `WAITFOR_SERVICES` naming the missing ones.
    pub async fn wait_for_services(
        &self,
        names: &[&str],
        timeout: Option<Duration>,
        interval: Duration,
    ) -> Result<()> {
        let mut changes = self.changes.subscribe();
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let missing: Vec<&str> = {
                let registry = self.read();
                names
                    .iter()
                    .copied()
                    .filter(|n| !registry.has_service(n))
                    .collect()
            };
            if missing.is_empty() {
                return Ok(());
            }
            let mut wake = interval;
            if let Some(deadline) = deadline {
                let now = Instant::now();
                if now >= deadline {
                    return Err(MoleculerError::services_wait_timeout(names, &missing));
                }
                wake = wake.min(deadline - now);
            }
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep(wake) => {}
            }
        }
    }
}
