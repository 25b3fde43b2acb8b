//! The Redis transporter.

use std::sync::Arc;
use std::time::Duration;

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
}

impl RedisTransporter {
    /// A transporter for this server.
    pub fn new(opts: RedisOptions) -> Self {
        Self {
            opts,
            running: Arc::new(Mutex::new(None)),
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

/// Keeps the subscription alive: (re)subscribes with backoff and feeds the sink.
async fn subscriber_loop(
    client: redis::Client,
    url: String,
    channels: Vec<String>,
    prefix: String,
    sink: IncomingSink,
    opts: RedisOptions,
) {
    let mut backoff = opts.min_backoff;
    loop {
        match subscribe(&client, &channels).await {
            Ok(mut messages) => {
                backoff = opts.min_backoff;
                while let Some(msg) = messages.next().await {
                    let channel = msg.get_channel_name();
                    let Some(kind) = packet_type(&prefix, channel) else {
                        tracing::warn!(
                            channel,
                            "dropped a message on a channel that is not a packet type"
                        );
                        continue;
                    };
                    if sink
                        .send(Incoming {
                            kind,
                            payload: msg.get_payload_bytes().to_vec(),
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                tracing::warn!(%url, "lost the Redis subscription; reconnecting");
            }
            Err(err) => {
                tracing::error!(%url, "cannot subscribe on Redis at {url}: {err}; retrying in {backoff:?}");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(opts.max_backoff);
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
        let sink = setup.incoming.clone();
        let opts = self.opts.clone();
        let subscriber = match first {
            Ok(Ok(mut messages)) => {
                let (client, url, channels, prefix) = (
                    client.clone(),
                    url.clone(),
                    channels.clone(),
                    prefix.clone(),
                );
                tokio::spawn(async move {
                    while let Some(msg) = messages.next().await {
                        let Some(kind) = packet_type(&prefix, msg.get_channel_name()) else {
                            continue;
                        };
                        if sink
                            .send(Incoming {
                                kind,
                                payload: msg.get_payload_bytes().to_vec(),
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    tracing::warn!(%url, "lost the Redis subscription; reconnecting");
                    subscriber_loop(client, url, channels, prefix, sink, opts).await;
                })
            }
            Ok(Err(err)) => {
                tracing::error!(%url, "cannot reach Redis at {url}: {err}; retrying with backoff, local calls keep working");
                tokio::spawn(subscriber_loop(
                    client.clone(),
                    url.clone(),
                    channels,
                    prefix,
                    sink,
                    opts,
                ))
            }
            Err(_) => {
                tracing::error!(%url, "Redis at {url} did not answer within 5 s; retrying with backoff, local calls keep working");
                tokio::spawn(subscriber_loop(
                    client.clone(),
                    url.clone(),
                    channels,
                    prefix,
                    sink,
                    opts,
                ))
            }
        };
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
        redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(packet.payload)
            .query_async::<i64>(&mut publisher)
            .await
            .map(|_| ())
            .map_err(|e| TransporterError::Send {
                kind: packet.kind,
                reason: format!("PUBLISH {channel} on {}: {e}", self.opts.url),
            })
    }

    async fn disconnect(&self) {
        if let Some(running) = self.running.lock().take() {
            running.subscriber.abort();
        }
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
