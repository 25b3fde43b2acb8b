//! Tests of the registry: routing, visibility, node changes, events.

use super::*;
use crate::listings::{self, ListOptions};
use moleculer_core::service_info::{ActionInfo, EventInfo, Version};
use serde_json::{json, Map};

type Reg = Registry<&'static str, &'static str>;

fn registry(prefer_local: bool) -> Reg {
    let opts = RegistryOptions {
        prefer_local,
        ..Default::default()
    };
    Registry::new(Node::new("local".into(), true), opts)
}

fn service(
    name: &str,
    version: Option<Version>,
    actions: &[(&str, Option<Visibility>)],
    events: &[(&str, Option<&str>)],
) -> ServiceInfo {
    let full_name = moleculer_core::service_info::versioned_name(name, version.as_ref());
    let mut info = ServiceInfo {
        name: name.into(),
        version,
        full_name: full_name.clone(),
        ..Default::default()
    };
    for (raw, visibility) in actions {
        let name = format!("{full_name}.{raw}");
        info.actions.insert(
            name.clone(),
            ActionInfo {
                name,
                raw_name: Some((*raw).into()),
                visibility: *visibility,
                ..Default::default()
            },
        );
    }
    for (event, group) in events {
        info.events.insert(
            (*event).into(),
            EventInfo {
                name: (*event).into(),
                group: group.map(Into::into),
                ..Default::default()
            },
        );
    }
    info
}

fn remote_info(seq: u64, instance: &str, services: Vec<ServiceInfo>) -> NodeInfo {
    NodeInfo {
        services,
        seq,
        instance_id: instance.into(),
        hostname: "h".into(),
        ..Default::default()
    }
}

fn local(reg: &mut Reg, info: ServiceInfo, handler: &'static str) {
    let actions = info.actions.keys().map(|k| (k.clone(), handler)).collect();
    let events = info.events.keys().map(|k| (k.clone(), handler)).collect();
    reg.register_local_service(&LocalService {
        info,
        actions,
        events,
    })
    .unwrap();
}

fn pick(reg: &Reg, action: &str) -> Result<String, Miss> {
    reg.next_action_endpoint(action, &SelectionContext::empty())
        .map(|e| e.node_id.to_string())
}

#[test]
fn versioned_actions_route_to_remote_nodes_in_turn() {
    let mut reg = registry(true);
    let svc = service("posts", Some(Version::Number(2)), &[("find", None)], &[]);
    for node in ["n1", "n2"] {
        let change = reg
            .process_node_info(&node.into(), remote_info(2, node, vec![svc.clone()]), 0.0)
            .unwrap();
        assert_eq!(change, NodeChange::Connected { reconnected: false });
    }
    let picks: Vec<_> = (0..4)
        .map(|_| pick(&reg, "v2.posts.find").unwrap())
        .collect();
    assert_eq!(picks, ["n1", "n2", "n1", "n2"]);
    assert!(reg.has_service("v2.posts"));
    assert_eq!(pick(&reg, "posts.find"), Err(Miss::NotFound));
}

#[test]
fn prefer_local_keeps_calls_here_unless_disabled() {
    for (prefer, expect_remote) in [(true, false), (false, true)] {
        let mut reg = registry(prefer);
        local(
            &mut reg,
            service("math", None, &[("add", None)], &[]),
            "local-add",
        );
        reg.process_node_info(
            &"n1".into(),
            remote_info(2, "i", vec![service("math", None, &[("add", None)], &[])]),
            0.0,
        )
        .unwrap();
        let picks: Vec<_> = (0..4).map(|_| pick(&reg, "math.add").unwrap()).collect();
        assert_eq!(
            picks.iter().any(|n| n == "n1"),
            expect_remote,
            "prefer_local={prefer}: {picks:?}"
        );
    }
}

#[test]
fn internal_actions_stay_local() {
    let mut reg = registry(false);
    local(
        &mut reg,
        service("$node", None, &[("list", None)], &[]),
        "h",
    );
    reg.process_node_info(
        &"n1".into(),
        remote_info(2, "i", vec![service("$node", None, &[("list", None)], &[])]),
        0.0,
    )
    .unwrap();
    for _ in 0..4 {
        assert_eq!(pick(&reg, "$node.list").unwrap(), "local");
    }
    assert_eq!(
        reg.action_endpoint_on_node("$node.list", "n1")
            .unwrap()
            .node_id,
        "n1"
    );
}

