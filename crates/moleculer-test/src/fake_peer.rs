//! A scripted peer on the in-memory bus: it speaks the protocol itself (INFO, HEARTBEAT with a
//! CPU figure of the test's choosing, PONG after a chosen delay, RESPONSE naming itself), so a
//! test can give brokers peers with distinct hosts, loads and latencies inside one process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moleculer_core::memory_transporter::MemoryBus;
use moleculer_core::protocol::{HeartbeatPacket, InfoPacket, Packet, PongPacket, ResponsePacket};
use moleculer_core::serializer::{Json, Serializer};
use moleculer_core::service_info::{ActionInfo, ClientInfo, NodeInfo, ServiceInfo};
use moleculer_core::transporter::{Outgoing, Transporter, TransporterSetup};
use moleculer_core::{Meta, NodeId};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How a fake peer behaves.
#[derive(Debug, Clone)]
pub struct FakePeerSpec {
    /// Its node id.
    pub node_id: String,
    /// The host name it reports (latency is measured per host).
    pub hostname: String,
    /// The CPU usage its heartbeats report.
    pub cpu: f64,
    /// How long it waits before answering a PING.
    pub ping_delay: Duration,
    /// The service it offers; every action answers the peer's node id.
    pub service: String,
    /// Its actions (short names).
    pub actions: Vec<String>,
    /// Seconds between its heartbeats.
    pub heartbeat_interval: Duration,
}

/// A running fake peer; dropping it stops it (silently, as a crash would).
pub struct FakePeer {
    task: JoinHandle<()>,
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

impl FakePeer {
    /// Joins `bus` and starts answering.
    pub async fn start(bus: &MemoryBus, spec: FakePeerSpec) -> FakePeer {
        let transporter = Arc::new(bus.transporter());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let me = NodeId::new(&spec.node_id);
        transporter
            .connect(TransporterSetup::new(me.clone(), "", tx))
            .await
            .expect("the bus accepts the fake peer");
        let info = info_packet(&spec);
        let task = tokio::spawn(async move {
            let send = |packet: Packet, target: Option<NodeId>| {
                let transporter = transporter.clone();
                async move {
                    let payload = Json.encode(&packet).expect("a fake packet encodes");
                    let _ = transporter
                        .send(Outgoing {
                            kind: packet.kind(),
                            target,
                            payload,
                        })
                        .await;
                }
            };
            send(Packet::Info(info.clone()), None).await;
            let mut beats = tokio::time::interval(spec.heartbeat_interval);
            loop {
                tokio::select! {
                    _ = beats.tick() => {
                        let beat = Packet::Heartbeat(HeartbeatPacket { cpu: Some(spec.cpu), seq: None, instance_id: None, ver: "5".into(), sender: me.clone() });
                        send(beat, None).await;
                    }
                    incoming = rx.recv() => {
                        let Some(incoming) = incoming else { break };
                        let Ok(packet) = Json.decode(incoming.kind, &incoming.payload) else { continue };
                        match packet {
                            Packet::Discover(d) if d.sender != me => send(Packet::Info(info.clone()), Some(d.sender)).await,
                            Packet::Request(req) => {
                                let res = Packet::Response(ResponsePacket {
                                    id: req.id, meta: Meta::new(), headers: Some(Meta::new()), success: true,
                                    data: json!(me.as_str()), error: None, stream: None, seq: None, ver: "5".into(), sender: me.clone(),
                                });
                                send(res, Some(req.sender)).await;
                            }
                            Packet::Ping(ping) => {
                                let delay = spec.ping_delay;
                                let pong = Packet::Pong(PongPacket { time: ping.time, id: ping.id, arrived: epoch_ms(), ver: "5".into(), sender: me.clone() });
                                let send = send(pong, Some(ping.sender));
                                tokio::spawn(async move {
                                    tokio::time::sleep(delay).await;
                                    send.await;
                                });
                            }
                            _ => {}
                        }
                    }
                }
            }
        });
        FakePeer { task }
    }
}

fn info_packet(spec: &FakePeerSpec) -> InfoPacket {
    let mut actions = BTreeMap::new();
    for short in &spec.actions {
        let name = format!("{}.{short}", spec.service);
        actions.insert(
            name.clone(),
            ActionInfo {
                name,
                raw_name: Some(short.clone()),
                ..ActionInfo::default()
            },
        );
    }
    InfoPacket {
        info: NodeInfo {
            services: vec![ServiceInfo {
                name: spec.service.clone(),
                full_name: spec.service.clone(),
                actions,
                ..ServiceInfo::default()
            }],
            hostname: spec.hostname.clone(),
            instance_id: format!("{}-instance", spec.node_id),
            client: ClientInfo::rust(),
            seq: 1,
            ..NodeInfo::default()
        },
        ver: "5".into(),
        sender: NodeId::new(&spec.node_id),
    }
}
