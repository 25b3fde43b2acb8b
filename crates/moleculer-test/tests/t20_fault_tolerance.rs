//! Fault tolerance on the in-memory bus, on paused time: retries with backoff inside the
//! call's timeout, the circuit breaker's open → half-open → closed cycle with its events,
//! bulkheads, fallbacks and timeouts.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moleculer_broker::{ActionDef, Service, ServiceBroker, ServiceBrokerBuilder, ServiceSchema};
use moleculer_core::{
    BulkheadOptions, CallOptions, CircuitBreakerOptions, Context, Fallback, MoleculerError,
    RetryPolicy,
};
use moleculer_test::services::Recorder;
use moleculer_test::Cluster;
use serde_json::{json, Value};
use tokio::time::Instant;

/// `flaky.work {ms}` waits `ms`, then fails with a retryable 500 while its node's switch is on;
/// it counts its runs. `flaky.invalid` always fails with a 422.
struct Flaky {
    failing: Arc<AtomicBool>,
    runs: Arc<AtomicUsize>,
}

impl Service for Flaky {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("flaky")
            .raw_action("work", |s: Arc<Self>, ctx: Context| async move {
                s.runs.fetch_add(1, Ordering::SeqCst);
                let ms = ctx.params()["ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                if s.failing.load(Ordering::SeqCst) {
                    return Err(MoleculerError::retryable(
                        "flaky failed",
                        500,
                        "FLAKY",
                        Value::Null,
                    ));
                }
                Ok(json!(ctx.local_node_id().as_str()))
            })
            .raw_action("invalid", |s: Arc<Self>, _ctx: Context| async move {
                s.runs.fetch_add(1, Ordering::SeqCst);
                Err::<Value, _>(MoleculerError::validation("bad input", Value::Null))
            })
    }
}

/// Records the `$circuit-breaker.*` events its node receives (a subscriber, so the caller's
/// broadcasts reach it over the network).
struct Watcher {
    seen: Recorder,
}

impl Service for Watcher {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("watcher").event(
            "$circuit-breaker.*",
            |s: Arc<Self>, ctx: Context| async move {
                let name = ctx.event_name().unwrap_or_default().to_owned();
                s.seen.push(json!([name, ctx.params()]));
                Ok(())
            },
        )
    }
}

/// The breaker events a watcher saw, as (name, payload).
fn breaker_events(seen: &Recorder) -> Vec<(String, Value)> {
    seen.take()
        .into_iter()
        .map(|e| (e[0].as_str().unwrap_or_default().to_owned(), e[1].clone()))
        .collect()
}

/// One switch and one run counter per node.
struct Switches {
    failing: Vec<Arc<AtomicBool>>,
    runs: Vec<Arc<AtomicUsize>>,
    /// What the watcher on the last node saw.
    seen: Recorder,
}

impl Switches {
    fn new(n: usize) -> Self {
        Self {
            failing: (0..n).map(|_| Arc::new(AtomicBool::new(false))).collect(),
            runs: (0..n).map(|_| Arc::new(AtomicUsize::new(0))).collect(),
            seen: Recorder::default(),
        }
    }
    fn fail(&self, i: usize, on: bool) {
        self.failing[i].store(on, Ordering::SeqCst);
    }
    fn runs(&self, i: usize) -> usize {
        self.runs[i].load(Ordering::SeqCst)
    }
}