#[test]
fn visibility_rules() {
    let mut reg = registry(true);
    let actions = [
        ("pub", Some(Visibility::Public)),
        ("prot", Some(Visibility::Protected)),
        ("priv", Some(Visibility::Private)),
    ];
    local(&mut reg, service("a", None, &actions, &[]), "h");
    reg.process_node_info(
        &"n1".into(),
        remote_info(2, "i", vec![service("b", None, &actions, &[])]),
        0.0,
    )
    .unwrap();
    assert!(pick(&reg, "a.pub").is_ok());
    assert!(
        pick(&reg, "a.prot").is_ok(),
        "protected is callable on its own node"
    );
    assert_eq!(pick(&reg, "a.priv"), Err(Miss::NotFound));
    assert!(pick(&reg, "b.pub").is_ok());
    assert_eq!(
        pick(&reg, "b.prot"),
        Err(Miss::NotFound),
        "a remote protected action is not registered"
    );
    assert_eq!(pick(&reg, "b.priv"), Err(Miss::NotFound));
}

#[test]
fn a_disconnected_node_loses_its_endpoints_and_comes_back() {
    let mut reg = registry(true);
    let svc = service("math", None, &[("add", None)], &[("user.created", None)]);
    reg.process_node_info(&"n1".into(), remote_info(2, "i1", vec![svc.clone()]), 0.0)
        .unwrap();
    assert!(reg.node_disconnected("n1", 5.0).is_some());
    assert_eq!(pick(&reg, "math.add"), Err(Miss::NotAvailable));
    assert!(reg
        .balanced_event_endpoints("user.created", None, &SelectionContext::empty())
        .next()
        .is_none());
    assert!(
        reg.node_disconnected("n1", 6.0).is_none(),
        "already offline"
    );
    assert!(
        !reg.heartbeat("n1", Some(3.0), 7.0),
        "an offline node must be asked for INFO"
    );
    let change = reg
        .process_node_info(&"n1".into(), remote_info(2, "i1", vec![svc]), 8.0)
        .unwrap();
    assert_eq!(change, NodeChange::Connected { reconnected: true });
    assert_eq!(pick(&reg, "math.add").unwrap(), "n1");
}

#[test]
fn seq_and_instance_decide_re_registration() {
    let mut reg = registry(true);
    reg.process_node_info(
        &"n1".into(),
        remote_info(2, "i1", vec![service("a", None, &[("x", None)], &[])]),
        0.0,
    )
    .unwrap();
    // Same seq, same instance: the service list is not re-read.
    reg.process_node_info(
        &"n1".into(),
        remote_info(2, "i1", vec![service("b", None, &[("y", None)], &[])]),
        0.0,
    )
    .unwrap();
    assert!(pick(&reg, "a.x").is_ok());
    assert_eq!(pick(&reg, "b.y"), Err(Miss::NotFound));
    // Higher seq: replaced.
    let change = reg
        .process_node_info(
            &"n1".into(),
            remote_info(3, "i1", vec![service("b", None, &[("y", None)], &[])]),
            0.0,
        )
        .unwrap();
    assert_eq!(change, NodeChange::Updated);
    assert_eq!(pick(&reg, "a.x"), Err(Miss::NotAvailable));
    assert!(pick(&reg, "b.y").is_ok());
    // Restarted (new instance) with a lower seq: replaced too.
    reg.process_node_info(
        &"n1".into(),
        remote_info(1, "i2", vec![service("c", None, &[("z", None)], &[])]),
        0.0,
    )
    .unwrap();
    assert!(pick(&reg, "c.z").is_ok());
    assert_eq!(pick(&reg, "b.y"), Err(Miss::NotAvailable));
}

#[test]
fn own_node_id_in_info_is_refused() {
    let mut reg = registry(true);
    let err = reg
        .process_node_info(&"local".into(), remote_info(2, "x", vec![]), 0.0)
        .unwrap_err();
    assert_eq!(err, RegistryError::OwnNodeId("local".into()));
}

