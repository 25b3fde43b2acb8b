//! Metrics after real traffic between two brokers: `/metrics` is scraped over HTTP and its
//! counters, histograms and labels checked against the calls and events made; errors are
//! counted with their name and code (a timeout too); `$node.metrics` lists the same values;
//! bad settings and a port in use fail with a sentence.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use moleculer_broker::{MetricsSettings, Service, ServiceBroker, ServiceSchema};
use moleculer_core::{CallOptions, Context, MoleculerError};
use moleculer_test::Cluster;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct MathService;

impl Service for MathService {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("math")
            .raw_action("add", |_s: Arc<Self>, ctx: Context| async move {
                let p = ctx.params();
                Ok(json!(
                    p["a"].as_i64().unwrap_or(0) + p["b"].as_i64().unwrap_or(0)
                ))
            })
            .raw_action("reject", |_s: Arc<Self>, _ctx: Context| async move {
                Err::<Value, _>(MoleculerError::client(
                    "not today",
                    422,
                    "NOT_TODAY",
                    Value::Null,
                ))
            })
            .raw_action("crash", |_s: Arc<Self>, _ctx: Context| async move {
                Err::<Value, _>(MoleculerError::server("boom", 500, "BOOM", Value::Null))
            })
            .raw_action("slow", |_s: Arc<Self>, _ctx: Context| async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(Value::Null)
            })
            .event("user.created", |_s: Arc<Self>, _ctx: Context| async move {
                Ok(())
            })
    }
}

struct ApiService;

impl Service for ApiService {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("api").raw_action("sum", |_s: Arc<Self>, ctx: Context| async move {
            ctx.call("math.add", json!({"a": 1, "b": 2})).await
        })
    }
}

/// Metrics on, any free port, every call timed (the default times one local call in 16).
fn metrics_on() -> MetricsSettings {
    MetricsSettings {
        enabled: true,
        port: 0,
        local_timing_every: 1,
        ..MetricsSettings::default()
    }
}

/// One sample line of the text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (head, value) = line.rsplit_once(' ').expect("a sample has a value");
            let (name, labels) = match head.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("labels close");
                    let labels = body
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once("=\"").expect("label=value");
                            (k.to_owned(), v.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (head.to_owned(), BTreeMap::new()),
            };
            Sample {
                name,
                labels,
                value: value.parse().expect("a number"),
            }
        })
        .collect()
}

/// The value of the one sample named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
    found.first().map(|s| s.value)
}

async fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

async fn scrape(broker: &ServiceBroker) -> Vec<Sample> {
    let addr = broker.metrics_address().expect("the endpoint listens");
    let response = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: text/plain; version=0.0.4"));
    parse(body)
}

