//! Moleculer's circuit breaker, kept by each caller per endpoint (`nodeID:action`): an endpoint
//! whose failure rate reaches `threshold` (over at least `minRequestCount` requests in a
//! `windowTime` window) is switched off for balancing; after `halfOpenTime` one request goes
//! through as a probe; its success closes the breaker, its failure opens it again. Each change
//! is broadcast as `$circuit-breaker.opened` / `half-opened` / `closed` with Moleculer's
//! payloads.
//!
//! Calls count themselves in their endpoint's [`EndpointBreaker`] (reached through the
//! context's target: no lookup for local endpoints, one per remote call); this component makes
//! the decisions the counts call for.
//!
//! Beyond Moleculer: a timeout measured by the caller and a request rejected because the node
//! left count as failures too, so a crashed or frozen node trips the breaker (Moleculer counts
//! only errors that come back from the node); every endpoint's window restarts on its own
//! clock; and an endpoint's state is forgotten when its node leaves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use moleculer_core::endpoint_breaker::{BreakerSignal, BreakerState, EndpointBreaker};
use moleculer_core::{CircuitBreakerOptions, EmitOptions, ErrorCheck, EventType, NodeId};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::event_bus::EventBus;
use crate::shared_registry::SharedRegistry;

type Key = (NodeId, Arc<str>);

/// What the component keeps about one endpoint besides its counts.
struct Endpoint {
    node: NodeId,
    action: Arc<str>,
    service: Arc<str>,
    options: CircuitBreakerOptions,
    /// Bumped at every state change, so a timer set for an older state does nothing.
    epoch: AtomicU64,
    window_start: Mutex<Instant>,
    /// How many times it opened, for the metrics.
    opened: AtomicU64,
}

/// One endpoint's breaker as the metrics read it.
pub(crate) struct BreakerSnapshot {
    pub node: NodeId,
    pub service: Arc<str>,
    pub action: Arc<str>,
    pub state: BreakerState,
    /// How many times it opened.
    pub opened: u64,
}

/// The breaker states of every endpoint this node calls.
pub(crate) struct CircuitBreaker {
    /// The broker's settings, under each action's own.
    pub base: CircuitBreakerOptions,
    endpoints: DashMap<Key, (Arc<EndpointBreaker>, Arc<Endpoint>), foldhash::fast::RandomState>,
    registry: Arc<SharedRegistry>,
    events: Arc<EventBus>,
    /// Which errors count as failures (Moleculer's `check`), given to every endpoint's cell.
    check: Option<ErrorCheck>,
    me: Weak<CircuitBreaker>,
}

