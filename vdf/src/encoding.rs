//! The canonical binary encoding of a proof (consensus bytes; docs/SPEC.md).
//!
//! ```text
//! offset  size    field
//! 0       4       magic "MTVP"
//! 4       1       version = 1
//! 5       1       suite (1 = sha256, 2 = blake3)
//! 6       32      start value
//! 38      8       N, iterations (u64 little-endian)
//! 46      4       K, checkpoints (u32 little-endian)
//! 50      32*K    checkpoints[0..K]
//! ```
//! Exactly `50 + 32*K` bytes; anything shorter, longer, or with parameters
//! outside the bounds is rejected with a [`DecodeError`].

use crate::error::DecodeError;
use crate::hash::Hash32;
use crate::params::ChainParams;
use crate::proof::Proof;
use crate::suite::HashSuite;

/// The four magic bytes.
pub const MAGIC: [u8; 4] = *b"MTVP";
/// The only version this build writes and reads.
pub const VERSION: u8 = 1;
/// Bytes before the checkpoints.
pub const HEADER_LEN: usize = 50;

/// Encodes a proof canonically.
pub fn encode(proof: &Proof) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 32 * proof.checkpoints().len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(proof.suite().id());
    out.extend_from_slice(proof.start().as_bytes());
    out.extend_from_slice(&proof.iterations().to_le_bytes());
    out.extend_from_slice(&proof.params().checkpoints().to_le_bytes());
    for cp in proof.checkpoints() {
        out.extend_from_slice(cp.as_bytes());
    }
    out
}

/// Decodes a canonical proof, rejecting anything else.
pub fn decode(bytes: &[u8]) -> Result<Proof, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Truncated {
            len: bytes.len(),
            needed: HEADER_LEN,
        });
    }
    if bytes[0..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if bytes[4] != VERSION {
        return Err(DecodeError::UnsupportedVersion(bytes[4]));
    }
    let suite = HashSuite::from_id(bytes[5]).ok_or(DecodeError::UnknownSuite(bytes[5]))?;
    let start = Hash32(bytes[6..38].try_into().expect("32 bytes"));
    let n = u64::from_le_bytes(bytes[38..46].try_into().expect("8 bytes"));
    let k = u32::from_le_bytes(bytes[46..50].try_into().expect("4 bytes"));
    // Bounds before sizes: a hostile K must not drive an allocation.
    let params = ChainParams::new(n, k as u64)?;
    let needed = HEADER_LEN + 32 * k as usize;
    if bytes.len() < needed {
        return Err(DecodeError::Truncated {
            len: bytes.len(),
            needed,
        });
    }
    if bytes.len() > needed {
        return Err(DecodeError::TrailingBytes {
            extra: bytes.len() - needed,
        });
    }
    let checkpoints = bytes[HEADER_LEN..]
        .chunks_exact(32)
        .map(|c| Hash32(c.try_into().expect("32 bytes")))
        .collect();
    Ok(Proof::new(suite, start, params, checkpoints)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ParamError;
    use proptest::prelude::*;

    fn sample(k: u32) -> Proof {
        let params = ChainParams::new(k as u64 * 5, k as u64).unwrap();
        let cps = (0..k).map(|i| Hash32([i as u8; 32])).collect();
        Proof::new(HashSuite::Blake3, Hash32([9; 32]), params, cps).unwrap()
    }

    #[test]
    fn layout_is_as_specified() {
        let bytes = encode(&sample(2));
        assert_eq!(bytes.len(), 50 + 64);
        assert_eq!(&bytes[0..4], b"MTVP");
        assert_eq!(bytes[4], 1);
        assert_eq!(bytes[5], 2);
        assert_eq!(&bytes[6..38], &[9u8; 32]);
        assert_eq!(&bytes[38..46], &10u64.to_le_bytes());
        assert_eq!(&bytes[46..50], &2u32.to_le_bytes());
        assert_eq!(&bytes[50..82], &[0u8; 32]);
        assert_eq!(&bytes[82..114], &[1u8; 32]);
    }

    #[test]
    fn rejects_malformed() {
        let good = encode(&sample(3));
        assert!(matches!(
            decode(&good[..10]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(DecodeError::TrailingBytes { extra: 1 }));
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(decode(&b), Err(DecodeError::BadMagic));
        let mut b = good.clone();
        b[4] = 2;
        assert_eq!(decode(&b), Err(DecodeError::UnsupportedVersion(2)));
        let mut b = good.clone();
        b[5] = 7;
        assert_eq!(decode(&b), Err(DecodeError::UnknownSuite(7)));
        let mut b = good.clone();
        b[38..46].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(
            decode(&b),
            Err(DecodeError::Params(ParamError::ZeroIterations))
        );
        let mut b = good.clone();
        b[38..46].copy_from_slice(&16u64.to_le_bytes()); // 3 does not divide 16
        assert!(matches!(
            decode(&b),
            Err(DecodeError::Params(ParamError::NotDivisible { .. }))
        ));
        // A huge K is rejected by its bounds, before any allocation.
        let mut b = good.clone();
        b[38..46].copy_from_slice(&(1u64 << 40).to_le_bytes());
        b[46..50].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&b),
            Err(DecodeError::Params(ParamError::TooManyCheckpoints { .. }))
        ));
    }

    proptest! {
        #[test]
        fn round_trip(k in 1u32..64, mul in 1u64..1000, blake in any::<bool>(), seed in any::<[u8; 32]>()) {
            let params = ChainParams::new(k as u64 * mul, k as u64).unwrap();
            let cps = (0..k).map(|i| Hash32([(i as u8) ^ seed[0]; 32])).collect();
            let suite = if blake { HashSuite::Blake3 } else { HashSuite::Sha256 };
            let p = Proof::new(suite, Hash32(seed), params, cps).unwrap();
            let bytes = encode(&p);
            prop_assert_eq!(decode(&bytes).unwrap(), p);
        }

        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
