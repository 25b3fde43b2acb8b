//! The TCP transporter: one listener, one outbound connection per peer (HELLO first), frames.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moleculer_core::protocol::PacketType;
use moleculer_core::transporter::{Outgoing, Transporter, TransporterError, TransporterSetup};
use moleculer_core::NodeId;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::discoverer::GossipDiscoverer;
use crate::frame;
use crate::inbound::InboundConnections;
use crate::options::TcpOptions;
use crate::peer_state::{Connected, PeerEvent, PeerState, Writer};
use crate::udp;

/// The transporter's own connections and tasks (the writers themselves are in the shared
/// peer state, so the gossip can close one).
struct Connections {
    state: Arc<PeerState>,
    /// The accept loop.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The connections peers opened to us.
    inbound: Arc<InboundConnections>,
    next_writer: AtomicU64,
    /// The writer tasks (finished ones are pruned as new ones start).
    writer_tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// How long a stopping node waits for its peers to take its goodbye (they close their
/// connections to it) before it closes theirs.
const GOODBYE_WAIT: Duration = Duration::from_millis(500);

impl Connections {
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.lock().push(moleculer_core::task::spawn(task));
    }

    /// The writer for `target`, opening the connection (HELLO first) on first use.
    fn writer(
        self: &Arc<Self>,
        target: &NodeId,
        kind: PacketType,
    ) -> Result<mpsc::UnboundedSender<Vec<u8>>, TransporterError> {
        if let Some(writer) = self.state.writers.lock().get(target) {
            if !writer.frames.is_closed() {
                return Ok(writer.frames.clone());
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
                kind,
                reason: format!("no known address for node '{target}'"),
            })?;
        let hello = self
            .state
            .hello_frame(&conn)
            .ok_or_else(|| TransporterError::Send {
                kind: PacketType::GossipHello,
                reason: "cannot encode GOSSIP_HELLO".into(),
            })?;
        let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let id = self.next_writer.fetch_add(1, Ordering::Relaxed);
        self.state.writers.lock().insert(
            target.clone(),
            Writer {
                id,
                frames: tx.clone(),
            },
        );
        let links = self.clone();
        let node = target.clone();
        let task = moleculer_core::task::spawn(async move {
            let result = write_connection(addr, hello, rx).await;
            // Still the node's connection? Not if it was closed on purpose or replaced.
            let current = {
                let mut writers = links.state.writers.lock();
                let current = writers.get(&node).is_some_and(|w| w.id == id);
                if current {
                    writers.remove(&node);
                }
                current
            };
            if let Err(err) = result {
                tracing::debug!(node = %node, %addr, current, "connection to peer lost: {err}");
                if current && links.state.is_connected() {
                    links.state.notify(PeerEvent::Closed(node));
                }
            }
        });
        let mut tasks = self.writer_tasks.lock();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
        Ok(tx)
    }

    /// Closes every connection, in the order that lets peers see a graceful stop. The
    /// listener goes first (a replacement process can bind the port at once); then our own
    /// connections, each flushing what is queued, the goodbye included; then, once the peers
    /// have closed theirs to us (they do when they take the goodbye) or after a short wait,
    /// the rest.
    async fn close_all(&self) {
        let listener: Vec<JoinHandle<()>> = self.tasks.lock().drain(..).collect();
        for task in &listener {
            task.abort();
        }
        futures::future::join_all(listener).await;
        self.state.writers.lock().clear();
        let writers: Vec<JoinHandle<()>> = self.writer_tasks.lock().drain(..).collect();
        let flushed = futures::future::join_all(writers);
        let _ = tokio::time::timeout(GOODBYE_WAIT, flushed).await;
        let deadline = tokio::time::Instant::now() + GOODBYE_WAIT;
        while self.inbound.len() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.inbound.close_all();
    }
}

/// One outbound connection: HELLO, then the queued frames, several per write. It ends when the
/// queue closes (we stop or the peer left) or when the peer closes the socket or fails, which
/// its read half shows at once even while we have nothing to send (peers never write on a
/// connection we opened).
async fn write_connection(
    addr: SocketAddr,
    hello: Vec<u8>,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) -> std::io::Result<()> {
    let socket = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    // Probing a port nobody listens on yet can connect the socket to itself (TCP simultaneous
    // open on an ephemeral port); such a socket would swallow everything we send to that peer.
    if socket.local_addr()? == socket.peer_addr()? {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connected to itself; the peer is not listening",
        ));
    }
    socket.set_nodelay(true)?;
    let (mut reader, mut writer) = socket.into_split();
    writer.write_all(&hello).await?;
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                batch.clear();
                batch.extend_from_slice(&frame);
                // Frames queued while a write was in progress go out together, in one write.
                while batch.len() < 64 * 1024 {
                    match rx.try_recv() {
                        Ok(more) => batch.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                writer.write_all(&batch).await?;
            }
            read = reader.read(&mut scratch) => match read {
                Ok(0) => return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the peer closed the connection")),
                Ok(_) => {}
                Err(err) => return Err(err),
            },
        }
    }
    writer.shutdown().await
}

/// How many connections the kernel holds for us before we accept them. A burst of peers
/// connecting at once (a cluster restarting) must not find the queue full: a dropped SYN costs
/// the peer a one-second retransmit. (Node.js uses 511; Rust's default is 128.)
const LISTEN_BACKLOG: u32 = 1024;

/// A listener on `bind` (`host:port`), with address reuse as usual and a deep backlog.
async fn listen(bind: &str) -> std::io::Result<TcpListener> {
    let addr = tokio::net::lookup_host(bind).await?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the address resolves to nothing",
        )
    })?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
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
            tasks: Mutex::new(Vec::new()),
            inbound: Arc::new(InboundConnections::new(state.clone())),
            next_writer: AtomicU64::new(0),
            writer_tasks: Mutex::new(Vec::new()),
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

impl Transporter for TcpTransporter {
    fn name(&self) -> &'static str {
        "TCP"
    }

    async fn connect(&self, setup: TransporterSetup) -> Result<(), TransporterError> {
        let state = &self.state;
        let port = state.opts.listen_port(&setup.node_id);
        let bind = format!("{}:{port}", state.opts.bind);
        let listener = listen(&bind).await.map_err(|e| TransporterError::Listen {
            address: bind.clone(),
            reason: e.to_string(),
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| TransporterError::Listen {
                address: bind,
                reason: e.to_string(),
            })?;
        state.set_port(local.port());
        for url in &state.opts.urls {
            if *url.node_id != *setup.node_id {
                if let Ok(addr) = format!("{}:{}", url.host, url.port).parse::<SocketAddr>() {
                    state.configure_address(&NodeId::new(&url.node_id), addr);
                } else if let Ok(mut addrs) =
                    tokio::net::lookup_host((url.host.as_str(), url.port)).await
                {
                    if let Some(addr) = addrs.next() {
                        state.configure_address(&NodeId::new(&url.node_id), addr);
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
        let inbound = self.links.inbound.clone();
        self.links.spawn(inbound.accept_loop(listener, conn));
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
        let writer = self.links.writer(&target, packet.kind)?;
        writer.send(frame).map_err(|_| TransporterError::Send {
            kind: packet.kind,
            reason: format!("connection to '{target}' closed"),
        })
    }

    async fn disconnect(&self) {
        self.state.connected.lock().take();
        for task in self.state.udp_tasks.lock().drain(..) {
            task.abort();
        }
        // There is no DISCONNECT over TCP: how we close our sockets is how peers tell a stop
        // from a crash (the gossip sent its goodbye just before this).
        self.links.close_all().await;
    }
}
