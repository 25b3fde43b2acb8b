//! Every metric the broker keeps, under Moleculer's names, and how the counts other parts keep
//! are copied in when the metrics are read.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use moleculer_core::protocol::PacketType;
use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use super::Sources;

/// A Moleculer metric name as Prometheus writes it: `.` and `-` become `_`.
pub(crate) fn prom_name(dotted: &str) -> String {
    dotted.replace(['.', '-'], "_")
}

const ACTION_LABELS: [&str; 4] = ["service", "action", "type", "caller"];
const ACTION_ERROR_LABELS: [&str; 7] = [
    "service",
    "action",
    "type",
    "caller",
    "errorName",
    "errorCode",
    "errorType",
];
const EVENT_LABELS: [&str; 4] = ["service", "group", "event", "caller"];
const EVENT_ERROR_LABELS: [&str; 7] = [
    "service",
    "group",
    "event",
    "caller",
    "errorName",
    "errorCode",
    "errorType",
];
const BREAKER_LABELS: [&str; 3] = ["affectedNodeID", "service", "action"];

/// The broker's metric families.
pub(crate) struct Families {
    pub request_total: IntCounterVec,
    pub request_active: IntGaugeVec,
    pub request_error_total: IntCounterVec,
    pub request_time: HistogramVec,
    pub request_levels: IntCounterVec,
    /// `request_levels` for levels 2 to [`LEVELS`], made on first use.
    deeper_levels: [OnceLock<IntCounter>; LEVELS as usize - 1],
    pub event_emit_total: IntCounterVec,
    pub event_broadcast_total: IntCounterVec,
    pub event_broadcast_local_total: IntCounterVec,
    pub event_received_total: IntCounterVec,
    pub event_received_active: IntGaugeVec,
    pub event_received_error_total: IntCounterVec,
    pub event_received_time: HistogramVec,
    transit_publish_total: IntCounterVec,
    transit_receive_total: IntCounterVec,
    transit_requests_active: IntGauge,
    transit_orphan_response_total: IntCounter,
    packets_sent_total: IntCounter,
    packets_sent_bytes: IntCounter,
    packets_received_total: IntCounter,
    packets_received_bytes: IntCounter,
    registry_nodes_total: IntGauge,
    registry_nodes_online_total: IntGauge,
    registry_services_total: IntGauge,
    registry_actions_total: IntGauge,
    registry_events_total: IntGauge,
    broker_local_services_total: IntGauge,
    breaker_opened_active: IntGaugeVec,
    breaker_opened_total: IntCounterVec,
    breaker_half_opened_active: IntGaugeVec,
    bulkhead_inflight: IntGaugeVec,
    bulkhead_queue_size: IntGaugeVec,
    cacher_get_total: IntCounter,
    cacher_found_total: IntCounter,
    cacher_set_total: IntCounter,
}

fn opts(dotted: &str, help: &str) -> Opts {
    Opts::new(prom_name(dotted), help)
}

