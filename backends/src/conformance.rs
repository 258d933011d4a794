//! Conformance of a backend against the scalar oracle.
//!
//! One set of checks serves the unit tests of every backend, CI's forced-
//! backend runs and `montana selftest` on a new machine: proofs made by the
//! oracle must verify, a corrupted checkpoint must be found at the right index
//! of the concatenated batch, and evaluations must match the oracle's exactly.

use std::fmt;

use montana_vdf::{
    Backend, ChainParams, EvalControl, Hash32, HashSuite, Operation, Proof, Segment, VerifyOptions,
    VerifyOutcome,
};
use rand::Rng;

use crate::scalar::ScalarBackend;

/// The sizes a random round draws from.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// K in 1..=max_checkpoints.
    pub max_checkpoints: u64,
    /// L in 1..=max_segment_len.
    pub max_segment_len: u64,
    /// Proofs per verify batch in 1..=max_proofs.
    pub max_proofs: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            max_checkpoints: 64,
            max_segment_len: 300,
            max_proofs: 8,
        }
    }
}

/// What a round checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub evaluations: usize,
    pub batches: usize,
    pub segments: usize,
}

impl Report {
    pub fn add(&mut self, o: Report) {
        self.evaluations += o.evaluations;
        self.batches += o.batches;
        self.segments += o.segments;
    }
}

/// A backend disagreed with the oracle (or failed); one line saying where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disagreement(pub String);

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Disagreement {}

/// The oracle's proof of a chain.
pub fn oracle_proof(suite: HashSuite, start: &Hash32, params: ChainParams) -> Proof {
    ScalarBackend
        .prove(suite, start, params, &EvalControl::none())
        .expect("the scalar backend supports every pair")
}

/// `backend`'s evaluation must equal the oracle's, checkpoint for checkpoint.
pub fn check_eval(
    backend: &dyn Backend,
    suite: HashSuite,
    start: &Hash32,
    params: ChainParams,
) -> Result<(), Disagreement> {
    let want = oracle_proof(suite, start, params);
    let got = backend
        .evaluate(suite, start, params, &EvalControl::none())
        .map_err(|e| Disagreement(format!("{}: {suite}/eval failed: {e}", backend.name())))?;
    if got.as_slice() != want.checkpoints() {
        let i = got
            .iter()
            .zip(want.checkpoints())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(Disagreement(format!(
            "{}: {suite}/eval of N={} K={} from {start} differs from scalar at checkpoint {i}",
            backend.name(),
            params.iterations(),
            params.checkpoints()
        )));
    }
    Ok(())
}

/// A batch of oracle proofs must verify; then each proof in turn gets one
/// random checkpoint corrupted, and that segment's index in the concatenated
/// batch must be reported.
pub fn check_verify(
    backend: &dyn Backend,
    proofs: &[Proof],
    opts: &VerifyOptions,
    rng: &mut impl Rng,
) -> Result<Report, Disagreement> {
    let Some(first) = proofs.first() else {
        return Ok(Report::default());
    };
    let suite = first.suite();
    let total: usize = proofs.iter().map(|p| p.checkpoints().len()).sum();
    let describe = || {
        format!(
            "{}: {suite}/verify of {} proofs ({total} segments, lengths {:?}, {} threads)",
            backend.name(),
            proofs.len(),
            proofs
                .iter()
                .map(|p| p.params().segment_len())
                .collect::<Vec<_>>(),
            opts.threads
        )
    };
    let run = |batch: &[Proof]| {
        backend
            .verify_proofs(batch, opts)
            .map_err(|e| Disagreement(format!("{} failed: {e}", describe())))
    };
    let got = run(proofs)?;
    if got != VerifyOutcome::Valid {
        return Err(Disagreement(format!(
            "{} rejected valid proofs: {got:?}",
            describe()
        )));
    }
    let mut offset = 0;
    let mut batches = 1;
    for (p, proof) in proofs.iter().enumerate() {
        let k = proof.checkpoints().len();
        let i = rng.random_range(0..k);
        let mut bad = proofs.to_vec();
        let byte = rng.random_range(0..32);
        bad[p].checkpoints_mut()[i].0[byte] ^= rng.random_range(1..=255u8);
        let want = VerifyOutcome::Invalid {
            first_bad_segment: offset + i,
        };
        let got = run(&bad)?;
        batches += 1;
        if got != want {
            return Err(Disagreement(format!(
                "{} with checkpoint {i} of proof {p} corrupted: expected {want:?}, got {got:?}",
                describe()
            )));
        }
        offset += k;
    }
    Ok(Report {
        evaluations: 0,
        batches,
        segments: total * batches,
    })
}

