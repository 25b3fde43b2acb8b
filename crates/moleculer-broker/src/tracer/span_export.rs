//! An exporter hook for the tracer's spans: a [`tracing_subscriber::Layer`] that hands every
//! finished action or event span to a function, as a [`FinishedSpan`] with Moleculer's ids,
//! which [`FinishedSpan::to_otlp`] turns into an OpenTelemetry (OTLP/JSON) span.
//!
//! ```no_run
//! use moleculer_broker::SpanExport;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let export = SpanExport::new(|span| {
//!     // Batch and POST to a collector's /v1/traces, or print:
//!     println!("{}", span.to_otlp());
//! });
//! tracing::subscriber::set_global_default(tracing_subscriber::registry().with(export)).unwrap();
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::TARGET;

/// A finished span of the tracer.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedSpan {
    /// `action` or `event`.
    pub kind: String,
    /// Moleculer's span name: `action 'math.add'`.
    pub name: String,
    /// The request id, shared by every span of the request on every node.
    pub trace_id: String,
    /// The context id.
    pub span_id: String,
    /// The calling context's id; `None` for the root.
    pub parent_id: Option<String>,
    /// When it started.
    pub start: SystemTime,
    /// How long it ran.
    pub duration: Duration,
    /// Its other fields: `action` or `event`, `service`, `level`, `caller_node`, `remote`.
    pub tags: BTreeMap<String, String>,
    /// The error's name, when it failed.
    pub error: Option<String>,
}

/// `len` hex digits for a Moleculer id: the id itself when it is a UUID (so JS and Rust
/// spans of one request map alike), else a digest of it.
fn hex_id(id: &str, len: usize) -> String {
    let plain: String = id.chars().filter(|c| *c != '-').collect();
    if plain.len() >= len && plain.chars().all(|c| c.is_ascii_hexdigit()) {
        return plain[..len].to_ascii_lowercase();
    }
    let digest = Sha256::digest(id.as_bytes());
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..len]
        .to_owned()
}

fn unix_nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

impl FinishedSpan {
    /// The span as an OTLP/JSON span object (one item of `scopeSpans[].spans`): 32-digit
    /// trace id and 16-digit span ids from Moleculer's ids, times in Unix nanoseconds, the
    /// tags as string attributes, and an error status when it failed.
    pub fn to_otlp(&self) -> Value {
        let mut attributes: Vec<Value> = self
            .tags
            .iter()
            .map(|(k, v)| json!({ "key": format!("moleculer.{k}"), "value": { "stringValue": v } }))
            .collect();
        attributes.push(
            json!({ "key": "moleculer.requestID", "value": { "stringValue": self.trace_id } }),
        );
        attributes.push(json!({ "key": "moleculer.id", "value": { "stringValue": self.span_id } }));
        let mut span = json!({
            "traceId": hex_id(&self.trace_id, 32),
            "spanId": hex_id(&self.span_id, 16),
            "name": self.name,
            // SERVER: the span of serving a call or an event.
            "kind": 2,
            "startTimeUnixNano": unix_nanos(self.start),
            "endTimeUnixNano": unix_nanos(self.start + self.duration),
            "attributes": attributes,
            "status": match &self.error {
                Some(err) => json!({ "code": 2, "message": err }),
                None => json!({ "code": 1 }),
            },
        });
        if let Some(parent) = &self.parent_id {
            span["parentSpanId"] = json!(hex_id(parent, 16));
        }
        span
    }
}

/// A span being recorded.
struct Open {
    fields: BTreeMap<String, String>,
    start: SystemTime,
    clock: std::time::Instant,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// The exporter layer: calls `sink` with every finished span of the tracer (target
/// `moleculer::tracing`), and ignores every other span.
pub struct SpanExport<F> {
    sink: F,
}

impl<F: Fn(FinishedSpan) + Send + Sync + 'static> SpanExport<F> {
    /// Hands each finished span to `sink` (on the thread that closed it: keep it quick, or
    /// send the span to a channel).
    pub fn new(sink: F) -> Self {
        Self { sink }
    }
}

impl<S, F> Layer<S> for SpanExport<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    F: Fn(FinishedSpan) + Send + Sync + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        if attrs.metadata().target() != TARGET {
            return;
        }
        let mut fields = BTreeMap::new();
        fields.insert("kind".to_owned(), attrs.metadata().name().to_owned());
        attrs.record(&mut Fields(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Open {
                fields,
                start: SystemTime::now(),
                clock: std::time::Instant::now(),
            });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(open) = span.extensions_mut().get_mut::<Open>() {
                values.record(&mut Fields(&mut open.fields));
            }
        }
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(mut open) = span.extensions_mut().remove::<Open>() else {
            return;
        };
        let mut take = |k: &str| open.fields.remove(k);
        let finished = FinishedSpan {
            kind: take("kind").unwrap_or_default(),
            name: take("otel.name").unwrap_or_default(),
            trace_id: take("trace_id").unwrap_or_default(),
            span_id: take("span_id").unwrap_or_default(),
            parent_id: take("parent_id"),
            error: take("error"),
            start: open.start,
            duration: open.clock.elapsed(),
            tags: open.fields,
        };
        (self.sink)(finished);
    }
}
