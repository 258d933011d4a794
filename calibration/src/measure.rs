//! Measuring one backend: eval rate and verify throughput.
//!
//! - **eval**: one chain on one thread pinned to its core, the way a node
//!   evaluates a window. A short probe sizes the runs, a warm-up brings the
//!   core to steady clocks, then the median of several timed runs.
//! - **verify**: a batch of segments shaped like a real window proof
//!   (segments of D/K steps), starting with every thread's lanes busy and
//!   doubled until a batch lasts a quarter of a run, never more than K (a
//!   slow device, such as a software GPU, thus stays within the time
//!   planned). The window's time is
//!   extrapolated from it (verification is linear in segments) instead of
//!   verifying all K. The batch cycles through a few distinct valid segments
//!   made by the scalar oracle: each copy costs a backend exactly the same
//!   work, and generating K distinct ones would cost as much as the window.
//!
//! Every duration is in [`MeasureConfig`], so tests run in milliseconds.

use std::time::{Duration, Instant};

use montana_backends::bench::time_valid_verify;
use montana_backends::scalar;
use montana_vdf::{
    Backend, BackendError, ChainParams, EvalControl, Hash32, HashSuite, Segment, VerifyOptions,
    MAX_ITERATIONS,
};
use serde::{Deserialize, Serialize};

use crate::pin::pin_current_thread;

/// Durations and repetitions of the measurements.
#[derive(Clone, Debug, PartialEq)]
pub struct MeasureConfig {
    /// Untimed evaluation before the timed runs (steady clocks).
    pub eval_warmup: Duration,
    /// Length of one timed evaluation run.
    pub eval_run: Duration,
    /// Timed evaluation runs; the median counts.
    pub eval_runs: usize,
    /// Target length of one timed verification batch.
    pub verify_run: Duration,
    /// Timed verification batches; the median counts.
    pub verify_runs: usize,
}

impl MeasureConfig {
    /// A full calibration: several runs of a few seconds.
    pub fn full() -> Self {
        MeasureConfig {
            eval_warmup: Duration::from_millis(1000),
            eval_run: Duration::from_millis(2000),
            eval_runs: 3,
            verify_run: Duration::from_millis(1000),
            verify_runs: 3,
        }
    }

    /// `--quick`: the node's start-up re-calibration, a few seconds in all.
    pub fn quick() -> Self {
        MeasureConfig {
            eval_warmup: Duration::from_millis(100),
            eval_run: Duration::from_millis(300),
            eval_runs: 3,
            verify_run: Duration::from_millis(200),
            verify_runs: 3,
        }
    }

    /// Every run lasting `run` (warm-up a third of it), `runs` times.
    pub fn uniform(run: Duration, runs: usize) -> Self {
        MeasureConfig {
            eval_warmup: run / 3,
            eval_run: run,
            eval_runs: runs.max(1),
            verify_run: run,
            verify_runs: runs.max(1),
        }
    }

    /// Rough wall time of one eval measurement, for progress bars.
    pub fn eval_budget(&self) -> Duration {
        self.eval_run / 4 + self.eval_warmup + self.eval_run * self.eval_runs.max(1) as u32
    }

    /// Rough wall time of one verify measurement, for progress bars.
    pub fn verify_budget(&self) -> Duration {
        self.verify_run / 2 + self.verify_run * self.verify_runs.max(1) as u32
    }
}

/// Where measurements report how far they are (the CLI draws bars; the node
/// and tests pass [`NoProgress`]). Units are milliseconds of planned time.
pub trait Progress: Sync {
    fn begin(&self, _label: &str, _planned_ms: u64) {}
    fn update(&self, _done_ms: u64) {}
    fn end(&self) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// One backend's evaluation rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalMeasurement {
    /// Median of the runs.
    pub hashes_per_sec: f64,
    /// Every timed run's rate.
    pub runs: Vec<f64>,
    /// Whether the measuring thread was pinned to one core.
    pub pinned: bool,
}

/// One backend's verification throughput with `threads` threads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyMeasurement {
    /// Median batch: segments x steps / seconds, all threads together.
    pub hashes_per_sec: f64,
    /// Every timed batch's rate.
    pub runs: Vec<f64>,
    pub threads: usize,
    /// Segments per timed batch.
    pub batch_segments: u64,
    /// Steps per sampled segment (D/K, or less when D/K is huge).
    pub segment_steps: u64,
}

/// Everything measured for one backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendMeasurement {
    pub backend: String,
    pub kind: String,
    pub lanes: usize,
    /// Whether calibration may choose it (`false` for a software GPU
    /// adapter or a backend never chosen automatically).
    pub eligible: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalMeasurement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyMeasurement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_error: Option<String>,
}

/// The median, shared with every rate measurer (`montana_backends::bench`).
pub use montana_backends::bench::median;

/// A distinct start value per run, so no run can reuse another's result.
fn start_value(suite: HashSuite, tag: &str, i: u64) -> Hash32 {
    let mut bytes = format!("montana-calibration/{tag}/").into_bytes();
    bytes.extend_from_slice(&i.to_le_bytes());
    suite.hash(&bytes)
}

