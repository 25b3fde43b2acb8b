//! Options of the TCP transporter, and its `tcp://` URL form.

use std::str::FromStr;
use std::time::Duration;

/// A static peer: `host:port/nodeID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPeer {
    /// Host or IP.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Node id.
    pub node_id: String,
}

/// Options, with Moleculer's names and defaults except where noted. In a config file they sit
/// under `transporterOptions` (camelCase keys; unknown keys are refused).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpOptions {
    /// Address to listen on. Default `127.0.0.1` (Moleculer listens on every interface).
    pub bind: String,
    /// Address advertised to peers (GOSSIP_HELLO `host`, first in `ipList`). Default `127.0.0.1`.
    pub host: String,
    /// TCP port; `None` takes the port of this node's own `urls` entry, else a random one.
    pub port: Option<u16>,
    /// Static peers (in config: `"host:port/nodeID"` strings).
    #[serde(deserialize_with = "peers_from_strings")]
    pub urls: Vec<StaticPeer>,
    /// Seconds between gossip rounds (minimum 1). Default 2.
    pub gossip_period: f64,
    /// Largest frame accepted or sent. Default 1 MiB.
    pub max_packet_size: usize,
    /// UDP announcements (`<namespace>|<nodeID>|<port>`). Default off here (Moleculer: on), so
    /// nothing leaves loopback unless asked; always off when `urls` are given in the URL form.
    pub udp_discovery: bool,
    /// UDP port. Default 4445.
    pub udp_port: u16,
    /// Address the UDP socket binds to. Default `0.0.0.0`.
    pub udp_bind_address: String,
    /// Multicast group; `None` disables multicast. Default `239.0.0.0`.
    pub udp_multicast: Option<String>,
    /// Broadcast address to send to instead of multicast, e.g. `255.255.255.255`.
    pub udp_broadcast: Option<String>,
    /// Seconds between announcements. Default 30.
    pub udp_period: f64,
    /// Most inbound connections held at once; past it, the least recently active one is closed
    /// to make room. Default 1000 (each peer opens one, so this bounds the cluster a node can
    /// serve; raise the process's open-file limit with it). Moleculer's `maxConnections` bounds
    /// the outbound side the same way.
    pub max_inbound_connections: usize,
    /// Seconds a new inbound connection has to say GOSSIP_HELLO before it is closed. Default 10.
    pub hello_timeout: f64,
    /// Seconds a frame may take from its first byte to its last before the connection is
    /// closed (a stalled partial frame holds memory). Default 10.
    pub frame_timeout: f64,
    /// Bad frames and packets after which an inbound connection that sends more bad than good
    /// is closed. Default 100.
    pub max_bad_packets: u64,
}

impl Default for TcpOptions {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1".into(),
            host: "127.0.0.1".into(),
            port: None,
            urls: Vec::new(),
            gossip_period: 2.0,
            max_packet_size: 1024 * 1024,
            udp_discovery: false,
            udp_port: 4445,
            udp_bind_address: "0.0.0.0".into(),
            udp_multicast: Some("239.0.0.0".into()),
            udp_broadcast: None,
            udp_period: 30.0,
            max_inbound_connections: 1000,
            hello_timeout: 10.0,
            frame_timeout: 10.0,
            max_bad_packets: 100,
        }
    }
}

/// A `tcp://` URL or `urls` entry that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid TCP peer '{entry}': {reason} (expected host:port/nodeID)")]
pub struct UrlError {
    /// The entry.
    pub entry: String,
    /// Why.
    pub reason: &'static str,
}

impl FromStr for StaticPeer {
    type Err = UrlError;

    fn from_str(entry: &str) -> Result<Self, UrlError> {
        let err = |reason| UrlError {
            entry: entry.to_owned(),
            reason,
        };
        let (address, node_id) = entry
            .trim()
            .rsplit_once('/')
            .ok_or_else(|| err("no '/nodeID'"))?;
        // Everything before the last ':' is the host, so IPv6 hosts work.
        let (host, port) = address.rsplit_once(':').ok_or_else(|| err("no ':port'"))?;
        let port = port.parse().map_err(|_| err("the port is not a number"))?;
        if host.is_empty() || node_id.is_empty() {
            return Err(err("empty host or node id"));
        }
        Ok(StaticPeer {
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
            node_id: node_id.to_owned(),
        })
    }
}

impl FromStr for TcpOptions {
    type Err = UrlError;

