//! The TCP transporter: one listener, one outbound connection per peer (HELLO first), frames.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moleculer_core::protocol::{GossipHelloPacket, Packet, PacketType, ProtocolVersion};
use moleculer_core::serializer::Serializer;
use moleculer_core::transporter::{
    Incoming, IncomingSink, Outgoing, Transporter, TransporterError, TransporterSetup,
};
use moleculer_core::NodeId;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::frame::{self, FrameDecoder};
use crate::options::TcpOptions;

/// Something happened to the connection with a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerEvent {
    /// Its socket closed or could not be opened: it is gone.
    Closed(NodeId),
    /// It said HELLO on a new connection.
    Hello(NodeId),
}

/// Where a peer can be reached.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub addr: Option<SocketAddr>,
    /// From `urls` or UDP: contacted even while offline.
    pub static_peer: bool,
}

pub(crate) struct Connected {
    pub node_id: NodeId,
    pub namespace: String,
    pub incoming: IncomingSink,
    pub serializer: Arc<dyn Serializer>,
    pub version: ProtocolVersion,
}

/// State shared by the transporter and its gossip discoverer.
pub(crate) struct Shared {
    pub opts: TcpOptions,
    pub connected: Mutex<Option<Arc<Connected>>>,
    pub peers: Mutex<HashMap<NodeId, Peer>>,
    writers: Mutex<HashMap<NodeId, mpsc::UnboundedSender<Vec<u8>>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    pub udp_tasks: Mutex<Vec<JoinHandle<()>>>,
    pub port: AtomicU16,
    pub events: mpsc::UnboundedSender<PeerEvent>,
    pub events_rx: Mutex<Option<mpsc::UnboundedReceiver<PeerEvent>>>,
}

impl Shared {
    pub fn new(opts: TcpOptions) -> Self {
        let (events, events_rx) = mpsc::unbounded_channel();
        Self {
            opts,
            connected: Mutex::new(None),
            peers: Mutex::new(HashMap::new()),
            writers: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            udp_tasks: Mutex::new(Vec::new()),
            port: AtomicU16::new(0),
            events,
            events_rx: Mutex::new(Some(events_rx)),
        }
    }

    /// Records where `node` listens, unless an address is already known.
    pub fn learn_address(&self, node: &NodeId, addr: SocketAddr, static_peer: bool) {
        let mut peers = self.peers.lock();
        let peer = peers.entry(node.clone()).or_insert(Peer {
            addr: None,
            static_peer,
        });
        if peer.addr.is_none() {
            peer.addr = Some(addr);
        }
        peer.static_peer |= static_peer;
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.lock().push(tokio::spawn(task));
    }

    fn hello_frame(&self, conn: &Connected) -> Option<Vec<u8>> {
        let hello = Packet::GossipHello(GossipHelloPacket {
            host: self.opts.host.clone(),
            port: self.port.load(Ordering::Relaxed),
            ver: conn.version.as_str().to_owned(),
            sender: conn.node_id.clone(),
        });
        let payload = conn.serializer.encode(&hello).ok()?;
        frame::encode(PacketType::GossipHello, &payload)
    }

    /// The writer for `target`, opening the connection (HELLO first) on first use.
    fn writer(
        self: &Arc<Self>,
        target: &NodeId,
    ) -> Result<mpsc::UnboundedSender<Vec<u8>>, TransporterError> {
        if let Some(tx) = self.writers.lock().get(target) {
            if !tx.is_closed() {
                return Ok(tx.clone());
            }
        }
        let conn = self
            .connected
            .lock()
            .clone()
            .ok_or(TransporterError::NotConnected)?;
        let addr = self
            .peers
            .lock()
            .get(target)
            .and_then(|p| p.addr)
            .ok_or_else(|| TransporterError::Send {
                kind: PacketType::Request,
                reason: format!("no known address for node '{target}'"),
            })?;
        let hello = self
            .hello_frame(&conn)
            .ok_or_else(|| TransporterError::Send {
                kind: PacketType::GossipHello,
                reason: "cannot encode GOSSIP_HELLO".into(),
            })?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        self.writers.lock().insert(target.clone(), tx.clone());
        let shared = self.clone();
        let node = target.clone();
        // Not tracked in `tasks`: on disconnect the writer drains what was queued, then closes.
        tokio::spawn(async move {
            let result = async {
                let mut socket =
                    tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                        .await
                        .map_err(|_| {
                            std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                        })??;
                // Probing a port nobody listens on yet can connect the socket to itself (TCP
                // simultaneous open on an ephemeral port); such a socket would swallow
                // everything we send to that peer.
                if socket.local_addr()? == socket.peer_addr()? {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "connected to itself; the peer is not listening",
                    ));
                }
                socket.set_nodelay(true)?;
                socket.write_all(&hello).await?;
                // Frames queued while a write was in progress go out together, in one write.
                let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
                while let Some(frame) = rx.recv().await {
                    batch.clear();
                    batch.extend_from_slice(&frame);
                    while batch.len() < 64 * 1024 {
                        match rx.try_recv() {
                            Ok(more) => batch.extend_from_slice(&more),
                            Err(_) => break,
                        }
                    }
                    socket.write_all(&batch).await?;
                }
                socket.shutdown().await
            }
            .await;
            shared.writers.lock().remove(&node);
            if let Err(err) = result {
                tracing::debug!(node = %node, %addr, "connection to peer lost: {err}");
                if shared.connected.lock().is_some() {
                    let _ = shared.events.send(PeerEvent::Closed(node));
                }
            }
        });
        Ok(tx)
    }
}

