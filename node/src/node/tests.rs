//! Whole nodes (storage, backends, the window loop) over the in-process hub:
//! convergence, restart with catch-up, rejection of bad proposals, and the
//! start-up errors an operator sees.

use std::path::Path;
use std::time::Duration;

use montana_vdf::{HashSuite, TimeChain};
use tokio::sync::oneshot;

use super::*;
use crate::genesis::GenesisPeer;

struct Cluster {
    _dir: tempfile::TempDir,
    genesis: PathBuf,
    data: Vec<PathBuf>,
    hub: LocalHub,
}

fn cluster(n: usize, d: u64, k: u64) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let mut peers = Vec::new();
    let mut data = Vec::new();
    for i in 0..n {
        let dd = dir.path().join(format!("node{i}"));
        let keys = NodeKeys::generate().unwrap();
        keys.save(&dd.join("keys")).unwrap();
        let pk = keys.public_keys();
        peers.push(GenesisPeer {
            label: format!("node{i}"),
            address: format!("127.0.0.1:{}", 7100 + i).parse().unwrap(),
            noise_public_key: pk.noise_public_key,
            signing_public_key: pk.signing_public_key,
            bootstrap: i == 0,
        });
        data.push(dd);
    }
    let g = Genesis::new(peers, HashSuite::Sha256, d, k, 0.1).unwrap();
    let genesis = dir.path().join("genesis.json");
    std::fs::write(&genesis, g.to_json()).unwrap();
    Cluster {
        _dir: dir,
        genesis,
        data,
        hub: LocalHub::default(),
    }
}

struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<NodeState, NodeError>>,
}

fn config(c: &Cluster, i: usize) -> NodeConfig {
    NodeConfig {
        data_dir: c.data[i].clone(),
        genesis: c.genesis.clone(),
        keys_dir: None,
        backend: None,
        last_window: None,
        calibration: crate::backend_choice::Calibration::Skip,
    }
}

fn start(c: &Cluster, i: usize) -> Running {
    start_with(c, i, None, vec![])
}

fn start_with(
    c: &Cluster,
    i: usize,
    last_window: Option<u64>,
    faults: Vec<faults::Fault>,
) -> Running {
    let mut cfg = config(c, i);
    cfg.last_window = last_window;
    let mut node = Node::open(&cfg).unwrap();
    node.set_faults(faults);
    run_node(c, i, node)
}

fn run_node(c: &Cluster, i: usize, node: Node) -> Running {
    let (port, inbound) = c.hub.attach(i as u16);
    let state = Arc::new(Mutex::new(node.initial_state()));
    let (stop, rx) = oneshot::channel();
    let task = tokio::spawn(node.run(Arc::new(port), inbound, state, async {
        let _ = rx.await;
    }));
    Running { stop, task }
}

async fn stop(c: &Cluster, i: usize, r: Running) -> NodeState {
    c.hub.detach(i as u16);
    let _ = r.stop.send(());
    r.task.await.unwrap().unwrap()
}

