//! Hash suites: which `H` a chain uses, and the reference chain step.
//!
//! One step maps 32 bytes to 32 bytes, `x -> H(x)` over the raw bytes:
//! - `sha256`: SHA-256 of the 32-byte value (one padded 64-byte block). This is
//!   the Montana network's TimeChain hash.
//! - `blake3`: the default, unkeyed BLAKE3 hash of the 32-byte value, which is
//!   one compression of a 64-byte block zero-padded after the input, with
//!   block_len 32, counter 0, flags CHUNK_START | CHUNK_END | ROOT, keeping the
//!   first 32 output bytes.
//!
//! The functions here are the reference: every backend must agree with them.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use crate::error::ParseError;
use crate::hash::Hash32;

/// The hash function of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum HashSuite {
    /// SHA-256; the Montana network's suite and the default.
    #[default]
    Sha256,
    /// BLAKE3 (default unkeyed mode, 32-byte output).
    Blake3,
}

impl HashSuite {
    /// Every suite, in id order.
    pub const ALL: [HashSuite; 2] = [HashSuite::Sha256, HashSuite::Blake3];

    /// The suite's name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            HashSuite::Sha256 => "sha256",
            HashSuite::Blake3 => "blake3",
        }
    }

    /// The suite's byte in the canonical encoding.
    pub fn id(self) -> u8 {
        match self {
            HashSuite::Sha256 => 1,
            HashSuite::Blake3 => 2,
        }
    }

    /// The suite for an encoding byte, if any.
    pub fn from_id(id: u8) -> Option<HashSuite> {
        match id {
            1 => Some(HashSuite::Sha256),
            2 => Some(HashSuite::Blake3),
            _ => None,
        }
    }

    /// `H(bytes)` for input of any length (used for the genesis value).
    pub fn hash(self, bytes: &[u8]) -> Hash32 {
        match self {
            HashSuite::Sha256 => Hash32(sha2::Sha256::digest(bytes).into()),
            HashSuite::Blake3 => Hash32(*blake3::hash(bytes).as_bytes()),
        }
    }

    /// One chain step, `x -> H(x)`: the reference definition.
    #[inline]
    pub fn step(self, x: &Hash32) -> Hash32 {
        self.hash(&x.0)
    }

    /// `H^n(x)` with the reference step; for tests and small chains.
    pub fn iterate(self, x: &Hash32, n: u64) -> Hash32 {
        let mut v = *x;
        for _ in 0..n {
            v = self.step(&v);
        }
        v
    }
}

impl fmt::Display for HashSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashSuite {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "sha256" | "sha-256" => Ok(HashSuite::Sha256),
            "blake3" => Ok(HashSuite::Blake3),
            _ => Err(ParseError::UnknownSuite(s.to_string())),
        }
    }
}

impl serde::Serialize for HashSuite {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for HashSuite {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_step_is_sha256_of_the_32_bytes() {
        // SHA-256 of 32 zero bytes.
        let out = HashSuite::Sha256.step(&Hash32::ZERO);
        assert_eq!(
            out.to_hex(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    #[test]
    fn blake3_step_is_one_compression_of_the_zero_padded_block() {
        // The spec spells the step out as a single compression; check that the
        // crate's default hash is exactly that, from the BLAKE3 definition.
        const IV: [u32; 8] = [
            0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB,
            0x5BE0CD19,
        ];
        const PERM: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
        fn g(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize, x: u32, y: u32) {
            s[a] = s[a].wrapping_add(s[b]).wrapping_add(x);
            s[d] = (s[d] ^ s[a]).rotate_right(16);
            s[c] = s[c].wrapping_add(s[d]);
            s[b] = (s[b] ^ s[c]).rotate_right(12);
            s[a] = s[a].wrapping_add(s[b]).wrapping_add(y);
            s[d] = (s[d] ^ s[a]).rotate_right(8);
            s[c] = s[c].wrapping_add(s[d]);
            s[b] = (s[b] ^ s[c]).rotate_right(7);
        }
        let input = Hash32([7u8; 32]);
        let mut m = [0u32; 16];
        for (w, b) in m.iter_mut().zip(input.0.chunks_exact(4)) {
            *w = u32::from_le_bytes(b.try_into().unwrap());
        }
        let flags = 1 | 2 | 8; // CHUNK_START | CHUNK_END | ROOT
        let mut s = [
            IV[0], IV[1], IV[2], IV[3], IV[4], IV[5], IV[6], IV[7], IV[0], IV[1], IV[2], IV[3], 0,
            0, 32, flags,
        ];
        for round in 0..7 {
            g(&mut s, 0, 4, 8, 12, m[0], m[1]);
            g(&mut s, 1, 5, 9, 13, m[2], m[3]);
            g(&mut s, 2, 6, 10, 14, m[4], m[5]);
            g(&mut s, 3, 7, 11, 15, m[6], m[7]);
            g(&mut s, 0, 5, 10, 15, m[8], m[9]);
            g(&mut s, 1, 6, 11, 12, m[10], m[11]);
            g(&mut s, 2, 7, 8, 13, m[12], m[13]);
            g(&mut s, 3, 4, 9, 14, m[14], m[15]);
            if round < 6 {
                let old = m;
                for i in 0..16 {
                    m[i] = old[PERM[i]];
                }
            }
        }
        let mut out = [0u8; 32];
        for i in 0..8 {
            out[4 * i..4 * i + 4].copy_from_slice(&(s[i] ^ s[i + 8]).to_le_bytes());
        }
        assert_eq!(HashSuite::Blake3.step(&input), Hash32(out));
    }

    #[test]
    fn names_and_ids_round_trip() {
        for s in HashSuite::ALL {
            assert_eq!(s.name().parse::<HashSuite>().unwrap(), s);
            assert_eq!(HashSuite::from_id(s.id()), Some(s));
        }
        assert_eq!(HashSuite::from_id(0), None);
        assert_eq!(HashSuite::from_id(3), None);
        assert!("md5".parse::<HashSuite>().is_err());
    }
}
