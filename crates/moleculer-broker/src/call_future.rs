//! The future of one local action call: the handler's future, an optional deadline, panic
//! capture and the meta merge into the parent. Hand-written so the common case (no timeout, no
//! parent) is one small struct with no extra allocation.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use moleculer_core::in_flight::Entered;
use moleculer_core::{Context, MoleculerError, Result};
use serde_json::Value;
use tokio::time::{Instant, Sleep};

use crate::panic_guard::panic_message;

/// The future returned by [`ServiceBroker::call`](crate::ServiceBroker::call).
#[must_use = "futures do nothing unless awaited"]
pub struct CallFuture(State);

enum State {
    Failed(Option<MoleculerError>),
    Running(Running),
    Boxed(BoxFuture<'static, Result<Value>>),
}

struct Running {
    handler: BoxFuture<'static, Result<Value>>,
    ctx: Context,
    deadline: Option<Pin<Box<Sleep>>>,
    parent: Option<Context>,
    /// Counted as work in progress (on the broker that runs the handler) until dropped.
    entered: Option<Entered>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let (Some(entered), Some(tracker)) = (self.entered, self.ctx.tracker()) {
            tracker.leave(entered);
        }
    }
}

impl CallFuture {
    pub(crate) fn failed(err: MoleculerError) -> Self {
        CallFuture(State::Failed(Some(err)))
    }

    pub(crate) fn boxed(fut: BoxFuture<'static, Result<Value>>) -> Self {
        CallFuture(State::Boxed(fut))
    }

    /// The call as a boxed future, without boxing it twice.
    pub(crate) fn into_boxed(self) -> BoxFuture<'static, Result<Value>> {
        match self.0 {
            State::Boxed(fut) => fut,
            other => Box::pin(CallFuture(other)),
        }
    }

    pub(crate) fn running(
        handler: BoxFuture<'static, Result<Value>>,
        ctx: Context,
        deadline: Option<Instant>,
        parent: Option<Context>,
    ) -> Self {
        let deadline = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        let entered = ctx.tracker().map(|t| t.enter());
        CallFuture(State::Running(Running {
            handler,
            ctx,
            deadline,
            parent,
            entered,
        }))
    }
}

impl Running {
    fn poll_handler(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<Value>> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.handler.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => {
                let message = panic_message(&*payload);
                let action = self.ctx.action().unwrap_or_default();
                tracing::error!(action, "handler panicked: {message}");
                Poll::Ready(Err(MoleculerError::handler_panicked(
                    action,
                    self.ctx.local_node_id(),
                    &message,
                )))
            }
        }
    }

    fn finish(&self, result: Result<Value>) -> Result<Value> {
        if let Some(parent) = &self.parent {
            parent.merge_meta(self.ctx.take_meta());
        }
        result
    }
}

impl Future for CallFuture {
    type Output = Result<Value>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<Value>> {
        match &mut self.get_mut().0 {
            State::Failed(err) => Poll::Ready(Err(err
                .take()
                .unwrap_or_else(MoleculerError::broker_disconnected))),
            State::Boxed(fut) => fut.as_mut().poll(cx),
            State::Running(run) => {
                if let Poll::Ready(result) = run.poll_handler(cx) {
                    return Poll::Ready(run.finish(result));
                }
                if let Some(deadline) = &mut run.deadline {
                    if deadline.as_mut().poll(cx).is_ready() {
                        let err = MoleculerError::request_timeout(
                            run.ctx.action().unwrap_or_default(),
                            run.ctx.local_node_id(),
                        );
                        return Poll::Ready(run.finish(Err(err)));
                    }
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;
    use std::time::Duration;

    use futures::future;
    use moleculer_core::{BrokerHandle, ContextTarget, Meta, NodeId, Origin};
    use serde_json::json;

    use super::*;

    fn ctx(timeout: Option<Duration>) -> Context {
        let target = std::sync::Arc::new(ContextTarget {
            broker: Weak::<NoBroker>::new(),
            local_node: NodeId::new("n"),
            service: "svc".into(),
            action: Some("svc.act".into()),
            tracker: None,
        });
        Context::for_call(
            target,
            None,
            Origin::child_of(None),
            Value::Null,
            Meta::new(),
            Meta::new(),
            timeout,
        )
    }

    /// A broker handle that is never there (contexts here make no nested calls).
    struct NoBroker;

    impl BrokerHandle for NoBroker {
        fn node_id(&self) -> &NodeId {
            unreachable!("no nested calls in these tests")
        }
        fn call(
            &self,
            _: Option<&Context>,
            _: &str,
            _: Value,
            _: moleculer_core::CallOptions,
        ) -> BoxFuture<'static, Result<Value>> {
            unreachable!("no nested calls in these tests")
        }
        fn send_event(
            &self,
            _: Option<&Context>,
            _: moleculer_core::EventType,
            _: &str,
            _: Value,
            _: moleculer_core::EmitOptions,
        ) -> BoxFuture<'static, Result<()>> {
            unreachable!("no nested calls in these tests")
        }
    }

    #[tokio::test]
    async fn a_failed_call_answers_its_error() {
        let err = CallFuture::failed(MoleculerError::service_not_found("a.b", None))
            .await
            .unwrap_err();
        assert_eq!(err.name, "ServiceNotFoundError");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_wins_over_a_slow_handler() {
        let ctx = ctx(Some(Duration::from_millis(100)));
        let slow = Box::pin(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(json!("late"))
        });
        let started = Instant::now();
        let err = CallFuture::running(slow, ctx.clone(), ctx.deadline(), None)
            .await
            .unwrap_err();
        assert_eq!((err.name.as_str(), err.code), ("RequestTimeoutError", 504));
        assert_eq!(err.data["action"], "svc.act");
        assert_eq!(started.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_that_finishes_in_time_answers() {
        let ctx = ctx(Some(Duration::from_millis(100)));
        let quick = Box::pin(async {
            tokio::time::sleep(Duration::from_millis(99)).await;
            Ok(json!(1))
        });
        let reply = CallFuture::running(quick, ctx.clone(), ctx.deadline(), None).await;
        assert_eq!(reply.unwrap(), json!(1));
    }

    #[tokio::test]
    async fn a_panic_while_polling_becomes_an_error() {
        let ctx = ctx(None);
        let panics = Box::pin(async {
            tokio::task::yield_now().await;
            panic!("inside the handler")
        });
        let err = CallFuture::running(panics, ctx, None, None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "HANDLER_PANICKED");
        assert!(
            err.message.contains("inside the handler"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn the_childs_meta_merges_into_the_parent_when_it_finishes() {
        let parent = ctx(None);
        parent.set_meta("kept", json!(1));
        let child = ctx(None);
        child.set_meta("fromChild", json!(2));
        let done = CallFuture::running(
            Box::pin(future::ready(Ok(Value::Null))),
            child,
            None,
            Some(parent.clone()),
        )
        .await;
        assert!(done.is_ok());
        assert_eq!(parent.meta_get("kept"), Some(json!(1)));
        assert_eq!(parent.meta_get("fromChild"), Some(json!(2)));
    }
}
