//! One endpoint list per action name.

use std::collections::HashMap;
use std::sync::Arc;

use moleculer_core::strategy::Strategy;

use crate::endpoint::ActionEndpoint;
use crate::endpoint_list::EndpointList;

/// Endpoint lists of every action, by full action name.
#[derive(Debug)]
pub struct ActionCatalog<A> {
    lists: HashMap<Arc<str>, EndpointList<ActionEndpoint<A>>, foldhash::fast::RandomState>,
}

impl<A> Default for ActionCatalog<A> {
    fn default() -> Self {
        Self {
            lists: HashMap::default(),
        }
    }
}

impl<A> ActionCatalog<A> {
    /// The list of one action.
    pub fn get(&self, name: &str) -> Option<&EndpointList<ActionEndpoint<A>>> {
        self.lists.get(name)
    }

    /// Adds an endpoint. The list (and its strategy, from `strategy`) is created on first use
    /// and kept when its endpoints go, so a vanished action answers "not available" rather
    /// than "not found", as Moleculer does.
    pub fn add(
        &mut self,
        endpoint: ActionEndpoint<A>,
        strategy: impl FnOnce() -> Box<dyn Strategy>,
    ) {
        let name = Arc::<str>::from(endpoint.info.name.as_str());
        self.lists
            .entry(name.clone())
            .or_insert_with(|| EndpointList::new(name, None, strategy()))
            .add(endpoint);
    }

    /// Removes one service's endpoint of `action` on `node_id`.
    pub fn remove(&mut self, action: &str, service: &str, node_id: &str) {
        if let Some(list) = self.lists.get_mut(action) {
            list.remove_by_service(service, node_id);
        }
    }

    /// Removes every endpoint on a node.
    pub fn remove_by_node(&mut self, node_id: &str) {
        for list in self.lists.values_mut() {
            list.remove_by_node(node_id);
        }
    }

    /// Every list, in name order.
    pub fn lists(&self) -> Vec<&EndpointList<ActionEndpoint<A>>> {
        let mut lists: Vec<_> = self.lists.values().collect();
        lists.sort_by(|a, b| a.name().cmp(b.name()));
        lists
    }

    /// Mutable access to one list.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut EndpointList<ActionEndpoint<A>>> {
        self.lists.get_mut(name)
    }
}
