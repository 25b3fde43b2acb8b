//! Requests sent to other nodes and not answered yet, bounded by `transit.maxQueueSize`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use moleculer_core::{Meta, MoleculerError, NodeId, Result};
use serde_json::Value;
use tokio::sync::oneshot;

/// What a remote call answers: the data and the callee's meta.
pub(crate) type Reply = Result<(Value, Meta)>;

struct Pending {
    node: NodeId,
    action: String,
    reply: oneshot::Sender<Reply>,
}

/// The pending requests, by request id.
pub(crate) struct PendingRequests {
    map: DashMap<Arc<str>, Pending>,
    /// Entries in `map`, reserved before inserting so the limit holds under concurrency.
    count: AtomicUsize,
    limit: usize,
}

impl PendingRequests {
    pub fn new(limit: usize) -> Self {
        Self {
            map: DashMap::new(),
            count: AtomicUsize::new(0),
            limit,
        }
    }

    /// Registers request `id` to `node`; its answer arrives on the returned receiver. A full
    /// queue answers `QueueIsFullError` and registers nothing.
    pub fn add(
        &self,
        id: Arc<str>,
        node: &NodeId,
        action: &str,
    ) -> Result<oneshot::Receiver<Reply>> {
        let before = self.count.fetch_add(1, Ordering::AcqRel);
        if before >= self.limit {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Err(MoleculerError::queue_is_full(
                action, node, before, self.limit,
            ));
        }
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            node: node.clone(),
            action: action.to_owned(),
            reply,
        };
        if self.map.insert(id, pending).is_some() {
            // An id reused while pending: the old waiter lost its entry, keep the count right.
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(rx)
    }

    fn take(&self, id: &str) -> Option<Pending> {
        let (_, pending) = self.map.remove(id)?;
        self.count.fetch_sub(1, Ordering::AcqRel);
        Some(pending)
    }

    /// Forgets request `id` (it timed out or could not be sent).
    pub fn remove(&self, id: &str) {
        self.take(id);
    }

    /// Completes request `id`; `false` when nobody waits for it (an orphan response).
    pub fn resolve(&self, id: &str, reply: Reply) -> bool {
        match self.take(id) {
            Some(pending) => {
                let _ = pending.reply.send(reply);
                true
            }
            None => false,
        }
    }

    /// Rejects every request pending on `node` with `RequestRejectedError`; returns how many.
    pub fn reject_for(&self, node: &str) -> usize {
        let ids: Vec<Arc<str>> = self
            .map
            .iter()
            .filter(|p| *p.node == *node)
            .map(|p| p.key().clone())
            .collect();
        let mut rejected = 0;
        for id in &ids {
            if let Some(p) = self.take(id) {
                let _ = p
                    .reply
                    .send(Err(MoleculerError::request_rejected(&p.action, &p.node)));
                rejected += 1;
            }
        }
        rejected
    }

    /// Rejects everything pending with `BrokerDisconnectedError` (the broker stops).
    pub fn reject_all(&self) {
        let ids: Vec<Arc<str>> = self.map.iter().map(|p| p.key().clone()).collect();
        for id in ids {
            if let Some(p) = self.take(&id) {
                let _ = p.reply.send(Err(MoleculerError::broker_disconnected()));
            }
        }
    }

    /// How many requests wait for an answer.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(id: &str) -> NodeId {
        NodeId::new(id)
    }

    #[tokio::test]
    async fn an_answer_reaches_its_waiter_once() {
        let pending = PendingRequests::new(10);
        let rx = pending.add("r1".into(), &node("b"), "a.b").unwrap();
        assert_eq!(pending.len(), 1);
        assert!(pending.resolve("r1", Ok((json!(5), Meta::new()))));
        assert_eq!(rx.await.unwrap().unwrap().0, json!(5));
        assert!(
            !pending.resolve("r1", Ok((json!(6), Meta::new()))),
            "orphan"
        );
        assert_eq!(pending.len(), 0);
    }

    #[tokio::test]
    async fn a_node_that_leaves_rejects_only_its_own_requests() {
        let pending = PendingRequests::new(10);
        let to_b = pending.add("1".into(), &node("b"), "x.y").unwrap();
        let to_c = pending.add("2".into(), &node("c"), "x.y").unwrap();
        let also_b = pending.add("3".into(), &node("b"), "x.z").unwrap();
        assert_eq!(pending.reject_for("b"), 2);
        for rx in [to_b, also_b] {
            let err = rx.await.unwrap().unwrap_err();
            assert_eq!((err.name.as_str(), err.code), ("RequestRejectedError", 503));
            assert_eq!(err.data["nodeID"], "b");
        }
        assert_eq!(pending.len(), 1);
        pending.reject_all();
        let err = to_c.await.unwrap().unwrap_err();
        assert_eq!(err.name, "BrokerDisconnectedError");
        assert_eq!(pending.len(), 0);
    }

    #[test]
    fn the_limit_is_refused_with_queue_is_full_and_a_slot_frees_on_removal() {
        let pending = PendingRequests::new(2);
        let _a = pending.add("a".into(), &node("b"), "x.y").unwrap();
        let _b = pending.add("b".into(), &node("b"), "x.y").unwrap();
        let err = pending.add("c".into(), &node("b"), "x.y").unwrap_err();
        assert_eq!((err.name.as_str(), err.code), ("QueueIsFullError", 429));
        assert_eq!(err.data["limit"], 2);
        assert_eq!(pending.len(), 2);
        pending.remove("a");
        assert!(pending.add("c".into(), &node("b"), "x.y").is_ok());
    }

    #[test]
    fn concurrent_adds_never_exceed_the_limit() {
        let pending = Arc::new(PendingRequests::new(100));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let pending = pending.clone();
                std::thread::spawn(move || {
                    let mut kept = Vec::new();
                    for i in 0..50 {
                        if let Ok(rx) = pending.add(format!("{t}-{i}").into(), &node("b"), "x.y") {
                            kept.push(rx);
                        }
                    }
                    kept
                })
            })
            .collect();
        let accepted: usize = threads.into_iter().map(|t| t.join().unwrap().len()).sum();
        assert_eq!(
            accepted, 100,
            "exactly the limit is accepted out of 400 tries"
        );
        assert_eq!(pending.len(), 100);
    }
}
