//! What a node run by the runner writes about itself: log lines on stderr (text or JSON, at
//! `RUST_LOG`), and, when `tracing.exporter` is set, its spans shipped to a collector. Both
//! are layers of one subscriber, each with its own filter, so a quiet log level does not
//! silence the spans.

use std::io::IsTerminal;

use moleculer_broker::{otlp_export, BrokerOptions, LogFormat, OtlpShipper, TRACING_TARGET};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// How the node logs: `None` for not at all (`--silent`, outside a worker).
pub(crate) struct Logs<'a> {
    pub default_level: &'a str,
    pub format: LogFormat,
}

/// Installs the subscriber, unless the program set one up itself; returns the span shipper
/// to start once the broker runs. The error is a sentence about the exporter's settings.
pub(crate) fn init(
    logs: Option<Logs<'_>>,
    options: &BrokerOptions,
    service: &str,
) -> Result<Option<OtlpShipper>, String> {
    let log_layer: Option<Box<dyn Layer<Registry> + Send + Sync>> = logs.map(|logs| {
        let filter =
            EnvFilter::new(std::env::var("RUST_LOG").unwrap_or_else(|_| logs.default_level.into()));
        let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        match logs.format {
            LogFormat::Json => layer.json().with_filter(filter).boxed(),
            LogFormat::Text => layer
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(filter)
                .boxed(),
        }
    });
    let (export_layer, shipper) = match options.tracing.exporter.as_ref() {
        Some(settings) if options.tracing.enabled => {
            let (layer, shipper) = otlp_export(settings, service)?;
            let only_spans = Targets::new().with_target(TRACING_TARGET, LevelFilter::INFO);
            (Some(layer.with_filter(only_spans)), Some(shipper))
        }
        _ => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(log_layer)
        .with(export_layer)
        .try_init();
    Ok(shipper)
}
