//! State shared by the [`super::Network`] handle and every transport task:
//! one slot per genesis peer and one per possible connection of a node
//! outside the genesis (its live connection, if any, as the sending end of
//! its bounded queue and the bytes queued there, its bounded inbound queue
//! towards the node, and its counters), node-wide totals, the gate (the
//! connection budgets), the member set, the address book, the shutdown
//! signal and the task set.
//!
//! A slot holds at most one connection: registering a new one drops the old
//! one, which ends it (the peer restarted, or the old connection is dead and
//! not yet noticed). For nodes outside the genesis, where both sides may
//! dial, the connection dialed by the lower node id is kept (both sides
//! decide alike); a newer one in the same direction replaces the older.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rand::seq::IteratorRandom;
use serde::{Deserialize, Serialize};
use snow::params::NoiseParams;
use tokio::sync::{broadcast, mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::discovery::{AddressBook, Addrs, MAX_ADDRS};
use super::envelope::Envelope;
use super::gate::{Gate, GuestId, HandshakeId, Refusal, Seat, Ticket};
use super::handshake::{self, HandshakeError, Remote};
use super::misbehaviour::{Misbehaviour, Offence};
use super::stats::{Counters, Event};
use super::{
    Inbound, Limits, LinkEvent, MemberSet, NodeId, PeerId, PeerInfo, PeerLink, Sender, Source,
};
use crate::keys::NodeKeys;

/// Node-wide transport counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetTotals {
    pub handshakes_ok: u64,
    /// Every failed handshake, the two kinds below included.
    pub handshake_failures: u64,
    /// Static key not in the genesis.
    pub unknown_peers: u64,
    /// Handshake signature that did not verify.
    pub bad_signatures: u64,
    /// Dials that did not reach a listening peer.
    pub dial_failures: u64,
    /// Sockets and connections refused by the budgets, all reasons (the
    /// six below: [`NetTotals::refused_by_reason`]).
    pub inbound_refused: u64,
    /// ... because the pool of handshakes in progress was full.
    pub refused_pool_full: u64,
    /// ... because their source address held two handshakes, or two
    /// guest seats.
    pub refused_per_ip: u64,
    /// ... because every member slot was taken.
    pub refused_members_full: u64,
    /// ... because every guest seat was taken and nobody could be evicted.
    pub refused_guests_full: u64,
    /// ... because their source address started handshakes over its rate.
    pub refused_rate: u64,
    /// ... because the node is banned for misbehaviour (inbound and
    /// dialed connections alike).
    pub refused_banned: u64,
    /// Attributable offences the node reported ([`super::misbehaviour`]).
    pub peer_offences: u64,
    /// Peers banned for misbehaviour (their connection closed).
    pub peers_banned: u64,
    /// Guests whose seat went to a guest from a less represented address.
    pub guests_evicted: u64,
    /// Handshakes in progress whose pool slot went to a socket from a less
    /// represented address.
    pub handshakes_evicted: u64,
    /// Handshakes completed by nodes outside the genesis.
    pub joiner_handshakes: u64,
    /// Address lists ignored: over the rate, or malformed.
    pub addrs_ignored: u64,
    /// Learned addresses skipped for their scope: loopback, link-local or
    /// private, on a network this node is not on (`discovery::Skip::OutOfScope`).
    pub addrs_out_of_scope: u64,
    /// Envelopes dropped because a peer's queue was full.
    pub queue_full: u64,
    /// Established connections closed for a protocol error.
    pub protocol_errors: u64,
    /// Messages written to peers (not heartbeats or address lists), and
    /// their bytes (envelope header and payload, before encryption).
    pub messages_sent: u64,
    pub bytes_sent: u64,
}

impl NetTotals {
    /// The refusals counted by reason, added up: always `inbound_refused`.
    pub fn refused_by_reason(&self) -> u64 {
        self.refused_pool_full
            + self.refused_per_ip
            + self.refused_members_full
            + self.refused_guests_full
            + self.refused_rate
            + self.refused_banned
    }
}

