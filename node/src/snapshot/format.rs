//! Snapshot bytes: the manifest (`MTSM`) and the chunk (`MTSC`),
//! docs/SPEC.md section 13.
//!
//! ```text
//! manifest: magic "MTSM" | version u8 = 1 | window u64 | entries n u64
//!           | chunk size u32 (= CHUNK_SIZE) | state root [32]
//!           | proposal header of the window [226] | cement length u32 | Cement (MTCM)
//! chunk:    magic "MTSC" | version u8 = 1 | window u64 | state root [32] | index u64
//!           | count u32 (1..=CHUNK_SIZE)
//!           | count x ( key length u16 (1..=256) | key | value length u32 (<= 4096) | value )
//!           | proof length u8 (<= 64) | proof length x hash [32]  (bottom-up)
//! ```
//! Little-endian. Both are at most [`MAX_PAYLOAD`] (1 MiB) bytes, checked
//! before anything is decoded; every count and length is checked against
//! its bound and against the bytes left before anything is allocated from
//! it. Decoding checks the layout; [`Manifest::check_bound`] and
//! [`Chunk::verify`] check the meaning (against the cement and the root).

use montana_vdf::Hash32;
use thiserror::Error;

use crate::codec::{CodecError, Reader, Writer};
use crate::consensus::merkle::{self, ChunkError};
use crate::consensus::vote::{Cement, CementError};
use crate::messages::MAX_PAYLOAD;
use crate::proposal::{ProposalHeader, HEADER_LEN};

/// Entries per chunk (a power of two). With today's entries (accounts of
/// 49 encoded bytes, at most 300 members of 1,999) a chunk is at most
/// about 790 KB with its proof, under the 1 MiB payload limit.
pub const CHUNK_SIZE: u64 = 4096;
/// Longest entry key.
pub const MAX_KEY: usize = 256;
/// Longest entry value.
pub const MAX_VALUE: usize = 4096;
/// Most entries a manifest may announce (2^28: at most 65,536 chunks), so
/// a lying manifest cannot make a syncing node allocate without bound.
pub const MAX_ENTRIES: u64 = 1 << 28;
/// Most proof hashes (a tree of at most 2^64 leaves).
pub const MAX_PROOF: usize = 64;

const MANIFEST_MAGIC: &[u8; 4] = b"MTSM";
const CHUNK_MAGIC: &[u8; 4] = b"MTSC";
const VERSION: u8 = 1;
/// Bytes of a chunk before its count: magic, version, window, root, index.
pub const CHUNK_PREFIX: usize = 4 + 1 + 8 + 32 + 8;

/// Why snapshot bytes are refused. [`SnapshotError::kind`] names the
/// counter (`/metrics`, `/status` `rejected`).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SnapshotError {
    #[error("manifest of {0} bytes is over the 1 MiB limit")]
    ManifestOversized(usize),
    #[error("manifest does not decode: {0}")]
    ManifestMalformed(String),
    #[error("manifest chunk size {0}, this build uses {CHUNK_SIZE}")]
    ManifestChunkSize(u32),
    #[error("manifest announces {0} entries (1 to {MAX_ENTRIES})")]
    ManifestEntries(u64),
    #[error("manifest does not hang together: {0}")]
    ManifestUnbound(String),
    #[error("manifest of window {got}, asked for {asked}")]
    ManifestUnknown { asked: u64, got: u64 },
    #[error("the manifest's cement does not verify: {0}")]
    Cement(CementError),
    #[error("membership certificate refused: {0}")]
    Certificate(String),
    #[error("chunk of {0} bytes is over the 1 MiB limit")]
    ChunkOversized(usize),
    #[error("chunk does not decode: {0}")]
    ChunkMalformed(String),
    #[error("chunk of window {window} root {root}, not the snapshot being fetched")]
    ChunkOtherRoot { window: u64, root: String },
    #[error("chunk {index} is past the last chunk {last}")]
    ChunkOutOfRange { index: u64, last: u64 },
    #[error("chunk {index} holds entries out of order")]
    ChunkUnsorted { index: u64 },
    #[error("chunk {index} holds one key twice")]
    ChunkDuplicateEntry { index: u64 },
    #[error("chunk {index} holds {got} entries, expected {expected}")]
    ChunkWrongCount { index: u64, expected: u64, got: u64 },
    #[error("chunk {index} does not prove against the state root")]
    ChunkBadProof { index: u64 },
    #[error("chunk {index} is already held")]
    ChunkDuplicate { index: u64 },
    #[error("chunk {index} was not asked of this peer")]
    ChunkUnrequested { index: u64 },
}

