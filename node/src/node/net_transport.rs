//! The node over the real transport: [`crate::net::Network`] as a
//! [`Transport`], the genesis as a [`NetConfig`], and the node state as a
//! [`StatusSnapshot`].

use std::net::SocketAddr;

use tokio::sync::mpsc;

use super::state::NodeState;
use super::transport::{Incoming, PeerSummary, Transport};
use super::{Node, NodeError};
use crate::messages::MSG_VERSION;
use crate::net::{Envelope, Inbound, Limits, NetConfig, Network, PeerId, PeerInfo};
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

    fn broadcast(&self, msg_type: u8, payload: Vec<u8>) {
        self.0
            .broadcast(Envelope::new(msg_type, MSG_VERSION, 0, payload));
    }

    fn summary(&self) -> PeerSummary {
        let stats = self.0.stats();
        PeerSummary {
            connected: stats.iter().filter(|s| s.connected).count(),
            heartbeats_ok_5m: stats.iter().map(|s| s.heartbeats_ok_5m).sum(),
            heartbeat_errors_5m: stats.iter().map(|s| s.heartbeat_errors_5m).sum(),
        }
    }
}

/// The transport configuration from the genesis: every peer with its keys,
/// the network id as the Noise prologue, and this node's listen address
/// (its genesis address unless `listen` overrides it).
pub fn net_config(node: &Node, listen: Option<SocketAddr>) -> Result<NetConfig, NodeError> {
    let mut peers = Vec::with_capacity(node.genesis.peers.len());
    for (i, p) in node.genesis.peers.iter().enumerate() {
        peers.push(PeerInfo {
            id: PeerId(i as u16),
            label: p.label.clone(),
            address: p.address,
            noise_public: p.noise_public()?,
            signing_public: p.signing_public()?,
        });
    }
    Ok(NetConfig {
        network_id: node.network_id,
        me: PeerId(node.me),
        listen: listen.unwrap_or(node.genesis.peers[node.me as usize].address),
        keys: node.keys.clone(),
        peers,
        limits: Limits::default(),
        transport: node.genesis.transport.clone(),
    })
}

/// Feeds the transport's inbound queue into the node's.
pub fn forward(mut rx: mpsc::Receiver<Inbound>) -> mpsc::Receiver<Incoming> {
    let (tx, out) = mpsc::channel(256);
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let e = m.envelope;
            let incoming = Incoming {
                peer: m.peer.0,
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

/// The `/status` view of the node.
pub fn snapshot(s: &NodeState, net: &Network) -> StatusSnapshot {
    StatusSnapshot {
        label: s.label.clone(),
        phase: s.phase.clone(),
        window: s.window,
        lag: s.lag,
        d: s.d,
        hash: s.hash.clone(),
        eval_backend: s.eval_backend.clone(),
        verify_backend: s.verify_backend.clone(),
        hash_rate: s.hash_rate,
        backend_faults: s.backend_faults,
        peers: net.stats(),
        net: net.totals(),
    }
}
