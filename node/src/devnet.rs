//! A local devnet's plan and verdict, without processes: keys and a genesis
//! for N nodes on loopback ports, D from a quick measurement of this host's
//! eval rate, and the final check that every node ended on the same window
//! with the same T, and that T is the TimeChain's.
//!
//! The TimeChain check ([`check_timechain`]) verifies the checkpoints a node
//! stored for every window, all segments in parallel with the scalar oracle,
//! from T0 up to T(W): since T(w) = H^D(T(w-1)) and each window's
//! checkpoints chain from the previous window's T, this proves T(W) exactly
//! as a sequential recomputation would, in a fraction of its time on a
//! multi-core host. It reports progress and can be cancelled.
//!
//! `montana devnet` (cli/devnet.rs) runs the processes around this.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use montana_vdf::{Backend, ChainParams, EvalControl, Hash32, HashSuite, NetworkParams, Segment};
use rayon::prelude::*;
use serde::Serialize;

use crate::genesis::{ConsensusParams, Genesis, GenesisPeer, Synthetic};
use crate::keys::NodeKeys;
use crate::node::NodeState;
use crate::storage::Store;

/// One planned node.
#[derive(Clone, Debug)]
pub struct DevnetNode {
    pub label: String,
    pub dir: PathBuf,
    pub address: SocketAddr,
    /// Its keys are not in the genesis: it joins.
    pub joiner: bool,
}

/// What `plan` wrote.
#[derive(Clone, Debug)]
pub struct Plan {
    pub genesis_path: PathBuf,
    pub genesis: Genesis,
    pub nodes: Vec<DevnetNode>,
}

impl Plan {
    /// The same plan with another proposer timeout, the genesis file
    /// rewritten: for a test that must know who proposes, no round change
    /// unless a proposer is silent this long (on a loaded host the default,
    /// 3 windows, lets a slowed proposer lose its round to a backup).
    pub fn with_proposer_timeout(mut self, secs: f64) -> Result<Plan, String> {
        self.genesis.proposer_timeout_secs = secs;
        self.genesis.validate().map_err(|e| e.to_string())?;
        std::fs::write(&self.genesis_path, self.genesis.to_json())
            .map_err(|e| format!("cannot write {}: {e}", self.genesis_path.display()))?;
        Ok(self)
    }
}

/// Steps per second of `backend` evaluating `suite` on this host: the
/// median of three short runs (about 0.1 s each after a probe).
pub fn measure_eval_rate(backend: &dyn Backend, suite: HashSuite) -> Result<f64, String> {
    let run = |n: u64| -> Result<f64, String> {
        let params = ChainParams::new(n, 1).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        backend
            .evaluate(suite, &Hash32([7; 32]), params, &EvalControl::none())
            .map_err(|e| e.to_string())?;
        Ok(n as f64 / t0.elapsed().as_secs_f64().max(1e-6))
    };
    let probe = run(200_000)?;
    let n = ((probe * 0.1) as u64).max(100_000);
    let mut rates = [run(n)?, run(n)?, run(n)?];
    rates.sort_by(f64::total_cmp);
    Ok(rates[1])
}

/// D for windows of about `window_secs` at `rate`, a positive multiple of K.
pub fn d_for(rate: f64, window_secs: f64, k: u64) -> u64 {
    let d = (rate * window_secs / k as f64).round() as u64;
    d.max(1) * k
}

/// Creates a new directory under `parent` with an unpredictable name
/// (`montana-devnet-` and 16 random hex digits) and mode 0700. It never
/// reuses a path that exists (a name taken, e.g. planted by another user of
/// a shared temp dir, is skipped), so nobody else can read or pre-seed it.
pub fn fresh_private_dir(parent: &Path) -> std::io::Result<PathBuf> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    for _ in 0..16 {
        let path = parent.join(format!("montana-devnet-{:016x}", rand::random::<u64>()));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
                return Ok(path);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::new(
        ErrorKind::AlreadyExists,
        "no free directory name after 16 tries",
    ))
}

