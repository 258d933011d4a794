//! The fast-sync side of the store (docs/SPEC.md 13.5): checkpoints to
//! build snapshots from, and installing a verified snapshot from the
//! staging area.
//!
//! Installing window w's snapshot: first the metadata record `installing`
//! (w, u64 LE) is written, synced; then the `state` column family is
//! cleared and refilled from the staging area in batches; the last batch
//! writes the proposal and Cement of w, the root, the tip (w), the
//! `snapshot_window` record (w, u64 LE), the set that cemented w
//! (`tip_set`) and the membership certificates that led to it (verified by
//! the sync, kept to serve on), and deletes `installing`, synced.
//! A node killed in between finds `installing` at its next start
//! ([`Store::pending_install`]) and installs again from the staging area,
//! which is cleared only after the install completed: the live state is
//! the old one or the whole new one, never a mix that is used. When the
//! staging area cannot give that snapshot any more (written by an older
//! build, garbled, incomplete), the install is given up
//! ([`Store::abandon_install`]): the state is kept if the install had not
//! touched it (its entries still give the stored root), else it is the
//! genesis state again at tip 0; the cemented proposals, Cements and
//! certificates stay either way, and the node syncs again or replays.

use std::path::{Path, PathBuf};

use rocksdb::{checkpoint::Checkpoint, IteratorMode, WriteBatch};

use super::{
    certificate_key, encode_set, open_db, Store, StoreError, Tip, CF_CEMENTS, CF_METADATA,
    CF_PROPOSALS, CF_STATE, KEY_APPLIED, KEY_CERTIFICATE, KEY_CREATING, KEY_ROOT, KEY_TIP,
    KEY_TIP_SET,
};
use crate::consensus::merkle;
use crate::genesis::Genesis;
use crate::snapshot::staging::{reason, Staging};

const KEY_INSTALLING: &[u8] = b"installing";
const KEY_SNAPSHOT_WINDOW: &[u8] = b"snapshot_window";
/// Entries per write batch while installing (bounded memory).
const INSTALL_BATCH: usize = 65_536;

fn u64_of(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// Why a staged snapshot was not installed ([`Store::try_install_snapshot`]).
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The staging area does not give a snapshot to install: nothing or
    /// not all of it staged, not above the tip, not trusted, or its
    /// records unreadable. Nothing was written, unless reading the staged
    /// entries failed mid-install (`installing` is then left set).
    #[error("{0}")]
    Refused(String),
    /// The live database failed.
    #[error(transparent)]
    Store(StoreError),
}

/// What [`Store::abandon_install`] left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abandoned {
    /// The install had not touched the state: the tip and state before it
    /// are kept.
    Kept(Tip),
    /// The state was partly replaced: it is the genesis state again, at
    /// tip 0.
    Reset,
}

impl Store {
    /// A RocksDB checkpoint of the database at `dest` (hard links of the
    /// table files and a flushed memtable): a consistent copy of exactly
    /// this tip, taken in milliseconds, for [`crate::snapshot::disk`] to
    /// build a snapshot from off the event loop.
    pub fn checkpoint(&self, dest: &Path) -> Result<(), StoreError> {
        let err = |e: rocksdb::Error| StoreError::Db {
            path: dest.to_path_buf(),
            why: e.into_string(),
        };
        Checkpoint::new(self.db())
            .map_err(err)?
            .create_checkpoint(dest)
            .map_err(err)
    }

