//! The [`Network`] handle: start, send, broadcast, inspect, shut down.
//!
//! Tasks: one listener ([`super::server`]), one dialer per genesis peer we
//! dial and, for a node outside the genesis, one address-book dialer
//! ([`super::dialer`]), one task per live connection ([`super::peer`]) and
//! one delivery task, all sharing
//! [`super::shared::Shared`]. All watch one shutdown signal and are joined by
//! [`Network::shutdown`].
//!
//! Inbound messages wait in one bounded queue per peer (at most `queue_len`
//! envelopes and `inbound_bytes` bytes); the delivery task takes from the
//! queues in turn (round robin) into the node's channel, so a peer that
//! floods fills only its own queue and stalls only its own reader. Outbound,
//! each peer's queue is bounded in envelopes and in bytes
//! (`max_queued_bytes`); a broadcast queues one shared copy of the envelope.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use std::time::Instant as StdInstant;

use rand::seq::SliceRandom;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::discovery::{AddressBook, Source, MAX_BOOK};
use super::envelope::{Envelope, HEADER_LEN};
use super::gate::{guest_seats, Gate};
use super::handshake;
use super::misbehaviour::{Misbehaviour, Offence};
use super::shared::{bump, Delivery, Guests, NetTotals, Shared, Slot, Totals};
use super::{
    dialer, server, Inbound, LinkEvent, MemberSet, NetConfig, NetError, NodeId, PeerId, PeerLink,
    PeerStats, Sender, RESERVED_TYPES,
};

/// Link events kept for a slow subscriber (it then misses the oldest and
/// can re-read [`Network::links`]).
const LINK_EVENTS: usize = 256;

/// How long [`Network::shutdown`] waits for its tasks before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Capacity of the node's channel (messages already taken in turn from the
/// peers' queues); `queue_len` if smaller.
const DELIVERY_QUEUE: usize = 8;

/// Ends everything when the last [`Network`] clone is dropped.
struct Guard(Arc<Shared>);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.shutdown.send(true);
        self.0.close_all();
    }
}

/// The transport of one node: connections to every genesis peer.
#[derive(Clone)]
pub struct Network {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    _guard: Arc<Guard>,
}

impl Network {
    /// Listens, starts dialing, and returns the handle and the stream of
    /// application messages (types from 16 on) received from peers.
    pub async fn start(cfg: NetConfig) -> Result<(Network, mpsc::Receiver<Inbound>), NetError> {
        validate(&cfg)?;
        let params =
            handshake::parse_suite(&cfg.transport).map_err(|e| NetError::Config(e.to_string()))?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| NetError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| NetError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let (tx, rx) = mpsc::channel(cfg.limits.queue_len.clamp(1, DELIVERY_QUEUE));
        let (shared, queues, dial_genesis) = Shared::build(cfg, params, local_addr);
        let shared = Arc::new(shared);
        shared.spawn(deliver(
            shared.clone(),
            queues,
            tx,
            shared.shutdown_signal(),
        ));
        shared.spawn(server::accept_loop(shared.clone(), listener));
        let mut dial_genesis = dial_genesis;
        dial_genesis.shuffle(&mut rand::rng());
        for p in dial_genesis {
            shared.spawn(dialer::dial_loop(shared.clone(), p));
        }
        if shared.book.is_some() {
            shared.spawn(dialer::book_loop(shared.clone()));
        }
        info!(
            me = ?shared.me,
            node_id = %shared.my_id,
            listen = %local_addr,
            peers = shared.peers.len(),
            max_peers = shared.limits.max_peers,
            "network started"
        );
        Ok((
            Network {
                _guard: Arc::new(Guard(shared.clone())),
                shared,
                local_addr,
            },
            rx,
        ))
    }

    /// `from` (the sender of an [`Inbound`]) committed `offence`: scored
    /// against its keys, whoever holds its slot now, and banned
    /// (disconnected, then refused) at the threshold
    /// ([`super::misbehaviour`]).
    pub fn offence(&self, from: &Sender, offence: Offence) {
        self.shared.offence(from, offence);
    }

    /// Whether `node` is banned for misbehaviour now.
    pub fn banned(&self, node: &NodeId) -> bool {
        self.shared.banned(node)
    }

    /// Queues `env` for `peer` without waiting. A full queue (in envelopes
    /// or in bytes) drops the message, counts it and says so.
    pub fn send(&self, peer: PeerId, env: Envelope) -> Result<(), NetError> {
        self.send_shared(peer, None, Arc::new(env))
    }

    /// [`Network::send`] on connection `conn` only (an answer for whoever
    /// asked on it): once that connection has closed, `NotConnected`, even
    /// when `peer`'s slot holds another connection now, of the same node
    /// or of another, which never gets an answer it did not ask for.
    pub fn reply(&self, peer: PeerId, conn: u64, env: Envelope) -> Result<(), NetError> {
        self.send_shared(peer, Some(conn), Arc::new(env))
    }

