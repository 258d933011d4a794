//! Backend selection for the node: the calibration file if it still applies,
//! else a quick re-calibration (saved, with the reason it was needed).
//!
//! The file applies when it loads and checks out, was made on this host (same
//! fingerprint), for these network parameters and this thread count. Its
//! measurements then rank the backends and [`Registry::resolve`] (the one
//! resolution path) picks: a pin (`--backend`, `MONTANA_BACKEND`, carried by
//! the registry) where it applies, else the fastest measured backend still
//! available (one disabled or gone since is skipped, the next measured
//! leads), at the rate the file measured.

use std::path::PathBuf;

use montana_backends::{Registry, Resolved};
use montana_vdf::Operation;

use crate::calibrate::{calibrate, ranking, CalibrationRequest};
use crate::error::CalibrationError;
use crate::file::{CalibrationFile, FileError};
use crate::fingerprint::HostFingerprint;
use crate::measure::{MeasureConfig, NoProgress};
use crate::monitor::RateMonitor;
use crate::network::NetworkParams;

/// What the node asks for.
#[derive(Clone, Debug)]
pub struct SelectOptions {
    /// The calibration file (`DIR/calibration.toml`).
    pub path: PathBuf,
    /// The network's parameters (from its genesis).
    pub params: NetworkParams,
    /// Verification threads the node will use.
    pub threads: usize,
    /// Measurements of a re-calibration (quick by default).
    pub config: MeasureConfig,
    pub program_version: String,
}

impl SelectOptions {
    /// Quick re-calibration, every CPU for verification, this program.
    pub fn new(path: impl Into<PathBuf>, params: NetworkParams) -> Self {
        SelectOptions {
            path: path.into(),
            params,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            config: MeasureConfig::quick(),
            program_version: crate::PROGRAM_VERSION.to_string(),
        }
    }
}

/// Why the node re-calibrated instead of using the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recalibration {
    Missing,
    Unreadable(String),
    HostChanged(String),
    ParamsChanged(String),
    ThreadsChanged { calibrated: usize, now: usize },
}

impl std::fmt::Display for Recalibration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recalibration::Missing => write!(f, "no calibration file"),
            Recalibration::Unreadable(m) => write!(f, "the calibration file is unreadable: {m}"),
            Recalibration::HostChanged(m) => write!(f, "the host changed: {m}"),
            Recalibration::ParamsChanged(m) => {
                write!(f, "the network parameters changed: {m}")
            }
            Recalibration::ThreadsChanged { calibrated, now } => {
                write!(f, "verification threads changed ({calibrated} -> {now})")
            }
        }
    }
}

/// What the node runs with.
#[derive(Debug)]
pub struct Selection {
    /// Resolved with the file's measurements (rates: steps/s; verify with
    /// all threads), wrapped in the fallback rule.
    pub eval: Resolved,
    pub verify: Resolved,
    pub calibration: CalibrationFile,
    /// `Some(why)` when the file did not apply and a quick calibration ran.
    pub recalibrated: Option<Recalibration>,
    /// Set when the new calibration could not be saved (the node runs on).
    pub save_error: Option<String>,
}

impl Selection {
    /// A live-rate monitor for this calibration.
    pub fn monitor(&self) -> RateMonitor {
        RateMonitor::new(&self.calibration.network, &self.calibration.verdict)
    }
}

/// Loads or re-calibrates, and resolves; see the module docs.
pub fn select(registry: &Registry, opts: &SelectOptions) -> Result<Selection, CalibrationError> {
    opts.params.validate()?;
    if opts.threads == 0 {
        return Err(CalibrationError::ZeroThreads);
    }
    let loaded = match CalibrationFile::load(&opts.path) {
        Err(FileError::Missing(_)) => Err(Recalibration::Missing),
        Err(FileError::Unreadable { message, .. }) => Err(Recalibration::Unreadable(message)),
        Ok(file) => match applies(&file, registry, opts) {
            Some(r) => Err(r),
            None => Ok(file),
        },
    };
    let (file, recalibrated, save_error) = match loaded {
        Ok(file) => (file, None, None),
        Err(reason) => {
            tracing::info!(reason = %reason, "running a quick calibration");
            let req = CalibrationRequest {
                registry,
                params: opts.params,
                threads: opts.threads,
                config: opts.config.clone(),
                quick: opts.config == MeasureConfig::quick(),
                program_version: opts.program_version.clone(),
            };
            let file = calibrate(&req, &NoProgress)?;
            let save_error = file.save(&opts.path).err().map(|e| {
                let msg = format!("{}: {e}", opts.path.display());
                tracing::warn!(error = %msg, "could not save the calibration");
                msg
            });
            (file, Some(reason), save_error)
        }
    };
    let measured = ranking(file.network.hash, &file.measurements);
    let resolve = |op| registry.resolve(file.network.hash, op, &measured);
    Ok(Selection {
        eval: resolve(Operation::Eval)?,
        verify: resolve(Operation::Verify)?,
        calibration: file,
        recalibrated,
        save_error,
    })
}

/// Why `file` does not apply to this host and request, or `None`.
fn applies(
    file: &CalibrationFile,
    registry: &Registry,
    opts: &SelectOptions,
) -> Option<Recalibration> {
    let now = HostFingerprint::detect(registry, &opts.program_version);
    if let Some(m) = file.host.mismatch(&now) {
        return Some(Recalibration::HostChanged(m));
    }
    if let Some(m) = file.network.difference(&opts.params) {
        return Some(Recalibration::ParamsChanged(m));
    }
    if file.settings.threads != opts.threads {
        return Some(Recalibration::ThreadsChanged {
            calibrated: file.settings.threads,
            now: opts.threads,
        });
    }
    None
}
