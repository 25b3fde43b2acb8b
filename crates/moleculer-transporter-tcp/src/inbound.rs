//! The inbound side of the TCP transporter: the accept loop and one reader per connection a
//! peer opened to us.
//!
//! Anyone who can reach the port can open a connection, so everything here is bounded: the
//! number of connections (the least recently active one is closed past the cap), the time a
//! new connection has to say GOSSIP_HELLO, the time one frame may take, the memory an idle
//! connection holds (none), and how much garbage a connection may send. The accept loop backs
//! off when the process runs out of file descriptors instead of spinning, and says so once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moleculer_core::protocol::{Packet, PacketType};
use moleculer_core::transporter::{Delivery, Incoming};
use moleculer_core::{LogThrottle, NodeId};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::frame::FrameDecoder;
use crate::peer_state::{Connected, PeerEvent, PeerState};

/// One open inbound connection, as the table sees it.
struct Entry {
    remote: SocketAddr,
    reader: AbortHandle,
    /// Milliseconds since the table's epoch at its last read.
    last_active: Arc<AtomicU64>,
}

/// The open inbound connections. An entry goes when its connection ends, so its memory does.
pub(crate) struct InboundConnections {
    state: Arc<PeerState>,
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    epoch: Instant,
    /// One line per reason and peer every few seconds.
    pub(crate) warnings: LogThrottle,
}

/// The first pause after a failed accept; it doubles up to [`MAX_ACCEPT_PAUSE`].
const FIRST_ACCEPT_PAUSE: Duration = Duration::from_millis(5);
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);

thread_local! {
    /// Where sockets are read into: one buffer per worker thread rather than one per
    /// connection, so ten thousand idle connections hold no read buffers.
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
}

impl InboundConnections {
    pub fn new(state: Arc<PeerState>) -> Self {
        Self {
            state,
            entries: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            warnings: LogThrottle::new(Duration::from_secs(10)),
        }
    }

    /// How many inbound connections are open.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Accepts connections until aborted. On an accept error (out of file descriptors, most
    /// often) it pauses, longer each time, logging the first failure and the recovery; open
    /// connections and calls carry on meanwhile, and the kernel holds new connections in its
    /// backlog until accepting resumes.
    pub async fn accept_loop(self: Arc<Self>, listener: TcpListener, conn: Arc<Connected>) {
        // Read now: once descriptors run out, the limits file cannot be opened.
        let limit = open_file_limit();
        let mut failures: u32 = 0;
        let mut failing_since = Instant::now();
        let mut pause = FIRST_ACCEPT_PAUSE;
        loop {
            match listener.accept().await {
                Ok((socket, remote)) => {
                    if failures > 0 {
                        tracing::warn!(
                            "accepting connections again, after {failures} failed attempts over {:.1} s",
                            failing_since.elapsed().as_secs_f64()
                        );
                        failures = 0;
                        pause = FIRST_ACCEPT_PAUSE;
                    }
                    self.admit(socket, remote, conn.clone());
                }
                Err(err) => {
                    if failures == 0 {
                        failing_since = Instant::now();
                        tracing::warn!(
                            open = self.len(),
                            "cannot accept a connection: {err}{}; pausing accepts (up to {} s between tries) until it clears",
                            limit.map(|l| format!(" (open file limit {l})")).unwrap_or_default(),
                            MAX_ACCEPT_PAUSE.as_secs()
                        );
                    }
                    failures = failures.saturating_add(1);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_ACCEPT_PAUSE);
                }
            }
        }
    }

    /// Registers a new connection and starts its reader, closing the least recently active
    /// one first if the table is full.
    fn admit(self: &Arc<Self>, socket: TcpStream, remote: SocketAddr, conn: Arc<Connected>) {
        let _ = socket.set_nodelay(true);
        let cap = self.state.opts.max_inbound_connections.max(1);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let last_active = Arc::new(AtomicU64::new(self.now_ms()));
        let mut entries = self.entries.lock();
        while entries.len() >= cap {
            let Some((&oldest, _)) = entries
                .iter()
                .min_by_key(|(_, e)| e.last_active.load(Ordering::Relaxed))
            else {
                break;
            };
            if let Some(evicted) = entries.remove(&oldest) {
                evicted.reader.abort();
                if let Some(held) = self.warnings.admit("connection-cap") {
                    tracing::warn!(
                        "{cap} inbound connections are open (maxInboundConnections): closed the least recently active one, from {}{}",
                        evicted.remote,
                        self.warnings.held_note(held)
                    );
                }
            }
        }
        let table = self.clone();
        let activity = last_active.clone();
        let task = moleculer_core::task::spawn(async move {
            let reader = Reader {
                table: table.clone(),
                conn,
                remote,
                last_active: activity,
                peer: None,
                good: 0,
                bad: 0,
            };
            reader.run(socket).await;
            table.entries.lock().remove(&id);
        });
        // A connection that ended already must not leave an entry behind.
        if !task.is_finished() {
            entries.insert(
                id,
                Entry {
                    remote,
                    reader: task.abort_handle(),
                    last_active,
                },
            );
        }
    }

    /// Closes every inbound connection.
    pub fn close_all(&self) {
        for (_, entry) in self.entries.lock().drain() {
            entry.reader.abort();
        }
    }
}

