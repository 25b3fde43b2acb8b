//! Moleculer's circuit breaker, kept by each caller per endpoint (`nodeID:action`): an endpoint
//! whose failure rate reaches `threshold` (over at least `minRequestCount` requests in a
//! `windowTime` window) is switched off for balancing; after `halfOpenTime` one request goes
//! through as a probe; its success closes the breaker, its failure opens it again. Each change
//! is broadcast as `$circuit-breaker.opened` / `half-opened` / `closed` with Moleculer's
//! payloads.
//!
//! Beyond Moleculer: a timeout measured by the caller and a request rejected because the node
//! left count as failures too, so a crashed or frozen node trips the breaker (Moleculer counts
//! only errors that come back from the node); counting windows restart on their own for every
//! endpoint; and an endpoint's state is forgotten when its node leaves.

use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use moleculer_core::{
    CircuitBreakerOptions, EmitOptions, EventType, MoleculerError, NodeId, Result,
};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::event_bus::EventBus;
use crate::shared_registry::SharedRegistry;

/// Where an endpoint's breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BreakerState {
    /// Requests flow; outcomes are counted.
    Closed,
    /// The endpoint is switched off until `halfOpenTime` has passed.
    Open,
    /// The next request is let through as the probe.
    HalfOpen,
    /// The probe is out; everyone else skips the endpoint.
    HalfOpenWait,
}

struct Endpoint {
    state: BreakerState,
    count: u32,
    failures: u32,
    window_start: Instant,
    service: Arc<str>,
    /// Bumped at every state change, so a timer set for an older state does nothing.
    epoch: u64,
}

type Key = (NodeId, Arc<str>);

/// The breaker states of every endpoint this node calls.
pub(crate) struct CircuitBreaker {
    /// The broker's settings, under each action's own.
    pub base: CircuitBreakerOptions,
    endpoints: DashMap<Key, Arc<Mutex<Endpoint>>>,
    registry: Arc<SharedRegistry>,
    events: Arc<EventBus>,
    me: Weak<CircuitBreaker>,
}

/// Whether an outcome counts against the endpoint: a server-side error (code ≥ 500) that the
/// node itself raised (not one it relayed from further down), including the caller's own
/// timeout and the rejection of a request whose node left.
fn is_failure(err: &MoleculerError, node: &str) -> bool {
    err.code >= 500 && err.node_id.as_deref().is_none_or(|n| n == node)
}

