//! Events: `emit` picks one handler per group, `broadcast` reaches every handler, and
//! `broadcastLocal` stays on this node. Local handlers run here; every other node that must
//! hear the event gets one EVENT packet carrying the groups chosen for it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::future::{self, BoxFuture, FutureExt};
use moleculer_core::in_flight::{Entered, InFlight};
use moleculer_core::protocol::{EventPacket, Packet};
use moleculer_core::{
    Context, EmitOptions, EventDelivery, EventGroups, EventType, Meta, NodeId, Origin, Result,
    SelectionContext,
};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::panic_guard::{panic_message, start_handler};
use crate::shared_registry::{LocalSubscription, SharedRegistry};
use crate::transit::outbound::Transit;

/// An internal (`$`-prefixed) event, as seen on the local bus.
#[derive(Debug, Clone)]
pub struct LocalEvent {
    /// Event name, e.g. `$services.changed`.
    pub name: String,
    /// Payload.
    pub payload: Value,
}

/// A local delivery in progress, counted until it ends.
struct TrackedDelivery(Option<(Arc<InFlight>, Entered)>);

impl Drop for TrackedDelivery {
    fn drop(&mut self) {
        if let Some((work, entered)) = self.0.take() {
            work.leave(entered);
        }
    }
}

/// One local handler chosen for an event, with the pattern it subscribed with and the groups
/// it receives the event for.
type Pick<'a> = (&'a LocalSubscription, &'a Arc<str>, EventGroups);

/// Sends events and runs local event handlers.
pub(crate) struct EventBus {
    node_id: NodeId,
    registry: Arc<SharedRegistry>,
    transit: Option<Arc<Transit>>,
    local_bus: broadcast::Sender<LocalEvent>,
}

impl EventBus {
    pub fn new(
        node_id: NodeId,
        registry: Arc<SharedRegistry>,
        transit: Option<Arc<Transit>>,
    ) -> Self {
        Self {
            node_id,
            registry,
            transit,
            local_bus: broadcast::channel(1024).0,
        }
    }

