//! Traces across nodes: a call chain over two brokers gives one trace whose spans link to
//! their callers by Moleculer's ids, recorded in process (standing in for a collector)
//! exporter through the crate's exporter layer, and shaped as OpenTelemetry spans; an error
//! is recorded on its span; the first traced node decides.

use std::sync::Arc;
use std::time::Duration;

use moleculer_broker::{
    FinishedSpan, Service, ServiceBrokerBuilder, ServiceSchema, SpanExport, TracingSettings,
};
use moleculer_core::{Context, MoleculerError};
use moleculer_test::Cluster;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tracing_subscriber::layer::SubscriberExt;

/// The spans the tracer's exporter layer handed over.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<FinishedSpan>>>);

impl Collected {
    /// Records this thread's finished spans until the guard drops.
    fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let collected = Collected::default();
        let sink = collected.clone();
        let export = SpanExport::new(move |span| sink.0.lock().push(span));
        let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(export));
        (collected, guard)
    }

    fn of(&self, action: &str) -> Vec<FinishedSpan> {
        self.0
            .lock()
            .iter()
            .filter(|s| s.tags.get("action").map(String::as_str) == Some(action))
            .cloned()
            .collect()
    }
}

struct Front;
impl Service for Front {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("front")
            .raw_action("go", |_s: Arc<Self>, ctx: Context| async move {
                ctx.call("back.work", json!({})).await
            })
            .raw_action("place", |_s: Arc<Self>, ctx: Context| async move {
                ctx.emit("order.placed", json!({"id": 1})).await?;
                Ok(json!(&**ctx.id()))
            })
    }
}

struct Back;
impl Service for Back {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("back")
            .raw_action("work", |_s: Arc<Self>, ctx: Context| async move {
                let leaf = ctx.call("back.leaf", json!({})).await?;
                let _ = ctx.call("back.fail", json!({})).await;
                Ok(json!({ "leaf": leaf, "id": &**ctx.id() }))
            })
            .raw_action("leaf", |_s: Arc<Self>, _ctx: Context| async move {
                Ok(json!("leaf"))
            })
            .raw_action("fail", |_s: Arc<Self>, _ctx: Context| async move {
                Err::<Value, _>(MoleculerError::client("no", 400, "NO", Value::Null))
            })
            .event("order.placed", |_s: Arc<Self>, _ctx: Context| async move {
                Ok(())
            })
    }
}

/// node-0 with `front`, node-1 with `back`, configured by `configure`; node-0 knows `back`.
async fn front_and_back(
    configure: impl Fn(usize, ServiceBrokerBuilder) -> ServiceBrokerBuilder,
) -> Cluster {
    let cluster = Cluster::start(2, configure, |i, broker| {
        if i == 0 {
            broker.create_service(Front).unwrap();
        } else {
            broker.create_service(Back).unwrap();
        }
    })
    .await;
    cluster
        .node(0)
        .wait_for_services(&["back"], Some(Duration::from_secs(5)))
        .await
        .unwrap();
    cluster
}