    /// The window this node's state was installed from by fast-sync, if any.
    pub fn snapshot_window(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .get(CF_METADATA, KEY_SNAPSHOT_WINDOW)?
            .and_then(|b| u64_of(&b)))
    }

    /// The window of an install that was interrupted (finish it with
    /// [`Store::install_snapshot`] before reading the state).
    pub fn pending_install(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .get(CF_METADATA, KEY_INSTALLING)?
            .and_then(|b| u64_of(&b)))
    }

    /// Installs the complete, verified snapshot staged in `staging` as the
    /// live state (see the module docs) and returns the new tip. Refuses a
    /// staging area that is not complete (every chunk, the proposal, the
    /// recomputed root), one whose state's members are not the set its
    /// certificates lead to ([`Staging::untrusted`]) and a snapshot not
    /// above the tip; a refusal writes nothing.
    pub fn install_snapshot(&mut self, staging: &Staging) -> Result<Tip, StoreError> {
        self.try_install_snapshot(staging).map_err(|e| match e {
            InstallError::Refused(why) => StoreError::Db {
                path: self.path.clone(),
                why: format!("cannot install the snapshot: {why}"),
            },
            InstallError::Store(e) => e,
        })
    }

    /// [`Store::install_snapshot`], telling a staging area that does not
    /// give a snapshot to install ([`InstallError::Refused`]) from a
    /// failure of the live database.
    pub fn try_install_snapshot(&mut self, staging: &Staging) -> Result<Tip, InstallError> {
        let refuse = InstallError::Refused;
        let staged = |e: StoreError| InstallError::Refused(reason(&e));
        let m = staging
            .target()
            .cloned()
            .ok_or_else(|| refuse("nothing staged".into()))?;
        let pending = self.pending_install().map_err(InstallError::Store)?;
        if m.window <= self.tip.window && pending != Some(m.window) {
            return Err(refuse(format!(
                "window {} is not above the tip {}",
                m.window, self.tip.window
            )));
        }
        if !staging.complete().map_err(staged)? {
            return Err(refuse(
                "the staged snapshot is incomplete or does not match its root".into(),
            ));
        }
        let p = staging
            .proposal()
            .map_err(staged)?
            .ok_or_else(|| refuse("no proposal".into()))?;
        if p.hash() != m.header.hash() {
            return Err(refuse("the staged proposal is not the cemented one".into()));
        }
        if let Some(why) = staging.untrusted().map_err(staged)? {
            return Err(refuse(why));
        }
        let trust = staging.trust().map_err(staged)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_METADATA), KEY_INSTALLING, m.window.to_le_bytes());
        self.write(batch).map_err(InstallError::Store)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_STATE), &[0u8][..], &[0xffu8; 300][..]);
        let mut n = 0usize;
        for item in staging.entries() {
            let (k, v) = item.map_err(staged)?;
            batch.put_cf(self.cf(CF_STATE), k, v);
            n += 1;
            if n.is_multiple_of(INSTALL_BATCH) {
                self.write(std::mem::take(&mut batch))
                    .map_err(InstallError::Store)?;
            }
        }
        let tip = Tip {
            window: m.window,
            t: m.header.t,
            hash: m.header.hash(),
        };
        let w = m.window.to_be_bytes();
        batch.put_cf(self.cf(CF_PROPOSALS), w, p.to_bytes());
        batch.put_cf(self.cf(CF_CEMENTS), w, m.cement.encode());
        batch.put_cf(self.cf(CF_METADATA), KEY_ROOT, m.root.0);
        batch.put_cf(self.cf(CF_METADATA), KEY_TIP, tip.to_bytes());
        batch.put_cf(
            self.cf(CF_METADATA),
            KEY_SNAPSHOT_WINDOW,
            m.window.to_le_bytes(),
        );
        if let Some(t) = &trust {
            batch.put_cf(self.cf(CF_METADATA), KEY_TIP_SET, encode_set(&t.set));
            for c in &t.certificates {
                batch.put_cf(
                    self.cf(CF_METADATA),
                    certificate_key(c.window()),
                    c.encode(),
                );
            }
        }
        batch.delete_cf(self.cf(CF_METADATA), KEY_APPLIED);
        batch.delete_cf(self.cf(CF_METADATA), KEY_INSTALLING);
        self.write(batch).map_err(InstallError::Store)?;
        self.tip = tip;
        Ok(tip)
    }

    /// Gives up an interrupted install that cannot be finished (see the
    /// module docs) and clears `installing`: the state is kept when its
    /// entries still give the stored root, else the genesis state is
    /// written again with tip 0 and no `snapshot_window`, `tip_set` or
    /// `applied`. Proposals, Cements, certificates and `signed` are kept.
    /// Killed half-way, it is given up again at the next start.
    pub fn abandon_install(&mut self, genesis: &Genesis) -> Result<Abandoned, StoreError> {
        let mut tree = merkle::Streaming::default();
        for item in self
            .db()
            .iterator_cf(self.cf(CF_STATE), IteratorMode::Start)
        {
            let (k, v) = item.map_err(|e| self.corrupt(&e.into_string()))?;
            tree.push(merkle::leaf(&k, &v));
        }
        let stored = self.get(CF_METADATA, KEY_ROOT)?;
        let mut batch = WriteBatch::default();
        if stored.as_deref() == Some(&tree.root().0[..]) {
            batch.delete_cf(self.cf(CF_METADATA), KEY_INSTALLING);
            self.write(batch)?;
            return Ok(Abandoned::Kept(self.tip));
        }
        let root = self.write_initial_state(genesis)?;
        let tip = Tip::genesis(genesis);
        batch.put_cf(self.cf(CF_METADATA), KEY_TIP, tip.to_bytes());
        batch.put_cf(self.cf(CF_METADATA), KEY_ROOT, root.0);
        for k in [
            KEY_TIP_SET,
            KEY_SNAPSHOT_WINDOW,
            KEY_APPLIED,
            KEY_CREATING,
            KEY_INSTALLING,
        ] {
            batch.delete_cf(self.cf(CF_METADATA), k);
        }
        self.write(batch)?;
        self.tip = tip;
        Ok(Abandoned::Reset)
    }
}

