//! One connection's life, from registration to close.
//!
//! Two loops run side by side until either ends:
//! - reading: decrypts envelopes; answers Ping with Pong (through a small
//!   control queue, so heartbeats never wait behind bulk data), at most one
//!   Ping per [`pong_gap`] (a quarter of our heartbeat period; the others
//!   are dropped unanswered, so a Ping flood costs at most four Pongs a
//!   period, each sealed and flushed on its own), matches Pongs,
//!   delivers application types into this peer's bounded inbound queue
//!   (waiting, and so not reading, while it is full: only this peer is
//!   slowed); nothing received for `idle_timeout` (heartbeats included)
//!   closes the connection.
//! - writing: sends control messages first, then a Ping every
//!   `heartbeat_every`, then the peer's bounded queue; a write stalled for
//!   `idle_timeout` (a peer that stopped reading) closes the connection.
//!
//! Each side sends its address list ([`super::discovery`]) when the
//! connection opens and every [`ADDRS_EVERY`]; a peer's lists are read at
//! most once per [`ADDRS_MIN_GAP`] (the others, and malformed ones, are
//! ignored and counted).
//!
//! A Ping still unanswered when the next one is due counts as a heartbeat
//! error; a matching Pong as a heartbeat ok. The connection also ends when
//! its slot drops it (a newer connection replaced it) or on shutdown.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::{interval_at, timeout, Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::connection::{EnvelopeReader, EnvelopeWriter, LinkError, Session};
use super::discovery::{Addrs, Skip, Source, ADDRS_EVERY, ADDRS_MIN_GAP, ADDRS_VERSION, MSG_ADDRS};
use super::envelope::{Envelope, HEADER_LEN};
use super::shared::{bump, Admission, Delivery, Shared};
use super::stats::Event;
use super::{Inbound, PeerId, PeerLink, Sender, MSG_PING, MSG_PONG, RESERVED_TYPES};

/// Version of the Ping/Pong layout (empty payload, id in the request id).
const HEARTBEAT_VERSION: u8 = 1;
/// Pongs waiting to be written; more are dropped (the peer will count it).
const CONTROL_QUEUE: usize = 8;

/// The least time between two Pongs we send on one connection: a quarter
/// of our heartbeat period, so an honest peer's Pings (one per its own
/// period, with some jitter) are all answered.
pub fn pong_gap(heartbeat_every: std::time::Duration) -> std::time::Duration {
    heartbeat_every / 4
}

/// Why a connection ended.
enum Ended {
    PeerClosed,
    Idle,
    WriteStalled,
    Replaced,
    /// Its guest seat went to a guest from a less represented address.
    Evicted,
    Shutdown,
    NodeGone,
    Failed(LinkError),
}

