//! The etcd3 discoverer passes the discoverer suite against a real etcd.

use moleculer_broker::ServiceBroker;
use moleculer_core::memory_transporter::MemoryBus;
use moleculer_discoverer_etcd3::{Etcd3Discoverer, Etcd3Options};
use moleculer_test::conformance::{discoverer_suite, SuiteTiming};
use moleculer_test::servers::EtcdServer;

#[tokio::test]
async fn etcd3_discoverer_passes_the_discoverer_suite() {
    let etcd = EtcdServer::start();
    let bus = MemoryBus::new();
    let timing = SuiteTiming {
        heartbeat_interval: 1.0,
        heartbeat_timeout: 3.0,
    };
    discoverer_suite(
        |_| {
            ServiceBroker::builder()
                .transporter(bus.transporter())
                .discoverer(Etcd3Discoverer::new(
                    etcd.url().parse::<Etcd3Options>().unwrap(),
                ))
        },
        timing,
    )
    .await;
}
