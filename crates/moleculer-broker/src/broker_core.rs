//! The broker's parts and how they are wired together. Each part holds only the parts below it,
//! so calls flow one way: lifecycle → cluster → receive side → membership / events / calls →
//! transit → transporter.

use std::future::Future;
use std::sync::{Arc, Weak};

use futures::future::{self, BoxFuture, Either};
use moleculer_core::memory_cacher::MemoryCacher;
use moleculer_core::middleware::{CallHandler, CallRequest, EmitHandler, EmitRequest};
use moleculer_core::service_info::ClientInfo;
use moleculer_core::transmit::Transmit;
use moleculer_core::Cacher;
use moleculer_core::{
    BrokerHandle, CallOptions, Context, EmitOptions, ErrorCheck, EventType, MoleculerError, NodeId,
    Result,
};
use moleculer_registry::{Endpoint, Node, Registry};

use crate::cacher_middleware::{cache_cleaner, CacherMiddleware};
use crate::metrics::endpoint::Endpoint as MetricsEndpoint;
use crate::metrics::{BrokerMetrics, MetricsMiddleware, Sources};
use crate::tracer::TracingMiddleware;
use serde_json::Value;

use crate::bridges::{DynDiscoverer, DynTransporter};
use crate::broker_state::StateCell;
use crate::call_future::CallFuture;
use crate::call_router::CallRouter;
use crate::circuit_breaker::CircuitBreaker;
use crate::cluster::Cluster;
use crate::context_tracker::ContextTracker;
use crate::error::BrokerError;
use crate::event_bus::EventBus;
use crate::lifecycle::{Lifecycle, NoHooks};
use crate::membership::Membership;
use crate::middleware_bridge::ErasedMiddleware;
use crate::middleware_chain::MiddlewareChain;
use crate::node_service::node_service;
use crate::options::BrokerOptions;
use crate::shared_registry::SharedRegistry;
use crate::transit::inbound::Inbound;
use crate::transit::outbound::Transit;

/// The cacher given in code, or the memory cacher the `cacher` option names.
fn resolve_cacher(
    options: &BrokerOptions,
    given: Option<Arc<dyn Cacher>>,
) -> Result<Option<Arc<dyn Cacher>>, BrokerError> {
    if given.is_some() {
        return Ok(given);
    }
    let Some(config) = &options.cacher else {
        return Ok(None);
    };
    let cacher: Arc<dyn Cacher> = match config.kind.to_ascii_lowercase().as_str() {
        "memory" => Arc::new(MemoryCacher::unbounded(&config.options)),
        "memorylru" => Arc::new(MemoryCacher::lru(&config.options)),
        _ => {
            return Err(BrokerError::Options {
                key: "cacher".into(),
                reason: format!(
                    "'{}' is not available here (expected \"Memory\", \"MemoryLRU\", or \"redis://host:port\" through the runner)",
                    config.kind
                ),
            })
        }
    };
    Ok(Some(cacher))
}

/// The pluggable parts a broker is built with.
#[derive(Default)]
pub(crate) struct Backends {
    pub transporter: Option<Arc<dyn DynTransporter>>,
    pub discoverer: Option<Arc<dyn DynDiscoverer>>,
    /// Which errors retries retry (default: the retryable ones).
    pub retry_check: Option<ErrorCheck>,
    /// Which errors count against an endpoint's breaker (default: code 500 or more).
    pub breaker_check: Option<ErrorCheck>,
    /// The cache store, when given in code (else made from the `cacher` option).
    pub cacher: Option<Arc<dyn Cacher>>,
}

/// Everything a broker is made of; [`ServiceBroker`](crate::ServiceBroker) is a handle to it.
pub(crate) struct BrokerCore {
    pub node_id: NodeId,
    pub instance_id: String,
    pub options: BrokerOptions,
    pub registry: Arc<SharedRegistry>,
    pub middlewares: Arc<MiddlewareChain>,
    pub calls: CallRouter,
    /// The cache store, if the broker caches.
    pub cacher: Option<Arc<dyn Cacher>>,
    /// `broker{node=...}`: the span its work runs in, so its logs name it.
    pub span: tracing::Span,
    pub events: Arc<EventBus>,
    pub lifecycle: Lifecycle,
    /// The metrics, when enabled.
    pub metrics: Option<Arc<BrokerMetrics>>,
    /// The `/metrics` endpoint while the broker runs.
    pub metrics_endpoint: parking_lot::Mutex<Option<MetricsEndpoint>>,
    retry_check: Option<ErrorCheck>,
}

