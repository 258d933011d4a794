//! # montana-calibration: what this host can do for a given network
//!
//! Before joining, an operator measures every backend of this host against the
//! network's parameters (hash, D, K, window seconds) and learns whether the
//! host can evaluate a window in time (propose) and verify one in time
//! (follow). The node then starts with the winners and keeps an eye on them.
//!
//! - [`measure`]: eval rate on one pinned thread, verify throughput on a
//!   window-shaped sample of segments, each a median of several runs.
//! - [`verdict`]: the rules turning two rates into `can_evaluate`, `margin`,
//!   `can_follow` and a [`Role`].
//! - [`calibrate()`]: measures every available backend and decides; plus
//!   [`recommend_d`], the genesis tool's D for a target window.
//! - [`file`]: the TOML calibration file, with the host [`fingerprint`] and
//!   the network parameters it was made for.
//! - [`select()`]: the node's entry point: load the file or re-calibrate (and
//!   say why), and resolve the backends with its measurements.
//! - [`rates`]: the per-host rate cache `montana bench` and `montana
//!   calibrate` write, from which `auto` ranks where no calibration applies.
//! - [`fallback`]: a `Backend` that moves to the next best backend when the
//!   chosen one breaks at run time (a lost GPU) or gives a wrong verdict (a
//!   known-bad sample at first use, the scalar oracle before any rejection),
//!   so following never stops and no valid proposal is rejected.
//! - [`monitor`]: live rates against the calibrated ones: the early sign that
//!   the node will start to lag.
//! - [`drift`]: the node's every evaluation and verification against the
//!   rate its backend was resolved with; a sustained drop (with hysteresis)
//!   is one event, for the log, /status and a re-ranking.
//! - [`report`]: `montana bench --report`, the backend comparison as JSON and
//!   SVG plots.

pub mod calibrate;
pub mod drift;
pub mod error;
pub mod file;
pub mod fingerprint;
pub mod measure;
pub mod monitor;
pub mod network;
mod pin;
pub mod rates;
pub mod report;
pub mod select;
pub mod timestamp;
pub mod verdict;

pub use calibrate::{calibrate, recommend_d, CalibrationRequest, Recommendation};
pub use drift::{DriftConfig, DriftEvent, DriftState, DriftWatch};
pub use error::CalibrationError;
pub use file::{CalibrationFile, FileError, Settings};
pub use fingerprint::{GpuFingerprint, HostFingerprint};
pub use measure::{
    BackendMeasurement, EvalMeasurement, MeasureConfig, NoProgress, Progress, VerifyMeasurement,
};
pub use monitor::{Health, MonitorStatus, RateMonitor};
/// The fallback wrapper lives in `montana_backends` (one resolution path);
/// re-exported for callers that named it here.
pub use montana_backends::fallback;
pub use montana_backends::fallback::FallbackBackend;
pub use network::NetworkParams;
pub use select::{select, Recalibration, SelectOptions, Selection};
pub use verdict::{decide, Role, Verdict, FOLLOW_SHARE, PROPOSER_MARGIN};

/// The program version recorded in (and compared against) calibration files.
pub const PROGRAM_VERSION: &str = concat!("montana ", env!("CARGO_PKG_VERSION"));
