//! Joining and leaving the cluster: connecting the transporter to the receive side, running
//! the discoverer and the membership monitor, announcing this node, and the goodbye.

use std::sync::{Arc, Weak};
use std::time::Duration;

use moleculer_core::discoverer::DiscoveryTiming;
use moleculer_core::transporter::{Delivery, IncomingSink, TransporterSetup};
use moleculer_core::NodeId;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::discovery_link::Link;
use crate::error::BrokerError;
use crate::event_bus::EventBus;
use crate::membership::Membership;
use crate::options::BrokerOptions;
use crate::shared_registry::SharedRegistry;
use crate::transit::inbound::Inbound;
use crate::transit::outbound::Transit;

/// This node's presence in a cluster (a broker without a transporter has none).
pub(crate) struct Cluster {
    instance_id: String,
    namespace: String,
    timing: DiscoveryTiming,
    pub transit: Arc<Transit>,
    pub membership: Arc<Membership>,
    inbound: Arc<Inbound>,
    registry: Arc<SharedRegistry>,
    events: Arc<EventBus>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Cluster {
    pub fn new(
        instance_id: String,
        options: &BrokerOptions,
        transit: Arc<Transit>,
        membership: Arc<Membership>,
        inbound: Arc<Inbound>,
        registry: Arc<SharedRegistry>,
        events: Arc<EventBus>,
    ) -> Self {
        Self {
            instance_id,
            namespace: options.namespace.clone(),
            timing: DiscoveryTiming {
                heartbeat_interval: Duration::from_secs_f64(options.heartbeat_interval),
                heartbeat_timeout: Duration::from_secs_f64(options.heartbeat_timeout),
            },
            transit,
            membership,
            inbound,
            registry,
            events,
            tasks: Mutex::new(Vec::new()),
        }
    }

    fn node_id(&self) -> &NodeId {
        &self.transit.node_id
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.lock().push(moleculer_core::task::spawn(task));
    }

    /// Connects the transporter, starts receiving and discovering. Runs before the services
    /// start, so they can wait for remote dependencies.
    pub async fn join(&self) -> Result<(), BrokerError> {
        // Weak: the transporter holds the sink, and must not keep the broker alive.
        let inbound: Weak<Inbound> = Arc::downgrade(&self.inbound);
        let sink = IncomingSink::new(move |incoming| match inbound.upgrade() {
            Some(inbound) => inbound.receive(incoming),
            None => Delivery::Closed,
        });
        let setup = TransporterSetup {
            node_id: self.node_id().clone(),
            namespace: self.namespace.clone(),
            incoming: sink,
            serializer: self.transit.serializer.clone(),
            version: self.transit.version,
        };
        self.transit
            .transporter
            .connect(setup)
            .await
            .map_err(|e| BrokerError::Transporter(e.to_string()))?;
        let discoverer = self.membership.discoverer().clone();
        if let Some(mut queue) = self.membership.take_discovery_queue() {
            let discoverer = discoverer.clone();
            self.spawn(async move {
                while let Some(packet) = queue.recv().await {
                    discoverer.packet_received(packet).await;
                }
            });
        }
        if let Some(mut notices) = self.membership.take_notices() {
            let events = self.events.clone();
            self.spawn(async move {
                while let Some((name, payload)) = notices.recv().await {
                    events.emit_internal(&name, payload).await;
                }
            });
        }
        let link = Arc::new(Link {
            node_id: self.node_id().clone(),
            instance_id: self.instance_id.clone(),
            namespace: self.namespace.clone(),
            registry: self.registry.clone(),
            transit: self.transit.clone(),
            membership: Arc::downgrade(&self.membership),
        });
        discoverer
            .start(link, self.timing)
            .await
            .map_err(|e| BrokerError::Transporter(e.to_string()))?;
        discoverer.discover_all().await;
        tracing::info!(
            node = %self.node_id(),
            transporter = self.transit.transporter.name(),
            discoverer = discoverer.name(),
            serializer = self.transit.serializer.name(),
            "joined the cluster"
        );
        self.start_monitor();
        self.start_latency_pings();
        Ok(())
    }

    /// While some endpoint list balances by Latency, pings one node per host every
    /// `pingInterval` (checked again every heartbeat interval while nothing uses it).
    fn start_latency_pings(&self) {
        let membership = Arc::downgrade(&self.membership);
        let idle = self.timing.heartbeat_interval;
        self.spawn(async move {
            loop {
                let interval = membership.upgrade().and_then(|m| m.latency_ping_interval());
                tokio::time::sleep(interval.unwrap_or(idle)).await;
                let Some(m) = membership.upgrade() else { break };
                if let Some(interval) = interval {
                    m.ping_hosts(interval).await;
                }
            }
        });
    }

    /// Every heartbeat interval: CPU sample, heartbeat timeouts, offline cleanup.
    fn start_monitor(&self) {
        let membership = Arc::downgrade(&self.membership);
        let every = self.timing.heartbeat_interval;
        self.spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(membership) = membership.upgrade() else {
                    break;
                };
                membership.check();
            }
        });
    }

    /// Whether the transporter delivers packets to this node now.
    pub fn transporter_ready(&self) -> bool {
        self.transit.transporter.is_ready()
    }

    /// The transporter's name, for logs.
    pub fn transporter_name(&self) -> &'static str {
        self.transit.transporter.name()
    }

    /// Announces this node's services at once (no debounce) and checks for a duplicate node id.
    pub async fn announce(&self) -> Result<(), BrokerError> {
        self.membership.discoverer().send_local_info(None).await;
        // Give a live duplicate of our node id a moment to prove itself.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if let Some(other) = self.membership.conflicting_instance() {
                return Err(BrokerError::NodeIdConflict {
                    node_id: self.node_id().to_string(),
                    other_instance: other,
                });
            }
        }
        Ok(())
    }

    /// Announces an empty service list (the caller has withdrawn the services), so peers stop
    /// routing here.
    pub async fn withdraw(&self) {
        self.membership.discoverer().send_local_info(None).await;
    }

    /// Says goodbye (unless `quietly`, after a nodeID conflict) and disconnects.
    pub async fn leave(&self, quietly: bool) {
        if quietly {
            // Not even DISCONNECT: peers must keep the node that legitimately owns this id.
            for task in self.tasks.lock().drain(..) {
                task.abort();
            }
        } else {
            self.membership.discoverer().stop().await;
        }
        self.transit.transporter.disconnect().await;
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        self.transit.reject_all();
    }
}
