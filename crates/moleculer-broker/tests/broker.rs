//! Broker behaviour on one node: calls, nested calls, meta, limits, timeouts, events, `$node`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moleculer_broker::{ActionDef, EventDef, Service, ServiceBroker, ServiceSchema};
use moleculer_core::middleware::{ActionHandler, Middleware};
use moleculer_core::service_info::ActionInfo;
use moleculer_core::{CallOptions, Context, EmitOptions, MoleculerError, Result};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct AddParams {
    a: i64,
    b: i64,
}

struct Math;

impl Math {
    async fn add(self: Arc<Self>, _ctx: Context, p: AddParams) -> Result<i64> {
        Ok(p.a + p.b)
    }
}

impl Service for Math {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("math")
            .action("add", Math::add)
            .raw_action("panics", |_s: Arc<Self>, _ctx: Context| async move {
                if true {
                    panic!("boom");
                }
                Ok(Value::Null)
            })
            .action_def(
                ActionDef::raw("slow", |_s: Arc<Self>, _ctx: Context| async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok("late")
                })
                .timeout(Duration::from_secs(1)),
            )
    }
}

/// Calls itself deeper and deeper, recording levels and setting meta on the way.
struct Chain;

impl Service for Chain {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("chain")
            .raw_action("down", |_s: Arc<Self>, ctx: Context| async move {
                let remaining = ctx.params()["n"].as_u64().unwrap_or(0);
                ctx.set_meta(format!("level{}", ctx.level()), json!(true));
                if remaining == 0 {
                    return Ok(json!({ "level": ctx.level(), "caller": ctx.caller(), "requestID": &**ctx.request_id() }));
                }
                ctx.call("chain.down", json!({ "n": remaining - 1 })).await
            })
            .raw_action("meta", |_s: Arc<Self>, ctx: Context| async move {
                ctx.set_meta("inner", json!("set by child"));
                Ok(ctx.meta_get("outer"))
            })
            .raw_action("outer", |_s: Arc<Self>, ctx: Context| async move {
                ctx.set_meta("outer", json!("set by parent"));
                let seen_by_child = ctx.call("chain.meta", Value::Null).await?;
                Ok(json!({ "childSaw": seen_by_child, "parentSees": ctx.meta_get("inner") }))
            })
            .raw_action("spend", |_s: Arc<Self>, ctx: Context| async move {
                tokio::time::sleep(Duration::from_millis(ctx.params()["ms"].as_u64().unwrap_or(0))).await;
                ctx.call("math.add", json!({"a": 1, "b": 1})).await
            })
    }
}

async fn started(services: impl FnOnce(&ServiceBroker)) -> ServiceBroker {
    let broker = ServiceBroker::builder()
        .node_id("test-node")
        .build()
        .unwrap();
    services(&broker);
    broker.start().await.unwrap();
    broker
}

#[tokio::test]
async fn typed_call_returns_the_result() {
    let broker = started(|b| b.create_service(Math).unwrap()).await;
    assert_eq!(
        broker
            .call("math.add", json!({"a": 2, "b": 3}))
            .await
            .unwrap(),
        json!(5)
    );
    let sum: i64 = broker
        .call_as("math.add", &json!({"a": 4, "b": 5}))
        .await
        .unwrap();
    assert_eq!(sum, 9);
}

#[tokio::test]
async fn unknown_action_names_it() {
    let broker = started(|b| b.create_service(Math).unwrap()).await;
    let err = broker.call("math.sub", json!({})).await.unwrap_err();
    assert_eq!(err.name, "ServiceNotFoundError");
    assert_eq!(err.code, 404);
    assert!(err.message.contains("'math.sub'"), "{}", err.message);
    assert_eq!(err.data["action"], "math.sub");
}

#[tokio::test]
async fn bad_params_are_a_validation_error_naming_the_field() {
    let broker = started(|b| b.create_service(Math).unwrap()).await;
    let err = broker
        .call("math.add", json!({"a": 1, "b": "x"}))
        .await
        .unwrap_err();
    assert_eq!((err.name.as_str(), err.code), ("ValidationError", 422));
    assert!(err.message.contains("'b'"), "{}", err.message);
    let err = broker.call("math.add", json!({"a": 1})).await.unwrap_err();
    assert!(err.message.contains("missing field `b`"), "{}", err.message);
}

