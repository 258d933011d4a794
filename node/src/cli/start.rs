//! `montana start`: run a node until SIGINT or SIGTERM.
//!
//! Everything the operator can get wrong (genesis, keys, data dir, backend,
//! addresses) is checked before the network starts and reported once, as
//! one line on stderr (`error: ...`, no log line repeating it) with exit
//! code 2; a node that cannot start must say why, not crash-loop silently.
//! A port clash names the socket (the p2p listener or the status server).
//! A start that fails before the node runs removes the database it created
//! (and the data dir, if it created that), so the next try starts clean.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clap::Args as ClapArgs;
use montana_backends::PinScope;
use montana_node::backend_choice::{BackendRequest, Calibration};
use montana_node::net::Network;
use montana_node::node::net_transport::{self, JoinOptions, NetTransport};
use montana_node::node::{Node, NodeConfig};
use montana_node::status::{self, STATUS_ADDR_FILE};
use tracing::info;

use super::CliError;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The node's data dir (database, state, default keys dir).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The network's genesis manifest.
    #[arg(long)]
    pub genesis: PathBuf,
    /// Keys dir (default: DATA_DIR/keys).
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// Listen address (default: this node's address in the genesis).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Status server address (/status, /metrics); port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub status_addr: SocketAddr,
    /// Pin one backend for the operations it supports (a verify-only
    /// backend such as avx2 or gpu pins verification; default: auto).
    #[arg(long)]
    pub backend: Option<String>,
    /// Proposer only: stop proposing after this window (devnets, tests).
    #[arg(long, value_parser = super::number::parse_u64)]
    pub last_window: Option<u64>,
    /// As a proposer, propose a window no sooner than this many seconds
    /// after the one before was cemented here (scale runs with a tiny D,
    /// whose windows would otherwise follow each other at hashing speed).
    #[arg(long, default_value_t = 0.0, value_parser = super::number::parse_secs)]
    pub min_window_secs: f64,
    /// Take the best available backends without the calibration file or a
    /// quick calibration (tests).
    #[arg(long)]
    pub skip_calibration: bool,
    /// Keys outside the genesis: the node's label (default: joiner- and
    /// the first 8 digits of its node id).
    #[arg(long)]
    pub label: Option<String>,
    /// Keys outside the genesis: join through these addresses
    /// (comma-separated; default: the genesis peers' addresses).
    #[arg(long, value_delimiter = ',')]
    pub bootstrap: Vec<SocketAddr>,
    /// Connection slots for members of the active set; everyone else
    /// shares a separate pool of max(4, N/4).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_peers: u16,
    /// Start from a verified snapshot of the state served by the peers
    /// instead of replaying every window (docs/SPEC.md section 13).
    #[arg(long)]
    pub fast_sync: bool,
    /// Windows behind a cement-verified tip beyond which a node fast-syncs.
    #[arg(long, default_value_t = montana_node::snapshot::DEFAULT_FAST_SYNC_THRESHOLD, value_parser = super::number::parse_u64)]
    pub fast_sync_threshold: u64,
    /// Write a snapshot of the state every N cemented windows for peers
    /// to fast-sync from (the newest 2 are kept; 0: none).
    #[arg(long, default_value_t = montana_node::snapshot::DEFAULT_SNAPSHOT_INTERVAL, value_parser = super::number::parse_u64)]
    pub snapshot_interval: u64,
}

pub fn run(a: Args) -> Result<(), CliError> {
    montana_node::node::memory::one_arena();
    super::logging::init();
    let fresh = Fresh::note(&a.data_dir);
    let mut ran = false;
    let result = start(a, &mut ran);
    if result.is_err() && !ran {
        fresh.undo();
    }
    result
}