    fn send_shared(
        &self,
        peer: PeerId,
        conn: Option<u64>,
        env: Arc<Envelope>,
    ) -> Result<(), NetError> {
        env.check()?;
        if env.msg_type < RESERVED_TYPES {
            return Err(NetError::ReservedType(env.msg_type));
        }
        if peer.0 as usize >= self.shared.slots.len() || Some(peer) == self.shared.me {
            return Err(NetError::UnknownPeer(peer));
        }
        if self.shared.is_shutting_down() {
            return Err(NetError::Shutdown);
        }
        let (queue, queued) = match &*self.shared.slot(peer).live.lock().expect("slot lock") {
            Some(live) if conn.is_none_or(|c| c == live.id) => {
                (live.queue.clone(), live.queued.clone())
            }
            _ => return Err(NetError::NotConnected(peer)),
        };
        let size = HEADER_LEN + env.payload.len();
        let full = || {
            bump(&self.shared.totals.queue_full);
            debug!(%peer, "send queue full; message dropped");
            NetError::QueueFull(peer)
        };
        let before = queued.fetch_add(size, Ordering::AcqRel);
        if before + size > self.shared.limits.max_queued_bytes {
            queued.fetch_sub(size, Ordering::AcqRel);
            return Err(full());
        }
        queue.try_send(env).map_err(|e| {
            queued.fetch_sub(size, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => full(),
                mpsc::error::TrySendError::Closed(_) => NetError::NotConnected(peer),
            }
        })
    }

    /// Queues `env` for every connected peer, one shared copy for all
    /// (drops counted per peer).
    pub fn broadcast(&self, env: Envelope) {
        let env = Arc::new(env);
        for peer in self.connected() {
            if let Err(e) = self.send_shared(peer, None, env.clone()) {
                debug!(%peer, error = %e, "broadcast skipped a peer");
            }
        }
    }

    /// Bytes queued for `peer` and not yet written (0 if not connected).
    pub fn queued_bytes(&self, peer: PeerId) -> usize {
        if peer.0 as usize >= self.shared.slots.len() {
            return 0;
        }
        self.shared
            .slot(peer)
            .live
            .lock()
            .expect("slot lock")
            .as_ref()
            .map_or(0, |l| l.queued.load(Ordering::Acquire))
    }

    /// Peers with a live, authenticated connection (genesis peers first,
    /// then the others), ascending.
    pub fn connected(&self) -> Vec<PeerId> {
        (0..self.shared.slots.len())
            .map(|i| PeerId(i as u16))
            .filter(|&p| {
                self.shared
                    .slot(p)
                    .live
                    .lock()
                    .expect("slot lock")
                    .is_some()
            })
            .collect()
    }

    /// The live connection of `peer`: who it is (node id, genesis or not,
    /// member or not), which way it was dialed.
    pub fn link(&self, peer: PeerId) -> Option<PeerLink> {
        self.shared.link(peer)
    }

    /// Every live connection.
    pub fn links(&self) -> Vec<PeerLink> {
        self.connected()
            .into_iter()
            .filter_map(|p| self.shared.link(p))
            .collect()
    }

    /// The peer id of the connection to `node`, if connected.
    pub fn peer_of(&self, node: &NodeId) -> Option<PeerId> {
        self.links()
            .into_iter()
            .find(|l| l.node_id == *node)
            .map(|l| l.peer)
    }

    /// Connections opening and closing from now on.
    pub fn link_events(&self) -> broadcast::Receiver<LinkEvent> {
        self.shared.links.subscribe()
    }

    /// The member set that decides who gets member slots (shared: update it
    /// with [`MemberSet::set`] as the active set changes).
    pub fn members(&self) -> MemberSet {
        self.shared.members.clone()
    }

    /// This node's id (SHA-256 of its ML-DSA-65 key).
    pub fn node_id(&self) -> NodeId {
        self.shared.my_id
    }

    /// Addresses in the address book (nodes outside the genesis; 0 otherwise).
    pub fn known_addresses(&self) -> usize {
        self.shared
            .book
            .as_ref()
            .map_or(0, |b| b.lock().expect("book lock").len())
    }