/// Moleculer's TCP transporter. Pair it with [`TcpTransporter::discoverer`], which runs the
/// gossip (Moleculer's TCP transporter works with its own gossip, not with heartbeats).
#[derive(Clone)]
pub struct TcpTransporter {
    pub(crate) shared: Arc<Shared>,
}

impl TcpTransporter {
    /// A transporter with these options.
    pub fn new(opts: TcpOptions) -> Self {
        Self {
            shared: Arc::new(Shared::new(opts)),
        }
    }

    /// The gossip discoverer that goes with this transporter.
    pub fn discoverer(&self) -> crate::discoverer::GossipDiscoverer {
        crate::discoverer::GossipDiscoverer::new(self.shared.clone())
    }

    /// The port it listens on (after connecting).
    pub fn port(&self) -> u16 {
        self.shared.port.load(Ordering::Relaxed)
    }
}

async fn read_connection(
    shared: Arc<Shared>,
    conn: Arc<Connected>,
    mut socket: TcpStream,
    remote: SocketAddr,
) {
    let mut decoder = FrameDecoder::new(shared.opts.max_packet_size);
    let mut peer: Option<NodeId> = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match socket.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) => {
                tracing::debug!(%remote, "read error: {err}");
                break;
            }
        };
        decoder.push(&buf[..n]);
        loop {
            match decoder.next_frame() {
                Ok(Some((kind, payload))) => {
                    if kind == PacketType::GossipHello {
                        if let Ok(Packet::GossipHello(hello)) =
                            conn.serializer.decode(kind, &payload)
                        {
                            let port = if hello.port == 0 {
                                remote.port()
                            } else {
                                hello.port
                            };
                            shared.learn_address(
                                &hello.sender,
                                SocketAddr::new(remote.ip(), port),
                                false,
                            );
                            let _ = shared.events.send(PeerEvent::Hello(hello.sender.clone()));
                            peer = Some(hello.sender);
                        }
                    }
                    if conn.incoming.send(Incoming { kind, payload }).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(%remote, peer = peer.as_deref().unwrap_or("unknown"), "dropping the connection: {err}");
                    return;
                }
            }
        }
    }
    // The peer closed its connection to us: it stopped or died.
    if let Some(node) = peer {
        if shared.connected.lock().is_some() {
            let _ = shared.events.send(PeerEvent::Closed(node));
        }
    }
}

impl Transporter for TcpTransporter {
    fn name(&self) -> &'static str {
        "TCP"
    }

    async fn connect(&self, setup: TransporterSetup) -> Result<(), TransporterError> {
        let shared = &self.shared;
        let port = shared.opts.listen_port(&setup.node_id);
        let bind = format!("{}:{port}", shared.opts.bind);
        let listener = TcpListener::bind(&bind)
            .await
            .map_err(|e| TransporterError::Connect {
                address: bind.clone(),
                reason: e.to_string(),
            })?;
        let local = listener
            .local_addr()
            .map_err(|e| TransporterError::Connect {
                address: bind,
                reason: e.to_string(),
            })?;
        shared.port.store(local.port(), Ordering::Relaxed);
        for url in &shared.opts.urls {
            if *url.node_id != *setup.node_id {
                if let Ok(addr) = format!("{}:{}", url.host, url.port).parse::<SocketAddr>() {
                    shared.learn_address(&NodeId::new(&url.node_id), addr, true);
                } else if let Ok(mut addrs) =
                    tokio::net::lookup_host((url.host.as_str(), url.port)).await
                {
                    if let Some(addr) = addrs.next() {
                        shared.learn_address(&NodeId::new(&url.node_id), addr, true);
                    }
                }
            }
        }
        let conn = Arc::new(Connected {
            node_id: setup.node_id,
            namespace: setup.namespace,
            incoming: setup.incoming,
            serializer: setup.serializer,
            version: setup.version,
        });
        *shared.connected.lock() = Some(conn.clone());
        let accept_shared = shared.clone();
        shared.spawn(async move {
            loop {
                let Ok((socket, remote)) = listener.accept().await else {
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let task = tokio::spawn(read_connection(
                    accept_shared.clone(),
                    conn.clone(),
                    socket,
                    remote,
                ));
                accept_shared.tasks.lock().push(task);
            }
        });
        if shared.opts.udp_discovery {
            crate::udp::start(shared.clone()).await;
        }
        tracing::info!(port = local.port(), "TCP transporter listening on {local}");
        Ok(())
    }

    async fn send(&self, packet: Outgoing) -> Result<(), TransporterError> {
        // TCP carries only targeted packets of its own types; Moleculer drops the rest silently.
        let Some(target) = packet.target else {
            return Ok(());
        };
        let Some(frame) = frame::encode(packet.kind, &packet.payload) else {
            return Ok(());
        };
        if frame.len() > self.shared.opts.max_packet_size {
            return Err(TransporterError::Send {
                kind: packet.kind,
                reason: format!(
                    "{} bytes is above the {} byte limit",
                    frame.len(),
                    self.shared.opts.max_packet_size
                ),
            });
        }
        let writer = self.shared.writer(&target)?;
        writer.send(frame).map_err(|_| TransporterError::Send {
            kind: packet.kind,
            reason: format!("connection to '{target}' closed"),
        })
    }

    async fn disconnect(&self) {
        self.shared.connected.lock().take();
        for task in self
            .shared
            .tasks
            .lock()
            .drain(..)
            .chain(self.shared.udp_tasks.lock().drain(..))
        {
            task.abort();
        }
        // Dropping the senders lets each writer flush what is queued, then close its socket:
        // that is how peers learn we left (there is no DISCONNECT over TCP).
        self.shared.writers.lock().clear();
    }
}
