//! Accepting inbound connections.
//!
//! The budgets of [`super::gate`]: a socket still in its handshake holds a
//! slot of the handshake pool (a small pool, at most two per source
//! address, an allowance for the genesis peers' own addresses, a 5 s
//! deadline), if its source is within its rate of handshake starts; once
//! authenticated, it gives that slot back, and a member of the active set
//! takes one of `max_peers` member slots, anyone else a guest seat (perhaps
//! evicting a guest of the address holding most), until it closes. A
//! socket refused by any is closed at once, before any cryptography for a
//! refusal at accept, and counted by reason; refusals and failed handshakes
//! are logged at most once a minute per source address.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{sleep, timeout, Duration};
use tracing::{debug, warn};

use super::gate::{Ticket, HANDSHAKE_DEADLINE};
use super::handshake::{self, HandshakeError};
use super::peer;
use super::shared::{bump, Shared};

/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown_signal();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            a = listener.accept() => a,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "accept failed");
                sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let mut gate = shared.gate();
        let admitted = gate.admit(remote.ip(), std::time::Instant::now());
        match admitted {
            Ok(ticket) => {
                // Under the gate's lock, so that an eviction never misses
                // a handshake whose signal is not registered yet.
                let mut kicks = shared.handshake_kicks.lock().expect("kick lock");
                let (tx, evicted) = oneshot::channel();
                if let Ticket::General(_, id) = ticket {
                    kicks.insert(id, tx);
                }
                if let Some(victim) = gate.take_evicted() {
                    bump(&shared.totals.handshakes_evicted);
                    if let Some(kick) = kicks.remove(&victim) {
                        let _ = kick.send(());
                    }
                }
                drop(kicks);
                drop(gate);
                let held = Held {
                    shared: shared.clone(),
                    ticket: Some(ticket),
                };
                shared.spawn(serve_inbound(shared.clone(), stream, remote, held, evicted));
            }
            Err(why) => {
                drop(gate);
                shared.refused(remote, why)
            }
        }
    }
}

/// An unauthenticated slot, given back when dropped.
struct Held {
    shared: Arc<Shared>,
    ticket: Option<Ticket>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            let mut gate = self.shared.gate();
            gate.release(t);
            if let Ticket::General(_, id) = t {
                self.shared
                    .handshake_kicks
                    .lock()
                    .expect("kick lock")
                    .remove(&id);
            }
        }
    }
}

async fn serve_inbound(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    remote: SocketAddr,
    mut held: Held,
    evicted: oneshot::Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    let mut shutdown = shared.shutdown_signal();
    let ctx = shared.handshake_context();
    let deadline = shared.limits.handshake_timeout.min(HANDSHAKE_DEADLINE);
    // (A sender dropped unsent: a reserved ticket, never evicted.)
    let evicted = async {
        if evicted.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => return,
        _ = evicted => {
            debug!(%remote, "handshake pool full: the oldest handshake of the address holding most evicted");
            return;
        }
        r = timeout(deadline, handshake::respond(&mut stream, &ctx)) => r,
    };
    let session = match result {
        Ok(Ok(session)) => session,
        Ok(Err(e)) => return shared.handshake_failed(remote, &e),
        Err(_) => return shared.handshake_failed(remote, &HandshakeError::Timeout),
    };
    // The handshake's ticket becomes the connection's seat (or is given
    // back with the refusal).
    let admission = match shared.admit(&session.remote, remote, false, held.ticket.take()) {
        Ok(a) => a,
        Err(why) => return shared.refused(remote, why),
    };
    bump(&shared.totals.handshakes_ok);
    if session.remote.genesis.is_none() {
        bump(&shared.totals.joiner_handshakes);
    }
    debug!(%remote, peer = %admission.link.peer, node_id = %session.remote.node_id, "inbound handshake complete");
    let (r, w) = stream.into_split();
    peer::run(shared.clone(), session, admission, r, w).await;
}
