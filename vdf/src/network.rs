//! The network parameters: the hash suite, D (steps per window), K
//! (checkpoints per window proof) and the window target. Defined once here;
//! calibration measures for them, the CLI reads them from flags or a
//! genesis, and the genesis can embed them.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::error::ParamError;
use crate::params::ChainParams;
use crate::suite::HashSuite;

/// Why network parameters are not valid; one line.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum NetworkError {
    #[error("invalid network parameters: {0}")]
    Chain(#[from] ParamError),
    #[error("window seconds must be a positive finite number, got {0}")]
    WindowSecs(f64),
}

/// A network's parameters: the chain (hash, D, K) and the window target.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkParams {
    #[serde(with = "suite_name")]
    pub hash: HashSuite,
    /// Iterations per window.
    pub d: u64,
    /// Checkpoints (segments) per window proof.
    pub checkpoints: u64,
    /// Target duration of a window.
    pub window_secs: f64,
}

impl NetworkParams {
    /// The Montana network: SHA-256, D = 325,000,000, K = 6,500, 60 s.
    pub const MONTANA: NetworkParams = NetworkParams {
        hash: HashSuite::Sha256,
        d: 325_000_000,
        checkpoints: 6_500,
        window_secs: 60.0,
    };

    /// Checked parameters: (D, K) within the chain bounds, a positive window.
    pub fn new(
        hash: HashSuite,
        d: u64,
        checkpoints: u64,
        window_secs: f64,
    ) -> Result<Self, NetworkError> {
        let p = NetworkParams {
            hash,
            d,
            checkpoints,
            window_secs,
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks the bounds (a file or a genesis may hold anything).
    pub fn validate(&self) -> Result<(), NetworkError> {
        ChainParams::new(self.d, self.checkpoints)?;
        if !(self.window_secs.is_finite() && self.window_secs > 0.0) {
            return Err(NetworkError::WindowSecs(self.window_secs));
        }
        Ok(())
    }

    /// Steps in one segment, D / K.
    pub fn segment_len(&self) -> u64 {
        self.d / self.checkpoints.max(1)
    }

    /// What differs from `other`, as a short phrase, or `None` if equal.
    pub fn difference(&self, other: &NetworkParams) -> Option<String> {
        let mut d = Vec::new();
        if self.hash != other.hash {
            d.push(format!(
                "hash {} -> {}",
                self.hash.name(),
                other.hash.name()
            ));
        }
        if self.d != other.d {
            d.push(format!("d {} -> {}", self.d, other.d));
        }
        if self.checkpoints != other.checkpoints {
            d.push(format!(
                "checkpoints {} -> {}",
                self.checkpoints, other.checkpoints
            ));
        }
        if self.window_secs != other.window_secs {
            d.push(format!(
                "window_secs {} -> {}",
                self.window_secs, other.window_secs
            ));
        }
        (!d.is_empty()).then(|| d.join(", "))
    }
}

impl Default for NetworkParams {
    fn default() -> Self {
        NetworkParams::MONTANA
    }
}

/// A suite as its name (`sha256`, `blake3`) in files.
pub mod suite_name {
    use std::str::FromStr;

    use crate::suite::HashSuite;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: &HashSuite, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<HashSuite, D::Error> {
        let s = String::deserialize(de)?;
        HashSuite::from_str(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn montana_defaults_are_valid() {
        NetworkParams::MONTANA.validate().unwrap();
        assert_eq!(NetworkParams::MONTANA.segment_len(), 50_000);
    }

    #[test]
    fn rejects_bad_parameters() {
        let s = HashSuite::Sha256;
        assert!(matches!(
            NetworkParams::new(s, 10, 3, 1.0),
            Err(NetworkError::Chain(_))
        ));
        for w in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                NetworkParams::new(s, 10, 2, w),
                Err(NetworkError::WindowSecs(_))
            ));
        }
    }

    #[test]
    fn difference_names_what_changed() {
        let a = NetworkParams::MONTANA;
        assert_eq!(a.difference(&a), None);
        let b = NetworkParams {
            d: 650_000_000,
            ..a
        };
        assert_eq!(a.difference(&b).unwrap(), "d 325000000 -> 650000000");
    }
}
