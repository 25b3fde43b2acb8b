//! The endpoints of one action (or one event group), and the balancing decision between them.

use std::sync::Arc;

use moleculer_core::strategy::{Candidates, SelectionContext, Strategy};
use moleculer_core::NodeId;

use crate::endpoint::Endpoint;
use crate::node_catalog::NodeCatalog;

/// All endpoints of one action name, or of one (event pattern, group), with the strategy
/// instance that balances between them.
#[derive(Debug)]
pub struct EndpointList<T> {
    name: Arc<str>,
    group: Option<Arc<str>>,
    internal: bool,
    endpoints: Vec<T>,
    strategy: Box<dyn Strategy>,
    generation: u64,
}

impl<T: Endpoint> EndpointList<T> {
    /// An empty list. Names starting with `$` are internal: served locally whenever possible.
    pub fn new(name: Arc<str>, group: Option<Arc<str>>, strategy: Box<dyn Strategy>) -> Self {
        let internal = name.starts_with('$');
        Self {
            name,
            group,
            internal,
            endpoints: Vec::new(),
            strategy,
            generation: 0,
        }
    }

    /// Action name or event pattern.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Event group (event lists only).
    pub fn group(&self) -> Option<&Arc<str>> {
        self.group.as_ref()
    }

    /// Every endpoint, available or not.
    pub fn endpoints(&self) -> &[T] {
        &self.endpoints
    }

    /// Adds an endpoint, replacing the one of the same service on the same node.
    pub fn add(&mut self, endpoint: T) {
        self.generation += 1;
        match self
            .endpoints
            .iter_mut()
            .find(|e| e.node_id() == endpoint.node_id() && e.service() == endpoint.service())
        {
            Some(existing) => *existing = endpoint,
            None => self.endpoints.push(endpoint),
        }
    }

    /// Removes every endpoint on `node_id`.
    pub fn remove_by_node(&mut self, node_id: &str) {
        let before = self.endpoints.len();
        self.endpoints.retain(|e| **e.node_id() != *node_id);
        if self.endpoints.len() != before {
            self.generation += 1;
        }
    }

    /// Removes the endpoint of `service` on `node_id`.
    pub fn remove_by_service(&mut self, service: &str, node_id: &str) {
        let before = self.endpoints.len();
        self.endpoints
            .retain(|e| !(e.service() == service && **e.node_id() == *node_id));
        if self.endpoints.len() != before {
            self.generation += 1;
        }
    }

    /// Whether a local endpoint exists.
    pub fn has_local(&self) -> bool {
        self.endpoints.iter().any(Endpoint::is_local)
    }

    /// Whether any endpoint is available.
    pub fn has_available(&self) -> bool {
        self.endpoints.iter().any(Endpoint::is_available)
    }

    /// Switches the endpoint on `node_id` on or off for balancing; `false` when there is none or
    /// it already was so.
    pub fn set_available(&mut self, node_id: &str, available: bool) -> bool {
        let Some(endpoint) = self
            .endpoints
            .iter_mut()
            .find(|e| **e.node_id() == *node_id && e.is_available() != available)
        else {
            return false;
        };
        endpoint.set_available(available);
        // The candidate set changed: strategies that cache by generation must rebuild.
        self.generation += 1;
        true
    }

    /// The available endpoint on `node_id`, if any.
    pub fn on_node(&self, node_id: &str) -> Option<&T> {
        self.endpoints
            .iter()
            .find(|e| **e.node_id() == *node_id && e.is_available())
    }

    /// Picks the endpoint for one request: internal lists and `prefer_local` keep the call on this
    /// node when it can serve it; a single endpoint is taken as is; otherwise the strategy
    /// chooses among the available ones.
    pub fn next(
        &self,
        nodes: &NodeCatalog,
        ctx: &SelectionContext<'_>,
        prefer_local: bool,
    ) -> Option<&T> {
        if self.endpoints.is_empty() {
            return None;
        }
        if self.internal && self.has_local() {
            return self.next_local(nodes, ctx);
        }
        if let [only] = self.endpoints.as_slice() {
            return only.is_available().then_some(only);
        }
        if prefer_local && self.has_local() {
            if let Some(local) = self.next_local(nodes, ctx) {
                return Some(local);
            }
        }
        self.choose(nodes, ctx, false, &[])
    }

