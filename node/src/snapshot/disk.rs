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
//! checkpoint holds, each as window u64 LE, length u32 LE, bytes); the
//! newest [`super::SNAPSHOTS_KEPT`] are kept, older ones deleted. A chunk
//! file holds the chunk's `count || entries`; its proof comes from the
//! tree over `hashes` (32 bytes per chunk), built once per snapshot when
//! it is first served ([`Snapshots`]), so serving a chunk reads that chunk's
//! file and nothing else, and a page of certificates reads that page.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use montana_vdf::Hash32;
use tracing::{debug, warn};

use crate::codec::Writer;
use crate::consensus::active::{ActiveSet, Quorum};
use crate::consensus::merkle;
use crate::consensus::state::Roster;
use crate::consensus::vote::Cement;
use crate::messages::MAX_PAYLOAD;
use crate::net::{sources::SourceMap, Source};
use crate::proposal::Proposal;
use crate::storage::{CheckpointView, StoreError};

use super::certificate::Certificate;
use super::format::{encode_entry, entry_fits, root_from_chunks, Chunk, Manifest, CHUNK_SIZE};
use super::messages::{SyncMessage, MAX_CERTIFICATES};
use super::sync::MAX_TRUST_BYTES;

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

/// What tells a snapshot this node can certify from one it cannot
/// ([`Snapshots::serving`]): the genesis's active set and quorum.
#[derive(Clone, Debug)]
pub struct Certify {
    pub genesis_set: ActiveSet,
    pub quorum: Quorum,
}

/// Snapshots kept loaded at once (manifest, chunk tree, certificate
/// index): the [`super::SNAPSHOTS_KEPT`] on disk and one more (the one
/// being replaced); the lowest window goes first. A loaded snapshot is at
/// most about 1 MiB of manifest, 64 bytes per chunk (4 MiB at
/// [`super::format::MAX_ENTRIES`]) and 20 bytes per certificate.
pub const LOADED_KEPT: usize = super::SNAPSHOTS_KEPT + 1;

/// Reads snapshots; cheap to clone (clones share what is loaded), usable
/// from any thread. One made with [`Snapshots::new`] lists windows only
/// and serves nothing; one made with [`Snapshots::serving`] serves.
///
/// Serving (docs/SPEC.md 13.6, 13.8): each snapshot is loaded once, the
/// first time it is asked for (or right after [`build`], through
/// [`Snapshots::load`]): its manifest kept in memory, the tree over its
/// chunk hashes (so a chunk's proof is O(log chunks) lookups), the window,
/// offset and length of each certificate in its `certificates` file, and
/// whether it can be certified: the certificates it holds, followed from
/// the genesis set as a syncing node follows them (each Cement a quorum
/// of the set in force, no signature checked: they are this node's own
/// records), must lead to the members of its state and to a set its
/// Cement is a quorum of. One that cannot (a change of the set is missing,
/// as in the store of a node fast-synced by an older build that did not
/// keep the snapshot window's own certificate) is not served: every
/// syncing node would refuse it (`certificate_missing`). Then a GetChunk
/// reads that chunk's file and nothing else, and a GetCertificates reads
/// the bytes of its page and nothing else.
#[derive(Clone, Debug)]
pub struct Snapshots {
    dir: PathBuf,
    serve: Option<Arc<Serve>>,
}

#[derive(Debug)]
struct Serve {
    certify: Certify,
    loaded: Mutex<BTreeMap<u64, Arc<Loaded>>>,
    /// A snapshot not served was reported (once, then at debug level).
    warned: AtomicBool,
}

/// One snapshot as loaded.
#[derive(Debug)]
enum Loaded {
    Served(Served),
    /// Not served (why was said in the log).
    Refused,
}