#[tokio::test]
async fn scraped_metrics_count_calls_errors_events_and_packets() {
    let cluster = Cluster::start(
        2,
        |_, b| b.metrics(metrics_on()),
        |i, broker| {
            if i == 0 {
                broker.create_service(ApiService).unwrap();
            } else {
                broker.create_service(MathService).unwrap();
            }
        },
    )
    .await;
    assert!(cluster.converged(Duration::from_secs(5)).await);
    let (caller, callee) = (cluster.node(0), cluster.node(1));
    caller
        .wait_for_services(&["math"], Some(Duration::from_secs(5)))
        .await
        .unwrap();

    for _ in 0..3 {
        assert_eq!(
            caller
                .call("math.add", json!({"a": 2, "b": 3}))
                .await
                .unwrap(),
            5
        );
    }
    assert_eq!(caller.call("api.sum", json!({})).await.unwrap(), 3);
    let err = caller.call("math.reject", json!({})).await.unwrap_err();
    assert_eq!(err.code, 422);
    caller.emit("user.created", json!({"id": 1})).await.unwrap();
    // The event is served on the other node a moment later.
    for _ in 0..100 {
        let s = scrape(callee).await;
        if value(
            &s,
            "moleculer_event_received_total",
            &[("event", "user.created")],
        )
        .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let s = scrape(callee).await;
    let local_add = [
        ("action", "math.add"),
        ("service", "math"),
        ("type", "local"),
        ("caller", "null"),
    ];
    assert_eq!(value(&s, "moleculer_request_total", &local_add), Some(3.0));
    assert_eq!(value(&s, "moleculer_request_active", &local_add), Some(0.0));
    assert_eq!(
        value(&s, "moleculer_request_time_count", &local_add),
        Some(3.0)
    );
    let le_inf = [local_add.as_slice(), &[("le", "+Inf")]].concat();
    assert_eq!(
        value(&s, "moleculer_request_time_bucket", &le_inf),
        Some(3.0)
    );
    let le_10s = [local_add.as_slice(), &[("le", "10000")]].concat();
    assert_eq!(
        value(&s, "moleculer_request_time_bucket", &le_10s),
        Some(3.0),
        "Moleculer's buckets, in ms"
    );
    assert!(value(&s, "moleculer_request_time_sum", &local_add).unwrap() >= 0.0);
    // The nested call names its calling service, one level down.
    let from_api = [("action", "math.add"), ("type", "local"), ("caller", "api")];
    assert_eq!(value(&s, "moleculer_request_total", &from_api), Some(1.0));
    assert_eq!(
        value(&s, "moleculer_request_levels", &[("level", "2")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "moleculer_request_levels", &[("level", "1")]),
        Some(4.0),
        "3 adds and a reject came from outside any handler"
    );
    // Default labels on every sample.
    assert!(s.iter().all(
        |x| x.labels.get("nodeID").map(String::as_str) == Some("node-1")
            && x.labels.get("namespace").map(String::as_str) == Some("")
    ));
    // The error, with its name, code and type.
    let rejected = [
        ("action", "math.reject"),
        ("type", "local"),
        ("errorName", "MoleculerClientError"),
        ("errorCode", "422"),
        ("errorType", "NOT_TODAY"),
    ];
    assert_eq!(
        value(&s, "moleculer_request_error_total", &rejected),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "moleculer_event_received_total",
            &[
                ("event", "user.created"),
                ("service", "math"),
                ("group", "math")
            ]
        ),
        Some(1.0)
    );
    // Packets: 5 requests came in; every sample of the process and OS is there.
    assert_eq!(
        value(&s, "moleculer_transit_receive_total", &[("type", "REQ")]),
        Some(5.0)
    );
    assert!(value(&s, "moleculer_transit_publish_total", &[("type", "RES")]).unwrap() >= 5.0);
    assert!(value(&s, "moleculer_transporter_packets_received_bytes", &[]).unwrap() > 0.0);
    assert_eq!(
        value(&s, "moleculer_registry_nodes_online_total", &[]),
        Some(2.0)
    );
    assert!(value(&s, "process_memory_rss", &[]).unwrap() > 1e6);
    assert!(value(&s, "os_cpu_total", &[]).unwrap() >= 1.0);
    assert!(value(&s, "os_memory_total", &[]).unwrap() > 0.0);

    // The caller's side: the same calls, as remote ones.
    let s = scrape(caller).await;
    let remote_add = [
        ("action", "math.add"),
        ("type", "remote"),
        ("caller", "null"),
    ];
    assert_eq!(value(&s, "moleculer_request_total", &remote_add), Some(3.0));
    let remote_rejected = [
        ("action", "math.reject"),
        ("type", "remote"),
        ("errorCode", "422"),
    ];
    assert_eq!(
        value(&s, "moleculer_request_error_total", &remote_rejected),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "moleculer_event_emit_total",
            &[("event", "user.created"), ("groups", "null")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "moleculer_transit_publish_total", &[("type", "REQ")]),
        Some(5.0)
    );

    // `$node.metrics` on the other node: Moleculer's names, filtered.
    let listed = caller
        .call_with(
            "$node.metrics",
            json!({"includes": "moleculer.request.**", "types": ["counter"]}),
            CallOptions::default().node_id("node-1"),
        )
        .await
        .unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"moleculer.request.total"), "{names:?}");
    assert!(
        names.iter().all(|n| n.starts_with("moleculer.request.")),
        "{names:?}"
    );
    assert!(
        !names.contains(&"moleculer.request.time"),
        "histograms filtered out: {names:?}"
    );
    let total = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "moleculer.request.total")
        .unwrap();
    assert!(total["values"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["labels"]["action"] == "math.add"
            && v["labels"]["caller"] == "null"
            && v["value"] == 3.0));

    // Other paths and methods.
    let addr = callee.metrics_address().unwrap();
    let r = http(
        addr,
        "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    let r = http(
        addr,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    let r = http(addr, "this is not http\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // Still serving after the garbage.
    assert!(!scrape(callee).await.is_empty());

    cluster.stop_all().await;
    assert!(
        callee.metrics_address().is_none(),
        "the endpoint closes with the broker"
    );
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_call_counts_as_a_timeout_error() {
    let broker = ServiceBroker::builder()
        .metrics(MetricsSettings {
            serve: false,
            ..metrics_on()
        })
        .build()
        .unwrap();
    broker.create_service(MathService).unwrap();
    broker.start().await.unwrap();
    let err = broker
        .call_with(
            "math.slow",
            json!({}),
            CallOptions::default().timeout(Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 504);
    let s = parse(&broker.metrics_text().unwrap());
    let slow = [("action", "math.slow"), ("type", "local")];
    assert_eq!(value(&s, "moleculer_request_total", &slow), Some(1.0));
    assert_eq!(
        value(&s, "moleculer_request_active", &slow),
        Some(0.0),
        "the dropped handler left the gauge"
    );
    let timeout = [
        ("action", "math.slow"),
        ("errorName", "RequestTimeoutError"),
        ("errorCode", "504"),
    ];
    assert_eq!(
        value(&s, "moleculer_request_error_total", &timeout),
        Some(1.0)
    );
    // On paused time the handler was dropped at exactly its 100 ms: in the 100 ms bucket, not below.
    let le_50 = [slow.as_slice(), &[("le", "50")]].concat();
    let le_100 = [slow.as_slice(), &[("le", "100")]].concat();
    assert_eq!(
        value(&s, "moleculer_request_time_bucket", &le_50),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "moleculer_request_time_bucket", &le_100),
        Some(1.0)
    );
    broker.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn local_calls_are_all_counted_and_one_in_n_timed() {
    let broker = ServiceBroker::builder()
        .metrics(MetricsSettings {
            serve: false,
            enabled: true,
            ..MetricsSettings::default()
        })
        .build()
        .unwrap();
    broker.create_service(MathService).unwrap();
    broker.start().await.unwrap();
    for _ in 0..64 {
        broker
            .call("math.add", json!({"a": 1, "b": 1}))
            .await
            .unwrap();
    }
    let s = parse(&broker.metrics_text().unwrap());
    let add = [("action", "math.add"), ("type", "local")];
    assert_eq!(value(&s, "moleculer_request_total", &add), Some(64.0));
    assert_eq!(
        value(&s, "moleculer_request_time_count", &add),
        Some(4.0),
        "one in 16"
    );
    broker.stop().await;
}

#[tokio::test]
async fn metrics_off_says_so_and_bad_settings_are_named() {
    let broker = ServiceBroker::builder().build().unwrap();
    broker.start().await.unwrap();
    let err = broker.call("$node.metrics", json!({})).await.unwrap_err();
    assert_eq!(
        (err.code, err.kind.as_deref()),
        (400, Some("METRICS_DISABLED"))
    );
    assert!(broker.metrics_text().is_none() && broker.metrics_address().is_none());
    broker.stop().await;

    let err = ServiceBroker::builder()
        .metrics(MetricsSettings {
            default_buckets: vec![10.0, 5.0],
            ..metrics_on()
        })
        .build()
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "invalid broker option `metrics.defaultBuckets`: must be a non-empty list of finite numbers in increasing order"
    );

    // A port in use fails the start with a sentence, and the node does not half-start.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let broker = ServiceBroker::builder()
        .metrics(MetricsSettings {
            port,
            ..metrics_on()
        })
        .build()
        .unwrap();
    let err = broker.start().await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "the metrics endpoint cannot listen on 127.0.0.1:{port}: "
        )),
        "{err}"
    );
    assert!(!broker.is_started());
}

