//! What a running node reports about itself: one struct, [`NodeState`],
//! that is both `/status` (the status server serves it as JSON) and
//! `DIR/state.json` (written atomically, by rename, so that local tools such
//! as `montana devnet` read every node's window and T without a network
//! round trip). One type, so the two can never disagree on a field.
//!
//! The field names follow `docs/SPEC.md` ("Node state"); the runtime fills
//! everything in `publish()`, on every tick.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::transport::PeerSummary;
use crate::net::{NetTotals, PeerStats};

/// File name of the snapshot inside the data dir.
pub const STATE_FILE: &str = "state.json";

/// How many window lengths without a new window make a node `stalled`.
pub const STALL_WINDOWS: f64 = 3.0;

/// A node's state at one moment.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NodeState {
    pub label: String,
    /// SHA-256 of the node's ML-DSA-65 public key, 64 lowercase hex.
    pub node_id: String,
    /// The host name of the machine the node runs on.
    pub host: String,
    pub pid: u32,
    /// SHA-256 of the genesis' canonical bytes, 64 lowercase hex.
    pub network_id: String,
    /// starting, proposing, done, verifying, catching-up, following, stopped.
    pub phase: String,
    /// none, syncing, candidate, active (genesis peers are `active`).
    pub membership: String,
    /// True for a node that was not in the genesis.
    pub joined: bool,
    /// Members of the active set after the cemented window.
    #[serde(default)]
    pub members: usize,
    /// This node's counted candidate windows (a candidate's progress;
    /// null when it is not a candidate).
    #[serde(default)]
    pub candidate_windows: Option<u32>,
    /// Highest applied window.
    pub window: u64,
    /// Highest window cemented by a quorum (0: no cementing yet).
    pub cemented: u64,
    /// T(window), 64 lowercase hex.
    pub t: String,
    /// The state root after everything up to `cemented` (docs/SPEC.md 9.5),
    /// 64 lowercase hex.
    pub state_root: String,
    /// The agreement round of the window being decided (null when none).
    pub round: Option<u32>,
    /// Seconds from applying the last window to cementing it here (null
    /// before one was both applied and cemented live).
    pub cement_latency_secs: Option<f64>,
    /// The window this node fast-synced from; null if it never did.
    pub snapshot_window: Option<u64>,
    /// This process's fast-sync, once installed (null if it did not sync
    /// since it started).
    pub fast_sync: Option<FastSyncStats>,
    /// Windows behind the best window a peer has shown.
    pub lag: u64,
    /// Seconds since the last window was applied (or since start).
    pub last_applied_secs_ago: f64,
    /// No new window for more than [`STALL_WINDOWS`] window lengths
    /// (never while `done` or `stopped`).
    pub stalled: bool,
    pub uptime_secs: u64,
    pub hash: String,
    pub d: u64,
    pub checkpoints: u64,
    /// Seconds per window in the genesis.
    pub window_secs: f64,
    /// The backends in use now (after any run-time fallback).
    pub eval_backend: String,
    pub verify_backend: String,
    /// Hashes per second of the last evaluation (0 before one).
    pub eval_rate: f64,
    /// Hashes per second of the last verification, all threads (0 before one).
    pub verify_rate: f64,
    /// Share of the last window's duration spent verifying (followers).
    pub verify_share: f64,
    /// Resident memory of the node process, bytes.
    pub rss_bytes: u64,
    /// The most resident memory the process has had since it started
    /// (the kernel's high-water mark), bytes.
    pub peak_rss_bytes: u64,
    /// Rejected proposals and messages, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Backends refused at run time (a device failure, or a wrong verdict
    /// caught by the scalar oracle or the known-bad sample).
    #[serde(default)]
    pub backend_faults: u64,
    /// The drift monitor: each operation's backend against its measured
    /// rate, and the re-rankings it caused (`super::drift`).
    pub drift: super::drift::DriftStatus,
    pub connected: usize,
    pub heartbeats_ok_5m: u64,
    pub heartbeat_errors_5m: u64,
    /// Every genesis peer's connection and heartbeat counters.
    pub peers: Vec<PeerStats>,
    /// The last tip window each peer announced, by peer index.
    pub peer_tips: BTreeMap<u16, u64>,
    /// Transport counters since start.
    pub net: NetTotals,
}

/// What one fast-sync took, from the first request to the swapped-in
/// state (docs/SPEC.md 13.9).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FastSyncStats {
    /// The snapshot's window.
    pub window: u64,
    /// State entries installed.
    pub entries: u64,
    /// Chunks verified (all of the snapshot's, counting those a resumed
    /// sync already held).
    pub chunks: u64,
    /// Chunks fetched by this process (fewer than `chunks` after a resume).
    pub fetched_chunks: u64,
    /// Bytes of the chunk messages this process received.
    pub fetched_bytes: u64,
    /// Seconds from the first request to the installed state.
    pub secs: f64,
}