#[derive(Debug)]
struct Served {
    manifest: Vec<u8>,
    root: Hash32,
    /// The tree over the chunk hashes: level 0 the hashes, level l + 1
    /// hash i the tree hash of level l's hashes 2i and 2i + 1 (or hash 2i
    /// alone at the end). Every subtree of the RFC 6962 shape is one of
    /// these.
    tree: Vec<Vec<Hash32>>,
    /// Each certificate of the `certificates` file, ascending: its window,
    /// the offset of its bytes in the file and their length.
    certificates: Vec<(u64, u64, u32)>,
}

/// The tree over the chunk hashes (see [`Served::tree`]).
fn tree_of(hashes: Vec<Hash32>) -> Vec<Vec<Hash32>> {
    let mut tree = vec![hashes];
    while let Some(level) = tree.last().filter(|l| l.len() > 1) {
        let next = level
            .chunks(2)
            .map(|p| if p.len() == 2 { merkle::mth(p) } else { p[0] })
            .collect();
        tree.push(next);
    }
    tree
}

/// Chunk `index`'s proof from the tree over the chunk hashes: the same
/// hashes as [`super::format::proof_from_chunks`], each looked up.
fn proof_in(tree: &[Vec<Hash32>], index: u64) -> Option<Vec<Hash32>> {
    let n = tree.first()?.len() as u64;
    if index >= n {
        return None;
    }
    let (mut lo, mut hi) = (0u64, n);
    let mut proof = Vec::with_capacity(tree.len());
    while hi - lo > 1 {
        // The largest power of two below the subtree's size: its left part.
        let k = 1u64 << (63 - (hi - lo - 1).leading_zeros());
        let level = &tree[k.trailing_zeros() as usize];
        if index < lo + k {
            proof.push(level[((lo + k) / k) as usize]);
            hi = lo + k;
        } else {
            proof.push(level[(lo / k) as usize]);
            lo += k;
        }
    }
    proof.reverse();
    Some(proof)
}

/// Whether `cement`'s signers are members of `set` and a quorum of it (the
/// check a syncing node makes, without the signatures).
fn quorum_of(cement: &Cement, set: &ActiveSet, quorum: Quorum) -> Result<(), String> {
    let mut weight = 0u64;
    for (id, _) in &cement.precommits {
        match set.weight(id) {
            0 => return Err(format!("signer {id} is not a member")),
            w => weight = weight.saturating_add(w),
        }
    }
    if !quorum.reached(weight, set.total()) {
        return Err(format!(
            "weight {weight} of {} is short of the quorum",
            set.total()
        ));
    }
    Ok(())
}