impl SnapshotError {
    /// The rejection counter's name.
    pub fn kind(&self) -> &'static str {
        match self {
            SnapshotError::ManifestOversized(_) => "manifest_oversized",
            SnapshotError::ManifestMalformed(_) => "manifest_malformed",
            SnapshotError::ManifestChunkSize(_) => "manifest_chunk_size",
            SnapshotError::ManifestEntries(_) => "manifest_entries",
            SnapshotError::ManifestUnbound(_) => "manifest_unbound",
            SnapshotError::ManifestUnknown { .. } => "manifest_unknown",
            SnapshotError::Cement(CementError::ShortOfQuorum { .. }) => "cement_short_of_quorum",
            SnapshotError::Cement(e) => e.kind(),
            SnapshotError::Certificate(_) => "certificate_broken",
            SnapshotError::ChunkOversized(_) => "chunk_oversized",
            SnapshotError::ChunkMalformed(_) => "chunk_malformed",
            SnapshotError::ChunkOtherRoot { .. } => "chunk_other_root",
            SnapshotError::ChunkOutOfRange { .. } => "chunk_out_of_range",
            SnapshotError::ChunkUnsorted { .. } => "chunk_unsorted",
            SnapshotError::ChunkDuplicateEntry { .. } => "chunk_duplicate_entry",
            SnapshotError::ChunkWrongCount { .. } => "chunk_wrong_count",
            SnapshotError::ChunkBadProof { .. } => "chunk_bad_proof",
            SnapshotError::ChunkDuplicate { .. } => "chunk_duplicate",
            SnapshotError::ChunkUnrequested { .. } => "chunk_unrequested",
        }
    }
}

/// What a snapshot of window `window` is: its size, its root, and why the
/// root is trusted (the window's proposal header, which carries the root,
/// and a Cement of that proposal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub window: u64,
    /// Number of state entries n.
    pub entries: u64,
    pub root: Hash32,
    pub header: ProposalHeader,
    pub cement: Cement,
}

impl Manifest {
    /// Number of chunks: ceil(n / C).
    pub fn chunks(&self) -> u64 {
        self.entries.div_ceil(CHUNK_SIZE)
    }

    pub fn encode(&self) -> Vec<u8> {
        let cement = self.cement.encode();
        let mut w = Writer::with_capacity(4 + 1 + 8 + 8 + 4 + 32 + HEADER_LEN + 4 + cement.len());
        w.bytes(MANIFEST_MAGIC).u8(VERSION);
        w.u64(self.window).u64(self.entries).u32(CHUNK_SIZE as u32);
        w.bytes(&self.root.0).bytes(&self.header.to_bytes());
        w.u32(cement.len() as u32).bytes(&cement);
        w.finish()
    }

