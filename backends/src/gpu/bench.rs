//! Throughput of GPU verification, end to end, and where it overtakes a CPU.
//!
//! No criterion here: a GPU batch runs for seconds and its figure is a rate,
//! so a median of a few timed `verify` calls is the measurement. `montana
//! bench` and `scripts/gpu-check.sh` (via the `gpu_throughput` example) call
//! these functions.
//!
//! True claims for large batches cannot be made on the CPU (64 windows of
//! 6,500 segments x 50,000 steps is 2 x 10^10 hashes), so the GPU walks the
//! synthetic segments once to learn their ends, a few of which are checked
//! against the scalar oracle, and the timed runs then verify those claims:
//! upload, compute, readback and comparison, exactly like a real batch.

use montana_vdf::{AdapterInfo, Backend, BackendError, Hash32, HashSuite, Segment, VerifyOptions};
use rand::{Rng, SeedableRng};

use super::GpuBackend;
use crate::bench::{median, time_valid_verify};
use crate::scalar;

/// One throughput measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Throughput {
    pub adapter: Option<AdapterInfo>,
    pub suite: HashSuite,
    pub segments: usize,
    pub steps: u64,
    /// Median seconds of one verify call.
    pub seconds: f64,
    /// segments x steps / seconds.
    pub hashes_per_second: f64,
    pub runs: usize,
}

/// `segments` true claims of `steps` steps each from random starts.
pub fn synthetic_segments(
    gpu: &GpuBackend,
    suite: HashSuite,
    segments: usize,
    steps: u64,
    seed: u64,
) -> Result<Vec<Segment>, BackendError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut segs: Vec<Segment> = (0..segments)
        .map(|_| Segment {
            start: Hash32(rng.random()),
            end: Hash32::ZERO,
            steps,
        })
        .collect();
    let ends = gpu.walk_values(suite, &segs)?;
    for (s, e) in segs.iter_mut().zip(ends) {
        s.end = e;
    }
    // The GPU's ends must be right, or every later figure is meaningless.
    for i in [0, segments / 2, segments.saturating_sub(1)] {
        if let Some(s) = segs.get(i) {
            let mut v = s.start;
            scalar::advance(suite, &mut v, s.steps);
            if v != s.end {
                return Err(GpuBackend::device_error(format!(
                    "GPU walked segment {i} to a different end than the scalar oracle"
                )));
            }
        }
    }
    Ok(segs)
}

/// Median seconds of `runs` verify calls of `segments` by `backend`, each of
/// which must find the batch valid.
pub fn time_verify(
    backend: &dyn Backend,
    suite: HashSuite,
    segments: &[Segment],
    opts: &VerifyOptions,
    runs: usize,
) -> Result<f64, BackendError> {
    let times = (0..runs.max(1))
        .map(|_| time_valid_verify(backend, suite, segments, opts).map(|t| t.as_secs_f64()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(median(&times))
}

/// End-to-end GPU verification rate on `segments` x `steps` (one warm-up
/// call, which also tunes the step budget, then the median of `runs`).
pub fn verify_throughput(
    gpu: &GpuBackend,
    suite: HashSuite,
    segments: usize,
    steps: u64,
    runs: usize,
) -> Result<Throughput, BackendError> {
    let segs = synthetic_segments(gpu, suite, segments, steps, 0x6d6f6e74)?;
    let opts = VerifyOptions::default();
    time_verify(gpu, suite, &segs, &opts, 1)?;
    let seconds = time_verify(gpu, suite, &segs, &opts, runs)?;
    Ok(Throughput {
        adapter: gpu.adapter(),
        suite,
        segments,
        steps,
        seconds,
        hashes_per_second: segments as f64 * steps as f64 / seconds,
        runs: runs.max(1),
    })
}

/// One shape of a crossover scan.
#[derive(Clone, Debug, PartialEq)]
pub struct CrossoverRow {
    pub segments: usize,
    pub steps: u64,
    pub gpu_seconds: f64,
    pub cpu_seconds: f64,
}

impl CrossoverRow {
    pub fn gpu_wins(&self) -> bool {
        self.gpu_seconds < self.cpu_seconds
    }
}

/// Times the GPU and `cpu` on the same true batches, shape by shape (give
/// them smallest first), and returns every row; the crossover is the first
/// row the GPU wins ([`first_gpu_win`]).
pub fn crossover(
    gpu: &GpuBackend,
    cpu: &dyn Backend,
    suite: HashSuite,
    shapes: &[(usize, u64)],
    opts: &VerifyOptions,
    runs: usize,
) -> Result<Vec<CrossoverRow>, BackendError> {
    let mut rows = Vec::with_capacity(shapes.len());
    for &(segments, steps) in shapes {
        let segs = synthetic_segments(gpu, suite, segments, steps, segments as u64 ^ steps)?;
        time_verify(gpu, suite, &segs, opts, 1)?;
        rows.push(CrossoverRow {
            segments,
            steps,
            gpu_seconds: time_verify(gpu, suite, &segs, opts, runs)?,
            cpu_seconds: time_verify(cpu, suite, &segs, opts, runs)?,
        });
    }
    Ok(rows)
}

/// The smallest shape (in scan order) at which the GPU was faster.
pub fn first_gpu_win(rows: &[CrossoverRow]) -> Option<&CrossoverRow> {
    rows.iter().find(|r| r.gpu_wins())
}
