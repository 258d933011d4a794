//! Relay at scale (issue 10): 32 genesis nodes on loopback with at most 6
//! member connections each. In a test binary of its own so that it never
//! runs beside other devnets (32 processes and 32 ports at once).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_montana");

/// Seconds since midnight of a log line's timestamp (`...THH:MM:SS.ffffffZ`).
fn log_secs(line: &str) -> f64 {
    let t = &line[line.find('T').unwrap() + 1..line.find('Z').unwrap()];
    let p: Vec<f64> = t.split(':').map(|x| x.parse().unwrap()).collect();
    p[0] * 3600.0 + p[1] * 60.0 + p[2]
}

/// Issue 10: 32 genesis nodes with at most 6 member connections each (D =
/// 100,000, K = 100, `--min-window-secs 2`): no node hears most members
/// directly, so every window's quorum (22 of 32) is reached only through
/// relay; all converge on one root, and windows are paced 2 s apart.
#[test]
fn thirty_two_nodes_with_six_connections_each_converge_through_relay() {
    let dir = tempfile::tempdir().unwrap();
    let work: PathBuf = dir.path().join("net");
    let out = Command::new(BIN)
        .args([
            "devnet",
            "--joiners",
            "0",
            "--checkpoints",
            "100",
            "--json",
            "--nodes",
            "32",
            "--max-peers",
            "6",
            "--d",
            "100000",
            "--min-window-secs",
            "2",
            "--windows",
            "4",
            "--dir",
        ])
        .arg(&work)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // The failing node's log tail, before the temp dir goes.
        let tail = stderr
            .split("; see ")
            .nth(1)
            .and_then(|p| std::fs::read_to_string(p.trim()).ok())
            .map(|l| l.lines().rev().take(20).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        panic!("devnet failed: {stderr}\n{tail}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["converged"], true, "{v}");
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 32);
    for n in nodes {
        assert_eq!(n["cemented"].as_u64(), Some(4), "{n}");
        assert_eq!(n["state_root"], nodes[0]["state_root"], "{n}");
    }
    for i in 0..32 {
        let s: Value = serde_json::from_str(
            &std::fs::read_to_string(work.join(format!("node{i}")).join("state.json")).unwrap(),
        )
        .unwrap();
        assert!(
            s["connected"].as_u64().unwrap() <= 6,
            "node{i}: {}",
            s["connected"]
        );
    }
    let log = std::fs::read_to_string(work.join("node0").join("node.log")).unwrap();
    let at: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("cemented window window="))
        .map(log_secs)
        .collect();
    assert_eq!(at.len(), 4, "{log}");
    for w in at.windows(2) {
        let apart = (w[1] - w[0]).rem_euclid(86_400.0); // across midnight
        assert!(apart >= 1.9, "windows {apart:.2} s apart");
    }
}
