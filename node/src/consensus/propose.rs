//! The round messages: Propose (`MTPP`) and Beacon (`MTBC`).
//!
//! A proposal (docs/SPEC.md section 7) is a value: its hash is the same in
//! every round it is proposed in, so locks work across rounds. Putting it
//! into round r is the job of round r's proposer, who signs a Propose:
//! ```text
//! magic "MTPP" | version u8 = 1 | network_id [32] | window u64 | round u32
//! | valid_round u32 (0xFFFF_FFFF: none) | value [32] (the proposal hash)
//! | signer [32] (node id) | signature [3309] (ML-DSA-65, "montana/propose/v1")
//! ```
//! The Propose message (type 20) is those 3,418 bytes followed by the
//! proposal's bytes, whose hash must be `value`.
//!
//! A proposer that is still evaluating its window signs a Beacon every
//! `window_secs / 2`, so that a slow proposer is not taken for a dead one:
//! ```text
//! magic "MTBC" | version u8 = 1 | network_id [32] | window u64 | round u32
//! | signer [32] | signature [3309] ("montana/beacon/v1")
//! ```
//! Both signatures cover every byte before them; trailing bytes are
//! rejected.

use montana_vdf::Hash32;

use super::active::{ActiveSet, NodeId};
use crate::codec::{CodecError, Reader, Writer};
use crate::keys::{Domain, NodeKeys, SIGNATURE_LEN};
use crate::proposal::Proposal;

const PROPOSE_MAGIC: &[u8; 4] = b"MTPP";
const BEACON_MAGIC: &[u8; 4] = b"MTBC";
const VERSION: u8 = 1;
const NO_ROUND: u32 = u32::MAX;
/// Bytes of a Propose before the proposal.
pub const PROPOSE_LEN: usize = 4 + 1 + 32 + 8 + 4 + 4 + 32 + 32 + SIGNATURE_LEN;
/// Bytes of a Beacon.
pub const BEACON_LEN: usize = 4 + 1 + 32 + 8 + 4 + 32 + SIGNATURE_LEN;

/// What a Propose says, without its signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProposeKey {
    pub network_id: [u8; 32],
    pub window: u64,
    pub round: u32,
    /// The round in which a quorum prevoted `value` (a re-proposal), if any.
    pub valid_round: Option<u32>,
    pub value: Hash32,
    pub signer: NodeId,
}

impl ProposeKey {
    pub(crate) fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(PROPOSE_LEN - SIGNATURE_LEN);
        w.bytes(PROPOSE_MAGIC).u8(VERSION).bytes(&self.network_id);
        w.u64(self.window).u32(self.round);
        w.u32(self.valid_round.unwrap_or(NO_ROUND));
        w.bytes(&self.value.0).bytes(&self.signer.0);
        w.finish()
    }
}

/// A proposal put into a round by that round's proposer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Propose {
    pub key: ProposeKey,
    pub signature: Vec<u8>,
    pub proposal: Proposal,
}

impl Propose {
    pub fn sign(key: ProposeKey, proposal: Proposal, keys: &NodeKeys) -> Self {
        let signature = keys.sign(Domain::Propose, &key.signed_bytes());
        Propose {
            key,
            signature,
            proposal,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.key.signed_bytes();
        b.extend_from_slice(&self.signature);
        b.extend_from_slice(&self.proposal.to_bytes());
        b
    }

    /// Decodes the layout and the proposal, and checks that the proposal's
    /// hash is the value named (signatures are checked by the caller, who
    /// knows the round's proposer).
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new("propose", bytes);
        r.header(PROPOSE_MAGIC, VERSION)?;
        let network_id = r.array()?;
        let window = r.u64()?;
        let round = r.u32()?;
        let valid_round = match r.u32()? {
            NO_ROUND => None,
            vr if vr < round => Some(vr),
            vr => {
                return Err(CodecError::Invalid {
                    what: "propose",
                    why: format!("valid round {vr} is not before round {round}"),
                })
            }
        };
        let value = Hash32(r.array()?);
        let signer = NodeId(r.array()?);
        let signature = r.take(SIGNATURE_LEN)?.to_vec();
        let proposal = Proposal::from_bytes(r.take(r.left())?)?;
        r.end()?;
        if proposal.hash() != value.0 {
            return Err(CodecError::Invalid {
                what: "propose",
                why: "the proposal's hash is not the value named".into(),
            });
        }
        if proposal.window() != window {
            return Err(CodecError::Invalid {
                what: "propose",
                why: format!(
                    "proposal for window {} in a propose for window {window}",
                    proposal.window()
                ),
            });
        }
        Ok(Propose {
            key: ProposeKey {
                network_id,
                window,
                round,
                valid_round,
                value,
                signer,
            },
            signature,
            proposal,
        })
    }

    /// Whether the signer, a member of `set`, signed it.
    pub fn signed_in(&self, set: &ActiveSet) -> bool {
        set.get(&self.key.signer).is_some_and(|m| {
            m.key
                .verify(Domain::Propose, &self.key.signed_bytes(), &self.signature)
        })
    }
}

/// "Still evaluating window `window` for round `round`."
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Beacon {
    pub network_id: [u8; 32],
    pub window: u64,
    pub round: u32,
    pub signer: NodeId,
    pub signature: Vec<u8>,
}

impl Beacon {
    fn signed_bytes(network_id: &[u8; 32], window: u64, round: u32, signer: &NodeId) -> Vec<u8> {
        let mut w = Writer::with_capacity(BEACON_LEN - SIGNATURE_LEN);
        w.bytes(BEACON_MAGIC).u8(VERSION).bytes(network_id);
        w.u64(window).u32(round).bytes(&signer.0);
        w.finish()
    }