impl CircuitBreaker {
    pub fn new(
        base: CircuitBreakerOptions,
        check: Option<ErrorCheck>,
        registry: Arc<SharedRegistry>,
        events: Arc<EventBus>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            base,
            endpoints: DashMap::default(),
            registry,
            events,
            check,
            me: me.clone(),
        })
    }

    /// The breaker of `action` on `node` (created on first use), with `options` in force.
    pub fn endpoint(
        &self,
        node: &NodeId,
        action: &Arc<str>,
        service: &Arc<str>,
        options: &CircuitBreakerOptions,
    ) -> Arc<EndpointBreaker> {
        if let Some(found) = self.endpoints.get(&(node.clone(), action.clone())) {
            return found.0.clone();
        }
        self.endpoints
            .entry((node.clone(), action.clone()))
            .or_insert_with(|| {
                let about = Arc::new(Endpoint {
                    node: node.clone(),
                    action: action.clone(),
                    service: service.clone(),
                    options: *options,
                    epoch: AtomicU64::new(0),
                    opened: AtomicU64::new(0),
                    window_start: Mutex::new(Instant::now()),
                });
                let (me, watched) = (self.me.clone(), about.clone());
                let observer = Box::new(move |b: &EndpointBreaker, signal| {
                    if let Some(me) = me.upgrade() {
                        me.observe(b, &watched, signal);
                    }
                });
                let breaker = Arc::new(EndpointBreaker::new(observer, self.check.clone()));
                (breaker, about)
            })
            .0
            .clone()
    }

    /// Restarts the counting window of every endpoint whose window is over; every second.
    pub fn start(&self) {
        let me = self.me.clone();
        moleculer_core::task::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticks.tick().await;
                let Some(me) = me.upgrade() else { break };
                for entry in me.endpoints.iter() {
                    let (breaker, about) = entry.value();
                    let mut start = about.window_start.lock();
                    if start.elapsed().as_secs_f64() >= about.options.window_time() {
                        *start = Instant::now();
                        breaker.reset_counts();
                    }
                }
            }
        });
    }

    /// Forgets every endpoint of a node that left: a node that comes back starts afresh.
    pub fn forget_node(&self, node: &str) {
        self.endpoints.retain(|(n, _), _| **n != *node);
    }

    fn observe(&self, breaker: &EndpointBreaker, about: &Arc<Endpoint>, signal: BreakerSignal) {
        match (breaker.state(), signal) {
            (BreakerState::HalfOpenWait, BreakerSignal::Probe) => {
                // A probe that never answers releases the endpoint after another halfOpenTime.
                let epoch = about.epoch.fetch_add(1, Ordering::AcqRel) + 1;
                self.half_open_after(about, epoch);
            }
            (BreakerState::HalfOpenWait, BreakerSignal::Outcome { failed: true }) => {
                self.open(breaker, about);
            }
            (BreakerState::HalfOpenWait, BreakerSignal::Outcome { failed: false }) => {
                self.close(breaker, about);
            }
            (BreakerState::Closed, BreakerSignal::Outcome { failed: true }) => {
                let (count, failures) = breaker.counts();
                if count >= about.options.min_request_count()
                    && f64::from(failures) / f64::from(count.max(1)) >= about.options.threshold()
                {
                    self.open(breaker, about);
                }
            }
            _ => {}
        }
    }

    /// Every endpoint's breaker: its state and how often it opened.
    pub fn snapshot(&self) -> Vec<BreakerSnapshot> {
        self.endpoints
            .iter()
            .map(|e| {
                let (breaker, about) = e.value();
                BreakerSnapshot {
                    node: about.node.clone(),
                    service: about.service.clone(),
                    action: about.action.clone(),
                    state: breaker.state(),
                    opened: about.opened.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    fn open(&self, breaker: &EndpointBreaker, about: &Arc<Endpoint>) {
        breaker.set_state(BreakerState::Open);
        about.opened.fetch_add(1, Ordering::Relaxed);
        let epoch = about.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.registry
            .write()
            .set_action_endpoint_available(&about.action, &about.node, false);
        let (count, failures) = breaker.counts();
        let rate = if count > 0 {
            f64::from(failures) / f64::from(count)
        } else {
            0.0
        };
        tracing::warn!(node = %about.node, action = %about.action, failures, count, "circuit breaker opened");
        self.announce(
            "$circuit-breaker.opened",
            json!({ "nodeID": about.node, "service": &*about.service, "action": &*about.action, "failures": failures, "count": count, "rate": rate }),
        );
        self.half_open_after(about, epoch);
    }

    fn close(&self, breaker: &EndpointBreaker, about: &Arc<Endpoint>) {
        breaker.set_state(BreakerState::Closed);
        about.epoch.fetch_add(1, Ordering::AcqRel);
        breaker.reset_counts();
        *about.window_start.lock() = Instant::now();
        self.registry
            .write()
            .set_action_endpoint_available(&about.action, &about.node, true);
        tracing::info!(node = %about.node, action = %about.action, "circuit breaker closed");
        self.announce(
            "$circuit-breaker.closed",
            json!({ "nodeID": about.node, "service": &*about.service, "action": &*about.action }),
        );
    }

    /// After `halfOpenTime`, unless the state changed meanwhile: half-open (one probe may go).
    fn half_open_after(&self, about: &Arc<Endpoint>, epoch: u64) {
        let wait = Duration::from_millis(about.options.half_open_time());
        let (me, about) = (self.me.clone(), about.clone());
        moleculer_core::task::spawn(async move {
            tokio::time::sleep(wait).await;
            let Some(me) = me.upgrade() else { return };
            if about.epoch.load(Ordering::Acquire) != epoch {
                return;
            }
            let Some(breaker) = me
                .endpoints
                .get(&(about.node.clone(), about.action.clone()))
                .map(|e| e.0.clone())
            else {
                return;
            };
            about.epoch.fetch_add(1, Ordering::AcqRel);
            breaker.set_state(BreakerState::HalfOpen);
            me.registry
                .write()
                .set_action_endpoint_available(&about.action, &about.node, true);
            tracing::info!(node = %about.node, action = %about.action, "circuit breaker half-opened");
            me.announce(
                "$circuit-breaker.half-opened",
                json!({ "nodeID": about.node, "service": &*about.service, "action": &*about.action }),
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
        moleculer_core::task::spawn(send);
    }
}
