//! What a running node reports about itself: one snapshot struct, shared
//! with the status server and written to `DIR/state.json` (atomically, by
//! rename) so that local tools such as `montana devnet` can read every
//! node's window and T without a network round trip.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::transport::PeerSummary;

/// File name of the snapshot inside the data dir.
pub const STATE_FILE: &str = "state.json";

/// A node's state at one moment.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeState {
    pub label: String,
    pub pid: u32,
    /// proposing, following, verifying, catching-up, stopped.
    pub phase: String,
    pub window: u64,
    /// T(window), hex.
    pub t: String,
    /// Windows behind the best window a peer has shown.
    pub lag: u64,
    pub hash: String,
    pub d: u64,
    pub checkpoints: u64,
    pub eval_backend: String,
    pub verify_backend: String,
    /// Hashes per second of the last evaluation (proposer) or verification.
    pub hash_rate: f64,
    /// Share of the last window's duration spent verifying (followers).
    pub verify_share: f64,
    pub rejected: BTreeMap<String, u64>,
    /// Backends refused at run time (a device failure, or a wrong verdict
    /// caught by the scalar oracle or the known-bad sample).
    #[serde(default)]
    pub backend_faults: u64,
    pub connected: usize,
    pub heartbeats_ok_5m: u64,
    pub heartbeat_errors_5m: u64,
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

    /// Writes `dir/state.json` via a temporary file and a rename, so readers
    /// never see half a file.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(".state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).expect("plain data"))?;
        std::fs::rename(&tmp, dir.join(STATE_FILE))
    }

    /// Reads `dir/state.json`, if there is a complete one.
    pub fn read(dir: &Path) -> Option<Self> {
        let b = std::fs::read(dir.join(STATE_FILE)).ok()?;
        serde_json::from_slice(&b).ok()
    }
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
            ..Default::default()
        };
        s.rejected.insert("bad_signature".into(), 2);
        s.write(dir.path()).unwrap();
        assert_eq!(NodeState::read(dir.path()), Some(s.clone()));
        assert_eq!(s.rejected_total(), 2);
    }
}
