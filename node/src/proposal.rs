//! Proposals: one window's result, signed by the proposer.
//!
//! A proposal for window W+1 carries `T(W+1) = H^D(T(W))` and the K
//! checkpoints that let a follower verify it in K independent segments
//! instead of recomputing it. The signed header commits to the checkpoints
//! through their hash, so the signature is checked (cheap) before any
//! hashing work is spent. Layout: docs/SPEC.md section 7. Versioned: later
//! versions add quorum signatures and fast-sync fields.

use montana_vdf::{ChainParams, Hash32, HashSuite, Proof};

use crate::codec::{CodecError, Reader, Writer};
use crate::keys::{Domain, NodeKeys, VerifyingKey, SIGNATURE_LEN};

/// The proposal format this build reads and writes.
pub const PROPOSAL_VERSION: u8 = 1;
/// Header length in bytes (version 1).
pub const HEADER_LEN: usize = 124;
const MAGIC: &[u8; 4] = b"MTPH";

/// The signed part of a proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposalHeader {
    pub suite: HashSuite,
    /// The window this proposal creates (W+1 >= 1).
    pub window: u64,
    /// Window 1: the network id. Window w > 1: the proposal hash of window
    /// w-1. Either way it binds the proposal to one network and one history.
    pub link: [u8; 32],
    /// T(window).
    pub t: Hash32,
    /// SHA-256 of the checkpoints, concatenated in order.
    pub checkpoints_hash: [u8; 32],
    /// D, the steps from T(window-1) to T(window).
    pub d: u64,
    /// K, the number of checkpoints.
    pub checkpoints: u32,
    /// The proposer's index in the genesis peer list.
    pub proposer: u16,
}

impl ProposalHeader {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(HEADER_LEN);
        w.bytes(MAGIC)
            .u8(PROPOSAL_VERSION)
            .u8(self.suite.id())
            .u64(self.window)
            .bytes(&self.link)
            .bytes(&self.t.0)
            .bytes(&self.checkpoints_hash)
            .u64(self.d)
            .u32(self.checkpoints)
            .u16(self.proposer);
        let b = w.finish();
        debug_assert_eq!(b.len(), HEADER_LEN);
        b
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.header(MAGIC, PROPOSAL_VERSION)?;
        let suite_id = r.u8()?;
        let suite = HashSuite::from_id(suite_id).ok_or_else(|| CodecError::Invalid {
            what: "proposal",
            why: format!("unknown hash suite byte {suite_id}"),
        })?;
        let h = ProposalHeader {
            suite,
            window: r.u64()?,
            link: r.array()?,
            t: Hash32(r.array()?),
            checkpoints_hash: r.array()?,
            d: r.u64()?,
            checkpoints: r.u32()?,
            proposer: r.u16()?,
        };
        let bad = |why: String| CodecError::Invalid {
            what: "proposal",
            why,
        };
        if h.window == 0 {
            return Err(bad("window 0 has no proposal".into()));
        }
        ChainParams::new(h.d, h.checkpoints as u64).map_err(|e| bad(e.to_string()))?;
        Ok(h)
    }

    /// The proposal's identity: SHA-256 of the header bytes. (The signature
    /// is not included: ML-DSA signatures are randomised.)
    pub fn hash(&self) -> [u8; 32] {
        HashSuite::Sha256.hash(&self.to_bytes()).0
    }
}

/// SHA-256 of the checkpoints, concatenated.
pub fn checkpoints_hash(checkpoints: &[Hash32]) -> [u8; 32] {
    let mut buf = Vec::with_capacity(checkpoints.len() * 32);
    for c in checkpoints {
        buf.extend_from_slice(&c.0);
    }
    HashSuite::Sha256.hash(&buf).0
}

/// A signed proposal with its checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub header: ProposalHeader,
    pub signature: Vec<u8>,
    pub checkpoints: Vec<Hash32>,
}

impl Proposal {
    /// Builds and signs the proposal for `window` from its checkpoints
    /// (the last one is T(window)).
    pub fn sign(
        keys: &NodeKeys,
        suite: HashSuite,
        window: u64,
        link: [u8; 32],
        d: u64,
        proposer: u16,
        checkpoints: Vec<Hash32>,
    ) -> Self {
        let header = ProposalHeader {
            suite,
            window,
            link,
            t: *checkpoints.last().expect("K >= 1"),
            checkpoints_hash: checkpoints_hash(&checkpoints),
            d,
            checkpoints: checkpoints.len() as u32,
            proposer,
        };
        let signature = keys.sign(Domain::Proposal, &header.to_bytes());
        Proposal {
            header,
            signature,
            checkpoints,
        }
    }

    /// Whether `key` signed this header.
    pub fn signed_by(&self, key: &VerifyingKey) -> bool {
        key.verify(Domain::Proposal, &self.header.to_bytes(), &self.signature)
    }

    pub fn hash(&self) -> [u8; 32] {
        self.header.hash()
    }

    pub fn window(&self) -> u64 {
        self.header.window
    }

    /// The checkpointed proof of this window, starting from T(window-1).
    pub fn proof(&self, start: Hash32) -> Proof {
        let params = ChainParams::new(self.header.d, self.header.checkpoints as u64)
            .expect("checked when decoded or built");
        Proof::new(self.header.suite, start, params, self.checkpoints.clone())
            .expect("checkpoint count checked when decoded or built")
    }

