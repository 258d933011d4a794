//! The node's application messages (types 16 and up; 0..=15 belong to the
//! transport). Payload layouts: docs/SPEC.md section 8.
//!
//! - `Proposal` (16): one proposal, pushed by the proposer.
//! - `GetProposals` (17): "send me windows from..from+count".
//! - `Proposals` (18): consecutive stored proposals answering a request, as
//!   many as fit one 1 MiB payload (at least one).
//! - `Tip` (19): the sender's last applied window, sent on connect and every
//!   few seconds, so a follower knows how far behind it is.

use montana_vdf::Hash32;

use crate::codec::{CodecError, Reader, Writer};
use crate::proposal::Proposal;
use crate::storage::Tip;

pub const MSG_PROPOSAL: u8 = 16;
pub const MSG_GET_PROPOSALS: u8 = 17;
pub const MSG_PROPOSALS: u8 = 18;
pub const MSG_TIP: u8 = 19;
/// Version byte of every message above.
pub const MSG_VERSION: u8 = 1;
/// Largest envelope payload the transport carries.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Most windows one GetProposals may ask for.
pub const MAX_REQUEST: u32 = 256;

/// A decoded application message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Proposal(Proposal),
    GetProposals { from: u64, count: u32 },
    Proposals(Vec<Proposal>),
    Tip(Tip),
}

impl Message {
    pub fn msg_type(&self) -> u8 {
        match self {
            Message::Proposal(_) => MSG_PROPOSAL,
            Message::GetProposals { .. } => MSG_GET_PROPOSALS,
            Message::Proposals(_) => MSG_PROPOSALS,
            Message::Tip(_) => MSG_TIP,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Message::Proposal(p) => return p.to_bytes(),
            Message::GetProposals { from, count } => {
                w.u64(*from).u32(*count);
            }
            Message::Proposals(ps) => {
                return encode_proposals(ps.iter().map(|p| p.to_bytes())).0;
            }
            Message::Tip(t) => {
                w.u64(t.window).bytes(&t.t.0).bytes(&t.hash);
            }
        }
        w.finish()
    }

    /// Decodes a payload of `msg_type`; `None` for types this build does not
    /// know (ignored, so later versions can add messages).
    pub fn decode(msg_type: u8, version: u8, payload: &[u8]) -> Option<Result<Self, CodecError>> {
        let known = matches!(
            msg_type,
            MSG_PROPOSAL | MSG_GET_PROPOSALS | MSG_PROPOSALS | MSG_TIP
        );
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
            MSG_PROPOSAL => return Proposal::from_bytes(payload).map(Message::Proposal),
            MSG_GET_PROPOSALS => Message::GetProposals {
                from: r.u64()?,
                count: r.u32()?,
            },
            MSG_PROPOSALS => {
                let n = r.u16()? as usize;
                let mut ps = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    let len = r.u32()? as usize;
                    ps.push(Proposal::from_bytes(r.take(len)?)?);
                }
                Message::Proposals(ps)
            }
            MSG_TIP => Message::Tip(Tip {
                window: r.u64()?,
                t: Hash32(r.array()?),
                hash: r.array()?,
            }),
            _ => unreachable!("checked by decode"),
        };
        r.end()?;
        Ok(m)
    }
}

/// Packs encoded proposals into one `Proposals` payload of at most
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
            window,
            [1; 32],
            10 * k as u64,
            0,
            cps,
        )
    }

    #[test]
    fn round_trips() {
        let keys = NodeKeys::generate().unwrap();
        let msgs = [
            Message::Proposal(proposal(&keys, 3, 2)),
            Message::GetProposals { from: 7, count: 9 },
            Message::Proposals(vec![proposal(&keys, 1, 1), proposal(&keys, 2, 3)]),
            Message::Proposals(vec![]),
            Message::Tip(Tip {
                window: 5,
                t: Hash32([4; 32]),
                hash: [6; 32],
            }),
        ];
        for m in msgs {
            let b = m.encode();
            assert_eq!(Message::decode(m.msg_type(), MSG_VERSION, &b), Some(Ok(m)));
        }
    }

    #[test]
    fn rejects_bad_payloads() {
        assert_eq!(Message::decode(99, 1, b""), None);
        assert!(matches!(
            Message::decode(MSG_TIP, 2, &[0; 72]),
            Some(Err(CodecError::UnsupportedVersion { .. }))
        ));
        assert!(matches!(
            Message::decode(MSG_TIP, 1, &[0; 71]),
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
