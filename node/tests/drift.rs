//! The drift monitor in a running node: a follower whose verify backend
//! slows down (the `slow-verify` test fault: a throttled CPU, a noisy
//! neighbour) notices it, shows it in `/status` and `/metrics`, logs it
//! once, and re-ranks to the next backend when one is measured faster than
//! what the slow one now delivers; when none is, it keeps the backend and
//! keeps saying it drifts, without repeating the log line.
//!
//! The reference rates come from a host rate cache written by the test
//! (`XDG_CACHE_HOME`), as `montana bench` would have left it.
//! Needs the fault injector: `--features test-faults`.
#![cfg(feature = "test-faults")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use montana_backends::registry::compiled;
use montana_backends::{Rate, Registry};
use montana_node::devnet;
use montana_vdf::{BackendKind, HashSuite, Operation};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_montana");

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The two best CPU verifiers of this host (None if it has fewer).
fn two_verifiers() -> Option<(&'static str, &'static str, Vec<&'static str>)> {
    let all: Vec<&'static str> = Registry::new(compiled())
        .ranked(HashSuite::Sha256, Operation::Verify)
        .iter()
        .filter(|b| b.kind() != BackendKind::Gpu)
        .map(|b| b.name())
        .collect();
    match all[..] {
        [a, b, ..] => Some((a, b, all.clone())),
        _ => None,
    }
}

/// Writes the host rate cache under `cache` (XDG_CACHE_HOME): `a` measured
/// far faster than any real call (so every slowed call is a drift), `b` at
/// `b_rate`, every other verifier at 1 step/s.
fn write_cache(cache: &Path, a: &str, b: &str, b_rate: f64, all: &[&str]) {
    let key = montana_calibration::rates::host_key(montana_calibration::PROGRAM_VERSION);
    let path = cache
        .join("montana")
        .join(montana_calibration::rates::file_name(&key));
    let rates: Vec<Rate> = all
        .iter()
        .map(|n| Rate {
            backend: n.to_string(),
            suite: HashSuite::Sha256,
            op: Operation::Verify,
            threads: 1,
            hashes_per_sec: if *n == a {
                1e11
            } else if *n == b {
                b_rate
            } else {
                1.0
            },
        })
        .collect();
    montana_calibration::rates::save(&path, &key, &rates).unwrap();
}

