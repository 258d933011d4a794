//! A whole calibration: measure every available backend for the network's
//! suite, choose the best eval and verify backends, and decide.
//!
//! The verdict's backends are the ones [`Registry::resolve`] runs with
//! these measurements (the one resolution path).
//!
//! Unavailable backends (missing CPU features, disabled by
//! `MONTANA_DISABLE_BACKENDS`, the gpu backend on a host without a GPU
//! device unless named or `MONTANA_GPU_ALLOW_CPU=1`) are skipped. A software
//! GPU adapter (device type `Cpu`) and backends `auto` never picks are
//! measured and reported but never chosen. A backend whose measurement fails is reported
//! with its error and not chosen: one broken path must not stop calibration.

use montana_backends::{Ranking, Rate, Registry};
use montana_vdf::{Backend, HashSuite, Operation, MAX_ITERATIONS};
use serde::Serialize;

use crate::error::CalibrationError;
use crate::file::{CalibrationFile, Settings, FORMAT_VERSION};
use crate::fingerprint::HostFingerprint;
use crate::measure::{measure_eval, measure_verify, BackendMeasurement, MeasureConfig, Progress};
use crate::network::NetworkParams;
use crate::timestamp;
use crate::verdict::{decide, Verdict};

/// What to calibrate for, and how long to measure. A pinned backend
/// (`--backend`, `MONTANA_BACKEND`) comes with the registry's choice.
#[derive(Clone, Debug)]
pub struct CalibrationRequest<'a> {
    pub registry: &'a Registry,
    pub params: NetworkParams,
    /// Verification threads (the node's setting).
    pub threads: usize,
    pub config: MeasureConfig,
    /// Recorded in the file: whether `config` is the quick one.
    pub quick: bool,
    /// Recorded in the fingerprint ([`crate::PROGRAM_VERSION`]).
    pub program_version: String,
}

impl CalibrationRequest<'_> {
    fn check(&self, ops: &[Operation]) -> Result<(), CalibrationError> {
        self.params.validate()?;
        if self.threads == 0 {
            return Err(CalibrationError::ZeroThreads);
        }
        if self.registry.choice().pin.is_some() {
            // A pin this host cannot serve fails now, not after measuring.
            for op in ops {
                self.registry
                    .resolve(self.params.hash, *op, &Ranking::Static)?;
            }
        }
        Ok(())
    }
}

/// Measures and decides; see the module docs.
pub fn calibrate(
    req: &CalibrationRequest<'_>,
    progress: &dyn Progress,
) -> Result<CalibrationFile, CalibrationError> {
    req.check(&Operation::ALL)?;
    let measurements = measure_all(req, &Operation::ALL, progress);
    let verdict = verdict_for(req.registry, &req.params, &measurements);
    Ok(CalibrationFile {
        format: FORMAT_VERSION,
        created: timestamp::now(),
        host: HostFingerprint::detect(req.registry, &req.program_version),
        network: req.params,
        settings: Settings::new(req.threads, req.quick, &req.config),
        verdict,
        measurements,
    })
}

/// The measured rates of `measurements` (eligible backends only) as the
/// ranking [`Registry::resolve`] follows.
pub fn ranking(suite: HashSuite, measurements: &[BackendMeasurement]) -> Ranking {
    let mut rates = Vec::new();
    for m in measurements.iter().filter(|m| m.eligible) {
        let rate = |op, threads, hashes_per_sec| Rate {
            backend: m.backend.clone(),
            suite,
            op,
            threads,
            hashes_per_sec,
        };
        if let Some(e) = &m.eval {
            rates.push(rate(Operation::Eval, 1, e.hashes_per_sec));
        }
        if let Some(v) = &m.verify {
            rates.push(rate(Operation::Verify, v.threads, v.hashes_per_sec));
        }
    }
    Ranking::Measured(rates)
}

/// The verdict for measurements: for each operation, the backend
/// [`Registry::resolve`] runs with them (a pin, else the fastest within the
/// tie rule) at its measured rate.
pub fn verdict_for(
    registry: &Registry,
    params: &NetworkParams,
    measurements: &[BackendMeasurement],
) -> Verdict {
    let ranking = ranking(params.hash, measurements);
    let pick = |op| {
        let r = registry.resolve(params.hash, op, &ranking).ok()?;
        Some((r.name(), r.hashes_per_sec?))
    };
    decide(params, pick(Operation::Eval), pick(Operation::Verify))
}

/// Whether an adapter is a software rasteriser (wgpu's `DeviceType::Cpu`).
fn is_software(b: &dyn Backend) -> bool {
    b.adapter()
        .is_some_and(|a| a.device_type.eq_ignore_ascii_case("cpu"))
}

