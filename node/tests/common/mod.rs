//! Harness shared by the fault tests (faults_crash.rs, faults_partition.rs,
//! faults_peers.rs): `montana start` processes on loopback, killed on drop;
//! reading their state (`state.json`, `/status`) as JSON so fields added
//! later (`state_root`, `cemented`) are compared when present; the final
//! convergence check; the per-node log's record of applied windows; and a
//! TCP proxy (tokio, loopback) that can cut, throttle or stop reading a
//! connection.
//!
//! Each test binary includes this with `mod common;` and uses what it needs.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use montana_node::devnet;
use montana_vdf::HashSuite;
use serde_json::Value;

pub mod proxy;

pub const BIN: &str = env!("CARGO_BIN_EXE_montana");

/// A plan for `n` nodes with small windows (D = 400,000, K = 100): the
/// parameters of node/tests/devnet.rs, a window in tens of milliseconds.
pub fn small_plan(dir: &Path, n: usize) -> devnet::Plan {
    devnet::plan(dir, n, HashSuite::Sha256, 400_000, 100, 0.05).unwrap()
}

/// A loopback address nobody listens on now (port 0 bound and released).
pub fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// `DIR/state.json` as JSON (None while absent or half-written).
pub fn state(dir: &Path) -> Option<Value> {
    let b = std::fs::read(dir.join("state.json")).ok()?;
    serde_json::from_slice(&b).ok()
}

/// The node's `/status` (through `DIR/status.addr`), None if unreachable.
pub fn status(dir: &Path) -> Option<Value> {
    let addr = std::fs::read_to_string(dir.join(montana_node::status::STATUS_ADDR_FILE)).ok()?;
    let addr = addr.trim().parse().ok()?;
    let body = montana_node::status::get(addr, "/status", Duration::from_secs(5)).ok()?;
    serde_json::from_str(&body).ok()
}