/// The members of the state after the snapshot: the member entries (tag
/// `m`), read from the last chunks back to the first that starts below
/// them (the roster sorts after the accounts: a chunk or two).
fn members_after(d: &Path, m: &Manifest, read: &mut usize) -> Result<ActiveSet, String> {
    let mut found: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for i in (0..m.chunks()).rev() {
        let body = read_counted(d, &format!("chunk-{i}"), read)?;
        let c = Chunk::decode(&Chunk::assemble(m.window, &m.root, i, &body, &[]))
            .map_err(|e| format!("chunk {i}: {e}"))?;
        let below = c.entries.first().is_none_or(|e| e.0.first() < Some(&b'm'));
        found.extend(c.entries.into_iter().filter(|e| e.0.first() == Some(&b'm')));
        if below {
            break;
        }
    }
    found.sort_unstable();
    Roster::from_entries(found.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
        .map(|r| r.active)
        .map_err(|e| format!("the state's members: {e}"))
}

fn read_counted(d: &Path, name: &str, read: &mut usize) -> Result<Vec<u8>, String> {
    let b = fs::read(d.join(name)).map_err(|e| format!("{name}: {e}"))?;
    *read += b.len();
    Ok(b)
}

/// Loads the snapshot in `d` (see [`Snapshots`]); `read` counts the bytes
/// read. `Err`: why it is not served.
fn load_dir(d: &Path, window: u64, c: &Certify, read: &mut usize) -> Result<Served, String> {
    let manifest = read_counted(d, "manifest", read)?;
    let m = Manifest::decode(&manifest).map_err(|e| format!("its manifest: {e}"))?;
    if m.window != window {
        return Err(format!("its manifest is of window {}", m.window));
    }
    let hb = read_counted(d, "hashes", read)?;
    if hb.len() as u64 != m.chunks() * 32 {
        return Err(format!(
            "{} bytes of chunk hashes for {} chunks",
            hb.len(),
            m.chunks()
        ));
    }
    let hashes = hb
        .chunks_exact(32)
        .map(|h| Hash32(h.try_into().expect("32 bytes")))
        .collect();
    let tree = tree_of(hashes);
    if merkle::root_of(m.entries, &tree[tree.len() - 1][0]) != m.root {
        return Err("its chunk hashes do not give its root".into());
    }
    // The certificates, streamed one at a time (the file may be tens of
    // MiB) and followed from the genesis set as a syncing node would.
    let path = d.join("certificates");
    let f = fs::File::open(&path).map_err(|e| format!("certificates: {e}"))?;
    let mut f = std::io::BufReader::new(f);
    let (mut set, mut before, mut after) = (c.genesis_set.clone(), c.genesis_set.clone(), 0u64);
    let mut last_proposal = None;
    let (mut index, mut offset, mut total) = (Vec::new(), 0u64, 0usize);
    loop {
        let mut head = [0u8; 12];
        match f.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("certificates: {e}")),
        }
        let cw = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(head[8..].try_into().expect("4 bytes"));
        // What a Certificates message of this one alone would be.
        if 2 + 4 + len as usize > MAX_PAYLOAD {
            return Err(format!(
                "the certificate of window {cw} ({len} bytes) does not fit a message"
            ));
        }
        total += len as usize;
        if total > MAX_TRUST_BYTES {
            return Err(format!(
                "more than {} MiB of certificates, more than a syncing node follows",
                MAX_TRUST_BYTES >> 20
            ));
        }
        let mut body = vec![0u8; len as usize];
        f.read_exact(&mut body)
            .map_err(|e| format!("certificates: {e}"))?;
        *read += 12 + body.len();
        let cert = Certificate::decode(&body)
            .map_err(|e| format!("the certificate of window {cw}: {e}"))?;
        if cert.window() != cw || cw <= after || cw > window {
            return Err(format!(
                "a certificate of window {} filed as window {cw} after window {after}",
                cert.window()
            ));
        }
        quorum_of(&cert.cement, &set, c.quorum).map_err(|e| {
            format!(
                "the certificate of window {cw} is not cemented by the set its predecessors lead to ({e}): a change of the active set before it is missing"
            )
        })?;
        let next = cert.members()?;
        before = std::mem::replace(&mut set, next);
        after = cw;
        last_proposal = Some(cert.header.hash());
        index.push((cw, offset + 12, len));
        offset += 12 + len as u64;
    }
    // The set that cemented the window: the one before its own
    // certificate if the set changed at it.
    let own = after == window;
    if own && last_proposal != Some(m.header.hash()) {
        return Err(format!(
            "its certificate of window {window} is of another proposal"
        ));
    }
    quorum_of(&m.cement, if own { &before } else { &set }, c.quorum).map_err(|e| {
        format!("its Cement is not a quorum of the set its certificates lead to ({e}): a change of the active set is missing")
    })?;
    let members = members_after(d, &m, read)?;
    if members != set {
        return Err(format!(
            "the state after window {window} has {} members, not the {} its certificates lead to: the certificate of a change of the active set is missing (a node fast-synced by an older build may lack its snapshot window's own)",
            members.len(),
            set.len()
        ));
    }
    Ok(Served {
        manifest,
        root: m.root,
        tree,
        certificates: index,
    })
}

impl Snapshots {
    /// Lists the snapshots in `dir`; serves none.
    pub fn new(dir: &Path) -> Self {
        Snapshots {
            dir: dir.to_path_buf(),
            serve: None,
        }
    }

