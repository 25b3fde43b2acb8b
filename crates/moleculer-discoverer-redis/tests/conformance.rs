//! The Redis discoverer passes the discoverer suite against a real redis-server.

use moleculer_broker::ServiceBroker;
use moleculer_discoverer_redis::{RedisDiscoverer, RedisDiscovererOptions};
use moleculer_test::conformance::{discoverer_suite, SuiteTiming};
use moleculer_test::servers::RedisServer;
use moleculer_transporter_redis::{RedisOptions, RedisTransporter};

#[tokio::test]
async fn redis_discoverer_passes_the_discoverer_suite() {
    let redis = RedisServer::start();
    let url = redis.url();
    let timing = SuiteTiming {
        heartbeat_interval: 1.0,
        heartbeat_timeout: 3.0,
    };
    discoverer_suite(
        |_| {
            ServiceBroker::builder()
                .transporter(RedisTransporter::new(url.parse::<RedisOptions>().unwrap()))
                .discoverer(RedisDiscoverer::new(
                    url.parse::<RedisDiscovererOptions>().unwrap(),
                ))
        },
        timing,
    )
    .await;
}
