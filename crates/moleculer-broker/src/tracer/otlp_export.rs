//! Shipping spans to an OpenTelemetry collector: OTLP, JSON over HTTP/1.1. Finished spans go
//! into a bounded queue (a full queue drops spans and counts them, it never blocks a call),
//! and a task posts them in batches to the collector's traces URL every interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex};

use super::settings::ExporterSettings;
use super::span_export::{FinishedSpan, SpanExport};

/// Spans waiting for the next batch, at most.
const QUEUE: usize = 10_000;

/// The shipping half: drains the queue to the collector.
#[derive(Clone)]
pub struct OtlpShipper(Arc<Shipper>);

struct Shipper {
    queue: Mutex<mpsc::Receiver<Value>>,
    uri: Uri,
    interval: Duration,
    service: String,
    dropped: Arc<AtomicU64>,
}

/// The exporter layer and its shipper, for `settings`; spans carry `service` as the
/// resource's `service.name`. The error is a sentence naming the bad URL.
pub fn otlp_export(
    settings: &ExporterSettings,
    service: &str,
) -> Result<
    (
        SpanExport<impl Fn(FinishedSpan) + Send + Sync + 'static>,
        OtlpShipper,
    ),
    String,
> {
    let uri: Uri = settings
        .url
        .parse()
        .map_err(|e| format!("tracing.exporter.url '{}' is not a URL: {e}", settings.url))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "tracing.exporter.url '{}' must be an http:// URL with a host",
            settings.url
        ));
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let lost = dropped.clone();
    let layer = SpanExport::new(move |span: FinishedSpan| {
        if tx.try_send(span.to_otlp()).is_err() {
            lost.fetch_add(1, Ordering::Relaxed);
        }
    });
    let shipper = OtlpShipper(Arc::new(Shipper {
        queue: Mutex::new(rx),
        uri,
        interval: Duration::from_secs_f64(settings.interval),
        service: service.to_owned(),
        dropped,
    }));
    Ok((layer, shipper))
}

impl OtlpShipper {
    /// Posts a batch every interval, for ever (spawn it; [`flush`](Self::flush) at the end).
    pub async fn run(self) {
        let mut tick = tokio::time::interval(self.0.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.flush().await;
        }
    }

    /// Posts what is queued now. A collector that cannot be reached costs the batch and a
    /// warning; the next batch tries again.
    pub async fn flush(&self) {
        let spans: Vec<Value> = {
            let mut queue = self.0.queue.lock().await;
            let mut spans = Vec::new();
            while let Ok(span) = queue.try_recv() {
                spans.push(span);
            }
            spans
        };
        let dropped = self.0.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!("{dropped} spans were dropped: the exporter's queue was full");
        }
        if spans.is_empty() {
            return;
        }
        let count = spans.len();
        if let Err(err) = self.post(self.batch(spans)).await {
            tracing::warn!(
                url = %self.0.uri,
                "cannot ship {count} spans to the collector: {err}"
            );
        }
    }

    /// An OTLP/JSON `ExportTraceServiceRequest` of `spans`.
    fn batch(&self, spans: Vec<Value>) -> Value {
        json!({
            "resourceSpans": [{
                "resource": { "attributes": [
                    { "key": "service.name", "value": { "stringValue": self.0.service } },
                    { "key": "telemetry.sdk.name", "value": { "stringValue": "moleculer-rs" } },
                ]},
                "scopeSpans": [{ "scope": { "name": "moleculer" }, "spans": spans }],
            }]
        })
    }

    async fn post(&self, body: Value) -> Result<(), String> {
        let uri = &self.0.uri;
        let host = uri.host().unwrap_or("127.0.0.1");
        let port = uri.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| "no connection within 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        moleculer_core::task::spawn(connection);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = Request::post(path)
            .header(HOST, format!("{host}:{port}"))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
            .await
            .map_err(|_| "no answer within 10 s".to_owned())?
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("the collector answered {}", response.status()))
        }
    }
}
