//! Distributed tracing, as Moleculer does it: every traced action call (and, when asked, event
//! handler run) is a span whose trace id is the request id, whose id is the context id and
//! whose parent is the calling context, so a trace crosses nodes in the packets' `requestID`,
//! `parentID`, `level` and `tracing` fields, JS nodes included.
//!
//! Spans are [`tracing`] spans (target `moleculer::tracing`, named `action` or `event`), so
//! any subscriber layer can record or export them. [`SpanExport`] is such a layer: it hands
//! each finished span to a function, and [`FinishedSpan::to_otlp`] shapes it for OpenTelemetry.

mod otlp_export;
mod settings;
mod span_export;
mod span_middleware;

pub use otlp_export::{otlp_export, OtlpShipper};
pub use settings::{ExporterSettings, SamplingSettings, TracingSettings};
pub use span_export::{FinishedSpan, SpanExport};
pub(crate) use span_middleware::TracingMiddleware;

/// The target of every span the tracer opens.
pub const TARGET: &str = "moleculer::tracing";