#[derive(Default)]
pub(crate) struct Totals {
    pub handshakes_ok: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub unknown_peers: AtomicU64,
    pub bad_signatures: AtomicU64,
    pub dial_failures: AtomicU64,
    pub inbound_refused: AtomicU64,
    pub refused_pool_full: AtomicU64,
    pub refused_per_ip: AtomicU64,
    pub refused_members_full: AtomicU64,
    pub refused_guests_full: AtomicU64,
    pub refused_rate: AtomicU64,
    pub refused_banned: AtomicU64,
    pub peer_offences: AtomicU64,
    pub peers_banned: AtomicU64,
    pub guests_evicted: AtomicU64,
    pub handshakes_evicted: AtomicU64,
    pub joiner_handshakes: AtomicU64,
    pub addrs_ignored: AtomicU64,
    pub addrs_out_of_scope: AtomicU64,
    pub queue_full: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub messages_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Totals {
    pub(super) fn snapshot(&self) -> NetTotals {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetTotals {
            handshakes_ok: g(&self.handshakes_ok),
            handshake_failures: g(&self.handshake_failures),
            unknown_peers: g(&self.unknown_peers),
            bad_signatures: g(&self.bad_signatures),
            dial_failures: g(&self.dial_failures),
            inbound_refused: g(&self.inbound_refused),
            refused_pool_full: g(&self.refused_pool_full),
            refused_per_ip: g(&self.refused_per_ip),
            refused_members_full: g(&self.refused_members_full),
            refused_guests_full: g(&self.refused_guests_full),
            refused_rate: g(&self.refused_rate),
            refused_banned: g(&self.refused_banned),
            peer_offences: g(&self.peer_offences),
            peers_banned: g(&self.peers_banned),
            guests_evicted: g(&self.guests_evicted),
            handshakes_evicted: g(&self.handshakes_evicted),
            joiner_handshakes: g(&self.joiner_handshakes),
            addrs_ignored: g(&self.addrs_ignored),
            addrs_out_of_scope: g(&self.addrs_out_of_scope),
            queue_full: g(&self.queue_full),
            protocol_errors: g(&self.protocol_errors),
            messages_sent: g(&self.messages_sent),
            bytes_sent: g(&self.bytes_sent),
        }
    }
}

/// A live connection as its slot sees it. Dropping it ends the connection.
pub(super) struct Live {
    pub(super) id: u64,
    pub(super) link: PeerLink,
    /// Where the peer accepts connections, as far as we know.
    pub(super) listen: Option<SocketAddr>,
    /// Shared envelopes: a broadcast queues one copy for every peer.
    pub(super) queue: mpsc::Sender<Arc<Envelope>>,
    /// Bytes (header and payload) waiting in `queue` or being written.
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) _close: oneshot::Sender<()>,
}

/// A received message on its way to the node (with its sender,
/// [`Shared::still_sender`]), holding its share of the peer's inbound byte
/// budget until the node's channel takes it.
pub(super) struct Delivery {
    pub(super) inbound: Inbound,
    pub(super) permit: OwnedSemaphorePermit,
}

pub(super) struct Slot {
    pub(super) live: Mutex<Option<Live>>,
    pub(super) counters: Mutex<Counters>,
    /// This peer's inbound queue towards the node (see [`super::network`]).
    pub(super) inbound: mpsc::Sender<Delivery>,
    /// Bytes this peer may have waiting for the node.
    pub(super) inbound_budget: Arc<Semaphore>,
}

impl Slot {
    pub(super) fn new(inbound: mpsc::Sender<Delivery>, budget_bytes: usize) -> Self {
        Slot {
            live: Mutex::default(),
            counters: Mutex::default(),
            inbound,
            inbound_budget: Arc::new(Semaphore::new(budget_bytes)),
        }
    }
}