#[tokio::test]
async fn a_panicking_handler_answers_an_error_and_the_broker_keeps_serving() {
    let broker = started(|b| b.create_service(Math).unwrap()).await;
    let err = broker.call("math.panics", Value::Null).await.unwrap_err();
    assert_eq!(err.code, 500);
    assert!(err.message.contains("boom"), "{}", err.message);
    assert_eq!(
        broker
            .call("math.add", json!({"a": 1, "b": 1}))
            .await
            .unwrap(),
        json!(2)
    );
}

#[tokio::test]
async fn nested_calls_carry_level_caller_and_request_id() {
    let broker = started(|b| b.create_service(Chain).unwrap()).await;
    let out = broker.call("chain.down", json!({"n": 3})).await.unwrap();
    assert_eq!(out["level"], 4);
    assert_eq!(out["caller"], "chain");
    assert_eq!(out["requestID"].as_str().unwrap().len(), 36);
}

#[tokio::test]
async fn meta_flows_down_and_merges_back_up() {
    let broker = started(|b| b.create_service(Chain).unwrap()).await;
    let out = broker.call("chain.outer", Value::Null).await.unwrap();
    assert_eq!(out["childSaw"], "set by parent");
    assert_eq!(out["parentSees"], "set by child");
}

#[tokio::test]
async fn call_level_limit_stops_deep_recursion() {
    let broker = ServiceBroker::builder()
        .node_id("n")
        .max_call_level(3)
        .build()
        .unwrap();
    broker.create_service(Chain).unwrap();
    broker.start().await.unwrap();
    assert_eq!(
        broker.call("chain.down", json!({"n": 2})).await.unwrap()["level"],
        3
    );
    let err = broker
        .call("chain.down", json!({"n": 5}))
        .await
        .unwrap_err();
    assert_eq!(err.name, "MaxCallLevelError");
    assert_eq!(err.code, 500);
    assert!(!err.retryable);
}

#[tokio::test(start_paused = true)]
async fn action_timeout_answers_request_timeout() {
    let broker = started(|b| b.create_service(Math).unwrap()).await;
    let err = broker.call("math.slow", Value::Null).await.unwrap_err();
    assert_eq!((err.name.as_str(), err.code), ("RequestTimeoutError", 504));
    assert!(err.retryable);
}

#[tokio::test(start_paused = true)]
async fn call_timeout_overrides_and_the_deadline_travels_to_nested_calls() {
    let broker = started(|b| {
        b.create_service(Math).unwrap();
        b.create_service(Chain).unwrap();
    })
    .await;
    // The parent spends all of its 100 ms before calling: on paused time the nested call is
    // made exactly at the deadline, with no budget left, so it is skipped (not run).
    let opts = CallOptions::default().timeout(Duration::from_millis(100));
    let err = broker
        .call_with("chain.spend", json!({"ms": 100}), opts.clone())
        .await
        .unwrap_err();
    assert_eq!((err.name.as_str(), err.code), ("RequestSkippedError", 514));
    assert_eq!(
        err.data["action"], "math.add",
        "the nested call is the one skipped"
    );
    assert!(!err.retryable);
    // A parent still busy at its deadline is cut there by its own timer.
    let started = tokio::time::Instant::now();
    let err = broker
        .call_with("chain.spend", json!({"ms": 150}), opts.clone())
        .await
        .unwrap_err();
    assert_eq!((err.name.as_str(), err.code), ("RequestTimeoutError", 504));
    assert_eq!(err.data["action"], "chain.spend");
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    // With time left, the nested call runs.
    assert_eq!(
        broker
            .call_with("chain.spend", json!({"ms": 10}), opts)
            .await
            .unwrap(),
        json!(2)
    );
}

#[tokio::test(start_paused = true)]
async fn broker_request_timeout_applies_to_every_call() {
    let broker = ServiceBroker::builder()
        .node_id("n")
        .request_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    broker.create_service(Chain).unwrap();
    broker.create_service(Math).unwrap();
    broker.start().await.unwrap();
    let err = broker
        .call("chain.spend", json!({"ms": 200}))
        .await
        .unwrap_err();
    assert_eq!(err.name, "RequestTimeoutError");
}

/// One event delivery: (service, event name, type, groups).
type Delivery = (String, String, String, Vec<String>);

/// Records every event delivery.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Delivery>>>);

impl Log {
    fn take(&self) -> Vec<Delivery> {
        std::mem::take(&mut self.0.lock())
    }
}

struct Listener {
    name: &'static str,
    group: Option<&'static str>,
    pattern: &'static str,
    log: Log,
}

