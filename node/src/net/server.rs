//! Accepting inbound connections, at most `max_inbound` at a time.
//!
//! A connection holds its inbound permit from accept (handshake included,
//! so a flood of half-open handshakes is bounded too) until it closes; one
//! arriving when none is free is closed at once and counted.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{sleep, timeout, Duration};
use tracing::{debug, warn};

use super::handshake::{self, HandshakeError};
use super::network::{bump, Shared};
use super::peer;

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
        match shared.inbound_slots.clone().try_acquire_owned() {
            Ok(permit) => shared.spawn(serve_inbound(shared.clone(), stream, remote, permit)),
            Err(_) => {
                bump(&shared.totals.inbound_refused);
                warn!(%remote, "inbound connection limit reached; refused");
            }
        }
    }
}

async fn serve_inbound(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    remote: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let mut shutdown = shared.shutdown_signal();
    let ctx = shared.handshake_context();
    let result = tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => return,
        r = timeout(shared.limits.handshake_timeout, handshake::respond(&mut stream, &ctx)) => r,
    };
    let session = match result {
        Ok(Ok(session)) => session,
        Ok(Err(e)) => return shared.handshake_failed(remote, &e),
        Err(_) => return shared.handshake_failed(remote, &HandshakeError::Timeout),
    };
    bump(&shared.totals.handshakes_ok);
    debug!(%remote, peer = %session.peer, "inbound handshake complete");
    let (r, w) = stream.into_split();
    peer::run(shared.clone(), session, r, w).await;
}
