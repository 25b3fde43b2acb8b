//! Traces across nodes: a call chain over two brokers gives one trace whose spans link to
//! their callers by Moleculer's ids, recorded by an in-process layer standing in for an
//! exporter; an error is recorded on its span; the caller's decision travels in the packets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use moleculer_broker::{Service, ServiceSchema, TracingSettings, TRACING_TARGET};
use moleculer_core::{Context, MoleculerError};
use moleculer_test::Cluster;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::Layer;

/// A finished span as an exporter would see it.
#[derive(Debug, Clone, Default)]
struct Exported {
    name: String,
    fields: HashMap<String, String>,
    closed: bool,
}

/// Records every span of the tracer's target, with its fields.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<HashMap<u64, Exported>>>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Collector {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: LayerContext<'_, S>) {
        if attrs.metadata().target() != TRACING_TARGET {
            return;
        }
        let mut span = Exported {
            name: attrs.metadata().name().to_owned(),
            ..Exported::default()
        };
        attrs.record(&mut Fields(&mut span.fields));
        self.spans.lock().insert(id.into_u64(), span);
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: LayerContext<'_, S>) {
        if let Some(span) = self.spans.lock().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }
    fn on_close(&self, id: Id, _ctx: LayerContext<'_, S>) {
        if let Some(span) = self.spans.lock().get_mut(&id.into_u64()) {
            span.closed = true;
        }
    }
}

impl Collector {
    fn of(&self, action: &str) -> Vec<Exported> {
        self.spans
            .lock()
            .values()
            .filter(|s| s.fields.get("action").map(String::as_str) == Some(action))
            .cloned()
            .collect()
    }
}

struct Front;
impl Service for Front {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("front").raw_action("go", |_s: Arc<Self>, ctx: Context| async move {
            ctx.call("back.work", json!({})).await
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
    }
}

fn traced() -> TracingSettings {
    TracingSettings {
        enabled: true,
        ..TracingSettings::default()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn one_trace_across_nodes_with_parent_links() {
    let collector = Collector::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(collector.clone()));
    let cluster = Cluster::start(
        2,
        |_, b| b.tracing(traced()),
        |i, broker| {
            if i == 0 {
                broker.create_service(Front).unwrap();
            } else {
                broker.create_service(Back).unwrap();
            }
        },
    )
    .await;
    cluster
        .node(0)
        .wait_for_services(&["back"], Some(Duration::from_secs(5)))
        .await
        .unwrap();
    let answer = cluster.node(0).call("front.go", json!({})).await.unwrap();
    assert_eq!(answer["leaf"], "leaf");

    let [go] = collector.of("front.go").try_into().unwrap();
    let [work] = collector.of("back.work").try_into().unwrap();
    let [leaf] = collector.of("back.leaf").try_into().unwrap();
    let [fail] = collector.of("back.fail").try_into().unwrap();
    let trace = &go.fields["trace_id"];
    for span in [&go, &work, &leaf, &fail] {
        assert_eq!(span.name, "action");
        assert!(span.closed, "{span:?} is finished");
        assert_eq!(&span.fields["trace_id"], trace, "one trace: {span:?}");
    }
    assert_eq!(
        go.fields["span_id"], *trace,
        "the root's id is the request id"
    );
    assert!(
        !go.fields.contains_key("parent_id"),
        "the root has no parent"
    );
    assert_eq!(
        work.fields["parent_id"], go.fields["span_id"],
        "crossed nodes"
    );
    assert_eq!(
        work.fields["span_id"], answer["id"],
        "the span is the callee's context"
    );
    assert_eq!(work.fields["remote"], "true");
    assert_eq!(work.fields["caller_node"], "node-0");
    assert_eq!(leaf.fields["parent_id"], work.fields["span_id"]);
    assert_eq!(
        (
            go.fields["level"].as_str(),
            work.fields["level"].as_str(),
            leaf.fields["level"].as_str()
        ),
        ("1", "2", "3")
    );
    assert_eq!(fail.fields["error"], "MoleculerClientError");
    assert!(!leaf.fields.contains_key("error"));
    cluster.stop_all().await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_first_traced_node_decides_and_untraced_nodes_open_no_spans() {
    let collector = Collector::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(collector.clone()));
    // node-0 does not trace; node-1 does and decides for the requests it receives.
    let cluster = Cluster::start(
        2,
        |i, b| if i == 1 { b.tracing(traced()) } else { b },
        |i, broker| {
            if i == 0 {
                broker.create_service(Front).unwrap();
            } else {
                broker.create_service(Back).unwrap();
            }
        },
    )
    .await;
    cluster
        .node(0)
        .wait_for_services(&["back"], Some(Duration::from_secs(5)))
        .await
        .unwrap();
    cluster.node(0).call("front.go", json!({})).await.unwrap();
    assert!(collector.of("front.go").is_empty(), "node-0 opens no spans");
    let [work] = collector.of("back.work").try_into().unwrap();
    let [leaf] = collector.of("back.leaf").try_into().unwrap();
    assert_eq!(leaf.fields["parent_id"], work.fields["span_id"]);
    assert_eq!(leaf.fields["trace_id"], work.fields["trace_id"]);
    assert!(
        work.fields.contains_key("parent_id"),
        "its parent is node-0's untraced context"
    );
    cluster.stop_all().await;
}