impl Ended {
    fn link_error(&self) -> Option<&LinkError> {
        match self {
            Ended::Failed(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::PeerClosed => f.write_str("closed by peer"),
            Ended::Idle => f.write_str("idle timeout (nothing received)"),
            Ended::WriteStalled => f.write_str("write timeout (peer not reading)"),
            Ended::Replaced => f.write_str("replaced by a newer connection"),
            Ended::Evicted => {
                f.write_str("guest seat given to a guest from a less represented address")
            }
            Ended::Shutdown => f.write_str("shutdown"),
            Ended::NodeGone => f.write_str("the node stopped receiving"),
            Ended::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// The address list we send `peer`.
fn addrs_envelope(shared: &Shared, peer: PeerId) -> Option<Envelope> {
    let payload = shared.addrs_for(peer).encode().ok()?;
    Some(Envelope::new(MSG_ADDRS, ADDRS_VERSION, 0, payload))
}

/// Runs an authenticated connection until it ends, then unregisters it
/// (and gives its seat back when `admission` drops).
pub(crate) async fn run<R, W>(
    shared: Arc<Shared>,
    session: Session,
    admission: Admission,
    r: R,
    w: W,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mut admission = admission;
    let evicted = admission.evicted();
    let link = admission.link.clone();
    let peer = link.peer;
    let (mut reader, mut writer) = session.into_halves(r, w);
    let Some(reg) = shared.register(&link) else {
        return;
    };
    let mut shutdown = shared.shutdown_signal();
    let pending_ping = AtomicU64::new(0);
    let (control_tx, mut control_rx) = mpsc::channel(CONTROL_QUEUE);
    // Every connection line at most once a minute per address and kind
    // (anyone can connect as a node outside the genesis, and a peer can
    // reconnect in a loop); the rest at debug level.
    let ip = link.remote.ip();
    match (
        shared.peers.get(peer.0 as usize),
        shared.conn_line(ip, "connected"),
    ) {
        (Some(p), Some(left_out)) => {
            info!(%peer, label = %p.label, remote = %link.remote, left_out,
            "connected (logged once a minute per address)")
        }
        (None, Some(left_out)) => {
            info!(%peer, node_id = %link.node_id, remote = %link.remote, member = link.member, left_out,
                "connected (not a genesis peer; logged once a minute per address)")
        }
        (_, None) => {
            debug!(%peer, node_id = %link.node_id, remote = %link.remote, "connected")
        }
    }
    if let Some(env) = addrs_envelope(&shared, peer) {
        let _ = control_tx.try_send(env);
    }

    let ended = tokio::select! {
        e = read_loop(&shared, &link, reg.id, &mut reader, &control_tx, &pending_ping) => e,
        e = write_loop(&shared, peer, &mut writer, &mut control_rx, reg.queue, &reg.queued, &pending_ping) => e,
        _ = reg.closed => Ended::Replaced,
        _ = evicted => Ended::Evicted,
        _ = shutdown.wait_for(|stop| *stop) => Ended::Shutdown,
    };
    if shared.is_shutting_down() {
        // The slot was emptied by shutdown, which looks like a replacement.
        debug!(%peer, "connection closed for shutdown");
    } else if let Some(e) = ended.link_error().filter(|e| e.is_protocol_violation()) {
        bump(&shared.totals.protocol_errors);
        if let Some(o) = e.offence() {
            shared.offence(&Sender::of(&link, reg.id), o);
        }
        match shared.conn_line(ip, "failed") {
            Some(left_out) => warn!(%peer, remote = %link.remote, error = %e, left_out,
                "connection failed (logged once a minute per address)"),
            None => debug!(%peer, remote = %link.remote, error = %e, "connection failed"),
        }
    } else if link.genesis {
        match shared.conn_line(ip, "disconnected") {
            Some(left_out) => info!(%peer, remote = %link.remote, reason = %ended, left_out,
                "disconnected (logged once a minute per address)"),
            None => debug!(%peer, reason = %ended, "disconnected"),
        }
    } else {
        debug!(%peer, node_id = %link.node_id, reason = %ended, "disconnected");
    }
    shared.unregister(&link, reg.id);
    drop(admission);
}

/// An address list from `link`: at most one per [`ADDRS_MIN_GAP`].
fn on_addrs(
    shared: &Shared,
    link: &PeerLink,
    conn: u64,
    env: &Envelope,
    last: &mut Option<Instant>,
) {
    let peer = link.peer;
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < ADDRS_MIN_GAP) {
        bump(&shared.totals.addrs_ignored);
        debug!(%peer, "address list over the rate; ignored");
        return;
    }
    *last = Some(now);
    let list = match Addrs::decode(&env.payload) {
        Ok(l) => l,
        Err(e) => {
            bump(&shared.totals.addrs_ignored);
            debug!(%peer, error = %e, "bad address list; ignored");
            return;
        }
    };
    let mut learned = list.addrs;
    if list.listen_port != 0 && !link.genesis {
        let listen = std::net::SocketAddr::new(link.remote.ip(), list.listen_port);
        if !link.outbound {
            shared.set_listen(peer, conn, listen);
        }
        learned.push(listen);
    }
    if let Some(book) = shared.book.as_ref() {
        let mut b = book.lock().expect("book lock");
        let mut out_of_scope = 0;
        for a in learned {
            if b.add(a, Source::Learned, now.into_std()) == Err(Skip::OutOfScope) {
                out_of_scope += 1;
            }
        }
        if out_of_scope > 0 {
            shared
                .totals
                .addrs_out_of_scope
                .fetch_add(out_of_scope, Ordering::Relaxed);
            debug!(%peer, out_of_scope, "learned addresses outside our networks skipped");
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    shared: &Shared,
    link: &PeerLink,
    conn: u64,
    reader: &mut EnvelopeReader<R>,
    control: &mpsc::Sender<Envelope>,
    pending_ping: &AtomicU64,
) -> Ended {
    let peer = link.peer;
    let mut last_addrs = None;
    let mut last_pong: Option<Instant> = None;
    let gap = pong_gap(shared.limits.heartbeat_every);
    loop {
        let env = match timeout(shared.limits.idle_timeout, reader.next()).await {
            Err(_) => return Ended::Idle,
            Ok(Err(e)) => return Ended::Failed(e),
            Ok(Ok(None)) => return Ended::PeerClosed,
            Ok(Ok(Some(env))) => env,
        };
        match env.msg_type {
            MSG_PING => {
                let now = Instant::now();
                if last_pong.is_some_and(|t| now.duration_since(t) < gap) {
                    debug!(%peer, "ping within the pong gap; not answered");
                    continue;
                }
                last_pong = Some(now);
                let pong = Envelope::new(MSG_PONG, HEARTBEAT_VERSION, env.request_id, vec![]);
                if control.try_send(pong).is_err() {
                    debug!(%peer, "control queue full; pong dropped");
                }
            }
            MSG_PONG => {
                let answered = pending_ping
                    .compare_exchange(env.request_id, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if answered && env.request_id != 0 {
                    shared.record(peer, Event::HeartbeatOk);
                } else {
                    debug!(%peer, id = env.request_id, "late or unknown pong ignored");
                }
            }
            MSG_ADDRS => on_addrs(shared, link, conn, &env, &mut last_addrs),
            t if t < RESERVED_TYPES => debug!(%peer, msg_type = t, "unknown transport message"),
            _ => {
                let slot = shared.slot(peer);
                let cost = (HEADER_LEN + env.payload.len()) as u32;
                let Ok(permit) = slot.inbound_budget.clone().acquire_many_owned(cost).await else {
                    return Ended::NodeGone;
                };
                let inbound = Inbound {
                    peer,
                    from: Sender::of(link, conn),
                    envelope: env,
                };
                let d = Delivery { inbound, permit };
                if slot.inbound.send(d).await.is_err() {
                    return Ended::NodeGone;
                }
            }
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    shared: &Shared,
    peer: PeerId,
    writer: &mut EnvelopeWriter<W>,
    control: &mut mpsc::Receiver<Envelope>,
    mut queue: mpsc::Receiver<Arc<Envelope>>,
    queued: &AtomicUsize,
    pending_ping: &AtomicU64,
) -> Ended {
    let every = shared.limits.heartbeat_every;
    let mut tick = interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut addrs_tick = interval_at(Instant::now() + ADDRS_EVERY, ADDRS_EVERY);
    addrs_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next_ping: u64 = 1;
    loop {
        let env: Arc<Envelope> = tokio::select! {
            biased;
            Some(env) = control.recv() => Arc::new(env),
            _ = addrs_tick.tick() => match addrs_envelope(shared, peer) {
                Some(env) => Arc::new(env),
                None => continue,
            },
            _ = tick.tick() => {
                if pending_ping.swap(next_ping, Ordering::AcqRel) != 0 {
                    shared.record(peer, Event::HeartbeatError);
                    debug!(%peer, "heartbeat unanswered");
                }
                let ping = Envelope::new(MSG_PING, HEARTBEAT_VERSION, next_ping, vec![]);
                next_ping = next_ping.wrapping_add(1).max(1);
                Arc::new(ping)
            }
            env = queue.recv() => match env {
                Some(env) => {
                    let sent = timeout(shared.limits.idle_timeout, writer.send(&env)).await;
                    let bytes = HEADER_LEN + env.payload.len();
                    queued.fetch_sub(bytes, Ordering::AcqRel);
                    match sent {
                        Err(_) => return Ended::WriteStalled,
                        Ok(Err(e)) => return Ended::Failed(e),
                        Ok(Ok(())) => {
                            bump(&shared.totals.messages_sent);
                            shared
                                .totals
                                .bytes_sent
                                .fetch_add(bytes as u64, Ordering::Relaxed);
                            continue;
                        }
                    }
                }
                None => return Ended::Replaced,
            },
        };
        match timeout(shared.limits.idle_timeout, writer.send(&env)).await {
            Err(_) => return Ended::WriteStalled,
            Ok(Err(e)) => return Ended::Failed(e),
            Ok(Ok(())) => {}
        }
    }
}
