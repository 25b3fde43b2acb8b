//! The Redis transporter.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::StreamExt;
use moleculer_core::protocol::{topic_name, topic_prefix, PacketType};
use moleculer_core::transporter::{
    Incoming, IncomingSink, Outgoing, Transporter, TransporterError, TransporterSetup,
};
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use tokio::task::JoinHandle;

use crate::options::RedisOptions;

/// Channels every node subscribes to: broadcast ones and ones with its own id (Moleculer's
/// `makeSubscriptions`).
const BROADCAST: [PacketType; 5] = [
    PacketType::Discover,
    PacketType::Info,
    PacketType::Disconnect,
    PacketType::Heartbeat,
    PacketType::Ping,
];
const TARGETED: [PacketType; 7] = [
    PacketType::Event,
    PacketType::Request,
    PacketType::Response,
    PacketType::Discover,
    PacketType::Info,
    PacketType::Ping,
    PacketType::Pong,
];

struct Running {
    namespace: String,
    client: redis::Client,
    /// Opened at connect, or on the first send after Redis comes up; it reconnects by itself.
    publisher: Option<ConnectionManager>,
    subscriber: JoinHandle<()>,
}

/// Moleculer's Redis transporter.
#[derive(Clone)]
pub struct RedisTransporter {
    opts: RedisOptions,
    running: Arc<Mutex<Option<Running>>>,
    /// Whether our subscription is in place.
    subscribed: Arc<AtomicBool>,
}

impl RedisTransporter {
    /// A transporter for this server.
    pub fn new(opts: RedisOptions) -> Self {
        Self {
            opts,
            running: Arc::new(Mutex::new(None)),
            subscribed: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// The packet type of a channel `<prefix>.<TYPE>[.<nodeID>]` (node ids may contain dots).
fn packet_type(prefix: &str, channel: &str) -> Option<PacketType> {
    let rest = channel.strip_prefix(prefix)?.strip_prefix('.')?;
    rest.split('.').next()?.parse().ok()
}

async fn subscribe(
    client: &redis::Client,
    channels: &[String],
) -> redis::RedisResult<redis::aio::PubSubStream> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channels).await?;
    Ok(pubsub.into_on_message())
}

/// Feeds the sink from one subscription until it ends; `false` once the broker is gone.
async fn pump(messages: &mut redis::aio::PubSubStream, prefix: &str, sink: &IncomingSink) -> bool {
    while let Some(msg) = messages.next().await {
        let channel = msg.get_channel_name();
        let Some(kind) = packet_type(prefix, channel) else {
            tracing::warn!(
                channel,
                "dropped a message on a channel that is not a packet type"
            );
            continue;
        };
        let incoming = Incoming {
            kind,
            payload: msg.get_payload_bytes().to_vec(),
        };
        if sink.send(incoming).is_err() {
            return false;
        }
    }
    true
}

/// The subscription, kept alive: it feeds the sink, and after a loss subscribes again with a
/// backoff (short, so the node is reachable soon after Redis is back), saying when it is back.
/// `subscribed` is true exactly while packets for this node can arrive.
struct Subscriber {
    client: redis::Client,
    url: String,
    channels: Vec<String>,
    prefix: String,
    sink: IncomingSink,
    opts: RedisOptions,
    subscribed: Arc<AtomicBool>,
}

impl Subscriber {
    async fn run(self, first: Option<redis::aio::PubSubStream>) {
        let mut current = first;
        let mut backoff = self.opts.min_backoff;
        let mut lost_at: Option<Instant> = None;
        loop {
            if let Some(mut messages) = current.take() {
                self.subscribed.store(true, Ordering::Release);
                if let Some(since) = lost_at.take() {
                    tracing::warn!(url = %self.url, "subscribed again on Redis at {} after {:.1} s", self.url, since.elapsed().as_secs_f64());
                }
                backoff = self.opts.min_backoff;
                let open = pump(&mut messages, &self.prefix, &self.sink).await;
                self.subscribed.store(false, Ordering::Release);
                if !open {
                    return;
                }
                lost_at = Some(Instant::now());
                tracing::warn!(url = %self.url, "lost the Redis subscription; subscribing again");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.opts.max_backoff);
            match tokio::time::timeout(
                Duration::from_secs(5),
                subscribe(&self.client, &self.channels),
            )
            .await
            {
                Ok(Ok(messages)) => current = Some(messages),
                Ok(Err(err)) => {
                    tracing::debug!(url = %self.url, "cannot subscribe yet: {err}; retrying in {backoff:?}");
                }
                Err(_) => {
                    tracing::debug!(url = %self.url, "no answer to SUBSCRIBE within 5 s; retrying in {backoff:?}");
                }
            }
            if current.is_none() && lost_at.is_none() {
                // Never subscribed yet (Redis was down at connect): count the outage from now.
                lost_at = Some(Instant::now());
            }
        }
    }
}

/// A publishing connection that reconnects by itself once open; `None` (logged) when Redis is
/// unreachable now.
async fn open_publisher(client: &redis::Client, url: &str) -> Option<ConnectionManager> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    match tokio::time::timeout(
        Duration::from_secs(3),
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    {
        Ok(Ok(manager)) => Some(manager),
        Ok(Err(err)) => {
            tracing::warn!(%url, "cannot open a publishing connection to Redis at {url}: {err}");
            None
        }
        Err(_) => {
            tracing::warn!(%url, "Redis at {url} did not answer within 3 s");
            None
        }
    }
}

impl Transporter for RedisTransporter {
    fn name(&self) -> &'static str {
        "Redis"
    }

