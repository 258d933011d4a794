//! The node's storage: RocksDB under `DIR/db/`.
//!
//! Column families:
//! - `metadata`: `schema_version` (u32 LE, [`SCHEMA_VERSION`]: the layout
//!   of everything below; written when the database is created),
//!   `network_id` (32 bytes: a data dir belongs to one network),
//!   `tip` (the last cemented window: window u64 LE, T 32, proposal hash 32),
//!   `state_root` (32: the state root after `tip`), `applied` (the window
//!   after the tip once its T is verified: window u64 LE, T 32) and
//!   `signed` (the highest (window, round, step) this node signed, and its
//!   lock: `chain::Signed`), `tip_set` (the active set that cemented the
//!   tip: u16 n, then n x (weight u64 LE, ML-DSA-65 key)), and
//!   `certificate` || window (u64 BE) -> the membership certificate of each
//!   cemented window after which the active set changed (docs/SPEC.md
//!   13.4; served to fast-syncing nodes).
//! - `proposals`: window (u64 big-endian, so keys sort by window) -> the
//!   cemented proposal's bytes (docs/SPEC.md section 7).
//! - `cements`: window (u64 BE) -> the window's canonical Cement (the one
//!   the next window's proposal names; this node's own until then).
//! - `state`: consensus state entries (docs/SPEC.md 9.6), key -> value.
//! - `peers`: peer index (u16 big-endian) -> the genesis peer as JSON.
//!
//! Cementing windows writes their proposals, Cements, the state entries
//! they change, the new root and the new tip in one atomic `WriteBatch`
//! with the write-ahead log synced: once [`Store::cement`] returns, a crash
//! loses nothing, and a restart resumes from exactly that tip (never
//! applying or paying a window twice). Options are sized for a 1 GB host:
//! an 8 MiB block cache and 4 MiB write buffers, no compression (hashes do
//! not compress).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use montana_vdf::Hash32;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, WriteBatch,
    WriteOptions, DB,
};
use thiserror::Error;

use crate::chain::{Cemented, Signed, TipMeta};
use crate::consensus::active::NodeId;
use crate::consensus::state::{Roster, State};
use crate::consensus::vote::Cement;
use crate::genesis::Genesis;

/// Entries per batch when the genesis state is written.
const INITIAL_BATCH: usize = 65_536;
use crate::proposal::Proposal;

mod fastsync;
pub use fastsync::{Abandoned, CheckpointView, InstallError};

const CF_METADATA: &str = "metadata";
const CF_PROPOSALS: &str = "proposals";
const CF_CEMENTS: &str = "cements";
const CF_STATE: &str = "state";
const CF_PEERS: &str = "peers";
const KEY_SCHEMA_VERSION: &[u8] = b"schema_version";
const KEY_NETWORK_ID: &[u8] = b"network_id";

/// The database layout this build reads and writes. Version 1 (no
/// `schema_version` record) is what nodes wrote before consensus (genesis
/// version 1); a database of any other version is refused, never misread.
pub const SCHEMA_VERSION: u32 = 3;
const KEY_TIP: &[u8] = b"tip";
const KEY_ROOT: &[u8] = b"state_root";
/// Set (synced) while the genesis state is being written, before the
/// network id: a database holding it is a creation to finish, not records
/// that are gone.
const KEY_CREATING: &[u8] = b"creating";
const KEY_APPLIED: &[u8] = b"applied";
const KEY_SIGNED: &[u8] = b"signed";
pub(crate) const KEY_TIP_SET: &[u8] = b"tip_set";
/// Prefix of the membership certificates' keys (then the window, u64 BE).
pub(crate) const KEY_CERTIFICATE: &[u8] = b"certificate";

pub(crate) fn certificate_key(window: u64) -> Vec<u8> {
    let mut k = KEY_CERTIFICATE.to_vec();
    k.extend_from_slice(&window.to_be_bytes());
    k
}

/// `tip_set`'s bytes.
pub(crate) fn encode_set(set: &crate::consensus::active::ActiveSet) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + set.len() * 1960);
    v.extend_from_slice(&(set.len() as u16).to_le_bytes());
    for m in set.members() {
        v.extend_from_slice(&m.weight.to_le_bytes());
        v.extend_from_slice(&m.key.to_bytes());
    }
    v
}

pub(crate) fn decode_set(b: &[u8]) -> Option<crate::consensus::active::ActiveSet> {
    use crate::consensus::active::{ActiveSet, Member};
    use crate::keys::{VerifyingKey, SIGNING_PUBLIC_LEN};
    let n = u16::from_le_bytes(b.get(..2)?.try_into().ok()?) as usize;
    let each = 8 + SIGNING_PUBLIC_LEN;
    if b.len() != 2 + n * each {
        return None;
    }
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let e = &b[2 + i * each..2 + (i + 1) * each];
        let weight = u64::from_le_bytes(e[..8].try_into().ok()?);
        let key = VerifyingKey::from_bytes(&e[8..]).ok()?;
        members.push(Member {
            id: NodeId::of(&key),
            key,
            weight,
        });
    }
    ActiveSet::new(members).ok()
}

/// Storage failures; one line each, naming the path where it helps.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("data dir {path} is unusable: {why}")]
    DataDir { path: PathBuf, why: String },
    #[error("database {path}: {why}")]
    Db { path: PathBuf, why: String },
    #[error("database {path} belongs to another network (id {found}, genesis says {expected}); use another --data-dir")]
    OtherNetwork {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("database {path} was written by another montana version (schema {found}, this node needs {SCHEMA_VERSION}); move it aside or use another --data-dir")]
    Schema { path: PathBuf, found: u32 },
    #[error("database {path} is corrupt: {why}; move it aside (mv {path} {path}.bad) and start again to catch up from the peers (README: Recovering a node)")]
    Corrupt { path: PathBuf, why: String },
    #[error(
        "window {got} cannot be applied on top of window {tip} (windows apply in order, once)"
    )]
    OutOfOrder { tip: u64, got: u64 },
}