impl Service for Listener {
    fn schema(&self) -> ServiceSchema<Self> {
        let mut def = EventDef::new(self.pattern, |s: Arc<Self>, ctx: Context| async move {
            let e = ctx.event().unwrap();
            let groups = e.groups.to_vec();
            s.log.0.lock().push((
                s.name.to_owned(),
                e.name.to_string(),
                e.kind.as_str().to_owned(),
                groups,
            ));
            Ok(())
        });
        if let Some(g) = self.group {
            def = def.group(g);
        }
        ServiceSchema::new(self.name).event_def(def)
    }
}

async fn listeners(log: &Log) -> ServiceBroker {
    let l = |name, group, pattern| Listener {
        name,
        group,
        pattern,
        log: log.clone(),
    };
    started(|b| {
        b.create_service(l("mail-a", Some("mail"), "user.created"))
            .unwrap();
        b.create_service(l("mail-b", Some("mail"), "user.created"))
            .unwrap();
        b.create_service(l("audit", None, "user.*")).unwrap();
        b.create_service(l("everything", None, "**")).unwrap();
        b.create_service(l("orders", None, "order.?reated"))
            .unwrap();
    })
    .await
}

fn services(log: &[Delivery]) -> Vec<String> {
    let mut s: Vec<_> = log.iter().map(|e| e.0.clone()).collect();
    s.sort();
    s
}

#[tokio::test]
async fn emit_reaches_one_handler_per_group_and_balances_within_it() {
    let log = Log::default();
    let broker = listeners(&log).await;
    log.take();
    broker.emit("user.created", json!({"id": 1})).await.unwrap();
    let first = log.take();
    let svc = services(&first);
    assert_eq!(svc.len(), 3, "{svc:?}");
    assert!(svc.contains(&"audit".into()) && svc.contains(&"everything".into()));
    let mail_first = svc.iter().find(|s| s.starts_with("mail-")).unwrap().clone();
    let mail_entry = first.iter().find(|e| e.0 == mail_first).unwrap();
    assert_eq!(mail_entry.2, "emit");
    assert_eq!(mail_entry.3, ["mail"]);
    broker.emit("user.created", json!({"id": 2})).await.unwrap();
    let second = services(&log.take());
    let mail_second = second.iter().find(|s| s.starts_with("mail-")).unwrap();
    assert_ne!(
        &mail_first, mail_second,
        "round robin inside the mail group"
    );
}

#[tokio::test]
async fn broadcast_reaches_every_handler() {
    let log = Log::default();
    let broker = listeners(&log).await;
    log.take();
    broker.broadcast("user.created", json!({})).await.unwrap();
    assert_eq!(
        services(&log.take()),
        ["audit", "everything", "mail-a", "mail-b"]
    );
    broker
        .broadcast_local("user.created", json!({}))
        .await
        .unwrap();
    let local = log.take();
    assert_eq!(local.len(), 4);
    assert!(local.iter().all(|e| e.2 == "broadcastLocal"));
}

#[tokio::test]
async fn groups_filter_limits_delivery() {
    let log = Log::default();
    let broker = listeners(&log).await;
    log.take();
    broker
        .emit_with(
            "user.created",
            json!({}),
            EmitOptions::default().groups(["audit"]),
        )
        .await
        .unwrap();
    assert_eq!(services(&log.take()), ["audit"]);
    broker
        .broadcast_with(
            "user.created",
            json!({}),
            EmitOptions::default().groups(["mail"]),
        )
        .await
        .unwrap();
    assert_eq!(services(&log.take()), ["mail-a", "mail-b"]);
}

#[tokio::test]
async fn wildcards_match_like_moleculer() {
    let log = Log::default();
    let broker = listeners(&log).await;
    log.take();
    broker.emit("user.removed.soft", json!({})).await.unwrap();
    assert_eq!(
        services(&log.take()),
        ["everything"],
        "user.* does not cross a dot"
    );
    broker.emit("order.created", json!({})).await.unwrap();
    assert_eq!(services(&log.take()), ["everything", "orders"]);
    broker.emit("nobody.listens", json!({})).await.unwrap();
    assert_eq!(services(&log.take()), ["everything"]);
}

