//! The staging area of a fast-sync: a RocksDB of its own (`DIR/staging`),
//! apart from the live database, so nothing reaches the live state before
//! the whole snapshot verified (docs/SPEC.md 13.5).
//!
//! Keys (one column family):
//! - `target` -> the manifest being fetched (already checked);
//! - `proposal` -> the proposal of the snapshot window (hash checked);
//! - `trust` -> the active set of the snapshot window and the membership
//!   certificates that led to it ([`Trust`], written with `target`);
//! - `c` || chunk index (u64 BE) -> empty: that chunk is in;
//! - `e` || entry key -> entry value.
//!
//! A verified chunk is written with its marker in one synced batch, so
//! after a kill the markers say exactly which chunks are in and nothing
//! else is (a resume fetches only the others). Memory stays bounded: a
//! chunk is written as it arrives and the final check streams the entries
//! back chunk by chunk.

use std::path::{Path, PathBuf};

use montana_vdf::Hash32;
use rocksdb::{IteratorMode, Options, WriteBatch, WriteOptions, DB};

use crate::consensus::merkle;
use crate::proposal::Proposal;
use crate::storage::StoreError;

use super::certificate::Trust;
use super::format::{root_from_chunks, Chunk, ChunkEnds, Manifest, CHUNK_SIZE};

const KEY_TARGET: &[u8] = b"target";
const KEY_PROPOSAL: &[u8] = b"proposal";
const KEY_TRUST: &[u8] = b"trust";
const CHUNK: u8 = b'c';
const ENTRY: u8 = b'e';

/// Why a staging area found on disk cannot be used (written by an older
/// build in another layout, garbled, or a target without the certificates
/// it was trusted through): it is discarded ([`Staging::open_or_discard`]),
/// since it holds only what can be fetched again.
#[derive(Debug, thiserror::Error)]
#[error("the staging area {path} cannot be used ({why})")]
pub struct Unusable {
    pub path: PathBuf,
    pub why: String,
}

/// The reason in a staging area's error, without the advice the live
/// database's errors carry.
pub(crate) fn reason(e: &StoreError) -> String {
    match e {
        StoreError::Db { why, .. } | StoreError::Corrupt { why, .. } => why.clone(),
        e => e.to_string(),
    }
}

/// A chunk staged: its index and, when its marker says, its ends (what the
/// member check needs of it after a restart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldChunk {
    pub index: u64,
    pub ends: Option<ChunkEnds>,
}

/// The staging database.
pub struct Staging {
    db: DB,
    path: PathBuf,
    target: Option<Manifest>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging").field("path", &self.path).finish()
    }
}

