//! The JSON form of a proof, for the CLI and tools (not consensus bytes).
//!
//! ```json
//! {"hash":"sha256","seed":"<64 hex>","iterations":N,
//!  "checkpoints":["<64 hex>", ...],"output":"<64 hex>"}
//! ```
//! K is the length of `checkpoints`. `output` must equal the last checkpoint;
//! other fields (such as `backend` and `seconds` written by `montana vdf eval`)
//! are ignored when reading.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::hash::Hash32;
use crate::params::ChainParams;
use crate::proof::Proof;
use crate::suite::HashSuite;

/// The serde shape of a proof.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProofJson {
    pub hash: HashSuite,
    pub seed: Hash32,
    pub iterations: u64,
    pub checkpoints: Vec<Hash32>,
    pub output: Hash32,
}

impl From<&Proof> for ProofJson {
    fn from(p: &Proof) -> Self {
        ProofJson {
            hash: p.suite(),
            seed: *p.start(),
            iterations: p.iterations(),
            checkpoints: p.checkpoints().to_vec(),
            output: *p.output(),
        }
    }
}

impl TryFrom<ProofJson> for Proof {
    type Error = DecodeError;
    fn try_from(j: ProofJson) -> Result<Self, Self::Error> {
        let params = ChainParams::new(j.iterations, j.checkpoints.len() as u64)?;
        let last = *j.checkpoints.last().expect("K >= 1 checked by ChainParams");
        if last != j.output {
            return Err(DecodeError::OutputMismatch {
                output: j.output.to_hex(),
                last: last.to_hex(),
            });
        }
        Ok(Proof::new(j.hash, j.seed, params, j.checkpoints)?)
    }
}

/// Parses proof JSON text into a validated proof.
pub fn from_str(text: &str) -> Result<Proof, DecodeError> {
    let j: ProofJson = serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    Proof::try_from(j)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Proof {
        let params = ChainParams::new(6, 2).unwrap();
        let cps = vec![Hash32([1; 32]), Hash32([2; 32])];
        Proof::new(HashSuite::Sha256, Hash32([3; 32]), params, cps).unwrap()
    }

    #[test]
    fn round_trip() {
        let p = sample();
        let text = serde_json::to_string(&ProofJson::from(&p)).unwrap();
        assert!(text.contains("\"hash\":\"sha256\""));
        assert!(text.contains(&"01".repeat(32)));
        assert_eq!(from_str(&text).unwrap(), p);
    }

    #[test]
    fn ignores_extra_fields_and_rejects_bad_ones() {
        let p = sample();
        let mut v = serde_json::to_value(ProofJson::from(&p)).unwrap();
        v["backend"] = "scalar".into();
        assert_eq!(from_str(&v.to_string()).unwrap(), p);

        let mut bad = v.clone();
        bad["output"] = "00".repeat(32).into();
        assert!(matches!(
            from_str(&bad.to_string()),
            Err(DecodeError::OutputMismatch { .. })
        ));
        let mut bad = v.clone();
        bad["iterations"] = 7.into();
        assert!(matches!(
            from_str(&bad.to_string()),
            Err(DecodeError::Params(_))
        ));
        let mut bad = v.clone();
        bad["checkpoints"] = serde_json::json!([]);
        assert!(matches!(
            from_str(&bad.to_string()),
            Err(DecodeError::Params(_))
        ));
        let mut bad = v.clone();
        bad["seed"] = "xyz".into();
        assert!(matches!(
            from_str(&bad.to_string()),
            Err(DecodeError::Json(_))
        ));
        let mut bad = v.clone();
        bad["hash"] = "md5".into();
        assert!(matches!(
            from_str(&bad.to_string()),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(from_str("{"), Err(DecodeError::Json(_))));
    }
}