fn start(plan: &devnet::Plan, i: usize, cache: &Path, faults: &str) -> Child {
    let n = &plan.nodes[i];
    let log = std::fs::File::create(n.dir.join("node.log")).unwrap();
    Command::new(BIN)
        .arg("start")
        .arg("--data-dir")
        .arg(&n.dir)
        .arg("--genesis")
        .arg(&plan.genesis_path)
        .arg("--skip-calibration")
        .env("XDG_CACHE_HOME", cache)
        .env("MONTANA_TEST_FAULTS", faults)
        .env("MONTANA_LOG", "info")
        .env_remove("MONTANA_BACKEND")
        .env_remove("MONTANA_DISABLE_BACKENDS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn status(dir: &Path, path: &str) -> Option<String> {
    let addr = std::fs::read_to_string(dir.join(montana_node::status::STATUS_ADDR_FILE)).ok()?;
    montana_node::status::get(addr.trim().parse().ok()?, path, Duration::from_secs(5)).ok()
}

fn status_json(dir: &Path) -> Value {
    status(dir, "/status")
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or(Value::Null)
}

fn wait_for(dir: &Path, what: &str, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = status_json(dir);
        if f(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} in {secs} s: {v}\n{}",
            std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A 2-node network whose nodes verify slowly from their 3rd verification
/// on (the one that follows verifies; the one that proposes the first
/// window keeps proposing); returns the processes and the plan.
fn network(dir: &Path, b_rate: f64) -> Option<(Procs, devnet::Plan, &'static str, &'static str)> {
    let Some((a, b, all)) = two_verifiers() else {
        eprintln!("fewer than two CPU verifiers on this host; nothing to check");
        return None;
    };
    let cache = dir.join("cache");
    write_cache(&cache, a, b, b_rate, &all);
    // No round changes (a 10 s proposer timeout): on a loaded host a
    // backup took over a slowed proposer's round, the follower became the
    // proposer, stopped verifying, and its drift watch never left warming.
    let plan = devnet::plan(&dir.join("net"), 2, HashSuite::Sha256, 400_000, 100, 0.05)
        .unwrap()
        .with_proposer_timeout(10.0)
        .unwrap();
    let procs = Procs(vec![
        start(&plan, 1, &cache, "slow-verify@3"),
        start(&plan, 0, &cache, "slow-verify@3"),
    ]);
    Some((procs, plan, a, b))
}

/// The data dir of the node that verifies (it has a verify rate).
fn follower(plan: &devnet::Plan) -> std::path::PathBuf {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for n in &plan.nodes {
            let v = status_json(&n.dir);
            if v["verify_rate"].as_f64() > Some(0.0) {
                return n.dir.clone();
            }
        }
        assert!(Instant::now() < deadline, "no node verifies");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn drifts(v: &Value) -> u64 {
    v["drift"]["verify"]["drifts"].as_u64().unwrap_or(0)
}

#[test]
fn a_slowed_verifier_is_noticed_and_re_ranked() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_procs, plan, a, b)) = network(dir.path(), 1e10) else {
        return;
    };
    let node = &follower(&plan);
    let before = status_json(node);
    assert_eq!(before["verify_backend"], a, "{before}");
    assert_eq!(before["drift"]["verify"]["backend"], a, "{before}");
    assert_eq!(before["drift"]["verify"]["reference"], 1e11, "{before}");
    assert_eq!(before["drift"]["eval"]["state"], "unwatched", "{before}");
    let v = wait_for(node, "a re-ranking", 90, |v| {
        v["drift"]["rerankings"].as_u64() >= Some(1)
    });
    assert_eq!(
        (drifts(&v), &v["drift"]["rerankings"]),
        (1, &Value::from(1)),
        "{v}"
    );
    assert_eq!(v["verify_backend"], b, "{v}");
    assert_eq!(v["drift"]["verify"]["backend"], b, "{v}");
    assert_eq!(v["drift"]["verify"]["reference"], 1e10, "{v}");
    // The node goes on with the other backend. (On a loaded host even the
    // other backend may later fall below its measured rate: the counts
    // below may grow, but the first re-ranking went to `b`, and the drift
    // line is rate-limited to one a minute.)
    let w = v["window"].as_u64().unwrap();
    wait_for(node, "progress after the re-ranking", 60, |v| {
        v["window"].as_u64() >= Some(w + 3)
    });
    let log = std::fs::read_to_string(node.join("node.log")).unwrap();
    assert_eq!(log.matches("slower than measured").count(), 1, "{log}");
    let first = log
        .lines()
        .find(|l| l.contains("re-ranked: verify moves to"));
    assert!(
        first.is_some_and(|l| l.contains(&format!("re-ranked: verify moves to {b} "))),
        "{log}"
    );
    let metrics = status(node, "/metrics").unwrap();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert!(
        value(r#"montana_drifts_total{op="verify"}"#) >= 1,
        "{metrics}"
    );
    assert!(value("montana_backend_rerankings_total") >= 1, "{metrics}");
    assert_eq!(value(r#"montana_drifts_total{op="eval"}"#), 0, "{metrics}");
}

#[test]
fn with_nothing_faster_the_node_keeps_its_backend_and_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    // The second verifier measured at 1 step/s: slower than the slowed one.
    let Some((_procs, plan, a, _)) = network(dir.path(), 1.0) else {
        return;
    };
    let node = &follower(&plan);
    let v = wait_for(node, "drift", 90, |v| {
        v["drift"]["verify"]["state"] == "drifting"
    });
    let w = v["window"].as_u64().unwrap();
    // Many more slowed windows: still drifting, still one episode.
    let v = wait_for(node, "10 more windows", 90, |v| {
        v["window"].as_u64() >= Some(w + 10)
    });
    assert_eq!(v["drift"]["verify"]["state"], "drifting", "{v}");
    assert_eq!(
        (drifts(&v), &v["drift"]["rerankings"]),
        (1, &Value::from(0)),
        "{v}"
    );
    assert_eq!(v["verify_backend"], a, "{v}");
    let live = v["drift"]["verify"]["live"].as_f64().unwrap();
    assert!(live > 0.0 && live < 0.7e11, "{v}");
    let log = std::fs::read_to_string(node.join("node.log")).unwrap();
    assert_eq!(log.matches("slower than measured").count(), 1, "{log}");
    assert!(
        log.contains("no backend ranks above it now, keeping it"),
        "{log}"
    );
    let metrics = status(node, "/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"montana_drifting{op="verify"} 1"#),
        "{metrics}"
    );
}
