//! Transit, receiving side (Moleculer's `transit.messageHandler`): checks and decodes every
//! incoming packet, then serves REQUESTs and EVENTs with the local handlers, completes waiting
//! calls with RESPONSEs, answers PINGs, and queues discovery packets for membership.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use moleculer_core::protocol::{EventPacket, Packet, RequestPacket};
use moleculer_core::transporter::{Delivery, Incoming};
use moleculer_core::{Context, LogThrottle, MoleculerError, NodeId, Origin, Visibility};

use super::outbound::Transit;
use super::pending::Reply;
use crate::broker_state::{BrokerState, StateCell};
use crate::call_future::CallFuture;
use crate::context_tracker::ContextTracker;
use crate::event_bus::EventBus;
use crate::membership::Membership;
use crate::panic_guard::start_handler;
use crate::shared_registry::SharedRegistry;

/// Handles what the transporter delivers.
pub(crate) struct Inbound {
    node_id: NodeId,
    transit: Arc<Transit>,
    registry: Arc<SharedRegistry>,
    events: Arc<EventBus>,
    membership: Arc<Membership>,
    state: Arc<StateCell>,
    tracker: Arc<ContextTracker>,
    /// Keeps a flood of bad packets from flooding the log.
    warnings: LogThrottle,
}

/// Polls `work` once right here; only if it has to wait does it get a task of its own. Most
/// handlers answer without waiting, and this saves a task hop per request on the serving side.
fn run_inline_or_spawn(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let mut work = Box::pin(work);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if work.as_mut().poll(&mut cx).is_pending() {
        // Polled again by the runtime, which registers its own waker.
        moleculer_core::task::spawn(work);
    }
}

impl Inbound {
    pub fn new(
        transit: Arc<Transit>,
        registry: Arc<SharedRegistry>,
        events: Arc<EventBus>,
        membership: Arc<Membership>,
        state: Arc<StateCell>,
        tracker: Arc<ContextTracker>,
    ) -> Self {
        Self {
            node_id: transit.node_id.clone(),
            transit,
            registry,
            events,
            membership,
            state,
            tracker,
            warnings: LogThrottle::new(Duration::from_secs(10)),
        }
    }

    /// Checks, decodes and dispatches one packet, without awaiting: requests and events run
    /// inline until they first wait, responses complete their waiter at once, discovery
    /// packets are queued in order. A bad packet is dropped with a warning (at most one line per
    /// sender and reason every few seconds) and reported as refused, so the transporter can
    /// close a connection that sends little else.
    pub fn receive(self: &Arc<Self>, incoming: Incoming) -> Delivery {
        let transit = &self.transit;
        transit
            .stats
            .count_received(incoming.kind, incoming.payload.len());
        if incoming.payload.len() > transit.max_packet_size {
            transit.stats.oversized.fetch_add(1, Ordering::Relaxed);
            let sender = transit.serializer.sender_hint(&incoming.payload);
            let sender = sender.as_deref().unwrap_or("unknown");
            if let Some(held) = self.warnings.admit(&format!("oversized:{sender}")) {
                tracing::warn!(
                    kind = %incoming.kind,
                    sender,
                    "dropped a {} byte packet above the {} byte limit{}",
                    incoming.payload.len(),
                    transit.max_packet_size,
                    self.warnings.held_note(held)
                );
            }
            return Delivery::Refused;
        }
        let packet = match transit.serializer.decode(incoming.kind, &incoming.payload) {
            Ok(packet) => packet,
            Err(err) => {
                transit.stats.malformed.fetch_add(1, Ordering::Relaxed);
                let sender = transit.serializer.sender_hint(&incoming.payload);
                let sender = sender.as_deref().unwrap_or("unknown");
                if let Some(held) = self.warnings.admit(&format!("malformed:{sender}")) {
                    tracing::warn!(
                        sender,
                        "dropped a packet: {err}{}",
                        self.warnings.held_note(held)
                    );
                }
                return Delivery::Refused;
            }
        };
        if packet.ver() != transit.version.as_str() && !transit.disable_version_check {
            transit.stats.wrong_version.fetch_add(1, Ordering::Relaxed);
            if let Some(held) = self.warnings.admit(&format!("version:{}", packet.sender())) {
                tracing::warn!(
                    sender = packet.sender(),
                    kind = %packet.kind(),
                    "dropped a packet with protocol version '{}' (this node speaks '{}'){}",
                    packet.ver(),
                    transit.version.as_str(),
                    self.warnings.held_note(held)
                );
            }
            return Delivery::Refused;
        }
        let from_self = packet.sender() == self.node_id.as_str();
        match packet {
            Packet::Request(req) => run_inline_or_spawn(self.clone().serve_request(req)),
            Packet::Response(res) => {
                let reply: Reply = if res.success {
                    Ok((res.data, res.meta))
                } else {
                    let mut err = res
                        .error
                        .unwrap_or_else(MoleculerError::unknown_remote_error);
                    if err.node_id.is_none() {
                        err.node_id = Some(res.sender.to_string());
                    }
                    Err(err)
                };
                transit.resolve(&res.id, reply);
            }
            Packet::Event(ev) => run_inline_or_spawn(self.clone().serve_event(ev)),
            Packet::Ping(ping) if !from_self => {
                let pong = transit.pong_for(&ping);
                let transit = transit.clone();
                moleculer_core::task::spawn(async move {
                    let _ = transit.send(pong, Some(ping.sender)).await;
                });
            }
            Packet::Pong(pong) if !from_self => {
                // Any PONG proves the node is alive (the TCP discoverer pings for this).
                self.membership.pong_received(&pong.sender);
                transit.pong_arrived(pong);
            }
            Packet::Info(info) if from_self => self.membership.own_info(&info.info),
            Packet::Discover(discover) if from_self => self.membership.own_discover(&discover),
            packet if from_self => tracing::trace!("ignored our own {} echo", packet.kind()),
            packet @ (Packet::Discover(_)
            | Packet::Info(_)
            | Packet::Heartbeat(_)
            | Packet::Disconnect(_)
            | Packet::GossipHello(_)
            | Packet::GossipRequest(_)
            | Packet::GossipResponse(_)) => self.membership.discovery_packet(packet),
            Packet::Ping(_) | Packet::Pong(_) => {}
        }
        Delivery::Accepted
    }

