//! The Metrics middleware, for events: counts the events this node sends, and counts and times
//! every event handler run. Action calls are measured by the call future itself, through the
//! meter on each endpoint (see [`super::meter`]).

use std::sync::Arc;

use futures::FutureExt;
use moleculer_core::call_meter::{CallMeter, CallOutcome};
use moleculer_core::middleware::{EmitHandler, EmitRequest};
use moleculer_core::{Context, EventHandler, EventInfo, EventType, Middleware};
use parking_lot::RwLock;
// Tokio's clock, which paused test time moves.
use tokio::time::Instant;

use super::meter::{Kind, Meter};
use super::BrokerMetrics;

/// An event handler's meters, by the service it runs in.
type MetersByService = Vec<(Arc<str>, Arc<Meter>)>;

/// The Metrics middleware of one broker.
pub(crate) struct MetricsMiddleware {
    metrics: Arc<BrokerMetrics>,
}

impl MetricsMiddleware {
    /// Measures into `metrics`.
    pub fn new(metrics: Arc<BrokerMetrics>) -> Self {
        Self { metrics }
    }
}

impl Middleware for MetricsMiddleware {
    fn name(&self) -> &str {
        "Metrics"
    }

    fn emit(&self, next: EmitHandler) -> EmitHandler {
        let families = self.metrics.families.clone();
        Arc::new(move |req: EmitRequest| {
            let family = match req.kind {
                EventType::Emit => &families.event_emit_total,
                EventType::Broadcast => &families.event_broadcast_total,
                EventType::BroadcastLocal => &families.event_broadcast_local_total,
            };
            let groups = req
                .options
                .groups
                .as_ref()
                .map_or_else(|| "null".to_owned(), |g| g.join(","));
            family.with_label_values(&[&req.event, &groups]).inc();
            next(req)
        })
    }

    fn local_event(&self, next: EventHandler, event: &EventInfo) -> EventHandler {
        let group = event.group.clone();
        let metrics = self.metrics.clone();
        let meters: Arc<RwLock<MetersByService>> = Arc::default();
        let name = event.name.clone();
        Arc::new(move |ctx: Context| {
            // A handler belongs to one service; the meter is made on its first event.
            let service = ctx.service_arc();
            let found = meters
                .read()
                .iter()
                .find(|(s, _)| s == service)
                .map(|(_, m)| m.clone());
            let meter = found.unwrap_or_else(|| {
                // Without a group of its own, a handler is in its service's group.
                let labels = [
                    service.to_string(),
                    group.clone().unwrap_or_else(|| service.to_string()),
                    name.clone(),
                ];
                let meter = metrics.meter(Kind::Event, labels, 1);
                meters.write().push((service.clone(), meter.clone()));
                meter
            });
            meter.started(ctx.caller(), ctx.level());
            // The run keeps a handle on the context for its caller: no copy of the name.
            let mut run = Run {
                meter,
                ctx: ctx.clone(),
                start: Instant::now(),
                done: false,
            };
            let fut = next(ctx);
            async move {
                let result = fut.await;
                run.done = true;
                let outcome = match &result {
                    Ok(()) => CallOutcome::Answered,
                    Err(err) => CallOutcome::Failed(err),
                };
                run.meter
                    .finished(run.ctx.caller(), Some(run.start.elapsed()), outcome);
                result
            }
            .boxed()
        })
    }
}

/// One event handler run; dropped before it ends (its broker stopping), it still leaves the
/// active count.
struct Run {
    meter: Arc<Meter>,
    ctx: Context,
    start: Instant,
    done: bool,
}

impl Drop for Run {
    fn drop(&mut self) {
        if !self.done {
            self.meter.finished(
                self.ctx.caller(),
                Some(self.start.elapsed()),
                CallOutcome::Abandoned,
            );
        }
    }
}
