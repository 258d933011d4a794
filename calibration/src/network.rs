//! The network parameters a calibration is made for ([`NetworkParams`],
//! defined once in `montana_vdf`), and reading them from a genesis manifest.

use std::path::Path;
use std::str::FromStr;

pub use montana_vdf::network::suite_name;
use montana_vdf::HashSuite;
pub use montana_vdf::{NetworkError, NetworkParams};
use serde::Deserialize;

use crate::error::CalibrationError;

impl From<NetworkError> for CalibrationError {
    fn from(e: NetworkError) -> Self {
        match e {
            NetworkError::Chain(p) => CalibrationError::Params(p),
            NetworkError::WindowSecs(w) => CalibrationError::WindowSecs(w),
        }
    }
}

/// Reads hash, d, checkpoints and window_secs from a genesis manifest
/// (JSON); every other field is the node's business and is ignored.
pub fn from_genesis_json(text: &str) -> Result<NetworkParams, String> {
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

/// [`from_genesis_json`] on a file.
pub fn from_genesis_file(path: &Path) -> Result<NetworkParams, CalibrationError> {
    let err = |message: String| CalibrationError::Genesis {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    from_genesis_json(&text).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_reads_only_the_named_fields() {
        let text = r#"{"version":1,"hash":"blake3","d":1000,"checkpoints":10,
            "window_secs":2.5,"transport":"Noise_XXhfs_25519+Kyber1024_ChaChaPoly_BLAKE2s",
            "peers":[{"addr":"127.0.0.1:1"}]}"#;
        let p = from_genesis_json(text).unwrap();
        assert_eq!(
            p,
            NetworkParams::new(HashSuite::Blake3, 1000, 10, 2.5).unwrap()
        );
        assert!(
            from_genesis_json(r#"{"hash":"md5","d":1,"checkpoints":1,"window_secs":1}"#).is_err()
        );
        assert!(
            from_genesis_json(r#"{"hash":"sha256","d":10,"checkpoints":3,"window_secs":1}"#)
                .is_err()
        );
        assert!(from_genesis_json(r#"{"hash":"sha256"}"#).is_err());
    }

    #[test]
    fn errors_keep_their_calibration_variants() {
        let s = HashSuite::Sha256;
        let e: CalibrationError = NetworkParams::new(s, 10, 3, 1.0).unwrap_err().into();
        assert!(matches!(e, CalibrationError::Params(_)), "{e}");
        let e: CalibrationError = NetworkParams::new(s, 10, 2, 0.0).unwrap_err().into();
        assert!(matches!(e, CalibrationError::WindowSecs(_)), "{e}");
    }
}