#[test]
fn balanced_events_pick_one_endpoint_per_group() {
    let mut reg = registry(false);
    reg.process_node_info(
        &"b".into(),
        remote_info(
            2,
            "i",
            vec![
                service("mail", None, &[], &[("user.created", None)]),
                service("payments", None, &[], &[("user.*", None)]),
            ],
        ),
        0.0,
    )
    .unwrap();
    reg.process_node_info(
        &"c".into(),
        remote_info(
            2,
            "i",
            vec![
                service("mail", None, &[], &[("user.created", None)]),
                service("audit", None, &[], &[("**", Some("auditGroup"))]),
            ],
        ),
        0.0,
    )
    .unwrap();
    let picks: Vec<_> = reg
        .balanced_event_endpoints("user.created", None, &SelectionContext::empty())
        .collect();
    let mut groups: Vec<_> = picks.iter().map(|(_, g)| g.to_string()).collect();
    groups.sort();
    assert_eq!(groups, ["auditGroup", "mail", "payments"]);
    let only_mail = ["mail".to_string()];
    assert_eq!(
        reg.balanced_event_endpoints("user.created", Some(&only_mail), &SelectionContext::empty())
            .count(),
        1
    );
    let all: Vec<_> = reg
        .all_event_endpoints("user.created", None)
        .map(|e| e.node_id.to_string())
        .collect();
    assert_eq!(all.len(), 4);
    assert!(
        reg.balanced_event_endpoints("order.created", None, &SelectionContext::empty())
            .count()
            == 1,
        "only ** matches"
    );
}

#[test]
fn local_delivery_is_one_per_group_or_all_for_broadcast() {
    let mut reg = registry(true);
    local(
        &mut reg,
        service("mail", None, &[], &[("user.created", None)]),
        "mail-1",
    );
    local(
        &mut reg,
        service("mail2", None, &[], &[("user.created", Some("mail"))]),
        "mail-2",
    );
    local(
        &mut reg,
        service("audit", None, &[], &[("user.*", None)]),
        "audit",
    );
    let sel = SelectionContext::empty();
    assert_eq!(
        reg.local_event_endpoints("user.created", None, false, &sel)
            .count(),
        2
    );
    assert_eq!(
        reg.local_event_endpoints("user.created", None, true, &sel)
            .count(),
        3
    );
    let audit = ["audit".to_string()];
    let only_audit: Vec<_> = reg
        .local_event_endpoints("user.created", Some(&audit), false, &sel)
        .collect();
    assert_eq!(
        only_audit
            .iter()
            .map(|e| e.handler.unwrap())
            .collect::<Vec<_>>(),
        ["audit"]
    );
}

#[test]
fn duplicate_local_service_is_refused_and_seq_grows() {
    let mut reg = registry(true);
    let seq = reg.nodes().local().seq;
    local(&mut reg, service("math", None, &[("add", None)], &[]), "h");
    assert_eq!(reg.nodes().local().seq, seq + 1);
    let dup = LocalService {
        info: service("math", None, &[], &[]),
        actions: HashMap::new(),
        events: HashMap::new(),
    };
    assert_eq!(
        reg.register_local_service(&dup).unwrap_err(),
        RegistryError::DuplicateService("math".into())
    );
    assert!(reg.unregister_local_service("math"));
    assert_eq!(pick(&reg, "math.add"), Err(Miss::NotAvailable));
    assert_eq!(reg.local_node_info().seq, seq + 2);
}

#[test]
fn per_action_strategy_comes_from_its_definition() {
    let mut reg = registry(false);
    let mut svc = service("kv", None, &[("get", None)], &[]);
    let action = svc.actions.get_mut("kv.get").unwrap();
    action.strategy = Some("Shard".into());
    action.strategy_options = Some(json!({"shardKey": "key"}));
    for node in ["a", "b", "c"] {
        reg.process_node_info(&node.into(), remote_info(2, node, vec![svc.clone()]), 0.0)
            .unwrap();
    }
    let meta = Map::new();
    for k in 0..20 {
        let params = json!({"key": format!("k{k}")});
        let ctx = SelectionContext {
            params: &params,
            meta: &meta,
        };
        let first = reg
            .next_action_endpoint("kv.get", &ctx)
            .unwrap()
            .node_id
            .clone();
        for _ in 0..3 {
            assert_eq!(
                reg.next_action_endpoint("kv.get", &ctx).unwrap().node_id,
                first,
                "shard keys stick to one node"
            );
        }
    }
}

