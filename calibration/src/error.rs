//! Errors of calibration and selection, one line each (the CLI prints them).

use montana_backends::{ChoiceError, SelectError};
use montana_vdf::ParamError;
use thiserror::Error;

/// Why a calibration or a selection could not be done.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CalibrationError {
    #[error("invalid network parameters: {0}")]
    Params(#[from] ParamError),
    #[error("window seconds must be a positive finite number, got {0}")]
    WindowSecs(f64),
    #[error("threads must be at least 1")]
    ZeroThreads,
    #[error("genesis file {path}: {message}")]
    Genesis { path: String, message: String },
    #[error("calibration file {path}: {message}")]
    File { path: String, message: String },
    #[error("no backend of this host could {op} {suite} (every measurement failed)")]
    NothingMeasured { suite: String, op: String },
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error(transparent)]
    Choice(#[from] ChoiceError),
}
