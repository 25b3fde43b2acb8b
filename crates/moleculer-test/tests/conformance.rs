//! The in-memory transporter and the Local discoverer pass the conformance suites.

use std::time::Duration;

use moleculer_broker::ServiceBroker;
use moleculer_core::memory_transporter::MemoryBus;
use moleculer_test::conformance::{discoverer_suite, transporter_suite, Capabilities, SuiteTiming};

#[tokio::test(start_paused = true)]
async fn memory_transporter_passes_the_transporter_suite() {
    let bus = MemoryBus::new();
    transporter_suite(
        |_| bus.transporter(),
        Duration::from_millis(5),
        Capabilities::MEMORY,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn local_discoverer_passes_the_discoverer_suite_with_json() {
    let bus = MemoryBus::new();
    let timing = SuiteTiming {
        heartbeat_interval: 1.0,
        heartbeat_timeout: 3.0,
    };
    discoverer_suite(
        |_| ServiceBroker::builder().transporter(bus.transporter()),
        timing,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn local_discoverer_passes_the_discoverer_suite_with_msgpack() {
    let bus = MemoryBus::new();
    let timing = SuiteTiming {
        heartbeat_interval: 1.0,
        heartbeat_timeout: 3.0,
    };
    discoverer_suite(
        |_| {
            ServiceBroker::builder()
                .transporter(bus.transporter())
                .serializer("MsgPack")
        },
        timing,
    )
    .await;
}
