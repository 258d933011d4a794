//! Verification throughput against batch size.
//!
//! Batches of 1, 2, 4, ... segments of a fixed length, on the bench's thread
//! count, for every available verify backend: CPU backends saturate once
//! every lane of every thread is busy, a GPU only at thousands of segments.
//! Every backend is measured at one batch size before the next size.
//! Each point is the median of several calls after one untimed call (which
//! also absorbs a GPU's pipeline set-up). Batches are copies of one valid
//! segment: no lane or thread shares work, so copies cost what distinct
//! segments cost.

use std::time::{Duration, Instant};

use montana_backends::{scalar, Registry};
use montana_vdf::{Backend, BackendError, HashSuite, Operation, Segment, VerifyOptions};
use serde::Serialize;

use montana_backends::bench::{median, time_valid_verify};

/// What to sweep.
#[derive(Clone, Debug)]
pub struct SweepConfig {
    pub suites: Vec<HashSuite>,
    pub threads: usize,
    /// Steps per segment.
    pub segment_len: u64,
    /// Largest batch (the sweep doubles from 1 up to it).
    pub max_batch: usize,
    /// Time spent on each point (at least three calls are made).
    pub seconds_per_point: f64,
}

/// One measured point.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BatchPoint {
    pub backend: String,
    #[serde(serialize_with = "suite_name")]
    pub hash: HashSuite,
    pub threads: usize,
    pub segments: usize,
    pub segment_len: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    pub hashes_per_sec: f64,
}

fn suite_name<S: serde::Serializer>(s: &HashSuite, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.name())
}

/// The batch sizes swept: powers of two up to `max` (and `max` itself).
pub fn batch_sizes(max: usize) -> Vec<usize> {
    let max = max.max(1);
    let mut v: Vec<usize> = std::iter::successors(Some(1usize), |n| n.checked_mul(2))
        .take_while(|n| *n <= max)
        .collect();
    if v.last() != Some(&max) {
        v.push(max);
    }
    v
}

/// Sweeps every available verify backend of `registry`.
pub fn sweep(registry: &Registry, cfg: &SweepConfig) -> Result<Vec<BatchPoint>, BackendError> {
    sweep_until(registry, cfg, &mut |_| {}, &|| false)
}

fn verify_backends(registry: &Registry, suite: HashSuite) -> Vec<&std::sync::Arc<dyn Backend>> {
    registry
        .all()
        .iter()
        .filter(|b| {
            b.supports(suite, Operation::Verify) && registry.availability(b.as_ref()).is_available()
        })
        .collect()
}

/// The points [`sweep`] measures for `cfg` (for progress).
pub fn planned_points(registry: &Registry, cfg: &SweepConfig) -> usize {
    cfg.suites
        .iter()
        .map(|s| verify_backends(registry, *s).len() * batch_sizes(cfg.max_batch).len())
        .sum()
}

/// [`sweep`], calling `on_point` after each point and stopping before the
/// next once `stop()` says so: the points measured so far are returned.
pub fn sweep_until(
    registry: &Registry,
    cfg: &SweepConfig,
    on_point: &mut dyn FnMut(&BatchPoint),
    stop: &dyn Fn() -> bool,
) -> Result<Vec<BatchPoint>, BackendError> {
    let mut out = Vec::new();
    let budget = Duration::from_secs_f64(cfg.seconds_per_point.clamp(0.001, 600.0));
    for &suite in &cfg.suites {
        let start = suite.hash(b"montana bench --report");
        let mut end = start;
        scalar::advance(suite, &mut end, cfg.segment_len.max(1));
        let seg = Segment {
            start,
            end,
            steps: cfg.segment_len.max(1),
        };
        let backends = verify_backends(registry, suite);
        // Batch size outermost: every backend is measured at one size before
        // the next, so a change of load on a shared machine shifts the
        // curves together instead of bending one against the others.
        for n in batch_sizes(cfg.max_batch) {
            let segs = vec![seg; n];
            for b in &backends {
                if stop() {
                    return Ok(out);
                }
                let hps = measure_batch(b.as_ref(), suite, &segs, cfg.threads, budget)?;
                out.push(BatchPoint {
                    backend: b.name().to_string(),
                    hash: suite,
                    threads: cfg.threads.max(1),
                    segments: n,
                    segment_len: seg.steps,
                    adapter: b
                        .adapter()
                        .map(|a| format!("{} ({})", a.name, a.device_type)),
                    hashes_per_sec: hps,
                });
                on_point(out.last().expect("just pushed"));
            }
        }
    }
    Ok(out)
}

/// Median hashes per second of verifying `segs`, over at least three calls
/// and about `budget` (never more than three budgets).
fn measure_batch(
    backend: &dyn Backend,
    suite: HashSuite,
    segs: &[Segment],
    threads: usize,
    budget: Duration,
) -> Result<f64, BackendError> {
    let opts = VerifyOptions::threads(threads);
    let work = segs.iter().map(|s| s.steps).sum::<u64>() as f64;
    let call = || -> Result<f64, BackendError> {
        let dt = time_valid_verify(backend, suite, segs, &opts)?;
        Ok(work / dt.as_secs_f64().max(1e-9))
    };
    call()?;
    let began = Instant::now();
    let mut rates = Vec::new();
    while rates.len() < 3 || began.elapsed() < budget {
        rates.push(call()?);
        if began.elapsed() >= budget * 3 {
            break;
        }
    }
    Ok(median(&rates))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_double_up_to_the_maximum() {
        assert_eq!(batch_sizes(1), [1]);
        assert_eq!(batch_sizes(8), [1, 2, 4, 8]);
        assert_eq!(batch_sizes(12), [1, 2, 4, 8, 12]);
        assert_eq!(batch_sizes(0), [1]);
    }

    #[test]
    fn a_stopped_sweep_keeps_the_points_measured_so_far() {
        let registry = Registry::new(vec![std::sync::Arc::new(montana_backends::ScalarBackend)]);
        let cfg = SweepConfig {
            suites: vec![HashSuite::Sha256],
            threads: 1,
            segment_len: 16,
            max_batch: 8,
            seconds_per_point: 0.001,
        };
        assert_eq!(planned_points(&registry, &cfg), 4);
        let mut seen = 0;
        let all = sweep_until(&registry, &cfg, &mut |_| seen += 1, &|| false).unwrap();
        assert_eq!((all.len(), seen), (4, 4));
        let done = std::cell::Cell::new(0);
        let some = sweep_until(&registry, &cfg, &mut |_| done.set(done.get() + 1), &|| {
            done.get() >= 2
        })
        .unwrap();
        assert_eq!(some.len(), 2);
        assert_eq!(some[1].segments, 2);
    }
}
