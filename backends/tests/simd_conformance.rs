//! Every compiled backend against the scalar oracle on random inputs.
//!
//! Property tests over both suites, segment lengths from 1 to thousands,
//! batches from one segment to several hundred (several proofs of different
//! lengths in one batch, so lane groups have uneven lengths and short tails),
//! 1-3 threads, and a corrupted checkpoint at a random place that must be
//! reported at its index in the concatenated batch. A backend this CPU
//! cannot run is skipped with the reason printed (on stderr, uncaptured).

use std::io::Write as _;
use std::sync::Arc;

use montana_backends::conformance::{
    check_boundaries, check_eval, check_lengths, check_verify, oracle_proof,
};
use montana_backends::driver::EVAL_CHUNK;
use montana_backends::registry::{compiled, Registry};
use montana_vdf::{
    Availability, Backend, BackendError, ChainParams, EvalControl, Hash32, HashSuite, Operation,
    Proof, Segment, VerifyOptions,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rand::SeedableRng;

fn backend(name: &str) -> Arc<dyn Backend> {
    compiled()
        .into_iter()
        .find(|b| b.name() == name)
        .unwrap_or_else(|| panic!("backend {name} is not compiled in"))
}

/// The backend if this CPU runs it; otherwise prints why it is skipped and
/// checks that it refuses work with a typed error instead of running.
fn runnable(name: &str) -> Option<Arc<dyn Backend>> {
    let b = backend(name);
    match b.availability() {
        Availability::Available => Some(b),
        Availability::Unavailable(reason) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED {name}: {reason}");
            for suite in HashSuite::ALL {
                let params = ChainParams::new(4, 2).unwrap();
                if b.supports(suite, Operation::Eval) {
                    let e = b.evaluate(suite, &Hash32::ZERO, params, &EvalControl::none());
                    assert!(matches!(e, Err(BackendError::Unavailable { .. })), "{e:?}");
                }
                if b.supports(suite, Operation::Verify) {
                    let seg = Segment {
                        start: Hash32::ZERO,
                        end: Hash32::ZERO,
                        steps: 1,
                    };
                    let e = b.verify(suite, &[seg], &VerifyOptions::threads(1));
                    assert!(matches!(e, Err(BackendError::Unavailable { .. })), "{e:?}");
                }
            }
            None
        }
    }
}

fn suites() -> impl Strategy<Value = HashSuite> {
    prop_oneof![Just(HashSuite::Sha256), Just(HashSuite::Blake3)]
}

/// One proof's shape: K up to 300, L up to 2000, K * L bounded so a case
/// stays fast under the oracle.
fn proof_shape() -> impl Strategy<Value = (u64, u64, [u8; 32])> {
    (1u64..=300, 1u64..=2000, any::<[u8; 32]>())
        .prop_map(|(k, l, seed)| (k, l.min(1 + 6000 / k), seed))
}

fn check_backend_eval(name: &str, cases: u32) {
    let Some(b) = runnable(name) else { return };
    let mut runner = TestRunner::new(Config::with_cases(cases));
    runner
        .run(
            &(suites(), any::<[u8; 32]>(), 1u64..=8, 1u64..=3000),
            |(suite, seed, k, l)| {
                if b.supports(suite, Operation::Eval) {
                    let params = ChainParams::new(k * l, k).unwrap();
                    check_eval(b.as_ref(), suite, &Hash32(seed), params)
                        .map_err(|e| TestCaseError::fail(e.0))?;
                }
                Ok(())
            },
        )
        .unwrap();
}

fn check_backend_verify(name: &str, cases: u32) {
    let Some(b) = runnable(name) else { return };
    let mut runner = TestRunner::new(Config::with_cases(cases));
    runner
        .run(
            &(
                suites(),
                prop::collection::vec(proof_shape(), 1..=4),
                1usize..=3,
                any::<u64>(),
            ),
            |(suite, shapes, threads, rng_seed)| {
                if b.supports(suite, Operation::Verify) {
                    let proofs: Vec<Proof> = shapes
                        .iter()
                        .map(|&(k, l, seed)| {
                            oracle_proof(suite, &Hash32(seed), ChainParams::new(k * l, k).unwrap())
                        })
                        .collect();
                    let mut rng = rand::rngs::StdRng::seed_from_u64(rng_seed);
                    check_verify(
                        b.as_ref(),
                        &proofs,
                        &VerifyOptions::threads(threads),
                        &mut rng,
                    )
                    .map_err(|e| TestCaseError::fail(e.0))?;
                }
                Ok(())
            },
        )
        .unwrap();
}