#[tokio::test]
async fn internal_events_reach_local_handlers_and_the_bus() {
    let log = Log::default();
    let broker = ServiceBroker::builder().node_id("n").build().unwrap();
    let mut bus = broker.local_events();
    broker
        .create_service(Listener {
            name: "watcher",
            group: None,
            pattern: "$services.changed",
            log: log.clone(),
        })
        .unwrap();
    broker
        .create_service(Listener {
            name: "starter",
            group: None,
            pattern: "$broker.started",
            log: log.clone(),
        })
        .unwrap();
    broker.start().await.unwrap();
    let seen = log.take();
    assert!(seen
        .iter()
        .any(|e| e.0 == "watcher" && e.1 == "$services.changed"));
    assert!(seen
        .iter()
        .any(|e| e.0 == "starter" && e.1 == "$broker.started"));
    broker.stop().await;
    let mut names = Vec::new();
    while let Ok(e) = bus.try_recv() {
        names.push(e.name);
    }
    assert!(names.contains(&"$broker.started".into()));
    assert_eq!(names.last().map(String::as_str), Some("$broker.stopped"));
}

#[tokio::test]
async fn node_service_lists_in_moleculers_shapes() {
    let broker = started(|b| {
        b.create_service(Math).unwrap();
        b.create_service(Listener {
            name: "audit",
            group: None,
            pattern: "user.*",
            log: Log::default(),
        })
        .unwrap();
    })
    .await;
    let nodes = broker.call("$node.list", Value::Null).await.unwrap();
    assert_eq!(nodes[0]["id"], "test-node");
    assert_eq!(nodes[0]["local"], true);
    assert_eq!(nodes[0]["client"]["type"], "rust");

    let all = broker.call("$node.services", Value::Null).await.unwrap();
    let names: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"$node".into()) && names.contains(&"math".into()));
    assert_eq!(
        all[0]["nodes"],
        json!(["test-node"]),
        "grouping is on by default"
    );

    let user = broker
        .call(
            "$node.services",
            json!({"skipInternal": true, "withActions": true}),
        )
        .await
        .unwrap();
    let math = user
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "math")
        .unwrap();
    assert!(math["actions"]["math.add"].is_object());
    assert!(!user
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "$node"));

    let flat = broker
        .call("$node.services", json!({"grouping": false}))
        .await
        .unwrap();
    assert_eq!(flat[0]["nodeID"], "test-node");

    let actions = broker
        .call(
            "$node.actions",
            json!({"skipInternal": "true", "withEndpoints": true}),
        )
        .await
        .unwrap();
    let add = actions
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "math.add")
        .unwrap();
    assert_eq!(add["count"], 1);
    assert_eq!(add["hasLocal"], true);
    assert_eq!(add["endpoints"][0]["nodeID"], "test-node");
    assert_eq!(add["action"]["rawName"], "add");

    let events = broker
        .call("$node.events", json!({"onlyLocal": true}))
        .await
        .unwrap();
    assert_eq!(events[0]["name"], "user.*");
    assert_eq!(events[0]["group"], "audit");

    let health = broker.call("$node.health", Value::Null).await.unwrap();
    assert!(health["cpu"]["cores"].as_u64().unwrap() >= 1);
    let options = broker.call("$node.options", Value::Null).await.unwrap();
    assert_eq!(options["nodeID"], "test-node");
    assert_eq!(options["registry"]["strategy"], "RoundRobin");

    let err = broker
        .call("$node.services", json!({"onlyLocal": "perhaps"}))
        .await
        .unwrap_err();
    assert_eq!(err.code, 422);
}

struct Versioned;

impl Service for Versioned {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("posts")
            .version(2)
            .settings(json!({"public": 1, "secret": "s", "$secureSettings": ["secret"]}))
            .raw_action("find", |_s: Arc<Self>, _c: Context| async move {
                Ok("v2 posts")
            })
            .action_def(
                ActionDef::raw("hidden", |_s: Arc<Self>, _c: Context| async move { Ok(0) })
                    .visibility(moleculer_core::Visibility::Private),
            )
    }
}

#[tokio::test]
async fn versions_prefix_names_and_secure_settings_stay_private() {
    let broker = started(|b| b.create_service(Versioned).unwrap()).await;
    assert_eq!(
        broker.call("v2.posts.find", Value::Null).await.unwrap(),
        "v2 posts"
    );
    assert_eq!(
        broker
            .call("v2.posts.hidden", Value::Null)
            .await
            .unwrap_err()
            .name,
        "ServiceNotFoundError"
    );
    let services = broker
        .call("$node.services", json!({"skipInternal": true}))
        .await
        .unwrap();
    assert_eq!(services[0]["fullName"], "v2.posts");
    assert_eq!(services[0]["settings"], json!({"public": 1}));
}