/// What a connection task gets when it registers.
pub(crate) struct Registration {
    pub id: u64,
    pub queue: mpsc::Receiver<Arc<Envelope>>,
    pub queued: Arc<AtomicUsize>,
    /// Resolves when the slot drops this connection (replaced or shutdown).
    pub closed: oneshot::Receiver<()>,
}

/// State shared by the handle and every task.
pub(crate) struct Shared {
    pub network_id: [u8; 32],
    pub me: Option<PeerId>,
    pub my_id: NodeId,
    pub keys: Arc<NodeKeys>,
    pub peers: Vec<PeerInfo>,
    pub limits: Limits,
    pub params: NoiseParams,
    pub totals: Totals,
    pub(super) gate: Mutex<Gate>,
    /// Offence scores and bans by node id.
    pub(super) misbehaviour: Mutex<Misbehaviour>,
    /// Connection lines (connected, failed, disconnected): at most one a
    /// minute per address and kind, so that a peer reconnecting in a loop
    /// cannot fill the disk through the log.
    pub(super) conn_log: Mutex<crate::lograte::LogRate<(IpAddr, &'static str)>>,
    /// Dials in progress.
    pub dial_slots: Arc<Semaphore>,
    pub(super) slots: Vec<Slot>,
    pub(super) guests: Mutex<Guests>,
    /// Per guest seat, the signal that closes its connection when the
    /// gate evicts it (always locked after the gate, never before).
    pub(super) kicks: Mutex<HashMap<GuestId, oneshot::Sender<()>>>,
    /// Per handshake in the pool, the signal that ends it when the gate
    /// evicts it (locked after the gate, like `kicks`).
    pub(super) handshake_kicks: Mutex<HashMap<HandshakeId, oneshot::Sender<()>>>,
    pub members: MemberSet,
    /// Nodes outside the genesis: the addresses they may dial.
    pub(super) book: Option<Mutex<AddressBook>>,
    /// The address we listen on.
    pub listen: SocketAddr,
    pub(super) links: broadcast::Sender<LinkEvent>,
    pub(super) shutdown: watch::Sender<bool>,
    pub(super) next_conn: AtomicU64,
    pub(super) tasks: Mutex<JoinSet<()>>,
}

impl Shared {
    /// The genesis peer count: ids from here on are connections of nodes
    /// outside the genesis.
    pub fn genesis_len(&self) -> usize {
        self.peers.len()
    }

    /// Admits an authenticated session: gives it its id (a genesis peer's
    /// index, or a free id for anyone else) and a seat (member or pool).
    /// `ticket`: the inbound handshake's; `None` for a connection we dialed.
    pub fn admit(
        self: &Arc<Self>,
        remote: &Remote,
        addr: SocketAddr,
        outbound: bool,
        ticket: Option<Ticket>,
    ) -> Result<Admission, Refusal> {
        let release = |gate: &mut Gate| {
            if let Some(t) = ticket {
                gate.release(t);
            }
        };
        let by_id = remote.genesis.is_some() || self.members.contains(&remote.node_id);
        if self.refuses(&remote.node_id, addr, by_id) {
            release(&mut self.gate());
            return Err(Refusal::Banned);
        }
        let (peer, guest) = match remote.genesis {
            Some(id) => (id, false),
            None => match self.guests().assign(remote.node_id) {
                Ok(id) => (id, true),
                Err(why) => {
                    release(&mut self.gate());
                    return Err(why);
                }
            },
        };
        let member = self.members.contains(&remote.node_id);
        let replacing = self.slot(peer).live.lock().expect("slot lock").is_some();
        let mut gate = self.gate();
        let (seat, evicted) = match gate.seat(ticket, addr.ip(), member, replacing) {
            Ok(s) => s,
            Err(why) => {
                drop(gate);
                if guest {
                    self.guests().release(peer);
                }
                return Err(why);
            }
        };
        // Under the gate's lock, so that an eviction never misses a seat
        // whose signal is not registered yet.
        let mut kicks = self.kicks.lock().expect("kick lock");
        let kicked = match seat {
            Seat::Guest { id, .. } => {
                let (tx, rx) = oneshot::channel();
                kicks.insert(id, tx);
                Some(rx)
            }
            Seat::Member => None,
        };
        if let Some(victim) = evicted {
            bump(&self.totals.guests_evicted);
            if let Some(kick) = kicks.remove(&victim) {
                let _ = kick.send(());
            }
            debug!(remote = %addr, "guest seats full: the youngest guest of the address holding most evicted");
        }
        drop(kicks);
        drop(gate);
        Ok(Admission {
            shared: self.clone(),
            link: PeerLink {
                peer,
                node_id: remote.node_id,
                genesis: remote.genesis.is_some(),
                member,
                outbound,
                remote: addr,
            },
            seat,
            guest,
            kicked,
        })
    }

