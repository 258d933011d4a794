//! The node over the real transport: [`crate::net::Network`] as a
//! [`Transport`], the genesis as a [`NetConfig`], and the node state as a
//! [`StatusSnapshot`].

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use super::state::NodeState;
use super::transport::{Asker, Incoming, PeerSummary, Transport};
use super::{Node, NodeError};
use crate::genesis::Genesis;
use crate::keys::NodeKeys;
use crate::messages::MSG_VERSION;
use crate::net::{
    Envelope, Inbound, Limits, LinkEvent, NetConfig, Network, NodeId, PeerId, PeerInfo, PeerLink,
    Sender,
};
use crate::status::StatusSnapshot;

/// [`Network`] seen through the node's [`Transport`] trait.
pub struct NetTransport(pub Network);

impl Transport for NetTransport {
    fn send(
        &self,
        peer: u16,
        msg_type: u8,
        request_id: u64,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        self.0
            .send(
                PeerId(peer),
                Envelope::new(msg_type, MSG_VERSION, request_id, payload),
            )
            .map_err(|e| e.to_string())
    }

    fn reply(
        &self,
        to: Asker,
        msg_type: u8,
        request_id: u64,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        let env = Envelope::new(msg_type, MSG_VERSION, request_id, payload);
        match to.conn {
            Some(conn) => self.0.reply(PeerId(to.peer), conn, env),
            None => self.0.send(PeerId(to.peer), env),
        }
        .map_err(|e| e.to_string())
    }

    fn broadcast(&self, msg_type: u8, payload: Vec<u8>) {
        self.0
            .broadcast(Envelope::new(msg_type, MSG_VERSION, 0, payload));
    }

    fn queued_bytes(&self, peer: u16) -> usize {
        self.0.queued_bytes(PeerId(peer))
    }

    fn summary(&self) -> PeerSummary {
        let stats = self.0.stats();
        PeerSummary {
            connected: stats.iter().filter(|s| s.connected).count(),
            heartbeats_ok_5m: stats.iter().map(|s| s.heartbeats_ok_5m).sum(),
            heartbeat_errors_5m: stats.iter().map(|s| s.heartbeat_errors_5m).sum(),
        }
    }

    fn peers(&self) -> Vec<crate::net::PeerStats> {
        self.0.stats()
    }

    fn totals(&self) -> crate::net::NetTotals {
        self.0.totals()
    }

    fn link(&self, peer: u16) -> Option<PeerLink> {
        self.0.link(PeerId(peer))
    }

    fn links(&self) -> Vec<PeerLink> {
        self.0.links()
    }

    fn set_members(&self, ids: &[NodeId]) {
        self.0.members().set(ids.iter().copied());
    }

    fn offence(&self, from: &Sender, offence: crate::net::misbehaviour::Offence) {
        self.0.offence(from, offence);
    }

    fn link_events(&self) -> Option<broadcast::Receiver<LinkEvent>> {
        Some(self.0.link_events())
    }
}

/// What `montana start` adds to the genesis for the transport.
#[derive(Clone, Debug)]
pub struct JoinOptions {
    /// `--bootstrap`: for keys outside the genesis, the addresses to dial
    /// (none: the genesis peers' addresses).
    pub bootstrap: Vec<SocketAddr>,
    /// `--max-peers`: member connection slots (handshakes in progress and
    /// everyone else's connections have `max(4, max_peers / 4)` each).
    pub max_peers: usize,
}

impl Default for JoinOptions {
    fn default() -> Self {
        JoinOptions {
            bootstrap: Vec::new(),
            max_peers: Limits::default().max_peers,
        }
    }
}

/// The genesis peers as the transport needs them.
pub fn genesis_peers(genesis: &Genesis) -> Result<Vec<PeerInfo>, NodeError> {
    let mut peers = Vec::with_capacity(genesis.peers.len());
    for (i, p) in genesis.peers.iter().enumerate() {
        peers.push(PeerInfo {
            id: PeerId(i as u16),
            label: p.label.clone(),
            address: p.address,
            noise_public: p.noise_public()?,
            signing_public: p.signing_public()?,
        });
    }
    Ok(peers)
}