    /// Header, signature, checkpoints (docs/SPEC.md section 7).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(HEADER_LEN + SIGNATURE_LEN + 32 * self.checkpoints.len());
        w.bytes(&self.header.to_bytes()).bytes(&self.signature);
        for c in &self.checkpoints {
            w.bytes(&c.0);
        }
        w.finish()
    }

    /// Decodes and checks the structure: lengths, that the checkpoints hash
    /// to the header's value and that the last one is T. The signature and
    /// the chain are checked by [`crate::chain`], which knows the genesis.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new("proposal", bytes);
        let header = ProposalHeader::read(&mut r)?;
        let signature = r.take(SIGNATURE_LEN)?.to_vec();
        let k = header.checkpoints as usize;
        if r.left() != 32 * k {
            return Err(CodecError::Invalid {
                what: "proposal",
                why: format!("{} bytes of checkpoints, header declares {k}", r.left()),
            });
        }
        let checkpoints: Vec<Hash32> = (0..k)
            .map(|_| r.array().map(Hash32))
            .collect::<Result<_, _>>()?;
        r.end()?;
        if checkpoints_hash(&checkpoints) != header.checkpoints_hash {
            return Err(CodecError::Invalid {
                what: "proposal",
                why: "checkpoints do not match the signed checkpoints hash".into(),
            });
        }
        if checkpoints.last() != Some(&header.t) {
            return Err(CodecError::Invalid {
                what: "proposal",
                why: "last checkpoint differs from T".into(),
            });
        }
        Ok(Proposal {
            header,
            signature,
            checkpoints,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(keys: &NodeKeys) -> Proposal {
        let suite = HashSuite::Sha256;
        let start = Hash32([3; 32]);
        let mut v = start;
        let cps = (0..4)
            .map(|_| {
                v = suite.iterate(&v, 5);
                v
            })
            .collect();
        Proposal::sign(keys, suite, 1, [9; 32], 20, 0, cps)
    }

    #[test]
    fn round_trip_and_signature() {
        let keys = NodeKeys::generate().unwrap();
        let p = sample(&keys);
        let bytes = p.to_bytes();
        assert_eq!(bytes.len(), HEADER_LEN + SIGNATURE_LEN + 4 * 32);
        let back = Proposal::from_bytes(&bytes).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.hash(), p.hash());
        assert!(back.signed_by(keys.verifying_key()));
        let other = NodeKeys::generate().unwrap();
        assert!(!back.signed_by(other.verifying_key()));
        // The proof it carries checks against the reference.
        let proof = p.proof(Hash32([3; 32]));
        assert!(proof
            .segments()
            .iter()
            .all(|s| s.check_reference(proof.suite())));
    }

    #[test]
    fn header_fields_are_signed() {
        let keys = NodeKeys::generate().unwrap();
        let p = sample(&keys);
        type Edit = Box<dyn Fn(&mut ProposalHeader)>;
        let mut edits: Vec<Edit> = vec![
            Box::new(|h| h.window += 1),
            Box::new(|h| h.link[0] ^= 1),
            Box::new(|h| h.t.0[0] ^= 1),
            Box::new(|h| h.checkpoints_hash[0] ^= 1),
            Box::new(|h| h.d += 4),
            Box::new(|h| h.proposer = 1),
            Box::new(|h| h.suite = HashSuite::Blake3),
        ];
        for edit in edits.drain(..) {
            let mut q = p.clone();
            edit(&mut q.header);
            assert!(!q.signed_by(keys.verifying_key()));
            assert_ne!(q.hash(), p.hash());
        }
    }

    #[test]
    fn rejects_malformed_bytes() {
        let keys = NodeKeys::generate().unwrap();
        let p = sample(&keys);
        let bytes = p.to_bytes();
        for cut in [0, 3, 4, 5, HEADER_LEN - 1, HEADER_LEN + 10, bytes.len() - 1] {
            assert!(Proposal::from_bytes(&bytes[..cut]).is_err(), "{cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Proposal::from_bytes(&long).is_err());
        let mut b = bytes.clone();
        b[0] ^= 1;
        assert!(matches!(
            Proposal::from_bytes(&b),
            Err(CodecError::BadMagic { .. })
        ));
        let mut b = bytes.clone();
        b[4] = 2;
        assert!(matches!(
            Proposal::from_bytes(&b),
            Err(CodecError::UnsupportedVersion { found: 2, .. })
        ));
        // A checkpoint changed after signing: caught by the checkpoints hash.
        let mut b = bytes.clone();
        let last = b.len() - 40;
        b[last] ^= 1;
        assert!(Proposal::from_bytes(&b).is_err());
        // Window 0 and K not dividing D.
        let mut q = p.clone();
        q.header.window = 0;
        assert!(Proposal::from_bytes(&q.to_bytes()).is_err());
        let mut q = p.clone();
        q.header.d = 21;
        assert!(Proposal::from_bytes(&q.to_bytes()).is_err());
        // T that is not the last checkpoint.
        let mut q = p.clone();
        q.header.t = Hash32::ZERO;
        assert!(Proposal::from_bytes(&q.to_bytes()).is_err());
    }
}