/// `n` distinct free loopback ports (bound then released), never one this
/// process handed out before; below the kernel's ephemeral port range
/// where it leaves room.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    use std::collections::HashSet;
    use std::sync::Mutex;
    // A port handed out once by this process is never handed out again (a
    // second call, for the joiners, could otherwise get the first call's
    // ports, free again until their nodes bind them). Ports are taken below
    // the kernel's ephemeral range, from a random start: outbound
    // connections (this devnet's nodes dial each other; the test suite runs
    // devnets in parallel) take ephemeral ports, and one took a port picked
    // from that range before its node bound it ("Address already in use":
    // a 64-node run, and a 4-node devnet beside the test suite's others).
    // Devnets in parallel scan from different random starts: two meet only
    // if their few ports overlap in a span of ~20,000.
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    if n == 0 {
        // (The scan below stops at the n-th port: for none, it would hold
        // every free port of the range, thousands of descriptors.)
        return Ok(Vec::new());
    }
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .min(65_536);
    const LOW: u32 = 10_000;
    let mut given = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    if high > LOW + 4 * n as u32 {
        let span = high - LOW;
        let start = rand::random::<u32>() % span;
        let mut held = Vec::with_capacity(n);
        for i in 0..span {
            let port = (LOW + (start + i) % span) as u16;
            if given.contains(&port) {
                continue;
            }
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                held.push(l);
                if held.len() == n {
                    let ports: Vec<u16> = held
                        .iter()
                        .map(|l| l.local_addr().map(|a| a.port()))
                        .collect::<Result<_, _>>()?;
                    given.extend(&ports);
                    return Ok(ports);
                }
            }
        }
    }
    let mut held = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        if given.insert(port) {
            ports.push(port);
        }
        held.push(l);
        if held.len() > 64 * n + 1024 {
            return Err(std::io::Error::other("no free loopback ports"));
        }
    }
    Ok(ports)
}

/// Writes keys for `n` nodes under `dir/nodeI/keys`, a peers file and a
/// genesis (node0 is the proposer; the default consensus rules, no
/// accounts).
pub fn plan(
    dir: &Path,
    n: usize,
    suite: HashSuite,
    d: u64,
    k: u64,
    window_secs: f64,
) -> Result<Plan, String> {
    let params = NetworkParams {
        hash: suite,
        d,
        checkpoints: k,
        window_secs,
    };
    plan_with_accounts(dir, n, params, 0, 0)
}

/// [`plan`] with `accounts` synthetic initial accounts in the genesis
/// ([`crate::genesis::Synthetic`], seed 0).
pub fn plan_with_accounts(
    dir: &Path,
    n: usize,
    params: NetworkParams,
    accounts: u64,
    joiners: usize,
) -> Result<Plan, String> {
    let NetworkParams {
        hash: suite,
        d,
        checkpoints: k,
        window_secs,
    } = params;
    let ports = free_ports(n).map_err(|e| format!("no free loopback ports: {e}"))?;
    let mut peers = Vec::with_capacity(n);
    let mut nodes = Vec::with_capacity(n);
    for (i, port) in ports.into_iter().enumerate() {
        let label = format!("node{i}");
        let node_dir = dir.join(&label);
        let keys = NodeKeys::generate().map_err(|e| e.to_string())?;
        keys.save(&node_dir.join("keys"))
            .map_err(|e| e.to_string())?;
        let pk = keys.public_keys();
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        peers.push(GenesisPeer {
            label: label.clone(),
            address,
            noise_public_key: pk.noise_public_key,
            signing_public_key: pk.signing_public_key,
            bootstrap: i == 0,
            weight: 1,
        });
        nodes.push(DevnetNode {
            label,
            dir: node_dir,
            address,
            joiner: false,
        });
    }
    let peers_path = dir.join("peers.json");
    std::fs::write(
        &peers_path,
        serde_json::to_string_pretty(&peers).expect("plain data"),
    )
    .map_err(|e| format!("cannot write {}: {e}", peers_path.display()))?;
    let mut consensus = ConsensusParams::defaults(window_secs);
    consensus.synthetic = Synthetic {
        count: accounts,
        seed: 0,
    };
    let genesis =
        Genesis::new_with(peers, suite, d, k, window_secs, consensus).map_err(|e| e.to_string())?;
    let genesis_path = dir.join("genesis.json");
    std::fs::write(&genesis_path, genesis.to_json())
        .map_err(|e| format!("cannot write {}: {e}", genesis_path.display()))?;
    // Joiners: keys of their own, only the genesis file and node0's
    // address to start from.
    let ports = free_ports(joiners).map_err(|e| format!("no free loopback ports: {e}"))?;
    for (j, port) in ports.into_iter().enumerate() {
        let label = format!("joiner{j}");
        let node_dir = dir.join(&label);
        NodeKeys::generate()
            .map_err(|e| e.to_string())?
            .save(&node_dir.join("keys"))
            .map_err(|e| e.to_string())?;
        nodes.push(DevnetNode {
            label,
            dir: node_dir,
            address: ([127, 0, 0, 1], port).into(),
            joiner: true,
        });
    }
    Ok(Plan {
        genesis_path,
        genesis,
        nodes,
    })
}