    /// Decodes the layout (size first, then every field; no signatures).
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        if bytes.len() > MAX_PAYLOAD {
            return Err(SnapshotError::ManifestOversized(bytes.len()));
        }
        let bad = |e: CodecError| SnapshotError::ManifestMalformed(e.to_string());
        let mut r = Reader::new("manifest", bytes);
        r.header(MANIFEST_MAGIC, VERSION).map_err(bad)?;
        let window = r.u64().map_err(bad)?;
        let entries = r.u64().map_err(bad)?;
        let c = r.u32().map_err(bad)?;
        if c as u64 != CHUNK_SIZE {
            return Err(SnapshotError::ManifestChunkSize(c));
        }
        if entries == 0 || entries > MAX_ENTRIES {
            return Err(SnapshotError::ManifestEntries(entries));
        }
        let root = Hash32(r.array().map_err(bad)?);
        let header = ProposalHeader::from_bytes(r.take(HEADER_LEN).map_err(bad)?).map_err(bad)?;
        let len = r.u32().map_err(bad)? as usize;
        if len != r.left() {
            return Err(SnapshotError::ManifestMalformed(format!(
                "cement length {len}, {} bytes left",
                r.left()
            )));
        }
        let cement = Cement::decode(r.take(len).map_err(bad)?).map_err(bad)?;
        r.end().map_err(bad)?;
        Ok(Manifest {
            window,
            entries,
            root,
            header,
            cement,
        })
    }

    /// The checks that need no signature: the header is window `window`'s
    /// and carries `root`, the cement is of that window, that header and
    /// this network. The cement's signatures are checked against the
    /// window's active set by the caller ([`crate::snapshot::sync`]).
    pub fn check_bound(&self, network_id: &[u8; 32]) -> Result<(), SnapshotError> {
        let unbound = |why: String| Err(SnapshotError::ManifestUnbound(why));
        if self.header.window != self.window {
            return unbound(format!(
                "header of window {}, manifest of {}",
                self.header.window, self.window
            ));
        }
        if self.header.state_root != self.root {
            return unbound("the header carries another state root".into());
        }
        if self.cement.window != self.window {
            return unbound(format!("cement of window {}", self.cement.window));
        }
        if self.cement.proposal.0 != self.header.hash() {
            return unbound("the cement names another proposal".into());
        }
        if &self.cement.network_id != network_id {
            return Err(SnapshotError::Cement(CementError::WrongNetwork(
                self.cement.network_id,
            )));
        }
        Ok(())
    }
}

/// One state entry: key and value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Chunk `index` of the snapshot of `window` with root `root`: the entries
/// `[index*C, min(n, (index+1)*C))` in key order and the sibling hashes
/// that prove them against the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub window: u64,
    pub root: Hash32,
    pub index: u64,
    pub entries: Vec<Entry>,
    pub proof: Vec<Hash32>,
}

/// The tags (first key byte) of a chunk's first and last entries: where
/// it lies in the state's key order (`None`: no entries). What the member
/// check needs of a chunk verified before a restart (its entries are
/// staged, not kept).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkEnds {
    pub first: Option<u8>,
    pub last: Option<u8>,
}

impl ChunkEnds {
    /// As staged with a chunk's marker: `[0]` for no entries, else `[1,
    /// first, last]` (a marker written by a build before this one is
    /// empty: ends unknown).
    pub fn encode(&self) -> Vec<u8> {
        match (self.first, self.last) {
            (Some(f), Some(l)) => vec![1, f, l],
            _ => vec![0],
        }
    }

    /// `None` when `b` is no encoding of ends (an older marker).
    pub fn decode(b: &[u8]) -> Option<Self> {
        match b {
            [0] => Some(ChunkEnds::default()),
            [1, f, l] => Some(ChunkEnds {
                first: Some(*f),
                last: Some(*l),
            }),
            _ => None,
        }
    }
}

/// Appends one entry in the chunk layout.
pub fn encode_entry(w: &mut Writer, key: &[u8], value: &[u8]) {
    w.u16(key.len() as u16).bytes(key);
    w.u32(value.len() as u32).bytes(value);
}

/// Whether an entry can be carried in a chunk.
pub fn entry_fits(key: &[u8], value: &[u8]) -> bool {
    (1..=MAX_KEY).contains(&key.len()) && value.len() <= MAX_VALUE
}

