//! The future of one action call: the handler's future (or the request to another node), an
//! optional deadline, panic capture, the meta merge into the parent, the endpoint's bulkhead
//! slot, the caller's circuit breaker bookkeeping, and, after a failure, the retry policy and
//! fallback. Hand-written so the common case is one small struct with no extra allocation;
//! retries cost something only once a call has failed.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use moleculer_core::bulkhead::Admission;
use moleculer_core::call_meter::CallOutcome;
use moleculer_core::in_flight::Entered;
use moleculer_core::{Context, MoleculerError, Result};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::panic_guard::panic_message;
use crate::retry::{recover, Failed, OnFailure, Recovery};

/// The future returned by [`ServiceBroker::call`](crate::ServiceBroker::call).
#[must_use = "futures do nothing unless awaited"]
pub struct CallFuture(State);

enum State {
    Failed(Option<MoleculerError>),
    Running(Running),
    Boxed(BoxFuture<'static, Result<Value>>),
}

/// A call under way. Small (56 bytes), since every call moves it a few times and a caller's
/// `async` block holds it twice: what most calls never need sits in [`Extras`].
struct Running {
    handler: BoxFuture<'static, Result<Value>>,
    ctx: Context,
    deadline: Option<Pin<Box<Sleep>>>,
    parent: Option<Context>,
    extras: Option<Box<Extras>>,
    /// Counted as work in progress (on the broker that runs the handler) until dropped.
    entered: Option<Entered>,
    /// Holding one of the endpoint's bulkhead slots.
    holds_slot: bool,
    /// Report the outcome to the caller's breaker for this endpoint.
    record: bool,
    /// Without a recovery of its own, a failed call follows its endpoint's retry plan (a
    /// request served for another node does not: its caller recovers).
    endpoint_plan: bool,
    /// Reported to the endpoint's meter as started, and not yet as ended.
    metering: bool,
}

/// The parts of a call that only some calls have.
struct Extras {
    /// Waiting in the endpoint's bulkhead queue for a slot.
    queued: Option<oneshot::Receiver<()>>,
    /// The recovery the call set up itself.
    own_recovery: Option<Box<Recovery>>,
}

impl Running {
    /// Tells the endpoint's meter how the call ended.
    #[inline]
    fn report(&mut self, outcome: CallOutcome<'_>) {
        self.metering = false;
        if let Some(meter) = &self.ctx.target().meter {
            let elapsed = self.ctx.timed_at().map(|at| at.elapsed());
            meter.finished(self.ctx.caller(), elapsed, outcome);
        }
    }

    /// Leaves the bulkhead queue, if waiting in it.
    fn take_queued(&mut self) -> Option<oneshot::Receiver<()>> {
        self.extras.as_mut().and_then(|e| e.queued.take())
    }

