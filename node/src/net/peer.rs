//! One connection's life, from registration to close.
//!
//! Two loops run side by side until either ends:
//! - reading: decrypts envelopes; answers Ping with Pong (through a small
//!   control queue, so heartbeats never wait behind bulk data), matches Pongs,
//!   delivers application types into this peer's bounded inbound queue
//!   (waiting, and so not reading, while it is full: only this peer is
//!   slowed); nothing received for `idle_timeout` (heartbeats included)
//!   closes the connection.
//! - writing: sends control messages first, then a Ping every
//!   `heartbeat_every`, then the peer's bounded queue; a write stalled for
//!   `idle_timeout` (a peer that stopped reading) closes the connection.
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
use super::envelope::{Envelope, HEADER_LEN};
use super::shared::{bump, Shared};
use super::stats::Event;
use super::{Inbound, PeerId, MSG_PING, MSG_PONG, RESERVED_TYPES};

/// Version of the Ping/Pong layout (empty payload, id in the request id).
const HEARTBEAT_VERSION: u8 = 1;
/// Pongs waiting to be written; more are dropped (the peer will count it).
const CONTROL_QUEUE: usize = 8;

/// Why a connection ended.
enum Ended {
    PeerClosed,
    Idle,
    WriteStalled,
    Replaced,
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
            Ended::Shutdown => f.write_str("shutdown"),
            Ended::NodeGone => f.write_str("the node stopped receiving"),
            Ended::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// Runs an authenticated connection until it ends, then unregisters it.
pub(crate) async fn run<R, W>(shared: Arc<Shared>, session: Session, r: R, w: W)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let peer = session.peer;
    let (mut reader, mut writer) = session.into_halves(r, w);
    let reg = shared.register(peer);
    let mut shutdown = shared.shutdown_signal();
    let pending_ping = AtomicU64::new(0);
    let (control_tx, mut control_rx) = mpsc::channel(CONTROL_QUEUE);
    info!(%peer, label = %shared.peers[peer.0 as usize].label, "connected");

    let ended = tokio::select! {
        e = read_loop(&shared, peer, &mut reader, &control_tx, &pending_ping) => e,
        e = write_loop(&shared, peer, &mut writer, &mut control_rx, reg.queue, &reg.queued, &pending_ping) => e,
        _ = reg.closed => Ended::Replaced,
        _ = shutdown.wait_for(|stop| *stop) => Ended::Shutdown,
    };
    if shared.is_shutting_down() {
        // The slot was emptied by shutdown, which looks like a replacement.
        debug!(%peer, "connection closed for shutdown");
    } else if let Some(e) = ended.link_error().filter(|e| e.is_protocol_violation()) {
        bump(&shared.totals.protocol_errors);
        warn!(%peer, error = %e, "connection failed");
    } else {
        info!(%peer, reason = %ended, "disconnected");
    }
    shared.unregister(peer, reg.id);
}

async fn read_loop<R: AsyncRead + Unpin>(
    shared: &Shared,
    peer: PeerId,
    reader: &mut EnvelopeReader<R>,
    control: &mpsc::Sender<Envelope>,
    pending_ping: &AtomicU64,
) -> Ended {
    loop {
        let env = match timeout(shared.limits.idle_timeout, reader.next()).await {
            Err(_) => return Ended::Idle,
            Ok(Err(e)) => return Ended::Failed(e),
            Ok(Ok(None)) => return Ended::PeerClosed,
            Ok(Ok(Some(env))) => env,
        };
        match env.msg_type {
            MSG_PING => {
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
            t if t < RESERVED_TYPES => debug!(%peer, msg_type = t, "unknown transport message"),
            _ => {
                let slot = shared.slot(peer);
                let cost = (HEADER_LEN + env.payload.len()) as u32;
                let Ok(permit) = slot.inbound_budget.clone().acquire_many_owned(cost).await else {
                    return Ended::NodeGone;
                };
                let inbound = Inbound {
                    peer,
                    envelope: env,
                };
                if slot.inbound.send((inbound, permit)).await.is_err() {
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
    let mut next_ping: u64 = 1;
    loop {
        let env: Arc<Envelope> = tokio::select! {
            biased;
            Some(env) = control.recv() => Arc::new(env),
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
                    queued.fetch_sub(HEADER_LEN + env.payload.len(), Ordering::AcqRel);
                    match sent {
                        Err(_) => return Ended::WriteStalled,
                        Ok(Err(e)) => return Ended::Failed(e),
                        Ok(Ok(())) => continue,
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