fn window_of(dir: &Path) -> u64 {
    NodeState::read(dir).map_or(0, |s| s.window)
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_converge_and_a_restarted_follower_catches_up() {
    const LAST: u64 = 14;
    let c = cluster(3, 1_000_000, 100);
    let mut nodes: Vec<Option<Running>> = vec![
        Some(start_with(&c, 0, Some(LAST), vec![])),
        Some(start(&c, 1)),
        Some(start(&c, 2)),
    ];
    wait_until("window 2 everywhere", || {
        c.data.iter().all(|d| window_of(d) >= 2)
    })
    .await;

    // Kill follower 2 mid-run, restart it once the proposer is ahead.
    let s2 = stop(&c, 2, nodes[2].take().unwrap()).await;
    assert!(s2.window >= 2);
    wait_until("proposer 3 windows ahead", || {
        window_of(&c.data[0]) >= s2.window + 3
    })
    .await;
    nodes[2] = Some(start(&c, 2));
    wait_until("everyone at the last window", || {
        c.data.iter().all(|d| window_of(d) == LAST)
    })
    .await;
    let mut finals = Vec::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        finals.push(stop(&c, i, n.take().unwrap()).await);
    }
    let g = Genesis::load(&c.genesis).unwrap();
    let expected = TimeChain::new(g.hash, g.d)
        .window(&montana_backends::ScalarBackend, LAST, &Default::default())
        .unwrap();
    for f in &finals {
        assert_eq!(f.window, LAST, "{}", f.label);
        assert_eq!(f.t, expected.to_hex(), "{}", f.label);
        assert_eq!(f.rejected_total(), 0, "{}: {:?}", f.label, f.rejected);
        assert_eq!(f.phase, "stopped");
    }
    // Storage agrees with the reported state after a restart: nothing lost.
    for d in &c.data {
        let s = Store::open(d, &g).unwrap();
        assert_eq!(s.tip().window, LAST);
        assert_eq!(s.tip().t, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_reject_forged_and_corrupted_proposals() {
    let c = cluster(3, 100_000, 50);
    let followers: Vec<Running> = (1..3).map(|i| start(&c, i)).collect();
    let faults = faults::parse("forge@2,corrupt@3").unwrap();
    let proposer = start_with(&c, 0, Some(5), faults);
    wait_until("window 5 everywhere", || {
        c.data.iter().all(|d| window_of(d) == 5)
    })
    .await;
    let p = stop(&c, 0, proposer).await;
    for (i, r) in followers.into_iter().enumerate() {
        let s = stop(&c, i + 1, r).await;
        assert_eq!(s.rejected.get("bad_signature"), Some(&1), "{s:?}");
        assert_eq!(s.rejected.get("bad_checkpoint"), Some(&1), "{s:?}");
        assert_eq!((s.window, &s.t), (5, &p.t));
    }
}

#[test]
fn start_up_errors_name_the_problem() {
    let c = cluster(2, 100, 10);
    let mut cfg = config(&c, 1);
    cfg.keys_dir = Some(c.data[1].join("nokeys"));
    let e = Node::open(&cfg).err().unwrap().to_string();
    assert!(e.contains("montana keys new --dir"), "{e}");
    assert_eq!(e.lines().count(), 1);

    // Keys that are not in the genesis.
    let stranger = c.data[1].join("stranger");
    NodeKeys::generate().unwrap().save(&stranger).unwrap();
    cfg.keys_dir = Some(stranger);
    let e = Node::open(&cfg).err().unwrap();
    assert!(matches!(e, NodeError::NotInGenesis { .. }), "{e}");

    // A data dir that is a file.
    let mut cfg = config(&c, 1);
    cfg.keys_dir = Some(c.data[1].join("keys"));
    let file = c.data[1].join("file");
    std::fs::write(&file, b"x").unwrap();
    cfg.data_dir = file;
    let e = Node::open(&cfg).err().unwrap().to_string();
    assert!(e.contains("unusable"), "{e}");

    // A missing genesis and an unknown backend.
    let mut cfg = config(&c, 1);
    cfg.genesis = c.data[1].join("none.json");
    assert!(matches!(Node::open(&cfg), Err(NodeError::Genesis(_))));
    let mut cfg = config(&c, 1);
    cfg.backend = Some("warp-drive".into());
    assert!(matches!(Node::open(&cfg), Err(NodeError::Backend(_))));
}

/// A verify backend that answers like the oracle except that it calls any
/// segment of `from` steps or more invalid (the GPU on lavapipe before
/// issue 15), or, with `from == 0`, calls every batch valid.
struct Faulty {
    from: u64,
}

impl montana_vdf::Backend for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }
    fn kind(&self) -> montana_vdf::BackendKind {
        montana_vdf::BackendKind::Gpu
    }
    fn availability(&self) -> montana_vdf::Availability {
        montana_vdf::Availability::Available
    }
    fn lanes(&self) -> usize {
        1
    }
    fn supports(&self, _: HashSuite, op: montana_vdf::Operation) -> bool {
        op == montana_vdf::Operation::Verify
    }
    fn evaluate(
        &self,
        suite: HashSuite,
        _: &montana_vdf::Hash32,
        _: montana_vdf::ChainParams,
        _: &montana_vdf::EvalControl<'_>,
    ) -> Result<Vec<montana_vdf::Hash32>, montana_vdf::BackendError> {
        self.check_supported(suite, montana_vdf::Operation::Eval)?;
        unreachable!("verify only")
    }
    fn verify(
        &self,
        suite: HashSuite,
        segments: &[montana_vdf::Segment],
        opts: &montana_vdf::VerifyOptions,
    ) -> Result<montana_vdf::VerifyOutcome, montana_vdf::BackendError> {
        use montana_vdf::VerifyOutcome;
        if self.from == 0 {
            return Ok(VerifyOutcome::Valid);
        }
        if let Some(i) = segments.iter().position(|s| s.steps >= self.from) {
            return Ok(VerifyOutcome::Invalid {
                first_bad_segment: i,
            });
        }
        montana_backends::ScalarBackend.verify(suite, segments, opts)
    }
}

/// Node `i` of `c` verifying with `faulty` first, then the oracle.
fn start_with_verifier(c: &Cluster, i: usize, faulty: Faulty) -> Running {
    use montana_calibration::FallbackBackend;
    let mut node = Node::open(&config(c, i)).unwrap();
    let chain = FallbackBackend::new(
        Arc::new(faulty),
        vec![Arc::new(montana_backends::ScalarBackend)],
    )
    .with_faults(node.backends.faults.clone());
    node.backends.verify = Arc::new(chain);
    run_node(c, i, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verify_backend_that_rejects_valid_proposals_is_refused_not_believed() {
    // Issue 15: segments of 2,000 steps, a backend wrong from 1,000 on (it
    // passes the known-bad sample, whose segments are shorter).
    let c = cluster(2, 20_000, 10);
    let follower = start_with_verifier(&c, 1, Faulty { from: 1_000 });
    let proposer = start_with(&c, 0, Some(3), vec![]);
    wait_until("window 3 everywhere", || {
        c.data.iter().all(|d| window_of(d) == 3)
    })
    .await;
    let p = stop(&c, 0, proposer).await;
    let s = stop(&c, 1, follower).await;
    assert_eq!((s.window, &s.t), (3, &p.t));
    assert_eq!(s.rejected_total(), 0, "{:?}", s.rejected);
    assert_eq!(s.backend_faults, 1);
    assert_eq!(s.verify_backend, "scalar");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verify_backend_that_accepts_everything_is_refused_at_first_use() {
    // Issue 12, defect 7: window 2 has a corrupted checkpoint; a backend
    // accepting it would apply it (and then refuse the real window 2).
    let c = cluster(2, 20_000, 10);
    let follower = start_with_verifier(&c, 1, Faulty { from: 0 });
    let faults = faults::parse("corrupt@2").unwrap();
    let proposer = start_with(&c, 0, Some(3), faults);
    wait_until("window 3 everywhere", || {
        c.data.iter().all(|d| window_of(d) == 3)
    })
    .await;
    let p = stop(&c, 0, proposer).await;
    let s = stop(&c, 1, follower).await;
    assert_eq!((s.window, &s.t), (3, &p.t));
    assert_eq!(s.rejected.get("bad_checkpoint"), Some(&1), "{s:?}");
    assert_eq!(s.backend_faults, 1);
    assert_eq!(s.verify_backend, "scalar");
}