pub fn u64_field(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

/// The genesis nodes of a plan as processes: node `i` runs in
/// `plan.nodes[i].dir` with its own keys and `args[i]` on every start; its
/// stderr is appended to `DIR/node.log`. Every child is killed on drop.
pub struct Cluster {
    pub plan: devnet::Plan,
    pub procs: Vec<Option<Child>>,
    pub args: Vec<Vec<String>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.procs.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Cluster {
    pub fn new(plan: devnet::Plan) -> Cluster {
        let n = plan.nodes.len();
        Cluster {
            plan,
            procs: (0..n).map(|_| None).collect(),
            args: vec![Vec::new(); n],
        }
    }

    pub fn dir(&self, i: usize) -> &Path {
        &self.plan.nodes[i].dir
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir(i).join("node.log")).unwrap_or_default()
    }

    /// Starts node `i` with its standing args and `extra`.
    pub fn start(&mut self, i: usize, extra: &[&str]) {
        assert!(self.procs[i].is_none(), "node{i} already running");
        let n = &self.plan.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.dir.join("node.log"))
            .unwrap();
        let child = Command::new(BIN)
            .arg("start")
            .arg("--data-dir")
            .arg(&n.dir)
            .arg("--genesis")
            .arg(&self.plan.genesis_path)
            .arg("--skip-calibration")
            .args(&self.args[i])
            .args(extra)
            .env(
                "MONTANA_LOG",
                std::env::var("MONTANA_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn montana start");
        self.procs[i] = Some(child);
    }

    /// SIGKILL (a crash: no clean shutdown) and reap.
    pub fn kill(&mut self, i: usize) {
        let mut c = self.procs[i].take().expect("running");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// SIGTERM and wait (30 s) for a successful exit.
    pub fn terminate(&mut self, i: usize) {
        let Some(mut child) = self.procs[i].take() else {
            return;
        };
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "node{i} exited with {status}");
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("node{i} ignored SIGTERM for 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fails (with the node's log) if node `i` has exited.
    pub fn assert_running(&mut self, i: usize) {
        let exited = self.procs[i]
            .as_mut()
            .map(|c| c.try_wait().unwrap())
            .unwrap_or(None);
        if let Some(status) = exited {
            panic!("node{i} exited with {status}:\n{}", tail(&self.log(i), 30));
        }
    }

    pub fn state(&self, i: usize) -> Option<Value> {
        state(self.dir(i))
    }

    pub fn window(&self, i: usize) -> u64 {
        self.state(i).map_or(0, |s| u64_field(&s, "window"))
    }

    /// Polls `f` every 50 ms for `secs`, failing with every node's state
    /// and log tail; also fails as soon as a started node has exited.
    pub fn wait_until(&mut self, what: &str, secs: u64, mut f: impl FnMut(&Cluster) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if f(self) {
                return;
            }
            for i in 0..self.procs.len() {
                if self.procs[i].is_some() {
                    self.assert_running(i);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out ({secs} s) waiting for {what}\n{}", self.report());
    }

    /// Every node's state and log tail, for failure messages.
    pub fn report(&self) -> String {
        (0..self.plan.nodes.len())
            .map(|i| {
                format!(
                    "node{i}: {}\n{}",
                    self.state(i).map_or("no state".into(), |s| s.to_string()),
                    tail(&self.log(i), 10)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The end of a fault test: every node of `nodes` stopped cleanly and
    /// started again with `--last-window W` (W a few windows past the
    /// highest window once all are stopped, every node since the consensus issue may
    /// propose), waited for until each reports window W (and cemented W,
    /// once the node cements: when `cemented` is non-zero anywhere), then
    /// stopped. Returns the agreed state; fails unless every node reports
    /// the same window, T and state root (when the field exists).
    pub fn converge(&mut self, nodes: &[usize], secs: u64) -> Converged {
        for &i in nodes {
            self.terminate(i);
        }
        // The highest window once all are stopped: read before, the nodes
        // still running while the first ones stop cement windows past it,
        // and a node already past `--last-window` never reports it.
        let top = nodes.iter().map(|&i| self.window(i)).max().unwrap_or(0);
        let last = top + 3;
        let arg = last.to_string();
        for &i in nodes {
            self.start(i, &["--last-window", &arg]);
        }
        self.wait_until(&format!("window {last} on every node"), secs, |c| {
            let states: Vec<Option<Value>> = nodes.iter().map(|&i| c.state(i)).collect();
            let cementing = states
                .iter()
                .flatten()
                .any(|s| u64_field(s, "cemented") > 0);
            states.iter().all(|s| {
                s.as_ref().is_some_and(|s| {
                    u64_field(s, "window") == last
                        && (!cementing || u64_field(s, "cemented") == last)
                })
            })
        });
        for &i in nodes {
            self.terminate(i);
        }
        let states: Vec<Value> = nodes.iter().map(|&i| self.state(i).unwrap()).collect();
        let first = &states[0];
        for (s, &i) in states.iter().zip(nodes) {
            for k in ["window", "t", "state_root", "cemented"] {
                assert_eq!(
                    s.get(k),
                    first.get(k),
                    "node{i} disagrees with node{} on {k}:\n{s}\n{first}",
                    nodes[0]
                );
            }
            assert_eq!(s["phase"], "stopped", "node{i}: {s}");
        }
        Converged {
            window: last,
            t: first["t"].as_str().unwrap().to_string(),
            state_root: first
                .get("state_root")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        }
    }
}

impl Cluster {
    /// After [`Cluster::converge`] (node `i` stopped): its stored chain is
    /// the TimeChain up to the agreed window (every window present, every
    /// segment verified with the scalar oracle, T as agreed).
    pub fn check_timechain(&self, i: usize, end: &Converged) {
        let t0 = Instant::now();
        devnet::check_timechain(
            &self.plan.genesis,
            self.dir(i),
            end.window,
            &end.t,
            &|_| {},
            &std::sync::atomic::AtomicBool::new(false),
        )
        .unwrap_or_else(|e| panic!("node{i}'s chain is not the TimeChain: {e:?}"));
        println!(
            "node{i}: windows 1..={} are the TimeChain (checked in {:.1} s)",
            end.window,
            t0.elapsed().as_secs_f64()
        );
    }
}

/// What every node agreed on at the end.
#[derive(Debug)]
pub struct Converged {
    pub window: u64,
    pub t: String,
    pub state_root: Option<String>,
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The number after `window=` in a log line.
fn window_in(line: &str) -> Option<u64> {
    line.split("window=")
        .nth(1)?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// One node's log across restarts, checked: each start (`node running
/// ... window=W`) resumes at or past the last window it logged as
/// cemented (a window never goes backwards: nothing cemented lost), and
/// each cemented window (`cemented window window=N`, written in one
/// atomic batch with its state) is the one after the last (in order, none
/// twice). A kill between the database's synced batch and the
/// log line can hide windows from the log, never the other way round.
/// Returns (starts, windows applied).
pub fn check_applied_log(log: &str) -> Result<(usize, usize), String> {
    let mut last: Option<u64> = None; // the window the node is on
    let mut logged_applied: Option<u64> = None;
    let (mut starts, mut applied) = (0, 0);
    for (n, line) in log.lines().enumerate() {
        if line.contains("node running") {
            let w = window_in(line).ok_or(format!("line {n}: no window: {line}"))?;
            if let Some(a) = logged_applied {
                if w < a {
                    return Err(format!(
                        "line {n}: restarted at window {w} after applying {a}: {line}"
                    ));
                }
            }
            starts += 1;
            last = Some(w);
        } else if line.contains("cemented window") {
            let w = window_in(line).ok_or(format!("line {n}: no window: {line}"))?;
            let expected = last.map_or(1, |l| l + 1);
            if w != expected {
                return Err(format!(
                    "line {n}: applied window {w}, expected {expected}: {line}"
                ));
            }
            applied += 1;
            last = Some(w);
            logged_applied = Some(w);
        }
    }
    Ok((starts, applied))
}

/// A small seeded generator (xorshift64*), so a run can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The seed from `var` if set, else from the clock; printed either way.
    pub fn from_env(var: &str) -> Rng {
        let seed = match std::env::var(var) {
            Ok(s) => s
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{var}={s}: not a u64")),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        };
        println!("seed: {var}={seed} (set it to replay this run)");
        Rng::new(seed)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi` (hi > lo).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// The directory a plan lives in, made by the test.
/// A temporary directory for one test, removed afterwards unless
/// `MONTANA_KEEP_TEST_DIRS` is set (then its path is printed, to read the
/// node logs of a failed run).
pub fn tempdir() -> tempfile::TempDir {
    let mut b = tempfile::Builder::new();
    if std::env::var_os("MONTANA_KEEP_TEST_DIRS").is_some() {
        b.disable_cleanup(true);
    }
    let d = b.tempdir().unwrap();
    if std::env::var_os("MONTANA_KEEP_TEST_DIRS").is_some() {
        eprintln!("test dir kept: {}", d.path().display());
    }
    d
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