    /// Serves the snapshots in `dir` that `certify` can certify (see the
    /// type's docs).
    pub fn serving(dir: &Path, certify: Certify) -> Self {
        Snapshots {
            dir: dir.to_path_buf(),
            serve: Some(Arc::new(Serve {
                certify,
                loaded: Mutex::default(),
                warned: AtomicBool::new(false),
            })),
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

    /// Forgets what was loaded of `rebuilt` and of every snapshot no
    /// longer on disk (after [`build`] wrote or pruned one).
    pub fn refresh(&self, rebuilt: u64) {
        if let Some(s) = &self.serve {
            let on_disk = self.windows();
            s.loaded
                .lock()
                .unwrap()
                .retain(|w, _| *w != rebuilt && on_disk.binary_search(w).is_ok());
        }
    }

    /// Loads the snapshot of `window` unless it is loaded (see the type's
    /// docs), and says once in the log when it is not served. Returns
    /// whether it is served, and the bytes read.
    pub fn load(&self, window: u64) -> (bool, usize) {
        let (l, read) = self.loaded(window);
        (matches!(l.as_deref(), Some(Loaded::Served(_))), read)
    }

    fn loaded(&self, window: u64) -> (Option<Arc<Loaded>>, usize) {
        let Some(s) = &self.serve else {
            return (None, 0);
        };
        let mut loaded = s.loaded.lock().unwrap();
        if let Some(l) = loaded.get(&window) {
            return (Some(l.clone()), 0);
        }
        let d = self.dir.join(dir_name(window));
        if !d.is_dir() {
            return (None, 0);
        }
        let mut read = 0;
        let l = Arc::new(match load_dir(&d, window, &s.certify, &mut read) {
            Ok(served) => Loaded::Served(served),
            Err(why) => {
                if s.warned.swap(true, Ordering::Relaxed) {
                    debug!(window, "snapshot not served: {why}");
                } else {
                    warn!(window, "snapshot not served: {why}");
                }
                Loaded::Refused
            }
        });
        loaded.insert(window, l.clone());
        while loaded.len() > LOADED_KEPT {
            let Some(lowest) = loaded.keys().copied().find(|w| *w != window) else {
                break;
            };
            loaded.remove(&lowest);
        }
        (Some(l), read)
    }

    fn served(&self, window: u64, read: &mut usize) -> Option<Arc<Loaded>> {
        let (l, r) = self.loaded(window);
        *read += r;
        l.filter(|l| matches!(**l, Loaded::Served(_)))
    }

    /// The manifest bytes of `window` (0: the newest served), if served.
    pub fn manifest(&self, window: u64) -> Option<Vec<u8>> {
        self.manifest_counted(window, &mut 0)
    }

    fn manifest_counted(&self, window: u64, read: &mut usize) -> Option<Vec<u8>> {
        let l = if window == 0 {
            self.windows()
                .into_iter()
                .rev()
                .find_map(|w| self.served(w, read))?
        } else {
            self.served(window, read)?
        };
        match &*l {
            Loaded::Served(s) => Some(s.manifest.clone()),
            Loaded::Refused => None,
        }
    }

    /// The answer to GetChunk: the chunk's bytes, or `None` when this
    /// snapshot (window and root) or chunk is not served.
    pub fn chunk(&self, window: u64, root: &Hash32, index: u64) -> Option<Vec<u8>> {
        self.chunk_counted(window, root, index, &mut 0)
    }

    fn chunk_counted(
        &self,
        window: u64,
        root: &Hash32,
        index: u64,
        read: &mut usize,
    ) -> Option<Vec<u8>> {
        let l = self.served(window, read)?;
        let Loaded::Served(s) = &*l else {
            return None;
        };
        if s.root != *root {
            return None;
        }
        let proof = proof_in(&s.tree, index)?;
        let d = self.dir.join(dir_name(window));
        let body = read_counted(&d, &format!("chunk-{index}"), read).ok()?;
        Some(Chunk::assemble(window, root, index, &body, &proof))
    }

    /// The membership certificates of the windows in `(above, below)`,
    /// ascending, from the oldest snapshot served that holds them all (of
    /// window `below - 1` or later: a syncing node asks for the snapshot
    /// window's own certificate too), else the newest served: as many as
    /// one Certificates message holds (at most [`MAX_CERTIFICATES`], the
    /// payload within [`MAX_PAYLOAD`]), read in one piece from the file.
    /// An empty answer means there are no more.
    pub fn certificates(&self, above: u64, below: u64) -> Vec<Vec<u8>> {
        self.certificates_counted(above, below, &mut 0)
    }

    fn certificates_counted(&self, above: u64, below: u64, read: &mut usize) -> Vec<Vec<u8>> {
        let mut newest = None;
        let mut chosen = None;
        for w in self.windows() {
            if let Some(l) = self.served(w, read) {
                if w.saturating_add(1) >= below {
                    chosen = Some((w, l));
                    break;
                }
                newest = Some((w, l));
            }
        }
        let Some((w, l)) = chosen.or(newest) else {
            return Vec::new();
        };
        let Loaded::Served(s) = &*l else {
            return Vec::new();
        };
        let from = s.certificates.partition_point(|c| c.0 <= above);
        let mut size = 2usize;
        let page: Vec<(u64, u64, u32)> = s.certificates[from..]
            .iter()
            .take(MAX_CERTIFICATES)
            .take_while(|c| {
                size += 4 + c.2 as usize;
                c.0 < below && size <= MAX_PAYLOAD
            })
            .copied()
            .collect();
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            return Vec::new();
        };
        let (start, end) = (first.1, last.1 + u64::from(last.2));
        let mut bytes = vec![0u8; (end - start) as usize];
        let path = self.dir.join(dir_name(w)).join("certificates");
        let got = fs::File::open(&path).and_then(|mut f| {
            f.seek(SeekFrom::Start(start))?;
            f.read_exact(&mut bytes)
        });
        if got.is_err() {
            return Vec::new();
        }
        *read += bytes.len();
        page.iter()
            .map(|c| {
                let at = (c.1 - start) as usize;
                bytes[at..at + c.2 as usize].to_vec()
            })
            .collect()
    }

    /// The answer to a fast-sync request (`None` for other messages):
    /// GetManifest, GetChunk, and GetCertificates. Reads files: call it off
    /// the event loop, within [`ChunkBudget`].
    pub fn answer(&self, msg: &SyncMessage) -> Option<SyncMessage> {
        self.answer_counted(msg).map(|(reply, _)| reply)
    }

    /// [`Snapshots::answer`] and the bytes read from disk for it (what
    /// [`ChunkBudget::done`] is charged, or the answer's size if more).
    pub fn answer_counted(&self, msg: &SyncMessage) -> Option<(SyncMessage, usize)> {
        let mut read = 0;
        let reply = match msg {
            SyncMessage::GetManifest { window } => {
                SyncMessage::Manifest(self.manifest_counted(*window, &mut read))
            }
            SyncMessage::GetChunk {
                window,
                root,
                index,
            } => SyncMessage::Chunk(self.chunk_counted(*window, root, *index, &mut read)),
            SyncMessage::GetCertificates { above, below } => {
                SyncMessage::Certificates(self.certificates_counted(*above, *below, &mut read))
            }
            _ => return None,
        };
        Some((reply, read))
    }
}

/// Sustained chunk bytes per second per peer (8 MiB/s).
pub const CHUNK_BYTES_PER_SEC: f64 = (8 << 20) as f64;
/// Chunk bytes a peer may take at once after a quiet period (16 MiB).
pub const CHUNK_BYTES_BURST: f64 = (16 << 20) as f64;
/// Chunk answers in preparation per peer.
pub const CHUNKS_IN_PREPARATION: usize = 4;
/// Least an answer is charged, whatever it read and sent: a request costs
/// the server a decode, a blocking task and a send even when the answer is
/// "not served" (0 bytes) or tiny, so a peer asking for nothing still
/// spends its budget (at most 32 such requests a second, 64 in a burst).
/// Beyond it an answer is charged the bytes it read from disk or sent,
/// whichever is more ([`Snapshots::answer_counted`]); each answer reads
/// O(its size) (a snapshot's manifest, chunk tree and certificate index
/// are loaded once, and that load is charged to the request that made it).
pub const CHUNK_MIN_CHARGE: usize = 256 << 10;

#[derive(Debug)]
struct Bucket {
    bytes: f64,
    at: Instant,
    busy: usize,
}

/// The per-source budget ([`crate::net::Sender::source`]: a guest's is its
/// address's, whatever node id it reconnects under; at most
/// [`crate::net::sources::MAX_SOURCES`] remembered) for answering fast-sync
/// requests: at most
/// [`CHUNKS_IN_PREPARATION`] answers in preparation, and
/// [`CHUNK_BYTES_PER_SEC`] bytes per second in bursts of
/// [`CHUNK_BYTES_BURST`]; an answer is charged once built (the bytes it
/// read or sent, at least [`CHUNK_MIN_CHARGE`], even when nothing is
/// sent), so the budget
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

