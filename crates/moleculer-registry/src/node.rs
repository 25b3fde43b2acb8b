//! A node of the cluster as the registry knows it.

use moleculer_core::service_info::{ClientInfo, NodeInfo, ServiceInfo};
use moleculer_core::NodeId;
use serde::Serialize;
use serde_json::Value;

/// One node: identity, liveness, load and what it last said about itself.
///
/// Serializes to the shape of Moleculer's `$node.list` entries.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Node id.
    pub id: NodeId,
    /// Process instance id; a new one means the node restarted.
    #[serde(rename = "instanceID")]
    pub instance_id: String,
    /// Whether the node is considered alive.
    pub available: bool,
    /// Whether this is the local node.
    pub local: bool,
    /// Seconds (on the broker's clock) of the last sign of life.
    pub last_heartbeat_time: f64,
    /// Node config as it advertised it.
    pub config: Value,
    /// Implementation details.
    pub client: ClientInfo,
    /// Broker metadata.
    pub metadata: Value,
    /// IPv4 addresses.
    pub ip_list: Vec<String>,
    /// TCP port, when known.
    pub port: Option<u16>,
    /// Host name.
    pub hostname: String,
    /// UDP discovery address, when known.
    pub udp_address: Option<String>,
    /// Last reported CPU usage (0–100).
    pub cpu: Option<f64>,
    /// Bumped whenever `cpu` changes.
    pub cpu_seq: u64,
    /// INFO sequence number.
    pub seq: u64,
    /// Seconds (on the broker's clock) since when the node is offline.
    pub offline_since: Option<f64>,
    /// Services from its last INFO.
    #[serde(skip)]
    pub services: Vec<ServiceInfo>,
}

impl Node {
    /// A node we have not heard from yet.
    pub fn new(id: NodeId, local: bool) -> Self {
        Self {
            id,
            instance_id: String::new(),
            available: true,
            local,
            last_heartbeat_time: 0.0,
            config: Value::Object(Default::default()),
            client: ClientInfo::default(),
            metadata: Value::Object(Default::default()),
            ip_list: Vec::new(),
            port: None,
            hostname: String::new(),
            udp_address: None,
            cpu: None,
            cpu_seq: 0,
            seq: 0,
            offline_since: None,
            services: Vec::new(),
        }
    }

    /// Applies an INFO. Returns whether its services must be registered again: the seq grew,
    /// the node came back, or it restarted (new instance id).
    pub fn update(&mut self, info: NodeInfo, reconnected: bool) -> bool {
        let restarted = info.instance_id != self.instance_id;
        let newer = info.seq > self.seq;
        self.metadata = info.metadata;
        self.ip_list = info.ip_list;
        self.hostname = info.hostname;
        self.port = info.port.or(self.port);
        self.client = info.client;
        self.config = info.config;
        self.services = info.services;
        self.instance_id = info.instance_id;
        self.seq = info.seq;
        newer || reconnected || restarted
    }

    /// What this node says about itself in INFO: its last INFO for a remote node, the
    /// current description for the local one (give it `services`).
    pub fn info(&self, services: Vec<ServiceInfo>) -> NodeInfo {
        NodeInfo {
            services,
            ip_list: self.ip_list.clone(),
            hostname: self.hostname.clone(),
            client: self.client.clone(),
            config: self.config.clone(),
            instance_id: self.instance_id.clone(),
            metadata: self.metadata.clone(),
            seq: self.seq,
            port: self.port,
        }
    }

    /// Records a heartbeat.
    pub fn heartbeat(&mut self, cpu: Option<f64>, now: f64) {
        if !self.available {
            self.available = true;
            self.offline_since = None;
        }
        if let Some(cpu) = cpu {
            if self.cpu != Some(cpu) {
                self.cpu = Some(cpu);
                self.cpu_seq += 1;
            }
        }
        self.last_heartbeat_time = now;
    }

    /// Marks the node offline.
    pub fn disconnected(&mut self, now: f64) {
        if self.available {
            self.offline_since = Some(now);
            self.seq += 1;
        }
        self.available = false;
    }
}