    /// Connection state and heartbeat counters of every other genesis peer
    /// and of every connected node outside the genesis.
    pub fn stats(&self) -> Vec<PeerStats> {
        let g = self.shared.genesis_len();
        (0..self.shared.slots.len())
            .map(|i| PeerId(i as u16))
            .filter(|&p| Some(p) != self.shared.me)
            .filter_map(|p| {
                let slot = self.shared.slot(p);
                let (queued, node_id) = match slot.live.lock().expect("slot lock").as_ref() {
                    Some(l) => (Some(l.queued.load(Ordering::Acquire)), Some(l.link.node_id)),
                    None => (None, None),
                };
                let info = self.shared.peers.get(p.0 as usize);
                if info.is_none() && queued.is_none() {
                    return None;
                }
                let node_id = node_id
                    .or_else(|| info.map(|i| NodeId::of(&i.signing_public)))
                    .map(|n| n.to_hex())
                    .unwrap_or_default();
                let label = match info {
                    Some(i) => i.label.clone(),
                    None => format!("joiner-{}", &node_id[..8]),
                };
                let connected = queued.is_some();
                let c = slot.counters.lock().expect("counters lock");
                let (m5, h1) = (c.window(5), c.window(60));
                Some(PeerStats {
                    peer: p,
                    label,
                    node_id,
                    genesis: (p.0 as usize) < g,
                    connected,
                    heartbeats_ok_5m: m5.ok,
                    heartbeat_errors_5m: m5.errors,
                    closed_5m: m5.closed,
                    heartbeats_ok_1h: h1.ok,
                    heartbeat_errors_1h: h1.errors,
                    closed_1h: h1.closed,
                    queued_bytes: queued.unwrap_or(0) as u64,
                })
            })
            .collect()
    }

    /// Node-wide counters (handshake failures, drops) since start.
    pub fn totals(&self) -> NetTotals {
        self.shared.totals.snapshot()
    }