/// One node in the devnet's JSON verdict: the node-state fields of the
/// shared contracts (docs/SPEC.md section 11.1).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NodeReport {
    pub label: String,
    pub node_id: String,
    pub phase: String,
    pub membership: String,
    pub joined: bool,
    pub window: u64,
    pub cemented: u64,
    pub t: String,
    pub state_root: String,
    pub snapshot_window: Option<u64>,
    pub lag: u64,
    pub rss_bytes: u64,
    pub verify_share: f64,
    pub eval_backend: String,
    pub verify_backend: String,
}

/// The devnet's last JSON line.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    pub hash: HashSuite,
    pub d: u64,
    pub checkpoints: u64,
    /// The windows asked for (`--windows`).
    pub windows: u64,
    /// The window every node reached (the lowest node window).
    pub window: u64,
    /// Stopped by SIGINT or SIGTERM before the run (or its check) finished;
    /// an interrupted run is never `converged`.
    pub interrupted: bool,
    pub converged: bool,
    pub nodes: Vec<NodeReport>,
}

/// Builds the report and compares the surviving nodes (those not in
/// `killed`, which are reported with phase `killed`): every one reported,
/// all applied and cemented the same window (at least `windows`) with the
/// same T and state root. `converged` is left false: it is set once
/// [`check_timechain`] has also passed.
pub fn compare(
    genesis: &Genesis,
    windows: u64,
    states: &[Option<NodeState>],
    killed: &[usize],
) -> (Report, Result<(), String>) {
    let nodes: Vec<NodeReport> = states
        .iter()
        .enumerate()
        .map(|(i, s)| match s {
            Some(s) => NodeReport {
                label: s.label.clone(),
                node_id: s.node_id.clone(),
                phase: s.phase.clone(),
                membership: s.membership.clone(),
                joined: s.joined,
                window: s.window,
                cemented: s.cemented,
                t: s.t.clone(),
                state_root: s.state_root.clone(),
                snapshot_window: s.snapshot_window,
                lag: s.lag,
                rss_bytes: s.rss_bytes,
                verify_share: s.verify_share,
                eval_backend: s.eval_backend.clone(),
                verify_backend: s.verify_backend.clone(),
            },
            None => NodeReport {
                label: genesis.peers.get(i).map_or_else(
                    || format!("joiner{}", i - genesis.peers.len()),
                    |p| p.label.clone(),
                ),
                node_id: String::new(),
                phase: "unknown".into(),
                membership: "none".into(),
                joined: false,
                window: 0,
                cemented: 0,
                t: String::new(),
                state_root: String::new(),
                snapshot_window: None,
                lag: 0,
                rss_bytes: 0,
                verify_share: 0.0,
                eval_backend: String::new(),
                verify_backend: String::new(),
            },
        })
        .collect();
    let mut nodes = nodes;
    for &i in killed {
        if let Some(n) = nodes.get_mut(i) {
            n.phase = "killed".into();
        }
    }
    let alive: Vec<usize> = (0..nodes.len()).filter(|i| !killed.contains(i)).collect();
    let check = (|| {
        if let Some(&i) = alive.iter().find(|&&i| states[i].is_none()) {
            return Err(format!("{} reported no state", nodes[i].label));
        }
        let Some(&f) = alive.first() else {
            return Err("no node survived".into());
        };
        let first = &nodes[f];
        for &i in &alive[1..] {
            let n = &nodes[i];
            if (n.window, n.cemented, &n.t, &n.state_root)
                != (first.window, first.cemented, &first.t, &first.state_root)
            {
                return Err(format!(
                    "{} ended on window {} (cemented {}, root {}) but {} on window {} (cemented {}, root {}), or with another T",
                    n.label,
                    n.window,
                    n.cemented,
                    short(&n.state_root),
                    first.label,
                    first.window,
                    first.cemented,
                    short(&first.state_root)
                ));
            }
        }
        if first.cemented < windows {
            return Err(format!(
                "the devnet cemented window {} of {windows}",
                first.cemented
            ));
        }
        if let Some(j) = alive
            .iter()
            .map(|&i| &nodes[i])
            .find(|n| n.joined && n.membership != "active")
        {
            return Err(format!(
                "{} ended {} at window {}, not an active member",
                j.label, j.membership, j.cemented
            ));
        }
        Ok(())
    })();
    let report = Report {
        hash: genesis.hash,
        d: genesis.d,
        checkpoints: genesis.checkpoints,
        windows,
        window: alive.iter().map(|&i| nodes[i].cemented).min().unwrap_or(0),
        interrupted: false,
        converged: false,
        nodes,
    };
    (report, check)
}

