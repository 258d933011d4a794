//! Proposals: one window's result, signed by the node that made it.
//!
//! A proposal for window W+1 carries `T(W+1) = H^D(T(W))` and the K
//! checkpoints that let a follower verify it in K independent segments
//! instead of recomputing it. The signed header commits to the checkpoints
//! through their hash, so the signature is checked (cheap) before any
//! hashing work is spent. Version 2 names its maker by node id, the
//! cemented window it builds on, the canonical bundle (Cement) of that
//! window and the state root after it; version 3 adds the hash of its
//! extras (candidate proofs and a registration, [`Extras`]), which follow
//! the checkpoints. Layout: docs/SPEC.md section 7.

use montana_vdf::{ChainParams, Hash32, HashSuite, Proof};

use crate::codec::{CodecError, Reader, Writer};
use crate::consensus::active::NodeId;
pub use crate::consensus::joining::Extras;
use crate::keys::{Domain, NodeKeys, VerifyingKey, SIGNATURE_LEN};

/// The proposal format this build reads and writes.
pub const PROPOSAL_VERSION: u8 = 3;
/// Header length in bytes (version 3).
pub const HEADER_LEN: usize = 258;
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
    /// The node that made (and signed) it.
    pub proposer: NodeId,
    /// The highest cemented window it builds on (window - 1).
    pub cemented: u64,
    /// The hash of the Cement of window `cemented` that pays (its canonical
    /// bundle); zeros for window 1.
    pub bundle: [u8; 32],
    /// The state root after everything up to `cemented`, window
    /// `cemented` paid with `bundle`.
    pub state_root: Hash32,
    /// SHA-256 of the extras' bytes ([`Extras::encode`]).
    pub extras_hash: [u8; 32],
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
            .bytes(&self.proposer.0)
            .u64(self.cemented)
            .bytes(&self.bundle)
            .bytes(&self.state_root.0)
            .bytes(&self.extras_hash);
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
            proposer: NodeId(r.array()?),
            cemented: r.u64()?,
            bundle: r.array()?,
            state_root: Hash32(r.array()?),
            extras_hash: r.array()?,
        };
        let bad = |why: String| CodecError::Invalid {
            what: "proposal",
            why,
        };
        if h.window == 0 {
            return Err(bad("window 0 has no proposal".into()));
        }
        if h.cemented != h.window - 1 {
            return Err(bad(format!(
                "window {} builds on cemented window {} (must be the one before)",
                h.window, h.cemented
            )));
        }
        if h.window == 1 && h.bundle != [0; 32] {
            return Err(bad("window 1 names a bundle (there is none)".into()));
        }
        ChainParams::new(h.d, h.checkpoints as u64).map_err(|e| bad(e.to_string()))?;
        Ok(h)
    }

    /// Decodes exactly the 258 header bytes (the checks of
    /// [`Proposal::from_bytes`] that need no checkpoints).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new("proposal header", bytes);
        let h = Self::read(&mut r)?;
        r.end()?;
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

/// What a new proposal builds on: the header fields beside the VDF output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Basis {
    pub window: u64,
    /// The proposal hash of the cemented window before (the network id for
    /// window 1).
    pub link: [u8; 32],
    pub bundle: [u8; 32],
    pub state_root: Hash32,
}

/// A signed proposal with its checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub header: ProposalHeader,
    pub signature: Vec<u8>,
    pub checkpoints: Vec<Hash32>,
    pub extras: Extras,
}

impl Proposal {
    /// Builds and signs the proposal for `window` from its checkpoints
    /// (the last one is T(window)).
    pub fn sign(
        keys: &NodeKeys,
        suite: HashSuite,
        d: u64,
        basis: Basis,
        checkpoints: Vec<Hash32>,
    ) -> Self {
        Self::sign_with(keys, suite, d, basis, checkpoints, Extras::default())
    }

