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
//! - [`gate`]: the connection budgets: `max_peers` slots for members of the
//!   active set, a pool for inbound handshakes (two per source address, an
//!   allowance for genesis addresses, a 5 s deadline, a rate of handshake
//!   starts per source), guest seats for everyone else (two per source
//!   address; when full, the address holding most gives way), and the
//!   once-a-minute-per-address logging of refusals.
//! - [`server`] and [`dialer`]: inbound accepts and outbound dials (with
//!   exponential backoff and jitter, members in random order), both bounded.
//! - [`discovery`]: address lists exchanged between peers, and the bounded
//!   address book a node outside the genesis dials from.
//! - [`misbehaviour`]: the offences a peer is scored for (what no honest
//!   node sends or forwards), and the bans that close its connection and
//!   refuse it for a back-off (sans-IO; the node reports offences).
//! - [`relay`]: a bounded seen-cache deciding what to forward to whom
//!   (sans-IO; the node calls it).
//! - [`shared`]: per-peer slots, totals and signals the tasks share.
//! - [`sources`]: per-source state with a bound on the sources remembered
//!   (the node's serving budgets).
//! - [`network`]: the [`Network`] handle that the node drives.
//!
//! One connection per pair of genesis peers: the peer with the lower
//! [`PeerId`] dials, the higher one accepts (and refuses the other
//! direction). Nodes outside the genesis dial (bootstrap or learned
//! addresses, or the genesis peers'); their connections get ids from the
//! genesis peer count on, reused once a connection ends.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::consensus::active::NodeId;
use crate::keys::{NodeKeys, VerifyingKey};

pub mod connection;
pub mod dialer;
pub mod discovery;
pub mod envelope;
pub mod frame;
pub mod gate;
pub mod handshake;
pub mod misbehaviour;
pub mod network;
pub mod peer;
pub mod relay;
pub mod server;
pub mod shared;
pub mod sources;
pub mod stats;

pub use envelope::{Envelope, EnvelopeError, MAX_PAYLOAD};
pub use handshake::{Remote, DEFAULT_TRANSPORT};
pub use network::Network;
pub use relay::{message_id, MessageId, Relay};
pub use shared::NetTotals;

/// Message types `0..=15` belong to the transport and are never delivered.
pub const RESERVED_TYPES: u8 = 16;
/// Heartbeat request; the reply echoes its request id.
pub const MSG_PING: u8 = 1;
/// Heartbeat reply.
pub const MSG_PONG: u8 = 2;
/// Address list ([`discovery`]).
pub const MSG_ADDRS: u8 = discovery::MSG_ADDRS;

/// A peer: its index in the genesis peer list; connections of nodes outside
/// the genesis get ids from the genesis peer count on.
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

/// The node ids counted as members of the active set: they have
/// connection slots nobody else can take ([`gate`]). Shared: the node
/// updates it as the active set changes; a connection is classified when
/// it is established (a change does not move connections already open).
#[derive(Clone, Debug, Default)]
pub struct MemberSet(Arc<RwLock<HashSet<NodeId>>>);

impl MemberSet {
    pub fn new(ids: impl IntoIterator<Item = NodeId>) -> Self {
        MemberSet(Arc::new(RwLock::new(ids.into_iter().collect())))
    }

    /// The genesis peers' node ids.
    pub fn of_genesis(peers: &[PeerInfo]) -> Self {
        Self::new(peers.iter().map(|p| NodeId::of(&p.signing_public)))
    }

    /// Replaces the whole set.
    pub fn set(&self, ids: impl IntoIterator<Item = NodeId>) {
        *self.0.write().expect("member set lock") = ids.into_iter().collect();
    }

    pub fn contains(&self, id: &NodeId) -> bool {
        self.0.read().expect("member set lock").contains(id)
    }