/// One random round over both suites and every pair `backend` supports.
pub fn random_round(
    backend: &dyn Backend,
    rng: &mut impl Rng,
    shape: Shape,
    opts: &VerifyOptions,
) -> Result<Report, Disagreement> {
    let mut report = Report::default();
    for suite in HashSuite::ALL {
        let draw = |rng: &mut _| {
            let k = rng_range(rng, 1, shape.max_checkpoints);
            let l = rng_range(rng, 1, shape.max_segment_len);
            ChainParams::new(k * l, k).expect("in bounds")
        };
        if backend.supports(suite, Operation::Eval) {
            let params = draw(rng);
            check_eval(backend, suite, &Hash32(rng.random()), params)?;
            report.evaluations += 1;
        }
        if backend.supports(suite, Operation::Verify) {
            let n = rng.random_range(1..=shape.max_proofs.max(1));
            let proofs: Vec<Proof> = (0..n)
                .map(|_| {
                    let params = draw(rng);
                    oracle_proof(suite, &Hash32(rng.random()), params)
                })
                .collect();
            report.add(check_verify(backend, &proofs, opts, rng)?);
        }
    }
    Ok(report)
}

/// `p - 1`, `p` and `p + 1` for every `p` of `points` (lengths of at least
/// one step), sorted, without duplicates: the lengths on both sides of each
/// boundary.
pub fn around(points: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut v: Vec<u64> = points
        .into_iter()
        .flat_map(|p| [p.saturating_sub(1), p, p.saturating_add(1)])
        .filter(|&l| l >= 1)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The lengths around every power of two from 1 to `2^max_exp`.
pub fn powers_of_two(max_exp: u32) -> Vec<u64> {
    around((0..=max_exp.min(40)).map(|k| 1u64 << k))
}

/// Independent segments of the given lengths made by the oracle, each from
/// its own start value (derived from `seed` and its index).
pub fn oracle_segments(suite: HashSuite, lengths: &[u64], seed: u64) -> Vec<Segment> {
    use rayon::prelude::*;
    lengths
        .par_iter()
        .enumerate()
        .map(|(i, &steps)| {
            let start = suite.hash(format!("conformance {seed} {i} {steps}").as_bytes());
            let mut end = start;
            crate::scalar::advance(suite, &mut end, steps);
            Segment { start, end, steps }
        })
        .collect()
}

/// One segment of every length in `lengths` (the oracle's, see
/// [`oracle_segments`]), checked in one batch that mixes them all: sorted
/// by length, then a few one- to three-step segments after the longest, so
/// short and long share lane groups and chunks. The batch must verify.
/// Then the longest segment, and `extra` more drawn at random, are
/// corrupted one at a time (in the batch cut after it) and must be reported
/// at their index.
///
/// A backend that stops walking at some length (a step counter that wraps,
/// a dispatch split that loses steps) rejects the valid batch; one that
/// accepts a claim without walking it misses the corrupted longest segment.
pub fn check_lengths(
    backend: &dyn Backend,
    suite: HashSuite,
    lengths: &[u64],
    extra: usize,
    opts: &VerifyOptions,
    rng: &mut impl Rng,
) -> Result<Report, Disagreement> {
    if lengths.is_empty() {
        return Ok(Report::default());
    }
    let mut sorted = lengths.to_vec();
    sorted.sort_unstable();
    let mut batch = oracle_segments(suite, &sorted, rng.random());
    let longest = batch.len() - 1;
    batch.extend(oracle_segments(suite, &[1, 3, 2, 1], rng.random()));
    let describe = || {
        format!(
            "{}: {suite}/verify of {} segments of {}..={} steps ({} threads)",
            backend.name(),
            batch.len(),
            sorted[0],
            sorted[longest],
            opts.threads
        )
    };
    let run = |segs: &[Segment]| {
        backend
            .verify(suite, segs, opts)
            .map_err(|e| Disagreement(format!("{} failed: {e}", describe())))
    };
    let got = run(&batch)?;
    if got != VerifyOutcome::Valid {
        let at = match got {
            VerifyOutcome::Invalid { first_bad_segment } => {
                batch.get(first_bad_segment).map_or(String::new(), |s| {
                    format!(" (a segment of {} steps)", s.steps)
                })
            }
            VerifyOutcome::Valid => String::new(),
        };
        return Err(Disagreement(format!(
            "{} rejected valid segments: {got}{at}",
            describe()
        )));
    }
    let mut report = Report {
        evaluations: 0,
        batches: 1,
        segments: batch.len(),
    };
    let mut targets = vec![longest];
    targets.extend((0..extra).map(|_| rng.random_range(0..=longest)));
    for i in targets {
        let mut bad = batch[..=i].to_vec();
        bad[i].end.0[rng.random_range(0..32)] ^= rng.random_range(1..=255u8);
        let want = VerifyOutcome::Invalid {
            first_bad_segment: i,
        };
        let got = run(&bad)?;
        report.batches += 1;
        report.segments += bad.len();
        if got != want {
            return Err(Disagreement(format!(
                "{} with the segment of {} steps (index {i}) corrupted: expected {want}, got {got}",
                describe(),
                bad[i].steps
            )));
        }
    }
    Ok(report)
}

/// Where `backend` cuts a segment's steps into pieces, as segment lengths:
/// a GPU's first dispatch (before any timing, 64 steps by default), its
/// step cap per dispatch and twice that, and 131,008 steps (a fresh tuner's
/// first dispatch past the cap, issue 15). The CPU backends walk a segment
/// in one piece: none.
pub fn splits(backend: &dyn Backend) -> Vec<u64> {
    if backend.kind() != montana_vdf::BackendKind::Gpu {
        return Vec::new();
    }
    #[cfg(feature = "gpu")]
    let cap = u64::from(crate::gpu::MAX_STEPS_PER_DISPATCH);
    #[cfg(not(feature = "gpu"))]
    let cap = 65_535;
    vec![64, cap, 2 * cap, 131_008]
}

/// Every boundary length check for `backend` on both suites it verifies:
/// around each power of two up to `2^max_exp` steps, and around each of
/// `splits` (where the backend cuts work: a GPU's steps per dispatch).
pub fn check_boundaries(
    backend: &dyn Backend,
    max_exp: u32,
    splits: &[u64],
    opts: &VerifyOptions,
    rng: &mut impl Rng,
) -> Result<Report, Disagreement> {
    let mut lengths = powers_of_two(max_exp);
    lengths.extend(around(splits.iter().copied()));
    lengths.sort_unstable();
    lengths.dedup();
    let mut report = Report::default();
    for suite in HashSuite::ALL {
        if backend.supports(suite, Operation::Verify) {
            report.add(check_lengths(backend, suite, &lengths, 2, opts, rng)?);
        }
    }
    Ok(report)
}

fn rng_range(rng: &mut impl Rng, lo: u64, hi: u64) -> u64 {
    rng.random_range(lo..=hi.max(lo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use montana_vdf::{Availability, BackendError, BackendKind};
    use rand::SeedableRng;

    /// A backend that gets the last segment of every batch wrong.
    struct Broken;
    impl Backend for Broken {
        fn name(&self) -> &'static str {
            "broken"
        }
        fn kind(&self) -> BackendKind {
            BackendKind::Scalar
        }
        fn availability(&self) -> Availability {
            Availability::Available
        }
        fn lanes(&self) -> usize {
            1
        }
        fn supports(&self, _: HashSuite, _: Operation) -> bool {
            true
        }
        fn evaluate(
            &self,
            suite: HashSuite,
            start: &Hash32,
            params: ChainParams,
            ctl: &EvalControl<'_>,
        ) -> Result<Vec<Hash32>, BackendError> {
            let mut v = ScalarBackend.evaluate(suite, start, params, ctl)?;
            if v.len() > 1 {
                v[1].0[0] ^= 1;
            }
            Ok(v)
        }
        fn verify(
            &self,
            _: HashSuite,
            segments: &[Segment],
            _: &VerifyOptions,
        ) -> Result<VerifyOutcome, BackendError> {
            Ok(VerifyOutcome::Invalid {
                first_bad_segment: segments.len() - 1,
            })
        }
    }

    /// A backend that walks at most 65,535 steps of any segment (as the GPU
    /// did on lavapipe before issue 15), then compares.
    struct Truncating;
    impl Backend for Truncating {
        fn name(&self) -> &'static str {
            "truncating"
        }
        fn kind(&self) -> BackendKind {
            BackendKind::Gpu
        }
        fn availability(&self) -> Availability {
            Availability::Available
        }
        fn lanes(&self) -> usize {
            1
        }
        fn supports(&self, _: HashSuite, op: Operation) -> bool {
            op == Operation::Verify
        }
        fn verify(
            &self,
            suite: HashSuite,
            segments: &[Segment],
            _: &VerifyOptions,
        ) -> Result<VerifyOutcome, BackendError> {
            Ok(segments
                .iter()
                .position(|s| {
                    let mut v = s.start;
                    crate::scalar::advance(suite, &mut v, s.steps.min(65_535));
                    v != s.end
                })
                .map_or(VerifyOutcome::Valid, |i| VerifyOutcome::Invalid {
                    first_bad_segment: i,
                }))
        }
    }

    #[test]
    fn boundary_lengths() {
        assert_eq!(around([1, 8, 9]), [1, 2, 7, 8, 9, 10]);
        let p = powers_of_two(20);
        assert_eq!(&p[..5], &[1, 2, 3, 4, 5]);
        assert_eq!(p.last(), Some(&((1 << 20) + 1)));
        assert!(splits(&ScalarBackend).is_empty());
        assert!(splits(&Truncating).contains(&131_008));
    }

    #[test]
    fn the_oracle_passes_every_boundary_and_a_segment_of_2_pow_22() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let opts = VerifyOptions::threads(2);
        let r = check_boundaries(&ScalarBackend, 20, &[1_000], &opts, &mut rng).unwrap();
        // Per suite: the valid batch, the longest and two more corrupted.
        assert_eq!(r.batches, 2 * 4);
        check_lengths(
            &ScalarBackend,
            HashSuite::Sha256,
            &[1 << 22],
            0,
            &opts,
            &mut rng,
        )
        .unwrap();
    }

    #[test]
    fn a_backend_that_stops_short_of_long_segments_is_caught() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let opts = VerifyOptions::threads(1);
        check_boundaries(&Truncating, 15, &[], &opts, &mut rng).unwrap();
        let e = check_boundaries(&Truncating, 17, &[], &opts, &mut rng).unwrap_err();
        assert!(
            e.0.contains("rejected valid segments: invalid at segment")
                && e.0.contains("(a segment of 65536 steps)"),
            "{e}"
        );
    }

    #[test]
    fn the_oracle_passes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for threads in [1, 2] {
            random_round(
                &ScalarBackend,
                &mut rng,
                Shape::default(),
                &VerifyOptions::threads(threads),
            )
            .unwrap();
        }
    }

    #[test]
    fn a_wrong_backend_is_caught() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let params = ChainParams::new(8, 4).unwrap();
        assert!(check_eval(&Broken, HashSuite::Sha256, &Hash32::ZERO, params).is_err());
        let proofs = vec![oracle_proof(HashSuite::Blake3, &Hash32::ZERO, params)];
        let e = check_verify(&Broken, &proofs, &VerifyOptions::threads(1), &mut rng).unwrap_err();
        assert!(e.0.contains("broken: blake3/verify"), "{e}");
    }
}