/// Starts only once `math` is available.
struct NeedsMath(Arc<AtomicUsize>);

impl Service for NeedsMath {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("needs").dependencies(["math"])
    }
    async fn started(self: Arc<Self>, broker: ServiceBroker) -> Result<()> {
        // The dependency is callable by the time this runs.
        let two = broker.call("math.add", json!({"a": 1, "b": 1})).await?;
        self.0
            .store(two.as_u64().unwrap_or(0) as usize, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn dependencies_hold_a_service_until_they_are_up() {
    let seen = Arc::new(AtomicUsize::new(0));
    // Created before its dependency: start must still succeed.
    let broker = started(|b| {
        b.create_service(NeedsMath(seen.clone())).unwrap();
        b.create_service(Math).unwrap();
    })
    .await;
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    broker
        .wait_for_services(&["needs", "math"], Some(Duration::from_secs(1)))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn wait_for_services_times_out_naming_the_missing() {
    let broker = started(|_| {}).await;
    let err = broker
        .wait_for_services(&["$node", "ghost"], Some(Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "WAITFOR_SERVICES");
    assert!(
        err.message.contains("ghost") && !err.message.contains("$node"),
        "{}",
        err.message
    );
    assert_eq!(err.data["statuses"][0]["available"], true);
}

#[tokio::test]
async fn a_service_created_after_start_becomes_callable() {
    let broker = started(|_| {}).await;
    broker.create_service(Math).unwrap();
    broker
        .wait_for_services(&["math"], Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(
        broker
            .call("math.add", json!({"a": 1, "b": 2}))
            .await
            .unwrap(),
        json!(3)
    );
    assert!(broker.destroy_service("math").await);
    assert_eq!(
        broker
            .call("math.add", json!({"a": 1, "b": 2}))
            .await
            .unwrap_err()
            .name,
        "ServiceNotAvailableError"
    );
}

#[tokio::test]
async fn stop_withdraws_actions() {
    let broker = started(|b| b.create_service(Math).unwrap()).await;
    broker.stop().await;
    assert!(!broker.is_started());
    assert_eq!(
        broker
            .call("math.add", json!({"a": 1, "b": 1}))
            .await
            .unwrap_err()
            .code,
        404
    );
}

#[test]
fn config_contradictions_fail_the_build_naming_the_option() {
    let err = ServiceBroker::builder()
        .heartbeat(10.0, 5.0)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("`heartbeatTimeout`"), "{err}");
    let err = ServiceBroker::builder()
        .strategy("Nearest", Value::Null)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("`registry.strategy`"), "{err}");
}

#[test]
fn a_service_created_twice_is_refused() {
    let broker = ServiceBroker::builder().node_id("n").build().unwrap();
    broker.create_service(Math).unwrap();
    let err = broker.create_service(Math).unwrap_err();
    assert!(err.to_string().contains("math"), "{err}");
}

/// Counts local actions and wraps every call.
struct Counting {
    actions: Arc<AtomicUsize>,
}

impl Middleware for Counting {
    fn local_action(&self, next: ActionHandler, _action: &ActionInfo) -> ActionHandler {
        let count = self.actions.clone();
        Arc::new(move |ctx| {
            count.fetch_add(1, Ordering::Relaxed);
            next(ctx)
        })
    }

    fn call(
        &self,
        next: moleculer_core::middleware::CallHandler,
    ) -> moleculer_core::middleware::CallHandler {
        Arc::new(move |mut req| {
            if req.action == "math.plus" {
                req.action = "math.add".into();
            }
            next(req)
        })
    }
}

#[tokio::test]
async fn middlewares_wrap_local_actions_and_calls() {
    let actions = Arc::new(AtomicUsize::new(0));
    let broker = ServiceBroker::builder()
        .node_id("n")
        .middleware(Counting {
            actions: actions.clone(),
        })
        .build()
        .unwrap();
    broker.create_service(Math).unwrap();
    broker.create_service(Chain).unwrap();
    broker.start().await.unwrap();
    assert_eq!(
        broker
            .call("math.plus", json!({"a": 1, "b": 2}))
            .await
            .unwrap(),
        json!(3)
    );
    assert_eq!(actions.load(Ordering::Relaxed), 1);
    broker.call("chain.down", json!({"n": 2})).await.unwrap();
    assert_eq!(
        actions.load(Ordering::Relaxed),
        4,
        "nested ctx.call goes through the call hook too"
    );
}

#[tokio::test]
async fn errors_from_handlers_keep_code_type_and_data() {
    struct Failing;
    impl Service for Failing {
        fn schema(&self) -> ServiceSchema<Self> {
            ServiceSchema::new("f").raw_action("x", |_s: Arc<Self>, _c: Context| async move {
                Err::<Value, _>(MoleculerError::client(
                    "nope",
                    422,
                    "BAD_THING",
                    json!({"f": 1}),
                ))
            })
        }
    }
    let broker = started(|b| b.create_service(Failing).unwrap()).await;
    let err = broker.call("f.x", Value::Null).await.unwrap_err();
    assert_eq!(
        (err.code, err.kind(), &err.data),
        (422, "BAD_THING", &json!({"f": 1}))
    );
}

#[tokio::test]
async fn node_id_targeting_reaches_that_node_or_names_it() {
    let broker = started(|b| b.create_service(Math).unwrap()).await;
    let here = CallOptions::default().node_id("test-node");
    assert_eq!(
        broker
            .call_with("math.add", json!({"a": 1, "b": 1}), here)
            .await
            .unwrap(),
        json!(2)
    );
    let elsewhere = CallOptions::default().node_id("node-x");
    let err = broker
        .call_with("math.add", json!({"a": 1, "b": 1}), elsewhere)
        .await
        .unwrap_err();
    assert_eq!(err.name, "ServiceNotFoundError");
    assert!(err.message.contains("'node-x'"), "{}", err.message);
}

/// Emits and broadcasts from inside a handler.
struct Announcer;

impl Service for Announcer {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("announcer").raw_action("go", |_s: Arc<Self>, ctx: Context| async move {
            ctx.set_meta("who", json!("announcer"));
            ctx.emit("user.created", json!({"via": "emit"})).await?;
            ctx.broadcast("user.created", json!({"via": "broadcast"}))
                .await?;
            Ok(Value::Null)
        })
    }
}

#[tokio::test]
async fn handlers_emit_and_broadcast_through_their_context() {
    let log = Log::default();
    let broker = listeners(&log).await;
    broker.create_service(Announcer).unwrap();
    broker
        .wait_for_services(&["announcer"], Some(Duration::from_secs(1)))
        .await
        .unwrap();
    log.take();
    broker.call("announcer.go", Value::Null).await.unwrap();
    let seen = log.take();
    let emits = seen.iter().filter(|e| e.2 == "emit").count();
    let broadcasts = seen.iter().filter(|e| e.2 == "broadcast").count();
    assert_eq!((emits, broadcasts), (3, 4), "{seen:?}");
}

/// Records its lifecycle hooks.
struct Lifecycle(Arc<Mutex<Vec<&'static str>>>);

impl Service for Lifecycle {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("lifecycle")
    }
    fn created(&self, _broker: &ServiceBroker) {
        self.0.lock().push("created");
    }
    async fn started(self: Arc<Self>, _broker: ServiceBroker) -> Result<()> {
        self.0.lock().push("started");
        Ok(())
    }
    async fn stopped(self: Arc<Self>, _broker: ServiceBroker) -> Result<()> {
        self.0.lock().push("stopped");
        Ok(())
    }
}

#[tokio::test]
async fn lifecycle_hooks_run_in_order() {
    let hooks = Arc::new(Mutex::new(Vec::new()));
    let broker = ServiceBroker::builder().node_id("n").build().unwrap();
    broker.create_service(Lifecycle(hooks.clone())).unwrap();
    assert_eq!(*hooks.lock(), ["created"]);
    broker.start().await.unwrap();
    broker.stop().await;
    assert_eq!(*hooks.lock(), ["created", "started", "stopped"]);
}

/// Fails to start.
struct Broken;

impl Service for Broken {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("broken")
    }
    async fn started(self: Arc<Self>, _broker: ServiceBroker) -> Result<()> {
        Err(MoleculerError::new(
            "no database",
            500,
            "NO_DB",
            Value::Null,
        ))
    }
}

#[tokio::test]
async fn a_failing_started_hook_fails_start_naming_the_service() {
    let broker = ServiceBroker::builder().node_id("n").build().unwrap();
    broker.create_service(Broken).unwrap();
    let err = broker.start().await.unwrap_err();
    assert!(
        err.to_string().contains("`broken`") && err.to_string().contains("no database"),
        "{err}"
    );
}
