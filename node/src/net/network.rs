//! The [`Network`] handle and the state its tasks share.
//!
//! Tasks: one listener ([`super::server`]), one dialer per peer with a higher
//! id than ours ([`super::dialer`]), and one task per live connection
//! ([`super::peer`]). Each peer has a slot holding its live connection (if
//! any: the sending end of its bounded queue) and its counters. All tasks
//! watch one shutdown signal and are joined by [`Network::shutdown`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use snow::params::NoiseParams;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::envelope::Envelope;
use super::handshake::{self, HandshakeError};
use super::stats::{Counters, Event};
use super::{
    dialer, server, Inbound, Limits, NetConfig, NetError, PeerId, PeerInfo, PeerStats,
    RESERVED_TYPES,
};
use crate::keys::NodeKeys;

/// How long [`Network::shutdown`] waits for its tasks before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Node-wide transport counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Inbound connections refused at the `max_inbound` bound.
    pub inbound_refused: u64,
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
    pub queue_full: AtomicU64,
    pub protocol_errors: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Totals {
    fn snapshot(&self) -> NetTotals {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetTotals {
            handshakes_ok: g(&self.handshakes_ok),
            handshake_failures: g(&self.handshake_failures),
            unknown_peers: g(&self.unknown_peers),
            bad_signatures: g(&self.bad_signatures),
            dial_failures: g(&self.dial_failures),
            inbound_refused: g(&self.inbound_refused),
            queue_full: g(&self.queue_full),
            protocol_errors: g(&self.protocol_errors),
        }
    }
}

/// A live connection as its slot sees it. Dropping it ends the connection.
struct Live {
    id: u64,
    queue: mpsc::Sender<Envelope>,
    _close: oneshot::Sender<()>,
}

#[derive(Default)]
struct Slot {
    live: Mutex<Option<Live>>,
    counters: Mutex<Counters>,
}

/// What a connection task gets when it registers.
pub(crate) struct Registration {
    pub id: u64,
    pub queue: mpsc::Receiver<Envelope>,
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
    pub inbound: mpsc::Sender<Inbound>,
    pub totals: Totals,
    pub inbound_slots: Arc<Semaphore>,
    pub outbound_slots: Arc<Semaphore>,
    slots: Vec<Slot>,
    shutdown: watch::Sender<bool>,
    next_conn: AtomicU64,
    tasks: Mutex<JoinSet<()>>,
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
        let (close, closed) = oneshot::channel();
        let old = self
            .slot(peer)
            .live
            .lock()
            .expect("slot lock")
            .replace(Live {
                id,
                queue: tx,
                _close: close,
            });
        if old.is_some() {
            info!(%peer, "new connection replaces the previous one");
        }
        Registration { id, queue, closed }
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

    /// Counts and logs a failed handshake.
    pub fn handshake_failed(&self, remote: SocketAddr, e: &HandshakeError) {
        bump(&self.totals.handshake_failures);
        match e {
            HandshakeError::UnknownPeer(_) => bump(&self.totals.unknown_peers),
            HandshakeError::BadSignature(_) => bump(&self.totals.bad_signatures),
            _ => {}
        }
        warn!(%remote, error = %e, "handshake failed; connection dropped");
    }

    fn slot(&self, peer: PeerId) -> &Slot {
        &self.slots[peer.0 as usize]
    }

