//! The `/metrics` endpoint: Prometheus text over HTTP/1.1, one small server per broker.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::BrokerMetrics;

/// Scrapes served at once; more wait for a free slot.
const MAX_CONNECTIONS: usize = 32;
/// A client that has not sent its request head by then is dropped.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A listening endpoint; it stops when dropped.
pub(crate) struct Endpoint {
    /// Where it listens (with the port the system chose, when asked for port 0).
    pub address: SocketAddr,
    accept: JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn answer(metrics: &BrokerMetrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != metrics.settings.path {
        return text(
            StatusCode::NOT_FOUND,
            format!("Not found: metrics are at {}\n", metrics.settings.path),
        );
    }
    match *req.method() {
        Method::GET => text(StatusCode::OK, metrics.render()),
        Method::HEAD => text(StatusCode::OK, String::new()),
        _ => {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "Only GET and HEAD are allowed\n".into(),
            );
            response
                .headers_mut()
                .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
            response
        }
    }
}

/// Binds `host:port` and serves the metrics there until the returned endpoint is dropped.
pub(crate) async fn serve(metrics: Arc<BrokerMetrics>) -> std::io::Result<Endpoint> {
    let listener =
        TcpListener::bind((metrics.settings.host.as_str(), metrics.settings.port)).await?;
    let address = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let accept = moleculer_core::task::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    tracing::warn!("metrics endpoint cannot accept a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            moleculer_core::task::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let response = answer(&metrics, &req);
                    async move { Ok::<_, Infallible>(response) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(err) = served {
                    tracing::debug!("metrics endpoint: a connection ended badly: {err}");
                }
                drop(permit);
            });
        }
    });
    Ok(Endpoint { address, accept })
}
