//! The Redis cacher against a real redis-server: Moleculer's key layout and JSON values, a
//! cache shared by two brokers, undecodable values read as misses, and an outage that calls
//! ride through on their handlers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moleculer_broker::{ActionDef, Service, ServiceBroker, ServiceSchema};
use moleculer_cacher_redis::RedisCacher;
use moleculer_core::{CacheOptions, Cacher, CacherOptions, Context, MoleculerError};
use moleculer_test::servers::RedisServer;
use serde_json::{json, Value};

/// `square.of {n}` → n·n, cached by `n` for 30 s; counts its runs.
#[derive(Clone, Default)]
struct Square {
    runs: Arc<AtomicU64>,
}

impl Service for Square {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("square").action_def(
            ActionDef::raw("of", |s: Arc<Self>, ctx: Context| async move {
                s.runs.fetch_add(1, Ordering::SeqCst);
                let n = ctx.params()["n"].as_i64().unwrap_or(0);
                Ok::<Value, MoleculerError>(json!(n * n))
            })
            .cache(CacheOptions::keys(["n"]).ttl(Duration::from_secs(30))),
        )
    }
}

fn raw(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

async fn broker(url: &str, square: &Square) -> ServiceBroker {
    let cacher = RedisCacher::new(url, &CacherOptions::default(), "live").unwrap();
    let broker = ServiceBroker::builder()
        .namespace("live")
        .cacher(cacher)
        .build()
        .unwrap();
    broker.create_service(square.clone()).unwrap();
    broker.start().await.unwrap();
    broker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_values_and_ttls_are_moleculers() {
    let server = RedisServer::start();
    let cacher = RedisCacher::new(&server.url(), &CacherOptions::default(), "live").unwrap();
    assert_eq!(cacher.prefix(), "MOL-live-");
    cacher
        .set(
            "users.get:5",
            json!({"id": 5, "name": "bob"}),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let mut conn = raw(&server.url());
    let stored: String = redis::cmd("GET")
        .arg("MOL-live-users.get:5")
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&stored).unwrap(),
        json!({"id": 5, "name": "bob"})
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg("MOL-live-users.get:5")
        .query(&mut conn)
        .unwrap();
    assert!((1..=30).contains(&ttl), "{ttl}");

    // What another node wrote is read back; what is not JSON is a miss.
    let _: () = redis::cmd("SET")
        .arg("MOL-live-users.get:6")
        .arg(r#"{"id":6}"#)
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        cacher.get("users.get:6").await.unwrap(),
        Some(json!({"id": 6}))
    );
    let _: () = redis::cmd("SET")
        .arg("MOL-live-users.get:7")
        .arg("\u{1}garbage")
        .query(&mut conn)
        .unwrap();
    assert_eq!(cacher.get("users.get:7").await.unwrap(), None);

    cacher.set("posts.get:1", json!(1), None).await.unwrap();
    cacher.clean("users.**").await.unwrap();
    for key in ["users.get:5", "users.get:6", "users.get:7"] {
        assert_eq!(cacher.get(key).await.unwrap(), None, "{key} was cleaned");
    }
    assert_eq!(cacher.get("posts.get:1").await.unwrap(), Some(json!(1)));
    cacher.del(&["posts.get:1".to_owned()]).await.unwrap();
    assert_eq!(cacher.get("posts.get:1").await.unwrap(), None);

    let prefixed = RedisCacher::new(
        &server.url(),
        &CacherOptions {
            prefix: Some("shop".into()),
            ..CacherOptions::default()
        },
        "live",
    )
    .unwrap();
    assert_eq!(prefixed.prefix(), "shop-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_share_one_cache_and_ride_through_an_outage() {
    let mut server = RedisServer::start();
    let (a_square, b_square) = (Square::default(), Square::default());
    let a = broker(&server.url(), &a_square).await;
    let b = broker(&server.url(), &b_square).await;

    assert_eq!(a.call("square.of", json!({"n": 9})).await.unwrap(), 81);
    assert_eq!(b.call("square.of", json!({"n": 9})).await.unwrap(), 81);
    assert_eq!(a_square.runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        b_square.runs.load(Ordering::SeqCst),
        0,
        "b read what a stored"
    );

    // Redis goes away: calls are answered by their handlers, none fails.
    server.stop();
    for _ in 0..5 {
        assert_eq!(b.call("square.of", json!({"n": 9})).await.unwrap(), 81);
    }
    assert_eq!(b_square.runs.load(Ordering::SeqCst), 5);

    // Back (empty): caching resumes once the retry pause has passed.
    server.restart();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    b.call("square.of", json!({"n": 9})).await.unwrap();
    b.call("square.of", json!({"n": 9})).await.unwrap();
    assert_eq!(
        b_square.runs.load(Ordering::SeqCst),
        6,
        "stored again, then a hit"
    );
    a.stop().await;
    b.stop().await;
}
