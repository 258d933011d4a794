//! The serving side's snapshots on disk (docs/SPEC.md 13.5), and the
//! per-peer budget for answering chunk requests.
//!
//! Every `snapshot_interval` cemented windows (default 100) the node takes
//! a RocksDB checkpoint right after cementing (hard links, milliseconds:
//! [`crate::storage::Store::checkpoint`]) and hands it to a blocking task
//! ([`build`]) that never touches the live database: it streams the state
//! entries in key order into one file per chunk, keeps one hash per chunk
//! (the chunk's subtree), checks that the root they give is the stored
//! root, writes the manifest and renames the directory into place
//! (`DIR/snapshots/<window, 20 digits>/`: `manifest`, `hashes`,
//! `chunk-<index>`, `certificates`: the membership certificates the
//! checkpoint holds, each as window u64 LE, length u32 LE, bytes); the newest [`super::SNAPSHOTS_KEPT`] are kept, older
//! ones deleted. A chunk file holds the chunk's `count || entries`; its
//! proof is computed on request from `hashes` (32 bytes per chunk), so
//! serving reads one file and never the whole snapshot.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use montana_vdf::Hash32;

use crate::codec::{Reader, Writer};
use crate::consensus::merkle;
use crate::consensus::vote::Cement;
use crate::messages::MAX_PAYLOAD;
use crate::net::{sources::SourceMap, Source};
use crate::proposal::Proposal;
use crate::storage::{CheckpointView, StoreError};

use super::format::{
    encode_entry, entry_fits, proof_from_chunks, root_from_chunks, Chunk, Manifest, CHUNK_SIZE,
};
use super::messages::{SyncMessage, MAX_CERTIFICATES};

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Db {
        path: path.to_path_buf(),
        why: e.to_string(),
    }
}

fn dir_name(window: u64) -> String {
    format!("{window:020}")
}

/// One snapshot on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub window: u64,
    pub entries: u64,
    pub root: Hash32,
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = fs::File::create(path).map_err(|e| io(path, e))?;
    f.write_all(bytes).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

/// Builds the snapshot of the checkpoint at `checkpoint` under
/// `snapshots` (see the module docs), deletes the checkpoint, and prunes
/// all but the newest `keep` snapshots. Runs for seconds at a million
/// accounts: call it from a blocking task.
pub fn build(checkpoint: &Path, snapshots: &Path, keep: usize) -> Result<SnapshotInfo, StoreError> {
    let info = {
        let view = CheckpointView::open(checkpoint)?;
        let (tip, root, proposal, cement) = view.tip()?;
        let corrupt = |why: String| StoreError::Corrupt {
            path: checkpoint.to_path_buf(),
            why,
        };
        let p = Proposal::from_bytes(&proposal).map_err(|e| corrupt(e.to_string()))?;
        let c = Cement::decode(&cement).map_err(|e| corrupt(e.to_string()))?;
        fs::create_dir_all(snapshots).map_err(|e| io(snapshots, e))?;
        let tmp = snapshots.join(format!(".building-{}", dir_name(tip.window)));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        let mut n = 0u64;
        let mut hashes: Vec<Hash32> = Vec::new();
        let mut leaves = Vec::with_capacity(CHUNK_SIZE as usize);
        let mut body = Writer::default();
        let flush = |leaves: &mut Vec<Hash32>,
                     body: &mut Writer,
                     hashes: &mut Vec<Hash32>|
         -> Result<(), StoreError> {
            let mut file = Writer::with_capacity(4);
            file.u32(leaves.len() as u32);
            let mut bytes = file.finish();
            bytes.extend_from_slice(&std::mem::take(body).finish());
            write_synced(&tmp.join(format!("chunk-{}", hashes.len())), &bytes)?;
            hashes.push(merkle::mth(leaves));
            leaves.clear();
            Ok(())
        };
        for item in view.entries() {
            let (k, v) = item?;
            if !entry_fits(&k, &v) {
                return Err(corrupt(format!(
                    "a state entry of {} + {} bytes",
                    k.len(),
                    v.len()
                )));
            }
            leaves.push(merkle::leaf(&k, &v));
            encode_entry(&mut body, &k, &v);
            n += 1;
            if leaves.len() == CHUNK_SIZE as usize {
                flush(&mut leaves, &mut body, &mut hashes)?;
            }
        }
        if !leaves.is_empty() {
            flush(&mut leaves, &mut body, &mut hashes)?;
        }
        let got = root_from_chunks(n, &hashes);
        if got.0 != root || p.header.state_root.0 != root {
            return Err(corrupt(format!(
                "the checkpoint's entries give root {}, its tip says {}",
                hex::encode(got.0),
                hex::encode(root)
            )));
        }
        let m = Manifest {
            window: tip.window,
            entries: n,
            root: got,
            header: p.header,
            cement: c,
        };
        let mut hb = Vec::with_capacity(hashes.len() * 32);
        for h in &hashes {
            hb.extend_from_slice(&h.0);
        }
        write_synced(&tmp.join("hashes"), &hb)?;
        let mut certs = Writer::default();
        for (w, c) in view.certificates()? {
            certs.u64(w).u32(c.len() as u32).bytes(&c);
        }
        write_synced(&tmp.join("certificates"), &certs.finish())?;
        write_synced(&tmp.join("manifest"), &m.encode())?;
        let dest = snapshots.join(dir_name(tip.window));
        let _ = fs::remove_dir_all(&dest);
        fs::rename(&tmp, &dest).map_err(|e| io(&dest, e))?;
        SnapshotInfo {
            window: tip.window,
            entries: n,
            root: got,
        }
    };
    fs::remove_dir_all(checkpoint).map_err(|e| io(checkpoint, e))?;
    let all = Snapshots::new(snapshots).windows();
    for w in all.iter().rev().skip(keep) {
        let _ = fs::remove_dir_all(snapshots.join(dir_name(*w)));
    }
    Ok(info)
}

