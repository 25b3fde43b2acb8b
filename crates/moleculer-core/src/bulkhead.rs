//! A bulkhead: at most `concurrency` executions at a time; the rest wait in arrival order, up
//! to `maxQueueSize` waiting (0: no limit). Taking and giving back a free slot costs one atomic
//! operation each; the queue's lock is taken only while the bulkhead is full.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::error::{MoleculerError, Result};
use crate::fault_tolerance::BulkheadOptions;
use crate::node_id::NodeId;

/// The slots and the queue of one action or event handler.
#[derive(Debug)]
pub struct Bulkhead {
    /// The action or event, for errors and logs.
    name: Arc<str>,
    node_id: NodeId,
    concurrency: usize,
    /// 0: no limit.
    max_queue: usize,
    /// Slots taken.
    active: AtomicUsize,
    /// Mirrors `waiting.len()`, so the fast paths need no lock.
    queued: AtomicUsize,
    waiting: Mutex<VecDeque<oneshot::Sender<()>>>,
}

/// What a request gets from the bulkhead.
#[derive(Debug)]
pub enum Admission {
    /// A slot: run now, then [`Bulkhead::release`].
    Entered,
    /// A place in the queue: the slot comes through the receiver.
    Queued(oneshot::Receiver<()>),
    /// Refused: the queue is full (`QueueIsFullError`).
    Full(MoleculerError),
}

impl Bulkhead {
    /// A bulkhead for `name` on `node_id`.
    pub fn new(name: &str, node_id: NodeId, options: &BulkheadOptions) -> Self {
        Self {
            name: Arc::from(name),
            node_id,
            concurrency: options.concurrency() as usize,
            max_queue: options.max_queue_size() as usize,
            active: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            waiting: Mutex::new(VecDeque::new()),
        }
    }

    /// Takes a free slot, unless the limit is reached.
    #[inline]
    fn take_slot(&self) -> bool {
        let mut active = self.active.load(Ordering::Relaxed);
        while active < self.concurrency {
            match self.active.compare_exchange_weak(
                active,
                active + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => active = now,
            }
        }
        false
    }

    /// Asks for a slot: now, in the queue, or refused.
    #[inline]
    pub fn enter(&self) -> Admission {
        // Nobody waits: take a free slot without the lock (never ahead of a waiter).
        if self.queued.load(Ordering::Acquire) == 0 && self.take_slot() {
            return Admission::Entered;
        }
        self.enter_slow()
    }

    fn enter_slow(&self) -> Admission {
        let mut waiting = self.waiting.lock();
        // Waiters that gave up leave their place.
        let before = waiting.len();
        waiting.retain(|w| !w.is_closed());
        self.queued
            .fetch_sub(before - waiting.len(), Ordering::Release);
        if waiting.is_empty() && self.take_slot() {
            return Admission::Entered;
        }
        if self.max_queue > 0 && waiting.len() >= self.max_queue {
            return Admission::Full(MoleculerError::queue_is_full(
                &self.name,
                &self.node_id,
                waiting.len(),
                self.max_queue,
            ));
        }
        let (tx, rx) = oneshot::channel();
        waiting.push_back(tx);
        self.queued.fetch_add(1, Ordering::Release);
        // A slot may have been freed between our look and our place in the queue.
        self.hand_over(&mut waiting);
        Admission::Queued(rx)
    }

    /// Gives free slots to the waiters at the head of the queue.
    fn hand_over(&self, waiting: &mut VecDeque<oneshot::Sender<()>>) {
        while !waiting.is_empty() && self.take_slot() {
            let Some(next) = waiting.pop_front() else {
                break;
            };
            self.queued.fetch_sub(1, Ordering::Release);
            if next.send(()).is_err() {
                // That waiter gave up: the slot is free again.
                self.active.fetch_sub(1, Ordering::Release);
            }
        }
    }

    /// Gives a slot back (it passes to the first live waiter, if any).
    #[inline]
    pub fn release(&self) {
        self.active.fetch_sub(1, Ordering::Release);
        if self.queued.load(Ordering::Acquire) > 0 {
            self.hand_over(&mut self.waiting.lock());
        }
    }

    /// A slot that came through a queue receiver dropped before it was used: give it back.
    pub fn release_unused(&self, mut queued: oneshot::Receiver<()>) {
        queued.close();
        if queued.try_recv().is_ok() {
            self.release();
        }
    }

