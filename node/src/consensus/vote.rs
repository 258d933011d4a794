//! Votes and Cements: their bytes, signatures and checks.
//!
//! Vote (`MTVT`, version 1), little-endian, docs/SPEC.md "Votes":
//! ```text
//! magic "MTVT" | version u8 = 1 | kind u8 (1 prevote, 2 precommit)
//! | network_id [32] | window u64 | round u32
//! | has_value u8 (0 nil, 1 value) | value [32] (only when has_value = 1)
//! | signer [32] (node id) | signature [3309] (ML-DSA-65)
//! ```
//! The signature covers every byte before it, under the context string
//! `montana/prevote/v1` or `montana/precommit/v1`. ML-DSA signatures are
//! randomised, so a vote is identified by [`Vote::key`] (everything but the
//! signature), never by its bytes.
//!
//! Cement (`MTCM`, version 1): the precommits of more than the quorum for
//! one proposal, each signer once, signers in ascending id order (so a set
//! of votes has exactly one encoding):
//! ```text
//! magic "MTCM" | version u8 = 1 | network_id [32] | window u64 | round u32
//! | proposal [32] | count u16 (1..=300)
//! | count x ( signer [32] | signature [3309] )
//! ```
//! Each entry is the signature of the precommit `(window, round,
//! Some(proposal))` by `signer`. 300 entries are 1,002,383 bytes: one
//! message under the 1 MiB payload limit.
//!
//! [`Cement::verify`] runs the cheap checks first (window, count, order,
//! membership, weight) and the signatures last.

use montana_vdf::Hash32;
use thiserror::Error;

use super::active::{ActiveSet, NodeId, Quorum, MAX_ACTIVE};
use super::agreement::VoteKind;
use crate::codec::{CodecError, Reader, Writer};
use crate::keys::{Domain, NodeKeys, SIGNATURE_LEN};

const VOTE_MAGIC: &[u8; 4] = b"MTVT";
const CEMENT_MAGIC: &[u8; 4] = b"MTCM";
const VERSION: u8 = 1;

/// What a vote names, without its signature: the dedup key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VoteKey {
    pub kind: VoteKind,
    pub network_id: [u8; 32],
    pub window: u64,
    pub round: u32,
    pub value: Option<Hash32>,
    pub signer: NodeId,
}

impl VoteKey {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(4 + 1 + 1 + 32 + 8 + 4 + 1 + 32 + 32);
        w.bytes(VOTE_MAGIC).u8(VERSION).u8(match self.kind {
            VoteKind::Prevote => 1,
            VoteKind::Precommit => 2,
        });
        w.bytes(&self.network_id).u64(self.window).u32(self.round);
        match self.value {
            Some(v) => w.u8(1).bytes(&v.0),
            None => w.u8(0),
        };
        w.bytes(&self.signer.0);
        w.finish()
    }
    fn domain(&self) -> Domain {
        match self.kind {
            VoteKind::Prevote => Domain::Prevote,
            VoteKind::Precommit => Domain::Precommit,
        }
    }
}

/// A signed vote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    pub key: VoteKey,
    pub signature: Vec<u8>,
}

impl Vote {
    /// Signs `key` (whose signer must be `keys`' id).
    pub fn sign(key: VoteKey, keys: &NodeKeys) -> Self {
        let signature = keys.sign(key.domain(), &key.signed_bytes());
        Vote { key, signature }
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.key.signed_bytes();
        b.extend_from_slice(&self.signature);
        b
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new("vote", bytes);
        r.header(VOTE_MAGIC, VERSION)?;
        let kind = match r.u8()? {
            1 => VoteKind::Prevote,
            2 => VoteKind::Precommit,
            k => {
                return Err(CodecError::Invalid {
                    what: "vote",
                    why: format!("unknown kind {k}"),
                })
            }
        };
        let network_id = r.array()?;
        let window = r.u64()?;
        let round = r.u32()?;
        let value = match r.u8()? {
            0 => None,
            1 => Some(Hash32(r.array()?)),
            f => {
                return Err(CodecError::Invalid {
                    what: "vote",
                    why: format!("value flag {f} (0 or 1)"),
                })
            }
        };
        let signer = NodeId(r.array()?);
        let signature = r.take(SIGNATURE_LEN)?.to_vec();
        r.end()?;
        Ok(Vote {
            key: VoteKey {
                kind,
                network_id,
                window,
                round,
                value,
                signer,
            },
            signature,
        })
    }
    /// Checks the signature against the signer's key in `set`.
    pub fn check(&self, set: &ActiveSet) -> Result<(), CementError> {
        let m = set
            .get(&self.key.signer)
            .ok_or(CementError::NonMember(self.key.signer))?;
        if m.key
            .verify(self.key.domain(), &self.key.signed_bytes(), &self.signature)
        {
            Ok(())
        } else {
            Err(CementError::BadSignature(self.key.signer))
        }
    }
}

