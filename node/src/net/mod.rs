//! The node's transport: authenticated, encrypted connections between the
//! peers of one genesis.
//!
//! Layered bottom up, one concept per module (in the manner of tokio's
//! mini-redis):
//! - [`frame`]: Noise messages on TCP, each after a 2-byte big-endian length.
//! - [`envelope`]: the typed messages carried by the decrypted byte stream.
//! - [`handshake`]: `Noise_XXhfs` with the network id as prologue, then each
//!   side's ML-DSA-65 signature of the handshake hash; says who the peer is.
//! - [`connection`]: an established session, envelopes in and out.
//! - [`peer`]: one connection's life: reader, writer with its bounded queue,
//!   heartbeat, idle and write timeouts.
//! - [`stats`]: per-peer counters in per-minute buckets (last 5 min, 1 h).
//! - [`gate`]: the budget of unauthenticated inbound sockets (a pool, two
//!   per source IP, an allowance for genesis addresses, a 5 s deadline) and
//!   the once-a-minute-per-IP logging of refusals.
//! - [`server`] and [`dialer`]: inbound accepts and outbound dials (with
//!   exponential backoff and jitter), both bounded in number.
//! - [`shared`]: per-peer slots, totals and signals the tasks share.
//! - [`network`]: the [`Network`] handle that the node drives.
//!
//! One connection per pair of peers: the peer with the lower [`PeerId`] dials,
//! the higher one accepts (and refuses the other direction).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::keys::{NodeKeys, VerifyingKey};

pub mod connection;
pub mod dialer;
pub mod envelope;
pub mod frame;
pub mod gate;
pub mod handshake;
pub mod network;
pub mod peer;
pub mod server;
pub mod shared;
pub mod stats;

pub use envelope::{Envelope, EnvelopeError, MAX_PAYLOAD};
pub use handshake::DEFAULT_TRANSPORT;
pub use network::Network;
pub use shared::NetTotals;

/// Message types `0..=15` belong to the transport and are never delivered.
pub const RESERVED_TYPES: u8 = 16;
/// Heartbeat request; the reply echoes its request id.
pub const MSG_PING: u8 = 1;
/// Heartbeat reply.
pub const MSG_PONG: u8 = 2;

/// A peer: its index in the genesis peer list.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub struct PeerId(pub u16);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer{}", self.0)
    }
}

/// A genesis peer as the transport needs it.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub id: PeerId,
    pub label: String,
    pub address: SocketAddr,
    /// X25519 Noise static public key.
    pub noise_public: [u8; 32],
    /// ML-DSA-65 key that signs this peer's handshakes.
    pub signing_public: VerifyingKey,
}

/// Bounds that keep a node's resources finite whatever its peers do.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Authenticated inbound connections. Sockets still in their handshake
    /// have their own, smaller budget (see [`gate`]).
    pub max_inbound: usize,
    /// Dialed connections (including those still in their handshake).
    pub max_outbound: usize,
    /// Envelopes waiting to be written to one peer (a full queue drops), and
    /// envelopes from one peer waiting for the node (a full queue stops
    /// reading that peer).
    pub queue_len: usize,
    /// Bytes waiting to be written to one peer; beyond, sends are dropped.
    pub max_queued_bytes: usize,
    /// Bytes from one peer waiting for the node; beyond, that peer's reader
    /// waits.
    pub inbound_bytes: usize,
    /// TCP connect + Noise handshake + signature exchange.
    pub handshake_timeout: Duration,
    /// A connection that receives nothing (not even a heartbeat) for this
    /// long, or cannot write one message for this long, is closed.
    pub idle_timeout: Duration,
    /// Ping period.
    pub heartbeat_every: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_inbound: 64,
            max_outbound: 64,
            queue_len: 256,
            max_queued_bytes: 8 << 20,
            inbound_bytes: 4 << 20,
            handshake_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(30),
            heartbeat_every: Duration::from_secs(5),
        }
    }
}

/// Everything [`Network::start`] needs.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// The Noise prologue: peers of another network fail the handshake.
    pub network_id: [u8; 32],
    pub me: PeerId,
    pub listen: SocketAddr,
    pub keys: Arc<NodeKeys>,
    /// Every genesis peer, including me, in genesis order (`peers[i].id == PeerId(i)`).
    pub peers: Vec<PeerInfo>,
    pub limits: Limits,
    /// The Noise protocol name (the genesis `transport`), e.g. [`DEFAULT_TRANSPORT`].
    pub transport: String,
}

/// A message received from a peer (types from [`RESERVED_TYPES`] on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub peer: PeerId,
    pub envelope: Envelope,
}

/// One peer's connection state and heartbeat counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStats {
    pub peer: PeerId,
    pub label: String,
    pub connected: bool,
    pub heartbeats_ok_5m: u64,
    pub heartbeat_errors_5m: u64,
    pub closed_5m: u64,
    pub heartbeats_ok_1h: u64,
    pub heartbeat_errors_1h: u64,
    pub closed_1h: u64,
    /// Bytes queued for this peer and not yet written.
    #[serde(default)]
    pub queued_bytes: u64,
}

/// Errors of the [`Network`] API; one line each.
#[derive(Debug, Error)]
pub enum NetError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid network configuration: {0}")]
    Config(String),
    #[error("{0} is not a genesis peer")]
    UnknownPeer(PeerId),
    #[error("{0} is not connected")]
    NotConnected(PeerId),
    #[error("queue to {0} is full; message dropped")]
    QueueFull(PeerId),
    #[error("message type {0} is reserved for the transport")]
    ReservedType(u8),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("the network is shut down")]
    Shutdown,
}
