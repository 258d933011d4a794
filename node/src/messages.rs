//! The node's application messages (types 16 and up; 0..=15 belong to the
//! transport). Payload layouts: docs/SPEC.md section 8.
//!
//! - `GetProposals` (17): "send me the cemented proposals of windows
//!   from..from+count".
//! - `Proposals` (18): consecutive stored proposals answering a request, as
//!   many as fit one 1 MiB payload (at least one).
//! - `Tip` (19): the sender's last cemented window (and its highest applied
//!   one), sent on connect and every few seconds: a claim, not a fact.
//! - `Propose` (20), `Vote` (21), `Cement` (22), `Beacon` (23): the
//!   agreement's messages (consensus::{propose, vote}).
//! - `GetCements` (24) / `Cements` (25): the stored Cements of a range of
//!   windows, for catch-up (as `GetProposals` / `Proposals`).
//! - `CandidateProof` (32), `Registration` (33): a candidate's chain for
//!   one window and its request to become a member (consensus::joining).
//!
//! Type 16 (version 1's proposal push) is retired: ignored like any unknown
//! type.

use montana_vdf::Hash32;

use crate::codec::{CodecError, Reader, Writer};
use crate::consensus::joining::{CandidateProof, Registration};
use crate::consensus::propose::{Beacon, Propose};
use crate::consensus::vote::{Cement, Vote};
use crate::proposal::Proposal;
use crate::storage::Tip;

pub const MSG_GET_PROPOSALS: u8 = 17;
pub const MSG_PROPOSALS: u8 = 18;
pub const MSG_TIP: u8 = 19;
pub const MSG_PROPOSE: u8 = 20;
pub const MSG_VOTE: u8 = 21;
pub const MSG_CEMENT: u8 = 22;
pub const MSG_BEACON: u8 = 23;
pub const MSG_GET_CEMENTS: u8 = 24;
pub const MSG_CEMENTS: u8 = 25;
pub const MSG_CANDIDATE_PROOF: u8 = 32;
pub const MSG_REGISTRATION: u8 = 33;
/// Version byte of every message above.
pub const MSG_VERSION: u8 = 1;
/// Largest envelope payload the transport carries.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Most windows one GetProposals may ask for.
pub const MAX_REQUEST: u32 = 256;

/// A decoded application message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    GetProposals {
        from: u64,
        count: u32,
    },
    Proposals(Vec<Proposal>),
    /// The sender's cemented tip and its highest applied window.
    Tip {
        cemented: Tip,
        applied: u64,
    },
    Propose(Box<Propose>),
    Vote(Box<Vote>),
    Cement(Box<Cement>),
    Beacon(Box<Beacon>),
    GetCements {
        from: u64,
        count: u32,
    },
    Cements(Vec<Cement>),
    CandidateProof(Box<CandidateProof>),
    Registration(Box<Registration>),
}

impl Message {
    pub fn msg_type(&self) -> u8 {
        match self {
            Message::GetProposals { .. } => MSG_GET_PROPOSALS,
            Message::Proposals(_) => MSG_PROPOSALS,
            Message::Tip { .. } => MSG_TIP,
            Message::Propose(_) => MSG_PROPOSE,
            Message::Vote(_) => MSG_VOTE,
            Message::Cement(_) => MSG_CEMENT,
            Message::Beacon(_) => MSG_BEACON,
            Message::GetCements { .. } => MSG_GET_CEMENTS,
            Message::Cements(_) => MSG_CEMENTS,
            Message::CandidateProof(_) => MSG_CANDIDATE_PROOF,
            Message::Registration(_) => MSG_REGISTRATION,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Message::GetProposals { from, count } | Message::GetCements { from, count } => {
                w.u64(*from).u32(*count);
            }
            Message::Proposals(ps) => {
                return encode_proposals(ps.iter().map(|p| p.to_bytes())).0;
            }
            Message::Cements(cs) => {
                return encode_proposals(cs.iter().map(|c| c.encode())).0;
            }
            Message::Tip {
                cemented: t,
                applied,
            } => {
                w.u64(t.window).bytes(&t.t.0).bytes(&t.hash).u64(*applied);
            }
            Message::Propose(p) => return p.encode(),
            Message::Vote(v) => return v.encode(),
            Message::Cement(c) => return c.encode(),
            Message::Beacon(b) => return b.encode(),
            Message::CandidateProof(p) => return p.encode(),
            Message::Registration(g) => return g.encode(),
        }
        w.finish()
    }

