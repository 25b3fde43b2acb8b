//! The broker as its discoverer sees it: this node's identity and INFO, the registry's nodes,
//! a way to send packets, and a way to report what was learned (to membership).

use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use moleculer_core::discoverer::{DiscoveryEvent, DiscoveryLink, NodeDigest};
use moleculer_core::protocol::{Packet, ProtocolVersion};
use moleculer_core::service_info::NodeInfo;
use moleculer_core::transporter::TransporterError;
use moleculer_core::NodeId;

use crate::membership::Membership;
use crate::shared_registry::SharedRegistry;
use crate::transit::outbound::Transit;

/// What a discoverer holds of the broker. Weak towards membership: a broker dropped without
/// `stop` must not be kept alive (and beating) by its discoverer's timers.
pub(crate) struct Link {
    pub node_id: NodeId,
    pub instance_id: String,
    pub namespace: String,
    pub registry: Arc<SharedRegistry>,
    pub transit: Arc<Transit>,
    pub membership: Weak<Membership>,
}

impl DiscoveryLink for Link {
    fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    fn instance_id(&self) -> &str {
        &self.instance_id
    }

    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn alive(&self) -> bool {
        self.membership.strong_count() > 0
    }

    fn transporter_ready(&self) -> bool {
        self.transit.transporter.is_ready()
    }

    fn protocol_version(&self) -> ProtocolVersion {
        self.transit.version
    }

    fn local_info(&self) -> NodeInfo {
        self.registry.read().local_node_info()
    }

    fn cpu_usage(&self) -> Option<f64> {
        self.registry.read().nodes().local().cpu
    }

    fn nodes(&self) -> Vec<NodeDigest> {
        let registry = self.registry.read();
        let local_info = registry.local_node_info();
        registry
            .nodes()
            .list()
            .into_iter()
            .map(|n| NodeDigest {
                id: n.id.clone(),
                local: n.local,
                available: n.available,
                seq: n.seq,
                instance_id: n.instance_id.clone(),
                cpu_seq: n.cpu_seq,
                cpu: n.cpu,
                info: n.available.then(|| {
                    if n.local {
                        local_info.clone()
                    } else {
                        n.info(n.services.clone())
                    }
                }),
                hostname: n.hostname.clone(),
                ip_list: n.ip_list.clone(),
                port: n.port,
            })
            .collect()
    }

    fn send(
        &self,
        packet: Packet,
        target: Option<NodeId>,
    ) -> BoxFuture<'static, Result<(), TransporterError>> {
        // A broker dropped without `stop` is gone for its discoverer too.
        let transit = self.alive().then(|| self.transit.clone());
        Box::pin(async move {
            match transit {
                Some(transit) => transit.send(packet, target).await,
                None => Err(TransporterError::NotConnected),
            }
        })
    }

    fn report(&self, event: DiscoveryEvent) {
        if let Some(membership) = self.membership.upgrade() {
            membership.apply(event);
        }
    }
}