/// The soft limit on open files, read from `/proc/self/limits` (Linux).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Why a reader closed its connection (logged, rate-limited).
enum Closing {
    /// The peer closed it, or it failed: nothing to say.
    Ended,
    /// The broker is gone.
    BrokerGone,
    /// Said something we cannot read on from.
    Unreadable(String),
    /// Never said GOSSIP_HELLO.
    NoHello,
    /// A frame took too long.
    Stalled(usize),
    /// Mostly garbage.
    Garbage,
}

/// Reads one inbound connection: frames to the broker. A GOSSIP_HELLO on it says where the peer
/// listens; the gossip decides what to believe. Its end proves nothing about the peer.
struct Reader {
    table: Arc<InboundConnections>,
    conn: Arc<Connected>,
    remote: SocketAddr,
    last_active: Arc<AtomicU64>,
    peer: Option<NodeId>,
    good: u64,
    bad: u64,
}

impl Reader {
    async fn run(mut self, socket: TcpStream) {
        let opts = &self.table.state.opts;
        let (hello_timeout, frame_timeout) = (opts.hello_timeout(), opts.frame_timeout());
        let mut decoder = FrameDecoder::new(opts.max_packet_size);
        let hello_deadline = Instant::now() + hello_timeout;
        // The deadline the timer is set to, and when the frame in progress began.
        let mut armed: Option<Instant> = None;
        let mut frame_started = Instant::now();
        let timer = tokio::time::sleep_until(hello_deadline);
        tokio::pin!(timer);
        let closing = loop {
            let deadline = if self.peer.is_none() {
                Some(hello_deadline)
            } else if decoder.in_frame() {
                Some(frame_started + frame_timeout)
            } else {
                None
            };
            if deadline != armed {
                if let Some(at) = deadline {
                    timer.as_mut().reset(at);
                }
                armed = deadline;
            }
            tokio::select! {
                ready = socket.readable() => if ready.is_err() { break Closing::Ended },
                () = &mut timer, if armed.is_some() => {
                    break if self.peer.is_none() { Closing::NoHello } else { Closing::Stalled(decoder.buffered()) };
                }
            }
            let read = READ_BUFFER.with(|buf| {
                let mut buf = buf.borrow_mut();
                let n = socket.try_read(&mut buf)?;
                decoder.push(&buf[..n]);
                Ok::<usize, std::io::Error>(n)
            });
            match read {
                Ok(0) => break Closing::Ended,
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(err) => {
                    tracing::debug!(remote = %self.remote, "read error: {err}");
                    break Closing::Ended;
                }
            }
            self.last_active
                .store(self.table.now_ms(), Ordering::Relaxed);
            let was_in_frame = decoder.in_frame();
            let mut frames = 0u32;
            let outcome = loop {
                match decoder.next_frame() {
                    Ok(Some((kind, payload))) => {
                        frames += 1;
                        if let Some(closing) = self.deliver(kind, payload) {
                            break Some(closing);
                        }
                    }
                    Ok(None) => break None,
                    Err(err) if err.is_fatal() => break Some(Closing::Unreadable(err.to_string())),
                    Err(err) => {
                        frames += 1;
                        self.warn("frame", format_args!("skipped a frame: {err}"));
                        if self.strike() {
                            break Some(Closing::Garbage);
                        }
                    }
                }
            };
            if let Some(closing) = outcome {
                break closing;
            }
            if frames > 0 || !was_in_frame {
                frame_started = Instant::now();
            }
        };
        self.closed(closing, &decoder);
    }

