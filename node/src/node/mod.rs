//! The node: start-up checks and the wiring of genesis, keys, storage,
//! backends, the window state machine and a transport.
//!
//! [`Node::open`] does everything that can fail because of the operator's
//! input (genesis, keys, data dir, backend name) and fails with one line
//! naming the file and the fix, before any networking starts. [`Node::run`]
//! then drives [`crate::chain::Chain`] over a [`Transport`] until shutdown.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use thiserror::Error;
use tokio::sync::mpsc;

use crate::backend_choice::{self, BackendRequest, Calibration, Chosen};
use crate::genesis::{Genesis, GenesisError};
use crate::keys::{KeyError, NodeKeys};
use crate::storage::{Store, StoreError};

pub mod drift;
pub mod fastsync;
#[cfg(any(test, feature = "test-faults"))]
pub mod faults;
pub mod memory;
pub mod net_transport;
mod runtime;
pub mod serve;
pub mod state;
pub mod transport;

pub use state::NodeState;
pub use transport::{Incoming, LocalHub, PeerSummary, Transport};

/// What `montana start` was given.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub genesis: PathBuf,
    /// Defaults to `DATA_DIR/keys`.
    pub keys_dir: Option<PathBuf>,
    /// The backend choice (`--backend`, `MONTANA_BACKEND`, ...) parsed by
    /// the CLI, and the per-host rate cache.
    pub backends: BackendRequest,
    /// The proposer stops proposing after this window (devnets, tests).
    pub last_window: Option<u64>,
    /// Use (or run) the calibration, or take the best backends unmeasured.
    pub calibration: Calibration,
    /// The label of a node outside the genesis (default `joiner-` and the
    /// first 8 digits of its node id); genesis peers use theirs.
    pub label: Option<String>,
}

