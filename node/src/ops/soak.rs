//! The soak watchdog (`montana soak`): polls nodes' `/status` and appends
//! one JSON line per poll, covering every node, to a file.
//!
//! - A node that does not answer is recorded as unreachable (with the error
//!   and its last known label), never skipped.
//! - The file grows boundedly: when the next line would take it past
//!   `max_bytes`, it is renamed to `FILE.1` (replacing an older one) and a
//!   new `FILE` begins, so the two never hold more than twice `max_bytes`.
//!   `montana report` reads `FILE.1` then `FILE`.
//! - Restartable: the file is opened for appending, never truncated.
//! - Stops at the end of `duration`, or as soon as `stop` is set (the CLI
//!   sets it on SIGINT/SIGTERM), between two polls or while waiting.
//!
//! The nodes are polled in parallel, each with a timeout, so one hung node
//! does not delay the others' records.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::status::{self, StatusSnapshot};

/// Default size at which the soak file is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Longest wait for one node's answer.
pub const MAX_POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// One node in one poll.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NodeRecord {
    /// The status address polled.
    pub addr: String,
    pub reachable: bool,
    /// Why the node did not answer (unreachable only).
    pub error: Option<String>,
    /// The node's label (the last one seen at this address if unreachable).
    pub label: String,
    pub host: String,
    pub phase: String,
    pub membership: String,
    pub window: u64,
    pub cemented: u64,
    /// T(window), hex: two nodes on one window with two T's have forked.
    pub t: String,
    pub lag: u64,
    pub stalled: bool,
    pub last_applied_secs_ago: f64,
    pub d: u64,
    pub window_secs: f64,
    /// Sums over the node's peers, last 5 minutes.
    pub heartbeats_ok_5m: u64,
    pub heartbeat_errors_5m: u64,
    pub closed_5m: u64,
    pub connected: usize,
    pub eval_backend: String,
    pub verify_backend: String,
    pub eval_rate: f64,
    pub verify_rate: f64,
    pub verify_share: f64,
    pub rss_bytes: u64,
    pub uptime_secs: u64,
    /// Rejected proposals and messages since the node started.
    pub rejected: u64,
}

impl NodeRecord {
    /// The record of a node that answered.
    pub fn from_status(addr: &str, s: &StatusSnapshot) -> Self {
        NodeRecord {
            addr: addr.to_string(),
            reachable: true,
            error: None,
            label: s.label.clone(),
            host: s.host.clone(),
            phase: s.phase.clone(),
            membership: s.membership.clone(),
            window: s.window,
            cemented: s.cemented,
            t: s.t.clone(),
            lag: s.lag,
            stalled: s.stalled,
            last_applied_secs_ago: s.last_applied_secs_ago,
            d: s.d,
            window_secs: s.window_secs,
            heartbeats_ok_5m: s.peers.iter().map(|p| p.heartbeats_ok_5m).sum(),
            heartbeat_errors_5m: s.peers.iter().map(|p| p.heartbeat_errors_5m).sum(),
            closed_5m: s.peers.iter().map(|p| p.closed_5m).sum(),
            connected: s.peers.iter().filter(|p| p.connected).count(),
            eval_backend: s.eval_backend.clone(),
            verify_backend: s.verify_backend.clone(),
            eval_rate: s.eval_rate,
            verify_rate: s.verify_rate,
            verify_share: s.verify_share,
            rss_bytes: s.rss_bytes,
            uptime_secs: s.uptime_secs,
            rejected: s.rejected_total(),
        }
    }

    /// The record of a node that did not answer.
    pub fn unreachable(addr: &str, label: &str, error: impl ToString) -> Self {
        NodeRecord {
            addr: addr.to_string(),
            reachable: false,
            error: Some(error.to_string()),
            label: label.to_string(),
            phase: "unreachable".into(),
            ..Default::default()
        }
    }
}

/// One line of the soak file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SoakRecord {
    /// Seconds since the Unix epoch when the poll started.
    pub time: f64,
    /// Polls made by this soak run so far (1 for its first).
    pub poll: u64,
    pub nodes: Vec<NodeRecord>,
}

/// Soak failures; one line each.
#[derive(Debug, Error)]
pub enum SoakError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: not a soak record: {why}")]
    BadLine {
        path: String,
        line: usize,
        why: String,
    },
    #[error("{0}")]
    Config(String),
}

/// What `montana soak` was given.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    pub targets: Vec<SocketAddr>,
    pub interval: Duration,
    pub out: PathBuf,
    /// Stop after this long (None: until stopped).
    pub duration: Option<Duration>,
    pub max_bytes: u64,
}

