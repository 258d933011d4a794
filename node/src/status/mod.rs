//! The node's status over HTTP: `/status` (JSON) and `/metrics` (Prometheus
//! text format), served on a loopback address by default.
//!
//! The node owns the numbers: it passes a closure returning a fresh
//! [`StatusSnapshot`], called once per request, so the server holds no state
//! of its own and can never show stale figures. [`fetch`] is the matching
//! client (`montana status`, the devnet's live table).

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::net::{NetTotals, PeerStats};

mod client;
mod http;
mod metrics;

pub use client::{fetch, get};
pub use http::serve;
pub use metrics::render as render_metrics;

/// File in the node's data dir holding the status server's bound address
/// (`HOST:PORT`), written by the node, read by `montana status --data-dir`.
pub const STATUS_ADDR_FILE: &str = "status.addr";

/// Everything `/status` reports; the node fills it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct StatusSnapshot {
    pub label: String,
    pub phase: String,
    /// Last applied window.
    pub window: u64,
    /// Windows behind the best known peer.
    pub lag: u64,
    pub d: u64,
    pub hash: String,
    pub eval_backend: String,
    pub verify_backend: String,
    /// Live evaluation rate, hashes per second.
    pub hash_rate: f64,
    /// Backends refused at run time (failed, or a wrong verdict).
    pub backend_faults: u64,
    pub peers: Vec<PeerStats>,
    /// Transport counters since start.
    pub net: NetTotals,
}

/// The closure the server calls per request.
pub type StatusSource = Arc<dyn Fn() -> StatusSnapshot + Send + Sync>;

/// Status server and client failures; one line each.
#[derive(Debug, Error)]
pub enum StatusError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the status server at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("status server at {addr} answered badly: {why}")]
    BadResponse { addr: SocketAddr, why: String },
}