    /// The address actually listened on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Closes every connection and the listener, and waits for all tasks.
    pub async fn shutdown(&self) {
        let _ = self.shared.shutdown.send(true);
        self.shared.close_all();
        loop {
            let mut tasks = std::mem::take(&mut *self.shared.tasks.lock().expect("task set lock"));
            if tasks.is_empty() {
                break;
            }
            let joined = tokio::time::timeout(SHUTDOWN_GRACE, async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
            if joined.is_err() {
                warn!("network tasks did not stop in time; aborting them");
                tasks.abort_all();
            }
        }
        info!(me = ?self.shared.me, "network stopped");
    }
}

impl Shared {
    /// The state of a network listening at `local_addr` (no task started),
    /// the peers' inbound queues for its delivery task, and the genesis
    /// peers it dials.
    pub(super) fn build(
        cfg: NetConfig,
        params: snow::params::NoiseParams,
        local_addr: SocketAddr,
    ) -> (Shared, Vec<mpsc::Receiver<Delivery>>, Vec<PeerId>) {
        // One slot per genesis peer, then one per connection a node outside
        // the genesis can hold: members (max_peers) and guests, and as many
        // again as the guest seats for connections closing while their
        // successors are seated (an evicted guest, a replaced connection).
        let guests = cfg.limits.max_peers + 2 * guest_seats(cfg.limits.max_peers);
        let n_slots = (cfg.peers.len() + guests).min(u16::MAX as usize + 1);
        let mut queues = Vec::with_capacity(n_slots);
        let mut slots = Vec::with_capacity(n_slots);
        for _ in 0..n_slots {
            let (ptx, prx) = mpsc::channel(cfg.limits.queue_len.max(1));
            slots.push(Slot::new(ptx, cfg.limits.inbound_bytes));
            queues.push(prx);
        }
        let gate = Gate::new(
            cfg.limits.max_peers,
            cfg.peers
                .iter()
                .filter(|p| cfg.me.is_some_and(|me| p.id < me))
                .map(|p| p.address.ip()),
        );
        let members = cfg
            .members
            .clone()
            .unwrap_or_else(|| MemberSet::of_genesis(&cfg.peers));
        // Which genesis peers we dial by their genesis address: the higher
        // ids for a genesis peer; all of them for a node outside the genesis
        // without bootstrap addresses.
        let dial_genesis: Vec<PeerId> = match cfg.me {
            Some(me) => cfg.peers.iter().map(|p| p.id).filter(|&p| p > me).collect(),
            None if cfg.bootstrap.is_empty() => cfg.peers.iter().map(|p| p.id).collect(),
            None => Vec::new(),
        };
        let book = cfg.me.is_none().then(|| {
            let excluded: Vec<SocketAddr> = dial_genesis
                .iter()
                .map(|p| cfg.peers[p.0 as usize].address)
                .collect();
            let mut book = AddressBook::new(local_addr, excluded, MAX_BOOK);
            book.on_networks_of(cfg.peers.iter().map(|p| p.address));
            for a in &cfg.bootstrap {
                let _ = book.add(*a, Source::Bootstrap, StdInstant::now());
            }
            Mutex::new(book)
        });
        let genesis_len = cfg.peers.len();
        let shared = Shared {
            network_id: cfg.network_id,
            me: cfg.me,
            my_id: NodeId::of(cfg.keys.verifying_key()),
            keys: cfg.keys,
            slots,
            guests: Mutex::new(Guests::new(genesis_len, n_slots - genesis_len)),
            kicks: Mutex::default(),
            handshake_kicks: Mutex::default(),
            peers: cfg.peers,
            dial_slots: Arc::new(Semaphore::new(cfg.limits.max_outbound)),
            members,
            book,
            listen: local_addr,
            links: broadcast::channel(LINK_EVENTS).0,
            limits: cfg.limits,
            params,
            totals: Totals::default(),
            gate: Mutex::new(gate),
            misbehaviour: Mutex::new(Misbehaviour::new()),
            conn_log: Mutex::new(crate::lograte::LogRate::per_minute()),
            shutdown: watch::Sender::new(false),
            next_conn: AtomicU64::new(0),
            tasks: Mutex::new(JoinSet::new()),
        };
        (shared, queues, dial_genesis)
    }
}

fn validate(cfg: &NetConfig) -> Result<(), NetError> {
    let bad = |m: String| Err(NetError::Config(m));
    if cfg.peers.len() > u16::MAX as usize + 1 {
        return bad(format!("{} peers exceed the u16 id space", cfg.peers.len()));
    }
    for (i, p) in cfg.peers.iter().enumerate() {
        if p.id.0 as usize != i {
            return bad(format!("peer at index {i} has id {}", p.id));
        }
    }
    match cfg.me {
        Some(id) => {
            let Some(me) = cfg.peers.get(id.0 as usize) else {
                return bad(format!("me = {id} is not in the peer list"));
            };
            if me.noise_public != *cfg.keys.noise_public() {
                return bad(format!("our Noise key is not {id}'s genesis key"));
            }
            if me.signing_public != *cfg.keys.verifying_key() {
                return bad(format!("our signing key is not {id}'s genesis key"));
            }
        }
        None => {
            if let Some(p) = cfg.peers.iter().find(|p| {
                p.noise_public == *cfg.keys.noise_public()
                    || p.signing_public == *cfg.keys.verifying_key()
            }) {
                return bad(format!(
                    "our keys are {}'s genesis keys; start as that peer",
                    p.id
                ));
            }
        }
    }
    let l = &cfg.limits;
    if l.queue_len == 0 || l.max_peers == 0 || l.max_outbound == 0 {
        return bad("queue_len, max_peers and max_outbound must be at least 1".into());
    }
    if l.heartbeat_every.is_zero() || l.idle_timeout.is_zero() || l.handshake_timeout.is_zero() {
        return bad("timeouts and the heartbeat period must be positive".into());
    }
    if l.idle_timeout <= l.heartbeat_every {
        return bad("idle_timeout must exceed heartbeat_every".into());
    }
    let largest = HEADER_LEN + super::MAX_PAYLOAD;
    if l.max_queued_bytes < largest || l.inbound_bytes < largest {
        return bad(format!(
            "max_queued_bytes and inbound_bytes must hold the largest message ({largest} bytes)"
        ));
    }
    if l.inbound_bytes > Semaphore::MAX_PERMITS {
        return bad("inbound_bytes is too large".into());
    }
    Ok(())
}

/// The delivery task: takes one message from each peer's queue in turn and
/// passes it to the node's channel, releasing its share of the peer's byte
/// budget once the node's channel holds it. A message whose sender no
/// longer holds its id ([`Shared::still_sender`]) is dropped.
async fn deliver(
    shared: Arc<Shared>,
    mut queues: Vec<mpsc::Receiver<Delivery>>,
    out: mpsc::Sender<Inbound>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next = 0;
    loop {
        let taken = poll_fn(|cx| {
            let n = queues.len();
            let mut closed = 0;
            for i in 0..n {
                let k = (next + i) % n;
                match queues[k].poll_recv(cx) {
                    Poll::Ready(Some(d)) => {
                        next = k + 1;
                        return Poll::Ready(Some(d));
                    }
                    Poll::Ready(None) => closed += 1,
                    Poll::Pending => {}
                }
            }
            if closed == n {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        });
        let d = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            d = taken => match d {
                Some(d) => d,
                None => return,
            },
        };
        let Delivery { inbound, permit } = d;
        if !shared.still_sender(inbound.peer, inbound.from.node_id) {
            debug!(peer = %inbound.peer, "message of a connection whose id went to another node; dropped");
            continue;
        }
        if shared.refuses_sender(&inbound.from) {
            // Queued before its ban: it would cost decoding and signature
            // checks for nothing.
            continue;
        }
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            sent = out.send(inbound) => if sent.is_err() {
                return;
            },
        }
        drop(permit);
    }
}