impl StoreError {
    /// A write failed for want of disk space.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::Db { why, .. } if why.contains("No space left on device") || why.contains("NoSpace"))
    }
}

/// The last applied window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tip {
    pub window: u64,
    /// T(window).
    pub t: Hash32,
    /// The proposal hash of `window`; the network id for window 0. It is the
    /// `link` the next proposal must carry.
    pub hash: [u8; 32],
}

impl Tip {
    /// Window 0: T0 and the network id.
    pub fn genesis(genesis: &Genesis) -> Self {
        Tip {
            window: 0,
            t: genesis.timechain().t0(),
            hash: genesis.network_id(),
        }
    }

    fn to_bytes(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(72);
        v.extend_from_slice(&self.window.to_le_bytes());
        v.extend_from_slice(&self.t.0);
        v.extend_from_slice(&self.hash);
        v
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != 72 {
            return None;
        }
        Some(Tip {
            window: u64::from_le_bytes(b[..8].try_into().ok()?),
            t: Hash32(b[8..40].try_into().ok()?),
            hash: b[40..72].try_into().ok()?,
        })
    }

    /// The tip after applying `p` on top of this one.
    pub fn after(&self, p: &Proposal) -> Tip {
        Tip {
            window: p.window(),
            t: p.header.t,
            hash: p.hash(),
        }
    }
}

/// The open database and the tip it holds.
pub struct Store {
    /// `None` only inside [`Store::reopen`].
    db: Option<Arc<DB>>,
    path: PathBuf,
    tip: Tip,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("tip", &self.tip.window)
            .finish()
    }
}

fn options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(DBCompressionType::None);
    opts.set_write_buffer_size(4 << 20);
    opts.set_max_write_buffer_number(2);
    opts.set_db_write_buffer_size(16 << 20);
    opts.set_max_open_files(64);
    opts.set_max_background_jobs(2);
    opts.set_keep_log_file_num(2);
    opts.set_max_total_wal_size(32 << 20);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&Cache::new_lru_cache(8 << 20));
    opts.set_block_based_table_factory(&table);
    opts
}