    /// Whether a message that `from` sent as `peer` may still go to the
    /// node under that id: always for a genesis peer (its id is its own);
    /// for anyone else only while `from` still holds the id. A guest id is
    /// handed to another node after its holder left, and what the old
    /// holder had queued must not reach the node as the new holder's.
    pub(super) fn still_sender(&self, peer: PeerId, from: NodeId) -> bool {
        (peer.0 as usize) < self.genesis_len() || self.guests().holds(peer, from)
    }

    /// Whether `node` is banned for misbehaviour now.
    pub fn banned(&self, node: &NodeId) -> bool {
        self.misbehaviour
            .lock()
            .expect("misbehaviour lock")
            .banned(&Source::Node(*node), Instant::now())
    }

    /// Whether a connection of `node` from `remote` is refused now for
    /// misbehaviour: its node id banned, or, for a guest (not `member`: a
    /// genesis peer or a member of the active set), its source address.
    pub fn refuses(&self, node: &NodeId, remote: SocketAddr, member: bool) -> bool {
        let m = self.misbehaviour.lock().expect("misbehaviour lock");
        let now = Instant::now();
        m.banned(&Source::Node(*node), now)
            || (!member && m.banned(&Source::addr(remote.ip()), now))
    }

    /// Whether what `from` sent is refused now ([`Shared::refuses`]).
    pub(super) fn refuses_sender(&self, from: &Sender) -> bool {
        let member = from.member || self.members.contains(&from.node_id);
        self.refuses(&from.node_id, from.remote, member)
    }

    /// `from` committed `offence` (see [`super::misbehaviour`]): scored
    /// against its keys ([`Sender::charged`]), whoever holds its slot now
    /// (a message is judged after it was queued; its sender may have left
    /// and another node taken the slot). When that bans a key, every live
    /// connection it covers is closed (a line, once per ban).
    pub fn offence(&self, from: &Sender, offence: Offence) {
        bump(&self.totals.peer_offences);
        let member = from.member || self.members.contains(&from.node_id);
        let now = Instant::now();
        let ban = {
            let mut m = self.misbehaviour.lock().expect("misbehaviour lock");
            from.charged(member)
                .into_iter()
                .filter_map(|key| m.offence(key, offence, member, now))
                .max_by_key(|b| b.until)
        };
        let Some(ban) = ban else { return };
        bump(&self.totals.peers_banned);
        let closed = self.close_refused();
        warn!(
            peer = %from.peer,
            node_id = %from.node_id,
            remote = %from.remote,
            member,
            offence = offence.name(),
            secs = ban.lasts.as_secs(),
            strikes = ban.strikes,
            closed,
            "peer banned for misbehaviour: disconnected, its connections refused until the ban ends (logged once per ban)"
        );
    }

    /// Closes every live connection refused now ([`Shared::refuses`]):
    /// the banned node's, and every guest's from a banned address. How
    /// many.
    fn close_refused(&self) -> usize {
        let mut closed = 0;
        for slot in &self.slots {
            let Some((link, id)) = slot
                .live
                .lock()
                .expect("slot lock")
                .as_ref()
                .map(|l| (l.link.clone(), l.id))
            else {
                continue;
            };
            let member = link.genesis || link.member || self.members.contains(&link.node_id);
            if !self.refuses(&link.node_id, link.remote, member) {
                continue;
            }
            // Dropping the live connection closes it (if still that one).
            let gone = {
                let mut live = slot.live.lock().expect("slot lock");
                match live.as_ref() {
                    Some(l) if l.id == id => live.take(),
                    _ => None,
                }
            };
            closed += gone.is_some() as usize;
        }
        closed
    }

