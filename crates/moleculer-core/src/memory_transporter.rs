//! An in-memory transporter: many brokers in one process, for unit and scenario tests of our
//! own logic. It can partition, silence, drop and delay traffic, and counts packets.
//!
//! Like a pub/sub server it delivers a broadcast to every subscriber of the namespace,
//! including the sender, so echo handling is exercised too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::node_id::NodeId;
use crate::protocol::PacketType;
use crate::transporter::{
    Incoming, IncomingSink, Outgoing, Transporter, TransporterError, TransporterSetup,
};

/// The shared medium the [`MemoryTransporter`]s of one test talk over.
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<BusInner>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus")
            .field("subscribers", &self.inner.subscribers.lock().len())
            .finish_non_exhaustive()
    }
}

/// One sent packet's type and bytes.
type Captured = (PacketType, Vec<u8>);

#[derive(Default)]
struct BusInner {
    subscribers: Mutex<Vec<Subscriber>>,
    faults: Mutex<Faults>,
    sent: Mutex<BTreeMap<PacketType, u64>>,
    /// Copies of sent packets, kept only once a test asks for them.
    captured: Mutex<Option<Vec<Captured>>>,
    next_id: AtomicU64,
}

struct Subscriber {
    id: u64,
    namespace: String,
    node_id: NodeId,
    sink: IncomingSink,
}

#[derive(Default)]
struct Faults {
    /// Nodes in different partitions cannot talk; unlisted nodes are in partition 0.
    partition_of: HashMap<NodeId, usize>,
    /// Nodes whose outgoing packets vanish (a frozen process).
    silenced: HashSet<NodeId>,
    drop_rate: f64,
    rng: Option<SmallRng>,
    delay: Duration,
}

impl Faults {
    fn blocks(&mut self, from: &NodeId, to: &NodeId) -> bool {
        if self.silenced.contains(from) {
            return true;
        }
        let part = |n: &NodeId| self.partition_of.get(n).copied().unwrap_or(0);
        if part(from) != part(to) {
            return true;
        }
        if self.drop_rate > 0.0 {
            let rng = self.rng.get_or_insert_with(|| SmallRng::seed_from_u64(0));
            return rng.random_bool(self.drop_rate.min(1.0));
        }
        false
    }
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// A transporter on this bus (one per broker).
    pub fn transporter(&self) -> MemoryTransporter {
        MemoryTransporter {
            bus: self.clone(),
            me: Mutex::new(None),
        }
    }

    /// Splits the nodes into partitions that cannot reach each other. Nodes not listed join the
    /// first partition.
    pub fn partition(&self, groups: &[&[&str]]) {
        let mut faults = self.inner.faults.lock();
        faults.partition_of.clear();
        for (i, group) in groups.iter().enumerate() {
            for node in *group {
                faults.partition_of.insert(NodeId::new(node), i);
            }
        }
    }

    /// Removes every partition.
    pub fn heal(&self) {
        self.inner.faults.lock().partition_of.clear();
    }

    /// Drops everything `node` sends from now on (it looks frozen to the others).
    pub fn silence(&self, node: &str) {
        self.inner.faults.lock().silenced.insert(NodeId::new(node));
    }

    /// Lets `node` be heard again.
    pub fn unsilence(&self, node: &str) {
        self.inner.faults.lock().silenced.remove(node);
    }

    /// Drops each delivery with probability `rate`, from a seeded generator.
    pub fn drop_rate(&self, rate: f64, seed: u64) {
        let mut faults = self.inner.faults.lock();
        faults.drop_rate = rate;
        faults.rng = Some(SmallRng::seed_from_u64(seed));
    }

    /// Delays every delivery by `delay` (on tokio's clock, so paused-time tests control it).
    pub fn delay(&self, delay: Duration) {
        self.inner.faults.lock().delay = delay;
    }

    /// How many packets of `kind` were sent on the bus.
    pub fn sent(&self, kind: PacketType) -> u64 {
        self.inner.sent.lock().get(&kind).copied().unwrap_or(0)
    }

    /// Packets sent, by type.
    pub fn sent_by_type(&self) -> BTreeMap<PacketType, u64> {
        self.inner.sent.lock().clone()
    }

    /// Keeps a copy of every packet sent from now on, for [`payloads`](Self::payloads). Off by
    /// default, so that long runs (benchmarks) do not grow.
    pub fn capture_payloads(&self) {
        self.inner.captured.lock().get_or_insert_with(Vec::new);
    }

    /// The encoded packets of `kind` sent since [`capture_payloads`](Self::capture_payloads).
    pub fn payloads(&self, kind: PacketType) -> Vec<Vec<u8>> {
        self.inner
            .captured
            .lock()
            .iter()
            .flatten()
            .filter(|(k, _)| *k == kind)
            .map(|(_, bytes)| bytes.clone())
            .collect()
    }

    /// Resets the counters.
    pub fn reset_counts(&self) {
        self.inner.sent.lock().clear();
    }

    fn publish(&self, from: &NodeId, namespace: &str, packet: &Outgoing) {
        *self.inner.sent.lock().entry(packet.kind).or_default() += 1;
        if let Some(captured) = self.inner.captured.lock().as_mut() {
            captured.push((packet.kind, packet.payload.clone()));
        }
        let recipients: Vec<(NodeId, IncomingSink)> = self
            .inner
            .subscribers
            .lock()
            .iter()
            .filter(|s| {
                s.namespace == namespace && packet.target.as_ref().is_none_or(|t| *t == s.node_id)
            })
            .map(|s| (s.node_id.clone(), s.sink.clone()))
            .collect();
        let delay = self.inner.faults.lock().delay;
        for (to, sink) in recipients {
            if self.inner.faults.lock().blocks(from, &to) {
                continue;
            }
            let incoming = Incoming {
                kind: packet.kind,
                payload: packet.payload.clone(),
            };
            if delay.is_zero() {
                let _ = sink.send(incoming);
            } else {
                crate::task::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = sink.send(incoming);
                });
            }
        }
    }
}