    fn close_all(&self) {
        for s in &self.slots {
            s.live.lock().expect("slot lock").take();
        }
    }
}

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
        let (tx, rx) = mpsc::channel(cfg.limits.queue_len.max(1));
        let shared = Arc::new(Shared {
            network_id: cfg.network_id,
            me: cfg.me,
            keys: cfg.keys,
            slots: cfg.peers.iter().map(|_| Slot::default()).collect(),
            peers: cfg.peers,
            inbound_slots: Arc::new(Semaphore::new(cfg.limits.max_inbound)),
            outbound_slots: Arc::new(Semaphore::new(cfg.limits.max_outbound)),
            limits: cfg.limits,
            params,
            inbound: tx,
            totals: Totals::default(),
            shutdown: watch::Sender::new(false),
            next_conn: AtomicU64::new(0),
            tasks: Mutex::new(JoinSet::new()),
        });
        shared.spawn(server::accept_loop(shared.clone(), listener));
        for p in shared.peers.iter().filter(|p| p.id > shared.me) {
            shared.spawn(dialer::dial_loop(shared.clone(), p.id));
        }
        info!(me = %shared.me, listen = %local_addr, peers = shared.peers.len(), "network started");
        Ok((
            Network {
                _guard: Arc::new(Guard(shared.clone())),
                shared,
                local_addr,
            },
            rx,
        ))
    }

    /// Queues `env` for `peer` without waiting. A full queue drops the
    /// message, counts it and says so.
    pub fn send(&self, peer: PeerId, env: Envelope) -> Result<(), NetError> {
        env.check()?;
        if env.msg_type < RESERVED_TYPES {
            return Err(NetError::ReservedType(env.msg_type));
        }
        if peer.0 as usize >= self.shared.peers.len() || peer == self.shared.me {
            return Err(NetError::UnknownPeer(peer));
        }
        if self.shared.is_shutting_down() {
            return Err(NetError::Shutdown);
        }
        let queue = match &*self.shared.slot(peer).live.lock().expect("slot lock") {
            Some(live) => live.queue.clone(),
            None => return Err(NetError::NotConnected(peer)),
        };
        queue.try_send(env).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                bump(&self.shared.totals.queue_full);
                warn!(%peer, "send queue full; message dropped");
                NetError::QueueFull(peer)
            }
            mpsc::error::TrySendError::Closed(_) => NetError::NotConnected(peer),
        })
    }

    /// Queues `env` for every connected peer (drops counted per peer).
    pub fn broadcast(&self, env: Envelope) {
        for peer in self.connected() {
            if let Err(e) = self.send(peer, env.clone()) {
                tracing::debug!(%peer, error = %e, "broadcast skipped a peer");
            }
        }
    }

    /// Peers with a live, authenticated connection.
    pub fn connected(&self) -> Vec<PeerId> {
        self.shared
            .peers
            .iter()
            .filter(|p| {
                self.shared
                    .slot(p.id)
                    .live
                    .lock()
                    .expect("slot lock")
                    .is_some()
            })
            .map(|p| p.id)
            .collect()
    }

    /// Connection state and heartbeat counters of every other peer.
    pub fn stats(&self) -> Vec<PeerStats> {
        self.shared
            .peers
            .iter()
            .filter(|p| p.id != self.shared.me)
            .map(|p| {
                let slot = self.shared.slot(p.id);
                let connected = slot.live.lock().expect("slot lock").is_some();
                let c = slot.counters.lock().expect("counters lock");
                let (m5, h1) = (c.window(5), c.window(60));
                PeerStats {
                    peer: p.id,
                    label: p.label.clone(),
                    connected,
                    heartbeats_ok_5m: m5.ok,
                    heartbeat_errors_5m: m5.errors,
                    closed_5m: m5.closed,
                    heartbeats_ok_1h: h1.ok,
                    heartbeat_errors_1h: h1.errors,
                    closed_1h: h1.closed,
                }
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
        info!(me = %self.shared.me, "network stopped");
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
    let Some(me) = cfg.peers.get(cfg.me.0 as usize) else {
        return bad(format!("me = {} is not in the peer list", cfg.me));
    };
    if me.noise_public != *cfg.keys.noise_public() {
        return bad(format!("our Noise key is not {}'s genesis key", cfg.me));
    }
    if me.signing_public != *cfg.keys.verifying_key() {
        return bad(format!("our signing key is not {}'s genesis key", cfg.me));
    }
    let l = &cfg.limits;
    if l.queue_len == 0 || l.max_inbound == 0 || l.max_outbound == 0 {
        return bad("queue_len, max_inbound and max_outbound must be at least 1".into());
    }
    if l.heartbeat_every.is_zero() || l.idle_timeout.is_zero() || l.handshake_timeout.is_zero() {
        return bad("timeouts and the heartbeat period must be positive".into());
    }
    if l.idle_timeout <= l.heartbeat_every {
        return bad("idle_timeout must exceed heartbeat_every".into());
    }
    Ok(())
}
