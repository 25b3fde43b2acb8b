//! The future of one local action call: the handler's future, an optional deadline, panic
//! capture and the meta merge into the parent. Hand-written so the common case (no timeout, no
//! parent) is one small struct with no extra allocation.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use moleculer_core::{Context, MoleculerError, Result};
use serde_json::Value;
use tokio::time::{Instant, Sleep};

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
}

impl CallFuture {
    pub(crate) fn failed(err: MoleculerError) -> Self {
        CallFuture(State::Failed(Some(err)))
    }

    pub(crate) fn boxed(fut: BoxFuture<'static, Result<Value>>) -> Self {
        CallFuture(State::Boxed(fut))
    }

    pub(crate) fn running(
        handler: BoxFuture<'static, Result<Value>>,
        ctx: Context,
        deadline: Option<Instant>,
        parent: Option<Context>,
    ) -> Self {
        let deadline = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        CallFuture(State::Running(Running {
            handler,
            ctx,
            deadline,
            parent,
        }))
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
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