impl NodeState {
    pub fn set_peers(&mut self, s: &PeerSummary) {
        self.connected = s.connected;
        self.heartbeats_ok_5m = s.heartbeats_ok_5m;
        self.heartbeat_errors_5m = s.heartbeat_errors_5m;
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Sets `last_applied_secs_ago` and `stalled` from the time since the
    /// last applied window.
    pub fn set_since_applied(&mut self, since: Duration) {
        self.last_applied_secs_ago = (since.as_secs_f64() * 10.0).round() / 10.0;
        let idle = matches!(self.phase.as_str(), "done" | "stopped");
        self.stalled = !idle && since.as_secs_f64() > STALL_WINDOWS * self.window_secs;
    }

    /// The phase as a person reads it: `following (stalled 12 s)`.
    pub fn phase_shown(&self) -> String {
        if self.stalled {
            format!(
                "{} (stalled {:.0} s)",
                self.phase, self.last_applied_secs_ago
            )
        } else {
            self.phase.clone()
        }
    }

    /// The state without the figures that change on every tick (timers,
    /// memory, rates, heartbeat counts): when this differs from the last
    /// one written, `state.json` is rewritten at once.
    pub fn stable_view(&self) -> NodeState {
        NodeState {
            last_applied_secs_ago: 0.0,
            uptime_secs: 0,
            rss_bytes: 0,
            peak_rss_bytes: 0,
            heartbeats_ok_5m: 0,
            heartbeat_errors_5m: 0,
            peers: Vec::new(),
            peer_tips: BTreeMap::new(),
            net: NetTotals::default(),
            ..self.clone()
        }
    }

    /// Writes `dir/state.json` via a temporary file and a rename, so readers
    /// never see half a file.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(".state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).expect("plain data"))?;
        std::fs::rename(&tmp, dir.join(STATE_FILE))
    }

    /// At start: a `dir/state.json` that is not a valid snapshot is moved
    /// to `state.json.corrupt` (kept for the operator) and the node writes a
    /// new one from its database, the source of truth (the file only
    /// mirrors `/status`). Returns the line to log when it did so.
    pub fn set_aside_if_corrupt(dir: &Path) -> Option<String> {
        let path = dir.join(STATE_FILE);
        let bytes = std::fs::read(&path).ok()?;
        let e = serde_json::from_slice::<NodeState>(&bytes).err()?;
        let aside = dir.join(format!("{STATE_FILE}.corrupt"));
        let kept = match std::fs::rename(&path, &aside) {
            Ok(()) => format!("kept as {}", aside.display()),
            Err(r) => format!("could not keep it as {}: {r}", aside.display()),
        };
        Some(format!(
            "{} is not a valid state snapshot ({e}); {kept}; rewritten from the database",
            path.display()
        ))
    }

    /// Reads `dir/state.json`, if there is a complete one.
    pub fn read(dir: &Path) -> Option<Self> {
        let b = std::fs::read(dir.join(STATE_FILE)).ok()?;
        serde_json::from_slice(&b).ok()
    }
}

/// Resident memory of this process in bytes (`/proc/self/statm`; 0 where
/// there is no procfs).
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// The resident-memory high-water mark of this process in bytes (`VmHWM`
/// in `/proc/self/status`; 0 where there is no procfs).
pub fn peak_rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// This machine's host name (empty if it cannot be read).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(NodeState::read(dir.path()).is_none());
        let mut s = NodeState {
            label: "a".into(),
            window: 3,
            snapshot_window: Some(2),
            ..Default::default()
        };
        s.rejected.insert("bad_signature".into(), 2);
        s.write(dir.path()).unwrap();
        assert_eq!(NodeState::read(dir.path()), Some(s.clone()));
        assert_eq!(s.rejected_total(), 2);
    }

    #[test]
    fn contract_fields_are_always_present() {
        let v = serde_json::to_value(NodeState::default()).unwrap();
        for k in [
            "label",
            "node_id",
            "phase",
            "membership",
            "joined",
            "window",
            "cemented",
            "t",
            "state_root",
            "snapshot_window",
            "lag",
            "rss_bytes",
            "peak_rss_bytes",
            "fast_sync",
            "verify_share",
            "eval_backend",
            "verify_backend",
            "eval_rate",
            "verify_rate",
            "uptime_secs",
            "network_id",
            "rejected",
            "host",
            "last_applied_secs_ago",
            "stalled",
        ] {
            assert!(v.get(k).is_some(), "{k} missing from {v}");
        }
        assert!(v["snapshot_window"].is_null());
        assert!(v["fast_sync"].is_null());
    }

    #[test]
    fn a_stall_is_three_window_lengths_without_a_window() {
        let mut s = NodeState {
            phase: "following".into(),
            window_secs: 2.0,
            ..Default::default()
        };
        s.set_since_applied(Duration::from_secs(6));
        assert!(!s.stalled);
        assert_eq!(s.phase_shown(), "following");
        s.set_since_applied(Duration::from_millis(6_100));
        assert!(s.stalled);
        assert_eq!(s.last_applied_secs_ago, 6.1);
        assert_eq!(s.phase_shown(), "following (stalled 6 s)");
        // A proposer past its last window, or a stopped node, is idle.
        s.phase = "done".into();
        s.set_since_applied(Duration::from_secs(60));
        assert!(!s.stalled);
    }

    #[test]
    fn process_figures_are_read() {
        assert!(rss_bytes() > 1 << 20, "{}", rss_bytes());
        let now = rss_bytes();
        assert!(peak_rss_bytes() >= now, "{} < {now}", peak_rss_bytes());
        assert!(!host_name().is_empty());
    }
}
