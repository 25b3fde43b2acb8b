//! All known nodes, and the per-host ping latencies the Latency strategy reads.

use std::collections::{HashMap, VecDeque};

use moleculer_core::NodeId;

use crate::node::Node;

/// Known nodes by id, including the local one.
#[derive(Debug)]
pub struct NodeCatalog {
    nodes: HashMap<NodeId, Node>,
    local_id: NodeId,
    host_latency: HashMap<String, HostLatency>,
    collect_count: usize,
}

#[derive(Debug, Default)]
struct HostLatency {
    samples: VecDeque<f64>,
    average: f64,
}

impl NodeCatalog {
    /// A catalog holding only the local node.
    pub fn new(local: Node, collect_count: usize) -> Self {
        let local_id = local.id.clone();
        let mut nodes = HashMap::new();
        nodes.insert(local_id.clone(), local);
        Self {
            nodes,
            local_id,
            host_latency: HashMap::new(),
            collect_count: collect_count.max(1),
        }
    }

    /// The local node.
    pub fn local(&self) -> &Node {
        &self.nodes[&self.local_id]
    }

    /// The local node, mutably.
    pub fn local_mut(&mut self) -> &mut Node {
        self.nodes
            .get_mut(&self.local_id)
            .expect("the local node is never removed")
    }

    /// The local node id.
    pub fn local_id(&self) -> &NodeId {
        &self.local_id
    }

    /// A node by id.
    pub fn get(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// A node by id, mutably.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Node> {
        self.nodes.get_mut(id)
    }

    /// Adds or replaces a node.
    pub fn insert(&mut self, node: Node) {
        self.nodes.insert(node.id.clone(), node);
    }

    /// Forgets a remote node entirely (offline clean-up). The local node cannot be removed.
    pub fn remove(&mut self, id: &str) -> Option<Node> {
        if *self.local_id == *id {
            return None;
        }
        self.nodes.remove(id)
    }

    /// Every node, in id order.
    pub fn list(&self) -> Vec<&Node> {
        let mut nodes: Vec<&Node> = self.nodes.values().collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes
    }

    /// Number of known nodes.
    pub fn count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of available nodes.
    pub fn online_count(&self) -> usize {
        self.nodes.values().filter(|n| n.available).count()
    }

    /// Records a ping round trip to `node_id`; the average over the last `collectCount` pings is
    /// kept per host, as Moleculer's Latency strategy does.
    pub fn record_latency(&mut self, node_id: &str, elapsed_ms: f64) {
        let Some(host) = self.nodes.get(node_id).map(|n| n.hostname.clone()) else {
            return;
        };
        let entry = self.host_latency.entry(host).or_default();
        entry.samples.push_back(elapsed_ms);
        while entry.samples.len() > self.collect_count {
            entry.samples.pop_front();
        }
        entry.average = entry.samples.iter().sum::<f64>() / entry.samples.len() as f64;
    }

    /// Average latency to the host of `node_id`, if measured.
    pub fn latency_ms(&self, node_id: &str) -> Option<f64> {
        let host = &self.nodes.get(node_id)?.hostname;
        self.host_latency.get(host).map(|h| h.average)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_averaged_per_host_over_collect_count() {
        let mut catalog = NodeCatalog::new(Node::new("local".into(), true), 3);
        for (id, host) in [("a1", "host-a"), ("a2", "host-a"), ("b1", "host-b")] {
            let mut node = Node::new(id.into(), false);
            node.hostname = host.into();
            catalog.insert(node);
        }
        for ms in [100.0, 10.0, 20.0, 30.0] {
            catalog.record_latency("a1", ms);
        }
        // Only the last three count: (10 + 20 + 30) / 3.
        assert_eq!(catalog.latency_ms("a1"), Some(20.0));
        assert_eq!(catalog.latency_ms("a2"), Some(20.0), "latency is per host");
        assert_eq!(catalog.latency_ms("b1"), None);
    }

    #[test]
    fn the_local_node_cannot_be_removed() {
        let mut catalog = NodeCatalog::new(Node::new("local".into(), true), 3);
        assert!(catalog.remove("local").is_none());
        assert_eq!(catalog.count(), 1);
    }
}