/// Checks that `dir` exists (creating it) and is writable, so a bad data dir
/// fails with a clear line instead of a RocksDB error deep in start-up.
pub fn check_data_dir(dir: &Path) -> Result<(), StoreError> {
    let fail = |why: String| StoreError::DataDir {
        path: dir.to_path_buf(),
        why,
    };
    if dir.exists() && !dir.is_dir() {
        return Err(fail("not a directory (a file is in its place)".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create it: {e}")))?;
    if !dir.is_dir() {
        return Err(fail("not a directory".into()));
    }
    let probe = dir.join(".montana-write-probe");
    std::fs::write(&probe, b"probe").map_err(|e| fail(format!("cannot write in it: {e}")))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Opens the database at `path`; damage RocksDB reports in a database
/// that `existed` is [`StoreError::Corrupt`].
fn open_db(path: &Path, existed: bool, read_only: bool) -> Result<DB, StoreError> {
    let mut opts = options();
    opts.create_if_missing(!existed);
    // Every write is one synced batch, so a write-ahead log that ends
    // early is damage, not a torn last write: the node refuses it (a
    // read-only reader, e.g. `montana accounts` beside a running node, may
    // see the node's last write in progress) rather than resume
    // from an older state (whose highest signed step may be lower than
    // what this node already signed and sent).
    if !read_only {
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::AbsoluteConsistency);
    }
    let cfs = [CF_METADATA, CF_PROPOSALS, CF_CEMENTS, CF_STATE, CF_PEERS]
        .into_iter()
        .map(|n| ColumnFamilyDescriptor::new(n, options()));
    let db = if read_only {
        DB::open_cf_descriptors_read_only(&opts, path, cfs, false)
    } else {
        DB::open_cf_descriptors(&opts, path, cfs)
    };
    db.map_err(|e| {
        let kind = e.kind();
        let why = e.into_string();
        if existed
            && matches!(
                kind,
                rocksdb::ErrorKind::Corruption | rocksdb::ErrorKind::InvalidArgument
            )
        {
            return StoreError::Corrupt {
                path: path.to_path_buf(),
                why,
            };
        }
        let why = if why.contains("lock") || why.contains("LOCK") {
            format!("{why} (is another node running on this data dir?)")
        } else {
            why
        };
        StoreError::Db {
            path: path.to_path_buf(),
            why,
        }
    })
}

impl Store {
    /// Opens (or creates) `data_dir/db` for `genesis`'s network.
    pub fn open(data_dir: &Path, genesis: &Genesis) -> Result<Self, StoreError> {
        check_data_dir(data_dir)?;
        let path = data_dir.join("db");
        // An existing database is never created afresh: RocksDB would start
        // an empty one where CURRENT is missing, and the node would then
        // re-initialise from the genesis, silently dropping what it held.
        let existed = std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_some());
        if existed && !path.join("CURRENT").exists() {
            return Err(StoreError::Corrupt {
                path,
                why: "its CURRENT file is missing".into(),
            });
        }
        // An existing database is first checked read-only: RocksDB repairs
        // some damage (a truncated MANIFEST) by rewriting files as it
        // opens, so a refused start would otherwise change what it refused.
        if existed {
            let checked = Store {
                db: Some(Arc::new(open_db(&path, existed, true)?)),
                path: path.clone(),
                tip: Tip::genesis(genesis),
            };
            checked.load_tip(genesis, existed)?;
        }
        let mut store = Store {
            db: Some(Arc::new(open_db(&path, existed, false)?)),
            path,
            tip: Tip::genesis(genesis),
        };
        match store.load_tip(genesis, existed)? {
            Some(tip) => store.tip = tip,
            None => {
                let id = genesis.network_id();
                let root = store.write_initial_state(genesis)?;
                let mut batch = WriteBatch::default();
                batch.put_cf(
                    store.cf(CF_METADATA),
                    KEY_SCHEMA_VERSION,
                    SCHEMA_VERSION.to_le_bytes(),
                );
                batch.put_cf(store.cf(CF_METADATA), KEY_NETWORK_ID, id);
                batch.put_cf(store.cf(CF_METADATA), KEY_TIP, store.tip.to_bytes());
                batch.put_cf(store.cf(CF_METADATA), KEY_ROOT, root.0);
                batch.delete_cf(store.cf(CF_METADATA), KEY_CREATING);
                for (i, p) in genesis.peers.iter().enumerate() {
                    let json = serde_json::to_vec(p).expect("plain data");
                    batch.put_cf(store.cf(CF_PEERS), (i as u16).to_be_bytes(), json);
                }
                store.write(batch)?;
            }
        }
        Ok(store)
    }

    /// Writes the genesis state (docs/SPEC.md 9.6) into an empty store in
    /// batches of [`INITIAL_BATCH`] entries, never holding it whole: the
    /// synthetic accounts are generated one at a time (RocksDB sorts
    /// them), and the root is computed by reading the entries back in key
    /// order. The metadata written after it is what makes the store exist,
    /// so a crash in between only leaves entries this rewrites (the state
    /// column family is cleared first, in case they came from another
    /// genesis).
    fn write_initial_state(&self, genesis: &Genesis) -> Result<Hash32, StoreError> {
        use crate::consensus::{merkle, state};
        let cf = self.cf(CF_STATE);
        let db_err = |e: rocksdb::Error| StoreError::Db {
            path: self.path.clone(),
            why: e.into_string(),
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_METADATA), KEY_CREATING, [1u8]);
        self.write(std::mem::take(&mut batch))?;
        self.db()
            .delete_range_cf(cf, [0u8].as_slice(), [0xffu8; 40].as_slice())
            .map_err(db_err)?;
        let mut put = |k: &[u8], v: &[u8]| -> Result<(), StoreError> {
            batch.put_cf(cf, k, v);
            if batch.len() >= INITIAL_BATCH {
                self.write(std::mem::take(&mut batch))?;
            }
            Ok(())
        };
        // An id both explicit and synthetic holds the sum (section 6).
        let explicit = &genesis.accounts;
        let mut extra = std::collections::BTreeMap::new();
        for i in 0..genesis.synthetic_accounts.count {
            let (id, balance) = genesis.synthetic_accounts.account(i);
            if explicit.binary_search_by_key(&id, |a| a.0).is_ok() {
                extra.insert(id, balance);
            } else {
                put(&state::account_key(&id), &balance.to_le_bytes())?;
            }
        }
        for (id, balance) in explicit {
            let b = balance + extra.get(id).copied().unwrap_or(0);
            put(&state::account_key(id), &b.to_le_bytes())?;
        }
        for m in genesis.active_set().members() {
            let (k, v) = state::member_entry(m);
            put(&k, &v)?;
        }
        self.write(batch)?;
        let mut tree = merkle::Streaming::default();
        for item in self.db().iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(db_err)?;
            tree.push(merkle::leaf(&k, &v));
        }
        Ok(tree.root())
    }

    /// The schema version of a database that holds records: the stored
    /// `schema_version`, or 1 for records without one (what nodes wrote
    /// before it existed); `None` for a database with no records.
    fn schema_version(&self) -> Result<Option<u32>, StoreError> {
        match self.get(CF_METADATA, KEY_SCHEMA_VERSION)? {
            Some(b) => {
                let b: [u8; 4] = b
                    .as_slice()
                    .try_into()
                    .map_err(|_| self.corrupt("schema_version record length"))?;
                Ok(Some(u32::from_le_bytes(b)))
            }
            None if self.get(CF_METADATA, KEY_NETWORK_ID)?.is_some()
                || self.get(CF_METADATA, KEY_TIP)?.is_some() =>
            {
                Ok(Some(1))
            }
            None => Ok(None),
        }
    }

    /// The stored tip, checked against the schema version, the network and
    /// its own proposal; `None` for a new database (never for one that
    /// `existed`).
    fn load_tip(&self, genesis: &Genesis, existed: bool) -> Result<Option<Tip>, StoreError> {
        // First: a database of another version is named as such, not as
        // another network (its network id comes from another genesis
        // version too).
        match self.schema_version()? {
            Some(SCHEMA_VERSION) | None => {}
            Some(found) => {
                return Err(StoreError::Schema {
                    path: self.path.clone(),
                    found,
                })
            }
        }
        let id = genesis.network_id();
        match self.get(CF_METADATA, KEY_NETWORK_ID)? {
            Some(found) if found != id => Err(StoreError::OtherNetwork {
                path: self.path.clone(),
                found: hex::encode(found),
                expected: hex::encode(id),
            }),
            Some(_) => {
                let tip = self
                    .get(CF_METADATA, KEY_TIP)?
                    .ok_or_else(|| self.corrupt("network id without a tip"))?;
                let tip = Tip::from_bytes(&tip).ok_or_else(|| self.corrupt("tip record length"))?;
                // The tip and its proposal are written in one batch: a tip
                // without its proposal means records were lost.
                if tip.window > 0 {
                    let w = tip.window;
                    match self.proposal(w)? {
                        Some(p) if p.hash() == tip.hash => {}
                        Some(_) => {
                            return Err(self.corrupt(&format!(
                                "the proposal of the tip window {w} does not match the tip"
                            )))
                        }
                        None => {
                            return Err(self.corrupt(&format!(
                                "the proposal of the tip window {w} is missing"
                            )))
                        }
                    }
                }
                Ok(Some(tip))
            }
            None if self.get(CF_METADATA, KEY_CREATING)?.is_some() => Ok(None),
            None if existed => Err(self.corrupt("its records are gone (no network id)")),
            None => Ok(None),
        }
    }

    /// The last applied window.
    pub fn tip(&self) -> Tip {
        self.tip
    }

    /// Stores consecutive cemented windows from `tip + 1` (proposals,
    /// Cements, the canonical bundle of each window before, the accounts
    /// `state` holds for the ids paid, the root) and moves the tip to the
    /// last, in one synced atomic batch. The caller has verified them;
    /// `state` is the state after the last.
    pub fn cement(&mut self, windows: &[Cemented], state: &State) -> Result<Tip, StoreError> {
        let mut tip = self.tip;
        let mut batch = WriteBatch::default();
        let mut paid: Vec<NodeId> = Vec::new();
        for c in windows {
            let p = &c.proposal;
            if p.window() != tip.window + 1 {
                return Err(StoreError::OutOfOrder {
                    tip: tip.window,
                    got: p.window(),
                });
            }
            let w = p.window().to_be_bytes();
            batch.put_cf(self.cf(CF_PROPOSALS), w, p.to_bytes());
            batch.put_cf(self.cf(CF_CEMENTS), w, c.cement.encode());
            if let Some(prev) = &c.prev_bundle {
                batch.put_cf(
                    self.cf(CF_CEMENTS),
                    (p.window() - 1).to_be_bytes(),
                    prev.encode(),
                );
            }
            if let Some(cert) = &c.certificate {
                batch.put_cf(
                    self.cf(CF_METADATA),
                    certificate_key(p.window()),
                    cert.encode(),
                );
            }
            paid.extend_from_slice(&c.paid);
            tip = tip.after(p);
        }
        paid.sort();
        paid.dedup();
        for id in paid {
            let key = crate::consensus::state::account_key(&id);
            batch.put_cf(self.cf(CF_STATE), key, state.balance(&id).to_le_bytes());
        }
        // The roster (candidates, members, seen: every key after the
        // accounts') is small: written whole.
        batch.delete_range_cf(self.cf(CF_STATE), &[b'b'][..], &[0xffu8; 40][..]);
        for (k, v) in state.roster().entries() {
            batch.put_cf(self.cf(CF_STATE), k, v);
        }
        if let Some(last) = windows.last() {
            batch.put_cf(self.cf(CF_METADATA), KEY_TIP_SET, encode_set(&last.set));
        }
        batch.put_cf(self.cf(CF_METADATA), KEY_ROOT, state.root().0);
        batch.put_cf(self.cf(CF_METADATA), KEY_TIP, tip.to_bytes());
        batch.delete_cf(self.cf(CF_METADATA), KEY_APPLIED);
        self.write(batch)?;
        self.tip = tip;
        Ok(tip)
    }

    /// Records (synced) that the window after the tip is applied: its T
    /// verified.
    pub fn applied(&mut self, window: u64, t: &Hash32) -> Result<(), StoreError> {
        let mut v = window.to_le_bytes().to_vec();
        v.extend_from_slice(&t.0);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_METADATA), KEY_APPLIED, v);
        self.write(batch)
    }

    /// The applied window after the tip, if recorded.
    pub fn applied_window(&self) -> Result<Option<(u64, Hash32)>, StoreError> {
        Ok(self.get(CF_METADATA, KEY_APPLIED)?.and_then(|b| {
            (b.len() == 40).then(|| {
                (
                    u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
                    Hash32(b[8..].try_into().expect("32 bytes")),
                )
            })
        }))
    }

    /// Records (synced) the highest step this node signed. Called before
    /// the signed message is sent.
    pub fn save_signed(&mut self, s: &Signed) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_METADATA), KEY_SIGNED, s.to_bytes());
        self.write(batch)
    }

    /// The highest step this node signed, if any.
    pub fn signed(&self) -> Result<Option<Signed>, StoreError> {
        match self.get(CF_METADATA, KEY_SIGNED)? {
            None => Ok(None),
            Some(b) => Signed::from_bytes(&b)
                .map(Some)
                .ok_or_else(|| self.corrupt("the signed-step record")),
        }
    }

    /// The consensus state after the tip (checked against the stored
    /// root), the maker of the tip's proposal and the tip's stored Cement.
    pub fn consensus(
        &self,
        genesis: &Genesis,
    ) -> Result<(State, TipMeta, Option<Cement>), StoreError> {
        let mut accounts = std::collections::BTreeMap::new();
        let mut roster = Vec::new();
        for item in self
            .db()
            .iterator_cf(self.cf(CF_STATE), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item.map_err(|e| self.corrupt(&e.into_string()))?;
            if let Some(id) = crate::consensus::state::account_of_key(&k) {
                let b: [u8; 8] = v[..]
                    .try_into()
                    .map_err(|_| self.corrupt("an account balance is not 8 bytes"))?;
                accounts.insert(id, u64::from_le_bytes(b));
            } else {
                roster.push((k, v));
            }
        }
        let roster = Roster::from_entries(roster.iter().map(|(k, v)| (&k[..], &v[..])))
            .map_err(|e| self.corrupt(&format!("the roster: {e}")))?;
        let state = State::with_roster(roster, accounts);
        let stored = self
            .get(CF_METADATA, KEY_ROOT)?
            .ok_or_else(|| self.corrupt("no state root"))?;
        if stored[..] != state.root().0[..] {
            return Err(self.corrupt("the accounts do not match the stored state root"));
        }
        let (meta, cement) = if self.tip.window == 0 {
            (TipMeta::genesis(genesis), None)
        } else {
            let p = self
                .proposal(self.tip.window)?
                .ok_or_else(|| self.corrupt("the tip's proposal is missing"))?;
            let c = self
                .get(CF_CEMENTS, &self.tip.window.to_be_bytes())?
                .map(|b| Cement::decode(&b))
                .transpose()
                .map_err(|e| self.corrupt(&format!("the tip's Cement: {e}")))?;
            // A node that fast-synced to its tip has no record of the set
            // that cemented it: the set after it stands in (the same unless
            // the set changed at that very window).
            let set = match self.get(CF_METADATA, KEY_TIP_SET)? {
                Some(b) => decode_set(&b).ok_or_else(|| self.corrupt("the tip's active set"))?,
                None => state.active().clone(),
            };
            // Not stored where the tip was installed from a snapshot.
            let prev_t = if self.tip.window >= 2 {
                self.proposal(self.tip.window - 1)?.map(|q| q.header.t)
            } else {
                Some(genesis.timechain().t0())
            };
            let meta = TipMeta {
                proposer: p.header.proposer,
                extras: p.extras.clone(),
                set,
                prev_t,
            };
            (meta, c)
        };
        Ok((state, meta, cement))
    }

    /// The stored Cement bytes of `window`.
    pub fn cement_bytes(&self, window: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(CF_CEMENTS, &window.to_be_bytes())
    }

    /// The stored proposal bytes of `window`, if applied.
    pub fn proposal_bytes(&self, window: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(CF_PROPOSALS, &window.to_be_bytes())
    }

    /// A read-only handle for serving stored proposals from other threads
    /// (it sees every window applied before each read).
    pub fn reader(&self) -> StoreReader {
        StoreReader {
            db: self.db().clone(),
            path: self.path.clone(),
        }
    }

    /// The stored proposal of `window`, decoded.
    pub fn proposal(&self, window: u64) -> Result<Option<Proposal>, StoreError> {
        match self.proposal_bytes(window)? {
            None => Ok(None),
            Some(b) => Proposal::from_bytes(&b)
                .map(Some)
                .map_err(|e| self.corrupt(&format!("proposal {window}: {e}"))),
        }
    }

    /// The number of peers recorded.
    pub fn peer_count(&self) -> usize {
        self.db()
            .iterator_cf(self.cf(CF_PEERS), rocksdb::IteratorMode::Start)
            .count()
    }

    fn db(&self) -> &Arc<DB> {
        self.db.as_ref().expect("the database is open")
    }

    /// Closes and reopens the database, which RocksDB needs after a failed
    /// write (a full disk): until then it refuses every write. Returns false
    /// while a reader is still using the database (it does nothing then) or
    /// while there is still no room to open it for writing. The
    /// reopened database must hold the tip this store had: the failed write
    /// left nothing behind.
    pub fn reopen(&mut self) -> Result<bool, StoreError> {
        if Arc::strong_count(self.db()) > 1 {
            return Ok(false);
        }
        // RocksDB refuses a second handle on one database in one process:
        // the old one is closed first.
        drop(self.db.take());
        match open_db(&self.path, true, false) {
            Ok(db) => self.db = Some(Arc::new(db)),
            Err(e) => {
                // Still no room to open it for writing: keep serving reads
                // from a read-only handle (it writes nothing) and try later.
                self.db = Some(Arc::new(open_db(&self.path, true, true)?));
                return if e.is_no_space() { Ok(false) } else { Err(e) };
            }
        }
        let tip = self
            .get(CF_METADATA, KEY_TIP)?
            .and_then(|b| Tip::from_bytes(&b));
        if tip != Some(self.tip) {
            return Err(self.corrupt("the tip changed while the disk was full"));
        }
        Ok(true)
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db().cf_handle(name).expect("column families opened")
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db().get_cf(self.cf(cf), key).map_err(|e| {
            if e.kind() == rocksdb::ErrorKind::Corruption {
                self.corrupt(&e.into_string())
            } else {
                StoreError::Db {
                    path: self.path.clone(),
                    why: e.into_string(),
                }
            }
        })
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db().write_opt(batch, &wo).map_err(|e| StoreError::Db {
            path: self.path.clone(),
            why: e.into_string(),
        })
    }

    fn corrupt(&self, why: &str) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            why: why.to_string(),
        }
    }
}