fn chunk_key(index: u64) -> [u8; 9] {
    let mut k = [CHUNK; 9];
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

impl Staging {
    /// Opens (or creates) the staging database at `path` and checks what
    /// it holds ([`Staging::check`]): `Err` when it cannot be used.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_write_buffer_size(8 << 20);
        opts.set_max_open_files(64);
        opts.set_keep_log_file_num(2);
        let db = DB::open(&opts, path).map_err(|e| StoreError::Db {
            path: path.to_path_buf(),
            why: e.into_string(),
        })?;
        let mut s = Staging {
            db,
            path: path.to_path_buf(),
            target: None,
        };
        s.target = match s.get(KEY_TARGET)? {
            None => None,
            Some(b) => Some(Manifest::decode(&b).map_err(|e| s.corrupt(&format!("target: {e}")))?),
        };
        s.check()?;
        Ok(s)
    }

    /// Opens the staging area at `path`; one that cannot be used
    /// ([`Staging::open`] fails) is removed and a fresh one opened. Returns
    /// it and, if the one found was discarded, why. `Err` only when a
    /// fresh one cannot be opened either (the disk, the permissions).
    pub fn open_or_discard(path: &Path) -> Result<(Self, Option<Unusable>), StoreError> {
        match Staging::open(path) {
            Ok(s) => Ok((s, None)),
            Err(e) => {
                let why = reason(&e);
                let s = Staging::discard(path)?;
                let path = path.to_path_buf();
                Ok((s, Some(Unusable { path, why })))
            }
        }
    }

    /// Removes whatever is at `path` and opens a fresh staging area there.
    pub fn discard(path: &Path) -> Result<Self, StoreError> {
        let gone = if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        match gone {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StoreError::Db {
                    path: path.to_path_buf(),
                    why: format!("cannot remove the staging area: {e}"),
                })
            }
            _ => {}
        }
        Staging::open(path)
    }

    /// Everything staged decodes and hangs together: a target comes with
    /// its trust (a staging area written before certificates were staged
    /// has none: it could never be installed), the proposal decodes, the
    /// chunk markers are of the target's chunks, and once every chunk is
    /// marked the entries give the target's root (else the sync would
    /// install nothing, ever, from it).
    fn check(&self) -> Result<(), StoreError> {
        let Some(m) = &self.target else {
            return Ok(());
        };
        if self.trust()?.is_none() {
            return Err(self.corrupt(
                "a target without the certificates it was trusted through (an older build's)",
            ));
        }
        self.proposal()?;
        let held = self.held()?;
        if let Some(i) = held.iter().find(|i| **i >= m.chunks()) {
            return Err(self.corrupt(&format!(
                "chunk {i} marked in, past the target's {} chunks",
                m.chunks()
            )));
        }
        if held.len() as u64 == m.chunks() && self.root()? != (m.entries, m.root) {
            return Err(self.corrupt(
                "every chunk is marked in but the entries do not give the target's root",
            ));
        }
        Ok(())
    }

    fn err(&self, e: rocksdb::Error) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            why: e.into_string(),
        }
    }

    fn corrupt(&self, why: &str) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            why: why.to_string(),
        }
    }

    fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get(k).map_err(|e| self.err(e))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(|e| self.err(e))
    }

    /// The snapshot being fetched, if any.
    pub fn target(&self) -> Option<&Manifest> {
        self.target.as_ref()
    }

    /// Drops whatever is staged and starts on `m`, trusted through `trust`.
    pub fn reset(&mut self, m: &Manifest, trust: &Trust) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_range(&[0u8][..], &[0xffu8; 9][..]);
        batch.put(KEY_TARGET, m.encode());
        batch.put(KEY_TRUST, trust.encode());
        self.write(batch)?;
        self.target = Some(m.clone());
        Ok(())
    }

    /// Drops everything (after the snapshot was installed).
    pub fn clear(&mut self) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_range(&[0u8][..], &[0xffu8; 9][..]);
        self.write(batch)?;
        self.target = None;
        Ok(())
    }

    /// The chunks of the target in (their markers), in index order.
    pub fn held(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self.held_chunks()?.into_iter().map(|h| h.index).collect())
    }

    /// The chunks of the target in, in index order, each with its ends
    /// (unknown for a marker an older build wrote).
    pub fn held_chunks(&self) -> Result<Vec<HeldChunk>, StoreError> {
        let mut out = Vec::new();
        let from = chunk_key(0);
        for item in self
            .db
            .iterator(IteratorMode::From(&from, rocksdb::Direction::Forward))
        {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if k.first() != Some(&CHUNK) {
                break;
            }
            let i: [u8; 8] = k[1..]
                .try_into()
                .map_err(|_| self.corrupt("a chunk marker key"))?;
            out.push(HeldChunk {
                index: u64::from_be_bytes(i),
                ends: ChunkEnds::decode(&v),
            });
        }
        Ok(out)
    }

    /// Writes a verified chunk of the target and its marker, synced, in one
    /// batch.
    pub fn put_chunk(&mut self, c: &Chunk) -> Result<(), StoreError> {
        match &self.target {
            Some(m) if m.window == c.window && m.root == c.root => {}
            _ => return Err(self.corrupt("a chunk of another snapshot than the target")),
        }
        let mut batch = WriteBatch::default();
        let mut key = Vec::with_capacity(64);
        for (k, v) in &c.entries {
            key.clear();
            key.push(ENTRY);
            key.extend_from_slice(k);
            batch.put(&key, v);
        }
        batch.put(chunk_key(c.index), c.ends().encode());
        self.write(batch)
    }

    /// Records the proposal of the target window (its hash checked by the
    /// caller).
    pub fn put_proposal(&mut self, p: &Proposal) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put(KEY_PROPOSAL, p.to_bytes());
        self.write(batch)
    }

    /// What the target's trust rests on (absent in a staging area written
    /// before certificates were staged, which [`Staging::open`] refuses).
    pub fn trust(&self) -> Result<Option<Trust>, StoreError> {
        match self.get(KEY_TRUST)? {
            None => Ok(None),
            Some(b) => Trust::decode(&b)
                .map(Some)
                .map_err(|e| self.corrupt(&format!("trust: {e}"))),
        }
    }

    pub fn proposal(&self) -> Result<Option<Proposal>, StoreError> {
        match self.get(KEY_PROPOSAL)? {
            None => Ok(None),
            Some(b) => Proposal::from_bytes(&b)
                .map(Some)
                .map_err(|e| self.corrupt(&format!("proposal: {e}"))),
        }
    }

    /// The staged entries in key order (key without the staging prefix).
    pub fn entries(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + '_ {
        let from = [ENTRY];
        self.db
            .iterator(IteratorMode::From(&from, rocksdb::Direction::Forward))
            .map(|item| item.map_err(|e| self.err(e)))
            .take_while(|item| !matches!(item, Ok((k, _)) if k.first() != Some(&ENTRY)))
            .map(|item| item.map(|(k, v)| (k[1..].to_vec(), v.to_vec())))
    }

    /// Recomputes the state root of everything staged, streaming (one
    /// chunk's leaves at a time), and returns it with the entry count.
    pub fn root(&self) -> Result<(u64, Hash32), StoreError> {
        let mut n = 0u64;
        let mut leaves = Vec::with_capacity(CHUNK_SIZE as usize);
        let mut chunk_hashes = Vec::new();
        for item in self.entries() {
            let (k, v) = item?;
            leaves.push(merkle::leaf(&k, &v));
            n += 1;
            if leaves.len() == CHUNK_SIZE as usize {
                chunk_hashes.push(merkle::mth(&leaves));
                leaves.clear();
            }
        }
        if !leaves.is_empty() {
            chunk_hashes.push(merkle::mth(&leaves));
        }
        Ok((n, root_from_chunks(n, &chunk_hashes)))
    }

    /// Every chunk of the target is in, its proposal too, and the staged
    /// entries have the target's count and root.
    pub fn complete(&self) -> Result<bool, StoreError> {
        let Some(m) = &self.target else {
            return Ok(false);
        };
        if self.held()?.len() as u64 != m.chunks() || self.proposal()?.is_none() {
            return Ok(false);
        }
        Ok(self.root()? == (m.entries, m.root))
    }

    /// Why the staged snapshot must not be installed, if so: its state's
    /// members (tag `m`, committed to by the root) are not the set its
    /// staged trust leads to after the window ([`Trust::state_set`]), that
    /// is, the certificates it was trusted through left a change of the
    /// set out (or there is no trust staged). Meaningful once every entry
    /// tagged `m` is staged: the syncing machine fetches the member chunks
    /// (at the end of the state) first and asks for this check as soon as
    /// they verified (`Action::CheckMembers`), and the install asks again.
    pub fn untrusted(&self) -> Result<Option<String>, StoreError> {
        let Some(m) = &self.target else {
            return Ok(Some("nothing staged".into()));
        };
        let Some(trust) = self.trust()? else {
            return Ok(Some("no active set staged with it".into()));
        };
        let want = match trust.state_set(m.window) {
            Ok(s) => s,
            Err(e) => return Ok(Some(e)),
        };
        let from = [ENTRY, b'm'];
        let mut members = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(&from, rocksdb::Direction::Forward))
        {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if !k.starts_with(&from) {
                break;
            }
            members.push((k[1..].to_vec(), v.to_vec()));
        }
        let got = match crate::consensus::state::Roster::from_entries(
            members.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        ) {
            Ok(r) => r.active,
            Err(e) => return Ok(Some(format!("the state's members: {e}"))),
        };
        if got != want {
            return Ok(Some(format!(
                "the state after window {} has {} members, not the {} its certificates lead to: a change of the set was left out",
                m.window,
                got.len(),
                want.len()
            )));
        }
        Ok(None)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::snapshot::format::tests::fixture;

    /// A staging area at `path` as an older build left it: a target whose
    /// manifest carries the 226-byte proposal header of before (and one
    /// chunk in).
    pub(crate) fn stage_old_layout(path: &Path) {
        let f = fixture(10_000, 5);
        {
            let mut s = Staging::open(path).unwrap();
            s.reset(&f.manifest, &f.trust()).unwrap();
            s.put_chunk(&f.chunk(0)).unwrap();
        }
        let mut old = f.manifest.encode();
        old.drain(57 + 226..57 + crate::proposal::HEADER_LEN);
        let db = DB::open_default(path).unwrap();
        db.put(KEY_TARGET, old).unwrap();
    }

    /// What an older build left, or a garbled one, is refused at open with
    /// a reason and discarded by `open_or_discard` (a fresh, empty staging
    /// area in its place); a usable one is kept as it is.
    #[test]
    fn a_staging_area_that_cannot_be_used_is_discarded() {
        let f = fixture(10_000, 5);
        let usable = |p: &Path| {
            let mut s = Staging::open(p).unwrap();
            s.reset(&f.manifest, &f.trust()).unwrap();
            s.put_chunk(&f.chunk(1)).unwrap();
        };
        let dir = tempfile::tempdir().unwrap();
        type Make<'a> = Box<dyn Fn(&Path) + 'a>;
        let cases: Vec<(&str, Make)> = vec![
            ("old layout", Box::new(stage_old_layout)),
            (
                "no trust",
                Box::new(|p| {
                    usable(p);
                    DB::open_default(p).unwrap().delete(KEY_TRUST).unwrap();
                }),
            ),
            (
                "garbled trust",
                Box::new(|p| {
                    usable(p);
                    DB::open_default(p).unwrap().put(KEY_TRUST, b"x").unwrap();
                }),
            ),
            (
                "a marker past the last chunk",
                Box::new(|p| {
                    usable(p);
                    DB::open_default(p).unwrap().put(chunk_key(9), []).unwrap();
                }),
            ),
            (
                "every chunk marked, the entries not the target's",
                Box::new(|p| {
                    usable(p);
                    let db = DB::open_default(p).unwrap();
                    db.put(chunk_key(0), []).unwrap();
                    db.put(chunk_key(2), []).unwrap();
                }),
            ),
            (
                "garbled database",
                Box::new(|p| {
                    usable(p);
                    std::fs::write(p.join("CURRENT"), b"MANIFEST-999999\n").unwrap();
                }),
            ),
            (
                "a file",
                Box::new(|p| std::fs::write(p, b"not a database").unwrap()),
            ),
        ];
        for (i, (what, make)) in cases.iter().enumerate() {
            let p = dir.path().join(format!("staging-{i}"));
            make(&p);
            assert!(Staging::open(&p).is_err(), "{what}: opened");
            let (s, discarded) = Staging::open_or_discard(&p).unwrap();
            let u = discarded.unwrap_or_else(|| panic!("{what}: not discarded"));
            assert_eq!(u.path, p);
            assert!(!u.why.contains("move it aside"), "{what}: {u}");
            assert!(s.target().is_none(), "{what}");
            assert!(s.held().unwrap().is_empty(), "{what}");
            assert_eq!(s.entries().count(), 0, "{what}");
        }
        // A usable one is kept whole.
        let p = dir.path().join("usable");
        usable(&p);
        let (s, discarded) = Staging::open_or_discard(&p).unwrap();
        assert!(discarded.is_none());
        assert_eq!(s.target(), Some(&f.manifest));
        assert_eq!(s.held().unwrap(), vec![1]);
    }

    #[test]
    fn chunks_survive_a_reopen_and_the_root_is_recomputed() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture(10_000, 5);
        {
            let mut s = Staging::open(dir.path()).unwrap();
            assert!(s.target().is_none());
            s.reset(&f.manifest, &f.trust()).unwrap();
            s.put_chunk(&f.chunk(2)).unwrap();
            s.put_chunk(&f.chunk(0)).unwrap();
            assert!(!s.complete().unwrap());
        } // killed here
        let mut s = Staging::open(dir.path()).unwrap();
        assert_eq!(s.target(), Some(&f.manifest));
        assert_eq!(s.held().unwrap(), vec![0, 2]);
        // Each with its ends, for the member check of a resume; a marker
        // an older build wrote (empty) has none.
        let ends: Vec<_> = s.held_chunks().unwrap().iter().map(|h| h.ends).collect();
        assert_eq!(ends, vec![Some(f.chunk(0).ends()), Some(f.chunk(2).ends())]);
        assert!(ends[0].is_some_and(|e| e.first.is_some() && e.last.is_some()));
        s.db.put(chunk_key(1), []).unwrap();
        assert_eq!(s.held_chunks().unwrap()[1].ends, None);
        s.put_chunk(&f.chunk(1)).unwrap();
        assert!(!s.complete().unwrap(), "no proposal yet");
        s.put_proposal(&f.proposal).unwrap();
        assert!(s.complete().unwrap());
        assert_eq!(s.root().unwrap(), (10_000, f.manifest.root));
        let staged: Vec<_> = s.entries().map(|e| e.unwrap()).collect();
        assert_eq!(staged, f.entries);
        // A chunk of another snapshot is refused; a reset drops everything.
        let g = fixture(100, 6);
        assert!(s.put_chunk(&g.chunk(0)).is_err());
        s.reset(&g.manifest, &g.trust()).unwrap();
        assert!(s.held().unwrap().is_empty());
        assert_eq!(s.entries().count(), 0);
        assert!(s.proposal().unwrap().is_none());
        s.clear().unwrap();
        assert!(s.target().is_none());
    }
}