    pub fn sign(network_id: [u8; 32], window: u64, round: u32, keys: &NodeKeys) -> Self {
        let signer = NodeId::of(keys.verifying_key());
        let signature = keys.sign(
            Domain::Beacon,
            &Self::signed_bytes(&network_id, window, round, &signer),
        );
        Beacon {
            network_id,
            window,
            round,
            signer,
            signature,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Self::signed_bytes(&self.network_id, self.window, self.round, &self.signer);
        b.extend_from_slice(&self.signature);
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        if bytes.len() != BEACON_LEN {
            return Err(CodecError::Invalid {
                what: "beacon",
                why: format!("{} bytes (a beacon is {BEACON_LEN})", bytes.len()),
            });
        }
        let mut r = Reader::new("beacon", bytes);
        r.header(BEACON_MAGIC, VERSION)?;
        let b = Beacon {
            network_id: r.array()?,
            window: r.u64()?,
            round: r.u32()?,
            signer: NodeId(r.array()?),
            signature: r.take(SIGNATURE_LEN)?.to_vec(),
        };
        r.end()?;
        Ok(b)
    }

    /// Whether the signer, a member of `set`, signed it.
    pub fn signed_in(&self, set: &ActiveSet) -> bool {
        set.get(&self.signer).is_some_and(|m| {
            m.key.verify(
                Domain::Beacon,
                &Self::signed_bytes(&self.network_id, self.window, self.round, &self.signer),
                &self.signature,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::active::{ActiveSet, Member};
    use crate::proposal::Basis;
    use montana_vdf::HashSuite;

    const NET: [u8; 32] = [0x42; 32];

    fn proposal(keys: &NodeKeys, window: u64) -> Proposal {
        let cps = (0..3).map(|i| Hash32([i as u8 + 1; 32])).collect();
        Proposal::sign(
            keys,
            HashSuite::Sha256,
            30,
            Basis {
                window,
                link: [1; 32],
                bundle: [2; 32],
                state_root: Hash32([3; 32]),
            },
            cps,
        )
    }

    fn set(keys: &NodeKeys) -> ActiveSet {
        ActiveSet::new(vec![Member {
            id: NodeId::of(keys.verifying_key()),
            key: keys.verifying_key().clone(),
            weight: 1,
        }])
        .unwrap()
    }

    fn propose(keys: &NodeKeys, valid_round: Option<u32>) -> Propose {
        let p = proposal(keys, 5);
        Propose::sign(
            ProposeKey {
                network_id: NET,
                window: 5,
                round: 3,
                valid_round,
                value: Hash32(p.hash()),
                signer: NodeId::of(keys.verifying_key()),
            },
            p,
            keys,
        )
    }

    #[test]
    fn propose_round_trips_and_is_signed() {
        let keys = NodeKeys::generate().unwrap();
        for vr in [None, Some(0), Some(2)] {
            let m = propose(&keys, vr);
            let b = m.encode();
            assert_eq!(b.len(), PROPOSE_LEN + m.proposal.to_bytes().len());
            let back = Propose::decode(&b).unwrap();
            assert_eq!(back, m);
            assert!(back.signed_in(&set(&keys)));
            let other = NodeKeys::generate().unwrap();
            assert!(!back.signed_in(&set(&other)));
            // Every signed field counts.
            let mut edited = back.clone();
            edited.key.round += 1;
            assert!(!edited.signed_in(&set(&keys)));
            let mut edited = back.clone();
            edited.key.valid_round = Some(1).filter(|_| vr != Some(1));
            assert!(!edited.signed_in(&set(&keys)));
        }
    }

    #[test]
    fn propose_rejects_bad_bytes() {
        let keys = NodeKeys::generate().unwrap();
        let m = propose(&keys, Some(2));
        let b = m.encode();
        for cut in [
            0,
            4,
            5,
            PROPOSE_LEN - 1,
            PROPOSE_LEN,
            PROPOSE_LEN + 10,
            b.len() - 1,
        ] {
            assert!(Propose::decode(&b[..cut]).is_err(), "{cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(Propose::decode(&long).is_err());
        // valid_round must come before round.
        let mut bad = b.clone();
        bad[49..53].copy_from_slice(&3u32.to_le_bytes());
        assert!(Propose::decode(&bad).is_err());
        // The value must be the proposal's hash.
        let mut bad = b.clone();
        bad[53] ^= 1;
        assert!(Propose::decode(&bad).is_err());
        // The proposal's window must be the Propose's.
        let mut bad = b.clone();
        bad[37..45].copy_from_slice(&6u64.to_le_bytes());
        assert!(Propose::decode(&bad).is_err());
        let mut bad = b.clone();
        bad[4] = 2;
        assert!(matches!(
            Propose::decode(&bad),
            Err(CodecError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn beacon_round_trips_and_rejects() {
        let keys = NodeKeys::generate().unwrap();
        let b = Beacon::sign(NET, 9, 1, &keys);
        let bytes = b.encode();
        assert_eq!(bytes.len(), BEACON_LEN);
        let back = Beacon::decode(&bytes).unwrap();
        assert_eq!(back, b);
        assert!(back.signed_in(&set(&keys)));
        let mut edited = back.clone();
        edited.round = 2;
        assert!(!edited.signed_in(&set(&keys)));
        assert!(!back.signed_in(&set(&NodeKeys::generate().unwrap())));
        assert!(Beacon::decode(&bytes[..BEACON_LEN - 1]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(Beacon::decode(&long).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(Beacon::decode(&bad).is_err());
    }
}