/// Why a Cement is refused. `kind()` names the counter.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CementError {
    #[error("cement for network {}, not ours", hex::encode(.0))]
    WrongNetwork([u8; 32]),
    #[error("cement for window {got}, expected {expected}")]
    WrongWindow { expected: u64, got: u64 },
    #[error("cement has no precommits")]
    Empty,
    #[error("cement has {0} precommits (at most {MAX_ACTIVE})")]
    TooMany(usize),
    #[error("cement signers are not in ascending order or repeat {0}")]
    Unordered(NodeId),
    #[error("signer {0} is not a member of the window's active set")]
    NonMember(NodeId),
    #[error("precommits weigh {weight} of {total}: short of the quorum")]
    ShortOfQuorum { weight: u64, total: u64 },
    #[error("bad precommit signature by {0}")]
    BadSignature(NodeId),
}

impl CementError {
    pub fn kind(&self) -> &'static str {
        match self {
            CementError::WrongNetwork(_) => "cement_wrong_network",
            CementError::WrongWindow { .. } => "cement_wrong_window",
            CementError::Empty | CementError::TooMany(_) | CementError::Unordered(_) => {
                "cement_malformed"
            }
            CementError::NonMember(_) => "cement_non_member",
            CementError::ShortOfQuorum { .. } => "bundle_short_of_quorum",
            CementError::BadSignature(_) => "cement_bad_signature",
        }
    }
}

/// The precommits that cement one proposal as window `window`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cement {
    pub network_id: [u8; 32],
    pub window: u64,
    pub round: u32,
    pub proposal: Hash32,
    /// (signer, signature), signers strictly ascending.
    pub precommits: Vec<(NodeId, Vec<u8>)>,
}

impl Cement {
    /// Builds a Cement from checked precommit votes for one proposal
    /// (sorted and de-duplicated here).
    pub fn from_votes(votes: &[Vote]) -> Option<Self> {
        let first = votes.first()?;
        let k = first.key;
        let mut precommits: Vec<(NodeId, Vec<u8>)> = votes
            .iter()
            .filter(|v| {
                v.key.kind == VoteKind::Precommit
                    && v.key.network_id == k.network_id
                    && v.key.window == k.window
                    && v.key.round == k.round
                    && v.key.value == k.value
            })
            .map(|v| (v.key.signer, v.signature.clone()))
            .collect();
        precommits.sort_by_key(|p| p.0);
        precommits.dedup_by(|a, b| a.0 == b.0);
        Some(Cement {
            network_id: k.network_id,
            window: k.window,
            round: k.round,
            proposal: k.value?,
            precommits,
        })
    }