/// Chains longer than one evaluation chunk, and segments of many thousand
/// steps in groups of every size up to the lane count and past it.
fn check_backend_long(name: &str) {
    let Some(b) = runnable(name) else { return };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for suite in HashSuite::ALL {
        if b.supports(suite, Operation::Eval) {
            let params = ChainParams::new(2 * (EVAL_CHUNK + 3), 2).unwrap();
            check_eval(b.as_ref(), suite, &Hash32([9; 32]), params).unwrap();
        }
        if b.supports(suite, Operation::Verify) {
            for k in [1, b.lanes() as u64 - 1, b.lanes() as u64 + 3] {
                let k = k.max(1);
                let l = 20_000 / k;
                let proofs = vec![
                    oracle_proof(
                        suite,
                        &Hash32([k as u8; 32]),
                        ChainParams::new(k * l, k).unwrap(),
                    ),
                    oracle_proof(suite, &Hash32([3; 32]), ChainParams::new(7, 1).unwrap()),
                ];
                check_verify(b.as_ref(), &proofs, &VerifyOptions::threads(2), &mut rng).unwrap();
            }
        }
    }
}

/// Segment lengths around every power of two up to 2^20 steps, mixed with
/// short ones in one batch; then one segment of 2^22 steps in each suite.
fn check_backend_boundaries(name: &str) {
    let Some(b) = runnable(name) else { return };
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let splits = montana_backends::conformance::splits(b.as_ref());
    // Two threads: the batch is split between workers as well.
    check_boundaries(
        b.as_ref(),
        20,
        &splits,
        &VerifyOptions::threads(2),
        &mut rng,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for suite in HashSuite::ALL
        .into_iter()
        .filter(|&s| b.supports(s, Operation::Verify))
    {
        check_lengths(
            b.as_ref(),
            suite,
            &[1 << 22],
            0,
            &VerifyOptions::threads(2),
            &mut rng,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

macro_rules! backend_tests {
    ($module:ident, $name:literal) => {
        mod $module {
            #[test]
            fn eval_matches_the_oracle() {
                super::check_backend_eval($name, 64);
            }
            #[test]
            fn verify_matches_the_oracle_and_finds_the_corrupted_segment() {
                super::check_backend_verify($name, 64);
            }
            #[test]
            fn long_chains_and_segments() {
                super::check_backend_long($name);
            }
            #[test]
            fn segment_lengths_across_every_boundary() {
                super::check_backend_boundaries($name);
            }
        }
    };
}

backend_tests!(sha_ni, "sha-ni");
backend_tests!(sse41, "sse41");
backend_tests!(avx2, "avx2");
backend_tests!(avx512, "avx512");

#[test]
fn auto_picks_a_simd_backend_where_the_cpu_has_one() {
    let r = Registry::new(compiled());
    for suite in HashSuite::ALL {
        for op in Operation::ALL {
            let best = r.auto(suite, op).unwrap();
            let simd_available = r.all().iter().any(|b| {
                b.name() != "scalar"
                    && b.supports(suite, op)
                    && b.auto_rank(suite, op).is_some()
                    && b.availability().is_available()
            });
            if simd_available {
                assert_ne!(best.name(), "scalar", "{suite}/{op}");
            }
        }
    }
}

/// A backend asked for a pair it does not implement answers `Unsupported`
/// (verify-only backends keep the trait's default `evaluate`), never a panic.
#[test]
fn unsupported_pairs_are_a_typed_error() {
    for b in compiled() {
        for suite in HashSuite::ALL {
            if b.supports(suite, Operation::Eval) || !b.availability().is_available() {
                continue;
            }
            let params = montana_vdf::ChainParams::new(10, 1).unwrap();
            let r = b.evaluate(
                suite,
                &montana_vdf::Hash32::ZERO,
                params,
                &montana_vdf::EvalControl::none(),
            );
            assert!(
                matches!(r, Err(montana_vdf::BackendError::Unsupported { .. })),
                "{} {suite}: {r:?}",
                b.name()
            );
        }
    }
}