/// Reads snapshots for serving; cheap, usable from any thread.
#[derive(Clone, Debug)]
pub struct Snapshots {
    dir: PathBuf,
}

impl Snapshots {
    pub fn new(dir: &Path) -> Self {
        Snapshots {
            dir: dir.to_path_buf(),
        }
    }

    /// The windows of the complete snapshots here, ascending.
    pub fn windows(&self) -> Vec<u64> {
        let mut out: Vec<u64> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                (name.len() == 20).then(|| name.parse().ok()).flatten()
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// The manifest bytes of `window` (0: the newest), if served.
    pub fn manifest(&self, window: u64) -> Option<Vec<u8>> {
        let w = if window == 0 {
            *self.windows().last()?
        } else {
            window
        };
        fs::read(self.dir.join(dir_name(w)).join("manifest")).ok()
    }

    /// The answer to GetChunk: the chunk's bytes, or `None` when this
    /// snapshot (window and root) or chunk is not here.
    pub fn chunk(&self, window: u64, root: &Hash32, index: u64) -> Option<Vec<u8>> {
        let d = self.dir.join(dir_name(window));
        let m = Manifest::decode(&fs::read(d.join("manifest")).ok()?).ok()?;
        if m.root != *root || index >= m.chunks() {
            return None;
        }
        let hb = fs::read(d.join("hashes")).ok()?;
        let hashes: Vec<Hash32> = hb
            .chunks_exact(32)
            .map(|c| Hash32(c.try_into().expect("32 bytes")))
            .collect();
        let proof = proof_from_chunks(&hashes, index)?;
        let body = fs::read(d.join(format!("chunk-{index}"))).ok()?;
        Some(Chunk::assemble(window, root, index, &body, &proof))
    }
}

impl Snapshots {
    /// The membership certificates of the windows in `(above, below)`,
    /// ascending, from the oldest snapshot that holds them all (of window
    /// `below - 1` or later: a syncing node asks for the snapshot window's
    /// own certificate too), else the newest:
    /// as many as one Certificates message holds (at most
    /// [`MAX_CERTIFICATES`], the payload within [`MAX_PAYLOAD`]). An empty
    /// answer means there are no more.
    pub fn certificates(&self, above: u64, below: u64) -> Vec<Vec<u8>> {
        let windows = self.windows();
        let Some(w) = windows
            .iter()
            .copied()
            .find(|w| w.saturating_add(1) >= below)
            .or(windows.last().copied())
        else {
            return Vec::new();
        };
        let Ok(bytes) = fs::read(self.dir.join(dir_name(w)).join("certificates")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut size = 2usize;
        let mut r = Reader::new("certificates file", &bytes);
        while r.left() > 0 && out.len() < MAX_CERTIFICATES {
            let (Ok(cw), Ok(len)) = (r.u64(), r.u32()) else {
                break;
            };
            let Ok(c) = r.take(len as usize) else {
                break;
            };
            if cw <= above {
                continue;
            }
            if cw >= below || size + 4 + c.len() > MAX_PAYLOAD {
                break;
            }
            size += 4 + c.len();
            out.push(c.to_vec());
        }
        out
    }

    /// The answer to a fast-sync request (`None` for other messages):
    /// GetManifest, GetChunk, and GetCertificates. Reads files: call it off
    /// the event loop, within [`ChunkBudget`] for chunks.
    pub fn answer(&self, msg: &SyncMessage) -> Option<SyncMessage> {
        match msg {
            SyncMessage::GetManifest { window } => {
                Some(SyncMessage::Manifest(self.manifest(*window)))
            }
            SyncMessage::GetChunk {
                window,
                root,
                index,
            } => Some(SyncMessage::Chunk(self.chunk(*window, root, *index))),
            SyncMessage::GetCertificates { above, below } => {
                Some(SyncMessage::Certificates(self.certificates(*above, *below)))
            }
            _ => None,
        }
    }
}

/// Sustained chunk bytes per second per peer (8 MiB/s).
pub const CHUNK_BYTES_PER_SEC: f64 = (8 << 20) as f64;
/// Chunk bytes a peer may take at once after a quiet period (16 MiB).
pub const CHUNK_BYTES_BURST: f64 = (16 << 20) as f64;
/// Chunk answers in preparation per peer.
pub const CHUNKS_IN_PREPARATION: usize = 4;
/// Least an answer is charged, whatever its size: reading a manifest, the
/// certificates file or the chunk hashes costs the server that much or
/// more even when the answer is "not served" (0 bytes) or tiny, so a peer
/// asking for nothing still spends its budget (at most 32 such requests a
/// second, 64 in a burst).
pub const CHUNK_MIN_CHARGE: usize = 256 << 10;

#[derive(Debug)]
struct Bucket {
    bytes: f64,
    at: Instant,
    busy: usize,
}

/// The per-source budget ([`crate::net::Sender::source`]: a guest's is its
/// address's, whatever node id it reconnects under; at most
/// [`crate::net::sources::MAX_SOURCES`] remembered) for answering chunk
/// requests: at most
/// [`CHUNKS_IN_PREPARATION`] answers in preparation, and
/// [`CHUNK_BYTES_PER_SEC`] answer bytes per second in bursts of
/// [`CHUNK_BYTES_BURST`]; an answer is charged once built (at least
/// [`CHUNK_MIN_CHARGE`], even when nothing is sent), so the budget
/// can go into debt and the peer waits until it is repaid. A request over
/// budget is dropped (the asker times out and asks another peer). Sans-IO:
/// the caller passes the time.
#[derive(Debug, Default)]
pub struct ChunkBudget {
    peers: SourceMap<Bucket>,
}

impl ChunkBudget {
    /// May `peer`'s chunk request be answered now? On `true` one answer is
    /// in preparation until [`ChunkBudget::done`].
    pub fn admit(&mut self, peer: Source, now: Instant) -> bool {
        let new = || Bucket {
            bytes: CHUNK_BYTES_BURST,
            at: now,
            busy: 0,
        };
        // Forgotten first when full: the fullest with nothing in preparation.
        let spare = |b: &Bucket| {
            let dt = now.saturating_duration_since(b.at).as_secs_f64();
            (b.busy == 0).then_some(b.bytes + dt * CHUNK_BYTES_PER_SEC)
        };
        let Some(b) = self.peers.entry(peer, new, spare) else {
            return false;
        };
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        b.at = now.max(b.at);
        b.bytes = (b.bytes + dt * CHUNK_BYTES_PER_SEC).min(CHUNK_BYTES_BURST);
        if b.busy >= CHUNKS_IN_PREPARATION || b.bytes <= 0.0 {
            return false;
        }
        b.busy += 1;
        true
    }