fn start(a: Args, ran: &mut bool) -> Result<(), CliError> {
    let cfg = NodeConfig {
        data_dir: a.data_dir.clone(),
        genesis: a.genesis,
        keys_dir: a.keys,
        backends: BackendRequest {
            choice: super::backend_choice(a.backend.as_deref(), PinScope::SomeOperation),
            host_rates: super::host_rates_path(),
        },
        last_window: a.last_window,
        label: a.label.clone(),
        calibration: if a.skip_calibration {
            Calibration::Skip
        } else {
            Calibration::Use
        },
    };
    let mut node = Node::open(&cfg).map_err(CliError::bad_input)?;
    node.fast_sync.enabled = a.fast_sync;
    node.fast_sync.threshold = a.fast_sync_threshold;
    node.fast_sync.snapshot_interval = a.snapshot_interval;
    node.min_window = std::time::Duration::from_secs_f64(a.min_window_secs);
    info!(
        label = node.label(),
        eval = node.backends.eval.name(),
        verify = node.backends.verify.name(),
        eval_rate = node.backends.eval_rate.unwrap_or(0.0),
        verify_rate = node.backends.verify_rate.unwrap_or(0.0),
        reason = %node.backends.reason,
        "backends chosen"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::check_failed(format!("cannot start the runtime: {e}")))?;
    let join = JoinOptions {
        bootstrap: a.bootstrap,
        max_peers: a.max_peers as usize,
    };
    rt.block_on(serve(node, a.listen, join, a.status_addr, a.data_dir, ran))
}

/// What a start found in the data dir, so that a failed start can remove
/// what it made (nothing that was there before).
struct Fresh {
    data_dir: PathBuf,
    dir_existed: bool,
    db_existed: bool,
}

impl Fresh {
    fn note(data_dir: &Path) -> Self {
        Fresh {
            data_dir: data_dir.to_path_buf(),
            dir_existed: data_dir.exists(),
            db_existed: data_dir.join("db").exists(),
        }
    }

    fn undo(&self) {
        if !self.dir_existed {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        } else if !self.db_existed {
            let _ = std::fs::remove_dir_all(self.data_dir.join("db"));
        }
    }
}

async fn serve(
    node: Node,
    listen: Option<SocketAddr>,
    join: JoinOptions,
    status_addr: SocketAddr,
    data_dir: PathBuf,
    ran: &mut bool,
) -> Result<(), CliError> {
    if !join.bootstrap.is_empty() && !node.is_joiner() {
        info!("--bootstrap is for keys outside the genesis; this node is a genesis peer and dials its genesis peers");
    }
    let net_cfg =
        net_transport::net_config_with(&node, listen, &join).map_err(CliError::bad_input)?;
    // A taken status port fails now, before the network starts (stopping
    // it again takes seconds); the real bind below still reports a race.
    if status_addr.port() != 0 {
        std::net::TcpListener::bind(status_addr).map_err(|e| {
            CliError::bad_input(format!(
                "status server (--status-addr): cannot listen on {status_addr}: {e}"
            ))
        })?;
    }
    let (net, inbound) = Network::start(net_cfg)
        .await
        .map_err(|e| CliError::bad_input(format!("p2p listener: {e}")))?;
    let state = Arc::new(Mutex::new(node.initial_state()));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let source = {
        let (state, net) = (state.clone(), net.clone());
        Arc::new(move || net_transport::snapshot(&state.lock().unwrap(), &net))
    };
    let mut rx = stop_rx.clone();
    let bound = match status::serve(status_addr, source, async move {
        let _ = rx.wait_for(|s| *s).await;
    })
    .await
    {
        Ok(bound) => bound,
        Err(e) => {
            net.shutdown().await;
            return Err(CliError::bad_input(format!(
                "status server (--status-addr): {e}"
            )));
        }
    };
    let addr_file = data_dir.join(STATUS_ADDR_FILE);
    if let Err(e) = std::fs::write(&addr_file, format!("{bound}\n")) {
        net.shutdown().await;
        let _ = stop_tx.send(true);
        return Err(CliError::bad_input(format!(
            "cannot write {}: {e}",
            addr_file.display()
        )));
    }

    *ran = true;
    let transport = Arc::new(NetTransport(net.clone()));
    let result = node
        .run(
            transport,
            net_transport::forward(inbound),
            state,
            shutdown_signal(),
        )
        .await;
    net.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = std::fs::remove_file(&addr_file);
    match result {
        Ok(_) => Ok(()),
        Err(e) => Err(CliError::check_failed(format!("node stopped: {e}"))),
    }
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