/// One broker's connection to a [`MemoryBus`].
pub struct MemoryTransporter {
    bus: MemoryBus,
    me: Mutex<Option<(u64, NodeId, String)>>,
}

impl Transporter for MemoryTransporter {
    fn name(&self) -> &'static str {
        "Memory"
    }

    async fn connect(&self, setup: TransporterSetup) -> Result<(), TransporterError> {
        let id = self.bus.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.bus.inner.subscribers.lock().push(Subscriber {
            id,
            namespace: setup.namespace.clone(),
            node_id: setup.node_id.clone(),
            sink: setup.incoming,
        });
        *self.me.lock() = Some((id, setup.node_id, setup.namespace));
        Ok(())
    }

    async fn send(&self, packet: Outgoing) -> Result<(), TransporterError> {
        let (from, namespace) = match &*self.me.lock() {
            Some((_, node, ns)) => (node.clone(), ns.clone()),
            None => return Err(TransporterError::NotConnected),
        };
        self.bus.publish(&from, &namespace, &packet);
        Ok(())
    }

    async fn disconnect(&self) {
        if let Some((id, _, _)) = self.me.lock().take() {
            self.bus.inner.subscribers.lock().retain(|s| s.id != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    async fn node(
        bus: &MemoryBus,
        id: &str,
    ) -> (MemoryTransporter, mpsc::UnboundedReceiver<Incoming>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let t = bus.transporter();
        t.connect(TransporterSetup::new(id.into(), "", tx))
            .await
            .unwrap();
        (t, rx)
    }

    fn packet(target: Option<&str>) -> Outgoing {
        Outgoing {
            kind: PacketType::Heartbeat,
            target: target.map(NodeId::new),
            payload: b"x".to_vec(),
        }
    }

    #[tokio::test]
    async fn broadcast_reaches_everyone_including_the_sender_and_targets_reach_one() {
        let bus = MemoryBus::new();
        let (a, mut ra) = node(&bus, "a").await;
        let (_b, mut rb) = node(&bus, "b").await;
        a.send(packet(None)).await.unwrap();
        assert!(ra.try_recv().is_ok() && rb.try_recv().is_ok());
        a.send(packet(Some("b"))).await.unwrap();
        assert!(ra.try_recv().is_err());
        assert!(rb.try_recv().is_ok());
        assert_eq!(bus.sent(PacketType::Heartbeat), 2);
    }

    #[tokio::test]
    async fn payloads_are_kept_only_once_asked_for() {
        let bus = MemoryBus::new();
        let (a, _ra) = node(&bus, "a").await;
        a.send(packet(None)).await.unwrap();
        assert!(bus.payloads(PacketType::Heartbeat).is_empty());
        bus.capture_payloads();
        a.send(packet(Some("a"))).await.unwrap();
        assert_eq!(bus.payloads(PacketType::Heartbeat), vec![b"x".to_vec()]);
        assert!(bus.payloads(PacketType::Info).is_empty());
    }

    #[tokio::test]
    async fn partitions_and_silence_block_traffic_until_healed() {
        let bus = MemoryBus::new();
        let (a, _ra) = node(&bus, "a").await;
        let (_b, mut rb) = node(&bus, "b").await;
        bus.partition(&[&["a"], &["b"]]);
        a.send(packet(None)).await.unwrap();
        assert!(rb.try_recv().is_err());
        bus.heal();
        bus.silence("a");
        a.send(packet(None)).await.unwrap();
        assert!(rb.try_recv().is_err());
        bus.unsilence("a");
        a.send(packet(None)).await.unwrap();
        assert!(rb.try_recv().is_ok());
    }

    #[tokio::test]
    async fn nothing_is_delivered_after_disconnect() {
        let bus = MemoryBus::new();
        let (a, _ra) = node(&bus, "a").await;
        let (b, mut rb) = node(&bus, "b").await;
        b.disconnect().await;
        a.send(packet(None)).await.unwrap();
        assert!(rb.try_recv().is_err());
        assert_eq!(
            b.send(packet(None)).await,
            Err(TransporterError::NotConnected)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delay_holds_packets_back() {
        let bus = MemoryBus::new();
        let (a, _ra) = node(&bus, "a").await;
        let (_b, mut rb) = node(&bus, "b").await;
        bus.delay(Duration::from_millis(50));
        a.send(packet(Some("b"))).await.unwrap();
        tokio::task::yield_now().await;
        assert!(rb.try_recv().is_err());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(rb.try_recv().is_ok());
    }

    #[tokio::test]
    async fn drop_rate_is_seeded() {
        let bus = MemoryBus::new();
        let (a, _ra) = node(&bus, "a").await;
        let (_b, mut rb) = node(&bus, "b").await;
        bus.drop_rate(0.5, 7);
        for _ in 0..200 {
            a.send(packet(Some("b"))).await.unwrap();
        }
        let mut got = 0;
        while rb.try_recv().is_ok() {
            got += 1;
        }
        assert!(
            (60..140).contains(&got),
            "{got} of 200 delivered at a 50% drop rate"
        );
    }
}
