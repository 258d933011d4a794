//! Fast-sync messages, types 26 to 31 (docs/SPEC.md 13.4), version 1,
//! little-endian. Kept apart from [`crate::messages::Message`] (which
//! ignores these types as unknown): the runtime tries
//! [`SyncMessage::decode`] for a type that one does not know.
//!
//! | type | name | payload |
//! |------|------|---------|
//! | 26 | GetManifest | window (u64; 0: the newest this peer serves) |
//! | 27 | Manifest | empty (no such snapshot served) or a manifest (`MTSM`) |
//! | 28 | GetChunk | window (u64), state root (32), index (u64): 48 bytes |
//! | 29 | Chunk | empty (that snapshot is not served) or a chunk (`MTSC`) |
//! | 30 | GetCertificates | above (u64), below (u64): the certificates of windows in (above, below) |
//! | 31 | Certificates | n (u16, <= 64), then n times: length (u32) and a certificate (`MTMC`), ascending |

use montana_vdf::Hash32;

use crate::codec::{CodecError, Reader, Writer};
use crate::messages::{MAX_PAYLOAD, MSG_VERSION};

pub const MSG_GET_MANIFEST: u8 = 26;
pub const MSG_MANIFEST: u8 = 27;
pub const MSG_GET_CHUNK: u8 = 28;
pub const MSG_CHUNK: u8 = 29;
pub const MSG_GET_CERTIFICATES: u8 = 30;
pub const MSG_CERTIFICATES: u8 = 31;
/// Most certificates in one answer.
pub const MAX_CERTIFICATES: usize = 64;

/// A fast-sync message. Manifests, chunks and certificates stay as bytes
/// here: they are decoded (bounded) and checked by [`super::sync`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncMessage {
    GetManifest {
        window: u64,
    },
    /// `None`: the peer serves no such snapshot.
    Manifest(Option<Vec<u8>>),
    GetChunk {
        window: u64,
        root: Hash32,
        index: u64,
    },
    /// `None`: the peer does not serve that snapshot (any more).
    Chunk(Option<Vec<u8>>),
    GetCertificates {
        above: u64,
        below: u64,
    },
    Certificates(Vec<Vec<u8>>),
}

impl SyncMessage {
    pub fn msg_type(&self) -> u8 {
        match self {
            SyncMessage::GetManifest { .. } => MSG_GET_MANIFEST,
            SyncMessage::Manifest(_) => MSG_MANIFEST,
            SyncMessage::GetChunk { .. } => MSG_GET_CHUNK,
            SyncMessage::Chunk(_) => MSG_CHUNK,
            SyncMessage::GetCertificates { .. } => MSG_GET_CERTIFICATES,
            SyncMessage::Certificates(_) => MSG_CERTIFICATES,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            SyncMessage::GetManifest { window } => {
                w.u64(*window);
            }
            SyncMessage::Manifest(b) | SyncMessage::Chunk(b) => {
                return b.clone().unwrap_or_default()
            }
            SyncMessage::GetChunk {
                window,
                root,
                index,
            } => {
                w.u64(*window).bytes(&root.0).u64(*index);
            }
            SyncMessage::GetCertificates { above, below } => {
                w.u64(*above).u64(*below);
            }
            SyncMessage::Certificates(cs) => {
                w.u16(cs.len() as u16);
                for c in cs {
                    w.u32(c.len() as u32).bytes(c);
                }
            }
        }
        w.finish()
    }

    /// Decodes a payload of `msg_type`; `None` for other types.
    pub fn decode(msg_type: u8, version: u8, payload: &[u8]) -> Option<Result<Self, CodecError>> {
        if !(MSG_GET_MANIFEST..=MSG_CERTIFICATES).contains(&msg_type) {
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
        if payload.len() > MAX_PAYLOAD {
            return Err(CodecError::Invalid {
                what: "message",
                why: format!("{} bytes (at most {MAX_PAYLOAD})", payload.len()),
            });
        }
        let opt = || (!payload.is_empty()).then(|| payload.to_vec());
        let mut r = Reader::new("message", payload);
        let m = match msg_type {
            MSG_MANIFEST => return Ok(SyncMessage::Manifest(opt())),
            MSG_CHUNK => return Ok(SyncMessage::Chunk(opt())),
            MSG_GET_MANIFEST => SyncMessage::GetManifest { window: r.u64()? },
            MSG_GET_CHUNK => SyncMessage::GetChunk {
                window: r.u64()?,
                root: Hash32(r.array()?),
                index: r.u64()?,
            },
            MSG_GET_CERTIFICATES => SyncMessage::GetCertificates {
                above: r.u64()?,
                below: r.u64()?,
            },
            _ => {
                let n = r.u16()? as usize;
                if n > MAX_CERTIFICATES {
                    return Err(CodecError::Invalid {
                        what: "message",
                        why: format!("{n} certificates (at most {MAX_CERTIFICATES})"),
                    });
                }
                let mut cs = Vec::with_capacity(n);
                for _ in 0..n {
                    let len = r.u32()? as usize;
                    cs.push(r.take(len)?.to_vec());
                }
                SyncMessage::Certificates(cs)
            }
        };
        r.end()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_reject_bad_payloads() {
        let all = [
            SyncMessage::GetManifest { window: 0 },
            SyncMessage::Manifest(None),
            SyncMessage::Manifest(Some(vec![1, 2, 3])),
            SyncMessage::GetChunk {
                window: 9,
                root: Hash32([7; 32]),
                index: 3,
            },
            SyncMessage::Chunk(None),
            SyncMessage::Chunk(Some(vec![4; 10])),
            SyncMessage::GetCertificates { above: 0, below: 9 },
            SyncMessage::Certificates(vec![vec![1], vec![2, 3]]),
        ];
        for m in all {
            let b = m.encode();
            assert_eq!(
                SyncMessage::decode(m.msg_type(), 1, &b).unwrap().unwrap(),
                m
            );
            assert!(SyncMessage::decode(m.msg_type(), 2, &b).unwrap().is_err());
            if matches!(
                m,
                SyncMessage::GetManifest { .. } | SyncMessage::GetChunk { .. }
            ) {
                assert!(SyncMessage::decode(m.msg_type(), 1, &b[..b.len() - 1])
                    .unwrap()
                    .is_err());
                let mut long = b.clone();
                long.push(0);
                assert!(SyncMessage::decode(m.msg_type(), 1, &long)
                    .unwrap()
                    .is_err());
            }
        }
        assert!(SyncMessage::decode(25, 1, &[]).is_none());
        assert!(SyncMessage::decode(32, 1, &[]).is_none());
        // A count over the bound, a length past the end, an oversized payload.
        assert!(SyncMessage::decode(31, 1, &65u16.to_le_bytes())
            .unwrap()
            .is_err());
        let mut b = 1u16.to_le_bytes().to_vec();
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(SyncMessage::decode(31, 1, &b).unwrap().is_err());
        assert!(SyncMessage::decode(29, 1, &vec![0; MAX_PAYLOAD + 1])
            .unwrap()
            .is_err());
    }
}
