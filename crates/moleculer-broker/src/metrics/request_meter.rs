//! The Metrics middleware: counts and times every action call (local and remote) and every
//! event handler run, and counts the events this node sends, with Moleculer's labels.
//!
//! The labels of an action's series are known when its handler is wrapped, except the caller,
//! so each wrapped action keeps its series by caller: a call looks up its caller among a few,
//! then touches only atomics (no registry lookup, no lock held across an await).

use std::sync::Arc;

use futures::FutureExt;
use moleculer_core::middleware::{EmitHandler, EmitRequest};
use moleculer_core::{
    ActionHandler, ActionInfo, Context, EventHandler, EventInfo, EventType, Middleware,
    MoleculerError,
};
use parking_lot::RwLock;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};
// Tokio's clock, which paused test time moves, as it moves the deadlines.
use tokio::time::Instant;

use super::Families;

/// Callers kept per action or handler; beyond these, a call looks its series up by label.
const MAX_CALLERS: usize = 64;
/// Call levels with a counter made in advance.
const LEVELS: usize = 16;

/// The Metrics middleware of one broker.
pub(crate) struct MetricsMiddleware {
    families: Arc<Families>,
    levels: Arc<Vec<IntCounter>>,
    local_timing_every: u32,
}

thread_local! {
    /// Local calls started on this thread, for timing one in N.
    static LOCAL_CALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether to time this call: one call in `every` on each thread.
#[inline]
fn timed(every: u32) -> bool {
    if every <= 1 {
        return true;
    }
    LOCAL_CALLS.with(|n| {
        let seen = n.get();
        n.set(seen.wrapping_add(1));
        seen % every == 0
    })
}

impl MetricsMiddleware {
    /// Measures into `families`.
    pub fn new(families: Arc<Families>, local_timing_every: u32) -> Self {
        let levels = (1..=LEVELS)
            .map(|l| families.request_levels.with_label_values(&[&l.to_string()]))
            .collect();
        Self {
            families,
            levels: Arc::new(levels),
            local_timing_every,
        }
    }

    fn wrap_action(
        &self,
        next: ActionHandler,
        action: &ActionInfo,
        kind: &'static str,
    ) -> ActionHandler {
        let service = action
            .name
            .rsplit_once('.')
            .map_or("null", |(service, _)| service);
        let meter = Arc::new(Meter::new(
            self.families.clone(),
            Kind::Action,
            [service.to_owned(), action.name.clone(), kind.to_owned()],
        ));
        let levels = self.levels.clone();
        // Remote calls are timed every time: a clock read is small beside a round trip.
        let every = if kind == "local" {
            self.local_timing_every
        } else {
            1
        };
        Arc::new(move |ctx: Context| {
            let series = meter.series(ctx.caller());
            match levels.get(ctx.level().wrapping_sub(1) as usize) {
                Some(counter) => counter.inc(),
                None => meter
                    .labels
                    .families
                    .request_levels
                    .with_label_values(&[&ctx.level().to_string()])
                    .inc(),
            }
            let run = Run::start(series, ctx.deadline(), timed(every));
            let fut = next(ctx);
            async move {
                let mut run = run;
                let result = fut.await;
                run.finish(result.as_ref().err());
                result
            }
            .boxed()
        })
    }
}

impl Middleware for MetricsMiddleware {
    fn name(&self) -> &str {
        "Metrics"
    }

    fn local_action(&self, next: ActionHandler, action: &ActionInfo) -> ActionHandler {
        self.wrap_action(next, action, "local")
    }

    fn remote_action(&self, next: ActionHandler, action: &ActionInfo) -> ActionHandler {
        self.wrap_action(next, action, "remote")
    }

    fn emit(&self, next: EmitHandler) -> EmitHandler {
        let families = self.families.clone();
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
        let families = self.families.clone();
        let meters: Arc<RwLock<MetersByService>> = Arc::default();
        let name = event.name.clone();
        Arc::new(move |ctx: Context| {
            // A handler belongs to one service; the meter is made on its first event.
            let service = ctx.service_arc();
            let meter = {
                let found = meters
                    .read()
                    .iter()
                    .find(|(s, _)| s == service)
                    .map(|(_, m)| m.clone());
                found.unwrap_or_else(|| {
                    let meter = Arc::new(Meter::new(
                        families.clone(),
                        Kind::Event,
                        // Without a group of its own, a handler is in its service's group.
                        [
                            service.to_string(),
                            group.clone().unwrap_or_else(|| service.to_string()),
                            name.clone(),
                        ],
                    ));
                    meters.write().push((service.clone(), meter.clone()));
                    meter
                })
            };
            let series = meter.series(ctx.caller());
            let run = Run::start(series, None, true);
            let fut = next(ctx);
            async move {
                let mut run = run;
                let result = fut.await;
                run.finish(result.as_ref().err());
                result
            }
            .boxed()
        })
    }
}

/// An event handler's meters, by the service it runs in.
type MetersByService = Vec<(Arc<str>, Arc<Meter>)>;

#[derive(Clone, Copy)]
enum Kind {
    Action,
    Event,
}

/// The fixed labels of one wrapped action (service, action, type) or event handler (service,
/// group, event), and where its series live.
struct Labels {
    families: Arc<Families>,
    kind: Kind,
    values: [String; 3],
}

impl Labels {
    fn series(self: &Arc<Self>, caller: Option<&str>) -> Series {
        let [a, b, c] = &self.values;
        let values = [a.as_str(), b, c, caller.unwrap_or("null")];
        let f = &self.families;
        let (total, active, time) = match self.kind {
            Kind::Action => (&f.request_total, &f.request_active, &f.request_time),
            Kind::Event => (
                &f.event_received_total,
                &f.event_received_active,
                &f.event_received_time,
            ),
        };
        Series {
            labels: self.clone(),
            caller: caller.map(Arc::from),
            total: total.with_label_values(&values),
            active: active.with_label_values(&values),
            time: time.with_label_values(&values),
        }
    }

    fn errors(&self) -> &IntCounterVec {
        match self.kind {
            Kind::Action => &self.families.request_error_total,
            Kind::Event => &self.families.event_received_error_total,
        }
    }
}

/// The series of one caller.
struct Series {
    labels: Arc<Labels>,
    caller: Option<Arc<str>>,
    total: IntCounter,
    active: IntGauge,
    time: Histogram,
}

impl Series {
    fn count_error(&self, name: &str, code: u16, kind: Option<&str>) {
        let [a, b, c] = &self.labels.values;
        let code = code.to_string();
        self.labels
            .errors()
            .with_label_values(&[
                a.as_str(),
                b,
                c,
                self.caller.as_deref().unwrap_or("null"),
                name,
                &code,
                kind.unwrap_or("null"),
            ])
            .inc();
    }
}

/// The series of one wrapped action or event handler, by caller. Calls from no service (the
/// most common, from outside any handler) find theirs without a lock.
struct Meter {
    labels: Arc<Labels>,
    no_caller: Arc<Series>,
    by_caller: RwLock<Vec<Arc<Series>>>,
}

impl Meter {
    fn new(families: Arc<Families>, kind: Kind, values: [String; 3]) -> Self {
        let labels = Arc::new(Labels {
            families,
            kind,
            values,
        });
        Self {
            no_caller: Arc::new(labels.series(None)),
            labels,
            by_caller: RwLock::new(Vec::new()),
        }
    }

    #[inline]
    fn series(&self, caller: Option<&str>) -> Arc<Series> {
        let Some(caller) = caller else {
            return self.no_caller.clone();
        };
        if let Some(s) = self
            .by_caller
            .read()
            .iter()
            .find(|s| s.caller.as_deref() == Some(caller))
        {
            return s.clone();
        }
        let mut list = self.by_caller.write();
        if let Some(s) = list.iter().find(|s| s.caller.as_deref() == Some(caller)) {
            return s.clone();
        }
        let series = Arc::new(self.labels.series(Some(caller)));
        if list.len() < MAX_CALLERS {
            list.push(series.clone());
        }
        series
    }
}

/// One call or handler run being measured. Dropped unfinished (the caller's deadline passed,
/// or the caller gave up), it still leaves the active gauge and records its time; past the
/// deadline it counts as a `RequestTimeoutError`, as the caller sees it.
struct Run {
    series: Arc<Series>,
    /// When it started, if timed.
    start: Option<Instant>,
    deadline: Option<Instant>,
    finished: bool,
}

impl Run {
    #[inline]
    fn start(series: Arc<Series>, deadline: Option<Instant>, timed: bool) -> Self {
        series.total.inc();
        series.active.inc();
        Self {
            series,
            start: timed.then(Instant::now),
            deadline,
            finished: false,
        }
    }

    #[inline]
    fn finish(&mut self, err: Option<&MoleculerError>) {
        self.finished = true;
        if let Some(err) = err {
            self.series
                .count_error(&err.name, err.code, err.kind.as_deref());
        }
    }
}

impl Drop for Run {
    #[inline]
    fn drop(&mut self) {
        self.series.active.dec();
        if let Some(start) = self.start {
            self.series
                .time
                .observe(start.elapsed().as_secs_f64() * 1000.0);
        }
        if !self.finished && self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.series.count_error(
                moleculer_core::error::names::REQUEST_TIMEOUT,
                504,
                Some("REQUEST_TIMEOUT"),
            );
        }
    }
}
