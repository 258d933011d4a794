//! The scalar backend: the oracle.
//!
//! Straight calls into the `sha2` and `blake3` crates, one step at a time, one
//! segment at a time (spread over threads when allowed). It supports every
//! (suite, operation) pair and runs on every host; its only job is to be
//! obviously right.

use montana_vdf::{
    Availability, Backend, BackendError, BackendKind, ChainParams, EvalControl, Hash32, HashSuite,
    Operation, Segment, VerifyOptions, VerifyOutcome,
};
use sha2::Digest as _;

use crate::driver;

/// The reference backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScalarBackend;

/// Applies `n` SHA-256 steps with the `sha2` crate.
pub fn advance_sha256(v: &mut Hash32, n: u64) {
    let mut x: [u8; 32] = v.0;
    for _ in 0..n {
        x = sha2::Sha256::digest(x).into();
    }
    v.0 = x;
}

/// Applies `n` BLAKE3 steps with the `blake3` crate.
pub fn advance_blake3(v: &mut Hash32, n: u64) {
    let mut x: [u8; 32] = v.0;
    for _ in 0..n {
        x = *blake3::hash(&x).as_bytes();
    }
    v.0 = x;
}

/// Applies `n` steps of `suite`.
pub fn advance(suite: HashSuite, v: &mut Hash32, n: u64) {
    match suite {
        HashSuite::Sha256 => advance_sha256(v, n),
        HashSuite::Blake3 => advance_blake3(v, n),
    }
}

impl Backend for ScalarBackend {
    fn name(&self) -> &'static str {
        "scalar"
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

    fn supports(&self, _suite: HashSuite, _op: Operation) -> bool {
        true
    }

    fn auto_rank(&self, _suite: HashSuite, _op: Operation) -> Option<u32> {
        Some(0)
    }

    fn evaluate(
        &self,
        suite: HashSuite,
        start: &Hash32,
        params: ChainParams,
        ctl: &EvalControl<'_>,
    ) -> Result<Vec<Hash32>, BackendError> {
        driver::evaluate_chain(start, params, ctl, |v, n| advance(suite, v, n))
    }

    fn verify(
        &self,
        suite: HashSuite,
        segments: &[Segment],
        opts: &VerifyOptions,
    ) -> Result<VerifyOutcome, BackendError> {
        Ok(driver::verify_batch(segments, 1, opts.threads, |group| {
            group.iter().position(|s| {
                let mut v = s.start;
                advance(suite, &mut v, s.steps);
                v != s.end
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use montana_vdf::{Proof, TimeChain};
    use proptest::prelude::*;

    #[test]
    fn small_chains_match_the_crates() {
        // H^3 computed by hand with the crates.
        let s = Hash32([0x42; 32]);
        let mut x = s.0;
        for _ in 0..3 {
            x = sha2::Sha256::digest(x).into();
        }
        let p = ScalarBackend
            .prove(
                HashSuite::Sha256,
                &s,
                ChainParams::new(3, 1).unwrap(),
                &EvalControl::none(),
            )
            .unwrap();
        assert_eq!(*p.output(), Hash32(x));

        let mut y = s.0;
        for _ in 0..5 {
            y = *blake3::hash(&y).as_bytes();
        }
        let p = ScalarBackend
            .prove(
                HashSuite::Blake3,
                &s,
                ChainParams::new(5, 5).unwrap(),
                &EvalControl::none(),
            )
            .unwrap();
        assert_eq!(*p.output(), Hash32(y));
    }

    #[test]
    fn timechain_first_windows() {
        let tc = TimeChain::new(HashSuite::Sha256, 1000);
        let t2 = tc.window(&ScalarBackend, 2, &EvalControl::none()).unwrap();
        assert_eq!(t2, HashSuite::Sha256.iterate(&tc.t0(), 2000));
    }

    fn suite_strategy() -> impl Strategy<Value = HashSuite> {
        prop_oneof![Just(HashSuite::Sha256), Just(HashSuite::Blake3)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn every_proof_verifies_and_a_flipped_byte_is_found(
            suite in suite_strategy(),
            seed in any::<[u8; 32]>(),
            k in 1u64..40,
            len in 1u64..60,
            corrupt in any::<(prop::sample::Index, usize, u8)>(),
            threads in 1usize..4,
        ) {
            let params = ChainParams::new(k * len, k).unwrap();
            let proof = ScalarBackend.prove(suite, &Hash32(seed), params, &EvalControl::none()).unwrap();
            prop_assert_eq!(*proof.output(), suite.iterate(&Hash32(seed), k * len));
            let opts = VerifyOptions::threads(threads);
            prop_assert_eq!(ScalarBackend.verify_proofs(std::slice::from_ref(&proof), &opts).unwrap(), VerifyOutcome::Valid);

            let (idx, byte, mask) = corrupt;
            let i = idx.index(k as usize);
            let mut bad: Proof = proof.clone();
            bad.checkpoints_mut()[i].0[byte % 32] ^= mask.max(1);
            prop_assert_eq!(
                ScalarBackend.verify_proofs(&[bad], &opts).unwrap(),
                VerifyOutcome::Invalid { first_bad_segment: i }
            );
        }
    }
}