    fn guests(&self) -> MutexGuard<'_, Guests> {
        self.guests.lock().expect("guest table lock")
    }

    /// Addresses to tell `peer` about: where our other connected peers
    /// accept connections (at most [`MAX_ADDRS`], a random sample).
    pub fn addrs_for(&self, peer: PeerId) -> Addrs {
        let addrs = self
            .slots
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != peer.0 as usize)
            .filter_map(|(i, s)| {
                let live = s.live.lock().expect("slot lock");
                let l = live.as_ref()?;
                match self.peers.get(i) {
                    Some(p) => Some(p.address),
                    None if l.link.outbound => Some(l.link.remote),
                    None => l.listen,
                }
            })
            .filter(super::discovery::usable)
            .choose_multiple(&mut rand::rng(), MAX_ADDRS);
        Addrs {
            listen_port: self.listen.port(),
            addrs,
        }
    }

    /// `peer` (connection `conn`) says it accepts connections at `listen`.
    pub fn set_listen(&self, peer: PeerId, conn: u64, listen: SocketAddr) {
        if let Some(l) = self.slot(peer).live.lock().expect("slot lock").as_mut() {
            if l.id == conn {
                l.listen = Some(listen);
            }
        }
    }

    pub fn handshake_context(&self) -> handshake::Context<'_> {
        handshake::Context {
            params: &self.params,
            network_id: &self.network_id,
            me: self.me,
            keys: &self.keys,
            peers: &self.peers,
        }
    }

    /// Spawns a task that [`Network::shutdown`] will join.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().expect("task set lock");
        while tasks.try_join_next().is_some() {} // reap finished ones
        tasks.spawn(task);
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Makes a new connection to `link.peer` the live one, closing any
    /// older one (the peer restarted, or the old connection is dead and not
    /// yet noticed); `None` if the older one is kept (see the module docs).
    pub fn register(&self, link: &PeerLink) -> Option<Registration> {
        let peer = link.peer;
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, queue) = mpsc::channel(self.limits.queue_len.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        let (close, closed) = oneshot::channel();
        let mut live = self.slot(peer).live.lock().expect("slot lock");
        if let Some(old) = live.as_ref() {
            let dialer = |l: &PeerLink| if l.outbound { self.my_id } else { l.node_id };
            let (old_dialer, new_dialer) = (dialer(&old.link), dialer(link));
            if !link.genesis && old_dialer != new_dialer && old_dialer < new_dialer {
                debug!(%peer, "a connection dialed by the lower node id exists; the new one is dropped");
                return None;
            }
            if link.genesis {
                info!(%peer, "new connection replaces the previous one");
            } else {
                debug!(%peer, "new connection replaces the previous one");
            }
        }
        *live = Some(Live {
            id,
            link: link.clone(),
            listen: None,
            queue: tx,
            queued: queued.clone(),
            _close: close,
        });
        drop(live);
        let _ = self.links.send(LinkEvent::Up(link.clone()));
        Some(Registration {
            id,
            queue,
            queued,
            closed,
        })
    }

    /// Forgets connection `id` (if still the live one) and counts its close.
    pub fn unregister(&self, link: &PeerLink, id: u64) {
        let slot = self.slot(link.peer);
        let gone = {
            let mut live = slot.live.lock().expect("slot lock");
            let mine = live.as_ref().is_some_and(|l| l.id == id);
            if mine {
                *live = None;
            }
            mine
        };
        if gone {
            let _ = self.links.send(LinkEvent::Down(link.clone()));
        }
        self.record(link.peer, Event::Closed);
    }

    /// The live connection of `peer`, if any.
    pub fn link(&self, peer: PeerId) -> Option<PeerLink> {
        let slot = self.slots.get(peer.0 as usize)?;
        let live = slot.live.lock().expect("slot lock");
        live.as_ref().map(|l| l.link.clone())
    }

    pub fn record(&self, peer: PeerId, event: Event) {
        self.slot(peer)
            .counters
            .lock()
            .expect("counters lock")
            .record(event);
    }

    pub fn gate(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().expect("gate lock")
    }

    /// Counts a failed handshake; logs it at most once a minute per IP.
    pub fn handshake_failed(&self, remote: SocketAddr, e: &HandshakeError) {
        bump(&self.totals.handshake_failures);
        if matches!(e, HandshakeError::UnknownPeer(_)) {
            bump(&self.totals.unknown_peers);
        }
        if e.is_bad_signature() {
            bump(&self.totals.bad_signatures);
        }
        if self.gate().should_log(remote.ip(), Instant::now()) {
            warn!(%remote, error = %e, "handshake failed; connection dropped (logged once a minute per address)");
        }
    }

    /// Whether a connection line of kind `what` about `ip` is written now
    /// (`Some(left_out)`: lines of that kind left out since the last) or
    /// only counted (`None`); per source address ([`super::gate::source`]).
    pub fn conn_line(&self, ip: IpAddr, what: &'static str) -> Option<u64> {
        self.conn_log
            .lock()
            .expect("log lock")
            .allow((super::gate::source(ip), what), Instant::now())
    }

    /// Counts a refused socket or connection by reason; logs it at most once
    /// a minute per IP.
    pub fn refused(&self, remote: SocketAddr, why: Refusal) {
        bump(&self.totals.inbound_refused);
        bump(match why {
            Refusal::PoolFull => &self.totals.refused_pool_full,
            Refusal::PerIp => &self.totals.refused_per_ip,
            Refusal::MembersFull => &self.totals.refused_members_full,
            Refusal::GuestsFull => &self.totals.refused_guests_full,
            Refusal::Rate => &self.totals.refused_rate,
            Refusal::Banned => &self.totals.refused_banned,
        });
        if self.gate().should_log(remote.ip(), Instant::now()) {
            warn!(%remote, reason = why.name(), "connection refused (logged once a minute per address)");
        }
    }

    pub(super) fn slot(&self, peer: PeerId) -> &Slot {
        &self.slots[peer.0 as usize]
    }

    pub(super) fn close_all(&self) {
        for s in &self.slots {
            s.live.lock().expect("slot lock").take();
        }
    }
}