    /// Serves a REQUEST from another node and answers with a RESPONSE.
    async fn serve_request(self: Arc<Self>, req: RequestPacket) {
        let _tracked = self.tracker.track();
        let (id, caller) = (req.id.clone(), req.sender.clone());
        let reply = self.run_request(req).await;
        let response = self.transit.response_packet(id, reply);
        if let Err(err) = self.transit.send(response, Some(caller.clone())).await {
            tracing::warn!(node = %caller, "cannot send a response: {err}");
        }
    }

    async fn run_request(&self, req: RequestPacket) -> Reply {
        // Registered services are ready while the broker still starts, and a stopping node
        // serves until its drain is over (peers are told to stop sending first); only then are
        // requests turned away, with a retryable error.
        if matches!(
            self.state.get(),
            BrokerState::Closing | BrokerState::Stopped
        ) {
            return Err(MoleculerError::service_not_available(
                &req.action,
                Some(&self.node_id),
            ));
        }
        if req.stream == Some(true) {
            return Err(MoleculerError::streams_not_supported(&req.action));
        }
        let timeout = req
            .timeout
            .filter(|t| *t > 0.0)
            .map(|t| Duration::from_secs_f64(t / 1000.0));
        let origin = Origin {
            request_id: req.request_id.as_deref().map(Arc::from),
            parent_id: req.parent_id.as_deref().map(Arc::from),
            level: req.level,
            caller: req.caller.as_deref().map(Arc::from),
            caller_node: Some(req.sender.clone()),
            tracing: req.tracing,
        };
        let (fut, ctx) = {
            let registry = self.registry.read();
            let endpoint = registry.local_action_endpoint(&req.action);
            // Protected actions are callable from this node only; Moleculer checks this on the
            // caller side alone, so a hand-made REQUEST could reach them.
            let Some(local) = endpoint
                .filter(|e| e.info.visibility() != Visibility::Protected)
                .and_then(|e| e.handler.as_ref())
            else {
                return Err(MoleculerError::service_not_found(
                    &req.action,
                    Some(&self.node_id),
                ));
            };
            let ctx = Context::for_call(
                local.target.clone(),
                Some(Arc::from(req.id.as_str())),
                origin,
                req.params,
                req.meta,
                req.headers.unwrap_or_default(),
                timeout,
            );
            let handler_ctx = ctx.clone();
            let fut = start_handler(|| (local.handler)(handler_ctx), &req.action, &self.node_id);
            (fut, ctx)
        };
        let deadline = ctx.deadline();
        let result = CallFuture::running(fut, ctx.clone(), deadline, None).await;
        result.map(|data| (data, ctx.take_meta()))
    }

    /// Runs the local handlers an EVENT from another node was meant for.
    async fn serve_event(self: Arc<Self>, ev: EventPacket) {
        let _tracked = self.tracker.track();
        self.events.deliver_packet(ev).await;
    }
}