    /// The answer for `peer` is built (`bytes`: what it read or sent,
    /// whichever is more; 0 if none): charge it, at least
    /// [`CHUNK_MIN_CHARGE`].
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
    use crate::consensus::active::tests::set_of;
    use crate::keys::NodeKeys;
    use crate::snapshot::certificate::tests::certificate;
    use crate::snapshot::format::tests::{snapshot_of, Fixture};
    use crate::snapshot::format::{proof_from_chunks, Entry};
    use std::time::Duration;

    /// Writes `f` as a snapshot directory under `snapdir` (the layout
    /// [`build`] writes), with `certs` in its certificates file.
    fn write_dir(snapdir: &Path, f: &Fixture, certs: &[Certificate]) -> PathBuf {
        let d = snapdir.join(dir_name(f.manifest.window));
        fs::create_dir_all(&d).unwrap();
        let mut hashes = Vec::new();
        for i in 0..f.manifest.chunks() {
            let c = f.chunk(i);
            let mut body = Writer::default();
            body.u32(c.entries.len() as u32);
            for (k, v) in &c.entries {
                encode_entry(&mut body, k, v);
            }
            fs::write(d.join(format!("chunk-{i}")), body.finish()).unwrap();
            let a = (i * CHUNK_SIZE) as usize;
            let b = (a + CHUNK_SIZE as usize).min(f.leaves.len());
            hashes.extend_from_slice(&merkle::mth(&f.leaves[a..b]).0);
        }
        fs::write(d.join("hashes"), hashes).unwrap();
        let mut w = Writer::default();
        for c in certs {
            let b = c.encode();
            w.u64(c.window()).u32(b.len() as u32).bytes(&b);
        }
        fs::write(d.join("certificates"), w.finish()).unwrap();
        fs::write(d.join("manifest"), f.manifest.encode()).unwrap();
        d
    }

