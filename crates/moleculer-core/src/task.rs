//! Spawning a broker's background work so that what it logs still names the broker: the task
//! runs in the span that was current where it was spawned (a broker's `broker{node=...}`
//! span, see `ServiceBroker::span`), which tokio does not carry over by itself.

use std::future::Future;

use tracing::Instrument;

/// `tokio::spawn`, in the current span.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.in_current_span())
}