/// The windows of the complete snapshots a node's data dir serves,
/// ascending (`DIR/snapshots`, docs/SPEC.md 13.6).
pub fn snapshot_windows(node_dir: &Path) -> Vec<u64> {
    crate::snapshot::disk::Snapshots::new(&node_dir.join("snapshots")).windows()
}

/// A `--fast-sync` devnet's extra check: every node from index `late`
/// on (started late with `--fast-sync`) installed a snapshot rather than
/// replaying, and the others never did.
pub fn check_fast_synced(report: &Report, late: impl Fn(usize) -> bool) -> Result<(), String> {
    for (i, n) in report.nodes.iter().enumerate() {
        match (late(i), n.snapshot_window) {
            (true, None) => {
                return Err(format!(
                    "{} was started to fast-sync but replayed (no snapshot was accepted; see its node.log)",
                    n.label
                ))
            }
            (false, Some(w)) => {
                return Err(format!(
                    "{} ran from the start but reports a fast-sync from window {w}",
                    n.label
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

fn short(h: &str) -> &str {
    &h[..16.min(h.len())]
}

/// Why [`check_timechain`] did not pass.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckError {
    /// The cancel flag was raised.
    Interrupted,
    /// The stored chain is not the TimeChain; one line.
    Failed(String),
}

/// Checks that the node with data dir `dir` (stopped) stored the TimeChain
/// up to `window` and that its T(window) is `expected_t` (hex): every
/// window's proposal is present, has the genesis's suite, D and K, and its
/// checkpoints chain from the previous window's T (T0 first); every segment
/// is verified with the scalar oracle, in parallel. `on_steps` is called
/// with the steps verified as they are (from several threads);
/// `cancel` stops the check with [`CheckError::Interrupted`].
pub fn check_timechain(
    genesis: &Genesis,
    dir: &Path,
    window: u64,
    expected_t: &str,
    on_steps: &(dyn Fn(u64) + Sync),
    cancel: &AtomicBool,
) -> Result<(), CheckError> {
    let fail = |m: String| CheckError::Failed(m);
    let store = Store::open(dir, genesis).map_err(|e| fail(e.to_string()))?;
    let mut segments: Vec<(u64, Segment)> = Vec::new();
    let mut t = genesis.timechain().t0();
    for w in 1..=window {
        if cancel.load(Ordering::Relaxed) {
            return Err(CheckError::Interrupted);
        }
        let p = store
            .proposal(w)
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail(format!("window {w} is missing from {}", dir.display())))?;
        let h = &p.header;
        if (h.suite, h.d, h.checkpoints as u64) != (genesis.hash, genesis.d, genesis.checkpoints) {
            return Err(fail(format!(
                "window {w} was evaluated with {}, D = {}, K = {}, not the genesis's parameters",
                h.suite, h.d, h.checkpoints
            )));
        }
        segments.extend(p.proof(t).segments().into_iter().map(|s| (w, s)));
        t = h.t;
    }
    drop(store);
    if t.to_hex() != expected_t {
        return Err(fail(format!(
            "the stored T({window}) = {t} differs from the reported {expected_t}"
        )));
    }
    let suite = genesis.hash;
    let bad = segments
        .par_iter()
        .map(|(w, seg)| {
            if cancel.load(Ordering::Relaxed) {
                return Err(CheckError::Interrupted);
            }
            let mut x = seg.start;
            montana_backends::scalar::advance(suite, &mut x, seg.steps);
            on_steps(seg.steps);
            if x == seg.end {
                Ok(())
            } else {
                Err(fail(format!(
                    "window {w}: a checkpoint is not the TimeChain's (T({window}) is wrong)"
                )))
            }
        })
        .find_any(|r| r.is_err());
    match bad {
        Some(Err(e)) => Err(e),
        _ if cancel.load(Ordering::Relaxed) => Err(CheckError::Interrupted),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use montana_backends::ScalarBackend;

    #[test]
    fn the_default_devnet_dir_is_fresh_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let a = fresh_private_dir(parent.path()).unwrap();
        let b = fresh_private_dir(parent.path()).unwrap();
        assert_ne!(a, b);
        for d in [&a, &b] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
            assert_eq!(std::fs::read_dir(d).unwrap().count(), 0);
            let name = d.file_name().unwrap().to_str().unwrap();
            let suffix = name.strip_prefix("montana-devnet-").unwrap();
            assert_eq!(suffix.len(), 16);
            assert_ne!(suffix, format!("{}", std::process::id()));
        }
    }

    #[test]
    fn d_is_a_positive_multiple_of_k() {
        assert_eq!(d_for(10_000_000.0, 1.0, 1_000), 10_000_000);
        assert_eq!(d_for(1_234_567.0, 1.0, 1_000), 1_235_000);
        assert_eq!(d_for(10.0, 1.0, 1_000), 1_000);
        let r = measure_eval_rate(&ScalarBackend, HashSuite::Sha256).unwrap();
        assert!(r > 0.0);
    }

    fn state(label: &str, window: u64, t: String) -> Option<NodeState> {
        Some(NodeState {
            label: label.into(),
            window,
            cemented: window,
            state_root: "ab".repeat(32),
            t,
            phase: "stopped".into(),
            ..Default::default()
        })
    }

    #[test]
    fn plan_writes_a_version_2_genesis_with_the_accounts_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let params = NetworkParams {
            hash: HashSuite::Sha256,
            d: 300,
            checkpoints: 3,
            window_secs: 0.5,
        };
        let p = plan_with_accounts(dir.path(), 2, params, 5, 0).unwrap();
        let g = Genesis::load(&p.genesis_path).unwrap();
        assert_eq!(g, p.genesis);
        assert_eq!(g.version, 2);
        assert_eq!(g.proposer_timeout_secs, 1.5);
        assert!(g.accounts.is_empty());
        assert_eq!(g.synthetic_accounts, Synthetic { count: 5, seed: 0 });
        assert_eq!(g.initial_state().accounts().len(), 5);
    }

    #[test]
    fn plan_and_compare() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(dir.path(), 3, HashSuite::Sha256, 300, 3, 1.0).unwrap();
        assert_eq!(Genesis::load(&p.genesis_path).unwrap(), p.genesis);
        assert_eq!(p.genesis.proposer(), 0);
        for n in &p.nodes {
            NodeKeys::load(&n.dir.join("keys")).unwrap();
        }
        let t2 = Hash32([9; 32]).to_hex();
        let good: Vec<_> = (0..3)
            .map(|i| state(&format!("node{i}"), 2, t2.clone()))
            .collect();
        let (r, ok) = compare(&p.genesis, 2, &good, &[]);
        assert!(ok.is_ok(), "{ok:?}");
        assert_eq!((r.window, r.interrupted, r.converged), (2, false, false));
        assert_eq!(r.nodes.len(), 3);
        let json = serde_json::to_value(&r).unwrap();
        for k in [
            "hash",
            "d",
            "checkpoints",
            "windows",
            "window",
            "interrupted",
            "converged",
            "nodes",
        ] {
            assert!(json.get(k).is_some(), "{k}");
        }
        // Short of the target, split, a missing node: all fail.
        assert!(compare(&p.genesis, 3, &good, &[]).1.is_err());
        let mut split = good.clone();
        split[2] = state("node2", 1, t2.clone());
        let (r, ok) = compare(&p.genesis, 1, &split, &[]);
        assert!(ok.is_err());
        assert_eq!(r.window, 1, "the lowest node window");
        let mut missing = good.clone();
        missing[1] = None;
        assert!(compare(&p.genesis, 2, &missing, &[]).1.is_err());
        // Another state root on one node: not converged.
        let mut forked = good.clone();
        forked[1].as_mut().unwrap().state_root = "cd".repeat(32);
        assert!(compare(&p.genesis, 2, &forked, &[]).1.is_err());
        // A killed node is left out of the comparison and reported killed.
        let (r, ok) = compare(&p.genesis, 2, &split, &[2]);
        assert!(ok.is_ok(), "{ok:?}");
        assert_eq!(r.nodes[2].phase, "killed");
    }

    #[test]
    fn a_late_node_that_replayed_fails_the_fast_sync_check() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(dir.path(), 3, HashSuite::Sha256, 300, 3, 1.0).unwrap();
        let t2 = Hash32([9; 32]).to_hex();
        let mut states: Vec<_> = (0..3)
            .map(|i| state(&format!("node{i}"), 2, t2.clone()))
            .collect();
        let (r, ok) = compare(&p.genesis, 2, &states, &[]);
        assert!(ok.is_ok());
        let e = check_fast_synced(&r, |i| i >= 2).unwrap_err();
        assert!(
            e.contains("node2 was started to fast-sync but replayed"),
            "{e}"
        );
        assert!(
            check_fast_synced(&r, |i| i >= 3).is_ok(),
            "no late node: nothing to check"
        );
        states[2].as_mut().unwrap().snapshot_window = Some(2);
        let (r, _) = compare(&p.genesis, 2, &states, &[]);
        assert!(check_fast_synced(&r, |i| i >= 2).is_ok());
        let e = check_fast_synced(&r, |i| i >= 3).unwrap_err();
        assert!(e.contains("node2 ran from the start"), "{e}");
    }

    /// Stores windows 1..=n in `node`'s data dir, evaluated with the oracle;
    /// `corrupt` replaces one checkpoint of that window (consistently signed).
    fn store_windows(p: &Plan, node: usize, n: u64, corrupt: Option<u64>) -> Hash32 {
        let g = &p.genesis;
        let keys: Vec<NodeKeys> = p
            .nodes
            .iter()
            .map(|n| NodeKeys::load(&n.dir.join("keys")).unwrap())
            .collect();
        let (ws, state) = crate::testutil::cemented_chain(g, &keys, 0, n, |w, cps| {
            if corrupt == Some(w) {
                cps[0] = Hash32([0xee; 32]);
            }
        });
        let mut store = Store::open(&p.nodes[node].dir, g).unwrap();
        store.cement(&ws, &state).unwrap();
        store.tip().t
    }

    #[test]
    fn the_stored_chain_is_checked_against_the_timechain() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(dir.path(), 2, HashSuite::Sha256, 3_000, 30, 1.0).unwrap();
        let t = store_windows(&p, 0, 4, None);
        let expected = p
            .genesis
            .timechain()
            .window(&ScalarBackend, 4, &EvalControl::none())
            .unwrap();
        assert_eq!(t, expected);
        let steps = std::sync::atomic::AtomicU64::new(0);
        let count = |n: u64| {
            steps.fetch_add(n, Ordering::Relaxed);
        };
        let go = AtomicBool::new(false);
        let dir0 = &p.nodes[0].dir;
        assert_eq!(
            check_timechain(&p.genesis, dir0, 4, &t.to_hex(), &count, &go),
            Ok(())
        );
        assert_eq!(
            steps.load(Ordering::Relaxed),
            4 * 3_000,
            "every step verified"
        );
        // Fewer windows check too; a T that is not the stored one fails.
        assert_eq!(
            check_timechain(&p.genesis, dir0, 4, &Hash32::ZERO.to_hex(), &count, &go)
                .map_err(|_| ()),
            Err(())
        );
        // A window beyond the stored ones is missing.
        assert!(matches!(
            check_timechain(&p.genesis, dir0, 5, &t.to_hex(), &count, &go),
            Err(CheckError::Failed(m)) if m.contains("missing")
        ));
        // Cancelled: interrupted, not failed.
        let stop = AtomicBool::new(true);
        assert_eq!(
            check_timechain(&p.genesis, dir0, 4, &t.to_hex(), &count, &stop),
            Err(CheckError::Interrupted)
        );
        // A node that stored a wrong checkpoint in window 3 fails, naming it.
        let bad_t = store_windows(&p, 1, 4, Some(3));
        match check_timechain(&p.genesis, &p.nodes[1].dir, 4, &bad_t.to_hex(), &count, &go) {
            Err(CheckError::Failed(m)) => assert!(m.contains("window 3"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn free_ports_are_distinct_across_calls_and_outside_the_ephemeral_range() {
        let ports = free_ports(64).unwrap();
        // A second call (the joiners') never hands out the first call's
        // ports, free again until their nodes bind them.
        let more = free_ports(16).unwrap();
        // Small devnets too: a 4-node devnet's port, handed out from the
        // ephemeral range, was taken by an outbound connection of a devnet
        // beside it before its node bound it.
        let small = free_ports(4).unwrap();
        assert_eq!(free_ports(0).unwrap(), Vec::<u16>::new());
        let mut sorted: Vec<u16> = ports.iter().chain(&more).chain(&small).copied().collect();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 84);
        if let Some(low) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        {
            if low > 10_000 + 4 * 64 {
                assert!(
                    sorted.iter().all(|p| *p >= 10_000 && *p < low),
                    "{sorted:?}"
                );
            }
        }
    }
}
