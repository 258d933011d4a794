//! State shared by the [`super::Network`] handle and every transport task:
//! one slot per genesis peer (its live connection, if any, as the sending
//! end of its bounded queue and the bytes queued there, its bounded inbound
//! queue towards the node, and its counters), node-wide totals, the
//! handshake gate, the connection-count semaphores, the shutdown signal and
//! the task set.
//!
//! A slot holds at most one connection: registering a new one drops the old
//! one, which ends it (the peer restarted, or the old connection is dead and
//! not yet noticed).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use snow::params::NoiseParams;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::envelope::Envelope;
use super::gate::{Gate, Refusal};
use super::handshake::{self, HandshakeError};
use super::stats::{Counters, Event};
use super::{Inbound, Limits, PeerId, PeerInfo};
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
    /// Inbound sockets refused, all reasons (the three below).
    pub inbound_refused: u64,
    /// ... because the unauthenticated pool was full.
    pub refused_pool_full: u64,
    /// ... because their source IP had two handshakes running.
    pub refused_per_ip: u64,
    /// ... because every authenticated inbound slot was taken.
    pub refused_inbound_full: u64,
    /// Envelopes dropped because a peer's queue was full.
    pub queue_full: u64,
    /// Established connections closed for a protocol error.
    pub protocol_errors: u64,
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
    pub refused_inbound_full: AtomicU64,
    pub queue_full: AtomicU64,
    pub protocol_errors: AtomicU64,
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
            refused_inbound_full: g(&self.refused_inbound_full),
            queue_full: g(&self.queue_full),
            protocol_errors: g(&self.protocol_errors),
        }
    }
}

/// A live connection as its slot sees it. Dropping it ends the connection.
pub(super) struct Live {
    pub(super) id: u64,
    /// Shared envelopes: a broadcast queues one copy for every peer.
    pub(super) queue: mpsc::Sender<Arc<Envelope>>,
    /// Bytes (header and payload) waiting in `queue` or being written.
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) _close: oneshot::Sender<()>,
}

/// A received message on its way to the node, holding its share of the
/// peer's inbound byte budget until the node's channel takes it.
pub(super) type Delivery = (Inbound, OwnedSemaphorePermit);

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
    pub me: PeerId,
    pub keys: Arc<NodeKeys>,
    pub peers: Vec<PeerInfo>,
    pub limits: Limits,
    pub params: NoiseParams,
    pub totals: Totals,
    pub(super) gate: Mutex<Gate>,
    pub inbound_slots: Arc<Semaphore>,
    pub outbound_slots: Arc<Semaphore>,
    pub(super) slots: Vec<Slot>,
    pub(super) shutdown: watch::Sender<bool>,
    pub(super) next_conn: AtomicU64,
    pub(super) tasks: Mutex<JoinSet<()>>,
}

impl Shared {
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

    /// Makes a new connection to `peer` the live one, closing any older one
    /// (the peer restarted, or the old connection is dead and not yet noticed).
    pub fn register(&self, peer: PeerId) -> Registration {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, queue) = mpsc::channel(self.limits.queue_len.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        let (close, closed) = oneshot::channel();
        let old = self
            .slot(peer)
            .live
            .lock()
            .expect("slot lock")
            .replace(Live {
                id,
                queue: tx,
                queued: queued.clone(),
                _close: close,
            });
        if old.is_some() {
            info!(%peer, "new connection replaces the previous one");
        }
        Registration {
            id,
            queue,
            queued,
            closed,
        }
    }

    /// Forgets connection `id` (if still the live one) and counts its close.
    pub fn unregister(&self, peer: PeerId, id: u64) {
        let slot = self.slot(peer);
        {
            let mut live = slot.live.lock().expect("slot lock");
            if live.as_ref().is_some_and(|l| l.id == id) {
                *live = None;
            }
        }
        self.record(peer, Event::Closed);
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
        match e {
            HandshakeError::UnknownPeer(_) => bump(&self.totals.unknown_peers),
            HandshakeError::BadSignature(_) => bump(&self.totals.bad_signatures),
            _ => {}
        }
        if self.gate().should_log(remote.ip(), Instant::now()) {
            warn!(%remote, error = %e, "handshake failed; connection dropped (logged once a minute per address)");
        }
    }

    /// Counts a refused inbound socket by reason; logs it at most once a
    /// minute per IP.
    pub fn refused(&self, remote: SocketAddr, why: Refusal) {
        bump(&self.totals.inbound_refused);
        bump(match why {
            Refusal::PoolFull => &self.totals.refused_pool_full,
            Refusal::PerIp => &self.totals.refused_per_ip,
            Refusal::InboundFull => &self.totals.refused_inbound_full,
        });
        if self.gate().should_log(remote.ip(), Instant::now()) {
            warn!(%remote, reason = why.name(), "inbound connection refused (logged once a minute per address)");
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
