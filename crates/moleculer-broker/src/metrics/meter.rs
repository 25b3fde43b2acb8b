//! The meter of one action (service, action, type) or event handler (service, group, event):
//! its series by caller, counted and timed as the call future or the event middleware reports
//! calls to it.
//!
//! A call touches two atomics (started, finished) and, when timed, the histogram; the active
//! gauge is started minus finished, and level 1 of `moleculer_request_levels` is every call
//! minus the deeper ones, both worked out when the metrics are read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moleculer_core::call_meter::{CallMeter, CallOutcome};
use moleculer_core::MoleculerError;
use parking_lot::RwLock;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};

use super::Families;

/// Callers kept per meter; beyond these, a call looks its series up by label.
const MAX_CALLERS: usize = 64;

/// What a meter measures.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Action calls (`moleculer_request_*`).
    Action,
    /// Event handler runs (`moleculer_event_received_*`).
    Event,
}

thread_local! {
    /// Calls to start on this thread before the next timed one.
    static UNTIL_TIMED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether to time this call: one call in `every` on each thread, the first one included.
/// A countdown, not a division: this runs on every call.
#[inline]
fn timed(every: u32) -> bool {
    if every <= 1 {
        return true;
    }
    UNTIL_TIMED.with(|left| match left.get() {
        0 => {
            left.set(every - 1);
            true
        }
        n => {
            left.set(n - 1);
            false
        }
    })
}

/// The series of one caller.
pub(crate) struct Series {
    caller: Option<Arc<str>>,
    total: IntCounter,
    finished: AtomicU64,
    active: IntGauge,
    time: Histogram,
}

/// The meter of one action or event handler.
pub(crate) struct Meter {
    families: Arc<Families>,
    kind: Kind,
    labels: [String; 3],
    timing_every: u32,
    no_caller: Series,
    by_caller: RwLock<Vec<Arc<Series>>>,
}

impl Meter {
    /// A meter labelled (service, action, type) for actions, (service, group, event) for
    /// events; it times one call in `timing_every`.
    pub fn new(
        families: Arc<Families>,
        kind: Kind,
        labels: [String; 3],
        timing_every: u32,
    ) -> Self {
        let no_caller = make_series(&families, kind, &labels, None);
        Self {
            families,
            kind,
            labels,
            timing_every,
            no_caller,
            by_caller: RwLock::new(Vec::new()),
        }
    }

    /// Runs `f` on the series of `caller`, made on first use. Calls from no service (the most
    /// common) take no lock.
    #[inline]
    fn with_series<R>(&self, caller: Option<&str>, f: impl FnOnce(&Series) -> R) -> R {
        let Some(caller) = caller else {
            return f(&self.no_caller);
        };
        if let Some(s) = self
            .by_caller
            .read()
            .iter()
            .find(|s| s.caller.as_deref() == Some(caller))
        {
            return f(s);
        }
        let mut list = self.by_caller.write();
        if let Some(s) = list.iter().find(|s| s.caller.as_deref() == Some(caller)) {
            return f(s);
        }
        let series = Arc::new(make_series(
            &self.families,
            self.kind,
            &self.labels,
            Some(caller),
        ));
        let out = f(&series);
        if list.len() < MAX_CALLERS {
            list.push(series);
        }
        out
    }

    /// Whether it measures action calls.
    pub fn is_action(&self) -> bool {
        self.kind == Kind::Action
    }

    /// Sets each series' active gauge to its started minus finished calls; returns every call
    /// started, for the level-1 count.
    pub fn settle(&self) -> u64 {
        let settle = |s: &Series| {
            let (total, done) = (s.total.get(), s.finished.load(Ordering::Relaxed));
            s.active
                .set(i64::try_from(total.saturating_sub(done)).unwrap_or(i64::MAX));
            total
        };
        settle(&self.no_caller) + self.by_caller.read().iter().map(|s| settle(s)).sum::<u64>()
    }

    fn count_error(&self, caller: Option<&str>, err: &MoleculerError) {
        let [a, b, c] = &self.labels;
        let code = err.code.to_string();
        let errors = match self.kind {
            Kind::Action => &self.families.request_error_total,
            Kind::Event => &self.families.event_received_error_total,
        };
        errors
            .with_label_values(&[
                a.as_str(),
                b,
                c,
                caller.unwrap_or("null"),
                &err.name,
                &code,
                err.kind.as_deref().unwrap_or("null"),
            ])
            .inc();
    }
}

fn make_series(
    families: &Families,
    kind: Kind,
    labels: &[String; 3],
    caller: Option<&str>,
) -> Series {
    let [a, b, c] = labels;
    let values = [a.as_str(), b, c, caller.unwrap_or("null")];
    let (total, active, time): (&IntCounterVec, _, _) = match kind {
        Kind::Action => (
            &families.request_total,
            &families.request_active,
            &families.request_time,
        ),
        Kind::Event => (
            &families.event_received_total,
            &families.event_received_active,
            &families.event_received_time,
        ),
    };
    Series {
        caller: caller.map(Arc::from),
        total: total.with_label_values(&values),
        finished: AtomicU64::new(0),
        active: active.with_label_values(&values),
        time: time.with_label_values(&values),
    }
}

impl CallMeter for Meter {
    #[inline]
    fn started(&self, caller: Option<&str>, level: u32) -> bool {
        self.with_series(caller, |s| s.total.inc());
        // Level 1 is worked out when read: every call minus the deeper ones.
        if level > 1 && self.kind == Kind::Action {
            self.families.count_level(level);
        }
        timed(self.timing_every)
    }

    #[inline]
    fn finished(&self, caller: Option<&str>, elapsed: Option<Duration>, outcome: CallOutcome<'_>) {
        self.with_series(caller, |s| {
            s.finished.fetch_add(1, Ordering::Relaxed);
            if let Some(elapsed) = elapsed {
                s.time.observe(elapsed.as_secs_f64() * 1000.0);
            }
        });
        if let CallOutcome::Failed(err) = outcome {
            self.count_error(caller, err);
        }
    }
}