/// Ids for connections of nodes outside the genesis: one per node id while
/// any connection or admission of it lasts, reused afterwards.
pub(crate) struct Guests {
    by_node: HashMap<NodeId, (PeerId, usize)>,
    /// Free ids, the longest free first: an id given back is handed out
    /// again last, so what its previous holder still had queued on the
    /// way to the node (answers, requests) has drained before another
    /// node could be taken for its sender.
    free: VecDeque<PeerId>,
}

impl Guests {
    /// Ids `first..first + n`.
    pub fn new(first: usize, n: usize) -> Self {
        Guests {
            by_node: HashMap::new(),
            free: (first..first + n).map(|i| PeerId(i as u16)).collect(),
        }
    }

    /// The id of `node` (its current one, or a free one), held until
    /// [`Guests::release`]. With every id held the connection is refused
    /// as [`Refusal::GuestsFull`]: a connection of a node outside the
    /// genesis, which no handshake slot would have admitted either.
    pub fn assign(&mut self, node: NodeId) -> Result<PeerId, Refusal> {
        if let Some((id, refs)) = self.by_node.get_mut(&node) {
            *refs += 1;
            return Ok(*id);
        }
        let id = self.free.pop_front().ok_or(Refusal::GuestsFull)?;
        self.by_node.insert(node, (id, 1));
        Ok(id)
    }

