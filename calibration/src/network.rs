//! The network parameters a calibration is made for: hash suite, D, K and
//! the window target, from the command line or a genesis manifest.

use std::path::Path;
use std::str::FromStr;

use montana_vdf::{ChainParams, HashSuite};
use serde::{Deserialize, Serialize};

use crate::error::CalibrationError;

/// What a verdict depends on: the chain (hash, D, K) and the window target.
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
    ) -> Result<Self, CalibrationError> {
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
    pub fn validate(&self) -> Result<(), CalibrationError> {
        ChainParams::new(self.d, self.checkpoints)?;
        if !(self.window_secs.is_finite() && self.window_secs > 0.0) {
            return Err(CalibrationError::WindowSecs(self.window_secs));
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

    /// Reads hash, d, checkpoints and window_secs from a genesis manifest
    /// (JSON); every other field is the node's business and is ignored.
    pub fn from_genesis_json(text: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Genesis {
            hash: String,
            d: u64,
            checkpoints: u64,
            window_secs: f64,
        }
        let g: Genesis = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let hash = HashSuite::from_str(&g.hash).map_err(|e| e.to_string())?;
        NetworkParams::new(hash, g.d, g.checkpoints, g.window_secs).map_err(|e| e.to_string())
    }

    /// [`NetworkParams::from_genesis_json`] on a file.
    pub fn from_genesis_file(path: &Path) -> Result<Self, CalibrationError> {
        let err = |message: String| CalibrationError::Genesis {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::from_genesis_json(&text).map_err(err)
    }
}

impl Default for NetworkParams {
    fn default() -> Self {
        NetworkParams::MONTANA
    }
}

/// A suite as its name (`sha256`, `blake3`) in files.
pub(crate) mod suite_name {
    use std::str::FromStr;

    use montana_vdf::HashSuite;
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
            Err(CalibrationError::Params(_))
        ));
        for w in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                NetworkParams::new(s, 10, 2, w),
                Err(CalibrationError::WindowSecs(_))
            ));
        }
    }

    #[test]
    fn genesis_reads_only_the_named_fields() {
        let text = r#"{"version":1,"hash":"blake3","d":1000,"checkpoints":10,
            "window_secs":2.5,"transport":"Noise_XXhfs_25519+Kyber1024_ChaChaPoly_BLAKE2s",
            "peers":[{"addr":"127.0.0.1:1"}]}"#;
        let p = NetworkParams::from_genesis_json(text).unwrap();
        assert_eq!(
            p,
            NetworkParams::new(HashSuite::Blake3, 1000, 10, 2.5).unwrap()
        );
        assert!(NetworkParams::from_genesis_json(
            r#"{"hash":"md5","d":1,"checkpoints":1,"window_secs":1}"#
        )
        .is_err());
        assert!(NetworkParams::from_genesis_json(
            r#"{"hash":"sha256","d":10,"checkpoints":3,"window_secs":1}"#
        )
        .is_err());
        assert!(NetworkParams::from_genesis_json(r#"{"hash":"sha256"}"#).is_err());
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