fn counter(r: &Registry, dotted: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::with_opts(opts(dotted, help))?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, dotted: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::with_opts(opts(dotted, help))?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counters(
    r: &Registry,
    dotted: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(opts(dotted, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauges(
    r: &Registry,
    dotted: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(opts(dotted, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histograms(
    r: &Registry,
    dotted: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(
        HistogramOpts::new(prom_name(dotted), help).buckets(buckets.to_vec()),
        labels,
    )?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

/// Sets a counter to a total counted elsewhere (it only ever grows there).
fn catch_up(c: &IntCounter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Call levels with a counter made in advance.
const LEVELS: u32 = 16;

impl Families {
    /// Counts a call at `level` (2 or more; level 1 is worked out when read).
    #[inline]
    pub fn count_level(&self, level: u32) {
        match self.deeper_levels.get(level.wrapping_sub(2) as usize) {
            Some(slot) => slot
                .get_or_init(|| self.request_levels.with_label_values(&[&level.to_string()]))
                .inc(),
            None => self
                .request_levels
                .with_label_values(&[&level.to_string()])
                .inc(),
        }
    }

    /// Sets level 1 of `moleculer_request_levels` from the number of calls started: every
    /// call not counted at a deeper level.
    pub fn settle_levels(&self, started: u64) {
        let deeper: u64 = self
            .request_levels
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "level" && l.value() != "1")
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum();
        catch_up(
            &self.request_levels.with_label_values(&["1"]),
            started.saturating_sub(deeper),
        );
    }

    /// Creates and registers every family; histograms get `buckets` (milliseconds).
    pub fn register(r: &Registry, buckets: &[f64]) -> prometheus::Result<Self> {
        let event_sent = ["event", "groups"];
        Ok(Self {
            deeper_levels: std::array::from_fn(|_| OnceLock::new()),
            request_total: counters(
                r,
                "moleculer.request.total",
                "Number of requests",
                &ACTION_LABELS,
            )?,
            request_active: gauges(
                r,
                "moleculer.request.active",
                "Number of requests in progress",
                &ACTION_LABELS,
            )?,
            request_error_total: counters(
                r,
                "moleculer.request.error.total",
                "Number of request errors",
                &ACTION_ERROR_LABELS,
            )?,
            request_time: histograms(
                r,
                "moleculer.request.time",
                "Request times in milliseconds",
                &ACTION_LABELS,
                buckets,
            )?,
            request_levels: counters(
                r,
                "moleculer.request.levels",
                "Number of requests by call level",
                &["level"],
            )?,
            event_emit_total: counters(
                r,
                "moleculer.event.emit.total",
                "Number of emitted events",
                &event_sent,
            )?,
            event_broadcast_total: counters(
                r,
                "moleculer.event.broadcast.total",
                "Number of broadcast events",
                &event_sent,
            )?,
            event_broadcast_local_total: counters(
                r,
                "moleculer.event.broadcast-local.total",
                "Number of local broadcast events",
                &event_sent,
            )?,
            event_received_total: counters(
                r,
                "moleculer.event.received.total",
                "Number of received events",
                &EVENT_LABELS,
            )?,
            event_received_active: gauges(
                r,
                "moleculer.event.received.active",
                "Number of event handlers running",
                &EVENT_LABELS,
            )?,
            event_received_error_total: counters(
                r,
                "moleculer.event.received.error.total",
                "Number of event handler errors",
                &EVENT_ERROR_LABELS,
            )?,
            event_received_time: histograms(
                r,
                "moleculer.event.received.time",
                "Event handler times in milliseconds",
                &EVENT_LABELS,
                buckets,
            )?,
            transit_publish_total: counters(
                r,
                "moleculer.transit.publish.total",
                "Number of published packets",
                &["type"],
            )?,
            transit_receive_total: counters(
                r,
                "moleculer.transit.receive.total",
                "Number of received packets",
                &["type"],
            )?,
            transit_requests_active: gauge(
                r,
                "moleculer.transit.requests.active",
                "Number of requests waiting for an answer",
            )?,
            transit_orphan_response_total: counter(
                r,
                "moleculer.transit.orphan.response.total",
                "Number of responses nobody waited for",
            )?,
            packets_sent_total: counter(
                r,
                "moleculer.transporter.packets.sent.total",
                "Number of packets sent",
            )?,
            packets_sent_bytes: counter(
                r,
                "moleculer.transporter.packets.sent.bytes",
                "Bytes of packets sent",
            )?,
            packets_received_total: counter(
                r,
                "moleculer.transporter.packets.received.total",
                "Number of packets received",
            )?,
            packets_received_bytes: counter(
                r,
                "moleculer.transporter.packets.received.bytes",
                "Bytes of packets received",
            )?,
            registry_nodes_total: gauge(
                r,
                "moleculer.registry.nodes.total",
                "Number of known nodes",
            )?,
            registry_nodes_online_total: gauge(
                r,
                "moleculer.registry.nodes.online.total",
                "Number of online nodes",
            )?,
            registry_services_total: gauge(
                r,
                "moleculer.registry.services.total",
                "Number of services in the cluster",
            )?,
            registry_actions_total: gauge(
                r,
                "moleculer.registry.actions.total",
                "Number of actions in the cluster",
            )?,
            registry_events_total: gauge(
                r,
                "moleculer.registry.events.total",
                "Number of event subscriptions in the cluster",
            )?,
            broker_local_services_total: gauge(
                r,
                "moleculer.broker.local.services.total",
                "Number of local services",
            )?,
            breaker_opened_active: gauges(
                r,
                "moleculer.circuit-breaker.opened.active",
                "Number of open circuit breakers",
                &BREAKER_LABELS,
            )?,
            breaker_opened_total: counters(
                r,
                "moleculer.circuit-breaker.opened.total",
                "Number of times a circuit breaker opened",
                &BREAKER_LABELS,
            )?,
            breaker_half_opened_active: gauges(
                r,
                "moleculer.circuit-breaker.half-opened.active",
                "Number of half-open circuit breakers",
                &BREAKER_LABELS,
            )?,
            bulkhead_inflight: gauges(
                r,
                "moleculer.request.bulkhead.inflight",
                "Number of requests holding a bulkhead slot",
                &["service", "action"],
            )?,
            bulkhead_queue_size: gauges(
                r,
                "moleculer.request.bulkhead.queue.size",
                "Number of requests waiting for a bulkhead slot",
                &["service", "action"],
            )?,
            cacher_get_total: counter(r, "moleculer.cacher.get.total", "Number of cache reads")?,
            cacher_found_total: counter(r, "moleculer.cacher.found.total", "Number of cache hits")?,
            cacher_set_total: counter(r, "moleculer.cacher.set.total", "Number of cache writes")?,
        })
    }

    /// Copies in the counts kept by transit, the registry, the breakers and the cacher.
    pub fn refresh(&self, s: &Sources) {
        if let Some(transit) = &s.transit {
            let stats = &transit.stats;
            for kind in PacketType::ALL {
                let (sent, received) = (
                    stats.sent[kind as usize].load(Ordering::Relaxed),
                    stats.received[kind as usize].load(Ordering::Relaxed),
                );
                if sent > 0 {
                    catch_up(
                        &self
                            .transit_publish_total
                            .with_label_values(&[kind.as_str()]),
                        sent,
                    );
                }
                if received > 0 {
                    catch_up(
                        &self
                            .transit_receive_total
                            .with_label_values(&[kind.as_str()]),
                        received,
                    );
                }
            }
            let total = |a: &[std::sync::atomic::AtomicU64]| {
                a.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>()
            };
            catch_up(&self.packets_sent_total, total(&stats.sent));
            catch_up(&self.packets_received_total, total(&stats.received));
            catch_up(
                &self.packets_sent_bytes,
                stats.sent_bytes.load(Ordering::Relaxed),
            );
            catch_up(
                &self.packets_received_bytes,
                stats.received_bytes.load(Ordering::Relaxed),
            );
            catch_up(
                &self.transit_orphan_response_total,
                stats.orphan_responses.load(Ordering::Relaxed),
            );
            self.transit_requests_active
                .set(count(transit.pending_count()));
        }
        {
            let registry = s.registry.read();
            let nodes = registry.nodes();
            self.registry_nodes_total.set(count(nodes.count()));
            self.registry_nodes_online_total
                .set(count(nodes.online_count()));
            let services: HashSet<&str> = registry
                .services()
                .items()
                .iter()
                .map(|item| item.full_name.as_str())
                .collect();
            self.registry_services_total.set(count(services.len()));
            self.registry_actions_total
                .set(count(registry.actions().lists().len()));
            self.registry_events_total
                .set(count(registry.events().lists().len()));
            // Bulkheads of local actions.
            for list in registry.actions().lists() {
                for endpoint in list.endpoints() {
                    let Some(bulkhead) = endpoint
                        .handler
                        .as_ref()
                        .and_then(|l| l.target.bulkhead.as_ref())
                    else {
                        continue;
                    };
                    let labels = [&*endpoint.service, &*endpoint.name];
                    self.bulkhead_inflight
                        .with_label_values(&labels)
                        .set(count(bulkhead.in_flight()));
                    self.bulkhead_queue_size
                        .with_label_values(&labels)
                        .set(count(bulkhead.queued()));
                }
            }
            let local = registry.local_node_id().as_str();
            self.broker_local_services_total
                .set(count(registry.services().on_node(local).count()));
        }
        // Breakers come and go with endpoints: the gauges show the current ones only.
        self.breaker_opened_active.reset();
        self.breaker_half_opened_active.reset();
        for b in s.breaker.snapshot() {
            let labels = [b.node.as_str(), &*b.service, &*b.action];
            if b.opened > 0 {
                catch_up(
                    &self.breaker_opened_total.with_label_values(&labels),
                    b.opened,
                );
            }
            match b.state {
                moleculer_core::endpoint_breaker::BreakerState::Open => {
                    self.breaker_opened_active.with_label_values(&labels).set(1);
                }
                moleculer_core::endpoint_breaker::BreakerState::HalfOpen
                | moleculer_core::endpoint_breaker::BreakerState::HalfOpenWait => self
                    .breaker_half_opened_active
                    .with_label_values(&labels)
                    .set(1),
                moleculer_core::endpoint_breaker::BreakerState::Closed => {}
            }
        }
        if let Some(c) = &s.cacher {
            catch_up(&self.cacher_get_total, c.get.load(Ordering::Relaxed));
            catch_up(&self.cacher_found_total, c.found.load(Ordering::Relaxed));
            catch_up(&self.cacher_set_total, c.set.load(Ordering::Relaxed));
        }
    }
}