impl Chunk {
    /// Its first and last entries' tags.
    pub fn ends(&self) -> ChunkEnds {
        let tag = |e: Option<&Entry>| e.and_then(|(k, _)| k.first().copied());
        ChunkEnds {
            first: tag(self.entries.first()),
            last: tag(self.entries.last()),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Writer::default();
        body.u32(self.entries.len() as u32);
        for (k, v) in &self.entries {
            encode_entry(&mut body, k, v);
        }
        Self::assemble(
            self.window,
            &self.root,
            self.index,
            &body.finish(),
            &self.proof,
        )
    }

    /// The chunk's bytes from its parts; `body` is `count || entries` (what
    /// a serving node keeps on disk per chunk).
    pub fn assemble(
        window: u64,
        root: &Hash32,
        index: u64,
        body: &[u8],
        proof: &[Hash32],
    ) -> Vec<u8> {
        let mut w = Writer::with_capacity(CHUNK_PREFIX + body.len() + 1 + 32 * proof.len());
        w.bytes(CHUNK_MAGIC)
            .u8(VERSION)
            .u64(window)
            .bytes(&root.0)
            .u64(index);
        w.bytes(body).u8(proof.len() as u8);
        for h in proof {
            w.bytes(&h.0);
        }
        w.finish()
    }

    /// Decodes the layout: size first, each count and length against its
    /// bound and the bytes left before allocating.
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        if bytes.len() > MAX_PAYLOAD {
            return Err(SnapshotError::ChunkOversized(bytes.len()));
        }
        let bad = |e: CodecError| SnapshotError::ChunkMalformed(e.to_string());
        let invalid = |why: String| SnapshotError::ChunkMalformed(why);
        let mut r = Reader::new("chunk", bytes);
        r.header(CHUNK_MAGIC, VERSION).map_err(bad)?;
        let window = r.u64().map_err(bad)?;
        let root = Hash32(r.array().map_err(bad)?);
        let index = r.u64().map_err(bad)?;
        let count = r.u32().map_err(bad)? as u64;
        if count == 0 || count > CHUNK_SIZE {
            return Err(invalid(format!("{count} entries (1 to {CHUNK_SIZE})")));
        }
        // Each entry takes at least 2 + 1 + 4 bytes.
        if (r.left() as u64) < count * 7 {
            return Err(invalid(format!("{} bytes for {count} entries", r.left())));
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let kl = r.u16().map_err(bad)? as usize;
            if kl == 0 || kl > MAX_KEY {
                return Err(invalid(format!("key of {kl} bytes (1 to {MAX_KEY})")));
            }
            let key = r.take(kl).map_err(bad)?.to_vec();
            let vl = r.u32().map_err(bad)? as usize;
            if vl > MAX_VALUE {
                return Err(invalid(format!(
                    "value of {vl} bytes (at most {MAX_VALUE})"
                )));
            }
            let value = r.take(vl).map_err(bad)?.to_vec();
            entries.push((key, value));
        }
        let p = r.u8().map_err(bad)? as usize;
        if p > MAX_PROOF {
            return Err(invalid(format!("{p} proof hashes (at most {MAX_PROOF})")));
        }
        if r.left() != 32 * p {
            return Err(invalid(format!("{} bytes for {p} proof hashes", r.left())));
        }
        let proof = (0..p)
            .map(|_| r.array().map(Hash32))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        r.end().map_err(bad)?;
        Ok(Chunk {
            window,
            root,
            index,
            entries,
            proof,
        })
    }