    /// `TCP` (defaults) or `tcp://host:port/nodeID,host:port/nodeID,...` (static peers, UDP off).
    fn from_str(s: &str) -> Result<Self, UrlError> {
        let mut opts = TcpOptions::default();
        let rest = s
            .strip_prefix("tcp://")
            .or_else(|| s.strip_prefix("TCP://"))
            .unwrap_or("");
        if rest.is_empty() {
            return Ok(opts);
        }
        opts.urls = rest
            .split(',')
            .filter(|e| !e.trim().is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        opts.udp_discovery = false;
        Ok(opts)
    }
}

/// A duration in seconds from a config value, at least a millisecond; an infinite value means
/// practically never.
fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.001))
        .unwrap_or(Duration::from_secs(u64::from(u32::MAX)))
}

fn peers_from_strings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<StaticPeer>, D::Error> {
    let entries: Vec<String> = serde::Deserialize::deserialize(d)?;
    entries
        .iter()
        .map(|e| e.parse().map_err(serde::de::Error::custom))
        .collect()
}

impl TcpOptions {
    /// Options from a `TCP` / `tcp://...` string, then the `transporterOptions` table over them.
    pub fn from_config(url: &str, extra: &serde_json::Value) -> Result<Self, String> {
        let mut opts: TcpOptions = url.parse().map_err(|e: UrlError| e.to_string())?;
        if let serde_json::Value::Object(map) = extra {
            let mut base = serde_json::json!({
                "bind": opts.bind, "host": opts.host, "udpDiscovery": opts.udp_discovery,
                "urls": opts.urls.iter().map(|p| format!("{}:{}/{}", p.host, p.port, p.node_id)).collect::<Vec<_>>(),
            });
            for (k, v) in map {
                base[k] = v.clone();
            }
            opts = serde_json::from_value(base).map_err(|e| format!("transporterOptions: {e}"))?;
        }
        Ok(opts)
    }

    /// The gossip period, at least one second.
    pub fn gossip_period(&self) -> Duration {
        Duration::from_secs_f64(self.gossip_period.max(1.0))
    }

    /// The HELLO deadline of a new inbound connection.
    pub fn hello_timeout(&self) -> Duration {
        seconds(self.hello_timeout)
    }

    /// How long one frame may take to arrive.
    pub fn frame_timeout(&self) -> Duration {
        seconds(self.frame_timeout)
    }

    /// The port to listen on for `node_id`: explicit, else its own `urls` entry, else random.
    pub fn listen_port(&self, node_id: &str) -> u16 {
        self.port
            .or_else(|| {
                self.urls
                    .iter()
                    .find(|p| p.node_id == node_id)
                    .map(|p| p.port)
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_moleculers_url_form() {
        let o: TcpOptions = "tcp://127.0.0.1:6001/node-a,127.0.0.1:6002/node-b"
            .parse()
            .unwrap();
        assert_eq!(o.urls.len(), 2);
        assert_eq!(
            o.urls[1],
            StaticPeer {
                host: "127.0.0.1".into(),
                port: 6002,
                node_id: "node-b".into()
            }
        );
        assert!(!o.udp_discovery, "static urls turn UDP off");
        assert_eq!(o.listen_port("node-b"), 6002);
        assert_eq!(o.listen_port("node-c"), 0);
        let v6: StaticPeer = "[::1]:7000/n".parse().unwrap();
        assert_eq!(v6.host, "::1");
    }

    #[test]
    fn bad_entries_are_named() {
        let err = "tcp://127.0.0.1:6001".parse::<TcpOptions>().unwrap_err();
        assert!(
            err.to_string().contains("127.0.0.1:6001") && err.to_string().contains("nodeID"),
            "{err}"
        );
        let err = "tcp://127.0.0.1:x/n".parse::<TcpOptions>().unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
        assert!(
            !"TCP".parse::<TcpOptions>().unwrap().udp_discovery,
            "UDP is opt-in"
        );
        let o = TcpOptions::from_config(
            "TCP",
            &serde_json::json!({"udpDiscovery": true, "udpBroadcast": "10.0.0.255"}),
        )
        .unwrap();
        assert!(o.udp_discovery);
        let err =
            TcpOptions::from_config("TCP", &serde_json::json!({"gossipPeriode": 1})).unwrap_err();
        assert!(err.contains("gossipPeriode"), "{err}");
    }
}
