//! Moleculer's bulkhead: at most `concurrency` executions of one local action (or event
//! handler) at a time on this node; the rest wait in FIFO order, up to `maxQueueSize` waiting,
//! beyond which a request is refused with `QueueIsFullError` (429, retryable) and an event is
//! dropped with a warning.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use moleculer_core::middleware::{ActionHandler, EventHandler};
use moleculer_core::{BulkheadOptions, Context, MoleculerError, NodeId, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slots and queue of one action or event handler.
pub(crate) struct Bulkhead {
    /// The action or event name, for errors and logs.
    name: Arc<str>,
    node_id: NodeId,
    slots: Arc<Semaphore>,
    /// Requests waiting for a slot.
    waiting: AtomicUsize,
    /// 0: no limit.
    max_queue: usize,
}

/// A request admitted to the queue; leaving it (with or without a slot) frees its place.
struct Queued<'a>(&'a Bulkhead);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bulkhead {
    pub fn new(name: &str, node_id: NodeId, options: &BulkheadOptions) -> Arc<Self> {
        Arc::new(Self {
            name: Arc::from(name),
            node_id,
            slots: Arc::new(Semaphore::new(options.concurrency() as usize)),
            waiting: AtomicUsize::new(0),
            max_queue: options.max_queue_size() as usize,
        })
    }

    /// Requests waiting for a slot right now.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// A place in the queue, unless it is full.
    fn enqueue(&self) -> Result<Queued<'_>> {
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let queued = Queued(self);
        if self.max_queue > 0 && before >= self.max_queue {
            return Err(MoleculerError::queue_is_full(
                &self.name,
                &self.node_id,
                before,
                self.max_queue,
            ));
        }
        Ok(queued)
    }

    /// Runs `work` in a slot: at once if one is free, else after the requests queued before it.
    fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce() -> BoxFuture<'static, Result<T>> + Send + 'static,
    ) -> BoxFuture<'static, Result<T>> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return hold(slot, work());
        }
        let me = self.clone();
        Box::pin(async move {
            let slot = {
                let _queued = me.enqueue()?;
                me.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| MoleculerError::broker_disconnected())?
            };
            hold(slot, work()).await
        })
    }

    /// `handler` behind this bulkhead.
    pub fn wrap_action(self: Arc<Self>, handler: ActionHandler) -> ActionHandler {
        Arc::new(move |ctx: Context| {
            let handler = handler.clone();
            self.run(move || handler(ctx))
        })
    }

    /// `handler` behind this bulkhead; a delivery refused by a full queue is dropped (the
    /// event bus logs the error).
    pub fn wrap_event(self: Arc<Self>, handler: EventHandler) -> EventHandler {
        Arc::new(move |ctx: Context| {
            let handler = handler.clone();
            self.run(move || handler(ctx))
        })
    }
}

/// Runs `fut`, keeping `slot` until it is done.
fn hold<T: Send + 'static>(
    slot: OwnedSemaphorePermit,
    fut: impl Future<Output = Result<T>> + Send + 'static,
) -> BoxFuture<'static, Result<T>> {
    Box::pin(async move {
        let result = fut.await;
        drop(slot);
        result
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{json, Value};

    use super::*;

    fn bulkhead(concurrency: u32, max_queue: u32) -> Arc<Bulkhead> {
        Bulkhead::new(
            "svc.work",
            NodeId::new("n"),
            &BulkheadOptions {
                enabled: Some(true),
                concurrency: Some(concurrency),
                max_queue_size: Some(max_queue),
            },
        )
    }

    fn job(
        ms: u64,
        done: Arc<parking_lot::Mutex<Vec<u64>>>,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<Value>> + Send {
        move || {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                done.lock().push(ms);
                Ok(json!(ms))
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_slot_one_queue_place_third_call_is_refused_as_moleculer_does() {
        let b = bulkhead(1, 1);
        let done = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let first = tokio::spawn(b.run(job(30, done.clone())));
        let second = tokio::spawn(b.run(job(10, done.clone())));
        tokio::task::yield_now().await;
        assert_eq!(b.queued(), 1);
        let err = b.run(job(1, done.clone())).await.unwrap_err();
        assert_eq!((err.name.as_str(), err.code), ("QueueIsFullError", 429));
        assert!(err.retryable);
        assert_eq!(err.data["action"], "svc.work");
        assert_eq!(first.await.unwrap().unwrap(), json!(30));
        assert_eq!(second.await.unwrap().unwrap(), json!(10));
        // The queued call ran only after the first freed the slot.
        assert_eq!(*done.lock(), vec![30, 10]);
        assert_eq!(b.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_requests_run_in_arrival_order_as_slots_free() {
        let b = bulkhead(2, 0);
        let done = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let started = tokio::time::Instant::now();
        let runs: Vec<_> = [50, 40, 30, 20, 10]
            .into_iter()
            .map(|ms| tokio::spawn(b.run(job(ms, done.clone()))))
            .collect();
        for r in runs {
            r.await.unwrap().unwrap();
        }
        // Two at a time: 50 and 40 first; 30 takes 40's slot at 40 ms, 20 takes 50's at 50 ms
        // (both end at 70 ms, 30 first), 10 runs from 70 to 80 ms. An unbounded queue (0)
        // refuses nobody.
        assert_eq!(*done.lock(), vec![40, 50, 30, 20, 10]);
        assert_eq!(started.elapsed(), Duration::from_millis(80));
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_leaves_the_queue() {
        let b = bulkhead(1, 1);
        let done = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let busy = tokio::spawn(b.run(job(100, done.clone())));
        tokio::task::yield_now().await;
        let gave_up =
            tokio::time::timeout(Duration::from_millis(10), b.run(job(1, done.clone()))).await;
        assert!(gave_up.is_err());
        assert_eq!(b.queued(), 0, "its place is free again");
        assert!(b.run(job(1, done.clone())).await.is_ok());
        busy.await.unwrap().unwrap();
    }
}