/// Seconds as a non-zero divisor.
fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}

/// Measures `backend`'s single-chain evaluation rate on a pinned thread.
pub fn measure_eval(
    backend: &dyn Backend,
    suite: HashSuite,
    cfg: &MeasureConfig,
    progress: &dyn Progress,
) -> Result<EvalMeasurement, BackendError> {
    backend.check_supported(suite, montana_vdf::Operation::Eval)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            let pinned = pin_current_thread();
            eval_runs(backend, suite, cfg, progress).map(|runs| EvalMeasurement {
                hashes_per_sec: median(&runs),
                runs,
                pinned,
            })
        })
        .join()
        .unwrap_or_else(|_| {
            Err(BackendError::Device {
                backend: backend.name().to_string(),
                message: "evaluation panicked during calibration".into(),
            })
        })
    })
}

fn eval_runs(
    backend: &dyn Backend,
    suite: HashSuite,
    cfg: &MeasureConfig,
    progress: &dyn Progress,
) -> Result<Vec<f64>, BackendError> {
    let began = Instant::now();
    let tick = |_: u64| progress.update(began.elapsed().as_millis() as u64);
    let mut counter = 0u64;
    let mut run = |n: u64| -> Result<Duration, BackendError> {
        counter += 1;
        let start = start_value(suite, "eval", counter);
        let params = ChainParams::new(n.clamp(1, MAX_ITERATIONS), 1)?;
        let ctl = EvalControl {
            cancel: None,
            progress: Some(&tick),
        };
        let t = Instant::now();
        backend.evaluate(suite, &start, params, &ctl)?;
        let elapsed = t.elapsed();
        progress.update(began.elapsed().as_millis() as u64);
        Ok(elapsed)
    };

    // Probe: grow n until a run lasts an eighth of a timed run.
    let probe_target = secs(cfg.eval_run / 8);
    let mut n = 1u64 << 12;
    let mut rate;
    loop {
        let t = secs(run(n)?);
        rate = n as f64 / t;
        if t >= probe_target || n >= MAX_ITERATIONS / 2 {
            break;
        }
        // Jump towards the target, at most 16x at a time (timers are coarse).
        let factor = (probe_target / t).clamp(2.0, 16.0);
        n = ((n as f64) * factor) as u64;
    }
    let steps_for = |d: Duration, rate: f64| ((rate * d.as_secs_f64()) as u64).max(1);
    if !cfg.eval_warmup.is_zero() {
        run(steps_for(cfg.eval_warmup, rate))?;
    }
    let mut rates = Vec::with_capacity(cfg.eval_runs);
    for _ in 0..cfg.eval_runs.max(1) {
        let n = steps_for(cfg.eval_run, rate);
        let t = secs(run(n)?);
        rates.push(n as f64 / t);
        rate = median(&rates);
    }
    Ok(rates)
}

/// Longest segment a verify sample uses; longer D/K are sampled at this
/// length and scaled (verification time is linear in steps).
pub const MAX_SAMPLE_STEPS: u64 = 1 << 22;
/// Most segments in one timed batch (bounds memory for huge-lane backends).
pub const MAX_BATCH: u64 = 1 << 16;
/// Lanes per thread of the first verify batch (see `measure_verify`).
const FIRST_BATCH_LANES: usize = 16;
/// Distinct valid segments a batch cycles through.
const DISTINCT_SEGMENTS: u64 = 8;

