//! Two brokers in one process: every line either logs names the broker it came from, through
//! its `broker{node=...}` span, including lines logged by tasks the broker spawned.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moleculer_broker::ServiceBroker;
use moleculer_core::memory_transporter::MemoryBus;

/// A log sink tests can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_logs_of_two_brokers_in_one_process_can_be_told_apart() {
    let captured = Captured::default();
    let sink = captured.clone();
    // The test runtime is single-threaded, so this default subscriber sees every task.
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let bus = MemoryBus::new();
    let brokers: Vec<ServiceBroker> = ["alpha", "beta"]
        .iter()
        .map(|id| {
            ServiceBroker::builder()
                .node_id(*id)
                .transporter(bus.transporter())
                .build()
                .unwrap()
        })
        .collect();
    for broker in &brokers {
        broker.start().await.unwrap();
    }
    let seen = |a: &ServiceBroker, b: &str| {
        a.with_registry(|r| r.nodes().get(b).is_some_and(|n| n.available))
    };
    for _ in 0..200 {
        if seen(&brokers[0], "beta") && seen(&brokers[1], "alpha") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    brokers[1].stop().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    brokers[0].stop().await;

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let find = |needle: &str| {
        lines
            .iter()
            .filter(|l| l.contains(needle))
            .copied()
            .collect::<Vec<_>>()
    };
    // Membership runs on tasks of each broker: alpha's view of beta, and beta's of alpha.
    let alpha_sees_beta = find("node connected node=beta");
    assert!(!alpha_sees_beta.is_empty(), "{text}");
    assert!(
        alpha_sees_beta
            .iter()
            .all(|l| l.contains("broker{node=alpha}")),
        "{text}"
    );
    let beta_sees_alpha = find("node connected node=alpha");
    assert!(!beta_sees_alpha.is_empty(), "{text}");
    assert!(
        beta_sees_alpha
            .iter()
            .all(|l| l.contains("broker{node=beta}")),
        "{text}"
    );
    // Beta's goodbye, as alpha logs it.
    let left = find("node disconnected node=\"beta\"");
    assert!(
        left.iter().all(|l| l.contains("broker{node=alpha}")) && !left.is_empty(),
        "{text}"
    );
    // Every line of the brokers' own crates names one of them.
    for line in lines.iter().filter(|l| l.contains("moleculer_broker::")) {
        assert!(
            line.contains("broker{node="),
            "a line without its broker: {line}"
        );
    }
}