    /// The answer for `peer` is built (`bytes`, 0 if none): charge it, at
    /// least [`CHUNK_MIN_CHARGE`].
    pub fn done(&mut self, peer: Source, bytes: usize) {
        if let Some(b) = self.peers.get_mut(&peer) {
            b.busy = b.busy.saturating_sub(1);
            b.bytes -= bytes.max(CHUNK_MIN_CHARGE) as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_chunk_budget_bounds_each_peer_apart() {
        let mut b = ChunkBudget::default();
        let t = Instant::now();
        for _ in 0..CHUNKS_IN_PREPARATION {
            assert!(b.admit(Source::Local(1), t));
        }
        assert!(!b.admit(Source::Local(1), t), "in preparation");
        assert!(b.admit(Source::Local(2), t), "another peer is not affected");
        for _ in 0..CHUNKS_IN_PREPARATION {
            b.done(Source::Local(1), 6 << 20);
        }
        assert!(!b.admit(Source::Local(1), t), "16 MiB burst spent: in debt");
        // 8 MiB repaid per second: 24 - 16 = 8 MiB debt, repaid after 1 s.
        assert!(!b.admit(Source::Local(1), t + Duration::from_millis(900)));
        assert!(b.admit(Source::Local(1), t + Duration::from_millis(1100)));
    }

    /// Requests that cost the server a read but answer nothing (an unknown
    /// root, certificates above every window) still spend the budget.
    #[test]
    fn answers_of_nothing_are_charged_too() {
        let mut b = ChunkBudget::default();
        let t = Instant::now();
        let mut answered = 0;
        for _ in 0..10_000 {
            if !b.admit(Source::Local(1), t) {
                break;
            }
            b.done(Source::Local(1), 0);
            answered += 1;
        }
        assert_eq!(answered as f64, CHUNK_BYTES_BURST / CHUNK_MIN_CHARGE as f64);
        // Then about 32 a second.
        let mut later = 0;
        for ms in (0..1000).step_by(5) {
            if b.admit(Source::Local(1), t + Duration::from_millis(ms)) {
                b.done(Source::Local(1), 0);
                later += 1;
            }
        }
        assert!((31..=33).contains(&later), "{later}");
    }
}