/// The transport configuration of a node whose keys are not in the
/// genesis: it listens on `listen` and dials `opts.bootstrap` (or the
/// genesis peers), then the addresses it learns.
pub fn joiner_config(
    genesis: &Genesis,
    keys: Arc<NodeKeys>,
    listen: SocketAddr,
    opts: &JoinOptions,
) -> Result<NetConfig, NodeError> {
    Ok(NetConfig {
        network_id: genesis.network_id(),
        me: None,
        listen,
        keys,
        peers: genesis_peers(genesis)?,
        bootstrap: opts.bootstrap.clone(),
        members: None,
        limits: Limits {
            max_peers: opts.max_peers,
            ..Limits::default()
        },
        transport: genesis.transport.clone(),
    })
}

/// The transport configuration from the genesis: every peer with its keys,
/// the network id as the Noise prologue, and this node's listen address
/// (its genesis address unless `listen` overrides it).
pub fn net_config(node: &Node, listen: Option<SocketAddr>) -> Result<NetConfig, NodeError> {
    net_config_with(node, listen, &JoinOptions::default())
}

/// [`net_config`] with `montana start`'s transport options (`--max-peers`;
/// `--bootstrap` is for keys outside the genesis, see [`joiner_config`]).
pub fn net_config_with(
    node: &Node,
    listen: Option<SocketAddr>,
    opts: &JoinOptions,
) -> Result<NetConfig, NodeError> {
    let Some(me) = node.me else {
        let listen = listen.ok_or_else(|| {
            NodeError::Net("a node whose keys are not in the genesis needs --listen ADDR".into())
        })?;
        return joiner_config(&node.genesis, node.keys.clone(), listen, opts);
    };
    Ok(NetConfig {
        network_id: node.network_id,
        me: Some(PeerId(me)),
        listen: listen.unwrap_or(node.genesis.peers[me as usize].address),
        keys: node.keys.clone(),
        peers: genesis_peers(&node.genesis)?,
        bootstrap: Vec::new(),
        members: None,
        limits: Limits {
            max_peers: opts.max_peers,
            ..Limits::default()
        },
        transport: node.genesis.transport.clone(),
    })
}

/// Messages converted ahead of the node: past the per-peer inbound budget
/// (released once the network's delivery channel holds a message), so kept
/// to one; with the one in hand at most two 1 MiB envelopes more than the
/// network's own delivery channel wait here uncounted.
pub const FORWARD_QUEUE: usize = 1;

/// Feeds the transport's inbound queue into the node's ([`FORWARD_QUEUE`]).
pub fn forward(mut rx: mpsc::Receiver<Inbound>) -> mpsc::Receiver<Incoming> {
    let (tx, out) = mpsc::channel(FORWARD_QUEUE);
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let e = m.envelope;
            let incoming = Incoming {
                peer: m.peer.0,
                from: Some(m.from),
                msg_type: e.msg_type,
                version: e.version,
                request_id: e.request_id,
                payload: e.payload,
            };
            if tx.send(incoming).await.is_err() {
                break;
            }
        }
    });
    out
}

/// The `/status` view of the node: its state, with the peers' counters
/// read now rather than at the last tick.
pub fn snapshot(s: &NodeState, net: &Network) -> StatusSnapshot {
    StatusSnapshot {
        peers: net.stats(),
        net: net.totals(),
        ..s.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages of a peer that the node does not read stay in the
    /// network's queue, where they are counted, not in the conversion.
    #[tokio::test(flavor = "current_thread")]
    async fn forward_holds_at_most_two_messages_the_node_has_not_taken() {
        const SENT: usize = 64;
        let (tx, rx) = mpsc::channel(SENT);
        let _out = forward(rx);
        for i in 0..SENT {
            let e = Envelope::new(200, MSG_VERSION, i as u64, vec![0; 1 << 10]);
            tx.try_send(Inbound {
                peer: PeerId(1),
                from: Sender {
                    peer: PeerId(1),
                    conn: 1,
                    node_id: NodeId([1; 32]),
                    remote: "127.0.0.1:1".parse().unwrap(),
                    member: true,
                },
                envelope: e,
            })
            .unwrap();
        }
        // Let the forwarding task run as long as it can.
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
        let taken = tx.capacity();
        assert!(taken <= FORWARD_QUEUE + 1, "{taken} messages taken");
    }
}