#[tokio::test(start_paused = true)]
async fn bulkhead_slots_and_queue_show_while_calls_wait() {
    let broker = ServiceBroker::builder()
        .metrics(MetricsSettings {
            serve: false,
            ..metrics_on()
        })
        .bulkhead(moleculer_core::BulkheadOptions {
            enabled: Some(true),
            concurrency: Some(1),
            max_queue_size: Some(10),
        })
        .build()
        .unwrap();
    broker.create_service(MathService).unwrap();
    broker.start().await.unwrap();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let b = broker.clone();
            tokio::spawn(async move { b.call("math.slow", json!({})).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = parse(&broker.metrics_text().unwrap());
    let slow = [("service", "math"), ("action", "math.slow")];
    assert_eq!(
        value(&s, "moleculer_request_bulkhead_inflight", &slow),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "moleculer_request_bulkhead_queue_size", &slow),
        Some(2.0)
    );
    assert_eq!(
        value(&s, "moleculer_request_active", &[("action", "math.slow")]),
        Some(3.0),
        "queued calls are in progress too"
    );
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let s = parse(&broker.metrics_text().unwrap());
    assert_eq!(
        value(&s, "moleculer_request_bulkhead_inflight", &slow),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "moleculer_request_bulkhead_queue_size", &slow),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "moleculer_request_active", &[("action", "math.slow")]),
        Some(0.0)
    );
    broker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_breaker_shows_with_the_node_it_cut_off() {
    let breaker = moleculer_core::CircuitBreakerOptions {
        enabled: Some(true),
        threshold: Some(0.5),
        window_time: Some(60.0),
        min_request_count: Some(4),
        half_open_time: Some(10_000),
    };
    let cluster = Cluster::start(
        2,
        |_, b| {
            b.metrics(MetricsSettings {
                serve: false,
                ..metrics_on()
            })
            .circuit_breaker(breaker)
        },
        |i, broker| {
            if i == 1 {
                broker.create_service(MathService).unwrap();
            }
        },
    )
    .await;
    let caller = cluster.node(0);
    caller
        .wait_for_services(&["math"], Some(Duration::from_secs(5)))
        .await
        .unwrap();
    for _ in 0..4 {
        let err = caller.call("math.crash", json!({})).await.unwrap_err();
        assert_eq!(err.code, 500);
    }
    let s = parse(&caller.metrics_text().unwrap());
    let cut = [
        ("affectedNodeID", "node-1"),
        ("service", "math"),
        ("action", "math.crash"),
    ];
    assert_eq!(
        value(&s, "moleculer_circuit_breaker_opened_total", &cut),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "moleculer_circuit_breaker_opened_active", &cut),
        Some(1.0)
    );
    let crashed = [
        ("action", "math.crash"),
        ("type", "remote"),
        ("errorCode", "500"),
        ("errorName", "MoleculerServerError"),
    ];
    assert_eq!(
        value(&s, "moleculer_request_error_total", &crashed),
        Some(4.0)
    );
    // After halfOpenTime the breaker half-opens: the open gauge goes, the half-open one shows.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let s = parse(&caller.metrics_text().unwrap());
    assert_eq!(
        value(&s, "moleculer_circuit_breaker_opened_active", &cut),
        None
    );
    assert_eq!(
        value(&s, "moleculer_circuit_breaker_half_opened_active", &cut),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "moleculer_circuit_breaker_opened_total", &cut),
        Some(1.0)
    );
    cluster.stop_all().await;
}
