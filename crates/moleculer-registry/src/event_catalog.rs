//! One endpoint list per (event pattern, group), with an index for exact names.

use std::collections::HashMap;
use std::sync::Arc;

use moleculer_core::strategy::Strategy;

use crate::endpoint::EventEndpoint;
use crate::endpoint_list::EndpointList;
use crate::wildcard;

/// Endpoint lists of every event subscription.
#[derive(Debug)]
pub struct EventCatalog<E> {
    lists: Vec<EndpointList<EventEndpoint<E>>>,
    /// Lists whose pattern is a plain name, by name: found with one lookup.
    exact: HashMap<Arc<str>, Vec<usize>, foldhash::fast::RandomState>,
    /// Lists whose pattern has wildcards: matched one by one.
    wildcard: Vec<usize>,
}

impl<E> Default for EventCatalog<E> {
    fn default() -> Self {
        Self {
            lists: Vec::new(),
            exact: HashMap::default(),
            wildcard: Vec::new(),
        }
    }
}

impl<E> EventCatalog<E> {
    /// Adds an endpoint to the list of (pattern, group), creating it on first use.
    pub fn add(
        &mut self,
        endpoint: EventEndpoint<E>,
        group: Arc<str>,
        strategy: impl FnOnce() -> Box<dyn Strategy>,
    ) {
        let pattern = endpoint.info.name.as_str();
        let found = self
            .lists
            .iter()
            .position(|l| &**l.name() == pattern && l.group() == Some(&group));
        let index = found.unwrap_or_else(|| {
            let name = Arc::<str>::from(pattern);
            self.lists
                .push(EndpointList::new(name.clone(), Some(group), strategy()));
            let index = self.lists.len() - 1;
            if wildcard::is_pattern(&name) {
                self.wildcard.push(index);
            } else {
                self.exact.entry(name).or_default().push(index);
            }
            index
        });
        self.lists[index].add(endpoint);
    }

    /// Removes one service's subscription to `pattern` on `node_id`.
    pub fn remove(&mut self, pattern: &str, service: &str, node_id: &str) {
        for list in self.lists.iter_mut().filter(|l| &**l.name() == pattern) {
            list.remove_by_service(service, node_id);
        }
    }

    /// Removes every endpoint on a node.
    pub fn remove_by_node(&mut self, node_id: &str) {
        for list in &mut self.lists {
            list.remove_by_node(node_id);
        }
    }

    /// The lists whose pattern matches `event`.
    pub fn matching<'a, 'e>(
        &'a self,
        event: &'e str,
    ) -> impl Iterator<Item = &'a EndpointList<EventEndpoint<E>>> + use<'a, 'e, E> {
        let exact = self.exact.get(event).map(Vec::as_slice).unwrap_or_default();
        let wild = self
            .wildcard
            .iter()
            .filter(move |&&i| wildcard::matches(event, self.lists[i].name()));
        exact.iter().chain(wild).map(move |&i| &self.lists[i])
    }

    /// Every list.
    pub fn lists(&self) -> &[EndpointList<EventEndpoint<E>>] {
        &self.lists
    }
}
