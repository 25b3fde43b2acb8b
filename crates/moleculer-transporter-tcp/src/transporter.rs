//! The TCP transporter: one listener, one outbound connection per peer (HELLO first), frames.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use moleculer_core::protocol::{GossipHelloPacket, Packet, PacketType};
use moleculer_core::transporter::{
    Incoming, Outgoing, Transporter, TransporterError, TransporterSetup,
};
use moleculer_core::NodeId;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::discoverer::GossipDiscoverer;
use crate::frame::{self, FrameDecoder};
use crate::options::TcpOptions;
use crate::peer_state::{Connected, PeerEvent, PeerState};
use crate::udp;

/// The transporter's own connections: one writer per peer, and the tasks it runs.
struct Connections {
    state: Arc<PeerState>,
    writers: Mutex<HashMap<NodeId, mpsc::UnboundedSender<Vec<u8>>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Connections {
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.lock().push(tokio::spawn(task));
    }

    fn hello_frame(&self, conn: &Connected) -> Option<Vec<u8>> {
        let hello = Packet::GossipHello(GossipHelloPacket {
            host: self.state.opts.host.clone(),
            port: self.state.port(),
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
            .state
            .connection()
            .ok_or(TransporterError::NotConnected)?;
        let addr = self
            .state
            .address_of(target)
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
        let links = self.clone();
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
            links.writers.lock().remove(&node);
            if let Err(err) = result {
                tracing::debug!(node = %node, %addr, "connection to peer lost: {err}");
                if links.state.is_connected() {
                    links.state.notify(PeerEvent::Closed(node));
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
    state: Arc<PeerState>,
    links: Arc<Connections>,
}

impl TcpTransporter {
    /// A transporter with these options.
    pub fn new(opts: TcpOptions) -> Self {
        let state = Arc::new(PeerState::new(opts));
        let links = Arc::new(Connections {
            state: state.clone(),
            writers: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        });
        Self { state, links }
    }

    /// The gossip discoverer that goes with this transporter.
    pub fn discoverer(&self) -> GossipDiscoverer {
        GossipDiscoverer::new(self.state.clone())
    }

    /// The port it listens on (after connecting).
    pub fn port(&self) -> u16 {
        self.state.port()
    }
}

async fn read_connection(
    state: Arc<PeerState>,
    conn: Arc<Connected>,
    mut socket: TcpStream,
    remote: SocketAddr,
) {
    let mut decoder = FrameDecoder::new(state.opts.max_packet_size);
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
                            state.learn_address(
                                &hello.sender,
                                SocketAddr::new(remote.ip(), port),
                                false,
                            );
                            state.notify(PeerEvent::Hello(hello.sender.clone()));
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
        if state.is_connected() {
            state.notify(PeerEvent::Closed(node));
        }
    }
}

impl Transporter for TcpTransporter {
    fn name(&self) -> &'static str {
        "TCP"
    }

    async fn connect(&self, setup: TransporterSetup) -> Result<(), TransporterError> {
        let state = &self.state;
        let port = state.opts.listen_port(&setup.node_id);
        let bind = format!("{}:{port}", state.opts.bind);
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
        state.set_port(local.port());
        for url in &state.opts.urls {
            if *url.node_id != *setup.node_id {
                if let Ok(addr) = format!("{}:{}", url.host, url.port).parse::<SocketAddr>() {
                    state.learn_address(&NodeId::new(&url.node_id), addr, true);
                } else if let Ok(mut addrs) =
                    tokio::net::lookup_host((url.host.as_str(), url.port)).await
                {
                    if let Some(addr) = addrs.next() {
                        state.learn_address(&NodeId::new(&url.node_id), addr, true);
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
        *state.connected.lock() = Some(conn.clone());
        let links = self.links.clone();
        self.links.spawn(async move {
            loop {
                let Ok((socket, remote)) = listener.accept().await else {
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let task = tokio::spawn(read_connection(
                    links.state.clone(),
                    conn.clone(),
                    socket,
                    remote,
                ));
                links.tasks.lock().push(task);
            }
        });
        if state.opts.udp_discovery {
            udp::start(state.clone()).await;
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
        if frame.len() > self.state.opts.max_packet_size {
            return Err(TransporterError::Send {
                kind: packet.kind,
                reason: format!(
                    "{} bytes is above the {} byte limit",
                    frame.len(),
                    self.state.opts.max_packet_size
                ),
            });
        }
        let writer = self.links.writer(&target)?;
        writer.send(frame).map_err(|_| TransporterError::Send {
            kind: packet.kind,
            reason: format!("connection to '{target}' closed"),
        })
    }

    async fn disconnect(&self) {
        self.state.connected.lock().take();
        for task in self
            .links
            .tasks
            .lock()
            .drain(..)
            .chain(self.state.udp_tasks.lock().drain(..))
        {
            task.abort();
        }
        // Dropping the senders lets each writer flush what is queued, then close its socket:
        // that is how peers learn we left (there is no DISCONNECT over TCP).
        self.links.writers.lock().clear();
    }
}