    /// The certificate of the snapshot window itself (the set changed at
    /// it): the manifest's header and Cement, the snapshot's member range.
    fn own_certificate(f: &Fixture) -> Certificate {
        let is_member = |e: &Entry| e.0[0] == b'm';
        let a = f
            .entries
            .iter()
            .position(is_member)
            .unwrap()
            .saturating_sub(1);
        let b = (f.entries.iter().rposition(is_member).unwrap() + 2).min(f.entries.len());
        Certificate {
            header: f.manifest.header.clone(),
            cement: f.manifest.cement.clone(),
            entries: f.entries.len() as u64,
            first: a as u64,
            range: f.entries[a..b].to_vec(),
            proof: merkle::range_proof(&f.leaves, a as u64, b as u64),
        }
    }

    fn serving(dir: &Path, genesis_set: &ActiveSet) -> Snapshots {
        Snapshots::serving(
            dir,
            Certify {
                genesis_set: genesis_set.clone(),
                quorum: Quorum::default(),
            },
        )
    }

    /// The fewest of `keys` (weight 1 each) that are a quorum of them.
    fn three(keys: &[NodeKeys]) -> Vec<&NodeKeys> {
        keys.iter().take(keys.len() * 2 / 3 + 1).collect()
    }

    #[test]
    fn chunk_proofs_from_the_tree_are_the_proofs_from_the_hashes() {
        for n in (1u64..=70).chain([127, 128, 129, 1000]) {
            let hashes: Vec<Hash32> = (0..n)
                .map(|i| montana_vdf::HashSuite::Sha256.hash(&i.to_le_bytes()))
                .collect();
            let tree = tree_of(hashes.clone());
            assert_eq!(tree[tree.len() - 1], vec![merkle::mth(&hashes)], "{n}");
            for i in 0..n {
                assert_eq!(
                    proof_in(&tree, i),
                    proof_from_chunks(&hashes, i),
                    "{n} chunks, chunk {i}"
                );
            }
            assert_eq!(proof_in(&tree, n), None);
        }
    }