    /// Decodes a payload of `msg_type`; `None` for types this build does not
    /// know (ignored, so later versions can add messages).
    pub fn decode(msg_type: u8, version: u8, payload: &[u8]) -> Option<Result<Self, CodecError>> {
        let known = (MSG_GET_PROPOSALS..=MSG_CEMENTS).contains(&msg_type)
            || msg_type == MSG_CANDIDATE_PROOF
            || msg_type == MSG_REGISTRATION;
        if !known {
            return None;
        }
        if version != MSG_VERSION {
            return Some(Err(CodecError::UnsupportedVersion {
                what: "message",
                found: version,
                supported: MSG_VERSION,
            }));
        }
        Some(Self::decode_known(msg_type, payload))
    }

    fn decode_known(msg_type: u8, payload: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new("message", payload);
        let m = match msg_type {
            MSG_PROPOSE => return Propose::decode(payload).map(|p| Message::Propose(Box::new(p))),
            MSG_VOTE => return Vote::decode(payload).map(|v| Message::Vote(Box::new(v))),
            MSG_CEMENT => return Cement::decode(payload).map(|c| Message::Cement(Box::new(c))),
            MSG_BEACON => return Beacon::decode(payload).map(|b| Message::Beacon(Box::new(b))),
            MSG_CANDIDATE_PROOF => {
                return CandidateProof::decode(payload)
                    .map(|p| Message::CandidateProof(Box::new(p)))
            }
            MSG_REGISTRATION => {
                return Registration::decode(payload).map(|g| Message::Registration(Box::new(g)))
            }
            MSG_GET_PROPOSALS => Message::GetProposals {
                from: r.u64()?,
                count: r.u32()?,
            },
            MSG_GET_CEMENTS => Message::GetCements {
                from: r.u64()?,
                count: r.u32()?,
            },
            MSG_CEMENTS => {
                let n = r.u16()? as usize;
                let mut cs = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    let len = r.u32()? as usize;
                    cs.push(Cement::decode(r.take(len)?)?);
                }
                Message::Cements(cs)
            }
            MSG_PROPOSALS => {
                let n = r.u16()? as usize;
                let mut ps = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    let len = r.u32()? as usize;
                    ps.push(Proposal::from_bytes(r.take(len)?)?);
                }
                Message::Proposals(ps)
            }
            MSG_TIP => Message::Tip {
                cemented: Tip {
                    window: r.u64()?,
                    t: Hash32(r.array()?),
                    hash: r.array()?,
                },
                applied: r.u64()?,
            },
            _ => unreachable!("checked by decode"),
        };
        r.end()?;
        Ok(m)
    }
}