fn traced() -> TracingSettings {
    TracingSettings {
        enabled: true,
        ..TracingSettings::default()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn one_trace_across_nodes_with_parent_links() {
    let (collector, _guard) = Collected::install();
    let cluster = front_and_back(|_, b| b.tracing(traced())).await;
    let answer = cluster.node(0).call("front.go", json!({})).await.unwrap();
    assert_eq!(answer["leaf"], "leaf");

    let [go] = collector.of("front.go").try_into().unwrap();
    let [work] = collector.of("back.work").try_into().unwrap();
    let [leaf] = collector.of("back.leaf").try_into().unwrap();
    let [fail] = collector.of("back.fail").try_into().unwrap();
    let trace = &go.trace_id;
    for span in [&go, &work, &leaf, &fail] {
        assert_eq!(span.kind, "action");
        assert_eq!(&span.trace_id, trace, "one trace: {span:?}");
    }
    assert_eq!(go.name, "action 'front.go'", "Moleculer's span name");
    assert_eq!(go.span_id, *trace, "the root's id is the request id");
    assert_eq!(go.parent_id, None, "the root has no parent");
    assert_eq!(work.parent_id.as_ref(), Some(&go.span_id), "crossed nodes");
    assert_eq!(
        work.span_id, answer["id"],
        "the span is the callee's context"
    );
    assert_eq!(work.tags["remote"], "true");
    assert_eq!(work.tags["caller_node"], "node-0");
    assert_eq!(leaf.parent_id.as_ref(), Some(&work.span_id));
    assert_eq!(
        (
            go.tags["level"].as_str(),
            work.tags["level"].as_str(),
            leaf.tags["level"].as_str()
        ),
        ("1", "2", "3")
    );
    assert_eq!(fail.error.as_deref(), Some("MoleculerClientError"));
    assert_eq!(leaf.error, None);
    assert!(
        go.duration >= work.duration,
        "the caller's span covers the callee's"
    );

    // As OpenTelemetry spans: one trace id, parents linked by the same mapping of ids.
    let (go, work, fail) = (go.to_otlp(), work.to_otlp(), fail.to_otlp());
    assert_eq!(go["traceId"].as_str().unwrap().len(), 32);
    assert_eq!(go["traceId"], work["traceId"]);
    assert_eq!(go["spanId"].as_str().unwrap().len(), 16);
    assert_eq!(work["parentSpanId"], go["spanId"]);
    assert!(go.get("parentSpanId").is_none());
    assert_eq!(fail["status"]["code"], 2);
    assert_eq!(go["status"]["code"], 1);
    let start: u128 = work["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
    let end: u128 = work["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(end >= start && start > 1_600_000_000_000_000_000);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_first_traced_node_decides_and_untraced_nodes_open_no_spans() {
    let (collector, _guard) = Collected::install();
    // node-0 does not trace; node-1 does and decides for the requests it receives.
    let cluster = front_and_back(|i, b| if i == 1 { b.tracing(traced()) } else { b }).await;
    cluster.node(0).call("front.go", json!({})).await.unwrap();
    assert!(collector.of("front.go").is_empty(), "node-0 opens no spans");
    let [work] = collector.of("back.work").try_into().unwrap();
    let [leaf] = collector.of("back.leaf").try_into().unwrap();
    assert_eq!(leaf.parent_id.as_ref(), Some(&work.span_id));
    assert_eq!(leaf.trace_id, work.trace_id);
    assert!(
        work.parent_id.is_some(),
        "its parent is node-0's untraced context"
    );
    cluster.stop_all().await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_event_handler_span_continues_the_emitters_trace() {
    let (collector, _guard) = Collected::install();
    let with_events = TracingSettings {
        enabled: true,
        events: true,
        ..TracingSettings::default()
    };
    let cluster = front_and_back(|_, b| b.tracing(with_events.clone())).await;
    let placer = cluster
        .node(0)
        .call("front.place", json!({}))
        .await
        .unwrap();
    let mut handled = Vec::new();
    for _ in 0..100 {
        handled = collector
            .0
            .lock()
            .iter()
            .filter(|s| s.kind == "event")
            .cloned()
            .collect();
        if !handled.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let [event] = handled.try_into().unwrap();
    let [place] = collector.of("front.place").try_into().unwrap();
    assert_eq!(event.name, "event 'order.placed' in 'back'");
    assert_eq!(event.trace_id, place.trace_id, "one trace");
    assert_eq!(
        event.parent_id.as_deref(),
        placer.as_str(),
        "its parent is the emitting call"
    );
    assert_eq!(event.tags["remote"], "true");
    cluster.stop_all().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_left_out_by_sampling_is_left_out_downstream_too() {
    let (collector, _guard) = Collected::install();
    // node-0 samples nothing; node-1 would trace everything it decides about, but the
    // decision arrives with the request, in the packet's tracing flag.
    let cluster = front_and_back(|i, b| {
        let rate = if i == 0 { 0.0 } else { 1.0 };
        b.tracing(TracingSettings {
            enabled: true,
            sampling: moleculer_broker::SamplingSettings { rate },
            ..TracingSettings::default()
        })
    })
    .await;
    for _ in 0..5 {
        cluster.node(0).call("front.go", json!({})).await.unwrap();
    }
    assert!(
        collector.0.lock().is_empty(),
        "no span anywhere: {:?}",
        collector.0.lock()
    );
    // A call that starts on node-1 is decided there.
    cluster.node(1).call("back.leaf", json!({})).await.unwrap();
    assert_eq!(collector.of("back.leaf").len(), 1);
    cluster.stop_all().await;

    let err = moleculer_broker::ServiceBroker::builder()
        .tracing(TracingSettings {
            enabled: true,
            sampling: moleculer_broker::SamplingSettings { rate: 1.5 },
            ..TracingSettings::default()
        })
        .build()
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "invalid broker option `tracing.sampling.rate`: must be between 0 and 1 (got 1.5)"
    );
}
