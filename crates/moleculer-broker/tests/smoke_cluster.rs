//! Two brokers on the in-memory bus: the smallest cluster.

use std::sync::Arc;
use std::time::Duration;

use moleculer_broker::{Service, ServiceBroker, ServiceSchema};
use moleculer_core::memory_transporter::MemoryBus;
use moleculer_core::{Context, Result};
use serde_json::{json, Value};

struct Echo;

impl Service for Echo {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("echo").raw_action("where", |_s: Arc<Self>, ctx: Context| async move {
            ctx.set_meta("answeredBy", json!(ctx.local_node_id().as_str()));
            Ok::<Value, _>(json!({ "node": ctx.local_node_id().as_str(), "caller": ctx.node_id().as_str(), "params": ctx.params() }))
        })
    }
}

#[tokio::test]
async fn a_remote_call_crosses_the_bus() -> Result<()> {
    let bus = MemoryBus::new();
    let a = ServiceBroker::builder()
        .node_id("a")
        .transporter(bus.transporter())
        .build()
        .unwrap();
    let b = ServiceBroker::builder()
        .node_id("b")
        .transporter(bus.transporter())
        .build()
        .unwrap();
    b.create_service(Echo).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    a.wait_for_services(&["echo"], Some(Duration::from_secs(2)))
        .await?;
    let reply = a.call("echo.where", json!({"x": 1})).await?;
    assert_eq!(
        reply,
        json!({"node": "b", "caller": "a", "params": {"x": 1}})
    );
    b.stop().await;
    a.stop().await;
    Ok(())
}
