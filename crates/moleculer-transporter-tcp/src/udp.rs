//! UDP announcements: `<namespace>|<nodeID>|<port>` to a multicast group or a broadcast address.
//!
//! Peers heard this way become static peers that gossip contacts. Tests exercise this only
//! inside network namespaces they create, never on the machine's real interfaces.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use moleculer_core::NodeId;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::peer_state::{PeerEvent, PeerState};

fn socket(state: &PeerState) -> std::io::Result<UdpSocket> {
    let opts = &state.opts;
    let bind: Ipv4Addr = opts
        .udp_bind_address
        .parse()
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddrV4::new(bind, opts.udp_port).into())?;
    if let Some(group) = opts
        .udp_multicast
        .as_deref()
        .and_then(|g| g.parse::<Ipv4Addr>().ok())
    {
        socket.join_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED)?;
        socket.set_multicast_ttl_v4(1)?;
    }
    if opts.udp_broadcast.is_some() {
        socket.set_broadcast(true)?;
    }
    UdpSocket::from_std(socket.into())
}

/// Starts announcing and listening; a failure to open the socket is logged, not fatal.
pub(crate) async fn start(state: Arc<PeerState>) {
    let udp = match socket(&state) {
        Ok(udp) => Arc::new(udp),
        Err(err) => {
            tracing::warn!(
                port = state.opts.udp_port,
                "UDP discovery is off: cannot open its socket: {err}"
            );
            return;
        }
    };
    let target: Option<SocketAddr> = match (&state.opts.udp_broadcast, &state.opts.udp_multicast) {
        (Some(addr), _) => addr
            .parse::<Ipv4Addr>()
            .ok()
            .map(|ip| SocketAddr::new(ip.into(), state.opts.udp_port)),
        (None, Some(group)) => group
            .parse::<Ipv4Addr>()
            .ok()
            .map(|ip| SocketAddr::new(ip.into(), state.opts.udp_port)),
        (None, None) => None,
    };
    let (node_id, namespace) = match state.connected.lock().as_ref() {
        Some(c) => (c.node_id.clone(), c.namespace.clone()),
        None => return,
    };
    let sender = udp.clone();
    let announce_state = state.clone();
    let announcement = format!("{namespace}|{node_id}|{}", state.port());
    let period = Duration::from_secs_f64(state.opts.udp_period.max(1.0));
    let announcer = moleculer_core::task::spawn(async move {
        let Some(target) = target else { return };
        // At once (join fast), then every period.
        loop {
            if !announce_state.is_connected() {
                return;
            }
            if let Err(err) = sender.send_to(announcement.as_bytes(), target).await {
                tracing::debug!(%target, "UDP announcement failed: {err}");
            }
            tokio::time::sleep(period).await;
        }
    });
    let listen_state = state.clone();
    let listener = moleculer_core::task::spawn(async move {
        let state = listen_state;
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            let Ok(text) = std::str::from_utf8(&buf[..n]) else {
                continue;
            };
            let parts: Vec<&str> = text.split('|').collect();
            let [ns, id, port] = parts.as_slice() else {
                tracing::debug!(%from, "ignored a UDP datagram that is not <namespace>|<nodeID>|<port>");
                continue;
            };
            if *ns != namespace || *id == node_id.as_str() {
                continue;
            }
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let node = NodeId::new(id);
            let addr = SocketAddr::new(from.ip(), port);
            let known = state.peers.lock().contains_key(&node);
            state.learn_address(&node, addr, true);
            if !known {
                // Treat it like a HELLO: the discoverer greets new peers at once.
                state.notify(PeerEvent::Hello(node, addr));
            }
        }
    });
    let mut tasks = state.udp_tasks.lock();
    tasks.push(announcer);
    tasks.push(listener);
}
