//! The Tracing middleware: runs each traced action handler (and event handler, when asked)
//! inside a span that carries Moleculer's ids.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use moleculer_core::{
    ActionHandler, ActionInfo, Context, EventHandler, EventInfo, Middleware, Result,
};
use tracing::field::Empty;
use tracing::Instrument;

use super::{TracingSettings, TARGET};

/// The Tracing middleware of one broker.
pub(crate) struct TracingMiddleware {
    settings: TracingSettings,
}

impl TracingMiddleware {
    pub fn new(settings: TracingSettings) -> Self {
        Self { settings }
    }
}

/// Whether `ctx`'s request is traced: as decided upstream, or else decided here, at `rate`.
#[inline]
fn traced(ctx: &Context, rate: f64) -> bool {
    match ctx.tracing() {
        Some(decided) => decided,
        None => ctx.decide_tracing(rate >= 1.0 || (rate > 0.0 && rand::random::<f64>() < rate)),
    }
}

/// The span of one action call or event handler run.
fn span_of(ctx: &Context, kind: &'static str, name: &str) -> tracing::Span {
    let span = match kind {
        "event" => tracing::info_span!(
            target: TARGET,
            "event",
            otel.name = %format_args!("event '{name}' in '{}'", ctx.service()),
            event = name,
            service = ctx.service(),
            trace_id = &**ctx.request_id(),
            span_id = &**ctx.id(),
            parent_id = ctx.parent_id(),
            level = ctx.level(),
            caller_node = ctx.node_id().as_str(),
            remote = ctx.node_id() != ctx.local_node_id(),
            error = Empty,
        ),
        _ => tracing::info_span!(
            target: TARGET,
            "action",
            otel.name = %format_args!("action '{name}'"),
            action = name,
            service = ctx.service(),
            trace_id = &**ctx.request_id(),
            span_id = &**ctx.id(),
            parent_id = ctx.parent_id(),
            level = ctx.level(),
            caller_node = ctx.node_id().as_str(),
            remote = ctx.node_id() != ctx.local_node_id(),
            error = Empty,
        ),
    };
    span
}

/// Runs a handler's future in `span`, recording the error's name on failure.
fn in_span<T: Send + 'static>(
    fut: BoxFuture<'static, Result<T>>,
    span: tracing::Span,
) -> BoxFuture<'static, Result<T>> {
    let recorder = span.clone();
    async move {
        let result = fut.await;
        if let Err(err) = &result {
            recorder.record("error", err.name.as_str());
        }
        result
    }
    .instrument(span)
    .boxed()
}

/// `next`, run in a span of `kind` for each traced request.
fn traced_handler<T: Send + 'static>(
    next: Arc<dyn Fn(Context) -> BoxFuture<'static, Result<T>> + Send + Sync>,
    kind: &'static str,
    name: &str,
    rate: f64,
) -> Arc<dyn Fn(Context) -> BoxFuture<'static, Result<T>> + Send + Sync> {
    let name: Arc<str> = Arc::from(name);
    Arc::new(move |ctx: Context| {
        if !traced(&ctx, rate) {
            return next(ctx);
        }
        let span = span_of(&ctx, kind, &name);
        in_span(next(ctx), span)
    })
}

impl Middleware for TracingMiddleware {
    fn name(&self) -> &str {
        "Tracing"
    }

    fn local_action(&self, next: ActionHandler, action: &ActionInfo) -> ActionHandler {
        if !self.settings.actions {
            return next;
        }
        traced_handler(next, "action", &action.name, self.settings.sampling.rate)
    }

    fn local_event(&self, next: EventHandler, event: &EventInfo) -> EventHandler {
        if !self.settings.events {
            return next;
        }
        traced_handler(next, "event", &event.name, self.settings.sampling.rate)
    }
}