    pub fn len(&self) -> usize {
        self.0.read().expect("member set lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A live connection as the node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLink {
    pub peer: PeerId,
    /// SHA-256 of the peer's ML-DSA-65 key, proven in the handshake.
    pub node_id: NodeId,
    /// Whether its keys are in the genesis (then `peer` is its genesis index).
    pub genesis: bool,
    /// Whether it was a member of the active set when it connected.
    pub member: bool,
    /// Whether we dialed it.
    pub outbound: bool,
    /// The address at the other end of the socket.
    pub remote: SocketAddr,
}

/// A connection opened or closed. `Up` may repeat for one peer (a newer
/// connection replaced the previous one); `Down` means no connection now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    Up(PeerLink),
    Down(PeerLink),
}

/// Bounds that keep a node's resources finite whatever its peers do.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections to members of the active set (`--max-peers`). Inbound
    /// sockets in their handshake share a pool of `max(4, max_peers / 4)`,
    /// everyone else's connections as many guest seats (see [`gate`]).
    pub max_peers: usize,
    /// Dials in progress at once (TCP connect and handshake).
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
            max_peers: 16,
            max_outbound: 8,
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
    /// Our genesis index; `None` when our keys are not in the genesis (we
    /// then dial `bootstrap`, or the genesis peers, and the addresses we
    /// learn).
    pub me: Option<PeerId>,
    pub listen: SocketAddr,
    pub keys: Arc<NodeKeys>,
    /// Every genesis peer, including me, in genesis order (`peers[i].id == PeerId(i)`).
    pub peers: Vec<PeerInfo>,
    /// Nodes outside the genesis: addresses to dial first instead of the
    /// genesis peers' (`--bootstrap`). Ignored by genesis peers.
    pub bootstrap: Vec<SocketAddr>,
    /// The active set's node ids; `None`: the genesis peers'.
    pub members: Option<MemberSet>,
    pub limits: Limits,
    /// The Noise protocol name (the genesis `transport`), e.g. [`DEFAULT_TRANSPORT`].
    pub transport: String,
}

/// A message received from a peer (types from [`RESERVED_TYPES`] on), with
/// who sent it: by the time the node judges it, the peer's slot may hold
/// another connection, of the same node or of another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub peer: PeerId,
    pub from: Sender,
    pub envelope: Envelope,
}

/// What misbehaviour scores and serving budgets are kept by (docs/SPEC.md
/// 10.7): a genesis peer's or a member's node id (its place costs it its
/// key), and a guest's source address as well (anyone can mint node ids,
/// so a guest's own id is no key it cannot change by reconnecting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Node(NodeId),
    /// An address as [`gate::source`] counts it: IPv4, or an IPv6 /64.
    Addr(IpAddr),
    /// A peer of an in-process transport (tests), whose index nobody else
    /// ever takes.
    Local(u16),
}

impl Source {
    /// The source address of `ip` ([`gate::source`]).
    pub fn addr(ip: IpAddr) -> Self {
        Source::Addr(gate::source(ip))
    }
}

/// The connection a message came on, fixed when it was read: whom its
/// offences are charged to ([`Network::offence`]) and whose budgets it
/// spends ([`Sender::source`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sender {
    /// The slot it came through (another connection's once it closed).
    pub peer: PeerId,
    /// The connection's id, never reused while the network runs.
    pub conn: u64,
    /// SHA-256 of its ML-DSA-65 key, proven in the handshake.
    pub node_id: NodeId,
    /// The address at the other end of the socket.
    pub remote: SocketAddr,
    /// A genesis peer, or a member of the active set when it connected;
    /// otherwise a guest.
    pub member: bool,
}

impl Sender {
    /// The sender of what arrives on connection `conn` of `link`.
    pub fn of(link: &PeerLink, conn: u64) -> Self {
        Sender {
            peer: link.peer,
            conn,
            node_id: link.node_id,
            remote: link.remote,
            member: link.genesis || link.member,
        }
    }

    /// Whom its requests are budgeted to: a genesis peer or a member by
    /// its node id, a guest by its source address (shared with every
    /// guest from there, whatever node id each holds).
    pub fn source(&self) -> Source {
        if self.member {
            Source::Node(self.node_id)
        } else {
            Source::addr(self.remote.ip())
        }
    }

    /// What its offences are scored against: its node id and, unless it
    /// is a genesis peer or a member (`member_now`: of the active set
    /// now), its source address too.
    pub fn charged(&self, member_now: bool) -> Vec<Source> {
        let mut keys = vec![Source::Node(self.node_id)];
        if !self.member && !member_now {
            keys.push(Source::addr(self.remote.ip()));
        }
        keys
    }
}

/// One peer's connection state and heartbeat counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStats {
    pub peer: PeerId,
    pub label: String,
    /// The peer's node id (hex), while connected or for a genesis peer.
    #[serde(default)]
    pub node_id: String,
    /// Whether its keys are in the genesis.
    #[serde(default)]
    pub genesis: bool,
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
    #[error("{0} is not a peer")]
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