impl SoakConfig {
    pub fn check(&self) -> Result<(), SoakError> {
        if self.targets.is_empty() {
            return Err(SoakError::Config("give at least one --status ADDR".into()));
        }
        if self.interval.is_zero() {
            return Err(SoakError::Config("--interval must be above 0".into()));
        }
        if self.max_bytes < 4096 {
            return Err(SoakError::Config(
                "--max-bytes must be at least 4096".into(),
            ));
        }
        Ok(())
    }
}

/// The soak file: appends lines, rotating to `FILE.1` at the size cap.
pub struct SoakWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
}

/// `FILE.1`: where a rotated soak file goes.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

impl SoakWriter {
    /// Opens `path` for appending (creating it); fails early on a path that
    /// cannot be written.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, SoakError> {
        let wrap = |source| SoakError::Write {
            path: path.display().to_string(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(wrap)?;
        let size = file.metadata().map_err(wrap)?.len();
        Ok(SoakWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
        })
    }

    /// Appends one record as one line (rotating first when it would not fit).
    pub fn append(&mut self, record: &SoakRecord) -> Result<(), SoakError> {
        let wrap = |source| SoakError::Write {
            path: self.path.display().to_string(),
            source,
        };
        let mut line = serde_json::to_vec(record).expect("plain data");
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            std::fs::rename(&self.path, rotated_path(&self.path)).map_err(wrap)?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(wrap)?;
            self.size = 0;
        }
        self.file.write_all(&line).map_err(wrap)?;
        self.file.flush().map_err(wrap)?;
        self.size += line.len() as u64;
        Ok(())
    }
}

/// Reads a soak file (and its rotated half `FILE.1` first, when present).
/// A torn last line (the soak killed mid-write) is skipped; any other bad
/// line is an error naming it.
pub fn read_records(path: &Path) -> Result<Vec<SoakRecord>, SoakError> {
    let mut out = Vec::new();
    let rotated = rotated_path(path);
    let mut files = Vec::new();
    if rotated.exists() {
        files.push(rotated);
    }
    files.push(path.to_path_buf());
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|source| SoakError::Read {
            path: f.display().to_string(),
            source,
        })?;
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<SoakRecord>(l) {
                Ok(r) => out.push(r),
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
                Err(e) => {
                    return Err(SoakError::BadLine {
                        path: f.display().to_string(),
                        line: i + 1,
                        why: e.to_string(),
                    })
                }
            }
        }
    }
    Ok(out)
}

/// The last complete record of a soak file, if any (reads only its tail).
pub fn last_record(path: &Path) -> Option<SoakRecord> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 1 << 20;
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut buf = Vec::new();
    f.take(TAIL).read_to_end(&mut buf).ok()?;
    String::from_utf8_lossy(&buf)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
}

/// Polls every target once, in parallel; `labels` holds the last label seen
/// per target and is updated.
pub fn poll_once(
    targets: &[SocketAddr],
    timeout: Duration,
    labels: &mut [String],
    poll: u64,
) -> SoakRecord {
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let answers: Vec<Result<StatusSnapshot, status::StatusError>> = std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|a| s.spawn(move || status::fetch(*a, timeout)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a status fetch does not panic"))
            .collect()
    });
    let nodes = targets
        .iter()
        .zip(answers)
        .zip(labels.iter_mut())
        .map(|((addr, answer), label)| {
            let addr = addr.to_string();
            match answer {
                Ok(s) => {
                    label.clone_from(&s.label);
                    NodeRecord::from_status(&addr, &s)
                }
                Err(e) => NodeRecord::unreachable(&addr, label, e),
            }
        })
        .collect();
    SoakRecord { time, poll, nodes }
}

/// Runs the soak until `duration` ends or `stop` is set; calls `progress`
/// after each poll. Returns the number of polls made.
pub fn run(
    cfg: &SoakConfig,
    stop: &AtomicBool,
    mut progress: impl FnMut(&SoakRecord),
) -> Result<u64, SoakError> {
    cfg.check()?;
    let mut writer = SoakWriter::open(&cfg.out, cfg.max_bytes)?;
    let timeout = cfg.interval.min(MAX_POLL_TIMEOUT);
    // A restarted soak knows the labels of nodes that are down now.
    let known = last_record(&cfg.out);
    let mut labels: Vec<String> = cfg
        .targets
        .iter()
        .map(|t| {
            let addr = t.to_string();
            known
                .iter()
                .flat_map(|r| &r.nodes)
                .find(|n| n.addr == addr)
                .map(|n| n.label.clone())
                .unwrap_or_default()
        })
        .collect();
    let started = Instant::now();
    let end = cfg.duration.map(|d| started + d);
    let mut polls = 0;
    let mut next = started;
    loop {
        if stop.load(Ordering::Relaxed) || end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        polls += 1;
        let record = poll_once(&cfg.targets, timeout, &mut labels, polls);
        writer.append(&record)?;
        progress(&record);
        next += cfg.interval;
        // Wait for the next poll in short steps, so a signal stops us at once.
        loop {
            let now = Instant::now();
            if stop.load(Ordering::Relaxed) || end.is_some_and(|e| now >= e) || now >= next {
                break;
            }
            std::thread::sleep((next - now).min(Duration::from_millis(100)));
        }
        // A poll that took longer than the interval does not cause a burst.
        next = next.max(Instant::now());
    }
    Ok(polls)
}