/// Measures `backend`'s verification throughput on `threads` threads with
/// segments of `segment_len` steps, for a window of `checkpoints` segments.
pub fn measure_verify(
    backend: &dyn Backend,
    suite: HashSuite,
    segment_len: u64,
    checkpoints: u64,
    threads: usize,
    cfg: &MeasureConfig,
    progress: &dyn Progress,
) -> Result<VerifyMeasurement, BackendError> {
    backend.check_supported(suite, montana_vdf::Operation::Verify)?;
    let began = Instant::now();
    let threads = threads.max(1);
    let steps = segment_len.clamp(1, MAX_SAMPLE_STEPS);
    let checkpoints = checkpoints.max(1);
    let fill = (threads as u64).saturating_mul(backend.lanes().max(1) as u64);
    let distinct: Vec<Segment> = (0..DISTINCT_SEGMENTS.min(fill).min(checkpoints))
        .map(|i| {
            let start = start_value(suite, "verify", i);
            let mut end = start;
            scalar::advance(suite, &mut end, steps);
            Segment { start, end, steps }
        })
        .collect();
    let batch =
        |n: u64| -> Vec<Segment> { distinct.iter().copied().cycle().take(n as usize).collect() };
    let opts = VerifyOptions::threads(threads);
    let time = |segs: &[Segment]| -> Result<Duration, BackendError> {
        let elapsed = time_valid_verify(backend, suite, segs, &opts)?;
        progress.update(began.elapsed().as_millis() as u64);
        Ok(elapsed)
    };

    // Size the batch: start with every thread's lanes busy (at most
    // FIRST_BATCH_LANES per thread, so a device with a hundred thousand
    // lanes does not start with the whole window), then double until a
    // batch lasts a quarter of a run (per-call overhead amortised as in a
    // real window, a GPU filled as far as time allows), never past K.
    let cap = checkpoints.min(MAX_BATCH);
    let first = (threads as u64).saturating_mul(backend.lanes().clamp(1, FIRST_BATCH_LANES) as u64);
    let mut n = first.clamp(1, cap);
    let mut segs = batch(n);
    let mut t = time(&segs)?;
    while t < cfg.verify_run / 4 && n < cap {
        n = n.saturating_mul(2).min(cap);
        segs = batch(n);
        t = time(&segs)?;
    }
    let mut rates = vec![];
    // A sizing batch that already took a whole run counts as one.
    if t >= cfg.verify_run {
        rates.push((n * steps) as f64 / secs(t));
    }
    // A slow device (a software GPU) must not hold calibration up: stop
    // at twice the planned time once there is a rate.
    let deadline = cfg.verify_budget() * 2;
    while rates.len() < cfg.verify_runs.max(1) && (rates.is_empty() || began.elapsed() < deadline) {
        let t = time(&segs)?;
        rates.push((n * steps) as f64 / secs(t));
    }
    Ok(VerifyMeasurement {
        hashes_per_sec: median(&rates),
        runs: rates,
        threads,
        batch_segments: n,
        segment_steps: steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use montana_backends::ScalarBackend;
    use montana_vdf::VerifyOutcome;

    fn tiny() -> MeasureConfig {
        MeasureConfig::uniform(Duration::from_millis(20), 3)
    }

    #[test]
    fn eval_measures_a_positive_rate() {
        let m = measure_eval(&ScalarBackend, HashSuite::Sha256, &tiny(), &NoProgress).unwrap();
        assert_eq!(m.runs.len(), 3);
        assert!(m.hashes_per_sec > 0.0 && m.hashes_per_sec.is_finite());
        assert_eq!(m.hashes_per_sec, median(&m.runs));
    }

    #[test]
    fn verify_measures_the_scalar_oracle() {
        let m = measure_verify(
            &ScalarBackend,
            HashSuite::Blake3,
            100,
            3,
            2,
            &tiny(),
            &NoProgress,
        )
        .unwrap();
        // Both threads busy at first; doubled (if time allows) up to K.
        assert!((2..=3).contains(&m.batch_segments), "{m:?}");
        assert_eq!(m.segment_steps, 100);
        assert!(m.hashes_per_sec > 0.0);
    }

    #[test]
    fn verify_batch_grows_to_k_or_the_cap_but_never_past() {
        // An instant device and an hour-long run: the batch doubles until
        // it reaches K (or MAX_BATCH), whatever the machine's load.
        let patient = MeasureConfig::uniform(Duration::from_secs(3600), 1);
        for (k, expected) in [(3, 3), (1000, 1000), (1 << 20, MAX_BATCH)] {
            let m = measure_verify(
                &Device {
                    lanes: 4,
                    per_segment: Duration::ZERO,
                },
                HashSuite::Sha256,
                10,
                k,
                2,
                &patient,
                &NoProgress,
            )
            .unwrap();
            assert_eq!(m.batch_segments, expected, "K = {k}");
        }
    }

    /// A verify-only device: `lanes` lanes, `per_segment` of sleep per
    /// segment, every batch valid.
    struct Device {
        lanes: usize,
        per_segment: Duration,
    }
    impl Backend for Device {
        fn name(&self) -> &'static str {
            "device"
        }
        fn kind(&self) -> montana_vdf::BackendKind {
            montana_vdf::BackendKind::Gpu
        }
        fn availability(&self) -> montana_vdf::Availability {
            montana_vdf::Availability::Available
        }
        fn lanes(&self) -> usize {
            self.lanes
        }
        fn supports(&self, _: HashSuite, op: montana_vdf::Operation) -> bool {
            op == montana_vdf::Operation::Verify
        }
        fn verify(
            &self,
            _: HashSuite,
            segments: &[Segment],
            _: &VerifyOptions,
        ) -> Result<VerifyOutcome, BackendError> {
            std::thread::sleep(self.per_segment * segments.len() as u32);
            Ok(VerifyOutcome::Valid)
        }
    }

    /// A device with a huge number of lanes that takes 200 us per segment:
    /// its first batch is 16 lanes per thread, not the whole window.
    #[test]
    fn a_slow_wide_device_is_measured_on_a_small_batch() {
        let slow_wide = Device {
            lanes: 1 << 17,
            per_segment: Duration::from_micros(200),
        };
        let m = measure_verify(
            &slow_wide,
            HashSuite::Sha256,
            50_000,
            6_500,
            2,
            &tiny(),
            &NoProgress,
        )
        .unwrap();
        // 32 segments take at least 6.4 ms, over a quarter of a 20 ms run.
        assert_eq!(m.batch_segments, 32);
        assert!((1..=3).contains(&m.runs.len()), "{m:?}");
    }
}
