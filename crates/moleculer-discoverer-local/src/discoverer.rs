//! The Local discoverer.

use std::sync::Arc;
use std::time::Duration;

use moleculer_core::discoverer::{Discoverer, DiscoveryEvent, DiscoveryLink, DiscoveryTiming};
use moleculer_core::protocol::{DisconnectPacket, DiscoverPacket, Packet};
use moleculer_core::transporter::TransporterError;
use moleculer_core::NodeId;
use parking_lot::Mutex;
use rand::Rng;
use tokio::task::JoinHandle;

/// Discovery over the transporter (Moleculer's `Local`).
#[derive(Default)]
pub struct LocalDiscoverer {
    state: Mutex<Option<Running>>,
}

struct Running {
    link: Arc<dyn DiscoveryLink>,
    heartbeats: JoinHandle<()>,
}

impl LocalDiscoverer {
    /// A discoverer, idle until the broker starts it.
    pub fn new() -> Self {
        Self::default()
    }

    fn link(&self) -> Option<Arc<dyn DiscoveryLink>> {
        self.state.lock().as_ref().map(|r| r.link.clone())
    }

    async fn send(link: &Arc<dyn DiscoveryLink>, packet: Packet, target: Option<NodeId>) {
        let kind = packet.kind();
        if let Err(err) = link.send(packet, target).await {
            tracing::warn!("cannot send {kind}: {err}");
        }
    }
}

/// The heartbeat period: the interval with a jitter of up to ±500 ms (at most ±25 % of the
/// interval), drawn once so that nodes started together do not beat in lockstep.
fn heartbeat_period(interval: Duration) -> Duration {
    let max_jitter = (interval.as_secs_f64() / 4.0).min(0.5);
    let jitter = rand::rng().random_range(-max_jitter..=max_jitter);
    Duration::from_secs_f64((interval.as_secs_f64() + jitter).max(0.001))
}

impl Discoverer for LocalDiscoverer {
    fn name(&self) -> &'static str {
        "Local"
    }

    async fn start(
        &self,
        link: Arc<dyn DiscoveryLink>,
        timing: DiscoveryTiming,
    ) -> Result<(), TransporterError> {
        let beat_link = link.clone();
        let period = heartbeat_period(timing.heartbeat_interval);
        let heartbeats = moleculer_core::task::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let packet = Packet::Heartbeat(beat_link.heartbeat_packet());
                if let Err(TransporterError::NotConnected) = beat_link.send(packet, None).await {
                    // The broker is gone (or disconnected): nothing left to beat for.
                    break;
                }
            }
        });
        if let Some(old) = self.state.lock().replace(Running { link, heartbeats }) {
            old.heartbeats.abort();
        }
        Ok(())
    }

    async fn packet_received(&self, packet: Packet) {
        let Some(link) = self.link() else { return };
        match packet {
            Packet::Discover(p) => self.send_local_info(Some(p.sender)).await,
            Packet::Info(p) => link.report(DiscoveryEvent::Info {
                sender: p.sender,
                info: p.info,
            }),
            Packet::Heartbeat(p) => link.report(DiscoveryEvent::Heartbeat {
                sender: p.sender,
                cpu: p.cpu,
                cpu_seq: None,
                seq: p.seq,
                instance_id: p.instance_id,
            }),
            Packet::Disconnect(p) => link.report(DiscoveryEvent::Disconnected {
                node: p.sender,
                unexpected: false,
            }),
            other => tracing::debug!("the Local discoverer ignores {} packets", other.kind()),
        }
    }

    async fn send_local_info(&self, target: Option<NodeId>) {
        let Some(link) = self.link() else { return };
        let packet = Packet::Info(link.info_packet());
        Self::send(&link, packet, target).await;
    }

    async fn discover_node(&self, node: NodeId) {
        let Some(link) = self.link() else { return };
        let packet = Packet::Discover(DiscoverPacket {
            instance_id: Some(link.instance_id().to_owned()),
            ver: link.protocol_version().as_str().to_owned(),
            sender: link.node_id().clone(),
        });
        Self::send(&link, packet, Some(node)).await;
    }

    async fn discover_all(&self) {
        let Some(link) = self.link() else { return };
        let packet = Packet::Discover(DiscoverPacket {
            instance_id: Some(link.instance_id().to_owned()),
            ver: link.protocol_version().as_str().to_owned(),
            sender: link.node_id().clone(),
        });
        Self::send(&link, packet, None).await;
    }

    async fn stop(&self) {
        let Some(running) = self.state.lock().take() else {
            return;
        };
        running.heartbeats.abort();
        let link = running.link;
        let packet = Packet::Disconnect(DisconnectPacket {
            ver: link.protocol_version().as_str().to_owned(),
            sender: link.node_id().clone(),
        });
        Self::send(&link, packet, None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds() {
        for _ in 0..100 {
            let p = heartbeat_period(Duration::from_secs(10)).as_secs_f64();
            assert!((9.5..=10.5).contains(&p), "{p}");
            let p = heartbeat_period(Duration::from_secs(1)).as_secs_f64();
            assert!((0.75..=1.25).contains(&p), "{p}");
        }
    }
}