    /// As [`next`](Self::next), but not on the nodes in `avoid` (a retry avoids the node that
    /// just failed) unless no other node can take the request.
    pub fn next_avoiding(
        &self,
        nodes: &NodeCatalog,
        ctx: &SelectionContext<'_>,
        prefer_local: bool,
        avoid: &[NodeId],
    ) -> Option<&T> {
        if avoid.is_empty() {
            return self.next(nodes, ctx, prefer_local);
        }
        let local_first = (self.internal || prefer_local) && self.has_local();
        let pick = if local_first {
            self.choose(nodes, ctx, true, avoid)
                .or_else(|| self.choose(nodes, ctx, false, avoid))
        } else {
            self.choose(nodes, ctx, false, avoid)
        };
        pick.or_else(|| self.next(nodes, ctx, prefer_local))
    }

    /// Picks among the local endpoints only.
    pub fn next_local(&self, nodes: &NodeCatalog, ctx: &SelectionContext<'_>) -> Option<&T> {
        self.choose(nodes, ctx, true, &[])
    }

    fn choose(
        &self,
        nodes: &NodeCatalog,
        ctx: &SelectionContext<'_>,
        local_only: bool,
        avoid: &[NodeId],
    ) -> Option<&T> {
        let eligible = |e: &T| {
            e.is_available()
                && (!local_only || e.is_local())
                && !avoid.iter().any(|n| n == e.node_id())
        };
        let mut count = 0;
        let mut last = None;
        for (i, e) in self.endpoints.iter().enumerate() {
            if eligible(e) {
                count += 1;
                last = Some(i);
            }
        }
        // Local lists usually hold one endpoint: no strategy, no allocation.
        match count {
            0 => return None,
            1 => return last.map(|i| &self.endpoints[i]),
            _ => {}
        }
        // Identifies the candidate set, for strategies that cache per set (Shard's ring).
        let generation = avoid.iter().fold(
            (self.generation * 2 + u64::from(local_only)).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            |h, n| (h ^ fnv(n)).wrapping_mul(0x0000_0100_0000_01b3),
        );
        let indices: Option<Vec<usize>> = (count != self.endpoints.len()).then(|| {
            (0..self.endpoints.len())
                .filter(|&i| eligible(&self.endpoints[i]))
                .collect()
        });
        let view = View {
            endpoints: &self.endpoints,
            indices: indices.as_deref(),
            nodes,
            generation,
        };
        let pick = self.strategy.select(&view, ctx)?;
        let index = match &indices {
            Some(ix) => *ix.get(pick)?,
            None => pick,
        };
        self.endpoints.get(index)
    }
}

/// FNV-1a of a node id (mixed into a candidate set's identity).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The strategy's view of the eligible endpoints.
struct View<'a, T> {
    endpoints: &'a [T],
    indices: Option<&'a [usize]>,
    nodes: &'a NodeCatalog,
    generation: u64,
}

impl<T: Endpoint> View<'_, T> {
    fn at(&self, i: usize) -> &T {
        match self.indices {
            Some(ix) => &self.endpoints[ix[i]],
            None => &self.endpoints[i],
        }
    }
}

impl<T: Endpoint> Candidates for View<'_, T> {
    fn len(&self) -> usize {
        self.indices.map_or(self.endpoints.len(), <[usize]>::len)
    }
    fn node_id(&self, i: usize) -> &str {
        self.at(i).node_id()
    }
    fn cpu(&self, i: usize) -> Option<f64> {
        self.nodes.get(self.at(i).node_id())?.cpu
    }
    fn latency_ms(&self, i: usize) -> Option<f64> {
        self.nodes.latency_ms(self.at(i).node_id())
    }
    fn generation(&self) -> u64 {
        self.generation
    }
}
