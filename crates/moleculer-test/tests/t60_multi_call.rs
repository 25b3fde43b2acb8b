//! `mcall` and cluster-wide calls over the in-memory transporter, on paused time: results in
//! order, the first error or every outcome, one answer per node with a slow node timing out
//! and a failing node kept apart, and the first answer winning.

use std::sync::Arc;
use std::time::Duration;

use moleculer_broker::{Service, ServiceBroker, ServiceSchema};
use moleculer_core::{CallOptions, CallSpec, Context, MoleculerError, Settle};
use moleculer_test::services::Echo;
use moleculer_test::Cluster;
use serde_json::{json, Value};
use tokio::time::Instant;

/// `varied.answer`: node-1 answers at once, node-2 fails, node-3 answers after 5 s.
struct Varied;

impl Service for Varied {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("varied").raw_action(
            "answer",
            |_s: Arc<Self>, ctx: Context| async move {
                match ctx.local_node_id().as_str() {
                    "node-2" => Err(MoleculerError::client("no", 500, "BROKEN", Value::Null)),
                    "node-3" => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        Ok(json!("late"))
                    }
                    node => Ok(json!(format!("from {node}"))),
                }
            },
        )
    }
}

/// `fanout.both`: two calls in one `ctx.mcall`, answered in order.
struct Fanout;

impl Service for Fanout {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("fanout").raw_action("both", |_s: Arc<Self>, ctx: Context| async move {
            let calls = vec![
                CallSpec::new("echo.where", json!({"n": 1})),
                CallSpec::new("echo.where", json!({"n": 2})),
            ];
            let results = ctx.mcall(calls, Settle::FirstError).await?;
            let mut out = Vec::new();
            for result in results {
                let answer = result?;
                out.push(json!({"n": answer["params"]["n"], "level": ctx.level()}));
            }
            Ok::<Value, MoleculerError>(Value::from(out))
        })
    }
}

async fn cluster() -> Cluster {
    let c = Cluster::start(
        4,
        |_, b| b.prefer_local(false),
        |i, broker: &ServiceBroker| {
            if i > 0 {
                broker.create_service(Echo).unwrap();
                broker.create_service(Varied).unwrap();
            } else {
                broker.create_service(Fanout).unwrap();
            }
        },
    )
    .await;
    assert!(c.converged(Duration::from_secs(2)).await);
    c.node(0)
        .wait_for_services(&["echo", "varied"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(
        c.wait_until(Duration::from_secs(2), |c| {
            c.node(0).with_registry(|r| {
                r.actions()
                    .get("varied.answer")
                    .is_some_and(|l| l.endpoints().len() == 3)
            })
        })
        .await
    );
    c
}

#[tokio::test(start_paused = true)]
async fn mcall_answers_in_order_and_stops_at_the_first_error_unless_settled() {
    let c = cluster().await;
    let broker = c.node(0);
    let calls = || {
        vec![
            CallSpec::new("echo.where", json!({"i": 0})),
            CallSpec::new("echo.fail", json!({})),
            CallSpec::new("echo.where", json!({"i": 2})),
        ]
    };
    let first_error = broker.mcall(calls(), Settle::FirstError).await;
    assert_eq!(first_error.len(), 1);
    assert_eq!(first_error[0].as_ref().unwrap_err().code, 422);

    let settled = broker.mcall(calls(), Settle::All).await;
    assert_eq!(settled.len(), 3);
    assert_eq!(settled[0].as_ref().unwrap()["params"]["i"], 0);
    assert_eq!(settled[1].as_ref().unwrap_err().kind(), "ECHO_FAILED");
    assert_eq!(settled[2].as_ref().unwrap()["params"]["i"], 2);

    let ok = broker
        .mcall(
            vec![
                CallSpec::new("echo.where", json!({"i": "a"})),
                CallSpec::new("echo.where", json!({"i": "b"}))
                    .options(CallOptions::default().node_id("node-3")),
            ],
            Settle::FirstError,
        )
        .await;
    assert_eq!(ok[0].as_ref().unwrap()["params"]["i"], "a");
    assert_eq!(ok[1].as_ref().unwrap()["node"], "node-3");

    // The named form: each result under its name.
    let named = broker
        .mcall_named(
            vec![
                (
                    "first".to_owned(),
                    CallSpec::new("echo.where", json!({"i": 1})),
                ),
                ("broken".to_owned(), CallSpec::new("echo.fail", json!({}))),
            ],
            Settle::All,
        )
        .await;
    assert_eq!(named[0].0, "first");
    assert_eq!(named[0].1.as_ref().unwrap()["params"]["i"], 1);
    assert_eq!(named[1].0, "broken");
    assert!(named[1].1.is_err());
    let failed = broker
        .mcall_named(
            vec![
                ("ok".to_owned(), CallSpec::new("echo.where", json!({}))),
                ("broken".to_owned(), CallSpec::new("echo.fail", json!({}))),
            ],
            Settle::FirstError,
        )
        .await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, "broken", "the failing call is named");

    // From a handler: the calls are children of its context.
    let both = broker.call("fanout.both", json!({})).await.unwrap();
    assert_eq!(both, json!([{"n": 1, "level": 1}, {"n": 2, "level": 1}]));
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn call_all_keeps_each_node_answer_error_or_timeout() {
    let c = cluster().await;
    let started = Instant::now();
    let mut outcomes = c
        .node(0)
        .call_all(
            "varied.answer",
            json!({}),
            &CallOptions::default().timeout(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "bounded by the timeout"
    );
    outcomes.sort_by(|a, b| a.node_id.as_str().cmp(b.node_id.as_str()));
    let nodes: Vec<&str> = outcomes.iter().map(|o| o.node_id.as_str()).collect();
    assert_eq!(nodes, ["node-1", "node-2", "node-3"]);
    assert_eq!(outcomes[0].result.as_ref().unwrap(), "from node-1");
    assert_eq!(outcomes[1].result.as_ref().unwrap_err().kind(), "BROKEN");
    assert_eq!(
        outcomes[2].result.as_ref().unwrap_err().name,
        "RequestTimeoutError"
    );

    // Every node answering: all three, from their own nodes.
    let outcomes = c
        .node(0)
        .call_all("echo.where", json!({}), &CallOptions::default())
        .await
        .unwrap();
    let mut served: Vec<String> = outcomes
        .iter()
        .map(|o| {
            o.result.as_ref().unwrap()["node"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    served.sort();
    assert_eq!(served, ["node-1", "node-2", "node-3"]);

    let none = c
        .node(0)
        .call_all("nobody.here", json!({}), &CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(none.name, "ServiceNotFoundError");
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn call_first_takes_the_first_success_and_drops_the_rest() {
    let c = cluster().await;
    let started = Instant::now();
    let (node, value) = c
        .node(0)
        .call_first("varied.answer", json!({}), &CallOptions::default())
        .await
        .unwrap();
    assert_eq!(node.as_str(), "node-1");
    assert_eq!(value, "from node-1");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the slow node is not waited for"
    );

    // Only failures: the error comes back.
    let err = c
        .node(0)
        .call_first("echo.fail", json!({}), &CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "ECHO_FAILED");
    c.stop_all().await;
}