/// A cluster of `n` nodes where nodes 1.. serve `flaky`, node 0 calls; `configure` sets the
/// caller's options (node 0) and everyone's.
async fn cluster(
    n: usize,
    switches: &Switches,
    configure: impl Fn(usize, ServiceBrokerBuilder) -> ServiceBrokerBuilder,
) -> Cluster {
    let (failing, runs) = (switches.failing.clone(), switches.runs.clone());
    let seen = switches.seen.clone();
    let c = Cluster::start(
        n,
        move |i, b| configure(i, b.prefer_local(false)),
        move |i, b: &ServiceBroker| {
            if i > 0 {
                b.create_service(Flaky {
                    failing: failing[i].clone(),
                    runs: runs[i].clone(),
                })
                .unwrap();
            }
            if i == n - 1 {
                b.create_service(Watcher { seen: seen.clone() }).unwrap();
            }
        },
    )
    .await;
    assert!(c.converged(Duration::from_secs(2)).await);
    c.node(0)
        .wait_for_services(&["flaky", "watcher"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    c
}

fn retries(count: u32) -> RetryPolicy {
    RetryPolicy {
        enabled: Some(true),
        retries: Some(count),
        delay: Some(100),
        max_delay: Some(1000),
        factor: Some(2.0),
        jitter: Some(false),
        keep_node_pin: None,
    }
}

fn with_retries(
    policy: RetryPolicy,
) -> impl Fn(usize, ServiceBrokerBuilder) -> ServiceBrokerBuilder {
    move |_, b| b.retry_policy(policy)
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_is_retried_on_another_node_after_the_delay() {
    let s = Switches::new(3);
    let c = cluster(3, &s, with_retries(retries(3))).await;
    s.fail(1, true);
    for _ in 0..4 {
        let started = Instant::now();
        let served = c.node(0).call("flaky.work", json!({})).await.unwrap();
        assert_eq!(served, "node-2", "the retry avoids the node that failed");
        let waited = started.elapsed();
        assert!(
            waited == Duration::ZERO || waited == Duration::from_millis(100),
            "either straight to node-2, or node-1 then one 100 ms backoff: {waited:?}"
        );
    }
    assert!(s.runs(1) >= 1, "node-1 was tried");
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_by_the_factor_and_gives_up_after_the_retries() {
    let s = Switches::new(2);
    let c = cluster(2, &s, with_retries(retries(3))).await;
    s.fail(1, true);
    let started = Instant::now();
    let err = c.node(0).call("flaky.work", json!({})).await.unwrap_err();
    assert_eq!(err.kind(), "FLAKY");
    assert_eq!(s.runs(1), 4, "one attempt and three retries");
    // Waits of 100, 200 and 400 ms between the attempts.
    assert_eq!(started.elapsed(), Duration::from_millis(700));
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn jittered_waits_stay_between_half_and_all_of_the_backoff() {
    let s = Switches::new(2);
    let mut policy = retries(3);
    policy.jitter = Some(true);
    let c = cluster(2, &s, with_retries(policy)).await;
    s.fail(1, true);
    for _ in 0..5 {
        let started = Instant::now();
        c.node(0).call("flaky.work", json!({})).await.unwrap_err();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(350) && waited <= Duration::from_millis(700),
            "three waits of 50–100, 100–200 and 200–400 ms: {waited:?}"
        );
    }
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn all_attempts_share_the_calls_timeout() {
    let s = Switches::new(2);
    let mut policy = retries(5);
    policy.delay = Some(10);
    let c = cluster(2, &s, with_retries(policy)).await;
    s.fail(1, true);
    let started = Instant::now();
    let opts = CallOptions::default().timeout(Duration::from_millis(250));
    let err = c
        .node(0)
        .call_with("flaky.work", json!({"ms": 200}), opts)
        .await
        .unwrap_err();
    // The first attempt fails at 200 ms; the retry starts at 210 ms with 40 ms left and times
    // out at 250 ms. Moleculer would give every attempt a fresh 250 ms.
    assert_eq!(err.name, "RequestTimeoutError");
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    assert_eq!(s.runs(1), 2);
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn errors_that_are_not_retryable_are_not_retried() {
    let s = Switches::new(2);
    let c = cluster(2, &s, with_retries(retries(3))).await;
    let err = c
        .node(0)
        .call("flaky.invalid", json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code, 422);
    assert_eq!(s.runs(1), 1);
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_retry_check_decides_which_errors_are_retried() {
    let s = Switches::new(2);
    // Retry validation errors (the 422 of `flaky.invalid`), and nothing marked retryable.
    let c = cluster(2, &s, |_, b| {
        b.retry_policy(retries(2))
            .retry_check(|err: &MoleculerError| err.code == 422)
    })
    .await;
    let err = c
        .node(0)
        .call("flaky.invalid", json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code, 422);
    assert_eq!(s.runs(1), 3, "one attempt and two retries");
    s.fail(1, true);
    let err = c.node(0).call("flaky.work", json!({})).await.unwrap_err();
    assert_eq!(err.code, 500);
    assert_eq!(
        s.runs(1),
        4,
        "a retryable 500 the check refuses is not retried"
    );
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn retries_are_off_unless_enabled_and_a_calls_count_does_not_enable_them() {
    let s = Switches::new(2);
    let c = cluster(2, &s, |_, b| b).await;
    s.fail(1, true);
    let opts = CallOptions::default().retries(3);
    c.node(0)
        .call_with("flaky.work", json!({}), opts)
        .await
        .unwrap_err();
    assert_eq!(s.runs(1), 1);
    // A call's own policy enables them, and its count wins.
    let opts = CallOptions::default().retry_policy(retries(5)).retries(1);
    c.node(0)
        .call_with("flaky.work", json!({}), opts)
        .await
        .unwrap_err();
    assert_eq!(s.runs(1), 3);
    c.stop_all().await;
}

/// `pinned.work` declares its own retry policy: callers whose broker has retries off apply it.
struct Declares {
    runs: Arc<AtomicUsize>,
}

impl Service for Declares {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("declares").action_def(
            ActionDef::raw("work", |s: Arc<Self>, _ctx: Context| async move {
                let n = s.runs.fetch_add(1, Ordering::SeqCst);
                if n < 2 {
                    return Err(MoleculerError::retryable(
                        "not yet",
                        503,
                        "NOT_YET",
                        Value::Null,
                    ));
                }
                Ok(json!(n))
            })
            .retry_policy(RetryPolicy {
                enabled: Some(true),
                retries: Some(2),
                delay: Some(50),
                jitter: Some(false),
                ..RetryPolicy::default()
            }),
        )
    }
}

#[tokio::test(start_paused = true)]
async fn an_actions_retry_policy_travels_to_its_callers() {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let c = Cluster::start(
        2,
        |_, b| b,
        move |i, b| {
            if i == 1 {
                b.create_service(Declares { runs: r.clone() }).unwrap();
            }
        },
    )
    .await;
    c.node(0)
        .wait_for_services(&["declares"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        c.node(0).call("declares.work", json!({})).await.unwrap(),
        json!(2)
    );
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(150),
        "waits of 50 and 100 ms"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_pinned_call_is_retried_elsewhere_unless_the_pin_is_kept() {
    let s = Switches::new(3);
    let c = cluster(3, &s, with_retries(retries(2))).await;
    s.fail(1, true);
    let pinned = CallOptions::default().node_id("node-1");
    let served = c
        .node(0)
        .call_with("flaky.work", json!({}), pinned.clone())
        .await
        .unwrap();
    assert_eq!(served, "node-2", "as Moleculer: retries drop the pin");
    let before = s.runs(1);
    let mut keep = retries(2);
    keep.keep_node_pin = Some(true);
    let err = c
        .node(0)
        .call_with("flaky.work", json!({}), pinned.retry_policy(keep))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "FLAKY");
    assert_eq!(s.runs(1) - before, 3, "every attempt on the pinned node");
    c.stop_all().await;
}

fn breaker() -> CircuitBreakerOptions {
    CircuitBreakerOptions {
        enabled: Some(true),
        threshold: Some(0.5),
        window_time: Some(60.0),
        min_request_count: Some(4),
        half_open_time: Some(1000),
    }
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_half_opens_and_closes_with_its_events() {
    let s = Switches::new(2);
    let c = cluster(2, &s, |i, b| {
        if i == 0 {
            b.circuit_breaker(breaker())
        } else {
            b
        }
    })
    .await;
    s.fail(1, true);
    for _ in 0..4 {
        c.node(0).call("flaky.work", json!({})).await.unwrap_err();
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    let events = breaker_events(&s.seen);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "$circuit-breaker.opened");
    assert_eq!(
        events[0].1,
        json!({"nodeID": "node-1", "service": "flaky", "action": "flaky.work", "failures": 4, "count": 4, "rate": 1.0})
    );
    // Open: the only endpoint is switched off, nothing reaches node-1.
    let err = c.node(0).call("flaky.work", json!({})).await.unwrap_err();
    assert_eq!(err.name, "ServiceNotAvailableError");
    assert_eq!(s.runs(1), 4);
    // After halfOpenTime one probe may go; it fails: open again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    c.node(0).call("flaky.work", json!({})).await.unwrap_err();
    assert_eq!(s.runs(1), 5);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let names: Vec<String> = breaker_events(&s.seen).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        ["$circuit-breaker.half-opened", "$circuit-breaker.opened"]
    );
    // Next probe succeeds: closed, and calls flow again.
    s.fail(1, false);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        c.node(0).call("flaky.work", json!({})).await.unwrap(),
        "node-1"
    );
    assert_eq!(
        c.node(0).call("flaky.work", json!({})).await.unwrap(),
        "node-1"
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    let events = breaker_events(&s.seen);
    let names: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        ["$circuit-breaker.half-opened", "$circuit-breaker.closed"]
    );
    assert_eq!(
        events[1].1,
        json!({"nodeID": "node-1", "service": "flaky", "action": "flaky.work"})
    );
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_breaker_check_decides_which_errors_count_as_failures() {
    let s = Switches::new(2);
    // Count validation errors as failures, and not the 500s.
    let c = cluster(2, &s, |i, b| {
        if i == 0 {
            b.circuit_breaker(breaker())
                .circuit_breaker_check(|err: &MoleculerError| err.code == 422)
        } else {
            b
        }
    })
    .await;
    s.fail(1, true);
    for _ in 0..6 {
        c.node(0).call("flaky.work", json!({})).await.unwrap_err();
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(breaker_events(&s.seen).is_empty(), "500s do not count");
    for _ in 0..6 {
        c.node(0)
            .call("flaky.invalid", json!({}))
            .await
            .unwrap_err();
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    let names: Vec<String> = breaker_events(&s.seen).into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["$circuit-breaker.opened"]);
    let err = c
        .node(0)
        .call("flaky.invalid", json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.name, "ServiceNotAvailableError");
    // The breaker is per endpoint: `flaky.work` on the same node still goes through.
    let err = c.node(0).call("flaky.work", json!({})).await.unwrap_err();
    assert_eq!(err.code, 500);
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn below_the_minimum_count_or_the_threshold_the_breaker_stays_closed() {
    let s = Switches::new(2);
    let c = cluster(2, &s, |i, b| {
        if i == 0 {
            b.circuit_breaker(breaker())
        } else {
            b
        }
    })
    .await;
    // Three failures: below minRequestCount (4), whatever the rate.
    s.fail(1, true);
    for _ in 0..3 {
        c.node(0).call("flaky.work", json!({})).await.unwrap_err();
    }
    tokio::time::sleep(Duration::from_secs(61)).await;
    // A new window: one failure in four is under the threshold (0.5).
    c.node(0).call("flaky.work", json!({})).await.unwrap_err();
    s.fail(1, false);
    for _ in 0..3 {
        c.node(0).call("flaky.work", json!({})).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(breaker_events(&s.seen).is_empty());
    assert_eq!(s.runs(1), 7, "every call reached node-1");
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_node_trips_the_breaker_through_the_callers_own_timeouts() {
    let s = Switches::new(3);
    let c = cluster(3, &s, |i, b| {
        if i == 0 {
            b.circuit_breaker(breaker())
                .request_timeout(Duration::from_millis(100))
        } else {
            b
        }
    })
    .await;
    // node-1 stops answering (a frozen process): Moleculer's breaker would never notice.
    c.silence(1);
    let mut timeouts = 0;
    for _ in 0..12 {
        match c.node(0).call("flaky.work", json!({})).await {
            Ok(served) => assert_eq!(served, "node-2"),
            Err(err) => {
                assert_eq!(err.name, "RequestTimeoutError");
                timeouts += 1;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    let opened: Vec<Value> = breaker_events(&s.seen)
        .into_iter()
        .filter(|e| e.0 == "$circuit-breaker.opened")
        .map(|e| e.1)
        .collect();
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0]["nodeID"], "node-1");
    assert!(
        (4..12).contains(&timeouts),
        "{timeouts} timeouts before node-1 was switched off"
    );
    c.stop_all().await;
}

/// `gate.pass {ms}` holds a slot for `ms`; at most one at a time, one waiting.
struct Gate {
    runs: Arc<AtomicUsize>,
}

impl Service for Gate {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("gate").action_def(
            ActionDef::raw("pass", |s: Arc<Self>, ctx: Context| async move {
                s.runs.fetch_add(1, Ordering::SeqCst);
                let ms = ctx.params()["ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(json!(ms))
            })
            .bulkhead(BulkheadOptions {
                enabled: Some(true),
                concurrency: Some(1),
                max_queue_size: Some(1),
            }),
        )
    }
}

#[tokio::test(start_paused = true)]
async fn a_bulkhead_queues_then_refuses_with_queue_is_full_over_the_network() {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let c = Cluster::start(
        2,
        |_, b| b,
        move |i, b| {
            if i == 1 {
                b.create_service(Gate { runs: r.clone() }).unwrap();
            }
        },
    )
    .await;
    let caller = c.node(0).clone();
    caller
        .wait_for_services(&["gate"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    let started = Instant::now();
    let first = tokio::spawn(caller.call("gate.pass", json!({"ms": 100})));
    let second = tokio::spawn(caller.call("gate.pass", json!({"ms": 50})));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let err = caller
        .call("gate.pass", json!({"ms": 1}))
        .await
        .unwrap_err();
    assert_eq!(
        (err.name.as_str(), err.code, err.retryable),
        ("QueueIsFullError", 429, true)
    );
    assert_eq!(err.node_id.as_deref(), Some("node-1"));
    assert_eq!(first.await.unwrap().unwrap(), json!(100));
    assert_eq!(second.await.unwrap().unwrap(), json!(50));
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(150),
        "the second waited for the first"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    c.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_fallback_answers_a_final_error_and_a_missing_endpoint() {
    let s = Switches::new(2);
    let c = cluster(2, &s, with_retries(retries(1))).await;
    s.fail(1, true);
    let value = CallOptions::default().fallback(Fallback::Value(json!("cached answer")));
    assert_eq!(
        c.node(0)
            .call_with("flaky.work", json!({}), value.clone())
            .await
            .unwrap(),
        json!("cached answer")
    );
    assert_eq!(s.runs(1), 2, "the fallback answers only after the retries");
    let from_error =
        CallOptions::default().fallback(Fallback::from_fn(|err| Ok(json!({"was": err.kind()}))));
    assert_eq!(
        c.node(0)
            .call_with("flaky.work", json!({}), from_error)
            .await
            .unwrap(),
        json!({"was": "FLAKY"})
    );
    // Beyond Moleculer: no endpoint at all is answered by the fallback too.
    assert_eq!(
        c.node(0)
            .call_with("nobody.home", json!({}), value)
            .await
            .unwrap(),
        json!("cached answer")
    );
    c.stop_all().await;
}

/// `safe.read` fails, but the service's own fallback answers for it.
struct Safe;

impl Service for Safe {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("safe").action_def(
            ActionDef::raw("read", |_s: Arc<Self>, _ctx: Context| async move {
                Err::<Value, _>(MoleculerError::retryable(
                    "db down",
                    503,
                    "DB_DOWN",
                    Value::Null,
                ))
            })
            .fallback(
                |_s: Arc<Self>, ctx: Context, err: MoleculerError| async move {
                    Ok(json!({"fallback": err.kind(), "node": ctx.local_node_id().as_str()}))
                },
            ),
        )
    }
}

#[tokio::test(start_paused = true)]
async fn an_actions_fallback_turns_its_failure_into_a_reply_on_the_serving_node() {
    let c = Cluster::start(
        2,
        |_, b| b,
        |i, b| {
            if i == 1 {
                b.create_service(Safe).unwrap();
            }
        },
    )
    .await;
    c.node(0)
        .wait_for_services(&["safe"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(
        c.node(0).call("safe.read", json!({})).await.unwrap(),
        json!({"fallback": "DB_DOWN", "node": "node-1"})
    );
    c.stop_all().await;
}

/// `slowpoke.wait {ms}` declares a 100 ms timeout of its own.
struct Slowpoke;

impl Service for Slowpoke {
    fn schema(&self) -> ServiceSchema<Self> {
        ServiceSchema::new("slowpoke").action_def(
            ActionDef::raw("wait", |_s: Arc<Self>, ctx: Context| async move {
                let ms = ctx.params()["ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(json!(ms))
            })
            .timeout(Duration::from_millis(100)),
        )
    }
}

#[tokio::test(start_paused = true)]
async fn a_callees_action_timeout_binds_its_callers_and_a_zero_call_timeout_lifts_it() {
    let c = Cluster::start(
        2,
        |_, b| b,
        |i, b| {
            if i == 1 {
                b.create_service(Slowpoke).unwrap();
            }
        },
    )
    .await;
    c.node(0)
        .wait_for_services(&["slowpoke"], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    let started = Instant::now();
    let err = c
        .node(0)
        .call("slowpoke.wait", json!({"ms": 300}))
        .await
        .unwrap_err();
    assert_eq!(err.name, "RequestTimeoutError");
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(100),
        "the timeout from the callee's INFO"
    );
    let off = CallOptions::default().timeout(Duration::ZERO);
    assert_eq!(
        c.node(0)
            .call_with("slowpoke.wait", json!({"ms": 300}), off)
            .await
            .unwrap(),
        json!(300)
    );
    c.stop_all().await;
}