/// This node as its own registry describes it.
fn local_node(node_id: &NodeId, instance_id: &str, options: &BrokerOptions) -> Node {
    let mut node = Node::new(node_id.clone(), true);
    node.instance_id = instance_id.to_owned();
    node.hostname = gethostname::gethostname().to_string_lossy().into_owned();
    node.ip_list = crate::health::ipv4_addresses();
    node.client = ClientInfo::rust();
    node.metadata = options.metadata.clone();
    node
}

impl BrokerCore {
    /// Checks the options and wires the parts.
    pub fn build(
        options: BrokerOptions,
        mut middlewares: Vec<Arc<dyn ErasedMiddleware>>,
        backends: Backends,
    ) -> Result<Arc<Self>, BrokerError> {
        options.validate()?;
        let cacher = resolve_cacher(&options, backends.cacher)?;
        let mut cacher_stats = None;
        if let Some(cacher) = &cacher {
            // Innermost: the user's middlewares see cached answers too.
            let max = options
                .cacher
                .as_ref()
                .and_then(|c| c.options.max_params_length);
            let middleware = CacherMiddleware::new(cacher.clone(), max);
            cacher_stats = Some(middleware.stats());
            middlewares.insert(0, Arc::new(middleware));
        }
        let node_id = options
            .node_id
            .as_deref()
            .map_or_else(NodeId::for_this_process, NodeId::new);
        let instance_id = moleculer_core::node_id::generate_id();
        let registry = Arc::new(SharedRegistry::new(Registry::new(
            local_node(&node_id, &instance_id, &options),
            options.registry_options()?,
        )));
        let transit = match backends.transporter {
            Some(transporter) => Some(Arc::new(Transit::new(
                node_id.clone(),
                options.protocol_version()?,
                Transmit::wrap(
                    options.serializer_kind()?.build(),
                    &options.transmit,
                    options.transit.max_packet_size,
                )
                .map_err(|reason| BrokerError::Options {
                    key: "transmit".into(),
                    reason,
                })?,
                transporter,
                &options.transit,
            ))),
            None => None,
        };
        let state = Arc::new(StateCell::new());
        let tracker = Arc::new(ContextTracker::new(options.tracking.enabled));
        let events = Arc::new(EventBus::new(
            node_id.clone(),
            registry.clone(),
            transit.clone(),
        ));
        let breaker = CircuitBreaker::new(
            options.circuit_breaker,
            backends.breaker_check,
            registry.clone(),
            events.clone(),
        );
        if options.tracing.enabled {
            // Inside the metrics: a call's span covers what its handler does, not the counting.
            middlewares.push(Arc::new(TracingMiddleware::new(options.tracing.clone())));
        }
        let metrics = if options.metrics.enabled {
            let sources = Sources {
                transit: transit.clone(),
                registry: registry.clone(),
                breaker: breaker.clone(),
                cacher: cacher_stats,
            };
            let metrics = BrokerMetrics::new(
                options.metrics.clone(),
                &options.namespace,
                node_id.as_str(),
                sources,
            )
            .map_err(|err| BrokerError::Options {
                key: "metrics".into(),
                reason: err.to_string(),
            })?;
            let metrics = Arc::new(metrics);
            // Outermost for events; action calls are measured by the call future.
            middlewares.push(Arc::new(MetricsMiddleware::new(metrics.clone())));
            Some(metrics)
        } else {
            None
        };
        let cluster = transit.clone().map(|transit| {
            let discoverer = backends
                .discoverer
                .unwrap_or_else(|| Arc::new(moleculer_discoverer_local::LocalDiscoverer::new()));
            let membership = Arc::new(Membership::new(
                instance_id.clone(),
                &options,
                registry.clone(),
                transit.clone(),
                discoverer,
                state.clone(),
                breaker.clone(),
            ));
            let inbound = Arc::new(Inbound::new(
                transit.clone(),
                registry.clone(),
                events.clone(),
                membership.clone(),
                state.clone(),
                tracker.clone(),
            ));
            Arc::new(Cluster::new(
                instance_id.clone(),
                &options,
                transit,
                membership,
                inbound,
                registry.clone(),
                events.clone(),
            ))
        });
        let core = Arc::new_cyclic(|weak: &Weak<BrokerCore>| {
            let handle: Weak<dyn BrokerHandle> = weak.clone();
            let middlewares = Arc::new(MiddlewareChain::new(
                middlewares,
                call_base(weak.clone()),
                emit_base(weak.clone()),
            ));
            let calls = CallRouter::new(
                node_id.clone(),
                &options,
                registry.clone(),
                middlewares.clone(),
                transit,
                breaker.clone(),
                tracker.in_flight(),
                handle.clone(),
                metrics.clone(),
            );
            let lifecycle = Lifecycle::new(
                node_id.clone(),
                &options,
                state,
                registry.clone(),
                middlewares.clone(),
                events.clone(),
                cluster,
                tracker,
                breaker,
                handle,
                metrics.clone(),
            );
            BrokerCore {
                instance_id,
                options,
                registry,
                middlewares,
                calls,
                events,
                lifecycle,
                retry_check: backends.retry_check,
                cacher,
                metrics: metrics.clone(),
                metrics_endpoint: parking_lot::Mutex::new(None),
                // At error level, so that it is kept whatever level the log filter lets through.
                span: tracing::error_span!("broker", node = %node_id),
                node_id,
            }
        });
        if core.options.internal_services {
            let options = serde_json::to_value(&core.options).unwrap_or(Value::Null);
            let bound = node_service(&core.registry, options, core.metrics.as_ref())?;
            core.lifecycle.add(bound, Arc::new(NoHooks))?;
        }
        if let Some(cacher) = &core.cacher {
            // Other nodes' `clean_cache` reaches this node's store through this service.
            core.lifecycle
                .add(cache_cleaner(cacher.clone())?, Arc::new(NoHooks))?;
        }
        Ok(core)
    }