/// Packs encoded proposals (or Cements) into one `Proposals` payload of at most
/// [`MAX_PAYLOAD`] bytes (always at least the first); returns the payload
/// and how many were packed.
pub fn encode_proposals(encoded: impl IntoIterator<Item = Vec<u8>>) -> (Vec<u8>, usize) {
    let mut body = Vec::new();
    let mut n: usize = 0;
    for p in encoded {
        if n > 0 && 2 + body.len() + 4 + p.len() > MAX_PAYLOAD || n == u16::MAX as usize {
            break;
        }
        body.extend_from_slice(&(p.len() as u32).to_le_bytes());
        body.extend_from_slice(&p);
        n += 1;
    }
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&body);
    (out, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::NodeKeys;
    use montana_vdf::HashSuite;

    fn proposal(keys: &NodeKeys, window: u64, k: usize) -> Proposal {
        let cps = (0..k).map(|i| Hash32([i as u8; 32])).collect();
        Proposal::sign(
            keys,
            HashSuite::Sha256,
            10 * k as u64,
            crate::proposal::Basis {
                window,
                link: [1; 32],
                bundle: if window == 1 { [0; 32] } else { [2; 32] },
                state_root: Hash32([3; 32]),
            },
            cps,
        )
    }

    #[test]
    fn round_trips() {
        let keys = NodeKeys::generate().unwrap();
        use crate::consensus::active::NodeId;
        use crate::consensus::agreement::VoteKind;
        use crate::consensus::propose::ProposeKey;
        use crate::consensus::vote::VoteKey;
        let me = NodeId::of(keys.verifying_key());
        let p = proposal(&keys, 3, 2);
        let vote = Vote::sign(
            VoteKey {
                kind: VoteKind::Precommit,
                network_id: [5; 32],
                window: 3,
                round: 0,
                value: Some(Hash32(p.hash())),
                signer: me,
            },
            &keys,
        );
        let cement = Cement::from_votes(std::slice::from_ref(&vote)).unwrap();
        let msgs = [
            Message::GetProposals { from: 7, count: 9 },
            Message::GetCements { from: 8, count: 1 },
            Message::Proposals(vec![proposal(&keys, 1, 1), proposal(&keys, 2, 3)]),
            Message::Proposals(vec![]),
            Message::Cements(vec![cement.clone(), cement.clone()]),
            Message::Tip {
                cemented: Tip {
                    window: 5,
                    t: Hash32([4; 32]),
                    hash: [6; 32],
                },
                applied: 6,
            },
            Message::Propose(Box::new(Propose::sign(
                ProposeKey {
                    network_id: [5; 32],
                    window: 3,
                    round: 1,
                    valid_round: Some(0),
                    value: Hash32(p.hash()),
                    signer: me,
                },
                p.clone(),
                &keys,
            ))),
            Message::Vote(Box::new(vote)),
            Message::Cement(Box::new(cement)),
            Message::Beacon(Box::new(Beacon::sign([5; 32], 3, 1, &keys))),
            Message::CandidateProof(Box::new(CandidateProof::sign(
                &keys,
                [5; 32],
                HashSuite::Sha256,
                4,
                vec![Hash32([9; 32]); 4],
            ))),
            Message::Registration(Box::new(Registration::sign(&keys, [5; 32], 4))),
        ];
        for m in msgs {
            let b = m.encode();
            assert_eq!(Message::decode(m.msg_type(), MSG_VERSION, &b), Some(Ok(m)));
        }
    }

    #[test]
    fn rejects_bad_payloads() {
        assert_eq!(Message::decode(99, 1, b""), None);
        // Version 1's proposal push is retired: ignored, not misread.
        assert_eq!(Message::decode(16, 1, b""), None);
        assert!(matches!(
            Message::decode(MSG_TIP, 2, &[0; 80]),
            Some(Err(CodecError::UnsupportedVersion { .. }))
        ));
        assert!(matches!(
            Message::decode(MSG_TIP, 1, &[0; 79]),
            Some(Err(_))
        ));
        assert!(matches!(
            Message::decode(MSG_TIP, 1, &[0; 81]),
            Some(Err(_))
        ));
        for t in [MSG_PROPOSE, MSG_VOTE, MSG_CEMENT, MSG_BEACON] {
            assert!(
                matches!(Message::decode(t, 1, &[0; 40]), Some(Err(_))),
                "{t}"
            );
        }
        assert!(matches!(
            Message::decode(MSG_CEMENTS, 1, &[1, 0, 200, 0, 0, 0, 0]),
            Some(Err(_))
        ));
        assert!(matches!(
            Message::decode(MSG_GET_PROPOSALS, 1, &[0; 13]),
            Some(Err(_))
        ));
        // A count that promises more proposals than the payload holds.
        assert!(matches!(
            Message::decode(MSG_PROPOSALS, 1, &[5, 0, 1, 0, 0, 0, 0]),
            Some(Err(_))
        ));
    }

    #[test]
    fn proposals_pack_within_one_payload() {
        let keys = NodeKeys::generate().unwrap();
        // K = 32,000 (the genesis cap): one per message, and it fits.
        let big = proposal(&keys, 1, 32_000).to_bytes();
        let (payload, n) = encode_proposals(vec![big.clone(), big.clone()]);
        assert_eq!(n, 1);
        assert!(payload.len() <= MAX_PAYLOAD);
        let small = proposal(&keys, 1, 10).to_bytes();
        let (payload, n) = encode_proposals(std::iter::repeat_n(small, 1000));
        assert!(n > 100 && n < 1000);
        assert!(payload.len() <= MAX_PAYLOAD);
        match Message::decode(MSG_PROPOSALS, 1, &payload) {
            Some(Ok(Message::Proposals(ps))) => assert_eq!(ps.len(), n),
            other => panic!("{other:?}"),
        }
    }
}
