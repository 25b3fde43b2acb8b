//! The TCP transporter and its gossip discoverer pass the conformance suites, on real loopback
//! sockets and real time.

use std::time::Duration;

use moleculer_broker::ServiceBroker;
use moleculer_test::conformance::{discoverer_suite, transporter_suite, Capabilities, SuiteTiming};
use moleculer_transporter_tcp::{StaticPeer, TcpOptions, TcpTransporter};

/// Free loopback ports (bound, read, released).
fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect()
}

fn options(peers: &[(&str, u16)]) -> TcpOptions {
    TcpOptions {
        urls: peers
            .iter()
            .map(|(id, port)| StaticPeer {
                host: "127.0.0.1".into(),
                port: *port,
                node_id: (*id).into(),
            })
            .collect(),
        udp_discovery: false,
        gossip_period: 1.0,
        ..TcpOptions::default()
    }
}

#[tokio::test]
async fn tcp_transporter_passes_the_transporter_suite() {
    let ports = free_ports(4);
    let peers = [
        ("a", ports[0]),
        ("b", ports[1]),
        ("c", ports[2]),
        ("d", ports[3]),
    ];
    transporter_suite(
        |_| TcpTransporter::new(options(&peers)),
        Duration::from_millis(100),
        Capabilities::TCP,
    )
    .await;
}

async fn discovery(serializer: &str) {
    let ports = free_ports(3);
    let peers = [
        ("node-0", ports[0]),
        ("node-1", ports[1]),
        ("node-2", ports[2]),
    ];
    let timing = SuiteTiming {
        heartbeat_interval: 1.0,
        heartbeat_timeout: 3.0,
    };
    discoverer_suite(
        |_| {
            let tcp = TcpTransporter::new(options(&peers));
            ServiceBroker::builder()
                .transporter(tcp.clone())
                .discoverer(tcp.discoverer())
                .serializer(serializer)
        },
        timing,
    )
    .await;
}

#[tokio::test]
async fn tcp_gossip_passes_the_discoverer_suite_with_json() {
    discovery("JSON").await;
}

#[tokio::test]
async fn tcp_gossip_passes_the_discoverer_suite_with_msgpack() {
    discovery("MsgPack").await;
}
