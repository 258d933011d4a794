//! Dialing a peer, and redialing it whenever the connection ends.
//!
//! Each peer with a higher id than ours gets one dial loop (so each pair has
//! one connection). Failed attempts back off exponentially from
//! [`BACKOFF_MIN`] to [`BACKOFF_MAX`], each wait drawn uniformly from its
//! upper half (jitter, so restarted nodes do not redial in lockstep); a
//! successful handshake resets it. At most `max_outbound` dials and dialed
//! connections exist at once.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};
use tracing::debug;

use super::handshake::{self, HandshakeError};
use super::network::{bump, Shared};
use super::{peer, PeerId};

pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The wait before the next attempt: uniform in `[backoff/2, backoff]`.
pub fn jittered(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

enum Attempt {
    Connected(TcpStream, super::connection::Session),
    Unreachable(std::io::Error),
    Handshake(HandshakeError),
}

pub(crate) async fn dial_loop(shared: Arc<Shared>, peer: PeerId) {
    let mut shutdown = shared.shutdown_signal();
    let address = shared.peers[peer.0 as usize].address;
    let mut backoff = BACKOFF_MIN;
    loop {
        let permit = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            p = shared.outbound_slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return, // semaphore closed: never happens, but stop cleanly
            },
        };
        let attempt = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            a = timeout(shared.limits.handshake_timeout, dial(&shared, peer)) => {
                a.unwrap_or(Attempt::Handshake(HandshakeError::Timeout))
            }
        };
        match attempt {
            Attempt::Connected(stream, session) => {
                bump(&shared.totals.handshakes_ok);
                backoff = BACKOFF_MIN;
                let (r, w) = stream.into_split();
                peer::run(shared.clone(), session, r, w).await;
            }
            Attempt::Unreachable(e) => {
                bump(&shared.totals.dial_failures);
                debug!(%peer, %address, error = %e, "dial failed");
            }
            Attempt::Handshake(e) => shared.handshake_failed(address, &e),
        }
        drop(permit);
        let wait = jittered(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = sleep(wait) => {}
        }
    }
}

async fn dial(shared: &Shared, peer: PeerId) -> Attempt {
    let address = shared.peers[peer.0 as usize].address;
    let mut stream = match TcpStream::connect(address).await {
        Ok(s) => s,
        Err(e) => return Attempt::Unreachable(e),
    };
    let _ = stream.set_nodelay(true);
    match handshake::initiate(&mut stream, &shared.handshake_context(), peer).await {
        Ok(session) => Attempt::Connected(stream, session),
        Err(e) => Attempt::Handshake(e),
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