/// One line for a person: `poll 12: n0 w 40 lag 0, n1 unreachable`.
pub fn progress_line(r: &SoakRecord) -> String {
    let nodes: Vec<String> = r
        .nodes
        .iter()
        .map(|n| {
            let name = if n.label.is_empty() {
                &n.addr
            } else {
                &n.label
            };
            if n.reachable {
                let stall = if n.stalled { " STALLED" } else { "" };
                format!("{name} w {} lag {}{stall}", n.window, n.lag)
            } else {
                format!("{name} unreachable")
            }
        })
        .collect();
    format!("poll {}: {}", r.poll, nodes.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(poll: u64) -> SoakRecord {
        SoakRecord {
            time: 1.0e9 + poll as f64,
            poll,
            nodes: vec![
                NodeRecord {
                    addr: "127.0.0.1:1".into(),
                    reachable: true,
                    label: "n0".into(),
                    window: poll,
                    ..Default::default()
                },
                NodeRecord::unreachable("127.0.0.1:2", "n1", "connection refused"),
            ],
        }
    }

    #[test]
    fn appends_across_restarts_and_rotates_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("soak.jsonl");
        let line = serde_json::to_vec(&record(1)).unwrap().len() as u64 + 1;
        let cap = line * 3 + line / 2; // three lines fit, the fourth rotates
        {
            let mut w = SoakWriter::open(&path, cap).unwrap();
            w.append(&record(1)).unwrap();
            w.append(&record(2)).unwrap();
        }
        // A restart appends.
        let mut w = SoakWriter::open(&path, cap).unwrap();
        w.append(&record(3)).unwrap();
        assert!(!rotated_path(&path).exists());
        assert_eq!(read_records(&path).unwrap().len(), 3);
        w.append(&record(4)).unwrap();
        assert!(rotated_path(&path).exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= cap);
        for p in 5..40 {
            w.append(&record(p)).unwrap();
            let total = std::fs::metadata(&path).unwrap().len()
                + std::fs::metadata(rotated_path(&path)).unwrap().len();
            assert!(total <= 2 * cap, "{total} > 2 x {cap}");
        }
        // Reading gives the newest records in order, the rotated half first.
        let polls: Vec<u64> = read_records(&path)
            .unwrap()
            .iter()
            .map(|r| r.poll)
            .collect();
        assert_eq!(polls.last(), Some(&39));
        assert!(polls.windows(2).all(|w| w[1] == w[0] + 1), "{polls:?}");
        assert_eq!(read_records(&path).unwrap()[0].nodes.len(), 2);
        assert_eq!(last_record(&path).map(|r| r.poll), Some(39));
        assert!(last_record(&dir.path().join("none")).is_none());
    }

    #[test]
    fn a_torn_last_line_is_skipped_but_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("soak.jsonl");
        let mut text = serde_json::to_string(&record(1)).unwrap();
        text.push('\n');
        text.push_str("{\"time\": 12, \"nod");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read_records(&path).unwrap().len(), 1);
        std::fs::write(&path, "not json\n").unwrap();
        let e = read_records(&path).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn unreachable_nodes_are_recorded_with_their_last_label() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let mut labels = vec!["n7".to_string()];
        let r = poll_once(&[closed], Duration::from_secs(1), &mut labels, 1);
        assert_eq!(r.nodes.len(), 1);
        let n = &r.nodes[0];
        assert!(!n.reachable);
        assert_eq!(n.label, "n7");
        assert_eq!(n.phase, "unreachable");
        assert!(
            n.error.as_deref().unwrap().contains("cannot reach"),
            "{n:?}"
        );
        assert_eq!(progress_line(&r), "poll 1: n7 unreachable");
    }

    #[test]
    fn bad_configuration_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SoakConfig {
            targets: vec![],
            interval: Duration::from_secs(1),
            out: dir.path().join("s"),
            duration: None,
            max_bytes: DEFAULT_MAX_BYTES,
        };
        let stop = AtomicBool::new(false);
        assert!(matches!(
            run(&cfg, &stop, |_| {}),
            Err(SoakError::Config(_))
        ));
        let cfg = SoakConfig {
            targets: vec!["127.0.0.1:1".parse().unwrap()],
            out: dir.path().join("no/such/dir/s"),
            ..cfg
        };
        assert!(matches!(
            run(&cfg, &stop, |_| {}),
            Err(SoakError::Write { .. })
        ));
    }
}