    /// [`Proposal::sign`] with candidate proofs or a registration.
    pub fn sign_with(
        keys: &NodeKeys,
        suite: HashSuite,
        d: u64,
        basis: Basis,
        checkpoints: Vec<Hash32>,
        extras: Extras,
    ) -> Self {
        let header = ProposalHeader {
            suite,
            window: basis.window,
            link: basis.link,
            t: *checkpoints.last().expect("K >= 1"),
            checkpoints_hash: checkpoints_hash(&checkpoints),
            d,
            checkpoints: checkpoints.len() as u32,
            proposer: NodeId::of(keys.verifying_key()),
            cemented: basis.window - 1,
            bundle: basis.bundle,
            state_root: basis.state_root,
            extras_hash: extras.hash(),
        };
        let signature = keys.sign(Domain::Proposal, &header.to_bytes());
        Proposal {
            header,
            signature,
            checkpoints,
            extras,
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

    /// Header, signature, checkpoints, extras (docs/SPEC.md section 7).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(HEADER_LEN + SIGNATURE_LEN + 32 * self.checkpoints.len());
        w.bytes(&self.header.to_bytes()).bytes(&self.signature);
        for c in &self.checkpoints {
            w.bytes(&c.0);
        }
        w.bytes(&self.extras.encode());
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
        if r.left() < 32 * k {
            return Err(CodecError::Invalid {
                what: "proposal",
                why: format!("{} bytes of checkpoints, header declares {k}", r.left()),
            });
        }
        let checkpoints: Vec<Hash32> = (0..k)
            .map(|_| r.array().map(Hash32))
            .collect::<Result<_, _>>()?;
        let extras_bytes = r.take(r.left())?;
        let extras = Extras::decode(extras_bytes)?;
        r.end()?;
        if HashSuite::Sha256.hash(extras_bytes).0 != header.extras_hash {
            return Err(CodecError::Invalid {
                what: "proposal",
                why: "extras do not match the signed extras hash".into(),
            });
        }
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
            extras,
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
        Proposal::sign(
            keys,
            suite,
            20,
            Basis {
                window: 2,
                link: [9; 32],
                bundle: [8; 32],
                state_root: Hash32([7; 32]),
            },
            cps,
        )
    }

    #[test]
    fn round_trip_and_signature() {
        let keys = NodeKeys::generate().unwrap();
        let p = sample(&keys);
        let bytes = p.to_bytes();
        assert_eq!(bytes.len(), HEADER_LEN + SIGNATURE_LEN + 4 * 32 + 3);
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
            Box::new(|h| h.proposer.0[0] ^= 1),
            Box::new(|h| h.bundle[0] ^= 1),
            Box::new(|h| h.state_root.0[0] ^= 1),
            Box::new(|h| h.suite = HashSuite::Blake3),
            Box::new(|h| h.extras_hash[0] ^= 1),
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
        // Version 1 (the genesis-index format) is refused, not misread.
        let mut b = bytes.clone();
        b[4] = 1;
        assert!(matches!(
            Proposal::from_bytes(&b),
            Err(CodecError::UnsupportedVersion { found: 1, .. })
        ));
        // `cemented` must be the window before; window 1 names no bundle.
        let mut q = p.clone();
        q.header.cemented = 0;
        assert!(Proposal::from_bytes(&q.to_bytes()).is_err());
        let mut q = p.clone();
        q.header.window = 1;
        q.header.cemented = 0;
        assert!(Proposal::from_bytes(&q.to_bytes()).is_err());
        q.header.bundle = [0; 32];
        assert!(Proposal::from_bytes(&q.to_bytes()).is_ok());
        // A checkpoint changed after signing: caught by the checkpoints hash.
        let mut b = bytes.clone();
        let last = b.len() - 40;
        b[last] ^= 1;
        assert!(Proposal::from_bytes(&b).is_err());
        // Extras changed after signing, or malformed: refused.
        let mut b = bytes.clone();
        let n = b.len();
        b[n - 1] = 1;
        assert!(Proposal::from_bytes(&b).is_err());
        let mut q = p.clone();
        q.extras.registration = Some(crate::consensus::joining::Registration::sign(
            &keys, [0; 32], 1,
        ));
        assert!(matches!(
            Proposal::from_bytes(&q.to_bytes()),
            Err(CodecError::Invalid { why, .. }) if why.contains("extras hash")
        ));
        // Window 0 and K not dividing D.
        let mut q = p.clone();
        q.header.window = 0;
        q.header.cemented = u64::MAX;
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
