//! Backend selection for the node: the calibration file if it still applies,
//! else a quick re-calibration (saved, with the reason it was needed).
//!
//! The file applies when it loads and checks out, was made on this host (same
//! fingerprint), for these network parameters and this thread count, and its
//! chosen backends are still available. A pinned backend (`--backend NAME`
//! or `MONTANA_BACKEND`) is used for the operations it supports, at the rate
//! the file measured for it.

use std::path::PathBuf;
use std::sync::Arc;

use montana_backends::{Registry, SelectError};
use montana_vdf::{Backend, Operation};

use crate::calibrate::{calibrate, CalibrationRequest};
use crate::error::CalibrationError;
use crate::fallback::FallbackBackend;
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
    /// `--backend NAME`; `None` or `auto` leaves it to `MONTANA_BACKEND`
    /// and the calibration.
    pub pin: Option<String>,
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
            pin: None,
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
    BackendGone(String),
    NotMeasured(String),
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
            Recalibration::BackendGone(b) => {
                write!(f, "the calibrated backend {b} is no longer available")
            }
            Recalibration::NotMeasured(b) => {
                write!(f, "the pinned backend {b} was not measured")
            }
        }
    }
}

/// A chosen backend and its calibrated rate (steps per second; for verify,
/// all threads together).
#[derive(Clone)]
pub struct Chosen {
    pub backend: Arc<dyn Backend>,
    pub hashes_per_sec: f64,
}

impl std::fmt::Debug for Chosen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chosen")
            .field("backend", &self.backend.name())
            .field("hashes_per_sec", &self.hashes_per_sec)
            .finish()
    }
}

/// What the node runs with.
#[derive(Clone, Debug)]
pub struct Selection {
    pub eval: Chosen,
    pub verify: Chosen,
    pub calibration: CalibrationFile,
    /// `Some(why)` when the file did not apply and a quick calibration ran.
    pub recalibrated: Option<Recalibration>,
    /// Set when the new calibration could not be saved (the node runs on).
    pub save_error: Option<String>,
}

impl Selection {
    /// The eval backend, falling back along `registry`'s ranking.
    pub fn eval_with_fallback(&self, registry: &Registry) -> FallbackBackend {
        FallbackBackend::from_registry(
            self.eval.backend.clone(),
            registry,
            self.calibration.network.hash,
            Operation::Eval,
        )
    }

    /// The verify backend, falling back along `registry`'s ranking.
    pub fn verify_with_fallback(&self, registry: &Registry) -> FallbackBackend {
        FallbackBackend::from_registry(
            self.verify.backend.clone(),
            registry,
            self.calibration.network.hash,
            Operation::Verify,
        )
    }

    /// A live-rate monitor for this calibration.
    pub fn monitor(&self) -> RateMonitor {
        RateMonitor::new(&self.calibration.network, &self.calibration.verdict)
    }
}

enum Pick {
    Recalibrate(Recalibration),
    Fail(CalibrationError),
}

/// Loads or re-calibrates, and picks; see the module docs.
pub fn select(registry: &Registry, opts: &SelectOptions) -> Result<Selection, CalibrationError> {
    opts.params.validate()?;
    if opts.threads == 0 {
        return Err(CalibrationError::ZeroThreads);
    }
    let pin = opts
        .pin
        .as_deref()
        .filter(|p| *p != montana_backends::registry::AUTO)
        .or(registry.forced());
    let reason = match CalibrationFile::load(&opts.path) {
        Err(FileError::Missing(_)) => Recalibration::Missing,
        Err(FileError::Unreadable { message, .. }) => Recalibration::Unreadable(message),
        Ok(file) => match applies(&file, registry, opts) {
            Some(r) => r,
            None => match pick_both(&file, registry, pin) {
                Ok((eval, verify)) => {
                    return Ok(Selection {
                        eval,
                        verify,
                        calibration: file,
                        recalibrated: None,
                        save_error: None,
                    })
                }
                Err(Pick::Recalibrate(r)) => r,
                Err(Pick::Fail(e)) => return Err(e),
            },
        },
    };
    tracing::info!(reason = %reason, "running a quick calibration");
    let req = CalibrationRequest {
        registry,
        params: opts.params,
        threads: opts.threads,
        config: opts.config.clone(),
        quick: opts.config == MeasureConfig::quick(),
        program_version: opts.program_version.clone(),
        pin: opts.pin.clone(),
    };
    let file = calibrate(&req, &NoProgress)?;
    let save_error = file.save(&opts.path).err().map(|e| {
        let msg = format!("{}: {e}", opts.path.display());
        tracing::warn!(error = %msg, "could not save the calibration");
        msg
    });
    let (eval, verify) = pick_both(&file, registry, pin).map_err(|p| match p {
        Pick::Fail(e) => e,
        // Fresh measurements that still lack a backend: nothing to retry.
        Pick::Recalibrate(r) => CalibrationError::File {
            path: opts.path.display().to_string(),
            message: r.to_string(),
        },
    })?;
    Ok(Selection {
        eval,
        verify,
        calibration: file,
        recalibrated: Some(reason),
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

fn pick_both(
    file: &CalibrationFile,
    registry: &Registry,
    pin: Option<&str>,
) -> Result<(Chosen, Chosen), Pick> {
    Ok((
        pick(file, registry, Operation::Eval, pin)?,
        pick(file, registry, Operation::Verify, pin)?,
    ))
}

fn pick(
    file: &CalibrationFile,
    registry: &Registry,
    op: Operation,
    pin: Option<&str>,
) -> Result<Chosen, Pick> {
    let suite = file.network.hash;
    let rate_of = |name: &str| {
        file.measurement(name).and_then(|m| match op {
            Operation::Eval => m.eval.as_ref().map(|e| e.hashes_per_sec),
            Operation::Verify => m.verify.as_ref().map(|v| v.hashes_per_sec),
        })
    };
    if let Some(name) = pin {
        match registry.get(name, suite, op) {
            Ok(backend) => {
                let rate = rate_of(name)
                    .ok_or_else(|| Pick::Recalibrate(Recalibration::NotMeasured(name.into())))?;
                return Ok(Chosen {
                    backend,
                    hashes_per_sec: rate,
                });
            }
            Err(SelectError::Unsupported { .. }) => {}
            Err(e) => return Err(Pick::Fail(e.into())),
        }
    }
    let v = &file.verdict;
    let (name, rate) = match op {
        Operation::Eval => (v.eval_backend.as_deref(), v.eval_hashes_per_sec),
        Operation::Verify => (v.verify_backend.as_deref(), v.verify_hashes_per_sec),
    };
    let (Some(name), Some(rate)) = (name, rate) else {
        return Err(Pick::Fail(CalibrationError::NothingMeasured {
            suite: suite.name().into(),
            op: op.name().into(),
        }));
    };
    match registry.get(name, suite, op) {
        Ok(backend) => Ok(Chosen {
            backend,
            hashes_per_sec: rate,
        }),
        Err(_) => Err(Pick::Recalibrate(Recalibration::BackendGone(name.into()))),
    }
}