/// Why a node cannot start or had to stop; one line each.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error("genesis: {0}")]
    Genesis(#[from] GenesisError),
    #[error("no node keys in {dir}; create them with: montana keys new --dir {dir}")]
    NoKeys { dir: String },
    #[error("keys: {0}")]
    Keys(#[from] KeyError),
    #[error("the keys in {dir} belong to no peer of this genesis (noise key {noise})")]
    NotInGenesis { dir: String, noise: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("backend: {0}")]
    Backend(#[from] backend_choice::ChoiceError),
    #[error("{0}")]
    Faults(String),
    #[error("the {op} backend {backend} panicked ({message}) and there is no backend left to fall back to")]
    BackendPanicked {
        op: &'static str,
        backend: &'static str,
        message: String,
    },
    #[error("network: {0}")]
    Net(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// A node with everything loaded, ready to run.
pub struct Node {
    pub genesis: Genesis,
    pub network_id: [u8; 32],
    /// This node's index in the genesis peers; `None` for a node whose keys
    /// are not in the genesis (it joins, docs/SPEC.md 9.9).
    pub me: Option<u16>,
    label: String,
    pub keys: Arc<NodeKeys>,
    pub store: Store,
    pub backends: Chosen,
    pub data_dir: PathBuf,
    pub last_window: Option<u64>,
    /// `--min-window-secs`: a proposal no sooner after the cement before.
    pub min_window: std::time::Duration,
    /// `--fast-sync`, `--fast-sync-threshold`, the snapshot interval.
    pub fast_sync: fastsync::FastSyncOptions,
    #[cfg(any(test, feature = "test-faults"))]
    faults: Vec<faults::Fault>,
}

impl Node {
    /// Loads and checks the genesis, keys, data dir and backends.
    pub fn open(cfg: &NodeConfig) -> Result<Self, NodeError> {
        let genesis = Genesis::load(&cfg.genesis)?;
        let keys_dir = cfg
            .keys_dir
            .clone()
            .unwrap_or_else(|| cfg.data_dir.join("keys"));
        let keys = load_keys(&keys_dir)?;
        let noise = hex::encode(keys.noise_public());
        let me = genesis
            .peers
            .iter()
            .position(|p| p.noise_public_key.eq_ignore_ascii_case(&noise));
        let signing = genesis
            .peers
            .iter()
            .position(|p| p.signing_public().is_ok_and(|k| k == *keys.verifying_key()));
        if me != signing {
            // Half of a genesis identity: a mix-up, not a joiner.
            return Err(NodeError::NotInGenesis {
                dir: keys_dir.display().to_string(),
                noise,
            });
        }
        let id = montana_vdf::HashSuite::Sha256
            .hash(&keys.verifying_key().to_bytes())
            .to_hex();
        let label = match me {
            Some(i) => genesis.peers[i].label.clone(),
            None => cfg
                .label
                .clone()
                .unwrap_or_else(|| format!("joiner-{}", &id[..8])),
        };
        #[cfg(any(test, feature = "test-faults"))]
        let faults = faults::from_env().map_err(NodeError::Faults)?;
        let store = Store::open(&cfg.data_dir, &genesis)?;
        if let Some(line) = NodeState::set_aside_if_corrupt(&cfg.data_dir) {
            tracing::warn!("{line}");
        }
        let backends =
            backend_choice::choose(&genesis, &cfg.data_dir, &cfg.backends, cfg.calibration)?;
        #[cfg(any(test, feature = "test-faults"))]
        let backends = faults::slow_backends(&faults, backends);
        Ok(Node {
            network_id: genesis.network_id(),
            me: me.map(|i| i as u16),
            label,
            keys: Arc::new(keys),
            store,
            backends,
            data_dir: cfg.data_dir.clone(),
            last_window: cfg.last_window,
            min_window: std::time::Duration::ZERO,
            fast_sync: fastsync::FastSyncOptions::default(),
            #[cfg(any(test, feature = "test-faults"))]
            faults,
            genesis,
        })
    }

    /// Replaces the test faults read from the environment.
    #[cfg(any(test, feature = "test-faults"))]
    pub fn set_faults(&mut self, faults: Vec<faults::Fault>) {
        self.faults = faults;
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether this node's keys are outside the genesis (it joins).
    pub fn is_joiner(&self) -> bool {
        self.me.is_none()
    }

    /// SHA-256 of this node's ML-DSA-65 public key, lowercase hex.
    pub fn node_id(&self) -> String {
        montana_vdf::HashSuite::Sha256
            .hash(&self.keys.verifying_key().to_bytes())
            .to_hex()
    }

    /// The initial snapshot (before [`Node::run`] updates it).
    pub fn initial_state(&self) -> NodeState {
        let tip = self.store.tip();
        NodeState {
            label: self.label().to_string(),
            node_id: self.node_id(),
            host: state::host_name(),
            pid: std::process::id(),
            network_id: hex::encode(self.network_id),
            phase: "starting".into(),
            // Genesis peers are members from the start; joiners sync first.
            membership: if self.is_joiner() {
                "syncing"
            } else {
                "active"
            }
            .into(),
            joined: self.is_joiner(),
            window: tip.window,
            t: tip.t.to_hex(),
            hash: self.genesis.hash.name().into(),
            d: self.genesis.d,
            checkpoints: self.genesis.checkpoints,
            window_secs: self.genesis.window_secs,
            rss_bytes: state::rss_bytes(),
            peak_rss_bytes: state::peak_rss_bytes(),
            eval_backend: self.backends.eval.name().into(),
            verify_backend: self.backends.verify.name().into(),
            ..NodeState::default()
        }
    }

    /// Runs the window loop until `shutdown` completes; returns the final
    /// state. `state` is kept current for the status server.
    pub async fn run(
        self,
        transport: Arc<dyn Transport>,
        inbound: mpsc::Receiver<Incoming>,
        state: Arc<Mutex<NodeState>>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<NodeState, NodeError> {
        runtime::run(self, transport, inbound, state, shutdown).await
    }
}

fn load_keys(dir: &Path) -> Result<NodeKeys, NodeError> {
    if !dir.join(crate::keys::SIGNING_SECRET_FILE).exists()
        && !dir.join(crate::keys::NOISE_SECRET_FILE).exists()
        && std::fs::read_dir(dir).is_ok()
    {
        return Err(NodeError::NoKeys {
            dir: dir.display().to_string(),
        });
    }
    if !dir.exists() {
        return Err(NodeError::NoKeys {
            dir: dir.display().to_string(),
        });
    }
    Ok(NodeKeys::load(dir)?)
}

#[cfg(test)]
mod tests;
