//! Dialing peers, and redialing them whenever the connection ends.
//!
//! - Genesis peers: a genesis node has one dial loop per genesis peer with a
//!   higher id than its own (so each pair has one connection); a node outside
//!   the genesis started without `--bootstrap` has one per genesis peer. The
//!   loops start in random order, each after a random delay, and a loop for
//!   a member dials only while a member slot is free, so with fewer slots
//!   than peers the members are dialled in random order, not by lowest id.
//! - A node outside the genesis also dials from its [`AddressBook`]
//!   (bootstrap and learned addresses, identity unknown until the
//!   handshake): one new dial per [`BOOK_DIAL_EVERY`] at most, while its
//!   connections and dials in progress are fewer than `max_peers`.
//!
//! Failed attempts back off exponentially from [`BACKOFF_MIN`] to
//! [`BACKOFF_MAX`], each wait drawn uniformly from its upper half (jitter,
//! so restarted nodes do not redial in lockstep); a connection that lasts
//! [`SETTLED`] resets it (one closed at once, e.g. by a peer with no slot
//! for us, does not). At most `max_outbound` dials are in progress at once.
//!
//! [`AddressBook`]: super::discovery::AddressBook

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};
use tracing::debug;

use super::connection::Session;
use super::handshake::{self, Expect, HandshakeError, IdentityError};
use super::shared::{bump, Shared};
use super::{peer, NodeId, PeerId};

pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A node outside the genesis starts at most one dial from its address
/// book per this period.
pub const BOOK_DIAL_EVERY: Duration = Duration::from_millis(200);
/// A connection that ends sooner than this (e.g. the other side had no
/// slot for us and closed it) counts as a failed attempt: the backoff keeps
/// growing instead of redialing at once.
pub const SETTLED: Duration = Duration::from_secs(1);

/// The wait before the next attempt: uniform in `[backoff/2, backoff]`.
pub fn jittered(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

enum Attempt {
    Connected(TcpStream, Session),
    Unreachable(std::io::Error),
    Handshake(HandshakeError),
}

/// One dial: TCP connect and handshake within the handshake timeout, while
/// holding a dial slot.
async fn attempt(shared: &Shared, address: SocketAddr, expect: Expect) -> Attempt {
    let Ok(_permit) = shared.dial_slots.clone().acquire_owned().await else {
        return Attempt::Handshake(HandshakeError::Timeout); // closed: never happens
    };
    let dial = async {
        let mut stream = match TcpStream::connect(address).await {
            Ok(s) => s,
            Err(e) => return Attempt::Unreachable(e),
        };
        let _ = stream.set_nodelay(true);
        match handshake::initiate(&mut stream, &shared.handshake_context(), expect).await {
            Ok(session) => Attempt::Connected(stream, session),
            Err(e) => Attempt::Handshake(e),
        }
    };
    timeout(shared.limits.handshake_timeout, dial)
        .await
        .unwrap_or(Attempt::Handshake(HandshakeError::Timeout))
}

/// Runs a connection we dialed: admits it (a member slot or a guest seat),
/// then serves it until it ends. Returns whether it was admitted and lasted
/// at least [`SETTLED`].
async fn run_dialed(
    shared: &Arc<Shared>,
    address: SocketAddr,
    stream: TcpStream,
    session: Session,
    on_admitted: impl FnOnce(PeerId),
) -> bool {
    let admission = match shared.admit(&session.remote, address, true, None) {
        Ok(a) => a,
        Err(why) => {
            shared.refused(address, why);
            return false;
        }
    };
    bump(&shared.totals.handshakes_ok);
    on_admitted(admission.link.peer);
    let started = Instant::now();
    let (r, w) = stream.into_split();
    peer::run(shared.clone(), session, admission, r, w).await;
    started.elapsed() >= SETTLED
}

/// Whether a slot for `node` is free now (a member slot for a member).
fn room_for(shared: &Shared, node: &NodeId) -> bool {
    !shared.members.contains(node) || shared.gate().member_room()
}

pub(crate) async fn dial_loop(shared: Arc<Shared>, peer: PeerId) {
    let mut shutdown = shared.shutdown_signal();
    let info = &shared.peers[peer.0 as usize];
    let address = info.address;
    let node = NodeId::of(&info.signing_public);
    // A random start, so that the loops do not dial in id order.
    let mut wait = jittered(BACKOFF_MIN);
    let mut backoff = BACKOFF_MIN;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = sleep(wait) => {}
        }
        if shared.link(peer).is_some() || !room_for(&shared, &node) || shared.banned(&node) {
            // Connected by another way, every slot taken, or banned for
            // misbehaviour: look again soon.
            wait = jittered(BACKOFF_MIN * 2);
            continue;
        }
        let attempt = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            a = attempt(&shared, address, Expect::Genesis(peer)) => a,
        };
        match attempt {
            Attempt::Connected(stream, session) => {
                if run_dialed(&shared, address, stream, session, |_| {}).await {
                    backoff = BACKOFF_MIN;
                }
            }
            Attempt::Unreachable(e) => {
                bump(&shared.totals.dial_failures);
                debug!(%peer, %address, error = %e, "dial failed");
            }
            Attempt::Handshake(e) => shared.handshake_failed(address, &e),
        }
        wait = jittered(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A node outside the genesis: dials addresses from its book at a bounded
/// rate while it has fewer than `max_peers` connections and dials.
pub(crate) async fn book_loop(shared: Arc<Shared>) {
    let Some(book) = shared.book.as_ref() else {
        return;
    };
    let mut shutdown = shared.shutdown_signal();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = sleep(BOOK_DIAL_EVERY) => {}
        }
        let held = {
            let g = shared.gate();
            g.members() + g.guests()
        };
        let next = {
            let mut b = book.lock().expect("book lock");
            if held + b.dialing() >= shared.limits.max_peers
                || shared.dial_slots.available_permits() == 0
            {
                continue;
            }
            b.next_dial(Instant::now().into_std())
        };
        if let Some(address) = next {
            shared.spawn(dial_from_book(shared.clone(), address));
        }
    }
}

async fn dial_from_book(shared: Arc<Shared>, address: SocketAddr) {
    let book = shared.book.as_ref().expect("book_loop checked");
    let mut shutdown = shared.shutdown_signal();
    let attempt = tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => return,
        a = attempt(&shared, address, Expect::Any) => a,
    };
    let now = || Instant::now().into_std();
    match attempt {
        Attempt::Connected(stream, session) => {
            let settled = run_dialed(&shared, address, stream, session, |peer| {
                book.lock().expect("book lock").connected(address, peer);
            })
            .await;
            let mut b = book.lock().expect("book lock");
            if settled {
                b.disconnected(address, now());
            } else {
                b.failed(address, now());
            }
        }
        Attempt::Unreachable(e) => {
            bump(&shared.totals.dial_failures);
            debug!(%address, error = %e, "dial failed");
            book.lock().expect("book lock").failed(address, now());
        }
        Attempt::Handshake(HandshakeError::Identity(IdentityError::Myself)) => {
            debug!(%address, "that address is this node; forgotten");
            book.lock().expect("book lock").is_myself(address);
        }
        Attempt::Handshake(e) => {
            shared.handshake_failed(address, &e);
            book.lock().expect("book lock").failed(address, now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_the_upper_half() {
        for ms in [100u64, 1000, 10_000] {
            let b = Duration::from_millis(ms);
            for _ in 0..200 {
                let j = jittered(b);
                assert!(j >= b / 2 && j <= b, "{j:?} for {b:?}");
            }
        }
    }
}
