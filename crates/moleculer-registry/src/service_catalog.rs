//! Services per node.

use std::collections::BTreeMap;

use moleculer_core::service_info::{ActionInfo, EventInfo, ServiceInfo, Version};
use moleculer_core::NodeId;
use serde_json::Value;

/// One service on one node.
#[derive(Debug, Clone)]
pub struct ServiceItem {
    /// Hosting node.
    pub node_id: NodeId,
    /// Service name.
    pub name: String,
    /// Versioned name.
    pub full_name: String,
    /// Version.
    pub version: Option<Version>,
    /// Public settings.
    pub settings: Value,
    /// Metadata.
    pub metadata: Value,
    /// Dependencies as advertised.
    pub dependencies: Option<Value>,
    /// Whether it runs on this node.
    pub local: bool,
    /// Actions by full name.
    pub actions: BTreeMap<String, ActionInfo>,
    /// Events by name.
    pub events: BTreeMap<String, EventInfo>,
}

impl ServiceItem {
    /// Builds the item for `info` hosted on `node_id`.
    pub fn new(node_id: NodeId, info: &ServiceInfo, local: bool) -> Self {
        Self {
            node_id,
            name: info.name.clone(),
            full_name: info.full_name(),
            version: info.version.clone(),
            settings: info.settings.clone(),
            metadata: info.metadata.clone(),
            dependencies: info.dependencies.clone(),
            local,
            actions: info.actions.clone(),
            events: info.events.clone(),
        }
    }

    /// The INFO description of this service (legacy `protected: true` actions left out).
    pub fn to_info(&self) -> ServiceInfo {
        ServiceInfo {
            name: self.name.clone(),
            version: self.version.clone(),
            full_name: self.full_name.clone(),
            settings: self.settings.clone(),
            metadata: self.metadata.clone(),
            dependencies: self.dependencies.clone(),
            actions: self
                .actions
                .iter()
                .filter(|(_, a)| !a.is_legacy_protected())
                .map(|(k, a)| (k.clone(), a.clone()))
                .collect(),
            events: self.events.clone(),
        }
    }
}

/// Every service on every known node.
#[derive(Debug, Default)]
pub struct ServiceCatalog {
    items: Vec<ServiceItem>,
}

impl ServiceCatalog {
    /// Whether `full_name` runs on `node_id` (any node when `None`).
    pub fn has(&self, full_name: &str, node_id: Option<&str>) -> bool {
        self.items
            .iter()
            .any(|s| s.full_name == full_name && node_id.is_none_or(|n| *s.node_id == *n))
    }

    /// Adds or replaces the item for (full name, node).
    pub fn upsert(&mut self, item: ServiceItem) {
        match self
            .items
            .iter_mut()
            .find(|s| s.full_name == item.full_name && s.node_id == item.node_id)
        {
            Some(existing) => *existing = item,
            None => self.items.push(item),
        }
    }

    /// Removes (full name, node); returns the item.
    pub fn remove(&mut self, full_name: &str, node_id: &str) -> Option<ServiceItem> {
        let at = self
            .items
            .iter()
            .position(|s| s.full_name == full_name && *s.node_id == *node_id)?;
        Some(self.items.remove(at))
    }

    /// Removes every service of a node.
    pub fn remove_all_by_node(&mut self, node_id: &str) {
        self.items.retain(|s| *s.node_id != *node_id);
    }

    /// All items.
    pub fn items(&self) -> &[ServiceItem] {
        &self.items
    }

    /// Items on one node.
    pub fn on_node<'a>(&'a self, node_id: &'a str) -> impl Iterator<Item = &'a ServiceItem> + 'a {
        self.items.iter().filter(move |s| *s.node_id == *node_id)
    }
}
