//! Timing one figure: the median of several slices, sized to a budget; and
//! the primitives every rate measurer of the project shares (`montana
//! bench`, calibration, the `--report` sweep, the GPU throughput figures):
//! [`median`] and [`time_valid_verify`].

use std::time::{Duration, Instant};

use montana_vdf::{
    Backend, BackendError, ChainParams, EvalControl, Hash32, HashSuite, Segment, VerifyOptions,
    VerifyOutcome,
};

use crate::scalar;

/// Timed slices per measurement; the reported rate is their median.
pub const SLICES: usize = 5;

/// The median of `v` (the mean of the middle two for even lengths; 0 for
/// none). NaNs sort last (`total_cmp`).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => s[n / 2],
        _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Times one `verify` call on a batch that must be valid. A backend that
/// rejects it is broken: a [`BackendError::Device`] naming it and the
/// segment, so no rate is ever reported for a wrong answer.
pub fn time_valid_verify(
    backend: &dyn Backend,
    suite: HashSuite,
    segments: &[Segment],
    opts: &VerifyOptions,
) -> Result<Duration, BackendError> {
    let t = Instant::now();
    let outcome = backend.verify(suite, segments, opts)?;
    let elapsed = t.elapsed();
    match outcome {
        VerifyOutcome::Valid => Ok(elapsed),
        VerifyOutcome::Invalid { first_bad_segment } => Err(BackendError::Device {
            backend: backend.name().into(),
            message: format!("rejected a valid measurement batch at segment {first_bad_segment}"),
        }),
    }
}

/// Runs `work(n)` (which does about n hashes and returns how many it did) in
/// slices of about `budget / SLICES`, after sizing n, and returns the median
/// hashes per second.
fn median_rate(
    budget: Duration,
    mut work: impl FnMut(u64) -> Result<u64, BackendError>,
) -> Result<f64, BackendError> {
    let slice = budget / SLICES as u32;
    let mut n = 256u64;
    // Size one call to about a fifth of a slice (at least ~2 ms).
    let target = (slice / 5).max(Duration::from_millis(2));
    loop {
        let t = Instant::now();
        work(n)?;
        let dt = t.elapsed();
        if dt >= target || n >= 1 << 40 {
            break;
        }
        let grow = (target.as_secs_f64() / dt.as_secs_f64().max(1e-6)).clamp(1.5, 16.0);
        n = ((n as f64) * grow) as u64;
    }
    let mut rates = Vec::with_capacity(SLICES);
    for _ in 0..SLICES {
        let t = Instant::now();
        let mut done = 0u64;
        while t.elapsed() < slice || done == 0 {
            done += work(n)?;
        }
        rates.push(done as f64 / t.elapsed().as_secs_f64());
    }
    Ok(median(&rates))
}

fn budget(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.clamp(0.05, 3600.0))
}

/// The plain crate loop on one core: `sha2::Sha256::digest` or `blake3::hash`.
pub fn measure_crate(suite: HashSuite, seconds: f64) -> f64 {
    let mut v = Hash32([0x5a; 32]);
    let rate = median_rate(budget(seconds), |n| {
        scalar::advance(suite, &mut v, n);
        Ok(n)
    });
    std::hint::black_box(v);
    rate.unwrap_or(0.0)
}

/// One chain through `backend.evaluate`, hashes per second.
pub fn measure_eval(
    backend: &dyn Backend,
    suite: HashSuite,
    seconds: f64,
) -> Result<f64, BackendError> {
    let mut v = Hash32([0xa5; 32]);
    median_rate(budget(seconds), |n| {
        let params = ChainParams::new(n, 1)?;
        v = backend.evaluate(suite, &v, params, &EvalControl::none())?[0];
        Ok(n)
    })
}

/// A verification measurement and the batch shape it used.
#[derive(Clone, Copy, Debug)]
pub struct VerifyRate {
    pub segments: usize,
    pub segment_len: u64,
    pub hashes_per_sec: f64,
}

/// Verification on `threads` threads: a batch of `lanes x threads x 4`
/// segments (every lane of every thread busy, with slack for stealing),
/// segment length sized to the budget; hashes per second over the batch.
pub fn measure_verify(
    backend: &dyn Backend,
    suite: HashSuite,
    threads: usize,
    seconds: f64,
) -> Result<VerifyRate, BackendError> {
    let threads = threads.max(1);
    let segments = backend.lanes().max(1) * threads * 4;
    let opts = VerifyOptions::threads(threads);
    // Segment length: grown until one batch takes about a fifth of a slice.
    let target = (budget(seconds) / (5 * SLICES as u32)).max(Duration::from_millis(2));
    let start = Hash32([0x3c; 32]);
    let mut len = 16u64;
    let batch = |len: u64| {
        let seg = Segment {
            start,
            end: suite.iterate(&start, len),
            steps: len,
        };
        vec![seg; segments]
    };
    let mut segs = batch(len);
    loop {
        let dt = time_valid_verify(backend, suite, &segs, &opts)?;
        if dt >= target || len >= 1 << 30 {
            break;
        }
        let grow = (target.as_secs_f64() / dt.as_secs_f64().max(1e-6)).clamp(1.5, 16.0);
        len = ((len as f64) * grow) as u64;
        segs = batch(len);
    }
    let per_call = (segments as u64) * len;
    let rate = median_rate(budget(seconds), |n| {
        let batches = n.div_ceil(per_call).max(1);
        for _ in 0..batches {
            time_valid_verify(backend, suite, &segs, &opts)?;
        }
        Ok(batches * per_call)
    })?;
    Ok(VerifyRate {
        segments,
        segment_len: len,
        hashes_per_sec: rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn a_rejected_valid_batch_is_a_device_error() {
        let suite = HashSuite::Sha256;
        let start = Hash32([1; 32]);
        let good = Segment {
            start,
            end: suite.iterate(&start, 3),
            steps: 3,
        };
        let bad = Segment { steps: 4, ..good };
        let opts = VerifyOptions::threads(1);
        assert!(time_valid_verify(&crate::ScalarBackend, suite, &[good], &opts).is_ok());
        let e = time_valid_verify(&crate::ScalarBackend, suite, &[good, bad], &opts).unwrap_err();
        assert!(
            matches!(&e, BackendError::Device { backend, message }
                if backend == "scalar" && message.contains("segment 1")),
            "{e}"
        );
    }
}