    /// Requests holding a slot right now.
    pub fn in_flight(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Requests waiting for a slot right now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Runs `work` in a slot, waiting for one if need be; a full queue answers
    /// `QueueIsFullError` without running it.
    pub fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce() -> BoxFuture<'static, Result<T>> + Send + 'static,
    ) -> BoxFuture<'static, Result<T>> {
        let me = self.clone();
        match self.enter() {
            Admission::Full(err) => Box::pin(futures::future::ready(Err(err))),
            Admission::Entered => {
                let fut = work();
                Box::pin(async move {
                    let _slot = Slot(me);
                    fut.await
                })
            }
            Admission::Queued(rx) => Box::pin(async move {
                let guard = QueuedGuard(me.clone(), Some(rx));
                let got = guard.wait().await;
                if !got {
                    return Err(MoleculerError::broker_disconnected());
                }
                let _slot = Slot(me);
                work().await
            }),
        }
    }
}

/// A slot held until dropped.
struct Slot(Arc<Bulkhead>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A place in the queue; leaving it early gives back a slot handed over meanwhile.
struct QueuedGuard(Arc<Bulkhead>, Option<oneshot::Receiver<()>>);

impl QueuedGuard {
    async fn wait(mut self) -> bool {
        let Some(rx) = self.1.as_mut() else {
            return false;
        };
        let got = rx.await.is_ok();
        self.1 = None;
        got
    }
}

impl Drop for QueuedGuard {
    fn drop(&mut self) {
        if let Some(rx) = self.1.take() {
            self.0.release_unused(rx);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{json, Value};

    use super::*;

    fn bulkhead(concurrency: u32, max_queue: u32) -> Arc<Bulkhead> {
        Arc::new(Bulkhead::new(
            "svc.work",
            NodeId::new("n"),
            &BulkheadOptions {
                enabled: Some(true),
                concurrency: Some(concurrency),
                max_queue_size: Some(max_queue),
            },
        ))
    }

    fn job(
        ms: u64,
        done: Arc<Mutex<Vec<u64>>>,
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
        let done = Arc::new(Mutex::new(Vec::new()));
        let first = crate::task::spawn(b.run(job(30, done.clone())));
        let second = crate::task::spawn(b.run(job(10, done.clone())));
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
        let done = Arc::new(Mutex::new(Vec::new()));
        let started = tokio::time::Instant::now();
        let runs: Vec<_> = [50, 40, 30, 20, 10]
            .into_iter()
            .map(|ms| crate::task::spawn(b.run(job(ms, done.clone()))))
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
    async fn a_caller_that_gives_up_leaves_the_queue_and_its_slot_is_not_lost() {
        let b = bulkhead(1, 1);
        let done = Arc::new(Mutex::new(Vec::new()));
        let busy = crate::task::spawn(b.run(job(100, done.clone())));
        tokio::task::yield_now().await;
        let gave_up =
            tokio::time::timeout(Duration::from_millis(10), b.run(job(1, done.clone()))).await;
        assert!(gave_up.is_err());
        assert!(
            b.run(job(1, done.clone())).await.is_ok(),
            "queued after the first"
        );
        busy.await.unwrap().unwrap();
        // Every slot came back: the full concurrency is available again.
        assert!(matches!(b.enter(), Admission::Entered));
        b.release();
        assert_eq!(b.queued(), 0);
    }

    #[test]
    fn slots_are_never_over_given_under_contention() {
        let b = bulkhead(3, 0);
        let peak = Arc::new(AtomicUsize::new(0));
        let current = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (b, peak, current) = (b.clone(), peak.clone(), current.clone());
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        match b.enter() {
                            Admission::Entered => {
                                let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                                peak.fetch_max(now, Ordering::SeqCst);
                                current.fetch_sub(1, Ordering::SeqCst);
                                b.release();
                            }
                            Admission::Queued(rx) => {
                                // Wait for the hand-over (blocking is fine on a plain thread).
                                if rx.blocking_recv().is_ok() {
                                    let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                                    peak.fetch_max(now, Ordering::SeqCst);
                                    current.fetch_sub(1, Ordering::SeqCst);
                                    b.release();
                                }
                            }
                            Admission::Full(_) => unreachable!("no queue limit"),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(b.active.load(Ordering::SeqCst), 0);
        assert_eq!(b.queued(), 0);
    }
}
