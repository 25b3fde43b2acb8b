//! The Redis transporter passes the conformance suites against a real redis-server.

use std::time::Duration;

use moleculer_broker::ServiceBroker;
use moleculer_test::conformance::{discoverer_suite, transporter_suite, Capabilities, SuiteTiming};
use moleculer_test::servers::RedisServer;
use moleculer_transporter_redis::{RedisOptions, RedisTransporter};

fn transporter(url: &str) -> RedisTransporter {
    RedisTransporter::new(url.parse::<RedisOptions>().unwrap())
}

#[tokio::test]
async fn redis_transporter_passes_the_transporter_suite() {
    let redis = RedisServer::start();
    transporter_suite(
        |_| transporter(&redis.url()),
        Duration::from_millis(100),
        Capabilities::PUB_SUB,
    )
    .await;
}

#[tokio::test]
async fn local_discovery_over_redis_passes_the_discoverer_suite() {
    let redis = RedisServer::start();
    let timing = SuiteTiming {
        heartbeat_interval: 1.0,
        heartbeat_timeout: 3.0,
    };
    discoverer_suite(
        |_| ServiceBroker::builder().transporter(transporter(&redis.url())),
        timing,
    )
    .await;
}