/// What `montana accounts` shows: the accounts of the last cemented window
/// as one consistent read of a node's database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountsSnapshot {
    /// The genesis' network id.
    pub network_id: [u8; 32],
    /// The last cemented window (the `tip`); 0 before the first.
    pub cemented: u64,
    /// The window after the tip, if its T is verified but not yet cemented.
    pub applied: Option<u64>,
    /// The state root after `cemented` (windows `1..cemented-1` paid),
    /// recomputed from the state entries read and equal to the stored one.
    pub state_root: Hash32,
    /// Every account, sorted by node id.
    pub accounts: Vec<(NodeId, u64)>,
    /// Labels of the genesis peers, by node id.
    pub labels: std::collections::BTreeMap<NodeId, String>,
}

/// Reads the accounts of the node whose data dir is `data_dir`, opening
/// `data_dir/db` read-only: nothing is written (no lock taken, no repair),
/// so it works while the node runs, and shows what the node had made
/// durable when the database was opened. A database that is absent, of
/// another schema, or whose entries do not hash to its stored state root
/// is an error.
pub fn read_accounts(data_dir: &Path) -> Result<AccountsSnapshot, StoreError> {
    if !data_dir.is_dir() {
        let why = if data_dir.exists() {
            "not a directory (give the node's --data-dir)"
        } else {
            "it does not exist (give the node's --data-dir)"
        };
        return Err(StoreError::DataDir {
            path: data_dir.to_path_buf(),
            why: why.into(),
        });
    }
    let path = data_dir.join("db");
    if !path.join("CURRENT").is_file() {
        return Err(StoreError::Db {
            path,
            why: "no montana database here (no CURRENT file; give the data dir of a node that has run)".into(),
        });
    }
    // A running node may delete a file (a compacted table, an old log)
    // between the read of the MANIFEST and the open of that file: the open
    // is retried.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match read_accounts_once(&path) {
            Err(StoreError::Db { why, .. }) if attempt < 5 && why.contains("IO error") => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

fn read_accounts_once(path: &Path) -> Result<AccountsSnapshot, StoreError> {
    let db_err = |why: String| StoreError::Db {
        path: path.to_path_buf(),
        why,
    };
    let corrupt = |why: &str| StoreError::Corrupt {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    // Only the column families present are opened, so a database of an
    // older layout is named as such, not as a missing column family.
    let present = DB::list_cf(&options(), path).map_err(|e| db_err(e.into_string()))?;
    let wanted = [CF_METADATA, CF_PROPOSALS, CF_CEMENTS, CF_STATE, CF_PEERS];
    let cfs = wanted
        .into_iter()
        .filter(|n| present.iter().any(|p| p == n))
        .map(|n| ColumnFamilyDescriptor::new(n, options()));
    let mut opts = options();
    opts.create_if_missing(false);
    let db = DB::open_cf_descriptors_read_only(&opts, path, cfs, false)
        .map_err(|e| db_err(e.into_string()))?;
    let get = |cf: &str, key: &[u8]| -> Result<Option<Vec<u8>>, StoreError> {
        let Some(h) = db.cf_handle(cf) else {
            return Ok(None);
        };
        db.get_cf(h, key).map_err(|e| db_err(e.into_string()))
    };
    let schema = match get(CF_METADATA, KEY_SCHEMA_VERSION)? {
        Some(b) => u32::from_le_bytes(
            b.as_slice()
                .try_into()
                .map_err(|_| corrupt("schema_version record length"))?,
        ),
        None if get(CF_METADATA, KEY_NETWORK_ID)?.is_some()
            || get(CF_METADATA, KEY_TIP)?.is_some() =>
        {
            1
        }
        None => return Err(corrupt("its records are gone (no network id)")),
    };
    if schema != SCHEMA_VERSION {
        return Err(StoreError::Schema {
            path: path.to_path_buf(),
            found: schema,
        });
    }
    let network_id: [u8; 32] = get(CF_METADATA, KEY_NETWORK_ID)?
        .ok_or_else(|| corrupt("no network id"))?
        .as_slice()
        .try_into()
        .map_err(|_| corrupt("network id record length"))?;
    let tip = get(CF_METADATA, KEY_TIP)?
        .and_then(|b| Tip::from_bytes(&b))
        .ok_or_else(|| corrupt("no tip record (or a tip of the wrong length)"))?;
    let applied = get(CF_METADATA, KEY_APPLIED)?
        .filter(|b| b.len() == 40)
        .map(|b| u64::from_le_bytes(b[..8].try_into().expect("8 bytes")));
    let stored: [u8; 32] = get(CF_METADATA, KEY_ROOT)?
        .ok_or_else(|| corrupt("no state root"))?
        .as_slice()
        .try_into()
        .map_err(|_| corrupt("state root record length"))?;
    let state = db
        .cf_handle(CF_STATE)
        .ok_or_else(|| corrupt("no state column family"))?;
    // RocksDB iterates keys in bytewise order: the order of the root's
    // leaves (docs/SPEC.md 9.5).
    let mut leaves = Vec::new();
    let mut accounts = Vec::new();
    for item in db.iterator_cf(state, rocksdb::IteratorMode::Start) {
        let (k, v) = item.map_err(|e| db_err(e.into_string()))?;
        leaves.push(crate::consensus::merkle::leaf(&k, &v));
        if let Some(id) = crate::consensus::state::account_of_key(&k) {
            let b: [u8; 8] = v[..]
                .try_into()
                .map_err(|_| corrupt("an account balance is not 8 bytes"))?;
            accounts.push((id, u64::from_le_bytes(b)));
        }
    }
    let root = crate::consensus::merkle::state_root(&leaves);
    if root.0 != stored {
        return Err(corrupt(&format!(
            "the state entries hash to {}, the stored state root is {}",
            root.to_hex(),
            hex::encode(stored)
        )));
    }
    let mut labels = std::collections::BTreeMap::new();
    if let Some(peers) = db.cf_handle(CF_PEERS) {
        for item in db.iterator_cf(peers, rocksdb::IteratorMode::Start) {
            let (_, v) = item.map_err(|e| db_err(e.into_string()))?;
            if let Ok(p) = serde_json::from_slice::<crate::genesis::GenesisPeer>(&v) {
                if let Ok(key) = p.signing_public() {
                    labels.insert(NodeId::of(&key), p.label);
                }
            }
        }
    }
    Ok(AccountsSnapshot {
        network_id,
        cemented: tip.window,
        applied,
        state_root: root,
        accounts,
        labels,
    })
}

/// Reads stored proposals; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct StoreReader {
    db: Arc<DB>,
    path: PathBuf,
}

impl StoreReader {
    /// The stored proposal bytes of `window`, if cemented.
    pub fn proposal_bytes(&self, window: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(CF_PROPOSALS, window)
    }

    /// The stored Cement bytes of `window`, if cemented.
    pub fn cement_bytes(&self, window: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(CF_CEMENTS, window)
    }

    fn read(&self, cf: &str, window: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let cf = self.db.cf_handle(cf).expect("column families opened");
        self.db
            .get_cf(cf, window.to_be_bytes())
            .map_err(|e| StoreError::Db {
                path: self.path.clone(),
                why: e.into_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genesis::tests::peers;
    use crate::keys::NodeKeys;
    use crate::testutil::cemented_chain;
    use montana_vdf::HashSuite;

    fn genesis() -> (Genesis, Vec<NodeKeys>) {
        let (p, k) = peers(2);
        (Genesis::new(p, HashSuite::Sha256, 40, 4, 1.0).unwrap(), k)
    }

    /// The genesis state written in batches (synthetic accounts one at a
    /// time, over several batches) is the state the genesis describes:
    /// same root, same accounts, and an id both explicit and synthetic
    /// holds the sum. Entries left by an interrupted creation from another
    /// genesis are cleared.
    #[test]
    fn the_genesis_state_is_written_in_batches_and_matches_the_genesis() {
        use crate::genesis::{ConsensusParams, Synthetic};
        let (p, _) = peers(3);
        let synthetic = Synthetic {
            count: 70_000,
            seed: 5,
        };
        let (shared, shared_balance) = synthetic.account(17);
        let mut c = ConsensusParams::defaults(1.0);
        c.synthetic = synthetic;
        c.accounts = vec![(shared, 1_000_000_000), (NodeId([0xee; 32]), 7)];
        c.accounts.sort();
        let g = Genesis::new_with(p, HashSuite::Sha256, 40, 4, 1.0, c).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // An interrupted creation, with an entry of another genesis.
        {
            let db = open_db(&dir.path().join("db"), false, false).unwrap();
            db.put_cf(db.cf_handle(CF_METADATA).unwrap(), KEY_CREATING, [1u8])
                .unwrap();
            let cf = db.cf_handle(CF_STATE).unwrap();
            db.put_cf(
                cf,
                crate::consensus::state::account_key(&NodeId([1; 32])),
                5u64.to_le_bytes(),
            )
            .unwrap();
        }
        let s = Store::open(dir.path(), &g).unwrap();
        let want = g.initial_state();
        assert_eq!(want.accounts().len(), 70_001);
        assert_eq!(want.balance(&shared), 1_000_000_000 + shared_balance);
        // consensus() also checks the stored root against the accounts.
        let (loaded, _, _) = s.consensus(&g).unwrap();
        assert_eq!(loaded, want);
        assert!(s.get(CF_METADATA, KEY_CREATING).unwrap().is_none());
        drop(s);
        Store::open(dir.path(), &g).unwrap();
        // Without the marker, a database without a network id is refused.
        let dir = tempfile::tempdir().unwrap();
        drop(open_db(&dir.path().join("db"), false, false).unwrap());
        let e = Store::open(dir.path(), &g).unwrap_err();
        assert!(e.to_string().contains("records are gone"), "{e}");
    }

    #[test]
    fn restart_resumes_from_the_last_cemented_window_with_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let (g, k) = genesis();
        let (ws, state) = cemented_chain(&g, &k, 0, 5, |_, _| {});
        let state_at = |n: usize| {
            let (_, s) = cemented_chain(&g, &k, 0, n as u64, |_, _| {});
            s
        };
        {
            let mut s = Store::open(dir.path(), &g).unwrap();
            assert_eq!(s.tip(), Tip::genesis(&g));
            assert_eq!(s.peer_count(), 2);
            s.cement(&ws[..2], &state_at(2)).unwrap();
            s.cement(&ws[2..3], &state_at(3)).unwrap();
            assert_eq!(s.tip().window, 3);
        }
        let mut s = Store::open(dir.path(), &g).unwrap();
        let tip = Tip::genesis(&g)
            .after(&ws[0].proposal)
            .after(&ws[1].proposal)
            .after(&ws[2].proposal);
        assert_eq!(s.tip(), tip);
        let (st, proposer, bundle) = s.consensus(&g).unwrap();
        assert_eq!(st, state_at(3));
        assert_eq!(proposer.proposer, ws[2].proposal.header.proposer);
        assert_eq!(bundle.as_ref(), Some(&ws[2].cement));
        // Nothing applied twice, nothing skipped.
        assert!(matches!(
            s.cement(&ws[2..3], &state_at(3)),
            Err(StoreError::OutOfOrder { tip: 3, got: 3 })
        ));
        assert!(matches!(
            s.cement(&ws[4..5], &state),
            Err(StoreError::OutOfOrder { tip: 3, got: 5 })
        ));
        // A batch failing half-way writes nothing.
        assert!(s.cement(&[ws[3].clone(), ws[3].clone()], &state).is_err());
        assert_eq!(s.tip().window, 3);
        drop(s);
        let mut s = Store::open(dir.path(), &g).unwrap();
        assert_eq!(s.tip().window, 3);
        assert!(s.proposal(4).unwrap().is_none());
        s.cement(&ws[3..], &state).unwrap();
        for c in &ws {
            assert_eq!(
                s.proposal(c.proposal.window()).unwrap().as_ref(),
                Some(&c.proposal)
            );
        }
        assert_eq!(s.consensus(&g).unwrap().0, state);
        // The signed step survives a restart.
        let signed = Signed {
            window: 6,
            round: 1,
            step: 2,
            locked: Some((montana_vdf::Hash32([4; 32]), 1)),
        };
        s.save_signed(&signed).unwrap();
        drop(s);
        let s = Store::open(dir.path(), &g).unwrap();
        assert_eq!(s.signed().unwrap(), Some(signed));
    }

    #[test]
    fn accounts_that_do_not_match_the_root_are_refused_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (g, k) = genesis();
        let (ws, state) = cemented_chain(&g, &k, 0, 3, |_, _| {});
        {
            let mut s = Store::open(dir.path(), &g).unwrap();
            s.cement(&ws, &state).unwrap();
            let id = g.node_id(0);
            let cf = s.cf(CF_STATE);
            s.db()
                .put_cf(
                    cf,
                    crate::consensus::state::account_key(&id),
                    1u64.to_le_bytes(),
                )
                .unwrap();
        }
        let s = Store::open(dir.path(), &g).unwrap();
        let e = s.consensus(&g).unwrap_err();
        assert!(e.to_string().contains("state root"), "{e}");
    }

    #[test]
    fn a_tip_without_its_proposal_is_refused_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (g, k) = genesis();
        let (ws, state) = cemented_chain(&g, &k, 0, 3, |_, _| {});
        {
            let mut s = Store::open(dir.path(), &g).unwrap();
            s.cement(&ws, &state).unwrap();
            // The tip's proposal disappears (a lost record).
            let cf = s.cf(CF_PROPOSALS);
            s.db().delete_cf(cf, 3u64.to_be_bytes()).unwrap();
        }
        let e = Store::open(dir.path(), &g).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("tip window 3 is missing"), "{e}");
        assert!(e.to_string().contains("move it aside"), "{e}");
        {
            // A proposal that does not match the tip.
            let db = open_db(&dir.path().join("db"), true, false).unwrap();
            let cf = db.cf_handle(CF_PROPOSALS).unwrap();
            db.put_cf(cf, 3u64.to_be_bytes(), ws[1].proposal.to_bytes())
                .unwrap();
        }
        let e = Store::open(dir.path(), &g).unwrap_err();
        assert!(e.to_string().contains("does not match the tip"), "{e}");
    }

    #[test]
    fn a_database_of_another_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (g, k) = genesis();
        {
            let mut s = Store::open(dir.path(), &g).unwrap();
            assert_eq!(
                s.get(CF_METADATA, KEY_SCHEMA_VERSION).unwrap(),
                Some(SCHEMA_VERSION.to_le_bytes().to_vec()),
                "written when the database is created"
            );
            let (ws, state) = cemented_chain(&g, &k, 0, 2, |_, _| {});
            s.cement(&ws, &state).unwrap();
        }
        let path = dir.path().join("db");
        let set = |v: Option<&[u8]>| {
            let db = open_db(&path, true, false).unwrap();
            let cf = db.cf_handle(CF_METADATA).unwrap();
            match v {
                Some(v) => db.put_cf(cf, KEY_SCHEMA_VERSION, v).unwrap(),
                None => db.delete_cf(cf, KEY_SCHEMA_VERSION).unwrap(),
            }
        };
        // What the node wrote before schema_version existed: version 1.
        set(None);
        let e = Store::open(dir.path(), &g).unwrap_err();
        assert!(matches!(e, StoreError::Schema { found: 1, .. }), "{e}");
        let line = e.to_string();
        assert_eq!(line.lines().count(), 1);
        assert!(
            line.contains("another montana version (schema 1, this node needs 3)"),
            "{line}"
        );
        assert!(line.contains("another --data-dir"), "{line}");
        // Even when the genesis is another one: the version is named first.
        let (other, _) = genesis();
        let e = Store::open(dir.path(), &other).unwrap_err();
        assert!(matches!(e, StoreError::Schema { found: 1, .. }), "{e}");
        set(Some(&4u32.to_le_bytes()));
        let e = Store::open(dir.path(), &g).unwrap_err();
        assert!(matches!(e, StoreError::Schema { found: 4, .. }), "{e}");
        set(Some(&2u32.to_le_bytes()));
        let e = Store::open(dir.path(), &g).unwrap_err();
        assert!(matches!(e, StoreError::Schema { found: 2, .. }), "{e}");
        set(Some(&[2, 0]));
        let e = Store::open(dir.path(), &g).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        // Put back, the database opens where it was.
        set(Some(&SCHEMA_VERSION.to_le_bytes()));
        assert_eq!(Store::open(dir.path(), &g).unwrap().tip().window, 2);
    }

    #[test]
    fn accounts_are_read_read_only_while_the_store_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let (g, k) = genesis();
        let (ws, state) = cemented_chain(&g, &k, 0, 3, |_, _| {});
        let mut s = Store::open(dir.path(), &g).unwrap();
        s.cement(&ws, &state).unwrap();
        s.applied(4, &Hash32([1; 32])).unwrap();
        // The writer still holds the database (a running node).
        let a = read_accounts(dir.path()).unwrap();
        assert_eq!(a.cemented, 3);
        assert_eq!(a.applied, Some(4));
        assert_eq!(a.network_id, g.network_id());
        assert_eq!(a.state_root, state.root());
        let expected: Vec<(NodeId, u64)> = state.accounts().iter().map(|(i, b)| (*i, *b)).collect();
        assert_eq!(a.accounts, expected);
        assert!(!a.accounts.is_empty());
        assert_eq!(a.labels.get(&g.node_id(1)), Some(&g.peers[1].label));
        // It wrote nothing: the writer goes on.
        assert_eq!(s.tip().window, 3);
        s.applied(5, &Hash32([2; 32])).unwrap();
        drop(s);

        // A tampered balance no longer hashes to the stored root.
        {
            let db = open_db(&dir.path().join("db"), true, false).unwrap();
            let cf = db.cf_handle(CF_STATE).unwrap();
            db.put_cf(
                cf,
                crate::consensus::state::account_key(&g.node_id(0)),
                5u64.to_le_bytes(),
            )
            .unwrap();
        }
        let e = read_accounts(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("stored state root"), "{e}");
        // Another schema is named as such.
        {
            let db = open_db(&dir.path().join("db"), true, false).unwrap();
            let cf = db.cf_handle(CF_METADATA).unwrap();
            db.delete_cf(cf, KEY_SCHEMA_VERSION).unwrap();
        }
        let e = read_accounts(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::Schema { found: 1, .. }), "{e}");
        // No data dir; a data dir without a database.
        let e = read_accounts(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(e, StoreError::DataDir { .. }), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = read_accounts(empty.path()).unwrap_err();
        assert!(e.to_string().contains("no montana database"), "{e}");
        assert!(!empty.path().join("db").exists(), "nothing created");
    }

    #[test]
    fn refuses_another_network_and_unusable_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let (g, _) = genesis();
        drop(Store::open(dir.path(), &g).unwrap());
        let (g2, _) = genesis();
        let e = Store::open(dir.path(), &g2).unwrap_err();
        assert!(matches!(e, StoreError::OtherNetwork { .. }), "{e}");

        // A file where the data dir should be.
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let e = Store::open(&file, &g).unwrap_err();
        assert!(matches!(e, StoreError::DataDir { .. }), "{e}");
        assert_eq!(e.to_string().lines().count(), 1);

        // Two nodes on one data dir.
        let other = tempfile::tempdir().unwrap();
        let _first = Store::open(other.path(), &g).unwrap();
        let e = Store::open(other.path(), &g).unwrap_err();
        assert!(e.to_string().contains("another node"), "{e}");
    }
}