#[test]
fn list_outputs_have_moleculers_shape() {
    let mut reg = registry(true);
    local(
        &mut reg,
        service("math", None, &[("add", None)], &[("user.created", None)]),
        "h",
    );
    reg.process_node_info(
        &"n1".into(),
        remote_info(2, "i", vec![service("math", None, &[("add", None)], &[])]),
        0.0,
    )
    .unwrap();
    let grouped = listings::service_list(
        &reg,
        ListOptions {
            grouping: true,
            with_actions: true,
            ..Default::default()
        },
    );
    assert_eq!(grouped.len(), 1);
    assert_eq!(grouped[0]["nodes"], json!(["local", "n1"]));
    assert!(grouped[0]["actions"]["math.add"].is_object());
    let flat = listings::service_list(&reg, ListOptions::default());
    assert_eq!(flat.len(), 2);
    assert!(flat.iter().any(|s| s["nodeID"] == "n1"));
    let actions = listings::action_list(
        &reg,
        ListOptions {
            with_endpoints: true,
            ..Default::default()
        },
    );
    assert_eq!(actions[0]["name"], "math.add");
    assert_eq!(actions[0]["count"], 2);
    assert_eq!(actions[0]["hasLocal"], true);
    assert_eq!(actions[0]["endpoints"].as_array().unwrap().len(), 2);
    let events = listings::event_list(
        &reg,
        ListOptions {
            only_local: true,
            ..Default::default()
        },
    );
    assert_eq!(events[0]["group"], "math");
    let nodes = listings::node_list(&reg, false, true);
    assert_eq!(nodes.len(), 2);
    for key in [
        "id",
        "instanceID",
        "available",
        "local",
        "lastHeartbeatTime",
        "cpu",
        "seq",
        "ipList",
        "hostname",
        "client",
    ] {
        assert!(nodes[0].get(key).is_some(), "missing {key}");
    }
    assert!(nodes[0]["services"].is_array());
}

#[test]
fn a_retry_avoids_the_node_that_failed_unless_it_is_the_only_one() {
    let mut reg = registry(false);
    for node in ["n1", "n2"] {
        reg.process_node_info(
            &node.into(),
            remote_info(2, node, vec![service("math", None, &[("add", None)], &[])]),
            0.0,
        )
        .unwrap();
    }
    let ctx = SelectionContext::empty();
    for _ in 0..4 {
        let ep = reg
            .next_action_endpoint_avoiding("math.add", &ctx, &["n1".into()])
            .unwrap();
        assert_eq!(ep.node_id.as_str(), "n2");
    }
    let ep = reg
        .next_action_endpoint_avoiding("math.add", &ctx, &["n1".into(), "n2".into()])
        .unwrap();
    assert!(
        ["n1", "n2"].contains(&ep.node_id.as_str()),
        "both failed: any will do"
    );
}

#[test]
fn an_endpoint_switched_off_is_skipped_until_switched_on() {
    let mut reg = registry(false);
    for node in ["n1", "n2"] {
        reg.process_node_info(
            &node.into(),
            remote_info(2, node, vec![service("math", None, &[("add", None)], &[])]),
            0.0,
        )
        .unwrap();
    }
    assert!(reg.set_action_endpoint_available("math.add", "n1", false));
    assert!(
        !reg.set_action_endpoint_available("math.add", "n1", false),
        "already off"
    );
    for _ in 0..4 {
        assert_eq!(pick(&reg, "math.add").unwrap(), "n2");
    }
    assert!(reg.set_action_endpoint_available("math.add", "n2", false));
    assert_eq!(pick(&reg, "math.add"), Err(Miss::NotAvailable));
    assert!(reg.set_action_endpoint_available("math.add", "n1", true));
    assert_eq!(pick(&reg, "math.add").unwrap(), "n1");
}

#[test]
fn withdrawn_services_leave_the_info_but_stay_callable_here() {
    let mut reg = registry(true);
    local(&mut reg, service("math", None, &[("add", None)], &[]), "h");
    let seq = reg.local_node_info().seq;
    reg.withdraw_local_services();
    let info = reg.local_node_info();
    assert!(info.services.is_empty());
    assert!(info.seq > seq, "peers take the new INFO as newer");
    assert_eq!(pick(&reg, "math.add").unwrap(), "local");
}
