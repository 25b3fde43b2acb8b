//! Object-safe bridges for the backends, which are written with `async fn`.

use std::sync::Arc;

use futures::future::BoxFuture;
use moleculer_core::discoverer::{Discoverer, DiscoveryLink, DiscoveryTiming};
use moleculer_core::protocol::Packet;
use moleculer_core::transporter::{Outgoing, Transporter, TransporterError, TransporterSetup};
use moleculer_core::NodeId;

pub(crate) trait DynTransporter: Send + Sync {
    fn name(&self) -> &'static str;
    fn connect(&self, setup: TransporterSetup) -> BoxFuture<'_, Result<(), TransporterError>>;
    fn send(&self, packet: Outgoing) -> BoxFuture<'_, Result<(), TransporterError>>;
    fn disconnect(&self) -> BoxFuture<'_, ()>;
    fn is_ready(&self) -> bool;
}

impl<T: Transporter> DynTransporter for T {
    fn name(&self) -> &'static str {
        Transporter::name(self)
    }
    fn connect(&self, setup: TransporterSetup) -> BoxFuture<'_, Result<(), TransporterError>> {
        Box::pin(Transporter::connect(self, setup))
    }
    fn send(&self, packet: Outgoing) -> BoxFuture<'_, Result<(), TransporterError>> {
        Box::pin(Transporter::send(self, packet))
    }
    fn disconnect(&self) -> BoxFuture<'_, ()> {
        Box::pin(Transporter::disconnect(self))
    }
    fn is_ready(&self) -> bool {
        Transporter::is_ready(self)
    }
}

pub(crate) trait DynDiscoverer: Send + Sync {
    fn name(&self) -> &'static str;
    fn start(
        &self,
        link: Arc<dyn DiscoveryLink>,
        timing: DiscoveryTiming,
    ) -> BoxFuture<'_, Result<(), TransporterError>>;
    fn packet_received(&self, packet: Packet) -> BoxFuture<'_, ()>;
    fn send_local_info(&self, target: Option<NodeId>) -> BoxFuture<'_, ()>;
    fn discover_node(&self, node: NodeId) -> BoxFuture<'_, ()>;
    fn discover_all(&self) -> BoxFuture<'_, ()>;
    fn stop(&self) -> BoxFuture<'_, ()>;
}

impl<D: Discoverer> DynDiscoverer for D {
    fn name(&self) -> &'static str {
        Discoverer::name(self)
    }
    fn start(
        &self,
        link: Arc<dyn DiscoveryLink>,
        timing: DiscoveryTiming,
    ) -> BoxFuture<'_, Result<(), TransporterError>> {
        Box::pin(Discoverer::start(self, link, timing))
    }
    fn packet_received(&self, packet: Packet) -> BoxFuture<'_, ()> {
        Box::pin(Discoverer::packet_received(self, packet))
    }
    fn send_local_info(&self, target: Option<NodeId>) -> BoxFuture<'_, ()> {
        Box::pin(Discoverer::send_local_info(self, target))
    }
    fn discover_node(&self, node: NodeId) -> BoxFuture<'_, ()> {
        Box::pin(Discoverer::discover_node(self, node))
    }
    fn discover_all(&self) -> BoxFuture<'_, ()> {
        Box::pin(Discoverer::discover_all(self))
    }
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(Discoverer::stop(self))
    }
}
