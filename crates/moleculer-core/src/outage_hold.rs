//! Keeping nodes alive through an outage of the discovery store.
//!
//! With a store-based discoverer (Redis, etcd3), nodes prove they live by writing to the
//! store. While the store is unreachable, this node's discoverer falls back to heartbeats over
//! the transporter, but Moleculer JS nodes never send those: heard of through the store alone,
//! they can prove neither life nor death until it is back. They are held alive meanwhile;
//! nodes that do beat over the transporter are judged by those beats as usual, so one that
//! crashes during the outage still goes.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::discoverer::{DiscoveryEvent, DiscoveryLink};
use crate::node_id::NodeId;
use crate::protocol::HeartbeatPacket;

/// When each node last sent a heartbeat over the transporter.
#[derive(Debug, Default)]
pub struct OutageHold {
    transporter_beats: Mutex<HashMap<NodeId, Instant>>,
}

impl OutageHold {
    /// A heartbeat came over the transporter: it counts, and that node is judged by such
    /// heartbeats from now on.
    pub fn transporter_heartbeat(&self, link: &dyn DiscoveryLink, beat: HeartbeatPacket) {
        self.transporter_beats
            .lock()
            .insert(beat.sender.clone(), Instant::now());
        link.report(DiscoveryEvent::Heartbeat {
            sender: beat.sender,
            cpu: beat.cpu,
            cpu_seq: None,
            seq: beat.seq,
            instance_id: beat.instance_id,
        });
    }

    /// Called every heartbeat interval while the store is unreachable: every online remote
    /// node the store told us of (`known`) that has sent no heartbeat over the transporter for
    /// `timeout` is reported alive. Returns how many were held.
    pub fn hold(
        &self,
        link: &dyn DiscoveryLink,
        timeout: Duration,
        known: impl Fn(&NodeId) -> bool,
    ) -> usize {
        let held: Vec<NodeId> = {
            let beats = self.transporter_beats.lock();
            link.nodes()
                .into_iter()
                .filter(|n| !n.local && n.available && known(&n.id))
                .filter(|n| beats.get(&n.id).is_none_or(|at| at.elapsed() >= timeout))
                .map(|n| n.id)
                .collect()
        };
        for node in &held {
            link.report(DiscoveryEvent::Heartbeat {
                sender: node.clone(),
                cpu: None,
                cpu_seq: None,
                seq: None,
                instance_id: None,
            });
        }
        held.len()
    }
}
