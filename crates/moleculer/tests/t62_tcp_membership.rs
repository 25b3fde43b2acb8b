//! TCP membership with real processes on 127.0.0.1: a node missing from `urls` that restarts
//! under its node id is back within one gossip period; a graceful stop reaches every peer as
//! expected (`unexpected: false`), 20 times out of 20; healthy nodes do not flap while others
//! join and leave.

mod support;

use std::time::Duration;

use moleculer::ServiceBroker;
use serde_json::Value;
use support::{common_env, local_broker, serving, tcp_urls, Node};
use tokio::sync::broadcast::Receiver;

/// The gossip period of the demo nodes (TCP's default).
const GOSSIP_PERIOD: Duration = Duration::from_secs(2);

/// Every `$node.connected` / `$node.disconnected` received so far, as (event, node, flag).
fn membership_events(
    rx: &mut Receiver<moleculer::broker::LocalEvent>,
) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        let flag = match e.name.as_str() {
            "$node.connected" => e.payload["reconnected"].clone(),
            "$node.disconnected" => e.payload["unexpected"].clone(),
            _ => continue,
        };
        let node = e.payload["node"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        out.push((e.name, node, flag));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_missing_from_urls_rejoins_within_one_gossip_period_after_a_restart() {
    // The seeds are listed; node-3 is not: it joins through them, on a port of its own.
    let env = common_env(&tcp_urls(&["seed-1", "seed-2", "caller"]));
    let _seeds = [Node::start("seed-1", &env), Node::start("seed-2", &env)];
    let caller = local_broker("caller", &env).await;
    let mut node = Node::start("node-3", &env);
    serving(&caller, "node-3", Duration::from_secs(20))
        .await
        .expect("node-3 joins through the seeds");
    for how in ["SIGKILL", "SIGTERM"] {
        if how == "SIGKILL" {
            node.kill().await;
        } else {
            node.terminate().await;
        }
        node = Node::start("node-3", &env);
        let back = serving(&caller, "node-3", Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("node-3 serves again after {how} and a restart"));
        println!("node-3 (not in urls) serves again {back:?} after its restart ({how})");
        assert!(back < GOSSIP_PERIOD, "back after {back:?}");
    }
    caller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_reaches_every_peer_as_expected_twenty_times_out_of_twenty() {
    let env = common_env(&tcp_urls(&["observer-1", "observer-2", "subject"]));
    let observers: Vec<ServiceBroker> = vec![
        local_broker("observer-1", &env).await,
        local_broker("observer-2", &env).await,
    ];
    let mut events: Vec<_> = observers.iter().map(ServiceBroker::local_events).collect();
    for run in 1..=20 {
        let mut subject = Node::start("subject", &env);
        for o in &observers {
            serving(o, "subject", Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("run {run}: the subject joins"));
        }
        subject.terminate().await;
        for (o, rx) in observers.iter().zip(&mut events) {
            let gone =
                support::wait(Duration::from_secs(5), || !support::available(o, "subject")).await;
            assert!(
                gone.is_some(),
                "run {run}: {} dropped the subject",
                o.node_id()
            );
            let left: Vec<Value> = membership_events(rx)
                .into_iter()
                .filter(|(name, node, _)| name == "$node.disconnected" && node == "subject")
                .map(|(_, _, unexpected)| unexpected)
                .collect();
            assert_eq!(
                left,
                [Value::Bool(false)],
                "run {run}: {} saw the stop as {left:?}",
                o.node_id()
            );
        }
    }
    for o in observers {
        o.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_nodes_do_not_flap_while_others_join_and_leave() {
    let env = common_env(&tcp_urls(&["steady-1", "steady-2", "listed", "caller"]));
    let _steady = [Node::start("steady-1", &env), Node::start("steady-2", &env)];
    let caller = local_broker("caller", &env).await;
    for id in ["steady-1", "steady-2"] {
        serving(&caller, id, Duration::from_secs(20))
            .await
            .expect("steady nodes serve");
    }
    let mut rx = caller.local_events();
    // One joiner listed in urls, one not; each joins and leaves three times, by SIGTERM and by
    // SIGKILL.
    for round in 0..3 {
        for id in ["listed", "unlisted"] {
            let mut joiner = Node::start(id, &env);
            serving(&caller, id, Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("round {round}: {id} joins"));
            if round % 2 == 0 {
                joiner.terminate().await;
            } else {
                joiner.kill().await;
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = membership_events(&mut rx);
    let flaps: Vec<_> = seen
        .iter()
        .filter(|(_, node, _)| node.starts_with("steady"))
        .collect();
    assert!(flaps.is_empty(), "steady nodes flapped: {flaps:?}");
    let joins = seen
        .iter()
        .filter(|(name, _, _)| name == "$node.connected")
        .count();
    let leaves = seen
        .iter()
        .filter(|(name, _, _)| name == "$node.disconnected")
        .count();
    assert_eq!((joins, leaves), (6, 6), "{seen:?}");
    caller.stop().await;
}
