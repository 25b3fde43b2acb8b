//! The in-process cluster harness.

use std::time::Duration;

use moleculer_broker::{ServiceBroker, ServiceBrokerBuilder};
use moleculer_core::memory_transporter::MemoryBus;
use moleculer_core::protocol::PacketType;

/// N brokers named `node-0` .. `node-(N-1)` on one [`MemoryBus`].
pub struct Cluster {
    /// The bus, for fault injection and packet counts.
    pub bus: MemoryBus,
    /// The brokers, by index.
    pub brokers: Vec<ServiceBroker>,
}

impl Cluster {
    /// The node id of broker `i`.
    pub fn node_id(i: usize) -> String {
        format!("node-{i}")
    }

    /// Builds `n` brokers (each builder already has its node id and the bus transporter;
    /// `configure` adds options), lets `setup` add services, and starts them all.
    pub async fn start(
        n: usize,
        configure: impl Fn(usize, ServiceBrokerBuilder) -> ServiceBrokerBuilder,
        setup: impl Fn(usize, &ServiceBroker),
    ) -> Cluster {
        let bus = MemoryBus::new();
        let mut brokers = Vec::with_capacity(n);
        for i in 0..n {
            brokers.push(Self::build(&bus, i, &configure));
        }
        for (i, broker) in brokers.iter().enumerate() {
            setup(i, broker);
        }
        for broker in &brokers {
            broker.start().await.expect("broker starts");
        }
        Cluster { bus, brokers }
    }

    /// A broker for index `i` on `bus`, not started.
    pub fn build(
        bus: &MemoryBus,
        i: usize,
        configure: &impl Fn(usize, ServiceBrokerBuilder) -> ServiceBrokerBuilder,
    ) -> ServiceBroker {
        let builder = ServiceBroker::builder()
            .node_id(Self::node_id(i))
            .transporter(bus.transporter());
        configure(i, builder).build().expect("broker builds")
    }

    /// Broker `i`.
    pub fn node(&self, i: usize) -> &ServiceBroker {
        &self.brokers[i]
    }

    /// Whether broker `i` sees broker `j` as available.
    pub fn sees(&self, i: usize, j: usize) -> bool {
        let id = Self::node_id(j);
        self.brokers[i].with_registry(|r| r.nodes().get(&id).is_some_and(|n| n.available))
    }

    /// Waits (on tokio's clock) until every broker sees every other one, or `timeout` passes.
    pub async fn converged(&self, timeout: Duration) -> bool {
        let n = self.brokers.len();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if (0..n).all(|i| (0..n).all(|j| self.sees(i, j))) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `check` holds, polling every 10 ms, or `timeout` passes.
    pub async fn wait_until(&self, timeout: Duration, check: impl Fn(&Cluster) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if check(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Splits the cluster: brokers in different groups cannot reach each other.
    pub fn partition(&self, groups: &[&[usize]]) {
        let names: Vec<Vec<String>> = groups
            .iter()
            .map(|g| g.iter().map(|&i| Self::node_id(i)).collect())
            .collect();
        let refs: Vec<Vec<&str>> = names
            .iter()
            .map(|g| g.iter().map(String::as_str).collect())
            .collect();
        let slices: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
        self.bus.partition(&slices);
    }

    /// Heals every partition.
    pub fn heal(&self) {
        self.bus.heal();
    }

    /// Broker `i` goes silent (as a frozen process would).
    pub fn silence(&self, i: usize) {
        self.bus.silence(&Self::node_id(i));
    }

    /// Packets of `kind` sent so far.
    pub fn sent(&self, kind: PacketType) -> u64 {
        self.bus.sent(kind)
    }

    /// Stops every broker still running.
    pub async fn stop_all(&self) {
        for broker in &self.brokers {
            broker.stop().await;
        }
    }
}
