//! A node run by the runner ships its spans to an OpenTelemetry collector (OTLP, JSON over
//! HTTP): a small collector stand-in on 127.0.0.1 receives the batches, and one call's spans
//! arrive in one trace with their parent links. A bad exporter setting exits 2 with a sentence.

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};
use support::{common_env, local_broker, serving, tcp_urls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Accepts POSTs, keeps their JSON bodies, answers 200.
async fn collector() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = bodies.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 8192];
                // The head, then as much body as Content-Length says.
                let (head_end, length) = loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_string();
                    if let Some(at) = text.find("\r\n\r\n") {
                        let length = text[..at]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        break (at + 4, length);
                    }
                };
                while seen.len() < head_end + length {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                assert!(String::from_utf8_lossy(&seen).starts_with("POST /v1/traces HTTP/1.1"));
                if let Ok(body) = serde_json::from_slice(&seen[head_end..]) {
                    kept.lock().push(body);
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                    )
                    .await;
            });
        }
    });
    (port, bodies)
}

/// Every span received so far, with its batch's `service.name`.
fn spans(bodies: &Mutex<Vec<Value>>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for body in bodies.lock().iter() {
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .map(|a| {
                    a["value"]["stringValue"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .unwrap_or_default();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    out.push((service.clone(), span.clone()));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector_in_one_trace() {
    let (port, bodies) = collector().await;
    let env = common_env(&tcp_urls(&["traced", "caller"]));
    let mut child = Command::new(support::node_binary())
        .current_dir(std::env::temp_dir())
        .envs(env.iter().cloned())
        .env("MOL_NODE_ID", "traced")
        .env("MOL_TRACING__ENABLED", "true")
        .env("MOL_TRACING__EXPORTER__TYPE", "OTLP")
        .env(
            "MOL_TRACING__EXPORTER__URL",
            format!("http://127.0.0.1:{port}/v1/traces"),
        )
        .env("MOL_TRACING__EXPORTER__INTERVAL", "0.2")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let caller = local_broker("caller", &env).await;
    serving(&caller, "traced", Duration::from_secs(20))
        .await
        .expect("the node serves");
    let pinned = moleculer::CallOptions::default().node_id("traced");
    let answer = caller
        .call_with(
            "relay.call",
            json!({"action": "math.add", "params": {"a": 1, "b": 2}}),
            pinned,
        )
        .await
        .unwrap();
    assert_eq!(answer["data"], 3);

    let deadline = Instant::now() + Duration::from_secs(10);
    let (relay, add) = loop {
        let all = spans(&bodies);
        let named = |n: &str| all.iter().find(|(_, s)| s["name"] == n).cloned();
        if let (Some(relay), Some(add)) = (named("action 'relay.call'"), named("action 'math.add'"))
        {
            break (relay, add);
        }
        assert!(
            Instant::now() < deadline,
            "the spans did not arrive: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(relay.0, "traced", "service.name is the node id");
    let (relay, add) = (relay.1, add.1);
    assert_eq!(relay["traceId"], add["traceId"], "one trace");
    assert_eq!(relay["traceId"].as_str().unwrap().len(), 32);
    assert_eq!(
        add["parentSpanId"], relay["spanId"],
        "math.add is relay.call's child"
    );
    assert_eq!(relay["spanId"].as_str().unwrap().len(), 16);
    let id = relay["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "moleculer.id")
        .unwrap();
    assert_eq!(
        id["value"]["stringValue"], answer["context"]["id"],
        "the relaying context"
    );

    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the node did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
    caller.stop().await;
}

#[test]
fn a_bad_exporter_exits_2_with_a_sentence() {
    let out = Command::new(support::node_binary())
        .current_dir(std::env::temp_dir())
        .env("MOL_TRACING__ENABLED", "true")
        .env("MOL_TRACING__EXPORTER__TYPE", "Zipkin")
        .env("MOL_TRACING__EXPORTER__URL", "http://127.0.0.1:9411")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tracing.exporter.type") && err.contains("'Zipkin' is not an exporter here"),
        "{err}"
    );
}