    async fn connect(&self, setup: TransporterSetup) -> Result<(), TransporterError> {
        let url = self.opts.url.clone();
        let client = redis::Client::open(url.as_str()).map_err(|e| TransporterError::Connect {
            address: url.clone(),
            reason: e.to_string(),
        })?;
        let prefix = topic_prefix(&setup.namespace);
        let node = setup.node_id.as_str();
        let mut channels: Vec<String> = BROADCAST
            .iter()
            .map(|k| topic_name(&setup.namespace, *k, None))
            .collect();
        channels.extend(
            TARGETED
                .iter()
                .map(|k| topic_name(&setup.namespace, *k, Some(node))),
        );
        // First attempt now, so the subscription is in place before the broker announces itself;
        // if Redis is down the loop keeps trying in the background and the broker still starts.
        let first =
            tokio::time::timeout(Duration::from_secs(5), subscribe(&client, &channels)).await;
        let first = match first {
            Ok(Ok(messages)) => Some(messages),
            Ok(Err(err)) => {
                tracing::error!(%url, "cannot reach Redis at {url}: {err}; retrying with backoff, local calls keep working");
                None
            }
            Err(_) => {
                tracing::error!(%url, "Redis at {url} did not answer within 5 s; retrying with backoff, local calls keep working");
                None
            }
        };
        self.subscribed.store(first.is_some(), Ordering::Release);
        let subscriber = Subscriber {
            client: client.clone(),
            url: url.clone(),
            channels,
            prefix,
            sink: setup.incoming.clone(),
            opts: self.opts.clone(),
            subscribed: self.subscribed.clone(),
        };
        let subscriber = moleculer_core::task::spawn(subscriber.run(first));
        let publisher = open_publisher(&client, &url).await;
        *self.running.lock() = Some(Running {
            namespace: setup.namespace,
            client,
            publisher,
            subscriber,
        });
        Ok(())
    }

    async fn send(&self, packet: Outgoing) -> Result<(), TransporterError> {
        let (namespace, publisher, client) = match &*self.running.lock() {
            Some(r) => (r.namespace.clone(), r.publisher.clone(), r.client.clone()),
            None => return Err(TransporterError::NotConnected),
        };
        let mut publisher = match publisher {
            Some(p) => p,
            None => {
                let Some(p) = open_publisher(&client, &self.opts.url).await else {
                    return Err(TransporterError::Send {
                        kind: packet.kind,
                        reason: format!("no connection to Redis at {}", self.opts.url),
                    });
                };
                if let Some(running) = self.running.lock().as_mut() {
                    running.publisher.get_or_insert_with(|| p.clone());
                }
                p
            }
        };
        let channel = topic_name(&namespace, packet.kind, packet.target.as_deref());
        let receivers = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(packet.payload)
            .query_async::<i64>(&mut publisher)
            .await
            .map_err(|e| TransporterError::Send {
                kind: packet.kind,
                reason: format!("PUBLISH {channel} on {}: {e}", self.opts.url),
            })?;
        // Redis says how many subscribers took it. A packet for one node that nobody took is
        // lost (the node is gone, or its subscription is not back yet after an outage): say so
        // now, so a call fails at once with a retryable error instead of waiting out its
        // timeout.
        match &packet.target {
            Some(node) if receivers == 0 => Err(TransporterError::Send {
                kind: packet.kind,
                reason: format!("node '{node}' is not subscribed on {}", self.opts.url),
            }),
            _ => Ok(()),
        }
    }

    async fn disconnect(&self) {
        if let Some(running) = self.running.lock().take() {
            running.subscriber.abort();
        }
        self.subscribed.store(false, Ordering::Release);
    }

    fn is_ready(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_give_packet_types() {
        assert_eq!(
            packet_type("MOL", "MOL.REQ.node-1"),
            Some(PacketType::Request)
        );
        assert_eq!(
            packet_type("MOL-dev", "MOL-dev.HEARTBEAT"),
            Some(PacketType::Heartbeat)
        );
        assert_eq!(
            packet_type("MOL", "MOL.INFO.node.with.dots"),
            Some(PacketType::Info)
        );
        assert_eq!(packet_type("MOL", "MOL.NOPE"), None);
        assert_eq!(packet_type("MOL", "OTHER.REQ"), None);
    }
}