    /// Whether `node` holds `id` now.
    pub fn holds(&self, id: PeerId, node: NodeId) -> bool {
        self.by_node.get(&node).is_some_and(|(i, _)| *i == id)
    }

    pub fn release(&mut self, id: PeerId) {
        let node = self
            .by_node
            .iter()
            .find(|(_, (i, _))| *i == id)
            .map(|(n, _)| *n);
        if let Some(node) = node {
            let e = self.by_node.get_mut(&node).expect("found above");
            e.1 -= 1;
            if e.1 == 0 {
                self.by_node.remove(&node);
                self.free.push_back(id);
            }
        }
    }
}

/// An admitted connection: its id, its seat and, for a node outside the
/// genesis, its hold on that id; all given back when dropped.
pub(crate) struct Admission {
    shared: Arc<Shared>,
    pub link: PeerLink,
    seat: Seat,
    guest: bool,
    /// A guest's: resolves when the gate evicted it.
    kicked: Option<oneshot::Receiver<()>>,
}

impl Admission {
    /// Resolves when this connection's guest seat is given to another
    /// guest (never for a member).
    pub(crate) fn evicted(&mut self) -> impl Future<Output = ()> + use<> {
        let kicked = self.kicked.take();
        async move {
            // (A sender dropped unsent: the connection ended otherwise.)
            let sent = match kicked {
                Some(rx) => rx.await.is_ok(),
                None => false,
            };
            if !sent {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        {
            let mut gate = self.shared.gate();
            gate.unseat(self.seat);
            if let Seat::Guest { id, .. } = self.seat {
                self.shared.kicks.lock().expect("kick lock").remove(&id);
            }
        }
        if self.guest {
            self.shared.guests().release(self.link.peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u8) -> NodeId {
        NodeId([i; 32])
    }

    /// An id given back goes to the end of the line: the next node gets
    /// another one, so nothing still queued under the old holder's id is
    /// taken for the new node's.
    #[test]
    fn a_released_guest_id_is_handed_out_again_last() {
        let mut g = Guests::new(4, 3);
        let a = g.assign(node(1)).unwrap();
        assert_eq!(a, PeerId(4));
        assert_eq!(g.assign(node(1)), Ok(a), "the same node, the same id");
        g.release(a);
        g.release(a);
        let b = g.assign(node(2)).unwrap();
        assert_ne!(b, a, "not the id just given back");
        let c = g.assign(node(3)).unwrap();
        assert_ne!(c, a);
        assert_eq!(g.assign(node(4)), Ok(a), "only once the others are taken");
        assert!(g.assign(node(5)).is_err(), "all taken");
    }

    /// Running out of guest ids is a full house of guests, not a full
    /// handshake pool: counted and logged as `guests_full`.
    #[test]
    fn out_of_guest_ids_is_refused_as_guests_full() {
        let mut g = Guests::new(4, 2);
        g.assign(node(1)).unwrap();
        g.assign(node(2)).unwrap();
        assert_eq!(g.assign(node(3)), Err(Refusal::GuestsFull));
        assert_eq!(g.assign(node(1)), Ok(PeerId(4)), "a holder keeps its id");
    }

    /// A network of no genesis peer, with no task running, whose slots
    /// the tests fill by hand.
    fn bare() -> Shared {
        let cfg = super::super::NetConfig {
            network_id: [7; 32],
            me: None,
            listen: "127.0.0.1:0".parse().unwrap(),
            keys: Arc::new(NodeKeys::generate().unwrap()),
            peers: Vec::new(),
            bootstrap: Vec::new(),
            members: Some(MemberSet::new([])),
            limits: Limits::default(),
            transport: handshake::DEFAULT_TRANSPORT.into(),
        };
        let params = handshake::parse_suite(&cfg.transport).unwrap();
        let listen = cfg.listen;
        Shared::build(cfg, params, listen).0
    }

    /// `node`'s connection from `remote` in slot `peer`, live.
    fn connect(s: &Shared, peer: u16, node: u8, remote: &str, member: bool) -> Sender {
        let link = PeerLink {
            peer: PeerId(peer),
            node_id: NodeId([node; 32]),
            genesis: false,
            member,
            outbound: false,
            remote: remote.parse().unwrap(),
        };
        let reg = s.register(&link).unwrap();
        Sender::of(&link, reg.id)
    }

    fn occupant(s: &Shared, peer: u16) -> Option<NodeId> {
        s.link(PeerId(peer)).map(|l| l.node_id)
    }

    /// A message is judged after it was queued: its sender may have left
    /// and another node taken its slot by then. The offence is charged to
    /// the sender (its node id and, a guest, its address), never to the
    /// slot's new occupant, which stays connected (found by review; fails
    /// before, with the offence charged to whoever held the slot: the
    /// newcomer was banned and disconnected).
    #[test]
    fn an_offence_is_charged_to_its_sender_not_to_the_slots_new_occupant() {
        let s = bare();
        let a = connect(&s, 3, 1, "192.0.2.1:5000", false);
        s.unregister(&s.link(PeerId(3)).unwrap(), a.conn);
        let b = connect(&s, 3, 2, "198.51.100.2:5000", false);
        for _ in 0..4 {
            s.offence(&a, Offence::BadSignature);
        }
        assert!(s.banned(&a.node_id));
        assert!(s.refuses_sender(&a));
        assert!(!s.banned(&b.node_id) && !s.refuses_sender(&b));
        assert_eq!(occupant(&s, 3), Some(b.node_id), "the newcomer stays");
        assert_eq!(s.totals.snapshot().peers_banned, 1);
        // Nobody in the slot: the sender is charged all the same.
        let c = connect(&s, 4, 3, "203.0.113.3:5000", false);
        s.unregister(&s.link(PeerId(4)).unwrap(), c.conn);
        for _ in 0..4 {
            s.offence(&c, Offence::BadSignature);
        }
        assert!(s.banned(&c.node_id));
    }

    /// A guest mints node ids for free: its offences are scored against
    /// its source address too, so one that reconnects under a new id is
    /// still refused, and the other guests of that address are closed;
    /// a genesis peer or member behind the address is judged by its own
    /// id (found by review; fails before: only the node id was banned).
    #[test]
    fn a_guest_that_rekeys_stays_banned_by_its_address_and_members_there_do_not() {
        let s = bare();
        let bad = connect(&s, 0, 1, "[2001:db8:1:2::5]:5000", false);
        let other_guest = connect(&s, 1, 2, "[2001:db8:1:2::6]:5000", false);
        let member = connect(&s, 2, 3, "[2001:db8:1:2::7]:5000", true);
        for _ in 0..4 {
            s.offence(&bad, Offence::BadSignature);
        }
        let rekeyed = NodeId([9; 32]);
        let again: SocketAddr = "[2001:db8:1:2::ff]:6000".parse().unwrap();
        assert!(s.refuses(&rekeyed, again, false), "a new id, same /64");
        assert!(
            !s.refuses(&rekeyed, again, true),
            "a member is judged by id"
        );
        assert!(!s.refuses(&rekeyed, "[2001:db8:1:3::1]:1".parse().unwrap(), false));
        assert_eq!(occupant(&s, 0), None, "the offender closed");
        assert_eq!(
            occupant(&s, 1),
            None,
            "a guest of the banned address closed"
        );
        assert_eq!(occupant(&s, 2), Some(member.node_id), "the member stays");
        let _ = other_guest;
        // A member's offences are scored against its id alone: the guests
        // of its address are not refused for them.
        let member = connect(&s, 3, 4, "192.0.2.50:5000", true);
        for _ in 0..4 {
            s.offence(&member, Offence::BadSignature);
        }
        assert!(s.banned(&member.node_id));
        assert_eq!(occupant(&s, 3), None, "the member closed");
        assert!(!s.refuses(&rekeyed, member.remote, false));
    }
}
