//! The calibration file (TOML): what was measured, on which host, for which
//! network, and what was decided. Written atomically (temporary file, then
//! rename) so a crash never leaves half a file for the node to trust.
//!
//! Loading checks more than syntax: the format version, the network
//! parameters' bounds, and that the recorded verdict is the one the recorded
//! rates give. A file failing any check is "unreadable" and the node
//! re-calibrates.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::fingerprint::HostFingerprint;
use crate::measure::{BackendMeasurement, MeasureConfig};
use crate::network::NetworkParams;
use crate::verdict::{decide, Verdict};

/// The file format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The file's name in a data directory.
pub const FILE_NAME: &str = "calibration.toml";

/// How the measurements were taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Threads used for verification.
    pub threads: usize,
    /// Whether these were `--quick` measurements.
    pub quick: bool,
    pub eval_warmup_secs: f64,
    pub eval_run_secs: f64,
    pub eval_runs: usize,
    pub verify_run_secs: f64,
    pub verify_runs: usize,
}

impl Settings {
    pub fn new(threads: usize, quick: bool, cfg: &MeasureConfig) -> Self {
        Settings {
            threads,
            quick,
            eval_warmup_secs: cfg.eval_warmup.as_secs_f64(),
            eval_run_secs: cfg.eval_run.as_secs_f64(),
            eval_runs: cfg.eval_runs,
            verify_run_secs: cfg.verify_run.as_secs_f64(),
            verify_runs: cfg.verify_runs,
        }
    }
}

/// Everything a calibration produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationFile {
    pub format: u32,
    /// When it was made, RFC 3339 UTC.
    pub created: String,
    pub host: HostFingerprint,
    pub network: NetworkParams,
    pub settings: Settings,
    pub verdict: Verdict,
    pub measurements: Vec<BackendMeasurement>,
}

/// Why a file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FileError {
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error("{path} is unreadable: {message}")]
    Unreadable { path: PathBuf, message: String },
}

impl CalibrationFile {
    /// The TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a calibration is plain data")
    }

    /// Parses and checks TOML text (see the module docs).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let f: CalibrationFile = toml::from_str(text).map_err(|e| {
            e.to_string()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .to_string()
        })?;
        if f.format != FORMAT_VERSION {
            return Err(format!(
                "format {} (this build reads {FORMAT_VERSION})",
                f.format
            ));
        }
        f.network.validate().map_err(|e| e.to_string())?;
        let v = &f.verdict;
        let expected = decide(
            &f.network,
            v.eval_backend.as_deref().zip(v.eval_hashes_per_sec),
            v.verify_backend.as_deref().zip(v.verify_hashes_per_sec),
        );
        if !verdicts_agree(&expected, v) {
            return Err("its verdict does not follow from its rates".into());
        }
        Ok(f)
    }

    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(FileError::Missing(path.to_path_buf()))
            }
            Err(e) => {
                return Err(FileError::Unreadable {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
            }
        };
        Self::from_toml(&text).map_err(|message| FileError::Unreadable {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Writes the file atomically, creating its directory if needed.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, self.to_toml())?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    /// The measurement of one backend, if it was measured.
    pub fn measurement(&self, backend: &str) -> Option<&BackendMeasurement> {
        self.measurements.iter().find(|m| m.backend == backend)
    }
}

/// Equal verdicts, floats compared to a relative 1e-9 (TOML round trips are
/// exact, but a hand-edited file need not be bit-identical to be honest).
fn verdicts_agree(a: &Verdict, b: &Verdict) -> bool {
    let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        (None, None) => true,
        _ => false,
    };
    a.can_evaluate == b.can_evaluate
        && a.can_follow == b.can_follow
        && a.role == b.role
        && a.eval_backend == b.eval_backend
        && a.verify_backend == b.verify_backend
        && close(a.margin, b.margin)
        && close(a.window_eval_secs, b.window_eval_secs)
        && close(a.window_verify_secs, b.window_verify_secs)
}