    /// Internal events as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<LocalEvent> {
        self.local_bus.subscribe()
    }

    /// Sends an event from `parent`'s handler (or as a root emission). Handlers and packets
    /// are chosen before this returns; the future runs the local handlers and sends.
    pub fn send(
        &self,
        parent: Option<&Context>,
        kind: EventType,
        event: &str,
        payload: Value,
        opts: EmitOptions,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        if event.starts_with('$') {
            let _ = self.local_bus.send(LocalEvent {
                name: event.to_owned(),
                payload: payload.clone(),
            });
        }
        let mut meta: Meta = parent.map(Context::meta).unwrap_or_default();
        if let Some(extra) = opts.meta {
            meta.extend(extra);
        }
        let origin = Origin::child_of(parent);
        let headers = opts.headers.unwrap_or_default();
        let groups = opts.groups.as_deref();
        let filter = EventGroups::from_names(groups);
        let registry = self.registry.read();
        let selection = SelectionContext {
            params: &payload,
            meta: &meta,
        };
        let mut picks: Vec<Pick<'_>> = Vec::new();
        // Remote nodes get one EVENT each, carrying the groups chosen for them.
        let mut remote: Vec<(NodeId, Vec<String>)> = Vec::new();
        match kind {
            EventType::Emit => {
                for (ep, group) in registry.balanced_event_endpoints(event, groups, &selection) {
                    match &ep.handler {
                        Some(sub) => picks.push((sub, &ep.name, EventGroups::One(group.clone()))),
                        None => match remote.iter_mut().find(|(n, _)| *n == ep.node_id) {
                            Some((_, gs)) => gs.push(group.to_string()),
                            None => remote.push((ep.node_id.clone(), vec![group.to_string()])),
                        },
                    }
                }
            }
            EventType::Broadcast => {
                for ep in registry.all_event_endpoints(event, groups) {
                    match &ep.handler {
                        Some(sub) => picks.push((sub, &ep.name, filter.clone())),
                        None if !remote.iter().any(|(n, _)| *n == ep.node_id) => {
                            remote.push((ep.node_id.clone(), Vec::new()));
                        }
                        None => {}
                    }
                }
            }
            EventType::BroadcastLocal => {
                for ep in registry.local_event_endpoints(event, groups, true, &selection) {
                    if let Some(sub) = &ep.handler {
                        picks.push((sub, &ep.name, filter.clone()));
                    }
                }
            }
        }
        let sends = self.remote_sends(
            kind,
            event,
            &payload,
            &meta,
            &headers,
            &origin,
            &opts.groups,
            remote,
        );
        let local = self.deliver(picks, event, kind, payload, meta, headers, origin);
        drop(registry);
        async move {
            match sends {
                Some(sends) => {
                    future::join(local, sends).await;
                }
                None => local.await,
            }
            Ok(())
        }
    }

    /// The EVENT packets for other nodes, sent when the returned future runs.
    #[allow(clippy::too_many_arguments)]
    fn remote_sends(
        &self,
        kind: EventType,
        event: &str,
        payload: &Value,
        meta: &Meta,
        headers: &Meta,
        origin: &Origin,
        group_filter: &Option<Vec<String>>,
        remote: Vec<(NodeId, Vec<String>)>,
    ) -> Option<BoxFuture<'static, ()>> {
        if remote.is_empty() {
            return None;
        }
        let transit = self.transit.clone()?;
        let packets: Vec<(NodeId, EventPacket)> = remote
            .into_iter()
            .map(|(node, node_groups)| {
                let groups = match kind {
                    EventType::Emit => Some(node_groups),
                    _ => group_filter.clone(),
                };
                let packet = transit.event_packet(
                    event,
                    payload.clone(),
                    groups,
                    kind == EventType::Broadcast,
                    meta.clone(),
                    headers,
                    origin,
                );
                (node, packet)
            })
            .collect();
        Some(Box::pin(async move {
            for (node, packet) in packets {
                if let Err(err) = transit
                    .send(Packet::Event(packet), Some(node.clone()))
                    .await
                {
                    tracing::warn!(node = %node, "cannot send an event: {err}");
                }
            }
        }))
    }

    /// Runs this node's handlers of an EVENT that another node sent; the packet already names
    /// the groups meant for this node.
    pub fn deliver_packet(&self, ev: EventPacket) -> BoxFuture<'static, ()> {
        let kind = if ev.broadcast {
            EventType::Broadcast
        } else {
            EventType::Emit
        };
        let origin = Origin {
            request_id: ev.request_id.as_deref().map(Arc::from),
            parent_id: ev.parent_id.as_deref().map(Arc::from),
            level: ev.level.unwrap_or(1),
            caller: ev.caller.as_deref().map(Arc::from),
            caller_node: Some(ev.sender.clone()),
            tracing: ev.tracing,
        };
        let groups = ev.groups.as_deref().filter(|g| !g.is_empty());
        let filter = EventGroups::from_names(groups);
        let registry = self.registry.read();
        let selection = SelectionContext {
            params: &ev.data,
            meta: &ev.meta,
        };
        let picks: Vec<Pick<'_>> = registry
            .local_event_endpoints(&ev.event, groups, ev.broadcast, &selection)
            .filter_map(|ep| Some((ep.handler.as_ref()?, &ep.name, filter.clone())))
            .collect();
        let headers = ev.headers.clone().unwrap_or_default();
        self.deliver(
            picks,
            &ev.event,
            kind,
            ev.data.clone(),
            ev.meta.clone(),
            headers,
            origin,
        )
    }

    /// Emits an internal event to local handlers and the local bus.
    pub async fn emit_internal(&self, name: &str, payload: Value) {
        let _ = self
            .send(
                None,
                EventType::BroadcastLocal,
                name,
                payload,
                EmitOptions::default(),
            )
            .await;
    }

    /// Starts the chosen local handlers; the future runs them concurrently and logs their
    /// errors (events answer nothing).
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &self,
        picks: Vec<Pick<'_>>,
        event: &str,
        kind: EventType,
        payload: Value,
        meta: Meta,
        headers: Meta,
        origin: Origin,
    ) -> BoxFuture<'static, ()> {
        let count = picks.len();
        // An exact subscription shares its name; only wildcard matches need a copy of it.
        let mut concrete: Option<Arc<str>> = None;
        let mut name_for = |pattern: &Arc<str>| -> Arc<str> {
            if **pattern == *event {
                pattern.clone()
            } else {
                concrete.get_or_insert_with(|| Arc::from(event)).clone()
            }
        };
        let tracker = picks
            .first()
            .and_then(|(sub, _, _)| sub.target.tracker.clone());
        let (mut payload, mut meta) = (Some(payload), Some(meta));
        let mut first: Option<(Arc<str>, BoxFuture<'static, Result<()>>)> = None;
        let mut rest: Vec<BoxFuture<'static, Result<()>>> = Vec::new();
        for (i, (sub, pattern, groups)) in picks.into_iter().enumerate() {
            // The last delivery takes the payload and meta; the others get copies.
            let (params, meta) = if i + 1 == count {
                (
                    payload.take().unwrap_or_default(),
                    meta.take().unwrap_or_default(),
                )
            } else {
                (
                    payload.clone().unwrap_or_default(),
                    meta.clone().unwrap_or_default(),
                )
            };
            let name = name_for(pattern);
            let delivery = EventDelivery {
                name: name.clone(),
                kind,
                groups,
            };
            let ctx = Context::for_event(
                sub.target.clone(),
                origin.clone(),
                delivery,
                params,
                meta,
                headers.clone(),
            );
            let run = start_handler(|| (sub.handler)(ctx), event, &self.node_id);
            if first.is_none() {
                first = Some((name, run));
            } else {
                rest.push(run);
            }
        }
        // The whole delivery counts as one piece of work in progress.
        let tracked = tracker.map(|t| {
            let entered = t.enter();
            (t, entered)
        });
        Box::pin(async move {
            let _tracked = TrackedDelivery(tracked);
            let Some((event, first)) = first else { return };
            let report = |result: std::thread::Result<Result<()>>| match result {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!(event = %event, "event handler failed: {err}"),
                Err(payload) => {
                    tracing::error!(event = %event, "event handler panicked: {}", panic_message(&*payload));
                }
            };
            if rest.is_empty() {
                report(AssertUnwindSafe(first).catch_unwind().await);
            } else {
                rest.push(first);
                for result in
                    future::join_all(rest.into_iter().map(|r| AssertUnwindSafe(r).catch_unwind()))
                        .await
                {
                    report(result);
                }
            }
        })
    }
}
