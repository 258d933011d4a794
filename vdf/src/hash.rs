//! The 32-byte value that flows along a chain.
//!
//! Every chain value, checkpoint and seed is exactly 32 bytes; a newtype keeps
//! them from being confused with arbitrary byte slices and gives them one hex
//! form (lowercase, 64 digits) everywhere: CLI, JSON and logs.

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;

/// A 32-byte chain value (a seed, a checkpoint, a window value `T(w)`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// All zero bytes.
    pub const ZERO: Hash32 = Hash32([0u8; 32]);

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<Self, ParseError> {
        if s.len() != 64 {
            return Err(ParseError::HexLength { found: s.len() });
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseError::HexDigit)?;
        Ok(Hash32(out))
    }
}

impl From<[u8; 32]> for Hash32 {
    fn from(b: [u8; 32]) -> Self {
        Hash32(b)
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({})", self.to_hex())
    }
}

impl FromStr for Hash32 {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hash32::from_hex(s)
    }
}

impl serde::Serialize for Hash32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Hash32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Hash32::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = Hash32([0xab; 32]);
        assert_eq!(Hash32::from_hex(&h.to_hex()).unwrap(), h);
        assert_eq!(h.to_hex(), "ab".repeat(32));
    }

    #[test]
    fn hex_rejects_bad_input() {
        assert_eq!(
            Hash32::from_hex("abcd"),
            Err(ParseError::HexLength { found: 4 })
        );
        assert_eq!(
            Hash32::from_hex(&"zz".repeat(32)),
            Err(ParseError::HexDigit)
        );
        assert!(Hash32::from_hex(&"a".repeat(65)).is_err());
    }
}