    /// Gives the bulkhead slot back (or the place in its queue).
    #[inline]
    fn release_slot(&mut self) {
        if self.holds_slot {
            self.holds_slot = false;
            if let Some(b) = &self.ctx.target().bulkhead {
                b.release();
            }
        }
        if let Some(rx) = self.take_queued() {
            if let Some(b) = &self.ctx.target().bulkhead {
                b.release_unused(rx);
            }
        }
    }
}

impl Drop for Running {
    #[inline]
    fn drop(&mut self) {
        if self.metering {
            self.report(CallOutcome::Abandoned);
        }
        self.release_slot();
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

    /// A started handler: admitted by its endpoint's bulkhead (or queued, or refused), run
    /// until done or `deadline`.
    #[inline]
    pub(crate) fn running(
        handler: BoxFuture<'static, Result<Value>>,
        ctx: Context,
        deadline: Option<Instant>,
        parent: Option<Context>,
    ) -> Self {
        Self::guarded(handler, ctx, deadline, parent, false, OnFailure::Answer)
    }

    /// [`running`](Self::running), also reporting the outcome to the caller's breaker
    /// (`record`) and recovering from a failure as `recovery` says.
    #[inline]
    pub(crate) fn guarded(
        handler: BoxFuture<'static, Result<Value>>,
        ctx: Context,
        deadline: Option<Instant>,
        parent: Option<Context>,
        record: bool,
        on_failure: OnFailure,
    ) -> Self {
        let metering = match &ctx.target().meter {
            Some(meter) => {
                if meter.started(ctx.caller(), ctx.level()) {
                    ctx.start_timing();
                }
                true
            }
            None => false,
        };
        let (holds_slot, queued) = match ctx.target().bulkhead.as_ref().map(|b| b.enter()) {
            None => (false, None),
            Some(Admission::Entered) => (true, None),
            Some(Admission::Queued(rx)) => (false, Some(rx)),
            Some(Admission::Full(err)) => {
                if let Some(meter) = ctx.target().meter.as_ref().filter(|_| metering) {
                    let elapsed = ctx.timed_at().map(|at| at.elapsed());
                    meter.finished(ctx.caller(), elapsed, CallOutcome::Failed(&err));
                }
                return CallFuture::failed(err);
            }
        };
        let deadline = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        let entered = ctx.tracker().map(|t| t.enter());
        let (own_recovery, endpoint_plan) = match on_failure {
            OnFailure::Answer => (None, false),
            OnFailure::EndpointPlan => (None, true),
            OnFailure::Own(own) => (Some(own), false),
        };
        let extras = (queued.is_some() || own_recovery.is_some()).then(|| {
            Box::new(Extras {
                queued,
                own_recovery,
            })
        });
        CallFuture(State::Running(Running {
            handler,
            ctx,
            deadline,
            parent,
            extras,
            entered,
            holds_slot,
            record,
            endpoint_plan,
            metering,
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

    /// Done: slot back, meta to the parent, outcome to the breaker. A failure with a recovery
    /// turns into the retry future.
    #[inline]
    fn finish(&mut self, result: Result<Value>) -> Finish {
        if self.metering {
            self.report(match &result {
                Ok(_) => CallOutcome::Answered,
                Err(err) => CallOutcome::Failed(err),
            });
        }
        self.release_slot();
        if let Some(parent) = &self.parent {
            parent.merge_meta(self.ctx.take_meta());
        }
        if self.record {
            if let Some(breaker) = &self.ctx.target().breaker {
                let node = self.ctx.local_node_id();
                breaker.record(
                    result
                        .as_ref()
                        .is_err_and(|e| breaker.counts_against(e, node)),
                );
            }
        }
        let err = match result {
            Ok(value) => return Finish::Done(Ok(value)),
            Err(err) => err,
        };
        let own = self.extras.as_mut().and_then(|e| e.own_recovery.take());
        let recovery = match (own, self.endpoint_plan) {
            (Some(own), _) => *own,
            (None, true) => match self.ctx.target().retry {
                Some(plan) => Recovery::retrying(plan),
                None => return Finish::Done(Err(err)),
            },
            (None, false) => return Finish::Done(Err(err)),
        };
        if !recovery.applies() {
            return Finish::Done(Err(err));
        }
        Finish::Recover(Box::pin(recover(
            self.ctx.broker(),
            recovery,
            Failed {
                err,
                action: self.ctx.action().unwrap_or_default().to_owned(),
                params: self.ctx.params().clone(),
                meta: self.ctx.meta(),
                headers: self.ctx.headers().clone(),
                parent: self.parent.clone(),
                request_id: Some(self.ctx.request_id().clone()),
                node: Some(self.ctx.local_node_id().clone()),
                deadline: self.ctx.deadline(),
            },
        )))
    }

    fn poll_running(&mut self, cx: &mut TaskContext<'_>) -> Poll<Finish> {
        if let Some(rx) = self.extras.as_mut().and_then(|e| e.queued.as_mut()) {
            match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(())) => {
                    self.take_queued();
                    self.holds_slot = true;
                }
                Poll::Ready(Err(_)) => {
                    self.take_queued();
                    let err = MoleculerError::broker_disconnected();
                    return Poll::Ready(self.finish(Err(err)));
                }
                Poll::Pending => return self.poll_deadline(cx),
            }
        }
        if let Poll::Ready(result) = self.poll_handler(cx) {
            return Poll::Ready(self.finish(result));
        }
        self.poll_deadline(cx)
    }

    fn poll_deadline(&mut self, cx: &mut TaskContext<'_>) -> Poll<Finish> {
        if let Some(deadline) = &mut self.deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                let err = MoleculerError::request_timeout(
                    self.ctx.action().unwrap_or_default(),
                    self.ctx.local_node_id(),
                );
                return Poll::Ready(self.finish(Err(err)));
            }
        }
        Poll::Pending
    }
}

/// How a running call ended.
enum Finish {
    Done(Result<Value>),
    Recover(BoxFuture<'static, Result<Value>>),
}

impl Future for CallFuture {
    type Output = Result<Value>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<Value>> {
        let this = self.get_mut();
        match &mut this.0 {
            State::Failed(err) => Poll::Ready(Err(err
                .take()
                .unwrap_or_else(MoleculerError::broker_disconnected))),
            State::Boxed(fut) => fut.as_mut().poll(cx),
            State::Running(run) => match run.poll_running(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Finish::Done(result)) => Poll::Ready(result),
                Poll::Ready(Finish::Recover(mut retry)) => {
                    let polled = retry.as_mut().poll(cx);
                    this.0 = State::Boxed(retry);
                    polled
                }
            },
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
            bulkhead: None,
            breaker: None,
            retry: None,
            meter: None,
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
            _: &moleculer_core::CallOptions,
        ) -> BoxFuture<'static, Result<Value>> {
            unreachable!("no nested calls in these tests")
        }
        fn action_nodes(&self, _: &str) -> Vec<NodeId> {
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
