//! Typed errors. Each renders as one line that names the problem, because the
//! CLI prints exactly that line and operators read it in logs.

use thiserror::Error;

/// Text that does not parse (hex, suite names).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("expected 64 hex digits (32 bytes), found {found} characters")]
    HexLength { found: usize },
    #[error("invalid hex digit in a 32-byte value")]
    HexDigit,
    #[error("unknown hash suite '{0}' (expected sha256 or blake3)")]
    UnknownSuite(String),
}

/// Chain parameters outside the specified bounds.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParamError {
    #[error("iterations must be at least 1")]
    ZeroIterations,
    #[error("iterations {0} exceed the maximum 2^40")]
    TooManyIterations(u64),
    #[error("checkpoints must be at least 1")]
    ZeroCheckpoints,
    #[error("checkpoints {checkpoints} exceed the maximum {max} (min(iterations, 2^20))")]
    TooManyCheckpoints { checkpoints: u64, max: u64 },
    #[error("checkpoints {checkpoints} do not divide iterations {iterations}")]
    NotDivisible { iterations: u64, checkpoints: u64 },
    #[error("proof lists {found} checkpoints but declares {declared}")]
    CheckpointCount { declared: u64, found: usize },
}

/// A binary proof that is not canonical.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("proof is truncated: {len} bytes, at least {needed} needed")]
    Truncated { len: usize, needed: usize },
    #[error("proof has {extra} trailing bytes after the last checkpoint")]
    TrailingBytes { extra: usize },
    #[error("bad magic: expected MTVP")]
    BadMagic,
    #[error("unsupported proof version {0} (this build reads version 1)")]
    UnsupportedVersion(u8),
    #[error("unknown hash suite byte {0}")]
    UnknownSuite(u8),
    #[error("invalid proof parameters: {0}")]
    Params(#[from] ParamError),
    #[error("malformed proof JSON: {0}")]
    Json(String),
    #[error("proof output {output} differs from the last checkpoint {last}")]
    OutputMismatch { output: String, last: String },
}

/// Why a backend could not do what was asked. Callers fall back on these.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BackendError {
    #[error("backend '{backend}' does not support {suite}/{op}")]
    Unsupported {
        backend: String,
        suite: String,
        op: String,
    },
    #[error("backend '{backend}' is not available on this host: {reason}")]
    Unavailable { backend: String, reason: String },
    #[error("evaluation cancelled")]
    Cancelled,
    #[error("invalid parameters: {0}")]
    Params(#[from] ParamError),
    #[error("segment batch mixes suites or is malformed: {0}")]
    BadBatch(String),
    #[error("backend '{backend}' failed: {message}")]
    Device { backend: String, message: String },
}