    /// Checks this chunk against the snapshot `m` describes: same window
    /// and root, an index in range, entries strictly ascending, the right
    /// count, and the proof (which commits to n, the index and every byte
    /// of every entry).
    pub fn verify(&self, m: &Manifest) -> Result<(), SnapshotError> {
        if self.window != m.window || self.root != m.root {
            return Err(SnapshotError::ChunkOtherRoot {
                window: self.window,
                root: hex::encode(&self.root.0[..8]),
            });
        }
        let index = self.index;
        if index >= m.chunks() {
            return Err(SnapshotError::ChunkOutOfRange {
                index,
                last: m.chunks() - 1,
            });
        }
        for w in self.entries.windows(2) {
            match w[0].0.cmp(&w[1].0) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    return Err(SnapshotError::ChunkDuplicateEntry { index })
                }
                std::cmp::Ordering::Greater => return Err(SnapshotError::ChunkUnsorted { index }),
            }
        }
        let leaves: Vec<Hash32> = self
            .entries
            .iter()
            .map(|(k, v)| merkle::leaf(k, v))
            .collect();
        merkle::verify_chunk(&m.root, m.entries, index, CHUNK_SIZE, &leaves, &self.proof).map_err(
            |e| match e {
                ChunkError::WrongCount { expected, got, .. } => SnapshotError::ChunkWrongCount {
                    index,
                    expected,
                    got,
                },
                ChunkError::OutOfRange { .. } => SnapshotError::ChunkOutOfRange {
                    index,
                    last: m.chunks() - 1,
                },
                _ => SnapshotError::ChunkBadProof { index },
            },
        )
    }
}

/// The state root of `n` entries from the subtree hashes of their chunks
/// (chunk i's [`merkle::mth`], in order). Chunks of a power-of-two size are
/// aligned subtrees of the RFC 6962 shape, so the tree over the chunk hashes
/// is the top of the tree over the entries.
pub fn root_from_chunks(n: u64, chunk_hashes: &[Hash32]) -> Hash32 {
    merkle::root_of(n, &merkle::mth(chunk_hashes))
}