/// Measures `ops` on every available backend supporting them.
fn measure_all(
    req: &CalibrationRequest<'_>,
    ops: &[Operation],
    progress: &dyn Progress,
) -> Vec<BackendMeasurement> {
    let suite = req.params.hash;
    let mut out = Vec::new();
    for b in req.registry.all() {
        let b = b.as_ref();
        let supported: Vec<Operation> = ops
            .iter()
            .copied()
            .filter(|op| b.supports(suite, *op))
            .collect();
        if supported.is_empty() || !req.registry.availability(b).is_available() {
            continue;
        }
        let software = is_software(b);
        let never_auto = supported.iter().any(|op| b.auto_rank(suite, *op).is_none());
        let adapter = b.adapter();
        let mut m = BackendMeasurement {
            backend: b.name().to_string(),
            kind: b.kind().name().to_string(),
            lanes: b.lanes(),
            eligible: !software && !never_auto,
            note: if software {
                Some("software GPU adapter: measured, never chosen".into())
            } else if never_auto {
                Some("never chosen automatically".into())
            } else {
                None
            },
            adapter: adapter.as_ref().map(|a| a.name.clone()),
            device_type: adapter.map(|a| a.device_type),
            eval: None,
            eval_error: None,
            verify: None,
            verify_error: None,
        };
        if supported.contains(&Operation::Eval) {
            let label = format!("{} eval", b.name());
            progress.begin(&label, req.config.eval_budget().as_millis() as u64);
            match measure_eval(b, suite, &req.config, progress) {
                Ok(e) => m.eval = Some(e),
                Err(e) => {
                    tracing::warn!(backend = b.name(), error = %e, "eval measurement failed");
                    m.eval_error = Some(e.to_string());
                }
            }
            progress.end();
        }
        if supported.contains(&Operation::Verify) {
            let label = format!("{} verify x{}", b.name(), req.threads);
            progress.begin(&label, req.config.verify_budget().as_millis() as u64);
            match measure_verify(
                b,
                suite,
                req.params.segment_len(),
                req.params.checkpoints,
                req.threads,
                &req.config,
                progress,
            ) {
                Ok(v) => m.verify = Some(v),
                Err(e) => {
                    tracing::warn!(backend = b.name(), error = %e, "verify measurement failed");
                    m.verify_error = Some(e.to_string());
                }
            }
            progress.end();
        }
        out.push(m);
    }
    out
}

/// The D for a target window on this host (`--recommend-d`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recommendation {
    #[serde(with = "crate::network::suite_name")]
    pub hash: HashSuite,
    pub d: u64,
    pub checkpoints: u64,
    pub window_secs: f64,
    pub eval_backend: String,
    pub eval_hashes_per_sec: f64,
    pub measurements: Vec<BackendMeasurement>,
}

/// Measures eval rates and recommends D for `req.params.window_secs` and
/// `req.params.checkpoints` (`req.params.d` is ignored).
pub fn recommend(
    req: &CalibrationRequest<'_>,
    progress: &dyn Progress,
) -> Result<Recommendation, CalibrationError> {
    let mut probe = req.clone();
    // D plays no part in an eval measurement; any valid value will do.
    probe.params.d = req.params.checkpoints;
    probe.check(&[Operation::Eval])?;
    let measurements = measure_all(&probe, &[Operation::Eval], progress);
    let ranking = ranking(req.params.hash, &measurements);
    let (backend, rate) = req
        .registry
        .resolve(req.params.hash, Operation::Eval, &ranking)
        .ok()
        .and_then(|r| Some((r.name().to_string(), r.hashes_per_sec?)))
        .ok_or_else(|| CalibrationError::NothingMeasured {
            suite: req.params.hash.name().into(),
            op: "evaluate".into(),
        })?;
    Ok(Recommendation {
        hash: req.params.hash,
        d: recommend_d(rate, req.params.window_secs, req.params.checkpoints),
        checkpoints: req.params.checkpoints,
        window_secs: req.params.window_secs,
        eval_backend: backend,
        eval_hashes_per_sec: rate,
        measurements,
    })
}

/// The largest multiple of `k` that `rate` steps/s evaluate within
/// `window_secs` (at least `k`, at most the chain bound 2^40).
pub fn recommend_d(rate: f64, window_secs: f64, k: u64) -> u64 {
    let k = k.max(1);
    let steps = (rate * window_secs).clamp(0.0, MAX_ITERATIONS as f64) as u64;
    let d = steps / k * k;
    d.clamp(k, MAX_ITERATIONS / k * k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recommended_d_is_a_multiple_of_k_within_the_window() {
        assert_eq!(recommend_d(5_416_666.7, 60.0, 6_500), 325_000_000);
        assert_eq!(recommend_d(1000.0, 1.0, 7), 994);
        assert_eq!(recommend_d(0.5, 1.0, 10), 10);
        assert_eq!(recommend_d(1e30, 1e9, 1 << 20), MAX_ITERATIONS);
        let d = recommend_d(12_345_678.9, 60.0, 6_500);
        assert_eq!(d % 6_500, 0);
        assert!(d as f64 / 12_345_678.9 <= 60.0);
        assert!((d + 6_500) as f64 / 12_345_678.9 > 60.0);
    }
}
