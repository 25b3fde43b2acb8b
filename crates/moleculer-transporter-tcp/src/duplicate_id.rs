//! Duplicate node ids over TCP gossip. A new instance of an online node, speaking for itself
//! from another address while our own connection to the node's known address is open, is a
//! second process, not a restart: it is not taken, and it is told, on a connection of its own,
//! which live node holds its id. A Rust newcomer that hears this refuses to start.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use moleculer_core::discoverer::DiscoveryEvent;
use moleculer_core::protocol::{GossipResponsePacket, Packet};
use moleculer_core::service_info::NodeInfo;
use moleculer_core::NodeId;
use serde_json::Value;

use crate::discoverer::Gossip;

impl Gossip {
    /// Where a node listens according to its INFO (first `ipList` entry, then its host name).
    pub(crate) fn listens(info: &NodeInfo) -> Option<SocketAddr> {
        let port = info.port.filter(|p| *p > 0)?;
        let host = info.ip_list.first().unwrap_or(&info.hostname);
        Some(SocketAddr::new(host.parse().ok()?, port))
    }

    /// Whether `info`, a new instance of the online node `id` speaking for itself, comes from a
    /// second process rather than a restart: our connection to the node's known address is
    /// still open (a process that ended would have closed it), and the newcomer listens
    /// elsewhere. The live address, if so.
    pub(crate) fn duplicate_of(&self, id: &NodeId, info: &NodeInfo) -> Option<SocketAddr> {
        let live = self.state.live_address(id)?;
        let claimed = Self::listens(info)?;
        (claimed != live).then_some(live)
    }

    /// Keeps the live node and tells the newcomer, on a connection of its own (it cannot be
    /// reached by node id: that id routes to the live node), which node holds its id.
    pub(crate) async fn refuse_duplicate(&self, id: &NodeId, live: SocketAddr, info: &NodeInfo) {
        let Some(claimed) = Self::listens(info) else {
            return;
        };
        tracing::warn!(
            node = %id,
            "a second process (instance {}, at {claimed}) claims node id '{id}', which the live node at {live} holds: it is refused",
            info.instance_id
        );
        let nodes = self.link.nodes();
        let Some(held) = nodes.iter().find(|n| n.id == *id && n.available) else {
            return;
        };
        let mut online = BTreeMap::new();
        online.insert(id.to_string(), self.info_row(held, 0));
        let packet = Packet::GossipResponse(GossipResponsePacket {
            online: Some(online),
            offline: None,
            ver: self.ver(),
            sender: self.link.node_id().clone(),
        });
        self.state.send_once(claimed, &packet).await;
    }

    /// A row about ourselves from a peer: normally nothing to learn. But an INFO of another
    /// instance listening elsewhere means that peer holds our id for a live process that is not
    /// us (it says so only after checking, see [`Gossip::refuse_duplicate`]).
    pub(crate) fn own_row(&self, sender: &NodeId, row: &[Value]) {
        let Some(Ok(info)) = row
            .first()
            .filter(|v| v.is_object())
            .map(|v| serde_json::from_value::<NodeInfo>(v.clone()))
        else {
            return;
        };
        if info.instance_id == self.link.instance_id() {
            return;
        }
        let ours = SocketAddr::new(
            self.state
                .opts
                .host
                .parse()
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
            self.state.port(),
        );
        let Some(theirs) = Self::listens(&info).filter(|a| *a != ours) else {
            return;
        };
        tracing::debug!(peer = %sender, "a peer holds our node id for instance {} at {theirs}", info.instance_id);
        self.link.report(DiscoveryEvent::NodeIdTaken {
            instance_id: info.instance_id,
            address: theirs.to_string(),
        });
    }
}