/// The proof of chunk `index` from the chunk hashes (what a serving node
/// keeps: one hash per chunk, never the entries' leaves).
pub fn proof_from_chunks(chunk_hashes: &[Hash32], index: u64) -> Option<Vec<Hash32>> {
    merkle::chunk_proof(chunk_hashes, index, 1).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::consensus::active::tests::set_of;
    use crate::consensus::active::{ActiveSet, NodeId};
    use crate::consensus::agreement::VoteKind;
    use crate::consensus::vote::{Vote, VoteKey};
    use crate::keys::NodeKeys;
    use crate::proposal::{Basis, Proposal};
    use montana_vdf::HashSuite;

    pub(crate) const NET: [u8; 32] = [0x5a; 32];

    /// `n` sorted account-like entries.
    pub(crate) fn entries(n: u64) -> Vec<Entry> {
        (0..n)
            .map(|i| {
                let mut k = vec![b'a'];
                k.extend_from_slice(&HashSuite::Sha256.hash(&i.to_le_bytes()).0);
                (k, (i + 1).to_le_bytes().to_vec())
            })
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect()
    }

    /// A proposal of `window` carrying `root`, signed by `keys`.
    pub(crate) fn proposal(keys: &NodeKeys, window: u64, root: Hash32) -> Proposal {
        let basis = Basis {
            window,
            link: [1; 32],
            bundle: if window == 1 { [0; 32] } else { [2; 32] },
            state_root: root,
        };
        Proposal::sign(keys, HashSuite::Sha256, 4, basis, vec![Hash32([3; 32]); 4])
    }

    /// A Cement of `p` by `signers`.
    pub(crate) fn cement(p: &Proposal, signers: &[&NodeKeys]) -> Cement {
        let votes: Vec<Vote> = signers
            .iter()
            .map(|k| {
                Vote::sign(
                    VoteKey {
                        kind: VoteKind::Precommit,
                        network_id: NET,
                        window: p.window(),
                        round: 0,
                        value: Some(Hash32(p.hash())),
                        signer: NodeId::of(k.verifying_key()),
                    },
                    k,
                )
            })
            .collect();
        Cement::from_votes(&votes).unwrap()
    }

    pub(crate) struct Fixture {
        pub set: ActiveSet,
        pub keys: Vec<NodeKeys>,
        pub entries: Vec<Entry>,
        pub leaves: Vec<Hash32>,
        pub manifest: Manifest,
        pub proposal: Proposal,
    }

    /// A snapshot of `window` by a set of 4 that never changed, 3 of them
    /// signing its Cement: `n` entries, the members' among them.
    pub(crate) fn fixture(n: u64, window: u64) -> Fixture {
        let (set, keys) = set_of(4);
        let mut f = snapshot_of(n, window, &set, &[&keys[0], &keys[1], &keys[2]]);
        f.keys = keys;
        f
    }

    /// A snapshot of `window` whose state holds `n` entries, the member
    /// entries of `set` among them (its `set`), cemented by `signers`
    /// (no `keys`).
    pub(crate) fn snapshot_of(
        n: u64,
        window: u64,
        set: &ActiveSet,
        signers: &[&NodeKeys],
    ) -> Fixture {
        let mut all: std::collections::BTreeMap<_, _> =
            entries(n - set.len() as u64).into_iter().collect();
        all.extend(
            set.members()
                .iter()
                .map(crate::consensus::state::member_entry),
        );
        let entries: Vec<Entry> = all.into_iter().collect();
        let leaves: Vec<Hash32> = entries.iter().map(|(k, v)| merkle::leaf(k, v)).collect();
        let root = merkle::state_root(&leaves);
        let p = proposal(signers[0], window, root);
        let c = cement(&p, signers);
        let manifest = Manifest {
            window,
            entries: n,
            root,
            header: p.header.clone(),
            cement: c,
        };
        Fixture {
            set: set.clone(),
            keys: Vec::new(),
            entries,
            leaves,
            manifest,
            proposal: p,
        }
    }

    impl Fixture {
        /// The trust of a snapshot of a network whose set never changed.
        pub(crate) fn trust(&self) -> crate::snapshot::certificate::Trust {
            crate::snapshot::certificate::Trust {
                set: self.set.clone(),
                certificates: vec![],
            }
        }

        pub(crate) fn chunk(&self, index: u64) -> Chunk {
            let a = (index * CHUNK_SIZE) as usize;
            let b = ((index + 1) * CHUNK_SIZE).min(self.entries.len() as u64) as usize;
            Chunk {
                window: self.manifest.window,
                root: self.manifest.root,
                index,
                entries: self.entries[a..b].to_vec(),
                proof: merkle::chunk_proof(&self.leaves, index, CHUNK_SIZE).unwrap(),
            }
        }
    }

    #[test]
    fn manifest_round_trips_and_rejects_bad_bytes() {
        let f = fixture(10_000, 7);
        let m = &f.manifest;
        assert_eq!(m.chunks(), 3);
        let b = m.encode();
        assert_eq!(Manifest::decode(&b).unwrap(), *m);
        m.check_bound(&NET).unwrap();
        // Truncated anywhere, or one byte more.
        for cut in [0, 4, 5, 13, 21, 25, 57, 57 + HEADER_LEN, b.len() - 1] {
            assert!(Manifest::decode(&b[..cut]).is_err(), "cut {cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(
            Manifest::decode(&long),
            Err(SnapshotError::ManifestMalformed(_))
        ));
        // Oversized before anything is read.
        let huge = vec![0u8; MAX_PAYLOAD + 1];
        assert_eq!(
            Manifest::decode(&huge),
            Err(SnapshotError::ManifestOversized(MAX_PAYLOAD + 1))
        );
        // Another chunk size, zero or too many entries.
        let mut c = b.clone();
        c[21..25].copy_from_slice(&1024u32.to_le_bytes());
        assert_eq!(
            Manifest::decode(&c),
            Err(SnapshotError::ManifestChunkSize(1024))
        );
        for n in [0u64, MAX_ENTRIES + 1, u64::MAX] {
            let mut c = b.clone();
            c[13..21].copy_from_slice(&n.to_le_bytes());
            assert_eq!(Manifest::decode(&c), Err(SnapshotError::ManifestEntries(n)));
        }
        // A cement length that lies.
        let mut c = b.clone();
        let at = 57 + HEADER_LEN;
        c[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Manifest::decode(&c),
            Err(SnapshotError::ManifestMalformed(_))
        ));
        // Bad magic and version.
        let mut c = b.clone();
        c[0] = b'X';
        assert!(Manifest::decode(&c).is_err());
        let mut c = b;
        c[4] = 2;
        assert!(Manifest::decode(&c).is_err());
    }

    #[test]
    fn manifest_binding_is_checked() {
        let f = fixture(100, 7);
        let mut m = f.manifest.clone();
        m.root = Hash32([9; 32]);
        assert_eq!(m.check_bound(&NET).unwrap_err().kind(), "manifest_unbound");
        let mut m = f.manifest.clone();
        m.window = 8;
        assert_eq!(m.check_bound(&NET).unwrap_err().kind(), "manifest_unbound");
        // A cement of another proposal of the same window.
        let other = proposal(&f.keys[1], 7, f.manifest.root);
        let mut m = f.manifest.clone();
        m.cement = cement(&other, &[&f.keys[0]]);
        assert_eq!(m.check_bound(&NET).unwrap_err().kind(), "manifest_unbound");
        assert_eq!(
            f.manifest.check_bound(&[0; 32]).unwrap_err().kind(),
            "cement_wrong_network"
        );
    }

    #[test]
    fn chunks_round_trip_and_verify() {
        let f = fixture(10_000, 7);
        for i in 0..f.manifest.chunks() {
            let c = f.chunk(i);
            let b = c.encode();
            assert!(b.len() <= MAX_PAYLOAD);
            let back = Chunk::decode(&b).unwrap();
            assert_eq!(back, c);
            back.verify(&f.manifest).unwrap();
        }
        // The proof from the chunk hashes is the proof from the leaves.
        let hashes: Vec<Hash32> = f
            .leaves
            .chunks(CHUNK_SIZE as usize)
            .map(merkle::mth)
            .collect();
        assert_eq!(root_from_chunks(10_000, &hashes), f.manifest.root);
        for i in 0..3 {
            assert_eq!(proof_from_chunks(&hashes, i).unwrap(), f.chunk(i).proof);
        }
        assert!(proof_from_chunks(&hashes, 3).is_none());
    }

    #[test]
    fn hostile_chunks_are_rejected_with_their_reason() {
        let f = fixture(10_000, 7);
        let m = &f.manifest;
        let good = f.chunk(1);
        let kind = |c: &Chunk| c.verify(m).unwrap_err().kind();
        // Under another index.
        let mut c = good.clone();
        c.index = 0;
        assert_eq!(kind(&c), "chunk_bad_proof");
        c.index = 2;
        assert_eq!(kind(&c), "chunk_wrong_count");
        c.index = 3;
        assert_eq!(kind(&c), "chunk_out_of_range");
        // For another root or window.
        let mut c = good.clone();
        c.root = Hash32([1; 32]);
        assert_eq!(kind(&c), "chunk_other_root");
        let mut c = good.clone();
        c.window = 8;
        assert_eq!(kind(&c), "chunk_other_root");
        // A changed value, a dropped entry, a duplicated entry, unsorted.
        let mut c = good.clone();
        c.entries[5].1 = 99u64.to_le_bytes().to_vec();
        assert_eq!(kind(&c), "chunk_bad_proof");
        let mut c = good.clone();
        c.entries.pop();
        assert_eq!(kind(&c), "chunk_wrong_count");
        let mut c = good.clone();
        c.entries[6] = c.entries[5].clone();
        assert_eq!(kind(&c), "chunk_duplicate_entry");
        let mut c = good.clone();
        c.entries.swap(3, 4);
        assert_eq!(kind(&c), "chunk_unsorted");
        // Another chunk's valid proof.
        let mut c = good.clone();
        c.proof = f.chunk(0).proof;
        assert_eq!(kind(&c), "chunk_bad_proof");
        // The chunk of another snapshot, relabelled with ours.
        let g = fixture(20_000, 7);
        let mut c = g.chunk(1);
        assert_ne!(c.entries, good.entries);
        c.root = m.root;
        assert_eq!(kind(&c), "chunk_bad_proof");
    }

    #[test]
    fn hostile_chunk_bytes_are_rejected_before_allocation() {
        let f = fixture(5_000, 7);
        let b = f.chunk(1).encode();
        for cut in [
            0,
            3,
            5,
            20,
            CHUNK_PREFIX,
            CHUNK_PREFIX + 3,
            CHUNK_PREFIX + 40,
            b.len() - 33,
            b.len() - 1,
        ] {
            assert!(Chunk::decode(&b[..cut]).is_err(), "cut {cut}");
        }
        let mut long = b.clone();
        long.push(1);
        assert!(Chunk::decode(&long).is_err());
        assert_eq!(
            Chunk::decode(&vec![0u8; MAX_PAYLOAD + 1]),
            Err(SnapshotError::ChunkOversized(MAX_PAYLOAD + 1))
        );
        let set_u32 = |at: usize, v: u32| {
            let mut c = b.clone();
            c[at..at + 4].copy_from_slice(&v.to_le_bytes());
            Chunk::decode(&c)
        };
        // Counts over the bound or beyond the bytes.
        for v in [0, CHUNK_SIZE as u32 + 1, u32::MAX, 4000] {
            assert!(
                matches!(
                    set_u32(CHUNK_PREFIX, v),
                    Err(SnapshotError::ChunkMalformed(_))
                ),
                "{v}"
            );
        }
        // A value length over the bound (first entry: count, key len, key).
        assert!(matches!(
            set_u32(CHUNK_PREFIX + 4 + 2 + 33, 1 << 20),
            Err(SnapshotError::ChunkMalformed(_))
        ));
        // A key length of 0 or over the bound.
        for kl in [0u16, 257, u16::MAX] {
            let mut c = b.clone();
            c[CHUNK_PREFIX + 4..CHUNK_PREFIX + 6].copy_from_slice(&kl.to_le_bytes());
            assert!(
                matches!(Chunk::decode(&c), Err(SnapshotError::ChunkMalformed(_))),
                "{kl}"
            );
        }
        // A proof count over the bound.
        let mut c = f.chunk(1);
        c.proof = vec![Hash32([0; 32]); 65];
        assert!(matches!(
            Chunk::decode(&c.encode()),
            Err(SnapshotError::ChunkMalformed(_))
        ));
    }

    #[test]
    fn a_worst_case_chunk_fits_one_message() {
        // 300 members (1,960-byte values) and the rest accounts in one chunk.
        let mut es: Vec<Entry> = (0..300u32)
            .map(|i| {
                let mut k = vec![b'm'];
                k.extend_from_slice(&[0; 28]);
                k.extend_from_slice(&i.to_be_bytes());
                (k, vec![7; 1960])
            })
            .collect();
        es.extend((0..CHUNK_SIZE as u32 - 300).map(|i| {
            let mut k = vec![b'a'];
            k.extend_from_slice(&[0; 28]);
            k.extend_from_slice(&i.to_be_bytes());
            (k, vec![1; 8])
        }));
        es.sort();
        let c = Chunk {
            window: 1,
            root: Hash32([0; 32]),
            index: 0,
            entries: es,
            proof: vec![Hash32([0; 32]); 32],
        };
        let b = c.encode();
        assert!(b.len() < 800_000, "{}", b.len());
        assert_eq!(Chunk::decode(&b).unwrap(), c);
    }
}
