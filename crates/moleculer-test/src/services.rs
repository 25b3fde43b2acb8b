//! Small services shared by tests and conformance suites.

use std::sync::Arc;
use std::time::Duration;

use moleculer_broker::{Service, ServiceSchema};
use moleculer_core::{Context, MoleculerError};
use serde_json::{json, Value};
use std::sync::Mutex;

/// `echo.where` answers which node served it; `echo.sleep {ms}` answers after a while;
/// `echo.fail` answers an error with code 422.
pub struct Echo;

impl Service for Echo {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("echo")
            .raw_action("where", |_s: Arc<Self>, ctx: Context| async move {
                ctx.set_meta("servedBy", json!(ctx.local_node_id().as_str()));
                Ok::<Value, _>(json!({ "node": ctx.local_node_id().as_str(), "caller": ctx.node_id().as_str(), "params": ctx.params(), "meta": ctx.meta() }))
            })
            .raw_action("sleep", |_s: Arc<Self>, ctx: Context| async move {
                let ms = ctx.params()["ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<Value, _>(json!(ctx.local_node_id().as_str()))
            })
            .raw_action("fail", |_s: Arc<Self>, _ctx: Context| async move {
                Err::<Value, _>(MoleculerError::client("it failed", 422, "ECHO_FAILED", json!({ "reason": "asked to" })))
            })
    }
}

/// Subscribes to `pattern` in `group` and records (node, event, groups) for every delivery.
pub struct Listener {
    /// Service name.
    pub name: &'static str,
    /// Group (default: the service name).
    pub group: Option<&'static str>,
    /// Event pattern.
    pub pattern: &'static str,
    /// Where deliveries are recorded.
    pub log: Recorder,
}

impl Service for Listener {
    fn schema(&self) -> ServiceSchema<Self> {
        let mut def = moleculer_broker::EventDef::new(
            self.pattern,
            |s: Arc<Self>, ctx: Context| async move {
                let event = ctx.event().map(|e| e.name.to_string()).unwrap_or_default();
                s.log.push(json!({ "node": ctx.local_node_id().as_str(), "service": s.name, "event": event, "from": ctx.node_id().as_str(), "data": ctx.params() }));
                Ok(())
            },
        );
        if let Some(group) = self.group {
            def = def.group(group);
        }
        ServiceSchema::new(self.name).event_def(def)
    }
}

/// A shared, clonable log of JSON records, for handlers to write and tests to read.
#[derive(Clone, Default, Debug)]
pub struct Recorder(Arc<Mutex<Vec<Value>>>);

impl Recorder {
    /// Appends a record.
    pub fn push(&self, value: Value) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(value);
    }

    /// Takes every record so far.
    pub fn take(&self) -> Vec<Value> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// How many records there are.
    pub fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