impl CircuitBreaker {
    pub fn new(
        base: CircuitBreakerOptions,
        registry: Arc<SharedRegistry>,
        events: Arc<EventBus>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            base,
            endpoints: DashMap::new(),
            registry,
            events,
            me: me.clone(),
        })
    }

    fn entry(&self, node: &NodeId, action: &Arc<str>) -> Option<Arc<Mutex<Endpoint>>> {
        self.endpoints
            .get(&(node.clone(), action.clone()))
            .map(|e| e.clone())
    }

    /// Whether a request may go to this endpoint now. A half-open endpoint admits one request
    /// (the probe) and is switched off until its outcome is known.
    pub fn admit(&self, options: &CircuitBreakerOptions, node: &NodeId, action: &Arc<str>) -> bool {
        let Some(entry) = self.entry(node, action) else {
            return true;
        };
        let mut ep = entry.lock();
        match ep.state {
            BreakerState::Closed => true,
            BreakerState::Open | BreakerState::HalfOpenWait => false,
            BreakerState::HalfOpen => {
                ep.state = BreakerState::HalfOpenWait;
                ep.epoch += 1;
                self.registry
                    .write()
                    .set_action_endpoint_available(action, node, false);
                // A probe that never answers releases the endpoint after another halfOpenTime.
                self.half_open_after(options, node, action, ep.epoch);
                true
            }
        }
    }

    /// Counts the outcome of a request to `node` for `action`.
    pub fn record<T>(
        &self,
        options: &CircuitBreakerOptions,
        node: &NodeId,
        action: &Arc<str>,
        service: &Arc<str>,
        outcome: &Result<T>,
    ) {
        let failed = outcome.as_ref().err().is_some_and(|e| is_failure(e, node));
        let entry = self
            .endpoints
            .entry((node.clone(), action.clone()))
            .or_insert_with(|| {
                Arc::new(Mutex::new(Endpoint {
                    state: BreakerState::Closed,
                    count: 0,
                    failures: 0,
                    window_start: Instant::now(),
                    service: service.clone(),
                    epoch: 0,
                }))
            })
            .clone();
        let mut ep = entry.lock();
        let window = Duration::from_secs_f64(options.window_time());
        if ep.window_start.elapsed() >= window {
            ep.window_start = Instant::now();
            ep.count = 0;
            ep.failures = 0;
        }
        ep.count += 1;
        if failed {
            ep.failures += 1;
        }
        match ep.state {
            BreakerState::HalfOpenWait if failed => self.open(&mut ep, options, node, action),
            BreakerState::HalfOpenWait => self.close(&mut ep, node, action),
            BreakerState::Closed
                if ep.count >= options.min_request_count()
                    && f64::from(ep.failures) / f64::from(ep.count) >= options.threshold() =>
            {
                self.open(&mut ep, options, node, action);
            }
            _ => {}
        }
    }

    /// Forgets every endpoint of a node that left: a node that comes back starts afresh.
    pub fn forget_node(&self, node: &str) {
        self.endpoints.retain(|(n, _), _| **n != *node);
    }

    fn open(
        &self,
        ep: &mut Endpoint,
        options: &CircuitBreakerOptions,
        node: &NodeId,
        action: &Arc<str>,
    ) {
        ep.state = BreakerState::Open;
        ep.epoch += 1;
        self.registry
            .write()
            .set_action_endpoint_available(action, node, false);
        let rate = if ep.count > 0 {
            f64::from(ep.failures) / f64::from(ep.count)
        } else {
            0.0
        };
        tracing::warn!(node = %node, action = %action, failures = ep.failures, count = ep.count, "circuit breaker opened");
        self.announce(
            "$circuit-breaker.opened",
            json!({ "nodeID": node, "service": &*ep.service, "action": &**action, "failures": ep.failures, "count": ep.count, "rate": rate }),
        );
        self.half_open_after(options, node, action, ep.epoch);
    }

    fn close(&self, ep: &mut Endpoint, node: &NodeId, action: &Arc<str>) {
        ep.state = BreakerState::Closed;
        ep.epoch += 1;
        ep.count = 0;
        ep.failures = 0;
        ep.window_start = Instant::now();
        self.registry
            .write()
            .set_action_endpoint_available(action, node, true);
        tracing::info!(node = %node, action = %action, "circuit breaker closed");
        self.announce(
            "$circuit-breaker.closed",
            json!({ "nodeID": node, "service": &*ep.service, "action": &**action }),
        );
    }

    /// After `halfOpenTime`, unless the state changed meanwhile: half-open (one probe may go).
    fn half_open_after(
        &self,
        options: &CircuitBreakerOptions,
        node: &NodeId,
        action: &Arc<str>,
        epoch: u64,
    ) {
        let wait = Duration::from_millis(options.half_open_time());
        let (me, node, action) = (self.me.clone(), node.clone(), action.clone());
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let Some(me) = me.upgrade() else { return };
            let Some(entry) = me.entry(&node, &action) else {
                return;
            };
            let mut ep = entry.lock();
            if ep.epoch != epoch {
                return;
            }
            ep.state = BreakerState::HalfOpen;
            ep.epoch += 1;
            me.registry
                .write()
                .set_action_endpoint_available(&action, &node, true);
            tracing::info!(node = %node, action = %action, "circuit breaker half-opened");
            me.announce(
                "$circuit-breaker.half-opened",
                json!({ "nodeID": node, "service": &*ep.service, "action": &*action }),
            );
        });
    }

    /// Broadcasts a state change to the whole cluster, as Moleculer does.
    fn announce(&self, event: &str, payload: Value) {
        let send = self.events.send(
            None,
            EventType::Broadcast,
            event,
            payload,
            EmitOptions::default(),
        );
        tokio::spawn(send);
    }
}