    /// The set changed at window 2 (genesis g -> s2) and at window 4
    /// (s2 -> the snapshot's set); a snapshot of window 7 is served with
    /// both certificates, and not served at all when its certificates
    /// leave a change out: every syncing node would refuse it. The same
    /// for a set that changed at the snapshot window itself, whose own
    /// certificate (what a node fast-synced by an older build lacks) is
    /// missing. Before: served either way.
    #[test]
    fn a_snapshot_whose_certificates_leave_a_change_out_is_not_served() {
        let (g, gk) = set_of(4);
        let (s2, k2) = set_of(5);
        let (s4, k4) = set_of(4);
        let f = snapshot_of(3 * CHUNK_SIZE, 7, &s4, &three(&k4));
        let c2 = certificate(&s2, 2, &three(&gk));
        let c4 = certificate(&s4, 4, &three(&k2));
        let served = |certs: &[Certificate]| {
            let dir = tempfile::tempdir().unwrap();
            write_dir(dir.path(), &f, certs);
            let snaps = serving(dir.path(), &g);
            let got = (
                snaps.manifest(0),
                snaps.manifest(7),
                snaps.chunk(7, &f.manifest.root, 1),
                snaps.certificates(0, 8),
            );
            (got, snaps.load(7).0)
        };
        let ((newest, m7, chunk, certs), ok) = served(&[c2.clone(), c4.clone()]);
        assert!(ok);
        assert_eq!(newest, Some(f.manifest.encode()));
        assert_eq!(m7, newest);
        let chunk = Chunk::decode(&chunk.unwrap()).unwrap();
        chunk.verify(&f.manifest).unwrap();
        assert_eq!(certs, vec![c2.encode(), c4.encode()]);
        for left_out in [vec![c4.clone()], vec![c2.clone()], vec![]] {
            let ((newest, m7, chunk, certs), ok) = served(&left_out);
            assert!(!ok, "{} certificates", left_out.len());
            assert_eq!((newest, m7, chunk), (None, None, None));
            assert!(certs.is_empty());
        }
        // The set changed at window 7 itself: the snapshot (cemented by
        // g) holds s4's members, which only 7's own certificate proves.
        let f = snapshot_of(3 * CHUNK_SIZE, 7, &s4, &three(&gk));
        let own = own_certificate(&f);
        for (certs, want) in [(vec![own.clone()], true), (vec![], false)] {
            let dir = tempfile::tempdir().unwrap();
            write_dir(dir.path(), &f, &certs);
            let snaps = serving(dir.path(), &g);
            assert_eq!(snaps.load(7).0, want);
            assert_eq!(snaps.manifest(0).is_some(), want);
            assert_eq!(snaps.chunk(7, &f.manifest.root, 0).is_some(), want);
        }
        // A certificate of another proposal of window 7 does not do.
        let mut other = own;
        other.header = certificate(&s4, 7, &three(&gk)).header;
        let dir = tempfile::tempdir().unwrap();
        write_dir(dir.path(), &f, &[other]);
        assert!(!serving(dir.path(), &g).load(7).0);
        // A reader made with `new` lists but serves nothing.
        let dir = tempfile::tempdir().unwrap();
        write_dir(dir.path(), &f, &[own_certificate(&f)]);
        let listing = Snapshots::new(dir.path());
        assert_eq!(listing.windows(), vec![7]);
        assert!(listing.manifest(0).is_none());
    }