    /// Its encoded length (what it costs to fetch).
    pub fn weight(&self) -> usize {
        4 + 1 + 32 + 8 + 4 + 32 + 2 + self.precommits.len() * (32 + SIGNATURE_LEN)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.weight());
        w.bytes(CEMENT_MAGIC).u8(VERSION).bytes(&self.network_id);
        w.u64(self.window).u32(self.round).bytes(&self.proposal.0);
        w.u16(self.precommits.len() as u16);
        for (signer, sig) in &self.precommits {
            w.bytes(&signer.0).bytes(sig);
        }
        w.finish()
    }

    /// Decodes the layout; the count is checked before anything is
    /// allocated from it.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new("cement", bytes);
        r.header(CEMENT_MAGIC, VERSION)?;
        let network_id = r.array()?;
        let window = r.u64()?;
        let round = r.u32()?;
        let proposal = Hash32(r.array()?);
        let count = r.u16()? as usize;
        if count == 0 || count > MAX_ACTIVE {
            return Err(CodecError::Invalid {
                what: "cement",
                why: format!("{count} precommits (1 to {MAX_ACTIVE})"),
            });
        }
        if r.left() != count * (32 + SIGNATURE_LEN) {
            return Err(CodecError::Invalid {
                what: "cement",
                why: format!("{} bytes for {count} precommits", r.left()),
            });
        }
        let mut precommits = Vec::with_capacity(count);
        for _ in 0..count {
            let signer = NodeId(r.array()?);
            precommits.push((signer, r.take(SIGNATURE_LEN)?.to_vec()));
        }
        r.end()?;
        Ok(Cement {
            network_id,
            window,
            round,
            proposal,
            precommits,
        })
    }

    /// The Cement's identity (a proposal names its canonical bundle by it):
    /// SHA-256 of its bytes, which are canonical (signers ascending). Two
    /// Cements of one proposal with other signers or signatures differ.
    pub fn hash(&self) -> Hash32 {
        montana_vdf::HashSuite::Sha256.hash(&self.encode())
    }

    /// The precommit vote key of entry `signer`.
    fn key(&self, signer: NodeId) -> VoteKey {
        VoteKey {
            kind: VoteKind::Precommit,
            network_id: self.network_id,
            window: self.window,
            round: self.round,
            value: Some(self.proposal),
            signer,
        }
    }

    /// Checks this Cement for `window` of network `network_id` against that
    /// window's active set and quorum: cheap checks first, then every
    /// signature.
    pub fn verify(
        &self,
        network_id: &[u8; 32],
        window: u64,
        set: &ActiveSet,
        quorum: Quorum,
    ) -> Result<(), CementError> {
        self.verify_except(network_id, window, set, quorum, |_, _| false, &mut 0)
    }

    /// [`Cement::verify`], skipping the signatures that `known` vouches for
    /// (a signer's same bytes in a precommit of this window, round and
    /// proposal that the caller verified already: the signed bytes are the
    /// same); `checks` counts the signatures verified.
    pub fn verify_except(
        &self,
        network_id: &[u8; 32],
        window: u64,
        set: &ActiveSet,
        quorum: Quorum,
        known: impl Fn(&NodeId, &[u8]) -> bool,
        checks: &mut u64,
    ) -> Result<(), CementError> {
        if &self.network_id != network_id {
            return Err(CementError::WrongNetwork(self.network_id));
        }
        if self.window != window {
            return Err(CementError::WrongWindow {
                expected: window,
                got: self.window,
            });
        }
        if self.precommits.is_empty() {
            return Err(CementError::Empty);
        }
        if self.precommits.len() > MAX_ACTIVE {
            return Err(CementError::TooMany(self.precommits.len()));
        }
        let mut weight = 0u64;
        for (i, (signer, _)) in self.precommits.iter().enumerate() {
            if i > 0 && self.precommits[i - 1].0 >= *signer {
                return Err(CementError::Unordered(*signer));
            }
            let w = set.weight(signer);
            if w == 0 {
                return Err(CementError::NonMember(*signer));
            }
            weight += w;
        }
        if !quorum.reached(weight, set.total()) {
            return Err(CementError::ShortOfQuorum {
                weight,
                total: set.total(),
            });
        }
        for (signer, sig) in &self.precommits {
            if known(signer, sig) {
                continue;
            }
            *checks += 1;
            let key = self.key(*signer);
            let m = set.get(signer).expect("membership checked");
            if !m.key.verify(Domain::Precommit, &key.signed_bytes(), sig) {
                return Err(CementError::BadSignature(*signer));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::active::tests::set_of;

    const NET: [u8; 32] = [0xAB; 32];

    fn precommit(keys: &NodeKeys, value: Hash32) -> Vote {
        let signer = NodeId::of(keys.verifying_key());
        Vote::sign(
            VoteKey {
                kind: VoteKind::Precommit,
                network_id: NET,
                window: 7,
                round: 2,
                value: Some(value),
                signer,
            },
            keys,
        )
    }

    #[test]
    fn vote_round_trips_and_checks() {
        let (set, keys) = set_of(4);
        let v = precommit(&keys[0], Hash32([3; 32]));
        let bytes = v.encode();
        assert_eq!(
            bytes.len(),
            4 + 1 + 1 + 32 + 8 + 4 + 1 + 32 + 32 + SIGNATURE_LEN
        );
        let back = Vote::decode(&bytes).unwrap();
        assert_eq!(back, v);
        back.check(&set).unwrap();
        // A nil prevote too.
        let nil = Vote::sign(
            VoteKey {
                kind: VoteKind::Prevote,
                value: None,
                ..v.key
            },
            &keys[1],
        );
        assert!(Vote::decode(&nil.encode()).is_ok());
    }

    #[test]
    fn vote_rejections() {
        let (set, keys) = set_of(4);
        let v = precommit(&keys[0], Hash32([3; 32]));
        let bytes = v.encode();
        for cut in 0..bytes.len() {
            assert!(Vote::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            Vote::decode(&long),
            Err(CodecError::TrailingBytes { .. })
        ));
        let mut kind = bytes.clone();
        kind[5] = 3;
        assert!(matches!(
            Vote::decode(&kind),
            Err(CodecError::Invalid { .. })
        ));
        let mut flag = bytes.clone();
        flag[4 + 1 + 1 + 32 + 8 + 4] = 2;
        assert!(Vote::decode(&flag).is_err());
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(matches!(
            Vote::decode(&magic),
            Err(CodecError::BadMagic { .. })
        ));
        // A changed field breaks the signature: forged round, value, window.
        for at in [
            4 + 1 + 1 + 32 + 8,
            4 + 1 + 1 + 32 + 8 + 4 + 1,
            4 + 1 + 1 + 32,
        ] {
            let mut f = bytes.clone();
            f[at] ^= 1;
            let forged = Vote::decode(&f).unwrap();
            assert_eq!(
                forged.check(&set),
                Err(CementError::BadSignature(v.key.signer))
            );
        }
        // A prevote signature is not a precommit signature.
        let mut as_prevote = v.clone();
        as_prevote.key.kind = VoteKind::Prevote;
        assert!(as_prevote.check(&set).is_err());
        // A non-member's vote.
        let (_, others) = set_of(1);
        let outsider = precommit(&others[0], Hash32([3; 32]));
        assert!(matches!(
            outsider.check(&set),
            Err(CementError::NonMember(_))
        ));
    }

    #[test]
    fn cement_round_trips_and_verifies() {
        let (set, keys) = set_of(4);
        let p = Hash32([9; 32]);
        let votes: Vec<Vote> = keys[..3].iter().map(|k| precommit(k, p)).collect();
        let c = Cement::from_votes(&votes).unwrap();
        assert!(c.precommits.windows(2).all(|w| w[0].0 < w[1].0));
        let bytes = c.encode();
        assert_eq!(bytes.len(), c.weight());
        let back = Cement::decode(&bytes).unwrap();
        assert_eq!(back, c);
        back.verify(&NET, 7, &set, Quorum::default()).unwrap();
    }

    #[test]
    fn cement_rejections() {
        let (set, keys) = set_of(4);
        let q = Quorum::default();
        let p = Hash32([9; 32]);
        let votes: Vec<Vote> = keys[..3].iter().map(|k| precommit(k, p)).collect();
        let c = Cement::from_votes(&votes).unwrap();

        // Short of quorum: 2 of 4.
        let short = Cement::from_votes(&votes[..2]).unwrap();
        let e = short.verify(&NET, 7, &set, q).unwrap_err();
        assert_eq!(e.kind(), "bundle_short_of_quorum");
        // The same vote twice does not make a quorum (re-signed copies too).
        let mut dup = short.clone();
        let again = precommit(&keys[0], p);
        dup.precommits.push((again.key.signer, again.signature));
        dup.precommits.sort_by_key(|p| p.0);
        assert!(matches!(
            dup.verify(&NET, 7, &set, q),
            Err(CementError::Unordered(_))
        ));
        // Wrong window, wrong network.
        assert!(matches!(
            c.verify(&NET, 8, &set, q),
            Err(CementError::WrongWindow {
                expected: 8,
                got: 7
            })
        ));
        assert!(matches!(
            c.verify(&[0; 32], 7, &set, q),
            Err(CementError::WrongNetwork(_))
        ));
        // A non-member's precommit among them.
        let (_, others) = set_of(1);
        let mut nm = c.clone();
        let o = precommit(&others[0], p);
        nm.precommits.push((o.key.signer, o.signature));
        nm.precommits.sort_by_key(|p| p.0);
        assert!(matches!(
            nm.verify(&NET, 7, &set, q),
            Err(CementError::NonMember(_))
        ));
        // A signature over another proposal (wrong value) or round.
        let mut forged = c.clone();
        forged.proposal = Hash32([8; 32]);
        assert!(matches!(
            forged.verify(&NET, 7, &set, q),
            Err(CementError::BadSignature(_))
        ));
        let mut wrong_round = c.clone();
        wrong_round.round = 3;
        assert!(matches!(
            wrong_round.verify(&NET, 7, &set, q),
            Err(CementError::BadSignature(_))
        ));
        // Encodings: count 0, count past the cap, lengths that do not add up.
        let bytes = c.encode();
        let count_at = 4 + 1 + 32 + 8 + 4 + 32;
        let mut zero = bytes.clone();
        zero[count_at..count_at + 2].copy_from_slice(&0u16.to_le_bytes());
        assert!(Cement::decode(&zero).is_err());
        let mut huge = bytes.clone();
        huge[count_at..count_at + 2].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(Cement::decode(&huge).is_err());
        assert!(Cement::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(Cement::decode(&long).is_err());
    }

    #[test]
    fn a_full_cement_fits_one_message() {
        let max = 4 + 1 + 32 + 8 + 4 + 32 + 2 + MAX_ACTIVE * (32 + SIGNATURE_LEN);
        assert_eq!(max, 1_002_383);
        assert!(max <= crate::messages::MAX_PAYLOAD);
    }
}
