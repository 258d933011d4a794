//! Conformance of a backend against the scalar oracle.
//!
//! One set of checks serves the unit tests of every backend, CI's forced-
//! backend runs and `montana selftest` on a new machine: proofs made by the
//! oracle must verify, a corrupted checkpoint must be found at the right index
//! of the concatenated batch, and evaluations must match the oracle's exactly.

use std::fmt;

use montana_vdf::{
    Backend, ChainParams, EvalControl, Hash32, HashSuite, Operation, Proof, VerifyOptions,
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

fn rng_range(rng: &mut impl Rng, lo: u64, hi: u64) -> u64 {
    rng.random_range(lo..=hi.max(lo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use montana_vdf::{Availability, BackendError, BackendKind, Segment};
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
