//! Node processes on loopback: `montana devnet` converges; a follower killed
//! (SIGKILL, a crash) and restarted mid-run catches up; forged and corrupted
//! proposals are rejected by every follower. Small D and K, every run
//! bounded in time and stopped by the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use montana_node::devnet;
use montana_node::node::NodeState;
use montana_vdf::{EvalControl, HashSuite, TimeChain};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_montana");

/// Children killed on drop, so a failing test leaves no process behind.
struct Nodes(Vec<Option<Child>>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(plan: &devnet::Plan, i: usize, extra: &[&str], env: &[(&str, &str)]) -> Child {
    let n = &plan.nodes[i];
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(n.dir.join("node.log"))
        .unwrap();
    Command::new(BIN)
        .arg("start")
        .arg("--data-dir")
        .arg(&n.dir)
        .arg("--genesis")
        .arg(&plan.genesis_path)
        .arg("--skip-calibration")
        .args(extra)
        .envs(env.iter().copied())
        .env("MONTANA_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn montana start")
}

fn state(dir: &Path) -> Option<NodeState> {
    NodeState::read(dir)
}

fn window(dir: &Path) -> u64 {
    state(dir).map_or(0, |s| s.window)
}

fn wait_until(what: &str, plan: &devnet::Plan, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs: Vec<String> = plan
        .nodes
        .iter()
        .map(|n| {
            let log = std::fs::read_to_string(n.dir.join("node.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            format!("{}: {:?}\n{}", n.label, state(&n.dir), tail.join("\n"))
        })
        .collect();
    panic!("timed out waiting for {what}\n{}", logs.join("\n"));
}

/// SIGTERM (a clean shutdown) and wait for the exit status.
fn terminate(c: &mut Option<Child>) {
    let Some(mut child) = c.take() else { return };
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "node exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "node ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn t_of(suite: HashSuite, d: u64, w: u64) -> String {
    TimeChain::new(suite, d)
        .window(&montana_backends::ScalarBackend, w, &EvalControl::none())
        .unwrap()
        .to_hex()
}

fn small_plan(dir: &Path, n: usize) -> devnet::Plan {
    devnet::plan(dir, n, HashSuite::Sha256, 400_000, 100, 0.05).unwrap()
}

#[test]
fn four_node_devnet_converges() {
    let dir = tempfile::tempdir().unwrap();
    let work: PathBuf = dir.path().join("net");
    let out = Command::new(BIN)
        .args([
            "devnet",
            "--nodes",
            "4",
            "--windows",
            "4",
            "--window-secs",
            "0.05",
            "--checkpoints",
            "100",
            "--json",
            "--dir",
        ])
        .arg(&work)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "devnet failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a JSON line");
    let v: Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["windows"], 4);
    assert_eq!(v["hash"], "sha256");
    assert_eq!(v["checkpoints"], 100);
    let d = v["d"].as_u64().unwrap();
    assert_eq!(d % 100, 0);
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    let w = nodes[0]["window"].as_u64().unwrap();
    assert!(w >= 4);
    let t = t_of(HashSuite::Sha256, d, w);
    for n in nodes {
        assert_eq!(n["window"].as_u64(), Some(w), "{n}");
        assert_eq!(n["t"].as_str(), Some(t.as_str()), "{n}");
        assert_eq!(n["phase"], "stopped", "{n}");
    }
}

#[test]
fn a_killed_follower_restarts_and_catches_up() {
    const LAST: u64 = 16;
    let dir = tempfile::tempdir().unwrap();
    let plan = small_plan(dir.path(), 3);
    let last = LAST.to_string();
    let mut nodes = Nodes(vec![
        Some(start(&plan, 1, &[], &[])),
        Some(start(&plan, 2, &[], &[])),
        Some(start(&plan, 0, &["--last-window", &last], &[])),
    ]);
    let dirs: Vec<PathBuf> = plan.nodes.iter().map(|n| n.dir.clone()).collect();
    wait_until("window 2 on every node", &plan, 60, || {
        dirs.iter().all(|d| window(d) >= 2)
    });
    // A crash: SIGKILL, no clean shutdown.
    let mut victim = nodes.0[1].take().unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
    let died_at = window(&dirs[2]);
    wait_until("the proposer 4 windows further", &plan, 60, || {
        window(&dirs[0]) >= died_at + 4
    });
    nodes.0[1] = Some(start(&plan, 2, &[], &[]));
    wait_until("every node on the last window", &plan, 90, || {
        dirs.iter().all(|d| window(d) == LAST)
    });
    for c in nodes.0.iter_mut() {
        terminate(c);
    }
    let t = t_of(HashSuite::Sha256, plan.genesis.d, LAST);
    for d in &dirs {
        let s = state(d).unwrap();
        assert_eq!(
            (s.window, s.t.as_str(), s.phase.as_str()),
            (LAST, t.as_str(), "stopped")
        );
        assert_eq!(s.rejected_total(), 0, "{s:?}");
    }
}

/// Needs the fault injector: `--features test-faults` (scripts/test).
#[cfg(feature = "test-faults")]
#[test]
fn every_follower_rejects_forged_and_corrupted_proposals() {
    let dir = tempfile::tempdir().unwrap();
    let plan = small_plan(dir.path(), 4);
    let mut nodes = Nodes(vec![
        Some(start(&plan, 1, &[], &[])),
        Some(start(&plan, 2, &[], &[])),
        Some(start(&plan, 3, &[], &[])),
        Some(start(
            &plan,
            0,
            &["--last-window", "5"],
            &[("MONTANA_TEST_FAULTS", "forge@2,corrupt@4")],
        )),
    ]);
    let dirs: Vec<PathBuf> = plan.nodes.iter().map(|n| n.dir.clone()).collect();
    wait_until("window 5 on every node", &plan, 90, || {
        dirs.iter().all(|d| window(d) == 5)
    });
    for c in nodes.0.iter_mut() {
        terminate(c);
    }
    let t = t_of(HashSuite::Sha256, plan.genesis.d, 5);
    for d in &dirs[1..] {
        let s = state(d).unwrap();
        assert_eq!(s.t, t);
        assert_eq!(s.rejected.get("bad_signature"), Some(&1), "{s:?}");
        assert_eq!(s.rejected.get("bad_checkpoint"), Some(&1), "{s:?}");
        let log = std::fs::read_to_string(d.join("node.log")).unwrap();
        assert!(log.contains("rejected proposal"), "{log}");
    }
}
