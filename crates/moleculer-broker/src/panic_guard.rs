//! Handlers are user code: a panic in one must answer its caller with an error and leave the
//! broker serving. This file turns panics into [`MoleculerError`]s.

use std::panic::AssertUnwindSafe;

use futures::future::{self, BoxFuture};
use moleculer_core::{MoleculerError, NodeId, Result};

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Starts a handler, turning a panic in its synchronous part (before its first `.await`) into
/// an error future. Panics while the future runs are caught by whoever polls it.
#[inline]
pub(crate) fn start_handler<T: Send + 'static>(
    run: impl FnOnce() -> BoxFuture<'static, Result<T>>,
    what: &str,
    node: &NodeId,
) -> BoxFuture<'static, Result<T>> {
    match std::panic::catch_unwind(AssertUnwindSafe(run)) {
        Ok(fut) => fut,
        Err(payload) => {
            let message = panic_message(&*payload);
            tracing::error!(handler = %what, "handler panicked: {message}");
            Box::pin(future::ready(Err(MoleculerError::handler_panicked(
                what, node, &message,
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_before_the_first_await_becomes_an_error() {
        let node = NodeId::new("n");
        let fut: BoxFuture<'static, Result<()>> = start_handler(
            || -> BoxFuture<'static, Result<()>> { panic!("bad input {}", 7) },
            "svc.act",
            &node,
        );
        let err = fut.await.unwrap_err();
        assert_eq!(err.kind(), "HANDLER_PANICKED");
        assert!(err.message.contains("bad input 7"), "{}", err.message);
        assert!(err.message.contains("'svc.act'"), "{}", err.message);
    }
}