    /// Once a snapshot is loaded, a GetChunk reads that chunk's file and
    /// nothing else, and a GetCertificates reads its page's bytes and
    /// nothing else, however long the file (before: the manifest and the
    /// chunk hashes for each chunk, the whole certificates file for each
    /// page).
    #[test]
    fn each_answer_reads_what_it_sends() {
        let (g, gk) = set_of(4);
        let (s, sk) = set_of(5);
        // 80 changes, back and forth between g and s: 80 certificates.
        let sets = [(&g, &gk), (&s, &sk)];
        let certs: Vec<Certificate> = (1..=80u64)
            .map(|w| {
                let (from, to) = (sets[(w as usize + 1) % 2], sets[w as usize % 2]);
                certificate(to.0, w, &three(from.1))
            })
            .collect();
        // After 80 (even) changes the set is g again.
        let f = snapshot_of(3 * CHUNK_SIZE + 5, 90, &g, &three(&gk));
        let dir = tempfile::tempdir().unwrap();
        let d = write_dir(dir.path(), &f, &certs);
        let snaps = serving(dir.path(), &g);
        let file = fs::metadata(d.join("certificates")).unwrap().len() as usize;
        // The first request loads the snapshot: charged what that read.
        let (reply, read) = snaps
            .answer_counted(&SyncMessage::GetManifest { window: 0 })
            .unwrap();
        assert_eq!(reply, SyncMessage::Manifest(Some(f.manifest.encode())));
        assert!(read > file, "the load reads the certificates: {read}");
        let (_, read) = snaps
            .answer_counted(&SyncMessage::GetManifest { window: 90 })
            .unwrap();
        assert_eq!(read, 0, "the manifest is kept");
        for i in 0..f.manifest.chunks() {
            let msg = SyncMessage::GetChunk {
                window: 90,
                root: f.manifest.root,
                index: i,
            };
            let (reply, read) = snaps.answer_counted(&msg).unwrap();
            let SyncMessage::Chunk(Some(bytes)) = reply else {
                panic!("chunk {i} not served");
            };
            Chunk::decode(&bytes).unwrap().verify(&f.manifest).unwrap();
            let body = fs::metadata(d.join(format!("chunk-{i}"))).unwrap().len();
            assert_eq!(read as u64, body, "chunk {i}: its file only");
        }
        // Paged through, a page of certificates at a time.
        let (mut above, mut got, mut pages) = (0u64, Vec::new(), 0);
        loop {
            let msg = SyncMessage::GetCertificates { above, below: 91 };
            let (reply, read) = snaps.answer_counted(&msg).unwrap();
            let SyncMessage::Certificates(page) = reply else {
                panic!("not certificates");
            };
            let Some(last) = page.last() else {
                assert_eq!(read, 0);
                break;
            };
            let sent: usize = page.iter().map(|c| c.len()).sum();
            assert_eq!(read, sent + 12 * (page.len() - 1), "the page's bytes only");
            assert!(read < file);
            above = Certificate::decode(last).unwrap().window();
            got.extend(page);
            pages += 1;
        }
        assert!(pages >= 2, "80 certificates of about 20 KB: {pages} pages");
        let want: Vec<Vec<u8>> = certs.iter().map(|c| c.encode()).collect();
        assert_eq!(got, want);
    }

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