    /// The cluster this broker joins, if it has a transporter.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.lifecycle.cluster()
    }

    /// A call through the middlewares' `call` hooks (when any) to the router.
    #[inline]
    pub fn call(
        &self,
        parent: Option<&Context>,
        action: &str,
        params: Value,
        opts: &CallOptions,
    ) -> CallFuture {
        match self.middlewares.call_chain() {
            Some(chain) => CallFuture::boxed(chain(CallRequest {
                action: action.to_owned(),
                params,
                options: opts.clone(),
                parent: parent.cloned(),
            })),
            None => self.calls.call(parent, action, params, opts),
        }
    }

    /// An event through the middlewares' `emit` hooks (when any) to the event bus.
    pub fn send_event(
        &self,
        parent: Option<&Context>,
        kind: EventType,
        event: &str,
        payload: Value,
        opts: EmitOptions,
    ) -> Either<BoxFuture<'static, Result<()>>, impl Future<Output = Result<()>> + Send + 'static>
    {
        match self.middlewares.emit_chain() {
            Some(chain) => Either::Left(chain(EmitRequest {
                event: event.to_owned(),
                payload,
                kind,
                options: opts,
                parent: parent.cloned(),
            })),
            None => Either::Right(self.events.send(parent, kind, event, payload, opts)),
        }
    }
}

/// The innermost `call` handler, under every middleware: the router.
fn call_base(core: Weak<BrokerCore>) -> CallHandler {
    Arc::new(
        move |req: CallRequest| -> BoxFuture<'static, Result<Value>> {
            match core.upgrade() {
                Some(core) => Box::pin(core.calls.call(
                    req.parent.as_ref(),
                    &req.action,
                    req.params,
                    &req.options,
                )),
                None => Box::pin(future::ready(Err(MoleculerError::broker_disconnected()))),
            }
        },
    )
}

/// The innermost `emit` handler, under every middleware: the event bus.
fn emit_base(core: Weak<BrokerCore>) -> EmitHandler {
    Arc::new(move |req: EmitRequest| -> BoxFuture<'static, Result<()>> {
        match core.upgrade() {
            Some(core) => Box::pin(core.events.send(
                req.parent.as_ref(),
                req.kind,
                &req.event,
                req.payload,
                req.options,
            )),
            None => Box::pin(future::ready(Err(MoleculerError::broker_disconnected()))),
        }
    })
}

/// What contexts call back into for nested calls and events.
impl BrokerHandle for BrokerCore {
    fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    fn call(
        &self,
        parent: Option<&Context>,
        action: &str,
        params: Value,
        opts: &CallOptions,
    ) -> BoxFuture<'static, Result<Value>> {
        BrokerCore::call(self, parent, action, params, opts).into_boxed()
    }

    fn action_nodes(&self, action: &str) -> Vec<NodeId> {
        self.registry
            .read()
            .actions()
            .get(action)
            .map_or_else(Vec::new, |list| {
                list.endpoints()
                    .iter()
                    .filter(|e| e.is_available())
                    .map(|e| e.node_id().clone())
                    .collect()
            })
    }

    fn is_retryable(&self, err: &MoleculerError) -> bool {
        match &self.retry_check {
            Some(check) => check(err),
            None => err.retryable,
        }
    }

    fn send_event(
        &self,
        parent: Option<&Context>,
        kind: EventType,
        event: &str,
        payload: Value,
        opts: EmitOptions,
    ) -> BoxFuture<'static, Result<()>> {
        match BrokerCore::send_event(self, parent, kind, event, payload, opts) {
            Either::Left(chained) => chained,
            Either::Right(direct) => Box::pin(direct),
        }
    }
}