    /// Hands one frame to the broker; `Some` when the connection should close.
    fn deliver(&mut self, kind: PacketType, payload: Vec<u8>) -> Option<Closing> {
        if kind == PacketType::GossipHello {
            if let Ok(Packet::GossipHello(hello)) = self.conn.serializer.decode(kind, &payload) {
                let port = if hello.port == 0 {
                    self.remote.port()
                } else {
                    hello.port
                };
                let listens = SocketAddr::new(self.remote.ip(), port);
                // Known at once, before the frames that follow on this connection are served:
                // a request may come right behind the HELLO, and its answer needs the address.
                // (Only for a node without one; the gossip decides about moves.)
                self.table
                    .state
                    .learn_address(&hello.sender, listens, false);
                self.table
                    .state
                    .notify(PeerEvent::Hello(hello.sender.clone(), listens));
                self.peer = Some(hello.sender);
            }
        }
        match self.conn.incoming.deliver(Incoming { kind, payload }) {
            Delivery::Accepted => {
                self.good += 1;
                None
            }
            Delivery::Refused => self.strike().then_some(Closing::Garbage),
            Delivery::Closed => Some(Closing::BrokerGone),
        }
    }

    /// Counts a bad frame or packet; true once the connection has sent too much garbage.
    fn strike(&mut self) -> bool {
        self.bad += 1;
        self.bad >= self.table.state.opts.max_bad_packets.max(1) && self.bad > self.good
    }

    fn peer_name(&self) -> &str {
        self.peer.as_deref().unwrap_or("unknown")
    }

    fn warn(&self, reason: &str, message: std::fmt::Arguments<'_>) {
        let key = format!("{reason}:{}:{}", self.peer_name(), self.remote.ip());
        if let Some(held) = self.table.warnings.admit(&key) {
            tracing::warn!(
                remote = %self.remote,
                peer = self.peer_name(),
                "{message}{}",
                self.table.warnings.held_note(held)
            );
        }
    }

    fn closed(&self, closing: Closing, decoder: &FrameDecoder) {
        match closing {
            Closing::Ended | Closing::BrokerGone => {
                if decoder.in_frame() {
                    self.warn(
                        "truncated",
                        format_args!(
                            "the connection closed in the middle of a frame ({} bytes of it received)",
                            decoder.buffered()
                        ),
                    );
                }
            }
            Closing::Unreadable(err) => {
                self.warn("unreadable", format_args!("closed the connection: {err}"));
            }
            Closing::NoHello => self.warn(
                "no-hello",
                format_args!(
                    "closed a connection that did not say GOSSIP_HELLO within {} s (helloTimeout)",
                    self.table.state.opts.hello_timeout
                ),
            ),
            Closing::Stalled(held) => self.warn(
                "stalled",
                format_args!(
                    "closed a connection whose frame did not complete within {} s (frameTimeout; {held} bytes of it held)",
                    self.table.state.opts.frame_timeout
                ),
            ),
            Closing::Garbage => self.warn(
                "garbage",
                format_args!(
                    "closed a connection that sent {} bad frames or packets and {} good ones",
                    self.bad, self.good
                ),
            ),
        }
    }
}
