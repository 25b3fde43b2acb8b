//! What the TCP transporter, its gossip discoverer and UDP discovery share: the connection to
//! the broker, where each peer listens, and the peer events the transporter raises.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use moleculer_core::protocol::{GossipHelloPacket, Packet, PacketType, ProtocolVersion};
use moleculer_core::serializer::Serializer;
use moleculer_core::transporter::IncomingSink;
use moleculer_core::NodeId;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::options::TcpOptions;

/// Something happened to the connection with a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerEvent {
    /// Our own connection to it closed or could not be opened: it is gone. (A connection it
    /// opened to us closing proves nothing: any process can open and close one.)
    Closed(NodeId),
    /// It said HELLO on a connection it opened to us, telling where it listens (or UDP
    /// announced it).
    Hello(NodeId, SocketAddr),
}

/// Where a peer can be reached.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub addr: Option<SocketAddr>,
    /// From `urls` or UDP: contacted even while offline.
    pub static_peer: bool,
    /// From `urls`: the configured address is never replaced.
    pub configured: bool,
}

/// The broker's side of a connected transporter.
pub(crate) struct Connected {
    pub node_id: NodeId,
    pub namespace: String,
    pub incoming: IncomingSink,
    pub serializer: Arc<dyn Serializer>,
    pub version: ProtocolVersion,
}

/// Our current outbound connection to one peer.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    /// Which connection this is: a connection that ends after it was replaced (the peer moved)
    /// or closed on purpose says nothing about the peer.
    pub id: u64,
    /// Its queue of frames.
    pub frames: mpsc::UnboundedSender<Vec<u8>>,
}

/// State shared by the transporter, the gossip discoverer and UDP discovery.
pub(crate) struct PeerState {
    pub opts: TcpOptions,
    pub connected: Mutex<Option<Arc<Connected>>>,
    pub peers: Mutex<HashMap<NodeId, Peer>>,
    /// Our outbound connection to each peer: frames go to its writer task.
    pub writers: Mutex<HashMap<NodeId, Writer>>,
    port: AtomicU16,
    events: mpsc::UnboundedSender<PeerEvent>,
    events_rx: Mutex<Option<mpsc::UnboundedReceiver<PeerEvent>>>,
    pub udp_tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl PeerState {
    pub fn new(opts: TcpOptions) -> Self {
        let (events, events_rx) = mpsc::unbounded_channel();
        Self {
            opts,
            connected: Mutex::new(None),
            peers: Mutex::new(HashMap::new()),
            writers: Mutex::new(HashMap::new()),
            port: AtomicU16::new(0),
            events,
            events_rx: Mutex::new(Some(events_rx)),
            udp_tasks: Mutex::new(Vec::new()),
        }
    }

    /// The port this node listens on (0 before connecting).
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed)
    }

    pub fn set_port(&self, port: u16) {
        self.port.store(port, Ordering::Relaxed);
    }

    /// The broker's side, while connected.
    pub fn connection(&self) -> Option<Arc<Connected>> {
        self.connected.lock().clone()
    }

    pub fn is_connected(&self) -> bool {
        self.connected.lock().is_some()
    }

    /// Records where a peer from `urls` listens: fixed, contacted even while offline.
    pub fn configure_address(&self, node: &NodeId, addr: SocketAddr) {
        self.peers.lock().insert(
            node.clone(),
            Peer {
                addr: Some(addr),
                static_peer: true,
                configured: true,
            },
        );
    }

    /// Records where `node` listens, unless an address is already known.
    pub fn learn_address(&self, node: &NodeId, addr: SocketAddr, static_peer: bool) {
        let mut peers = self.peers.lock();
        let peer = peers.entry(node.clone()).or_insert(Peer {
            addr: None,
            static_peer,
            configured: false,
        });
        if peer.addr.is_none() {
            peer.addr = Some(addr);
        }
        peer.static_peer |= static_peer;
    }

    /// Records where `node` listens now (it restarted on another port, or another host): the
    /// new address replaces the old one, unless the old one came from `urls`, and a connection
    /// to the old one is closed.
    pub fn update_address(&self, node: &NodeId, addr: SocketAddr, static_peer: bool) {
        let changed = {
            let mut peers = self.peers.lock();
            let peer = peers.entry(node.clone()).or_insert(Peer {
                addr: None,
                static_peer,
                configured: false,
            });
            peer.static_peer |= static_peer;
            let changed = !peer.configured && peer.addr.is_some_and(|old| old != addr);
            if !peer.configured {
                peer.addr = Some(addr);
            }
            changed
        };
        if changed {
            tracing::debug!(node = %node, %addr, "peer listens at a new address");
            self.close_writer(node);
        }
    }

    /// Closes our connection to `node` (its writer sends what is queued, then closes): it left
    /// or moved.
    pub fn close_writer(&self, node: &NodeId) {
        self.writers.lock().remove(node);
    }

    /// The GOSSIP_HELLO frame that opens each of our connections.
    pub fn hello_frame(&self, conn: &Connected) -> Option<Vec<u8>> {
        let hello = Packet::GossipHello(GossipHelloPacket {
            host: self.opts.host.clone(),
            port: self.port(),
            ver: conn.version.as_str().to_owned(),
            sender: conn.node_id.clone(),
        });
        let payload = conn.serializer.encode(&hello).ok()?;
        crate::frame::encode(PacketType::GossipHello, &payload)
    }

    /// Where `node` listens, if our own connection to it is open: proof that a process that
    /// holds its id is alive there (its end would close our socket at once).
    pub fn live_address(&self, node: &NodeId) -> Option<SocketAddr> {
        let open = self
            .writers
            .lock()
            .get(node)
            .is_some_and(|w| !w.frames.is_closed());
        open.then(|| self.address_of(node)).flatten()
    }

    /// Opens a connection to `addr` just to deliver `packet` (HELLO first, as always), then
    /// closes it: for a process we cannot reach by node id, because a live node holds that id.
    pub async fn send_once(&self, addr: SocketAddr, packet: &Packet) {
        let Some(conn) = self.connection() else {
            return;
        };
        let frames = self.hello_frame(&conn).and_then(|mut hello| {
            let payload = conn.serializer.encode(packet).ok()?;
            hello.extend(crate::frame::encode(packet.kind(), &payload)?);
            Some(hello)
        });
        let Some(frames) = frames else { return };
        let sent = async {
            let mut socket = tokio::net::TcpStream::connect(addr).await?;
            socket.write_all(&frames).await?;
            socket.shutdown().await
        };
        if let Err(err) = tokio::time::timeout(std::time::Duration::from_secs(5), sent)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
        {
            tracing::debug!(%addr, "cannot deliver a {}: {err}", packet.kind());
        }
    }

    /// Where `node` listens, if known.
    pub fn address_of(&self, node: &NodeId) -> Option<SocketAddr> {
        self.peers.lock().get(node).and_then(|p| p.addr)
    }

    /// Raises a peer event for the discoverer (dropped once nobody listens).
    pub fn notify(&self, event: PeerEvent) {
        let _ = self.events.send(event);
    }

    /// The peer events, for the discoverer (taken once).
    pub fn take_events(&self) -> Option<mpsc::UnboundedReceiver<PeerEvent>> {
        self.events_rx.lock().take()
    }
}