#[cfg(test)]
impl Store {
    /// What a kill part-way through installing `window` leaves:
    /// `installing` set and, when `half`, the state partly replaced.
    pub(crate) fn interrupt_install(&mut self, window: u64, half: bool) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_METADATA), KEY_INSTALLING, window.to_le_bytes());
        if half {
            batch.delete_range_cf(self.cf(CF_STATE), &[0u8][..], &[0xffu8; 300][..]);
            batch.put_cf(self.cf(CF_STATE), b"a-partial", b"x");
        }
        self.write(batch)
    }
}

/// A checkpoint's tip: the tip, its state root, its proposal's and its
/// Cement's bytes.
pub type CheckpointTip = (Tip, [u8; 32], Vec<u8>, Vec<u8>);
/// One state entry read back: key and value.
pub type RawEntry = (Box<[u8]>, Box<[u8]>);

/// A read-only view of a checkpoint: what a snapshot is built from.
pub struct CheckpointView {
    db: rocksdb::DB,
    path: PathBuf,
}

impl CheckpointView {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(CheckpointView {
            db: open_db(path, true, true)?,
            path: path.to_path_buf(),
        })
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let h = self.db.cf_handle(cf).expect("column families opened");
        self.db.get_cf(h, key).map_err(|e| StoreError::Db {
            path: self.path.clone(),
            why: e.into_string(),
        })
    }

    /// The tip, its state root, its proposal's bytes and Cement's bytes.
    pub fn tip(&self) -> Result<CheckpointTip, StoreError> {
        let corrupt = |why: &str| StoreError::Corrupt {
            path: self.path.clone(),
            why: why.into(),
        };
        let tip = self
            .get(CF_METADATA, KEY_TIP)?
            .and_then(|b| Tip::from_bytes(&b))
            .ok_or_else(|| corrupt("no tip"))?;
        let root: [u8; 32] = self
            .get(CF_METADATA, KEY_ROOT)?
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("no state root"))?;
        let w = tip.window.to_be_bytes();
        let p = self
            .get(CF_PROPOSALS, &w)?
            .ok_or_else(|| corrupt("no tip proposal"))?;
        let c = self
            .get(CF_CEMENTS, &w)?
            .ok_or_else(|| corrupt("no tip cement"))?;
        Ok((tip, root, p, c))
    }

    /// The membership certificates stored, ascending windows (bytes).
    pub fn certificates(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let h = self
            .db
            .cf_handle(CF_METADATA)
            .expect("column families opened");
        let mut out = Vec::new();
        let from = IteratorMode::From(KEY_CERTIFICATE, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(h, from) {
            let (k, v) = item.map_err(|e| StoreError::Db {
                path: self.path.clone(),
                why: e.into_string(),
            })?;
            let Some(w) = k.strip_prefix(KEY_CERTIFICATE) else {
                break;
            };
            let w: [u8; 8] = w.try_into().map_err(|_| StoreError::Corrupt {
                path: self.path.clone(),
                why: "a certificate key".into(),
            })?;
            out.push((u64::from_be_bytes(w), v.to_vec()));
        }
        Ok(out)
    }

    /// The state entries in key order.
    pub fn entries(&self) -> impl Iterator<Item = Result<RawEntry, StoreError>> + '_ {
        let h = self.db.cf_handle(CF_STATE).expect("column families opened");
        self.db.iterator_cf(h, IteratorMode::Start).map(|i| {
            i.map_err(|e| StoreError::Db {
                path: self.path.clone(),
                why: e.into_string(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genesis::tests::peers;
    use crate::genesis::Genesis;
    use crate::snapshot::format::tests::fixture;
    use montana_vdf::HashSuite;

    #[test]
    fn an_interrupted_install_is_finished_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = peers(2);
        let g = Genesis::new(p, HashSuite::Sha256, 40, 4, 1.0).unwrap();
        let f = fixture(10_000, 5);
        let mut staging = Staging::open(&dir.path().join("staging")).unwrap();
        staging.reset(&f.manifest, &f.trust()).unwrap();
        staging.put_chunk(&f.chunk(0)).unwrap();
        staging.put_chunk(&f.chunk(1)).unwrap();
        staging.put_proposal(&f.proposal).unwrap();
        {
            let mut s = Store::open(dir.path(), &g).unwrap();
            let e = s.install_snapshot(&staging).unwrap_err();
            assert!(e.to_string().contains("incomplete"), "{e}");
            assert_eq!(s.tip().window, 0, "nothing installed");
            staging.put_chunk(&f.chunk(2)).unwrap();
            // Killed mid-install: the marker is written, the state half
            // replaced, the tip not yet moved.
            let mut batch = WriteBatch::default();
            batch.put_cf(s.cf(CF_METADATA), KEY_INSTALLING, 5u64.to_le_bytes());
            batch.delete_range_cf(s.cf(CF_STATE), &[0u8][..], &[0xffu8; 300][..]);
            batch.put_cf(s.cf(CF_STATE), b"a-partial", b"x");
            s.write(batch).unwrap();
        }
        let mut s = Store::open(dir.path(), &g).unwrap();
        assert_eq!(s.pending_install().unwrap(), Some(5));
        assert_eq!(s.tip().window, 0);
        let tip = s.install_snapshot(&staging).unwrap();
        assert_eq!(tip.window, 5);
        assert_eq!(tip.hash, f.proposal.hash());
        assert_eq!(s.pending_install().unwrap(), None);
        assert_eq!(s.snapshot_window().unwrap(), Some(5));
        let live: Vec<(Vec<u8>, Vec<u8>)> = s
            .db()
            .iterator_cf(s.cf(CF_STATE), IteratorMode::Start)
            .map(|i| {
                let (k, v) = i.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect();
        assert_eq!(
            live, f.entries,
            "exactly the snapshot, nothing of the old state"
        );
        // The same snapshot again (not above the tip) is refused.
        assert!(s.install_snapshot(&staging).is_err());
        drop(s);
        let s = Store::open(dir.path(), &g).unwrap();
        assert_eq!(s.tip(), tip);
        assert_eq!(s.proposal(5).unwrap().as_ref(), Some(&f.proposal));
    }

    /// A node that fast-synced through two changes of the active set
    /// (windows 2 and 4) installs both certificates, and the snapshot it
    /// then writes carries them: it is served, certified from the genesis
    /// set, with both.
    #[test]
    fn a_fast_synced_node_serves_its_snapshots_with_every_certificate() {
        use crate::consensus::active::tests::set_of;
        use crate::snapshot::certificate::{tests::certificate, Trust};
        use crate::snapshot::disk::{self, Certify, Snapshots};
        use crate::snapshot::format::tests::snapshot_of;
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = peers(2);
        let genesis = Genesis::new(p, HashSuite::Sha256, 40, 4, 1.0).unwrap();
        let (g, gk) = set_of(4);
        let (s2, k2) = set_of(5);
        let (s4, k4) = set_of(4);
        let f = snapshot_of(10_000, 7, &s4, &[&k4[0], &k4[1], &k4[2]]);
        let c2 = certificate(&s2, 2, &[&gk[0], &gk[1], &gk[2]]);
        let c4 = certificate(&s4, 4, &[&k2[0], &k2[1], &k2[2], &k2[3]]);
        let trust = Trust {
            set: s4.clone(),
            certificates: vec![c2.clone(), c4.clone()],
        };
        let mut staging = Staging::open(&dir.path().join("staging")).unwrap();
        staging.reset(&f.manifest, &trust).unwrap();
        for i in 0..f.manifest.chunks() {
            staging.put_chunk(&f.chunk(i)).unwrap();
        }
        staging.put_proposal(&f.proposal).unwrap();
        let mut s = Store::open(dir.path(), &genesis).unwrap();
        s.install_snapshot(&staging).unwrap();
        let ckpt = dir.path().join("ckpt");
        s.checkpoint(&ckpt).unwrap();
        let snapdir = dir.path().join("snapshots");
        disk::build(&ckpt, &snapdir, 2).unwrap();
        let snaps = Snapshots::serving(
            &snapdir,
            Certify {
                genesis_set: g,
                quorum: Default::default(),
            },
        );
        assert!(snaps.load(7).0);
        assert_eq!(snaps.manifest(0), Some(f.manifest.encode()));
        assert_eq!(snaps.certificates(0, 8), vec![c2.encode(), c4.encode()]);
    }

    /// A complete snapshot whose state's members are not the set its
    /// trust leads to (a change of the set left out) is refused and
    /// nothing of it is written: no `installing` marker, the tip and the
    /// state unchanged.
    #[test]
    fn a_snapshot_whose_members_are_not_its_trusted_set_is_not_installed() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = peers(2);
        let g = Genesis::new(p, HashSuite::Sha256, 40, 4, 1.0).unwrap();
        let f = fixture(10_000, 5);
        let mut trust = f.trust();
        trust.set = crate::consensus::active::tests::set_of(4).0;
        let mut staging = Staging::open(&dir.path().join("staging")).unwrap();
        staging.reset(&f.manifest, &trust).unwrap();
        for i in 0..f.manifest.chunks() {
            staging.put_chunk(&f.chunk(i)).unwrap();
        }
        staging.put_proposal(&f.proposal).unwrap();
        assert!(staging.complete().unwrap());
        let mut s = Store::open(dir.path(), &g).unwrap();
        let before: Vec<_> = s
            .db()
            .iterator_cf(s.cf(CF_STATE), IteratorMode::Start)
            .map(|i| i.unwrap())
            .collect();
        let e = s.install_snapshot(&staging).unwrap_err();
        assert!(e.to_string().contains("left out"), "{e}");
        assert_eq!(s.tip().window, 0);
        assert_eq!(s.pending_install().unwrap(), None);
        assert_eq!(s.snapshot_window().unwrap(), None);
        let after: Vec<_> = s
            .db()
            .iterator_cf(s.cf(CF_STATE), IteratorMode::Start)
            .map(|i| i.unwrap())
            .collect();
        assert_eq!(before, after);
    }
}
